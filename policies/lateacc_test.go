package policies_test

import (
	"fmt"
	goruntime "runtime"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// deferring is a CPU backend that defers the Acc sums of attention calls
// (runtime.AccDeferrer) as a GPU does: a deferred call computes its sums
// into buffers of the backend's and leaves the call's Acc untouched; FlushAcc
// hands them over as views (AccView) into the headers the call had. It
// counts the calls it deferred and the flushes, and refuses a call that
// asks for deferral without AccView. With pace it also marks its reads
// (runtime.AccPacer) and answers AccDone from a fixed pattern (some marks
// land late), so that a pass's hooks run in several rounds.
type deferring struct {
	*cpu.Backend
	group    bool // it takes AccGroup (runtime.AccGrouper)
	noDefer  bool // DeferAcc defers nothing
	pace     bool // AccMark marks (else -1)
	on       bool
	queued   []deferredAcc
	filled   int   // queued calls filled (FlushAccTo)
	marks    []int // the pass's marks: queued calls before each
	queries  int   // AccDone calls, for its pattern
	rounds   int   // FlushAccTo calls that filled calls
	deferred int
	chunks   int // deferred calls of several rows (a prompt's chunks)
	lagged   int // FlushAccTo calls while deferring (a lagging pass's layers)
	grouped  int // calls that summed the groups
	flushes  int
	t        *testing.T
}

type deferredAcc struct {
	hdr  [][]float32 // the call's Acc headers, as it had them
	sums [][]float32 // the sums, the backend's
}

func (d *deferring) DeferAcc(on bool) bool { d.on = on && !d.noDefer; return d.on }

func (d *deferring) AccGroups() bool { return d.group }

func (d *deferring) FlushAcc() {
	d.flushes++
	d.fill(len(d.queued))
	d.queued, d.filled, d.marks = d.queued[:0], 0, d.marks[:0]
}

// fill hands the queued calls up to n their sums.
func (d *deferring) fill(n int) {
	for _, q := range d.queued[d.filled:n] {
		for h := range q.hdr {
			q.hdr[h] = q.sums[h]
		}
	}
	d.filled = max(d.filled, n)
}

func (d *deferring) AccMark() int {
	if !d.pace || !d.on {
		return -1
	}
	d.marks = append(d.marks, len(d.queued))
	return len(d.marks) - 1
}

// AccDone: two of three answers say landed.
func (d *deferring) AccDone(m int) bool {
	d.queries++
	return d.queries%3 != 0
}

func (d *deferring) FlushAccTo(m int) {
	if d.on { // a lagging pass (runtime.LagHook): a layer's sums
		d.lagged++
	}
	if n := d.marks[m]; n > d.filled {
		d.rounds++
		d.fill(n)
	}
}

func (d *deferring) Attend(a *runtime.AttnArgs) {
	if (!d.on && !a.AccGroup) || a.Acc == nil {
		d.Backend.Attend(a)
		return
	}
	if d.on && !a.AccView {
		d.t.Errorf("a deferred call without AccView")
	}
	if a.AccGroup && (!d.group || !a.AccZero) {
		d.t.Fatalf("AccGroup on a backend that does not take it (%v) or without AccZero (%v)", d.group, a.AccZero)
	}
	// The sums go to the backend's own buffers; the call's headers stay as
	// they were until FlushAcc.
	c := *a
	group := a.Heads / a.KVHeads
	sums := make([][]float32, a.Heads)
	for h := range sums {
		n := a.Seqs[h/group].N
		sums[h] = make([]float32, n)
		if !a.AccZero {
			copy(sums[h], a.Acc[h][:n])
		}
	}
	c.Acc, c.AccView, c.AccGroup = sums, false, false
	d.Backend.Attend(&c)
	if a.AccGroup { // each KV head's group added up in float32, heads in order
		d.grouped++
		g := make([][]float32, a.KVHeads)
		for k := range g {
			g[k] = slices.Clone(sums[k*group])
			for h := k*group + 1; h < (k+1)*group; h++ {
				for t := range g[k] {
					g[k][t] += sums[h][t]
				}
			}
		}
		sums = g
	}
	if !d.on {
		for i := range sums {
			a.Acc[i] = sums[i]
		}
		return
	}
	d.queued = append(d.queued, deferredAcc{hdr: a.Acc, sums: sums})
	d.deferred++
	if a.Rows > 1 {
		d.chunks++
	}
}

// TestLateAfterAttend runs H2O and TOVA alone and in a batch on a backend
// that defers the attention sums to the end of each decode pass, and of
// H2O's prompt chunks before the last
// (runtime.AccDeferrer: their AfterAttend then runs after the last layer),
// and on one that sums each KV head's group itself (runtime.AccGrouper),
// deferring or not, against the plain CPU backend: identical logits, log-probabilities, cache
// contents after every step and accounting; without recall and with recall
// sampled every third step (whose passes do not defer: the recall figures
// are read in AfterAttend). The deferring backend must
// have deferred calls and flushed once a pass at most.
func TestLateAfterAttend(t *testing.T) {
	plain := cpu.New(2)
	defer plain.Close()
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	sts := batchStreams(6, m.Config.Vocab, 7)
	for _, pc := range []struct {
		name   string
		params policies.Params
	}{{"h2o", policies.Params{"budget": 24}}, {"h2o", policies.Params{"budget": 20, "normalize": true}},
		{"tova", policies.Params{"budget": 20}}, {"snapkv", policies.Params{"capacity": 20, "window": 8}}} {
		for _, recall := range []int{0, 3} {
			for _, mode := range []struct {
				group, noDefer, pace bool
				lanes                string
			}{{false, false, false, "off"}, {true, false, false, "off"}, {true, true, false, "off"}, {true, false, false, "2"},
				{false, false, true, "off"}, {true, false, true, "2"}} {
				t.Run(fmt.Sprintf("%s %v recall %d group %v defer %v pace %v lanes %s", pc.name, pc.params, recall, mode.group, !mode.noDefer, mode.pace, mode.lanes), func(t *testing.T) {
					t.Setenv("KVBENCH_LANES", mode.lanes) // 2: the hooks on goroutines, a round's layers in one job
					defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(4))
					d := &deferring{Backend: cpu.New(2), t: t, group: mode.group, noDefer: mode.noDefer, pace: mode.pace}
					defer d.Close()
					params := pc.params
					run := func(be runtime.Backend) ([]streamTrace, []streamTrace) {
						measure := func(p policies.Policy) { p.MeasureRecall(recall) } // after startPolicy's
						alone := make([]streamTrace, len(sts))
						for i, st := range sts {
							alone[i] = unbatchedTraceWith(t, m, be, pc.name, params, st, measure)
						}
						return alone, mixedTracesWith(t, m, be, func(int) (string, policies.Params) { return pc.name, params }, sts, measure)
					}
					wantAlone, wantBatch := run(plain)
					gotAlone, gotBatch := run(d)
					for i := range sts {
						compareTraces(t, fmt.Sprintf("stream %d alone", i), gotAlone[i], wantAlone[i], 0)
						compareTraces(t, fmt.Sprintf("stream %d batched", i), gotBatch[i], wantBatch[i], 0)
					}
					if mode.group && d.grouped == 0 && pc.name != "snapkv" { // SnapKV pools each query head's sums
						t.Errorf("no call summed the groups")
					}
					if !mode.noDefer && (d.deferred == 0 || d.flushes == 0) {
						t.Errorf("%d calls deferred, %d flushes: the passes did not defer", d.deferred, d.flushes)
					}
					// Prompt chunks defer too (the streams' prompts of 37,
					// 61 and 23 tokens run in chunks of 16): H2O's before
					// the last go late; its last and TOVA's lag.
					if wantChunks := !mode.noDefer; (d.chunks > 0) != wantChunks {
						t.Errorf("%d prompt chunks deferred, want some: %v", d.chunks, wantChunks)
					}
					// The prompts' last chunks (and TOVA's) lag: each layer's
					// hooks after its MLP, where the backend paces its reads.
					if wantLag := mode.pace && !mode.noDefer; (d.lagged > 0) != wantLag {
						t.Errorf("%d layers' hooks lagged, want some: %v", d.lagged, wantLag)
					}
					if len(d.queued) != 0 {
						t.Errorf("%d deferred calls never filled", len(d.queued))
					}
					if mode.pace && d.rounds <= d.flushes {
						t.Errorf("%d rounds in %d flushes: the passes were not paced", d.rounds, d.flushes)
					}
					t.Logf("%d calls deferred in %d flushes, %d rounds; recall sampled %d times in stream 0 alone", d.deferred, d.flushes, d.rounds, gotAlone[0].stats.RecallN)
					if recall > 0 && gotAlone[0].stats.RecallN == 0 {
						t.Errorf("no recall sampled")
					}
				})
			}
		}
	}
}

