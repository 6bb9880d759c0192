package cuda

import (
	"math"
	"sort"
)

// BF16 rounds f to the nearest bfloat16 (ties to even) and returns its bits.
func BF16(f float32) uint16 {
	u := math.Float32bits(f)
	if f != f { // NaN stays NaN
		return uint16(u>>16) | 0x40
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// BF16Float64 widens bfloat16 bits to float64.
func BF16Float64(h uint16) float64 { return float64(math.Float32frombits(uint32(h) << 16)) }

// RefDecode is the float64 reference of one KV head's decode attention: the
// outputs [G*D] of the G query heads q [G*D] over the tokens of K and V
// [n*D] listed in tokens (nil: all n), softmax scale 1/sqrt(D).
func RefDecode(q, K, V []uint16, D int, tokens []int) []float64 {
	G := len(q) / D
	n := len(K) / D
	if tokens == nil {
		tokens = make([]int, n)
		for i := range tokens {
			tokens[i] = i
		}
	}
	scale := 1 / math.Sqrt(float64(D))
	out := make([]float64, G*D)
	s := make([]float64, len(tokens))
	for g := 0; g < G; g++ {
		qg := make([]float64, D)
		for j := range qg {
			qg[j] = BF16Float64(q[g*D+j])
		}
		m := math.Inf(-1)
		for i, t := range tokens {
			var a float64
			for j := 0; j < D; j++ {
				a += qg[j] * BF16Float64(K[t*D+j])
			}
			s[i] = a * scale
			m = math.Max(m, s[i])
		}
		var sum float64
		o := out[g*D : (g+1)*D]
		for i, t := range tokens {
			p := math.Exp(s[i] - m)
			sum += p
			for j := 0; j < D; j++ {
				o[j] += p * BF16Float64(V[t*D+j])
			}
		}
		for j := range o {
			o[j] /= sum
		}
	}
	return out
}

// RefQuestScores is the float64 reference of Quest's page bounds for the G
// query heads q [G*D] over pages with key bounds mn and mx [P*D]:
// [G][P], score = sum_i max(q_i mn_i, q_i mx_i).
func RefQuestScores(q, mn, mx []uint16, D int) [][]float64 {
	G, P := len(q)/D, len(mn)/D
	out := make([][]float64, G)
	for g := range out {
		out[g] = make([]float64, P)
		for p := 0; p < P; p++ {
			var s float64
			for j := 0; j < D; j++ {
				qj := BF16Float64(q[g*D+j])
				s += math.Max(qj*BF16Float64(mn[p*D+j]), qj*BF16Float64(mx[p*D+j]))
			}
			out[g][p] = s
		}
	}
	return out
}

// RefPageBounds is the reference of page_minmax for one KV head: K [n*D]
// into mn, mx [P*D].
func RefPageBounds(K []uint16, D, pageSize int) (mn, mx []uint16) {
	n := len(K) / D
	P := (n + pageSize - 1) / pageSize
	mn, mx = make([]uint16, P*D), make([]uint16, P*D)
	for p := 0; p < P; p++ {
		for j := 0; j < D; j++ {
			lo, hi := math.Inf(1), math.Inf(-1)
			for t := p * pageSize; t < min(n, (p+1)*pageSize); t++ {
				v := BF16Float64(K[t*D+j])
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
			mn[p*D+j], mx[p*D+j] = BF16(float32(lo)), BF16(float32(hi))
		}
	}
	return mn, mx
}

// TopK is the brute-force reference of the selection: the indices of the k
// largest scores (ties to the lower index), ascending.
func TopK(scores []float32, k int) []int32 {
	idx := make([]int32, len(scores))
	for i := range idx {
		idx[i] = int32(i)
	}
	sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	idx = idx[:min(k, len(idx))]
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	return idx
}

// PageTokens lists the tokens of pages (of pageSize slots) that are below n.
func PageTokens(pages []int32, pageSize, n int) []int {
	var t []int
	for _, p := range pages {
		for s := 0; s < pageSize; s++ {
			if i := int(p)*pageSize + s; i < n {
				t = append(t, i)
			}
		}
	}
	return t
}

// RelErr is ||got - want|| / ||want|| (Euclidean); +Inf when got has a NaN.
func RelErr(got []float32, want []float64) float64 {
	var num, den float64
	for i, w := range want {
		g := float64(got[i])
		if g != g {
			return math.Inf(1)
		}
		num += (g - w) * (g - w)
		den += w * w
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

// RefProbs is the float64 reference of the attention probabilities of the G
// query heads q [G*D] over the n keys of K [n*D] (scale 1/sqrt(D)): [G][n].
func RefProbs(q, K []uint16, D int) [][]float64 {
	G, n := len(q)/D, len(K)/D
	scale := 1 / math.Sqrt(float64(D))
	out := make([][]float64, G)
	for g := range out {
		p := make([]float64, n)
		m := math.Inf(-1)
		for t := range p {
			var a float64
			for j := 0; j < D; j++ {
				a += BF16Float64(q[g*D+j]) * BF16Float64(K[t*D+j])
			}
			p[t] = a * scale
			m = math.Max(m, p[t])
		}
		var sum float64
		for t := range p {
			p[t] = math.Exp(p[t] - m)
			sum += p[t]
		}
		for t := range p {
			p[t] /= sum
		}
		out[g] = p
	}
	return out
}

// ArgMin is the index of the lowest of x[:n] (ties to the lower index), -1
// when n is 0.
func ArgMin[T float32 | float64](x []T, n int) int {
	best := -1
	for i := range n {
		if best < 0 || x[i] < x[best] {
			best = i
		}
	}
	return best
}
