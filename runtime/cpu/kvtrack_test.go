package cpu_test

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestKVSeqFlags checks the flags KVCache keeps on each sequence against its
// positions: Bounded/MaxPos at least every position, Ascending only while
// the positions ascend, through prompt chunks, single steps, evictions
// (which move the last token into the hole) and a reset.
func TestKVSeqFlags(t *testing.T) {
	cache, c, k, v := tinyCache(t, 8, 40)
	rng := rand.New(rand.NewPCG(4, 4))
	next := 0
	check := func(what string) {
		t.Helper()
		for l := range c.Layers {
			for h, s := range cache.Seqs(l) {
				p := s.Pos[:s.N]
				if s.N > 0 && (!s.Bounded || s.MaxPos < slices.Max(p)) {
					t.Fatalf("%s: layer %d head %d: bound %v/%d below max %d", what, l, h, s.Bounded, s.MaxPos, slices.Max(p))
				}
				if s.Ascending && !slices.IsSorted(p) {
					t.Fatalf("%s: layer %d head %d: Ascending set on %v", what, l, h, p)
				}
			}
		}
	}
	appendRows := func(rows int) {
		pos := make([]int, rows)
		for i := range pos {
			pos[i] = next
			next += 1 + rng.IntN(3)
		}
		for l := range c.Layers {
			cache.Append(l, k, v, rows, pos)
		}
	}
	appendRows(20)
	check("prompt")
	if s := cache.Seqs(0)[0]; !s.Ascending || int(s.MaxPos) != int(s.Pos[s.N-1]) {
		t.Fatalf("after a prompt: Ascending %v, MaxPos %d, last %d", s.Ascending, s.MaxPos, s.Pos[s.N-1])
	}
	appendRows(1)
	check("step")
	cache.Evict(0, 0, []int32{2, 5})
	check("evict")
	if cache.Seqs(0)[0].Ascending {
		t.Fatal("Ascending still set after an eviction moved tokens")
	}
	appendRows(1)
	check("step after evict")
	cache.Reset()
	next = 0
	appendRows(3)
	check("after reset")
	if s := cache.Seqs(0)[0]; !s.Ascending || s.MaxPos != s.Pos[2] {
		t.Fatalf("after a reset: Ascending %v, MaxPos %d", s.Ascending, s.MaxPos)
	}
}
