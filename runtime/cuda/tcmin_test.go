package cuda_test

import (
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestFakeTCMinChunk: the least chunk of the tensor-core decode kernels
// (tcLeast: 64, 128 for heads of 128 where chunks of 128 give the grid at
// least half a block a multiprocessor; $KVBENCH_ATTN_TC_MIN for every call)
// sets their chosen chunk alone (32/8 heads of 128, 8 rows on the fake
// device's 132 multiprocessors: 64 at 512 and 1,024 tokens, 128 from 1,025
// on; 28/4, 4 rows: 64 at 2,048, 128 at 4,096; heads of 64: 64; the
// chooser's 32 at 1,024 under KVBENCH_ATTN_TC_MIN=32), leaves the
// CUDA-core kernels' chunk (32/32 heads at 1,024) as it was, sets a batch
// step's tensor-core launch alike (heads of 64: 64), and a value that is
// not a multiple of 32 stops the backend with an error naming it.
func TestFakeTCMinChunk(t *testing.T) {
	plan := func(heads, kv int) cuda.Plan { return decodePlan(t, heads, kv, 128, 1024) }
	gqa, mha := plan(32, 8), plan(32, 32)
	if !strings.HasSuffix(gqa.Kernel, "_tc") || strings.HasSuffix(mha.Kernel, "_tc") {
		t.Fatalf("kernels %s (32/8) and %s (32/32): the case wants the tensor cores for the first alone", gqa.Kernel, mha.Kernel)
	}
	for _, c := range []struct{ heads, kv, hd, tokens, want int }{{32, 8, 128, 512, 64}, {32, 8, 128, 1024, 64},
		{32, 8, 128, 1025, 128}, {32, 8, 128, 2048, 128}, {28, 4, 128, 2048, 64}, {28, 4, 128, 4096, 128},
		{32, 8, 64, 1025, 64}, {32, 8, 64, 2048, 64}} {
		if p := decodePlan(t, c.heads, c.kv, c.hd, c.tokens); p.Chunk != c.want || !strings.HasSuffix(p.Kernel, "_tc") {
			t.Errorf("%d/%d heads of %d at %d tokens: %+v, want chunks of %d on a _tc kernel", c.heads, c.kv, c.hd, c.tokens, p, c.want)
		}
	}
	t.Setenv("KVBENCH_ATTN_TC_MIN", "32")
	if p := plan(32, 8); p.Chunk != 32 || p.Kernel != gqa.Kernel {
		t.Errorf("32/8 with KVBENCH_ATTN_TC_MIN=32: %+v, want chunks of 32 on %s", p, gqa.Kernel)
	}
	if p := plan(32, 32); p.Chunk != mha.Chunk || p.Kernel != mha.Kernel {
		t.Errorf("32/32 with KVBENCH_ATTN_TC_MIN=32: %+v, want %+v (not on the tensor cores)", p, mha)
	}
	// A batch step's tensor-core launch (8 streams of 30-51 tokens, 8/2 heads
	// of 64: 16 rows of a chunk of 32 by default).
	batchPlan := func() cuda.Plan { return batchStepPlan(t, 2, 8, func(i int) int { return 30 + 3*i }) }
	t.Setenv("KVBENCH_ATTN_TC_MIN", "")
	dflt := batchPlan()
	t.Setenv("KVBENCH_ATTN_TC_MIN", "32")
	if p := batchPlan(); !strings.HasSuffix(dflt.Kernel, "_tc") || dflt.Chunk != 64 || p.Chunk != 32 || p.Kernel != dflt.Kernel {
		t.Errorf("batch step: %+v by default, %+v with KVBENCH_ATTN_TC_MIN=32; want chunks of 64 and 32 on a tensor-core kernel", dflt, p)
	}
	wantEnvRefused(t, "KVBENCH_ATTN_TC_MIN", "48")
}

// wantEnvRefused checks that a backend is refused, with an error naming the
// variable, while $name is value.
func wantEnvRefused(t *testing.T, name, value string) {
	t.Helper()
	t.Setenv(name, value)
	if be, err := cuda.NewFakeBackend("bf16"); err == nil {
		be.Close()
		t.Errorf("%s=%s: no error", name, value)
	} else if !strings.Contains(err.Error(), name) {
		t.Errorf("%s=%s: error %q does not name the variable", name, value, err)
	}
}

// decodePlan is the plan of one decode call's attention on the fake device:
// heads query heads of hd channels over kv KV heads, tokens cached.
func decodePlan(t *testing.T, heads, kv, hd, tokens int) cuda.Plan {
	t.Helper()
	be := fakeBackend(t)
	cfg := runtime.Config{Arch: "llama", Dim: heads * hd, Hidden: 1024, Layers: 1, Heads: heads, KVHeads: kv,
		HeadDim: hd, Vocab: 100, MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
	be.Attend(fakeDecodeArgs(t, be, cfg, tokens))
	return be.AttnPlan()
}

// batchStepPlan is the attention plan of one decode step of a batch of
// streams on the fake device: a 2-layer model of 8 query heads of 64 over
// kv KV heads, stream i prompted with prompt(i) tokens under full
// attention.
func batchStepPlan(t *testing.T, kv, streams int, prompt func(i int) int) cuda.Plan {
	t.Helper()
	be := fakeBackend(t)
	c := runtime.Config{Arch: "llama", Dim: 512, Hidden: 256, Layers: 2, Heads: 8, KVHeads: kv, HeadDim: 64, Vocab: 300,
		MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
	batch := promptedBatch(t, be, runtime.ZeroModel(c), "full", nil, streams, 16, prompt)
	sids, toks, targets, out := make([]int, streams), make([]int, streams), make([]int, streams), make([]float64, streams)
	for i := range sids {
		sids[i], toks[i], targets[i] = i, 3+i, 4+i
	}
	if err := batch.LogProbs(sids, toks, targets, out); err != nil {
		t.Fatal(err)
	}
	return be.AttnPlan()
}
