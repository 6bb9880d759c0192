package results

import (
	"math"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMedianQuantile(t *testing.T) {
	assert.True(t, math.IsNaN(Median(nil)))
	assert.Equal(t, 3.0, Median([]float64{5, 1, 3}))
	assert.Equal(t, 2.5, Median([]float64{4, 1, 3, 2}))
	xs := []float64{3, 1, 2}
	Median(xs)
	assert.Equal(t, []float64{3, 1, 2}, xs, "input not modified")
	assert.Equal(t, 1.0, Quantile([]float64{1, 2, 3, 4, 5}, 0))
	assert.Equal(t, 5.0, Quantile([]float64{1, 2, 3, 4, 5}, 1))
	assert.InDelta(t, 4.6, Quantile([]float64{1, 2, 3, 4, 5}, 0.9), 1e-12)
}

func TestSummarize(t *testing.T) {
	// n=5 cannot reach 95% (coverage 1-2/32 = 93.75%).
	s := Summarize([]float64{10, 11, 12, 13, 14}, 0.95)
	assert.False(t, s.CI)
	assert.Equal(t, 12.0, s.Median)
	assert.Equal(t, "12 ± ∞", s.String())

	// n=10: k=2, [x(2), x(9)], coverage 1-2·11/1024.
	xs := []float64{100, 101, 102, 103, 104, 105, 106, 107, 108, 120}
	s = Summarize(xs, 0.95)
	require.True(t, s.CI)
	assert.Equal(t, 101.0, s.Lo)
	assert.Equal(t, 108.0, s.Hi)
	assert.InDelta(t, 0.978515625, s.Confidence, 1e-12)
	assert.InDelta(t, 104.5, s.Median, 1e-12)
	assert.InDelta(t, 3.5/104.5, s.Spread(), 1e-12)
	assert.Equal(t, "104.5 ± 3%", s.String())

	// n=20: k=6.
	ys := make([]float64, 20)
	for i := range ys {
		ys[i] = float64(i + 1)
	}
	s = Summarize(ys, 0.95)
	assert.Equal(t, 6.0, s.Lo)
	assert.Equal(t, 15.0, s.Hi)
	assert.InDelta(t, 0.9586105346679688, s.Confidence, 1e-12)

	assert.Equal(t, "—", Summarize(nil, 0.95).String())
}

// Reference values: the exact ones by enumerating every split of the pooled
// sample (independent brute force), the normal ones from the textbook
// formula; the first case is SciPy's documented example (Conover), U=17,
// exact p=0.1111, asymptotic p=0.11134688653314041.
func TestMannWhitneyKnownValues(t *testing.T) {
	males := []float64{19, 22, 16, 29, 24}
	females := []float64{20, 11, 17, 12}

	ex, err := MannWhitneyExact(males, females)
	require.NoError(t, err)
	assert.Equal(t, 17.0, ex.U)
	assert.InDelta(t, 0.1111111111111111, ex.P, 1e-12)
	assert.True(t, ex.Exact)

	nm, err := MannWhitneyNormal(males, females)
	require.NoError(t, err)
	assert.Equal(t, 17.0, nm.U)
	assert.InDelta(t, 0.11134688653314041, nm.P, 1e-12)

	auto, err := MannWhitney(males, females)
	require.NoError(t, err)
	assert.True(t, auto.Exact, "small samples use the exact distribution")

	// Textbook case with ties (2.2 three times, 3.3 twice, 6.6 twice).
	x := []float64{1.1, 2.2, 2.2, 3.3, 4.4, 5.0}
	y := []float64{2.2, 3.3, 5.5, 6.6, 6.6, 7.7, 8.0}
	ex, err = MannWhitneyExact(x, y)
	require.NoError(t, err)
	assert.Equal(t, 6.5, ex.U)
	assert.True(t, ex.Ties)
	assert.InDelta(t, 0.039627039627039624, ex.P, 1e-12)
	nm, err = MannWhitneyNormal(x, y)
	require.NoError(t, err)
	assert.Equal(t, 6.5, nm.U)
	assert.InDelta(t, 0.043727859914373765, nm.P, 1e-12)
	// Swapping the samples keeps p; U becomes n1·n2 - U.
	sw, err := MannWhitneyExact(y, x)
	require.NoError(t, err)
	assert.InDelta(t, ex.P, sw.P, 1e-12)
	assert.Equal(t, 42-6.5, sw.U)

	// Larger samples with ties: the normal approximation.
	x2 := []float64{10.0, 13.5, 10.5, 14.0, 11.0, 14.5, 11.5, 15.0, 12.0, 15.5, 12.5, 16.0, 13.0, 10.0, 13.5}
	y2 := []float64{11.0, 13.5, 16.0, 13.0, 15.5, 12.5, 15.0, 12.0, 14.5, 11.5, 14.0, 11.0, 13.5, 16.0}
	big, err := MannWhitney(x2, y2)
	require.NoError(t, err)
	assert.False(t, big.Exact)
	assert.Equal(t, 84.0, big.U)
	assert.InDelta(t, 0.3693544490684214, big.P, 1e-12)
}

func TestMannWhitneyIdenticalAndSeparated(t *testing.T) {
	a := []float64{3, 1, 4, 1, 5, 9, 2, 6}
	for _, f := range []func(x, y []float64) (MannWhitneyResult, error){MannWhitney, MannWhitneyExact, MannWhitneyNormal} {
		r, err := f(a, a)
		require.NoError(t, err)
		assert.Equal(t, 1.0, r.P, "identical samples")
	}
	same := []float64{7, 7, 7, 7, 7}
	r, err := MannWhitney(same, same)
	require.NoError(t, err)
	assert.Equal(t, 1.0, r.P, "all values equal")
	r, err = MannWhitneyNormal(same, same)
	require.NoError(t, err)
	assert.Equal(t, 1.0, r.P)

	lo := make([]float64, 10)
	hi := make([]float64, 10)
	for i := range lo {
		lo[i] = float64(i + 1)
		hi[i] = float64(i + 11)
	}
	r, err = MannWhitney(lo, hi)
	require.NoError(t, err)
	assert.True(t, r.Exact)
	assert.Equal(t, 0.0, r.U)
	assert.InDelta(t, 2.0/184756, r.P, 1e-15) // both extreme splits out of C(20,10)
	assert.Less(t, r.P, 0.001)
	r, err = MannWhitneyNormal(lo, hi)
	require.NoError(t, err)
	assert.InDelta(t, 0.0001826717911095504, r.P, 1e-12)
	assert.Less(t, r.P, 0.001)

	_, err = MannWhitney(nil, lo)
	assert.Error(t, err)
	_, err = MannWhitney([]float64{math.NaN()}, lo)
	assert.Error(t, err)
}

// The exact and normal p-values agree roughly on moderate samples, and the
// exact test is valid: under the null, P(p <= 0.05) <= 0.05.
func TestMannWhitneyExactVsNormal(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	rejections := 0
	const trials = 400
	for i := 0; i < trials; i++ {
		x := make([]float64, 10)
		y := make([]float64, 10)
		for j := range x {
			x[j] = math.Round(rng.NormFloat64() * 3) // rounding makes ties
			y[j] = math.Round(rng.NormFloat64() * 3)
		}
		ex, err := MannWhitneyExact(x, y)
		require.NoError(t, err)
		nm, err := MannWhitneyNormal(x, y)
		require.NoError(t, err)
		assert.InDelta(t, nm.P, ex.P, 0.06, "x=%v y=%v", x, y)
		if ex.P <= 0.05 {
			rejections++
		}
	}
	assert.LessOrEqual(t, float64(rejections)/trials, 0.07)
}
