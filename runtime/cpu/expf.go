package cpu

import "math"

// expf returns e^x in float32 with a relative error of a few ulp, several
// times faster than math.Exp: 2^n * p(r) with x = n ln2 + r, |r| <= ln2/2,
// and p a degree-7 Taylor polynomial (truncation error below 2e-9).
func expf(x float32) float32 {
	if x > 88.72 {
		return float32(math.Inf(1))
	}
	if x < -103.9 {
		return 0
	}
	if x != x {
		return x
	}
	const (
		log2e = 1.4426950408889634
		ln2hi = 0.693145751953125
		ln2lo = 1.428606765330187045e-06
	)
	n := float32(math.Floor(float64(x*log2e) + 0.5))
	r := (x - n*ln2hi) - n*ln2lo
	p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720+r*(1.0/5040)))))))
	ni := int32(n)
	if ni > 127 {
		return p * 2 * math.Float32frombits(uint32(127+127)<<23)
	}
	if ni < -126 { // subnormal result: scale in two steps
		return p * math.Float32frombits(uint32(ni+126+127)<<23) * math.Float32frombits(1<<23)
	}
	return p * math.Float32frombits(uint32(ni+127)<<23)
}

// expNeg is expf for the arguments of a softmax, x <= 0 (or -Inf): no range
// checks beyond underflow, and rounding by truncation instead of Floor.
// Results below 2^-126 (x < -87.3) are flushed to 0, which changes a softmax
// whose largest term is 1 by less than 1e-37.
func expNeg(x float32) float32 {
	if !(x > -87.3) { // also -Inf and NaN
		return 0
	}
	const (
		log2e = 1.4426950408889634
		ln2hi = 0.693145751953125
		ln2lo = 1.428606765330187045e-06
	)
	n := int32(x*log2e - 0.5) // round to nearest for x <= 0
	fn := float32(n)
	r := (x - fn*ln2hi) - fn*ln2lo
	p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720+r*(1.0/5040)))))))
	return p * math.Float32frombits(uint32(n+127)<<23)
}