// TestLateAfterAttendOrder: in a deferred pass every layer's AfterAttend
// runs after the last layer's attention, in layer order, each on its own
// layer's call.
func TestLateAfterAttendOrder(t *testing.T) {
	d := &deferring{Backend: cpu.New(1), t: t}
	defer d.Close()
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	r, err := runtime.NewRunner(m, d, 16)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policies.New("h2o", policies.Params{"budget": 8})
	if err != nil {
		t.Fatal(err)
	}
	rec := &orderHook{Hook: p.(runtime.Hook), late: p.(runtime.LateHook)}
	if err := p.Start(r); err != nil {
		t.Fatal(err)
	}
	r.Hook = rec
	logits := make([]float32, m.Config.Vocab)
	for i := range 30 {
		rec.events = rec.events[:0]
		if err := r.Forward([]int{3 + i}, logits); err != nil {
			t.Fatal(err)
		}
		if i < 12 { // under the budget: h2o does not evict yet, nothing is late
			continue
		}
		L := m.Config.Layers
		var want []string
		for l := range L {
			want = append(want, fmt.Sprintf("before %d", l))
		}
		for l := range L {
			want = append(want, fmt.Sprintf("after %d seqs %d", l, l))
		}
		if !slices.Equal(rec.events, want) {
			t.Fatalf("step %d: hooks ran %v, want %v", i, rec.events, want)
		}
	}
}

