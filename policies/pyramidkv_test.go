package policies

// Unit tests of the unexported helpers of snapkv.go and pyramidkv.go; they
// live inside the package because the helpers are not exported. The policies'
// behaviour is tested from outside in snapkv_test.go.

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// pyramidFormulaBudget is POLICIES.md's formula with the reference's rounding, in
// floating point: min = floor((k-w)/beta), max = 2(k-w) - min, clipped to
// n-w; budget_l = max - l*floor((max-min)/(Lyr-1)); uniform k-w when
// n < 2(k-w) (the reference's middle branch).
func pyramidFormulaBudget(k, w, beta, layers, n, l int) int {
	kw := float64(k - w)
	if float64(n) < 2*kw {
		return k - w
	}
	lo := math.Floor(kw / float64(beta))
	hi := 2*kw - lo
	if hi >= float64(n-w) {
		hi = float64(n - w)
		lo = 2*kw - hi
	}
	return int(hi - float64(l)*math.Floor((hi-lo)/float64(layers-1)))
}

func TestPyramidBudget(t *testing.T) {
	// Hand-computed tables.
	for _, c := range []struct {
		k, w, beta, layers, n int
		want                  []int
		branch                string
	}{
		{24, 8, 20, 3, 64, []int{32, 16, 0}, "pyramid"},                   // min 0, max 32, steps 16
		{24, 8, 20, 3, 36, []int{28, 16, 4}, "clipped"},                   // max = n-w = 28, min = 32-28 = 4
		{24, 8, 20, 3, 40, []int{32, 16, 0}, "clipped"},                   // max = n-w = 32 exactly
		{24, 8, 20, 3, 30, []int{16, 16, 16}, "uniform"},                  // n < 2(k-w)
		{24, 8, 20, 3, 24, []int{16, 16, 16}, "uniform"},                  // n == k
		{20, 4, 20, 3, 34, []int{30, 16, 2}, "clipped"},                   // max 30, min 2, steps 14
		{20, 6, 20, 3, 60, []int{28, 14, 0}, "pyramid"},                   // min 0, max 28
		{30, 6, 20, 2, 70, []int{47, 1}, "pyramid"},                       // min 1, max 47, steps 46
		{30, 6, 4, 4, 200, []int{42, 30, 18, 6}, "pyramid"},               // min 6, max 42, steps 12
		{100, 20, 20, 6, 1000, []int{156, 126, 96, 66, 36, 6}, "pyramid"}, // min 4, max 156, steps 152//5 = 30: mean 81 > 80
	} {
		var got []int
		for l := range c.layers {
			got = append(got, pyramidBudget(c.k, c.w, c.beta, c.layers, c.n, l))
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s k=%d w=%d beta=%d layers=%d n=%d: budgets %v, want %v", c.branch, c.k, c.w, c.beta, c.layers, c.n, got, c.want)
		}
	}
	// The formula over a grid, with the branches each reached.
	branches := map[string]int{}
	for _, k := range []int{16, 40, 128, 512, 2048} {
		for _, w := range []int{1, 8, 32} {
			if w > k {
				continue
			}
			for _, layers := range []int{2, 3, 8, 32, 80} {
				for _, beta := range []int{1, 7, 20} {
					kw := k - w
					lo := kw / beta
					for _, n := range []int{k, k + 1, 2 * kw, 2*kw + 1, 2*kw - lo + w, 2*kw - lo + w + 1, 3 * k, 10 * k} {
						if n < k {
							continue
						}
						switch {
						case n < 2*kw:
							branches["uniform"]++
						case 2*kw-lo >= n-w:
							branches["clipped"]++
						default:
							branches["pyramid"]++
						}
						for l := range layers {
							got := pyramidBudget(k, w, beta, layers, n, l)
							if want := pyramidFormulaBudget(k, w, beta, layers, n, l); got != want {
								t.Fatalf("k=%d w=%d beta=%d layers=%d n=%d layer %d: budget %d, formula %d", k, w, beta, layers, n, l, got, want)
							}
							if got < 0 || got > n-w {
								t.Fatalf("k=%d w=%d beta=%d layers=%d n=%d layer %d: budget %d outside [0, %d]", k, w, beta, layers, n, l, got, n-w)
							}
							if l > 0 && got > pyramidBudget(k, w, beta, layers, n, l-1) {
								t.Fatalf("k=%d w=%d layers=%d n=%d: budget grows at layer %d", k, w, layers, n, l)
							}
						}
					}
				}
			}
		}
	}
	for _, b := range []string{"uniform", "clipped", "pyramid"} {
		if branches[b] == 0 {
			t.Errorf("the grid never reaches the %s branch", b)
		}
	}
	// One layer: the reference divides by zero; we keep the average.
	if got := pyramidBudget(64, 8, 20, 1, 1000, 0); got != 56 {
		t.Errorf("one layer: budget %d, want 56", got)
	}
}

