package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// rowsCall is a prompt chunk's attention call over a cache pair's GPU side:
// rows query rows at the cache's last positions, with Acc (zeroed, or from
// given sums) and, for heads of 16, the be_attend path.
func rowsCall(g *cuda.Backend, cp *cachePair, rng *rand.Rand, heads, hd, rows int, acc [][]float32, zero bool) *runtime.AttnArgs {
	w := heads * hd
	q, out := g.Alloc(rows*w), g.Alloc(rows*w)
	g.Write(q, 0, randVec(rng, rows*w, 1))
	qpos := cp.lastRows(rows)
	a := &runtime.AttnArgs{Rows: rows, QPos: qpos, Heads: heads, KVHeads: cp.cfg.KVHeads, HeadDim: hd,
		Scale: float32(1 / math.Sqrt(float64(hd))), Seqs: cp.seqs(1), Rope: runtime.RopeHalf, Theta: 1e4, Q: q, Out: out,
		AccZero: zero, AccFrom: qpos[rows/3]}
	a.Acc = make([][]float32, heads)
	for h := range a.Acc {
		a.Acc[h] = slices.Clone(acc[h])
	}
	return a
}

// TestAttendRowsGPU: a call whose kept scores pass the cap runs in blocks of
// rows (accrows.go) and gives what it gives in one call: the outputs and the
// sums (zeroed, carried from given ones, or a KV head's group's) within
// float32 rounding of the blocks' other split-KV chunks, on the split-KV
// path (heads of 64 and 128) and be_attend's (16).
func TestAttendRowsGPU(t *testing.T) {
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(8, 1))
	for _, hd := range []int{16, 64, 128} {
		for _, mode := range []string{"zero", "carried", "group"} {
			zero := mode != "carried"
			t.Run(fmt.Sprintf("hd%d/%s", hd, mode), func(t *testing.T) {
				heads, kv, rows := 8, 2, 40
				cp := newCachePair(t, c, g, runtime.Config{Heads: heads, KVHeads: kv, HeadDim: hd}, 16, runtime.BF16, false)
				cp.append(rng, 300)
				acc := make([][]float32, heads)
				for h := range acc {
					acc[h] = randVec(rng, cp.c.Len(0, h/(heads/kv)), 1)
				}
				seed := rng.Uint64()
				run := func(max int64, deferred bool) ([]float32, [][]float32) {
					defer cuda.SetAccRawMax(max)()
					defer g.SetAccTail(false)() // the rows before AccFrom in the blocks too
					a := rowsCall(g, cp, rand.New(rand.NewPCG(seed, 2)), heads, hd, rows, acc, zero)
					if mode == "group" { // a KV head's group summed
						a.AccGroup, a.Acc = true, make([][]float32, kv)
						for k := range a.Acc {
							a.Acc[k] = make([]float32, cp.c.Len(0, k))
						}
					}
					if deferred { // a late pass's call (lateacc.go): views of its own
						a.AccView = g.DeferAcc(true)
						g.Attend(a)
						g.DeferAcc(false)
						g.FlushAcc()
					} else {
						g.Attend(a)
					}
					sums := make([][]float32, len(a.Acc))
					for h := range sums {
						sums[h] = slices.Clone(a.Acc[h])
					}
					return read(g, a.Out), sums
				}
				wantOut, wantAcc := run(1<<40, false)
				for _, deferred := range []bool{false, true} {
					gotOut, gotAcc := run(int64(heads*300*4)*7, deferred) // 7 rows a block
					if d := relDiff(gotOut, wantOut); d > 1e-5 || math.IsNaN(d) {
						t.Errorf("deferred %v: outputs in blocks of rows differ by %.3g (relative)", deferred, d)
					}
					for h := range wantAcc {
						if d := relDiff(gotAcc[h], wantAcc[h]); d > 1e-5 || math.IsNaN(d) {
							t.Errorf("deferred %v: Acc[%d] in blocks of rows differs by %.3g (relative)", deferred, h, d)
						}
					}
				}
			})
		}
	}
}

