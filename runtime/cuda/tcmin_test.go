package cuda_test

import (
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestFakeTCMinChunk: the least chunk of the tensor-core decode kernels
// (default 64, $KVBENCH_ATTN_TC_MIN) sets their chosen chunk alone (32/8
// heads at 1,024 tokens: 64 by default, the chooser's 32 under
// KVBENCH_ATTN_TC_MIN=32), leaves the CUDA-core kernels' chunk (32/32
// heads at 1,024) as it was, sets a batch step's tensor-core launch alike,
// and a value that is not a multiple of 32 stops the backend with an error
// naming it.
func TestFakeTCMinChunk(t *testing.T) {
	plan := func(heads, kv int) cuda.Plan {
		t.Helper()
		be := fakeBackend(t)
		cfg := runtime.Config{Arch: "llama", Dim: heads * 128, Hidden: 1024, Layers: 1, Heads: heads, KVHeads: kv,
			HeadDim: 128, Vocab: 100, MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
		be.Attend(fakeDecodeArgs(t, be, cfg, 1024))
		return be.AttnPlan()
	}
	gqa, mha := plan(32, 8), plan(32, 32)
	if !strings.HasSuffix(gqa.Kernel, "_tc") || strings.HasSuffix(mha.Kernel, "_tc") {
		t.Fatalf("kernels %s (32/8) and %s (32/32): the case wants the tensor cores for the first alone", gqa.Kernel, mha.Kernel)
	}
	if gqa.Chunk != cuda.TCMinChunk || cuda.TCMinChunk != 64 {
		t.Fatalf("32/8 at 1,024 tokens took chunks of %d by default, want %d (64)", gqa.Chunk, cuda.TCMinChunk)
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
	batchPlan := func() cuda.Plan {
		t.Helper()
		be := fakeBackend(t)
		c := runtime.Config{Arch: "llama", Dim: 512, Hidden: 256, Layers: 2, Heads: 8, KVHeads: 2, HeadDim: 64, Vocab: 300,
			MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
		const streams = 8
		batch := promptedBatch(t, be, runtime.ZeroModel(c), "full", nil, streams, 16, func(i int) int { return 30 + 3*i })
		sids, toks, targets, out := make([]int, streams), make([]int, streams), make([]int, streams), make([]float64, streams)
		for i := range sids {
			sids[i], toks[i], targets[i] = i, 3+i, 4+i
		}
		if err := batch.LogProbs(sids, toks, targets, out); err != nil {
			t.Fatal(err)
		}
		return be.AttnPlan()
	}
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
