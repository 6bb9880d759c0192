package cuda_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// accColsCase is a prompt chunk whose every row adds to Acc (H2O's under
// the dense protocol), over a cache of prior tokens.
type accColsCase struct {
	name    string
	hd      int
	group   bool          // AccGroup: a KV head's sums
	typ     runtime.DType // the GPU's pages
	evict   bool          // a third of the prior tokens evicted: key positions out of order
	window  int           // the model's sliding window
	reverse bool          // the rows' positions descending
	add     bool          // the sums add to Acc's values (no AccZero)
}

// accColsCall is c's call of rows rows over cp on backend i (0 CPU, 1 GPU)
// with the queries q.
func accColsCall(cp *cachePair, be runtime.Backend, i int, q []float32, heads, rows int, c accColsCase) *runtime.AttnArgs {
	a := tailCall(cp, be, i, q, heads, rows, 0, c.group) // AccFrom: the first row's position, the smallest
	a.Window = c.window
	if c.reverse {
		slices.Reverse(a.QPos)
	}
	if c.add {
		a.AccZero = false
		for h := range a.Acc {
			for t := range a.Acc[h] {
				a.Acc[h][t] = float32(t%7) * 0.25
			}
		}
	}
	return a
}

// accMass is the sum of a's sums less what Acc held before (accColsCall's
// values where c.add).
func accMass(a *runtime.AttnArgs, c accColsCase) float64 {
	m := 0.0
	for h := range a.Acc {
		for t, v := range a.Acc[h] {
			m += float64(v)
			if c.add {
				m -= float64(t%7) * 0.25
			}
		}
	}
	return m
}

// TestAttendAccColsGPU: a bf16 prompt chunk of 200 rows whose every row
// adds to Acc runs the tensor-core prefill and acc_cols. Its outputs match
// the CPU's within the prefill's tolerance; its sums match the CPU's and
// the split-KV path's (KVBENCH_ACC_COLS=off) within the queries' rounding
// to bf16; each row's probabilities sum to one (the sums of a slice add up
// to its rows, times the group with AccGroup: the prefill's lse and
// acc_cols's scores agree); through AttendBatch and through a deferring
// pass (DeferAcc, AccView) the sums are the same as Attend's, and with the
// other variant (KVBENCH_ACC_COLS_MT=2) within float32 rounding. Head dims 64
// and 128, a query head's sums and a group's, bf16 and float32 pages, key
// positions out of order, a sliding window, rows in descending order, and
// sums that add to Acc's values.
func TestAttendAccColsGPU(t *testing.T) {
	c := cpu.New(0)
	defer c.Close()
	g := newGPUPrec(t, "bf16")
	rng := rand.New(rand.NewPCG(7, 21))
	const heads, kv, rows, prior = 8, 2, 200, 300
	for _, tc := range []accColsCase{
		{name: "hd64", hd: 64, typ: runtime.BF16},
		{name: "hd128/group", hd: 128, group: true, typ: runtime.BF16},
		{name: "hd128/f32 pages", hd: 128, typ: runtime.F32},
		{name: "hd64/evicted/group", hd: 64, group: true, typ: runtime.BF16, evict: true},
		{name: "hd128/window", hd: 128, typ: runtime.BF16, window: 150},
		{name: "hd64/rows descending", hd: 64, typ: runtime.BF16, reverse: true},
		{name: "hd128/adds", hd: 128, typ: runtime.BF16, add: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := runtime.Config{Heads: heads, KVHeads: kv, HeadDim: tc.hd}
			cp := newCachePair(t, c, g, cfg, 16, tc.typ, false)
			cp.append(rng, prior)
			if tc.evict {
				cp.evict(rng, 0.3)
			}
			cp.append(rng, rows)
			q := randVec(rng, rows*heads*tc.hd, 1)
			cpuCase := tc
			cpuCase.group = false // the CPU has no group sums (AccGrouper)
			want := accColsCall(cp, c, 0, q, heads, rows, cpuCase)
			c.Attend(want)
			wantAcc := want.Acc
			if tc.group {
				wantAcc = groupSums(want.Acc, kv)
			}
			got := accColsCall(cp, g, 1, q, heads, rows, tc)
			g.Attend(got)
			if k := g.AttnPlan().Kernel; !strings.HasPrefix(k, "flash_") || !strings.HasSuffix(k, "+acc_cols") {
				t.Errorf("the chunk ran %s, want the prefill and acc_cols", k)
			}
			if d := relDiff(read(g, got.Out), read(c, want.Out)); d > flashTol || math.IsNaN(d) {
				t.Errorf("outputs differ from the CPU's by %.3g (relative)", d)
			}
			for h := range wantAcc {
				if d := relDiff(got.Acc[h], wantAcc[h]); d > 5e-3 || math.IsNaN(d) {
					t.Errorf("Acc[%d] differs from the CPU's by %.3g (relative)", h, d)
				}
			}
			rowsPer := float64(rows * heads) // each row's probabilities of each head sum to one
			if m := accMass(got, tc); math.Abs(m-rowsPer) > 1e-3*rowsPer || math.IsNaN(m) {
				t.Errorf("the sums add up to %.6g, want %g (the rows times the heads)", m, rowsPer)
			}

			// The other variant (KVBENCH_ACC_COLS_MT=2): the same sums but
			// for the order of their additions.
			restore := g.SetAccColsMT(2)
			m2 := accColsCall(cp, g, 1, q, heads, rows, tc)
			g.Attend(m2)
			restore()
			for h := range m2.Acc {
				if d := relDiff(m2.Acc[h], got.Acc[h]); d > 1e-5 || math.IsNaN(d) {
					t.Errorf("KVBENCH_ACC_COLS_MT=2: Acc[%d] differs from the default variant's by %.3g", h, d)
				}
			}

			restore = g.SetAccCols(false)
			split := accColsCall(cp, g, 1, q, heads, rows, tc)
			g.Attend(split)
			restore()
			if k := g.AttnPlan().Kernel; !strings.HasPrefix(k, "attn_rt") {
				t.Errorf("with acc_cols off the chunk ran %s, want the split-KV kernels", k)
			}
			for h := range split.Acc {
				if d := relDiff(got.Acc[h], split.Acc[h]); d > 5e-3 || math.IsNaN(d) {
					t.Errorf("Acc[%d] differs from the split-KV path's by %.3g (relative)", h, d)
				}
			}

			calls := []*runtime.AttnArgs{accColsCall(cp, g, 1, q, heads, rows, tc), accColsCall(cp, g, 1, q, heads, rows, tc)}
			g.AttendBatch(calls)
			for i, a := range calls {
				for h := range a.Acc {
					if d := relDiff(a.Acc[h], got.Acc[h]); d > 1e-6 || math.IsNaN(d) {
						t.Errorf("AttendBatch's call %d: Acc[%d] differs from Attend's by %.3g", i, h, d)
					}
				}
			}

			if !g.DeferAcc(true) {
				t.Fatal("DeferAcc(true) declined")
			}
			late := accColsCall(cp, g, 1, q, heads, rows, tc)
			late.AccView = true
			g.Attend(late)
			g.FlushAcc()
			g.DeferAcc(false)
			for h := range late.Acc {
				if d := relDiff(late.Acc[h], got.Acc[h]); d > 1e-6 || math.IsNaN(d) {
					t.Errorf("deferred: Acc[%d] differs from Attend's by %.3g", h, d)
				}
			}
		})
	}
}

