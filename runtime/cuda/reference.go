package cuda

import "math"

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
