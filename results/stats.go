package results

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// Median returns the median of xs (the mean of the two middle values for an
// even count), or NaN for none. xs is not modified.
func Median(xs []float64) float64 { return Quantile(xs, 0.5) }

// Quantile returns the q-quantile of xs (0 <= q <= 1) by linear
// interpolation between order statistics (Hyndman and Fan's type 7, the
// default of R and NumPy), or NaN for none. xs is not modified.
func Quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 || math.IsNaN(q) {
		return math.NaN()
	}
	s := sortedCopy(xs)
	q = math.Max(0, math.Min(1, q))
	h := q * float64(len(s)-1)
	lo := int(math.Floor(h))
	if lo >= len(s)-1 {
		return s[len(s)-1]
	}
	return s[lo] + (h-float64(lo))*(s[lo+1]-s[lo])
}

func sortedCopy(xs []float64) []float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s
}

// Summary is a benchstat-like summary of a sample: its median and a
// distribution-free confidence interval of the median from order statistics.
type Summary struct {
	N      int
	Median float64
	// Lo and Hi bound the confidence interval of the median; with too few
	// samples for the requested confidence, CI is false and Lo and Hi are the
	// sample's minimum and maximum.
	Lo, Hi float64
	// Confidence is the interval's actual coverage (at least the requested
	// one when CI is true).
	Confidence float64
	CI         bool
}

// Summarize summarizes xs with a confidence interval of the median at the
// given confidence (0.95 when not in (0, 1)). The interval is
// [x(k), x(n+1-k)] with the largest k whose binomial coverage
// 1 - 2·P(Bin(n, 1/2) <= k-1) reaches the confidence.
func Summarize(xs []float64, confidence float64) Summary {
	if !(confidence > 0 && confidence < 1) {
		confidence = 0.95
	}
	n := len(xs)
	if n == 0 {
		return Summary{Median: math.NaN(), Lo: math.NaN(), Hi: math.NaN()}
	}
	s := sortedCopy(xs)
	sum := Summary{N: n, Median: Median(s), Lo: s[0], Hi: s[n-1]}
	// cdf[k] = P(Bin(n, 1/2) <= k)
	best := 0
	bestCov := 0.0
	for k := 1; k <= (n+1)/2; k++ {
		cov := 1 - 2*binomCDFHalf(n, k-1)
		if cov < confidence {
			break
		}
		best, bestCov = k, cov
	}
	if best == 0 {
		sum.Confidence = 1 - 2*binomCDFHalf(n, 0)
		return sum
	}
	sum.Lo, sum.Hi = s[best-1], s[n-best]
	sum.Confidence = bestCov
	sum.CI = true
	return sum
}

// binomCDFHalf returns P(Bin(n, 1/2) <= k).
func binomCDFHalf(n, k int) float64 {
	if k < 0 {
		return 0
	}
	if k >= n {
		return 1
	}
	// Sum exp(log C(n,i) - n log 2) to stay finite for large n.
	total := 0.0
	ln2n := float64(n) * math.Ln2
	for i := 0; i <= k; i++ {
		total += math.Exp(logChoose(n, i) - ln2n)
	}
	return math.Min(1, total)
}

func logChoose(n, k int) float64 {
	a, _ := math.Lgamma(float64(n + 1))
	b, _ := math.Lgamma(float64(k + 1))
	c, _ := math.Lgamma(float64(n - k + 1))
	return a - b - c
}

// Spread is the half-width of the interval relative to the median: the
// larger of (Hi-Median) and (Median-Lo), divided by |Median|. It is +Inf
// without a confidence interval and NaN for a zero median.
func (s Summary) Spread() float64 {
	if s.N == 0 {
		return math.NaN()
	}
	if !s.CI {
		return math.Inf(1)
	}
	if s.Median == 0 {
		if s.Lo == s.Hi {
			return 0
		}
		return math.NaN()
	}
	return math.Max(s.Hi-s.Median, s.Median-s.Lo) / math.Abs(s.Median)
}

// String formats the summary as benchstat does: "median ± spread%", with
// "± ∞" when the sample is too small for the confidence interval.
func (s Summary) String() string {
	if s.N == 0 {
		return "—"
	}
	sp := s.Spread()
	switch {
	case math.IsInf(sp, 1):
		return fmt.Sprintf("%.4g ± ∞", s.Median)
	case math.IsNaN(sp):
		return fmt.Sprintf("%.4g ± ?", s.Median)
	}
	return fmt.Sprintf("%.4g ± %.0f%%", s.Median, 100*sp)
}

// MannWhitneyResult is the outcome of a two-sided Mann-Whitney U test.
type MannWhitneyResult struct {
	U      float64 // U statistic of the first sample: pairs (x > y) + half the ties
	P      float64 // two-sided p-value
	Exact  bool    // P from the exact permutation distribution
	N1, N2 int
	Ties   bool // the pooled sample has ties
}

// ExactMaxN is the largest size of each sample for which MannWhitney uses the
// exact distribution.
const ExactMaxN = 10

// MannWhitney runs the two-sided Mann-Whitney U (Wilcoxon rank-sum) test of
// whether x and y come from the same distribution. When both samples have at
// most ExactMaxN values the p-value is exact (the permutation distribution of
// the rank sum given the observed ties); otherwise it is the normal
// approximation with tie correction and continuity correction.
func MannWhitney(x, y []float64) (MannWhitneyResult, error) {
	if len(x) <= ExactMaxN && len(y) <= ExactMaxN {
		return MannWhitneyExact(x, y)
	}
	return MannWhitneyNormal(x, y)
}

