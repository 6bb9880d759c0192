package cuda

import (
	"math/rand/v2"
	"testing"
)

// TestFitRows checks the prompt pass's rows against the H200's numbers (132
// block slots, tiles of 128 rows, 32 heads: 8,192 rows are 15.5 waves,
// 8,448 sixteen) and, on random shapes, against a search of every row
// count within a sixteenth: the grid of the rows chosen fills its waves at
// least as well as any whole number of tiles there, and better than rows
// itself unless it is rows.
func TestFitRows(t *testing.T) {
	for _, c := range []struct{ rows, heads, tile, slots, want int }{
		{8192, 32, 128, 132, 8448}, {16384, 32, 128, 132, 16896}, {4096, 32, 128, 132, 4224},
		{8192, 32, 128, 128, 8192}, // whole waves already
		{100, 32, 128, 132, 100},   // less than a tile
	} {
		if got := fitRows(c.rows, c.heads, c.tile, c.slots); got != c.want {
			t.Errorf("fitRows(%d rows, %d heads, tile %d, %d slots) = %d, want %d", c.rows, c.heads, c.tile, c.slots, got, c.want)
		}
	}
	fill := func(rows, heads, tile, slots int) float64 {
		n := (rows + tile - 1) / tile * heads
		return float64(n) / float64((n+slots-1)/slots*slots)
	}
	rng := rand.New(rand.NewPCG(4, 12))
	for range 2000 {
		tile := []int{64, 128}[rng.IntN(2)]
		rows, heads, slots := 1+rng.IntN(40000), 1+rng.IntN(64), 1+rng.IntN(300)
		got := fitRows(rows, heads, tile, slots)
		if got == rows {
			continue
		}
		if got%tile != 0 || got < rows-rows/16-tile || got > rows+rows/16+tile {
			t.Fatalf("fitRows(%d, %d, %d, %d) = %d: not whole tiles within a sixteenth", rows, heads, tile, slots, got)
		}
		f := fill(got, heads, tile, slots)
		if f <= fill(rows, heads, tile, slots) {
			t.Fatalf("fitRows(%d, %d, %d, %d) = %d fills %.4f, rows themselves %.4f", rows, heads, tile, slots, got, f, fill(rows, heads, tile, slots))
		}
		t0 := rows / tile
		for tt := max(1, t0-t0/16); tt <= t0+t0/16; tt++ {
			if g := fill(tt*tile, heads, tile, slots); g > f+1e-9 {
				t.Fatalf("fitRows(%d, %d, %d, %d) = %d fills %.4f; %d rows fill %.4f", rows, heads, tile, slots, got, f, tt*tile, g)
			}
		}
	}
}