func TestSnapPool1D(t *testing.T) {
	x := []float64{1, 3, 2, 0, 5}
	for _, c := range []struct {
		kernel int
		avg    bool
		want   []float64
	}{
		{1, false, []float64{1, 3, 2, 0, 5}},
		{1, true, []float64{1, 3, 2, 0, 5}},
		// max: -Inf padding, so the edges take the max of what they cover.
		{3, false, []float64{3, 3, 3, 5, 5}},
		// avg: zero padding counted, so edges are divided by 3 too.
		{3, true, []float64{4.0 / 3, 6.0 / 3, 5.0 / 3, 7.0 / 3, 5.0 / 3}},
		{5, false, []float64{3, 3, 5, 5, 5}},
		{5, true, []float64{6.0 / 5, 6.0 / 5, 11.0 / 5, 10.0 / 5, 7.0 / 5}},
		{7, false, []float64{3, 5, 5, 5, 5}},
		// Windows reaching past both ends cover everything.
		{9, false, []float64{5, 5, 5, 5, 5}},
		{11, true, []float64{1, 1, 1, 1, 1}},
	} {
		got := make([]float64, len(x))
		snapPool1d(got, x, c.kernel, c.avg, nil)
		for i := range got {
			if math.Abs(got[i]-c.want[i]) > 1e-12 {
				t.Errorf("kernel %d avg %v: %v, want %v", c.kernel, c.avg, got, c.want)
				break
			}
		}
	}
	// Negative scores (not probabilities, but the padding rule shows): max
	// pooling never takes a padded value.
	got := make([]float64, 3)
	snapPool1d(got, []float64{-1, -2, -3}, 3, false, nil)
	if !slices.Equal(got, []float64{-1, -1, -2}) {
		t.Errorf("max pooling of negatives: %v, want [-1 -1 -2]", got)
	}
}

// TestSnapMaxPoolNaive: max pooling (van Herk/Gil-Werman) equals the
// maximum over each window's covered elements, on random scores of many
// lengths and widths (wider than the scores too), the scratch reused.
func TestSnapMaxPoolNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 8))
	var tmp []float64
	for range 300 {
		n, kernel := 1+rng.IntN(80), 1+2*rng.IntN(12)
		src := make([]float64, n)
		for i := range src {
			src[i] = float64(rng.IntN(9)) - 4 // ties and negatives
		}
		got := make([]float64, n)
		tmp = snapPool1d(got, src, kernel, false, tmp)
		for i := range n {
			lo, hi := max(i-kernel/2, 0), min(i+kernel/2, n-1)
			if want := slices.Max(src[lo : hi+1]); got[i] != want {
				t.Fatalf("n %d kernel %d: element %d is %v, want %v (src %v)", n, kernel, i, got[i], want, src)
			}
		}
	}
}

// TestSnapMaxPoolFloat32: max pooling in float32 gives the float64
// pooling's values exactly (a maximum is one of its values), on random
// float32 sums of many lengths and widths.
func TestSnapMaxPoolFloat32(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 9))
	var tmp32 []float32
	var tmp []float64
	for range 300 {
		n, kernel := 1+rng.IntN(80), 1+2*rng.IntN(12)
		src32, src := make([]float32, n), make([]float64, n)
		for i := range src32 {
			src32[i] = rng.Float32() / float32(n)
			src[i] = float64(src32[i])
		}
		got, want := make([]float32, n), make([]float64, n)
		tmp32 = snapMaxPool(got, src32, kernel, tmp32)
		tmp = snapPool1d(want, src, kernel, false, tmp)
		for i := range n {
			if float64(got[i]) != want[i] {
				t.Fatalf("n %d kernel %d: element %d is %v in float32, %v in float64", n, kernel, i, got[i], want[i])
			}
		}
	}
}

// TestTopK: topK's first k indices are the k best (higher score first,
// ties to the lower index) as a full sort finds them, on scores with many
// ties, for every k.
func TestTopK(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 1))
	for range 200 {
		n := 1 + rng.IntN(60)
		score := make([]float64, n)
		for i := range score {
			score[i] = float64(rng.IntN(5))
		}
		sorted := make([]int32, n)
		for i := range sorted {
			sorted[i] = int32(i)
		}
		slices.SortFunc(sorted, func(x, y int32) int {
			if c := cmp.Compare(score[y], score[x]); c != 0 {
				return c
			}
			return cmp.Compare(x, y)
		})
		for k := 0; k <= n; k++ {
			idx := make([]int32, n) // the indices in a random order
			for i, v := range rng.Perm(n) {
				idx[i] = int32(v)
			}
			topK(idx, score, k)
			got, want := slices.Sorted(slices.Values(idx[:k])), slices.Sorted(slices.Values(sorted[:k]))
			if !slices.Equal(got, want) {
				t.Fatalf("scores %v, k %d: topK kept %v, want %v", score, k, got, want)
			}
		}
	}
}
