package cuda

import (
	"math/rand/v2"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestKVHold follows runtime.KVCache.Hold on the fake device through
// trials of a prompt appended in chunks, decode tokens, evictions and
// Reset: after Hold, each sequence's pages lie one stride apart (pageArith
// gives the stride) while the prompt, its answer's room and the evictions
// stay within the run; ResidentBytes is the pages in the lists; a second
// trial's prompt of the same length or shorter reuses the runs (no page
// allocated), a longer one allocates; Free gives every page back.
func TestKVHold(t *testing.T) {
	b := fakeOf(t, "bf16")
	c := runtime.Config{Arch: "llama", Dim: 256, Hidden: 256, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 100, MaxSeq: 1 << 16}
	kc, err := runtime.NewKVCacheOf(b, c, 16, runtime.BF16)
	if err != nil {
		t.Fatal(err)
	}
	const rowsMax = 512
	kvDim := c.KVHeads * c.HeadDim
	kb, vb := b.Alloc(rowsMax*kvDim), b.Alloc(rowsMax*kvDim)
	rng := rand.New(rand.NewPCG(8, 3))
	// Other allocations between the chunks, as a model's scratch makes.
	noise := func() { b.AllocKV(16*64, runtime.BF16) }
	listPages := func() int {
		n := 0
		for l := range c.Layers {
			for _, s := range kc.Seqs(l) {
				n += len(s.K)
			}
		}
		return n
	}
	uniform := func(what string) {
		seqs := make([]runtime.KVSeq, 0)
		for l := range c.Layers {
			seqs = append(seqs, kc.Seqs(l)...)
		}
		if !b.refreshSeqs(seqs, nil) {
			t.Fatalf("%s: the tables refused the sequences", what)
		}
		b.pt.runs, b.pt.host = b.pt.runs[:0], b.pt.host[:0]
		for i := range seqs {
			if _, _, st := b.pageArith(b.table(&seqs[i])); st == 0 {
				t.Fatalf("%s: sequence %d (%d pages) not one stride apart", what, i, len(seqs[i].K))
			}
		}
		if got, want := kc.ResidentBytes(), int64(listPages())*kc.PageBytes(); got != want {
			t.Fatalf("%s: ResidentBytes %d, the lists' pages %d", what, got, want)
		}
	}
	for trial, n := range []int{1000, 1000, 700, 1500} {
		kc.Reset()
		before := kc.AllocatedBytes()
		kc.Hold(n)
		for at := 0; at < n; {
			m := min(rowsMax, n-at, 1+rng.IntN(300))
			pos := make([]int, m)
			for i := range pos {
				pos[i] = at + i
			}
			for l := range c.Layers {
				kc.Append(l, kb, vb, m, pos)
			}
			noise()
			at += m
		}
		uniform("after the prompt")
		for l := range c.Layers { // a compression: every other token of the first 600 dropped
			for h := range c.KVHeads {
				var drop []int32
				for i := 0; i < 600; i += 2 {
					drop = append(drop, int32(i))
				}
				kc.Evict(l, h, drop)
			}
		}
		uniform("after an eviction")
		for i := range 40 { // decode tokens: within the answer's room
			for l := range c.Layers {
				kc.Append(l, kb, vb, 1, []int{n + i})
			}
			noise()
		}
		uniform("after decoding")
		grew := kc.AllocatedBytes() - before
		if trial > 0 && n <= 1000 && grew != 0 {
			t.Fatalf("trial %d (%d tokens): %d bytes allocated, want the runs reused", trial, n, grew)
		}
		if trial == 3 && grew == 0 {
			t.Fatalf("trial %d: a longer prompt (%d tokens) took no new pages", trial, n)
		}
	}
	m0, alloc := b.Memory(), kc.AllocatedBytes()
	kc.Free()
	if m := b.Memory(); m0.KV-m.KV != alloc {
		t.Fatalf("Free: KV memory %d bytes before, %d after, the cache's %d", m0.KV, m.KV, alloc)
	}
	if kc.AllocatedBytes() != 0 || kc.ResidentBytes() != 0 {
		t.Fatalf("after Free: %d bytes allocated, %d resident", kc.AllocatedBytes(), kc.ResidentBytes())
	}
}
