package cuda_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestFakeAttnTrace: the trace's layout follows the call's launches (a
// block's words for each of the split kernel's blocks, two for each of the
// combine's), nothing is traced before SetAttnTrace, and on the fake device
// (which runs no kernel) the summary says that no block wrote.
func TestFakeAttnTrace(t *testing.T) {
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
	be.SetAttnTrace(true)
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
}

// TestAttnTraceGPU: a traced decode call (32/8 heads of 128, bf16 pages,
// 4,096 tokens) computes the same output, bit for bit, as an untraced one,
// and every block's timestamps come in order, on a multiprocessor the
// device has, over the tokens of its chunk; the combine ends after the
// last block.
func TestAttnTraceGPU(t *testing.T) {
	be := newGPUPrec(t, "bf16")
	cfg := runtime.Config{Arch: "llama", Dim: 4096, Hidden: 1024, Layers: 1, Heads: 32, KVHeads: 8,
		HeadDim: 128, Vocab: 100, MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
	const n = 4096
	kc, err := runtime.NewKVCacheOf(be, cfg, 16, runtime.BF16)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 8))
	fill := func(m int) runtime.Buffer {
		h := make([]float32, m)
		for i := range h {
			h[i] = float32(rng.NormFloat64())
		}
		x := be.Alloc(m)
		be.Write(x, 0, h)
		return x
	}
	pos := make([]int, n)
	for i := range pos {
		pos[i] = i
	}
	kc.Append(0, fill(n*cfg.KVDim()), fill(n*cfg.KVDim()), n, pos)
	a := &runtime.AttnArgs{Rows: 1, QPos: []int{n - 1}, Heads: cfg.Heads, KVHeads: cfg.KVHeads, HeadDim: cfg.HeadDim,
		Scale: 0.088, Seqs: kc.Seqs(0), Rope: runtime.RopeHalf, Theta: cfg.RopeTheta,
		Q: fill(cfg.Heads * cfg.HeadDim), Out: be.Alloc(cfg.Heads * cfg.HeadDim)}
	out := func() []float32 {
		o := make([]float32, cfg.Heads*cfg.HeadDim)
		be.Read(o, a.Out, 0)
		return o
	}
	be.Attend(a)
	want := out()
	be.SetAttnTrace(true)
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
	if !strings.Contains(tr.Kernel, "_tc") {
		t.Fatalf("kernel %s: the test wants the tensor-core kernel", tr.Kernel)
	}
	tokens, last := 0, uint64(0)
	for i, x := range tr.Blocks {
		if x.Start == 0 || x.Start > x.Staged || x.Staged > x.FirstTile || x.FirstTile > x.TilesDone || x.TilesDone > x.End {
			t.Fatalf("block %d out of order: %+v", i, x)
		}
		if x.SM < 0 || x.SM >= be.D.SMs || x.Tiles <= 0 || x.Tokens <= 0 {
			t.Fatalf("block %d: %+v (the device has %d multiprocessors)", i, x, be.D.SMs)
		}
		tokens += x.Tokens
		last = max(last, x.End)
	}
	if tokens != n*cfg.KVHeads {
		t.Errorf("the blocks read %d tokens, want %d", tokens, n*cfg.KVHeads)
	}
	if len(tr.Combine) == 0 {
		t.Fatal("no combine traced")
	}
	for i, c := range tr.Combine {
		if c.Start == 0 || c.End < c.Start || c.End < last {
			t.Errorf("combine block %d: %+v, the last split block ended at %d", i, c, last)
		}
	}
}