// The fake-device row tests' shape: 8 query heads over 2 KV heads of 64.
const fakeRowsHeads, fakeRowsDim = 8, 64

// fakeRowsCache is a fake backend, a cache pair on it and the CPU holding
// 300 tokens of that shape, its random source (seeded by seed) and zeroed
// sums of 300 tokens a query head.
func fakeRowsCache(t *testing.T, seed uint64) (*cuda.Backend, *cachePair, *rand.Rand, [][]float32) {
	t.Helper()
	g := fakeBackend(t)
	c := cpu.New(0)
	t.Cleanup(func() { c.Close() })
	rng := rand.New(rand.NewPCG(2, seed))
	cp := newCachePair(t, c, g, runtime.Config{Heads: fakeRowsHeads, KVHeads: 2, HeadDim: fakeRowsDim}, 16, runtime.BF16, false)
	cp.append(rng, 300)
	acc := make([][]float32, fakeRowsHeads)
	for h := range acc {
		acc[h] = make([]float32, 300)
	}
	return g, cp, rng, acc
}

// TestFakeAttendRows: on the fake device, a call whose scores pass the cap
// runs as ceil(rows / block) calls (one attn_rt_acc each), the last block
// the rest; one that fits, as one.
func TestFakeAttendRows(t *testing.T) {
	const heads, hd = fakeRowsHeads, fakeRowsDim
	g, cp, rng, acc := fakeRowsCache(t, 3)
	defer g.SetAccTail(false)() // every row in blocks, those before AccFrom too (not apart: accTail)
	for _, cs := range []struct {
		max  int64
		want int64
	}{{1 << 40, 1}, {int64(heads*300*4) * 7, 6}, {1, 40}} {
		restore := cuda.SetAccRawMax(cs.max)
		k0 := cuda.FakeKernels()
		g.Attend(rowsCall(g, cp, rng, heads, hd, 40, acc, true))
		k1 := cuda.FakeKernels()
		restore()
		if n := k1["attn_rt_acc"] - k0["attn_rt_acc"]; n != cs.want {
			t.Errorf("cap %d bytes: %d attn_rt_acc launches, want %d", cs.max, n, cs.want)
		}
	}
}

// TestFakeAttendRowsDeferred: in a pass that defers its sums (lateacc.go),
// a call run in blocks of rows hands back views of its own, as a deferred
// call does: two layers' calls whose headers share a policy's buffers end
// with sums in neither those buffers nor each other's, so that the first
// layer's late hook still finds its own.
func TestFakeAttendRowsDeferred(t *testing.T) {
	const heads, hd = fakeRowsHeads, fakeRowsDim
	g, cp, rng, own := fakeRowsCache(t, 4)
	defer g.SetAccTail(false)()
	defer cuda.SetAccRawMax(int64(heads*300*4) * 7)() // blocks of 7 rows
	if !g.DeferAcc(true) {
		t.Fatal("the fake backend does not defer")
	}
	var calls []*runtime.AttnArgs
	k0 := cuda.FakeKernels()
	for range 2 {
		a := rowsCall(g, cp, rng, heads, hd, 40, own, true)
		copy(a.Acc, own) // the policy's buffers, shared by the layers
		a.AccView = true
		g.Attend(a)
		calls = append(calls, a)
	}
	g.DeferAcc(false)
	g.FlushAcc()
	if n := cuda.FakeKernels()["attn_rt_acc"] - k0["attn_rt_acc"]; n != 12 {
		t.Errorf("%d attn_rt_acc launches, want 12 (6 blocks a call)", n)
	}
	for h := range heads {
		p0, p1, po := &calls[0].Acc[h][0], &calls[1].Acc[h][0], &own[h][0]
		if p0 == po || p1 == po || p0 == p1 {
			t.Errorf("head %d: the calls' sums share memory (layer 0 %p, layer 1 %p, the policy's %p)", h, p0, p1, po)
		}
	}
}