// orderHook records the hooks' order and which layer's sequences each
// AfterAttend was given.
type orderHook struct {
	runtime.Hook
	late   runtime.LateHook
	events []string
	seqs   map[*runtime.KVSeq]int
	cache  *runtime.KVCache
}

func (o *orderHook) AfterAttendLate() bool { return o.late.AfterAttendLate() }

func (o *orderHook) BeforeAttend(l int, a *runtime.AttnArgs) {
	o.events = append(o.events, fmt.Sprintf("before %d", l))
	if o.seqs == nil {
		o.seqs = map[*runtime.KVSeq]int{}
	}
	o.seqs[&a.Seqs[0]] = l
	o.Hook.BeforeAttend(l, a)
}

func (o *orderHook) AfterAttend(l int, a *runtime.AttnArgs) {
	o.events = append(o.events, fmt.Sprintf("after %d seqs %d", l, o.seqs[&a.Seqs[0]]))
	o.Hook.AfterAttend(l, a)
}

// TestLateAfterAttendGPU: on the CUDA backend, H2O and TOVA alone and in a
// batch give the same logits, log-probabilities, cache contents and
// accounting with their sums read once a pass and summed by group on the
// device (the defaults) as read once a layer and added up by the policy
// (KVBENCH_ACC_DEFER=off, KVBENCH_ACC_GROUP=off), with each alone, and
// with the pass's reads waited for at once instead of layer by layer
// (KVBENCH_ACC_PACE=off), and with the reads on the device's side stream
// (KVBENCH_ACC_STREAM=on), paced or not: the same kernels and the same
// float32 sums, only the reads wait elsewhere.
// Models: tiny (heads of 16: the host adds the sums, be_attend) and heads
// of 64 (the split-KV kernels and attn_rt_acc). Recall is sampled every
// fifth step (startPolicy), whose passes read once a layer.
func TestLateAfterAttendGPU(t *testing.T) {
	tiny, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	c64 := tiny.Config
	c64.Dim, c64.Heads, c64.KVHeads, c64.HeadDim, c64.Layers = 256, 8, 2, 64, 2
	d64 := runtime.NewRandomModel(c64, 9)
	if err := d64.Check(); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*runtime.Model{tiny, d64} {
		sts := batchStreams(6, m.Config.Vocab, 7)
		traces := func(t *testing.T, deferAcc, group, pace, side, name string, params policies.Params) ([]streamTrace, []streamTrace) {
			t.Setenv("KVBENCH_ACC_DEFER", deferAcc)
			t.Setenv("KVBENCH_ACC_GROUP", group)
			t.Setenv("KVBENCH_ACC_PACE", pace)
			t.Setenv("KVBENCH_ACC_STREAM", side)
			be := gpuBackendAt(t, "f32")
			alone := make([]streamTrace, len(sts))
			for i, st := range sts {
				alone[i] = unbatchedTrace(t, m, be, name, params, st)
			}
			return alone, batchedTraces(t, m, be, name, params, sts)
		}
		for _, pc := range []struct {
			name   string
			params policies.Params
		}{{"h2o", policies.Params{"budget": 24}}, {"tova", policies.Params{"budget": 20}}} {
			t.Run(fmt.Sprintf("hd%d/%s", m.Config.HeadDim, pc.name), func(t *testing.T) {
				wantAlone, wantBatch := traces(t, "off", "off", "", "", pc.name, pc.params)
				for _, set := range [][4]string{{"", "", "", ""}, {"", "", "off", ""}, {"", "off", "", ""}, {"off", "", "", ""},
					{"", "", "", "on"}, {"", "", "off", "on"}} {
					gotAlone, gotBatch := traces(t, set[0], set[1], set[2], set[3], pc.name, pc.params)
					for i := range sts {
						what := fmt.Sprintf("defer %q group %q pace %q side %q, stream %d", set[0], set[1], set[2], set[3], i)
						compareTraces(t, what+" alone", gotAlone[i], wantAlone[i], 0)
						compareTraces(t, what+" batched", gotBatch[i], wantBatch[i], 0)
					}
				}
			})
		}
	}
}
