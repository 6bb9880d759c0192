package runtime_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// TestHeadsAgree: KVCache.HeadsAgree is true only where the KV heads of a
// layer hold the same positions at the same indices, and stays true through
// appends and rounds of equal evictions (heads 0, 1, ... in turn, one or
// several indices, given in any order). Scripted cases first, then random
// changes of which some agree and some do not, checked against a
// comparison of the positions after every change.
func TestHeadsAgree(t *testing.T) {
	be := cpu.New(0)
	c := runtime.Config{Arch: "llama", Dim: 64, Hidden: 128, Layers: 2, Heads: 4, KVHeads: 3, HeadDim: 16, Vocab: 100, MaxSeq: 1 << 20,
		RopeTheta: 1e4, NormEps: 1e-5}
	kc := runtime.NewKVCache(be, c, 4)
	k, v := be.Alloc(64*c.KVDim()), be.Alloc(64*c.KVDim())
	pos := 0
	add := func(l, rows int) {
		p := make([]int, rows)
		for i := range p {
			p[i] = pos
			pos++
		}
		kc.Append(l, k, v, rows, p)
	}
	same := func(l int) bool {
		s := kc.Seqs(l)
		for h := range s {
			if s[h].N != s[0].N || !slices.Equal(s[h].Pos[:s[h].N], s[0].Pos[:s[0].N]) {
				return false
			}
		}
		return true
	}
	want := func(what string, l int, agree bool) {
		t.Helper()
		if got := kc.HeadsAgree(l); got != agree {
			t.Fatalf("%s: HeadsAgree(%d) %v, want %v", what, l, got, agree)
		}
		if agree && !same(l) {
			t.Fatalf("%s: HeadsAgree(%d) but the heads' positions differ", what, l)
		}
	}
	want("an empty cache", 0, true)
	add(0, 20)
	want("20 rows appended", 0, true)
	kc.Evict(0, 0, []int32{3})
	want("head 0 of a round evicted", 0, false)
	kc.Evict(0, 1, []int32{3})
	want("heads 0 and 1 of a round", 0, false)
	kc.Evict(0, 2, []int32{3})
	want("a whole round", 0, true)
	kc.Evict(0, 0, []int32{7, 1, 12})
	kc.Evict(0, 1, []int32{12, 7, 1})
	kc.Evict(0, 2, []int32{1, 12, 7})
	want("a round of three indices in different orders", 0, true)
	want("the other layer", 1, true)
	kc.Evict(0, 0, []int32{2})
	add(0, 1)
	kc.Evict(0, 1, []int32{2})
	kc.Evict(0, 2, []int32{2})
	want("an append amid a round", 0, false)
	if same(0) {
		t.Fatalf("the append amid a round left the heads alike: the case tests nothing")
	}
	add(0, 1)
	want("after the heads differed", 0, false)
	kc.Reset()
	want("a reset", 0, true)

	add(1, 12)
	kc.Evict(1, 1, []int32{0})
	want("head 1 before head 0", 1, false)
	kc.Reset()
	add(1, 12)
	kc.Evict(1, 0, []int32{4})
	kc.Evict(1, 1, []int32{5})
	kc.Evict(1, 2, []int32{4})
	want("head 1 another index", 1, false)

	// Random changes: appends, equal rounds, rounds with one head's index
	// (or order of heads) changed, and rounds left halfway.
	rng := rand.New(rand.NewPCG(3, 5))
	for trial := range 200 {
		kc.Reset()
		add(0, 8+rng.IntN(8))
		broken := false
		for step := range 30 {
			n := kc.Len(0, 0)
			switch r := rng.IntN(10); {
			case r < 3 || n < 4:
				add(0, 1+rng.IntN(3))
			default:
				drop := rng.Perm(n)[:1+rng.IntN(min(3, n-2))]
				odd := -1
				if r == 9 {
					odd = rng.IntN(c.KVHeads)
				}
				for h := range c.KVHeads {
					d := make([]int32, len(drop))
					for i, x := range drop {
						d[i] = int32(x)
					}
					if h == odd { // another index, not one of the round's
						x := int32(rng.IntN(n))
						for slices.Contains(d, x) {
							x = int32(rng.IntN(n))
						}
						d[0] = x
					}
					rng.Shuffle(len(d), func(i, j int) { d[i], d[j] = d[j], d[i] })
					kc.Evict(0, h, d)
				}
			}
			agree := kc.HeadsAgree(0)
			if agree && !same(0) {
				t.Fatalf("trial %d step %d: HeadsAgree but the positions differ", trial, step)
			}
			if !same(0) {
				broken = true
			}
			if broken && agree {
				t.Fatalf("trial %d step %d: HeadsAgree after the heads differed", trial, step)
			}
		}
	}
}
