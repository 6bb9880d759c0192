package cuda_test

import (
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestKVCacheBulkPages appends prompts' chunks to a KV cache on the fake
// device (pages taken in bulk, runtime.KVPageAllocator) and checks the
// pages: as many as the tokens need, a page per slot range, distinct; the
// memory the device counts is the cache's; after Reset the free list serves
// the next prompt before anything new is taken, and the recall reference
// takes fresh pages of its own.
func TestKVCacheBulkPages(t *testing.T) {
	be := fakeBackend(t)
	c := runtime.Config{Dim: 64, Hidden: 128, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 16, Vocab: 32}
	kc, err := runtime.NewKVCacheOf(be, c, 16, runtime.BF16)
	if err != nil {
		t.Fatal(err)
	}
	k, v := be.Alloc(600*c.KVDim()), be.Alloc(600*c.KVDim())
	pos := make([]int, 600)
	for i := range pos {
		pos[i] = i
	}
	check := func(when string, tokens int) {
		t.Helper()
		seen := map[runtime.Buffer]bool{}
		for l := range c.Layers {
			for h, s := range kc.Seqs(l) {
				if s.N != tokens || len(s.K) != (tokens+15)/16 || len(s.V) != len(s.K) || len(s.Pos) != tokens {
					t.Fatalf("%s: layer %d head %d: %d tokens in %d/%d pages, %d positions; want %d tokens", when, l, h, s.N, len(s.K), len(s.V), len(s.Pos), tokens)
				}
				for i := range s.K {
					if seen[s.K[i]] || seen[s.V[i]] || s.K[i] == s.V[i] {
						t.Fatalf("%s: layer %d head %d page %d shared", when, l, h, i)
					}
					seen[s.K[i]], seen[s.V[i]] = true, true
				}
			}
		}
		if m := be.Memory(); m.KV != kc.AllocatedBytes()+kc.ReferenceBytes() {
			t.Fatalf("%s: the device counts %d KV bytes, the cache allocated %d (+%d reference)", when, m.KV, kc.AllocatedBytes(), kc.ReferenceBytes())
		}
	}
	appendRows := func(from, rows int) {
		for l := range c.Layers {
			kc.Append(l, k, v, rows, pos[from:from+rows])
		}
	}
	appendRows(0, 300) // 19 pages
	appendRows(300, 5) // into the last page, and a new one
	check("fresh", 305)
	made := kc.AllocatedBytes()
	kc.Reset()
	appendRows(0, 200) // from the free list only
	check("after Reset", 200)
	if kc.AllocatedBytes() != made {
		t.Fatalf("after Reset the cache took %d bytes anew", kc.AllocatedBytes()-made)
	}
	appendRows(200, 400) // the free list's rest, then new pages
	check("past the free list", 600)
	if want := int64(c.Layers*c.KVHeads*((600+15)/16)) * kc.PageBytes(); kc.AllocatedBytes() != want {
		t.Fatalf("%d bytes allocated for 600 tokens, want %d", kc.AllocatedBytes(), want)
	}
	kc.Free()
	if m := be.Memory(); m.KV != 0 {
		t.Fatalf("after Free the device counts %d KV bytes", m.KV)
	}
}
