// Package crew runs the parts of a job side by side on goroutines that
// outlive the job. A batch step splits its host work (every stream's KV
// stores and evictions, the attention calls' metadata) into up to 16 parts,
// several times a layer, and the CPU backend every matrix product and
// attention call: a goroutine started, or woken from sleep, for each part
// costs tens of microseconds on a server, more than a part's work.
// The crew's workers wait for the next job by spinning on a word for a
// while after each one (holding their threads at first, then yielding them
// between looks), then sleep until a job wakes them. The workers live as
// long as the process.
package crew

import (
	"fmt"
	"os"
	goruntime "runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// MaxParts is the most parts a job runs side by side; a job of more runs
// them in rounds of MaxParts (Run).
const MaxParts = 64

// Env, set to "off", runs every job's parts on goroutines started for it
// (the way before the crew: to compare the two in one run).
const Env = "KVBENCH_CREW"

var off = os.Getenv(Env) == "off"

// A worker waits for the next job spinning on the job word for spinHot
// (holding its thread: a yield takes the scheduler's lock, and fifteen
// workers yielding in a loop slow every other goroutine's way back from a
// driver call), then yielding between looks until spin, then asleep.
const spinHot, spin = 100 * time.Microsecond, time.Millisecond

// The job word's low bits: the parts, and whether they outnumber the
// threads.
const partsMask, crowded = 0x7f, 0x80

// crew is the process's workers: worker w runs part w+1 of a job (part 0
// is the caller's).
type crew struct {
	busy  sync.Mutex // one job at a time; another caller meanwhile starts goroutines
	grow  sync.Mutex // guards starting workers
	n     atomic.Int32
	state atomic.Uint64 // the job's sequence number << 8 | crowded << 7 | its parts
	job   func(part int)
	left  atomic.Int32 // parts on workers not yet done
	fault [MaxParts]any
	sleep [MaxParts]atomic.Bool
	wake  [MaxParts]chan struct{}
}

var shared crew

// Run calls f(part) for every part in [0, parts), part 0 on the caller's
// goroutine and the others on the crew's, and returns once all have. A
// panic in a part is raised again on the caller's goroutine once every
// part has returned (the lowest part's; a runtime error with the stack of
// the goroutine that raised it). parts above MaxParts run in rounds. While
// another goroutine's job holds the crew, the parts run on goroutines
// started for them.
func Run(parts int, f func(part int)) {
	for lo := 0; lo < parts; lo += MaxParts {
		n := min(MaxParts, parts-lo)
		g := f
		if lo > 0 {
			g = func(p int) { f(lo + p) }
		}
		shared.run(n, g)
	}
}

func (c *crew) run(parts int, f func(int)) {
	if parts <= 1 {
		if parts == 1 {
			f(0)
		}
		return
	}
	if off || !c.busy.TryLock() {
		fresh(parts, f)
		return
	}
	defer c.busy.Unlock()
	c.start(parts - 1)
	c.job = f
	c.left.Store(int32(parts - 1))
	word := (c.state.Load()>>8+1)<<8 | uint64(parts)
	if parts > goruntime.GOMAXPROCS(0) {
		word |= crowded // more parts than threads: the workers yield as they wait
	}
	c.state.Store(word)
	for w := range parts - 1 {
		if c.sleep[w].Swap(false) {
			c.wake[w] <- struct{}{}
		}
	}
	c.fault[0] = nil
	call(f, 0, &c.fault[0])
	for i := 1; c.left.Load() > 0; i++ {
		if i%128 == 0 {
			goruntime.Gosched() // a part may wait for a thread (more parts than threads)
		}
	}
	c.job = nil
	for p := range parts {
		if e := c.fault[p]; e != nil {
			for q := range parts {
				c.fault[q] = nil
			}
			panic(e)
		}
	}
}

// start makes sure n workers run.
func (c *crew) start(n int) {
	if int(c.n.Load()) >= n {
		return
	}
	c.grow.Lock()
	defer c.grow.Unlock()
	for w := int(c.n.Load()); w < n; w++ {
		c.wake[w] = make(chan struct{}, 1)
		go c.work(w, c.state.Load())
		c.n.Store(int32(w + 1))
	}
}

// work is worker w's loop: part w+1 of each job of more than w+1 parts.
func (c *crew) work(w int, seen uint64) {
	for {
		seen = c.await(w, seen)
		if part := w + 1; part < int(seen&partsMask) {
			c.fault[part] = nil
			call(c.job, part, &c.fault[part])
			c.left.Add(-1)
		}
	}
}

// await returns the state of a job later than seen's: spinning for spin,
// then asleep until a job wakes worker w.
func (c *crew) await(w int, seen uint64) uint64 {
	for {
		t0 := time.Now()
		for i := 1; ; i++ {
			if s := c.state.Load(); s>>8 != seen>>8 {
				return s
			}
			if i%128 == 0 {
				if d := time.Since(t0); d > spin {
					break
				} else if d > spinHot || seen&crowded != 0 {
					goruntime.Gosched()
				}
			}
		}
		c.sleep[w].Store(true)
		if s := c.state.Load(); s>>8 != seen>>8 {
			if !c.sleep[w].Swap(false) {
				<-c.wake[w] // the job's caller took the flag: its token is on the way
			}
			return s
		}
		<-c.wake[w]
	}
}

// call runs f(part), keeping a panic in *fault.
func call(f func(int), part int, fault *any) {
	defer func() {
		if e := recover(); e != nil {
			if err, ok := e.(error); ok {
				if _, rt := err.(goruntime.Error); rt {
					e = fmt.Sprintf("%v (part %d of a crew's job)\n%s", e, part, debug.Stack())
				}
			}
			*fault = e
		}
	}()
	f(part)
}

// fresh runs the parts on goroutines started for them.
func fresh(parts int, f func(int)) {
	faults := make([]any, parts)
	var wg sync.WaitGroup
	wg.Add(parts - 1)
	for p := 1; p < parts; p++ {
		go func() {
			defer wg.Done()
			call(f, p, &faults[p])
		}()
	}
	call(f, 0, &faults[0])
	wg.Wait()
	for _, e := range faults {
		if e != nil {
			panic(e)
		}
	}
}
