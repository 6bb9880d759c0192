package cuda_test

import (
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// BenchmarkFakePromptEvict times the host's share of compressing a 32K-token
// prompt after a dense prefill (the papers' protocol) on the CUDA backend's
// fake device: the 8B shape's 32 layers x 8 KV heads of bf16 pages each
// drop every token but 4 sinks and the last 1,020 (StreamingLLM's cut, the
// largest drop lists a policy hands KVCache.Evict). Appending the prompt is
// outside the timing.
func BenchmarkFakePromptEvict(b *testing.B) {
	be := fakeBackend(b)
	c := runtime.Config{Arch: "llama", Dim: 4096, Hidden: 14336, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128, Vocab: 32000,
		MaxSeq: 1 << 20, RopeTheta: 5e5, NormEps: 1e-5}
	const n, chunk, sinks, recent = 32768, 4096, 4, 1020
	kc, err := runtime.NewKVCacheOf(be, c, 16, runtime.BF16)
	if err != nil {
		b.Fatal(err)
	}
	k, v := be.Alloc(chunk*c.KVDim()), be.Alloc(chunk*c.KVDim())
	pos := make([]int, chunk)
	drop := make([]int32, 0, n)
	for range b.N {
		b.StopTimer()
		kc.Reset()
		kc.Room(n)
		for t0 := 0; t0 < n; t0 += chunk {
			for i := range pos {
				pos[i] = t0 + i
			}
			for l := range c.Layers {
				kc.Append(l, k, v, chunk, pos)
			}
		}
		b.StartTimer()
		for l := range c.Layers {
			for h := range c.KVHeads {
				drop = drop[:0]
				for i := sinks; i < n-recent; i++ {
					drop = append(drop, int32(i))
				}
				kc.Evict(l, h, drop)
			}
		}
		if got := kc.Len(c.Layers-1, c.KVHeads-1); got != sinks+recent {
			b.Fatalf("%d tokens left, want %d", got, sinks+recent)
		}
	}
}
