package cuda

import (
	"math/rand/v2"
	"testing"
)

// TestPtrTable checks ptrTable against a map over random puts, lookups and
// resets, with addresses that collide in the low bits (KV slots of one page
// size apart) and enough of them to grow the table several times.
func TestPtrTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 9))
	var tb ptrTable
	ref := map[Ptr]int32{}
	for round := range 40 {
		n := rng.IntN(5000)
		if round == 7 {
			tb.cur = ^uint32(0) - 1 // the epochs wrap within the next resets
		}
		for range n {
			p := Ptr(0x7f0000000000 + uint64(rng.IntN(3000))*256)
			if rng.IntN(3) == 0 {
				v := rng.Int32()
				tb.put(p, v)
				ref[p] = v
			}
			v, ok := tb.get(p)
			rv, rok := ref[p]
			if ok != rok || v != rv || tb.has(p) != rok {
				t.Fatalf("round %d: get(%#x) = %d, %v; want %d, %v", round, uint64(p), v, ok, rv, rok)
			}
		}
		if tb.n != len(ref) {
			t.Fatalf("round %d: %d entries, want %d", round, tb.n, len(ref))
		}
		tb.reset()
		clear(ref)
		if _, ok := tb.get(Ptr(0x7f0000000000)); ok {
			t.Fatalf("round %d: an entry after reset", round)
		}
	}
}