// tailCall is a prompt chunk's call over cp (rows query rows at the cache's
// last positions) whose rows add to Acc from row from on (SnapKV's
// observation window, TOVA's last row), its sums a query head's each
// (zeroed) or a KV head's group's, on backend i of cp (0 CPU, 1 GPU).
func tailCall(cp *cachePair, be runtime.Backend, i int, q []float32, heads, rows, from int, group bool) *runtime.AttnArgs {
	hd := cp.cfg.HeadDim
	w := heads * hd
	qb, out := be.Alloc(rows*w), be.Alloc(rows*w)
	be.Write(qb, 0, q)
	qpos := cp.lastRows(rows)
	a := &runtime.AttnArgs{Rows: rows, QPos: qpos, Heads: heads, KVHeads: cp.cfg.KVHeads, HeadDim: hd,
		Scale: float32(1 / math.Sqrt(float64(hd))), Seqs: cp.seqs(i), Rope: runtime.RopeHalf, Theta: 1e4, Q: qb, Out: out,
		AccZero: true, AccFrom: qpos[from]}
	n := heads
	if group {
		n, a.AccGroup = cp.cfg.KVHeads, true
	}
	a.Acc = make([][]float32, n)
	for h := range a.Acc {
		a.Acc[h] = make([]float32, cp.c.Len(0, h*cp.cfg.KVHeads/n))
	}
	return a
}

// TestAttendAccTailGPU: a bf16 prompt chunk whose last rows alone add to
// Acc runs its first rows on the tensor-core prefill and the rest on the
// split-KV path (attendAccTail). Outputs match the CPU's within the
// prefill's tolerance, the sums within float32 rounding, for a query head's
// sums and a group's, a window of rows and the last row alone; the sums
// equal those of the call run as one (KVBENCH_ACC_TAIL=off, every row on
// the split-KV path) within float32 rounding, and so do the outputs of the
// rows that add.
func TestAttendAccTailGPU(t *testing.T) {
	c := cpu.New(0)
	defer c.Close()
	g := newGPUPrec(t, "bf16")
	rng := rand.New(rand.NewPCG(4, 12))
	for _, hd := range []int{64, 128} {
		for _, from := range []int{48, 63} {
			for _, group := range []bool{false, true} {
				t.Run(fmt.Sprintf("hd%d/from%d/group%v", hd, from, group), func(t *testing.T) {
					heads, kv, rows := 8, 2, 64
					cfg := runtime.Config{Heads: heads, KVHeads: kv, HeadDim: hd}
					cp := newCachePair(t, c, g, cfg, 16, runtime.BF16, false)
					cp.append(rng, 300+rows)
					q := randVec(rng, rows*heads*hd, 1)
					want := tailCall(cp, c, 0, q, heads, rows, from, false) // the CPU has no group sums (AccGrouper)
					c.Attend(want)
					wantAcc := want.Acc
					if group {
						wantAcc = groupSums(want.Acc, kv)
					}
					got := tailCall(cp, g, 1, q, heads, rows, from, group)
					g.Attend(got)
					if p := g.AttnPlan(); !strings.HasPrefix(p.Kernel, "attn_rt") {
						t.Errorf("the rows that add ran %s, want the split-KV kernels", p.Kernel)
					}
					wantOut, gotOut := read(c, want.Out), read(g, got.Out)
					if d := relDiff(gotOut, wantOut); d > flashTol || math.IsNaN(d) {
						t.Errorf("outputs differ from the CPU's by %.3g (relative)", d)
					}
					// The same call over the same pages, run as one.
					restore := g.SetAccTail(false)
					whole := tailCall(cp, g, 1, q, heads, rows, from, group)
					g.Attend(whole)
					restore()
					if p := g.AttnPlan(); !strings.HasPrefix(p.Kernel, "attn_rt") {
						t.Errorf("the call as one ran %s, want the split-KV kernels", p.Kernel)
					}
					wholeOut := read(g, whole.Out)
					for h := range whole.Acc {
						if d := relDiff(got.Acc[h], whole.Acc[h]); d > 1e-5 || math.IsNaN(d) {
							t.Errorf("Acc[%d] differs from the call's as one by %.3g (relative)", h, d)
						}
					}
					for h := range wantAcc {
						if d := relDiff(got.Acc[h], wantAcc[h]); d > 1e-4 || math.IsNaN(d) {
							t.Errorf("Acc[%d] differs from the CPU's by %.3g (relative)", h, d)
						}
					}
					tail := from * heads * hd
					if d := relDiff(gotOut[tail:], wantOut[tail:]); d > 1e-4 || math.IsNaN(d) {
						t.Errorf("the outputs of the rows that add differ from the CPU's by %.3g (relative)", d)
					}
					if d := relDiff(gotOut[tail:], wholeOut[tail:]); d > 1e-5 || math.IsNaN(d) {
						t.Errorf("the outputs of the rows that add differ from the call's as one by %.3g (relative)", d)
					}
				})
			}
		}
	}
}