// ranks holds the pooled sample's doubled midranks (integers: midranks are
// multiples of 1/2) and the tie groups' sizes.
type ranks struct {
	r2   []int // doubled midrank of each pooled value, x first then y
	ties []int // sizes of the groups of equal values (>= 2)
}

func pooledRanks(x, y []float64) (ranks, error) {
	if len(x) == 0 || len(y) == 0 {
		return ranks{}, errors.New("mann-whitney: empty sample")
	}
	type v struct {
		val float64
		idx int
	}
	all := make([]v, 0, len(x)+len(y))
	for i, a := range x {
		if math.IsNaN(a) {
			return ranks{}, errors.New("mann-whitney: NaN in the first sample")
		}
		all = append(all, v{a, i})
	}
	for i, b := range y {
		if math.IsNaN(b) {
			return ranks{}, errors.New("mann-whitney: NaN in the second sample")
		}
		all = append(all, v{b, len(x) + i})
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].val < all[j].val })
	rk := ranks{r2: make([]int, len(all))}
	for i := 0; i < len(all); {
		j := i + 1
		for j < len(all) && all[j].val == all[i].val {
			j++
		}
		// positions i..j-1 (0-based) share the midrank ((i+1)+j)/2.
		for k := i; k < j; k++ {
			rk.r2[all[k].idx] = i + 1 + j
		}
		if j-i > 1 {
			rk.ties = append(rk.ties, j-i)
		}
		i = j
	}
	return rk, nil
}

// u1 returns U of the first sample from its doubled rank sum.
func u1(w2 int, n1 int) float64 {
	return float64(w2)/2 - float64(n1*(n1+1))/2
}

// MannWhitneyNormal is the test with the normal approximation: tie-corrected
// variance n1·n2/12·((N+1) - Σ(t³-t)/(N(N-1))) and a continuity correction
// of 1/2.
func MannWhitneyNormal(x, y []float64) (MannWhitneyResult, error) {
	rk, err := pooledRanks(x, y)
	if err != nil {
		return MannWhitneyResult{}, err
	}
	n1, n2 := len(x), len(y)
	w2 := 0
	for _, r := range rk.r2[:n1] {
		w2 += r
	}
	res := MannWhitneyResult{U: u1(w2, n1), N1: n1, N2: n2, Ties: len(rk.ties) > 0}
	N := float64(n1 + n2)
	tie := 0.0
	for _, t := range rk.ties {
		tf := float64(t)
		tie += tf*tf*tf - tf
	}
	variance := float64(n1) * float64(n2) / 12 * ((N + 1) - tie/(N*(N-1)))
	if variance <= 0 {
		res.P = 1 // every value equal
		return res, nil
	}
	mu := float64(n1) * float64(n2) / 2
	z := math.Max(0, math.Abs(res.U-mu)-0.5) / math.Sqrt(variance)
	res.P = math.Min(1, math.Erfc(z/math.Sqrt2))
	return res, nil
}

// MannWhitneyExact is the test with the exact permutation distribution of
// the rank sum given the pooled midranks (so ties are handled exactly); the
// two-sided p-value doubles the smaller tail. It refuses samples whose
// pooled size exceeds 200.
func MannWhitneyExact(x, y []float64) (MannWhitneyResult, error) {
	rk, err := pooledRanks(x, y)
	if err != nil {
		return MannWhitneyResult{}, err
	}
	n1, n2 := len(x), len(y)
	N := n1 + n2
	if N > 200 {
		return MannWhitneyResult{}, fmt.Errorf("mann-whitney: exact test of %d values is too large", N)
	}
	w2 := 0
	for _, r := range rk.r2[:n1] {
		w2 += r
	}
	res := MannWhitneyResult{U: u1(w2, n1), N1: n1, N2: n2, Exact: true, Ties: len(rk.ties) > 0}

	// dist[k][s]: number of k-subsets of the values seen so far whose doubled
	// ranks sum to s (float64 counts: exact up to 2^53, then relative error
	// 1e-16, harmless for probabilities).
	maxS := N * (N + 1) // sum of all doubled ranks
	k := min(n1, n2)    // count subsets of the smaller side: same distribution
	dist := make([][]float64, k+1)
	for i := range dist {
		dist[i] = make([]float64, maxS+1)
	}
	dist[0][0] = 1
	for _, r := range rk.r2 {
		for j := k; j >= 1; j-- {
			prev, cur := dist[j-1], dist[j]
			for s := maxS - r; s >= 0; s-- {
				if prev[s] != 0 {
					cur[s+r] += prev[s]
				}
			}
		}
	}
	// The statistic: doubled rank sum of the smaller sample.
	obs := w2
	if n2 < n1 {
		obs = maxS - w2
	}
	var le, ge, total float64
	for s, c := range dist[k] {
		if c == 0 {
			continue
		}
		total += c
		if s <= obs {
			le += c
		}
		if s >= obs {
			ge += c
		}
	}
	res.P = math.Min(1, 2*math.Min(le, ge)/total)
	return res, nil
}
