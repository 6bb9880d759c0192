package cuda_test

import (
	"fmt"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestFakePaddedGroups: a decode call of a model whose GQA group is not a
// power of two (Qwen2.5-7B: 28 query heads over 4 KV heads; 12 over 2; 6
// over 2) reads each KV head's tokens in one split row of 4 or 8 virtual
// heads (the tensor-core kernel over bf16 pages), not one row per head or
// pair; fake device.
func TestFakePaddedGroups(t *testing.T) {
	for _, c := range []struct {
		heads, kv, hd int
		kernel        string
	}{
		{28, 4, 128, "attn_rt_d128_g8_bf16_tc"},
		{12, 2, 128, "attn_rt_d128_g8_bf16_tc"},
		{6, 2, 64, "attn_rt_d64_g4_bf16_tc"},
		{32, 8, 128, "attn_rt_d128_g4_bf16_tc"},
	} {
		t.Run(fmt.Sprintf("%dx%d", c.heads, c.kv), func(t *testing.T) {
			be := fakeBackend(t)
			cfg := runtime.Config{Arch: "llama", Dim: c.heads * c.hd, Hidden: 1024, Layers: 1, Heads: c.heads, KVHeads: c.kv,
				HeadDim: c.hd, Vocab: 100, MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
			be.Attend(fakeDecodeArgs(t, be, cfg, 4096))
			p := be.AttnPlan()
			if p.Kernel != c.kernel {
				t.Fatalf("kernel %s, want %s", p.Kernel, c.kernel)
			}
			if rows := p.Blocks / ((4096 + p.Chunk - 1) / p.Chunk); rows != c.kv {
				t.Errorf("%d split rows (plan %+v), want one a KV head (%d)", rows, p, c.kv)
			}
		})
	}
}