// TestFakeAttendAccTail: on the fake device at bf16 precision, a 64-row
// prompt chunk whose last rows alone add to Acc launches the tensor-core
// prefill once (its first rows) and one split-KV call with Acc (the rest),
// and the scores it keeps are too few for every row's; run as one
// (SetAccTail(false)), no prefill kernel, and the scores' scratch grows to
// hold every row's. A call whose first row adds, or whose rows
// all come before AccFrom, runs as one. In a batch (AttendBatch), each such
// call runs so too.
func TestFakeAttendAccTail(t *testing.T) {
	g := fakeBackend(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(2, 5))
	heads, kv, hd, rows := 8, 2, 128, 64
	cp := newCachePair(t, c, g, runtime.Config{Heads: heads, KVHeads: kv, HeadDim: hd}, 16, runtime.BF16, false)
	cp.append(rng, 300+rows)
	q := make([]float32, rows*heads*hd)
	every := int64(rows * heads * cp.c.Len(0, 0) * 4) // every row's raw scores
	last := cp.next - 1
	for _, cs := range []struct {
		name       string
		from       int
		on         bool
		flash, acc int64
		allScores  bool
	}{
		{"window of 16", last - 15, true, 1, 1, false},
		{"last row", last, true, 1, 1, false},
		{"window of 16, as one", last - 15, false, 0, 1, true},
		{"every row adds", last - rows + 1, true, 0, 1, true},
		{"no row adds", last + 1, true, 0, 1, true},
	} {
		restore := g.SetAccTail(cs.on)
		flash, acc, _ := launches(func() {
			a := tailCall(cp, g, 1, q, heads, rows, 0, false)
			a.AccFrom = cs.from
			g.Attend(a)
		})
		restore()
		if flash != cs.flash || acc != cs.acc {
			t.Errorf("%s: %d prefill and %d attn_rt_acc launches, want %d and %d", cs.name, flash, acc, cs.flash, cs.acc)
		}
		// The scratch only grows: the cases that keep few scores come first.
		if s := g.ScoreBytes(); (s >= every) != cs.allScores {
			t.Errorf("%s: the scores' scratch is %d bytes after the call; every row's scores are %d", cs.name, s, every)
		}
	}
	// A batch's two such calls: each through Attend, its rows apart.
	calls := make([]*runtime.AttnArgs, 2)
	for i := range calls {
		calls[i] = tailCall(cp, g, 1, q, heads, rows, rows-16, false)
	}
	if flash, acc, _ := launches(func() { g.AttendBatch(calls) }); flash != 2 || acc != 2 {
		t.Errorf("a batch of two: %d prefill and %d attn_rt_acc launches, want 2 and 2", flash, acc)
	}
}

