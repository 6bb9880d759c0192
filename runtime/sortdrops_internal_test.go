package runtime

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestSortDrops: sortDrops sorts as slices.Sort does, by its bitmap where
// the drops are dense and by comparisons where they are few, and leaves an
// index out of range or repeated to a comparison sort (Evict's checks
// then find it where a sorted list puts it).
func TestSortDrops(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	var c KVCache
	for range 300 {
		n := 1 + rng.IntN(5000)
		k := rng.IntN(n + 1)
		drop := make([]int32, 0, k+1)
		for _, i := range rng.Perm(n)[:k] {
			drop = append(drop, int32(i))
		}
		switch rng.IntN(6) {
		case 0:
			if k > 0 {
				drop = append(drop, drop[rng.IntN(k)]) // repeated
			}
		case 1:
			drop = append(drop, int32(n+rng.IntN(3))) // past the end
		case 2:
			drop = append(drop, -1)
		}
		want := slices.Clone(drop)
		slices.Sort(want)
		c.sortDrops(drop, n)
		if !slices.Equal(drop, want) {
			t.Fatalf("n %d, %d drops: sorted %v, want %v", n, len(want), drop, want)
		}
	}
}