// TestFakeAttendAccCols: on the fake device at bf16 precision a prompt
// chunk of 200 rows whose every row adds to Acc launches the prefill, the
// queries' rounding and acc_cols once each, no split-KV sums, and keeps no
// row's scores; through AttendBatch each such call does the same;
// KVBENCH_ACC_COLS_MT=2 launches its variant. A chunk
// of fewer rows than the path takes (127), one with KVBENCH_ACC_COLS=off,
// and one at float32 precision run on the split-KV path and keep every
// row's scores.
func TestFakeAttendAccCols(t *testing.T) {
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(3, 9))
	const heads, kv, hd = 8, 2, 128
	cfg := runtime.Config{Heads: heads, KVHeads: kv, HeadDim: hd}
	tc := accColsCase{name: "fake", hd: hd, typ: runtime.BF16}
	g := fakeBackend(t)
	cp := newCachePair(t, c, g, cfg, 16, runtime.BF16, false)
	cp.append(rng, 500)
	q := make([]float32, 200*heads*hd)
	narrow := func() int64 { return cuda.FakeKernels()["be_narrow"] }
	n0 := narrow()
	flash, acc, cols := launches(func() { g.Attend(accColsCall(cp, g, 1, q, heads, 200, tc)) })
	if flash != 1 || acc != 0 || cols != 1 || narrow()-n0 != 1 {
		t.Errorf("200 rows: %d prefill, %d attn_rt_acc, %d acc_cols and %d be_narrow launches, want 1, 0, 1 and 1", flash, acc, cols, narrow()-n0)
	}
	if s := g.ScoreBytes(); s != 0 {
		t.Errorf("200 rows: the scores' scratch is %d bytes, want none", s)
	}
	restoreMT := g.SetAccColsMT(2)
	m2 := cuda.FakeKernels()["acc_cols_d128_m2"]
	g.Attend(accColsCall(cp, g, 1, q, heads, 200, tc))
	if n := cuda.FakeKernels()["acc_cols_d128_m2"] - m2; n != 1 {
		t.Errorf("KVBENCH_ACC_COLS_MT=2: %d acc_cols_d128_m2 launches, want 1", n)
	}
	restoreMT()
	calls := []*runtime.AttnArgs{accColsCall(cp, g, 1, q, heads, 200, tc), accColsCall(cp, g, 1, q, heads, 200, tc)}
	if flash, acc, cols := launches(func() { g.AttendBatch(calls) }); flash != 2 || acc != 0 || cols != 2 {
		t.Errorf("a batch of two: %d prefill, %d attn_rt_acc and %d acc_cols launches, want 2, 0 and 2", flash, acc, cols)
	}

	split := func(name string, be *cuda.Backend, rows int) {
		t.Helper()
		flash, acc, cols := launches(func() { be.Attend(accColsCall(cp, be, 1, q[:rows*heads*hd], heads, rows, tc)) })
		if flash != 0 || acc != 1 || cols != 0 {
			t.Errorf("%s: %d prefill, %d attn_rt_acc and %d acc_cols launches, want 0, 1 and 0", name, flash, acc, cols)
		}
		if s, every := be.ScoreBytes(), int64(rows*heads*cp.c.Len(0, 0)*4); s < every {
			t.Errorf("%s: the scores' scratch is %d bytes, every row's scores %d", name, s, every)
		}
	}
	split("127 rows", g, 127)
	restore := g.SetAccCols(false)
	split("KVBENCH_ACC_COLS=off", g, 200)
	restore()

	f32, err := cuda.NewFakeBackend("f32")
	if err != nil {
		t.Fatal(err)
	}
	defer f32.Close()
	cp = newCachePair(t, c, f32, cfg, 16, runtime.BF16, false)
	cp.append(rng, 500)
	split("f32 precision", f32, 200)
}