// groupSums is a query head's sums (acc [heads]) added up by KV head of kv
// in head order in float32, as the GPU's group sums (AccGroup) are.
func groupSums(acc [][]float32, kv int) [][]float32 {
	group := len(acc) / kv
	out := make([][]float32, kv)
	for g := range out {
		out[g] = slices.Clone(acc[g*group])
		for h := g*group + 1; h < (g+1)*group; h++ {
			for t, v := range acc[h] {
				out[g][t] += v
			}
		}
	}
	return out
}

// launches runs f on the fake device and counts what it launched: the
// tensor-core prefill kernels (flash_*), the split-KV path's sums
// (attn_rt_acc) and the tensor-core sums (acc_cols_*).
func launches(f func()) (flash, acc, cols int64) {
	k0 := cuda.FakeKernels()
	f()
	k1 := cuda.FakeKernels()
	for k, c := range k1 {
		switch {
		case strings.HasPrefix(k, "flash_"):
			flash += c - k0[k]
		case strings.HasPrefix(k, "acc_cols_"):
			cols += c - k0[k]
		}
	}
	return flash, k1["attn_rt_acc"] - k0["attn_rt_acc"], cols
}

// TestFakePromptAccTail runs a 200-token prompt of a small zero model on
// the fake device at bf16 precision under each policy, as one forward a
// stream: SnapKV and PyramidKV (whose last 32 prompt rows accumulate) and
// TOVA (its last row) run each layer's prompt on the tensor-core prefill
// and the rows that accumulate on one split-KV call with its sums; H2O
// (every row accumulates) runs the prefill and its sums on the tensor
// cores (acc_cols); every other policy the prefill and no sums. The
// policies shape their calls as attendAccTail and attendAccCols expect;
// every registered policy must have a case, so no policy's prompt leaves
// the prefill unnoticed.
func TestFakePromptAccTail(t *testing.T) {
	c := runtime.Config{Arch: "llama", Dim: 256, Hidden: 256, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 300, MaxSeq: 1 << 12, RopeTheta: 1e4, NormEps: 1e-5}
	const streams, prompt = 2, 200
	calls := int64(streams * c.Layers)
	type want struct {
		name             string
		params           policies.Params
		flash, acc, cols int64
	}
	cases := []want{
		{"full", nil, calls, 0, 0},
		{"window", policies.Params{"budget": 64}, calls, 0, 0},
		{"streamingllm", policies.Params{"sinks": 4, "budget": 64}, calls, 0, 0},
		{"random", policies.Params{"budget": 64}, calls, 0, 0},
		{"quest", policies.Params{"budget": 32, "page": 8}, calls, 0, 0},
		{"oracle", policies.Params{"budget": 64}, calls, 0, 0},
		{"snapkv", policies.Params{"budget": 64}, calls, calls, 0},
		{"pyramidkv", policies.Params{"budget": 64}, calls, calls, 0},
		{"tova", policies.Params{"budget": 40}, calls, calls, 0},
		{"h2o", policies.Params{"budget": 40}, calls, 0, calls},
	}
	for _, name := range policies.Names() {
		if !slices.ContainsFunc(cases, func(c want) bool { return c.name == name }) {
			t.Errorf("policy %s has no case: say what its prompt launches", name)
		}
	}
	for _, pc := range cases {
		t.Run(pc.name, func(t *testing.T) {
			t.Setenv("KVBENCH_ACC_TAIL", "on")
			be := fakeBackend(t)
			var batch *runtime.Batch
			flash, acc, cols := launches(func() {
				batch = promptedBatch(t, be, runtime.ZeroModel(c), pc.name, pc.params, streams, 256, func(int) int { return prompt })
			})
			if flash != pc.flash || acc != pc.acc || cols != pc.cols {
				t.Errorf("the prompts: %d prefill, %d attn_rt_acc and %d acc_cols launches, want %d, %d and %d", flash, acc, cols, pc.flash, pc.acc, pc.cols)
			}
			for i := range batch.Len() {
				batch.Runner(i).Reset()
			}
		})
	}
}
