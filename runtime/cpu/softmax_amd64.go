package cpu

//go:noescape
func expNegSumAVX2(x []float32, sub float32) float32

// expNegSum sets x[i] = expNeg(x[i] - sub) and returns the sum of the results.
func expNegSum(x []float32, sub float32) float32 {
	var sum float32
	n := 0
	if useAVX2 && len(x) >= 8 {
		n = len(x) &^ 7
		sum = expNegSumAVX2(x[:n], sub)
	}
	for i := n; i < len(x); i++ {
		e := expNeg(x[i] - sub)
		x[i] = e
		sum += e
	}
	return sum
}
