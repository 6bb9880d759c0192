package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestFakeAttnTrace: the trace's layout follows the call's launches (a
// block's words for each of the split kernel's blocks, two for each of the
// combine's), nothing is traced before SetAttnTrace, and on the fake device
// (which runs no kernel) the summary says that no block wrote.
func TestFakeAttnTrace(t *testing.T) {
	plain := fakeBackend(t)
	if err := plain.SetAttnTrace(true); err == nil || !strings.Contains(err.Error(), "KVBENCH_ATTN_TRACE") {
		t.Fatalf("SetAttnTrace on kernels built without the trace: %v", err)
	}
	t.Setenv("KVBENCH_ATTN_TRACE", "1")
	be := fakeBackend(t)
	if _, err := be.AttnTrace(); err == nil {
		t.Fatal("AttnTrace before any traced call: no error")
	}
	cfg := runtime.Config{Arch: "llama", Dim: 4096, Hidden: 1024, Layers: 1, Heads: 32, KVHeads: 8,
		HeadDim: 128, Vocab: 100, MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
	a := fakeDecodeArgs(t, be, cfg, 32768)
	be.Attend(a)
	if _, err := be.AttnTrace(); err == nil {
		t.Fatal("AttnTrace after an untraced call: no error")
	}
	if err := be.SetAttnTrace(true); err != nil {
		t.Fatal(err)
	}
	be.Attend(a)
	be.SetAttnTrace(false)
	tr, err := be.AttnTrace()
	if err != nil {
		t.Fatal(err)
	}
	p := be.AttnPlan()
	if tr.Kernel != p.Kernel || len(tr.Blocks) != p.Blocks || tr.Rows != 8 || tr.Chunks*tr.Rows != p.Blocks {
		t.Errorf("trace of %s over %d x %d blocks; plan %+v", tr.Kernel, tr.Chunks, tr.Rows, p)
	}
	if want := 4 * 8 * (128 / 32); len(tr.Combine) != want { // virtual heads x split rows x 32-channel slices
		t.Errorf("%d combine blocks traced, want %d", len(tr.Combine), want)
	}
	if s := tr.Summary(); !strings.Contains(s, "no block wrote a trace") {
		t.Errorf("summary on the fake device: %q", s)
	}
	be.Attend(a) // untraced: the trace read back is the last call's, so none
	if _, err := be.AttnTrace(); err == nil {
		t.Error("AttnTrace after a traced call and an untraced one: no error")
	}
}

// TestAttnTraceGPU: a traced decode call computes the same output, bit
// for bit, as an untraced one, and every block's timestamps come in order,
// on a multiprocessor the device has, over the tokens of its chunk; the
// combine ends after the last block; the tensor-core kernel's stamps
// inside the partial's phase come in order within it. Bf16 pages: 32/8 heads of 128 at
// 4,096 tokens (the tensor-core kernel, a combine launch: two blocks a
// multiprocessor, 32 chunks a row, on every device) and 32/32 at 512
// (attn_rt, the fused merge: no first tile, no combine). Each case names
// its kernel ($KVBENCH_ATTN_TC) on a backend of its own: useTC's choice
// for rows of one head of 128 depends on the memory's speed (on the H100
// 32/32 at 512 takes the tensor cores; on the H200 attn_rt).
func TestAttnTraceGPU(t *testing.T) {
	t.Setenv("KVBENCH_ATTN_TRACE", "1") // the kernels built with the stamps
	t.Setenv("KVBENCH_ATTN_TC_SLOTS", "2")
	for _, c := range []struct {
		heads, kv, n int
		tc           bool
	}{{32, 8, 4096, true}, {32, 32, 512, false}} {
		t.Run(fmt.Sprintf("%d/%d/%d", c.heads, c.kv, c.n), func(t *testing.T) {
			t.Setenv("KVBENCH_ATTN_TC", map[bool]string{true: "on", false: "off"}[c.tc])
			attnTraceCase(t, newGPUPrec(t, "bf16"), c.heads, c.kv, c.n, c.tc)
		})
	}
}

func attnTraceCase(t *testing.T, be *cuda.Backend, heads, kv, n int, tc bool) {
	cfg := runtime.Config{Arch: "llama", Dim: heads * 128, Hidden: 1024, Layers: 1, Heads: heads, KVHeads: kv,
		HeadDim: 128, Vocab: 100, MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
	kc, err := runtime.NewKVCacheOf(be, cfg, 16, runtime.BF16)
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Free()
	rng := rand.New(rand.NewPCG(5, 8))
	var bufs []runtime.Buffer
	defer func() {
		for _, x := range bufs {
			be.Free(x)
		}
	}()
	fill := func(m int) runtime.Buffer {
		x := be.Alloc(m)
		be.Write(x, 0, randVec(rng, m, 2))
		bufs = append(bufs, x)
		return x
	}
	pos := make([]int, n)
	for i := range pos {
		pos[i] = i
	}
	kc.Append(0, fill(n*cfg.KVDim()), fill(n*cfg.KVDim()), n, pos)
	a := &runtime.AttnArgs{Rows: 1, QPos: []int{n - 1}, Heads: cfg.Heads, KVHeads: cfg.KVHeads, HeadDim: cfg.HeadDim,
		Scale: 0.088, Seqs: kc.Seqs(0), Rope: runtime.RopeHalf, Theta: cfg.RopeTheta,
		Q: fill(cfg.Heads * cfg.HeadDim), Out: fill(cfg.Heads * cfg.HeadDim)}
	out := func() []float32 {
		o := make([]float32, cfg.Heads*cfg.HeadDim)
		be.Read(o, a.Out, 0)
		return o
	}
	be.Attend(a)
	want := out()
	if err := be.SetAttnTrace(true); err != nil {
		t.Fatal(err)
	}
	be.Attend(a)
	be.SetAttnTrace(false)
	got := out()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("traced output %d: %v, untraced %v", i, got[i], want[i])
		}
	}
	tr, err := be.AttnTrace()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v: %s", be.AttnPlan(), tr.Summary())
	if strings.Contains(tr.Kernel, "_tc") != tc {
		t.Fatalf("kernel %s: the case wants tensor cores %v", tr.Kernel, tc)
	}
	tokens, last := 0, uint64(0)
	for i, x := range tr.Blocks {
		first := x.FirstTile
		if !tc {
			if first != 0 || x.Tiles != 0 {
				t.Fatalf("block %d of attn_rt stamped a first tile: %+v", i, x)
			}
			first = x.Staged
		}
		if x.Start == 0 || x.Start > x.Staged || x.Staged > first || first > x.TilesDone || x.TilesDone > x.End {
			t.Fatalf("block %d out of order: %+v", i, x)
		}
		if tc && (x.TilesDone > x.Maxima || x.Maxima > x.Shared || x.Shared > x.End) || !tc && (x.Maxima != 0 || x.Shared != 0) {
			t.Fatalf("block %d: the partial's inner stamps %d, %d between %d and %d (tensor cores %v: in order; else none)",
				i, x.Maxima, x.Shared, x.TilesDone, x.End, tc)
		}
		if x.SM < 0 || x.SM >= be.D.SMs || tc && x.Tiles <= 0 || x.Tokens <= 0 {
			t.Fatalf("block %d: %+v (the device has %d multiprocessors)", i, x, be.D.SMs)
		}
		tokens += x.Tokens
		last = max(last, x.End)
	}
	if tokens != n*cfg.KVHeads {
		t.Errorf("the blocks read %d tokens, want %d", tokens, n*cfg.KVHeads)
	}
	if tc && len(tr.Combine) == 0 {
		t.Fatal("no combine traced")
	}
	for i, c := range tr.Combine {
		if c.Start == 0 || c.End < c.Start || c.End < last {
			t.Errorf("combine block %d: %+v, the last split block ended at %d", i, c, last)
		}
	}
}
