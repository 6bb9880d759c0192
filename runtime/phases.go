package runtime

import (
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// PhasesEnv, when set (to anything but "" or "0"), makes every pass of a
// runner or a batch time its parts by the wall clock of the goroutine that
// runs it: what a step's host side waits on and spends, part by part
// (WritePhases prints the sums). Off, a pass reads no clock.
const PhasesEnv = "KVBENCH_PHASES"

var phasesOn = func() bool { v := os.Getenv(PhasesEnv); return v != "" && v != "0" }()

// phasesDevice: KVBENCH_PHASES=device also times each part on the device
// (a backend that is a DeviceTimer): a timestamp queued at every mark, and
// a part's device time the time between the device's reaching the mark
// before it and its own. That is the part's work, plus any time the device
// sat idle waiting for the host to queue it: beside the host's times, where
// a pass's wall time goes (the device busy, or waiting). The timestamps
// flush queued KV copies at each mark (a launch each at most), and the
// times are read once the pass is done (a wait, where the pass has none).
var phasesDevice = os.Getenv(PhasesEnv) == "device"

// The parts of a pass, in the order a layer runs them.
const (
	phaseStart  = iota // positions, frequencies, the embedding
	phaseQKV           // the query, key and value products (replayed or not)
	phaseRoPE          // RoPE of the queries and keys
	phaseBefore        // every stream's KV store and policy (lanes, their start and join)
	phaseAttend        // attention (AttendBatch: tables, metadata, launches)
	phaseAfter         // every policy's look at the attention
	phaseMLP           // the output projection and the MLP
	phaseHead          // the output head and the read of the logits (the device's wait)
	numPhases
)

var phaseNames = [numPhases]string{"start", "qkv products", "rope", "store + policy", "attention", "after attention", "output + mlp", "head + read"}

// phaseClock sums a pass's parts; its zero value is off.
type phaseClock struct {
	on   bool
	last time.Time
	sum  [numPhases]time.Duration
	// With phasesDevice: the device's timer, the pass's first timestamp
	// and each mark's part and timestamp.
	dt     DeviceTimer
	d0     int
	dmarks []devMark
}

type devMark struct{ ph, m int }

func (k *phaseClock) start(be Backend) {
	if k.on = phasesOn; k.on {
		k.last, k.sum = time.Now(), [numPhases]time.Duration{}
		k.dt, _ = be.(DeviceTimer)
		if !phasesDevice {
			k.dt = nil
		}
		if k.dt != nil {
			k.d0, k.dmarks = k.dt.Mark(), k.dmarks[:0]
		}
	}
}

// mark ends part ph: the time since the last mark is its.
func (k *phaseClock) mark(ph int) {
	if k.on {
		now := time.Now()
		k.sum[ph] += now.Sub(k.last)
		k.last = now
		if k.dt != nil {
			k.dmarks = append(k.dmarks, devMark{ph, k.dt.Mark()})
		}
	}
}

// deviceSums is the device time of each part of the pass (phasesDevice).
func (k *phaseClock) deviceSums() (sum [numPhases]time.Duration) {
	prev := k.d0
	for _, dm := range k.dmarks {
		sum[dm.ph] += k.dt.Elapsed(prev, dm.m)
		prev = dm.m
	}
	return sum
}

// phaseTotals is every pass's sums since the last WritePhases, by the
// number of streams a pass fed (1: a runner's) and whether it fed several
// rows a stream (a prompt's chunk) or one (a decode step).
var phaseTotals struct {
	sync.Mutex
	by    map[phaseKey]*phaseSum
	parts []partSum // the finer parts (PartClock), in the order first seen
}

type partSum struct {
	name  string
	calls int
	sum   time.Duration
}

type phaseKey struct {
	streams int
	chunk   bool
}

type phaseSum struct {
	passes int
	sum    [numPhases]time.Duration
	dev    [numPhases]time.Duration // on the device (phasesDevice)
	timed  bool                     // dev holds the device's times
}

// done adds the sums of a pass of rows rows over streams streams to the
// totals; with the device's times, it forgets the timer's marks unless
// others (the runners' OnAttend: deliverTimes) are still to be read.
func (k *phaseClock) done(streams, rows int, othersMarked bool) {
	if !k.on {
		return
	}
	var dev [numPhases]time.Duration
	timed := k.dt != nil
	if timed {
		dev = k.deviceSums()
		if !othersMarked {
			k.dt.ClearMarks()
		}
		k.dt, k.dmarks = nil, k.dmarks[:0]
	}
	phaseTotals.Lock()
	defer phaseTotals.Unlock()
	if phaseTotals.by == nil {
		phaseTotals.by = map[phaseKey]*phaseSum{}
	}
	key := phaseKey{streams, rows > streams}
	t := phaseTotals.by[key]
	if t == nil {
		t = &phaseSum{}
		phaseTotals.by[key] = t
	}
	t.passes++
	for i, d := range k.sum {
		t.sum[i] += d
		t.dev[i] += dev[i]
	}
	t.timed = t.timed || timed
}

// PartClock times the finer parts of a pass's work (a backend's share of
// attention, the lanes' start, wait and join) with KVBENCH_PHASES, summed
// over the process by name; its zero value (the timing off) reads no
// clock.
type PartClock struct {
	on   bool
	last time.Time
}

// StartParts starts a PartClock (off unless KVBENCH_PHASES is set).
func StartParts() PartClock {
	if !phasesOn {
		return PartClock{}
	}
	return PartClock{on: true, last: time.Now()}
}

// Mark ends part name: the time since the clock started or last marked
// is its.
func (k *PartClock) Mark(name string) {
	if !k.on {
		return
	}
	now := time.Now()
	d := now.Sub(k.last)
	k.last = now
	phaseTotals.Lock()
	defer phaseTotals.Unlock()
	for i := range phaseTotals.parts {
		if p := &phaseTotals.parts[i]; p.name == name {
			p.calls++
			p.sum += d
			return
		}
	}
	phaseTotals.parts = append(phaseTotals.parts, partSum{name: name, calls: 1, sum: d})
}

// WritePhases writes the mean wall time of each part of the passes run
// since the last call (with KVBENCH_PHASES set), one table row per number
// of streams a pass fed (decode steps: one row a stream; "chunks": prompt
// chunks, several), and forgets them. It writes nothing when the
// timing is off or no pass ran.
func WritePhases(w io.Writer) {
	phaseTotals.Lock()
	defer phaseTotals.Unlock()
	defer writeParts(w)
	if len(phaseTotals.by) == 0 {
		return
	}
	fmt.Fprintf(w, "| streams a pass | passes |")
	for _, n := range phaseNames {
		fmt.Fprintf(w, " %s ms |", n)
	}
	fmt.Fprintf(w, " total ms |\n|---:|---:|%s---:|\n", strings.Repeat("---:|", numPhases))
	keys := slices.SortedFunc(maps.Keys(phaseTotals.by), func(a, b phaseKey) int {
		if a.streams != b.streams {
			return a.streams - b.streams
		}
		return boolInt(a.chunk) - boolInt(b.chunk)
	})
	for _, key := range keys {
		t := phaseTotals.by[key]
		label := fmt.Sprint(key.streams)
		if key.chunk {
			label += " (chunks)"
		}
		fmt.Fprintf(w, "| %s | %d |", label, t.passes)
		var all time.Duration
		for _, d := range t.sum {
			all += d
			fmt.Fprintf(w, " %.3f |", ms(d, t.passes))
		}
		fmt.Fprintf(w, " %.3f |\n", ms(all, t.passes))
		if t.timed { // KVBENCH_PHASES=device: the same parts on the device
			fmt.Fprintf(w, "| %s, device | %d |", label, t.passes)
			all = 0
			for _, d := range t.dev {
				all += d
				fmt.Fprintf(w, " %.3f |", ms(d, t.passes))
			}
			fmt.Fprintf(w, " %.3f |\n", ms(all, t.passes))
		}
	}
	clear(phaseTotals.by)
}

// writeParts writes the PartClock sums since the last call, each part's
// calls, total and mean, and forgets them; the caller holds phaseTotals.
func writeParts(w io.Writer) {
	if len(phaseTotals.parts) == 0 {
		return
	}
	fmt.Fprintf(w, "| part | calls | total ms | mean us |\n|---|---:|---:|---:|\n")
	for _, p := range phaseTotals.parts {
		fmt.Fprintf(w, "| %s | %d | %.3f | %.2f |\n", p.name, p.calls, ms(p.sum, 1), 1e3*ms(p.sum, p.calls))
	}
	phaseTotals.parts = phaseTotals.parts[:0]
}

func ms(d time.Duration, n int) float64 { return d.Seconds() * 1e3 / float64(n) }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
