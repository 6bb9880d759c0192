package policies

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestSumRows: sumRows gives each token the float64 sum of the rows' values
// added one row at a time into a cleared slice, bit for bit, for 1 to 11
// rows (the passes of four, and the rest one at a time).
func TestSumRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for nrows := 1; nrows <= 11; nrows++ {
		n := 1 + rng.IntN(300)
		rows := make([][]float32, nrows)
		for i := range rows {
			rows[i] = make([]float32, n+rng.IntN(5)) // longer than n: sumRows reads n
			for j := range rows[i] {
				// probabilities of widely different sizes, so that the
				// order of the additions shows in the last bits
				rows[i][j] = float32(math.Exp(-30 * rng.Float64()))
			}
		}
		want := make([]float64, n)
		for _, r := range rows {
			for i := range want {
				want[i] += float64(r[i])
			}
		}
		got := make([]float64, n)
		for i := range got {
			got[i] = math.NaN() // sumRows must set every one
		}
		sumRows(got, rows)
		for i := range want {
			if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
				t.Fatalf("%d rows, token %d: %v, want %v (one row at a time)", nrows, i, got[i], want[i])
			}
		}
	}
}
