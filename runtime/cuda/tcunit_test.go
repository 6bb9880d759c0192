package cuda_test

import (
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestFakeTCUnit: KVBENCH_ATTN_TC_UNIT=16 gives a single call's
// tensor-core kernel chunks of a multiple of 16 tokens where 32 (the
// default) gives a multiple of 32, as many blocks, the longest shorter where
// the row does not divide (32,769 tokens: 33 chunks either way); a value
// other than 16 or 32 is refused.
func TestFakeTCUnit(t *testing.T) {
	const n = 32769
	plan := func() cuda.Plan {
		t.Helper()
		be := fakeBackend(t)
		cfg := runtime.Config{Arch: "llama", Dim: 32 * 128, Hidden: 1024, Layers: 1, Heads: 32, KVHeads: 8,
			HeadDim: 128, Vocab: 100, MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
		be.Attend(fakeDecodeArgs(t, be, cfg, n))
		return be.AttnPlan()
	}
	p32 := plan()
	t.Setenv("KVBENCH_ATTN_TC_UNIT", "16")
	p16 := plan()
	if !strings.HasSuffix(p32.Kernel, "_tc") || p16.Kernel != p32.Kernel {
		t.Fatalf("kernels %s and %s: want the same tensor-core kernel", p32.Kernel, p16.Kernel)
	}
	blocks := func(chunk int) int { return (n + chunk - 1) / chunk }
	if p32.Chunk%32 != 0 || p16.Chunk%16 != 0 || p16.Chunk >= p32.Chunk || p32.Chunk-p16.Chunk >= 32 ||
		blocks(p16.Chunk) != blocks(p32.Chunk) || p16.Blocks != p32.Blocks {
		t.Errorf("chunks of %d (%d blocks) with 16, %d (%d blocks) with 32: want a multiple of 16 below the other, as many blocks",
			p16.Chunk, p16.Blocks, p32.Chunk, p32.Blocks)
	}
	wantEnvRefused(t, "KVBENCH_ATTN_TC_UNIT", "24")
}
