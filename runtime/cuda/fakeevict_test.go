package cuda_test

import (
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
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

// fakeDecodeArgs fills a cache of n tokens for c on be (fakeFilledCache)
// and returns the arguments of a decode step's attention over layer 0:
// one query row at position n-1 that sees every token.
func fakeDecodeArgs(t *testing.T, be *cuda.Backend, c runtime.Config, n int) *runtime.AttnArgs {
	t.Helper()
	kc, _ := fakeFilledCache(t, be, c, n)
	return &runtime.AttnArgs{Rows: 1, QPos: []int{n - 1}, Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim,
		Scale: 0.1, Seqs: kc.Seqs(0), Rope: runtime.RopeHalf, Theta: c.RopeTheta,
		Q: be.Alloc(c.Heads * c.HeadDim), Out: be.Alloc(c.Heads * c.HeadDim)}
}

// fakeFilledCache makes a KV cache of bf16 pages of 16 tokens for c on be
// and appends n tokens at positions 0..n-1 to every KV head of layer 0; it
// returns the cache and the keys' buffer.
func fakeFilledCache(t *testing.T, be *cuda.Backend, c runtime.Config, n int) (*runtime.KVCache, runtime.Buffer) {
	t.Helper()
	kc, err := runtime.NewKVCacheOf(be, c, 16, runtime.BF16)
	if err != nil {
		t.Fatal(err)
	}
	k, v := be.Alloc(n*c.KVDim()), be.Alloc(n*c.KVDim())
	pos := make([]int, n)
	for i := range pos {
		pos[i] = i
	}
	kc.Append(0, k, v, n, pos)
	return kc, k
}

// TestMoveKVsBatching: evictions of different sequences share one launch
// of copies; a second eviction of a sequence, or a tracked copy, launches
// the queued ones first (fake device: launches counted).
func TestMoveKVsBatching(t *testing.T) {
	be := fakeBackend(t)
	c := runtime.Config{Arch: "llama", Dim: 64, Hidden: 128, Layers: 1, Heads: 2, KVHeads: 2, HeadDim: 32, Vocab: 100,
		MaxSeq: 4096, RopeTheta: 1e4, NormEps: 1e-5}
	kc, k := fakeFilledCache(t, be, c, 200)
	out := make([]float32, 1)
	be.Read(out, k, 0) // the appends launched
	run := func(d ...int32) []int32 { return d }
	l0, _, _, _ := cuda.FakeCounts()
	kc.Evict(0, 0, run(3, 4, 5, 6, 7, 8, 9, 10, 11, 12)) // copies into kept slots: queued
	kc.Evict(0, 1, run(3, 4, 5, 6, 7, 8, 9, 10, 11, 12)) // another sequence: the same batch
	l1, _, _, _ := cuda.FakeCounts()
	if l1 != l0 {
		t.Fatalf("two sequences' evictions launched %d times before a flush", l1-l0)
	}
	kc.Evict(0, 0, run(20, 21, 22, 23)) // the same sequence again: the batch goes first
	l2, _, _, _ := cuda.FakeCounts()
	if l2-l1 != 1 {
		t.Errorf("a second eviction of a sequence: %d launches, want 1 (the queued copies)", l2-l1)
	}
	be.Read(out, k, 0)
	l3, _, _, _ := cuda.FakeCounts()
	if l3-l2 != 1 {
		t.Errorf("the read: %d launches, want 1", l3-l2)
	}
}
