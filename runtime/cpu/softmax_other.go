//go:build !amd64

package cpu

// expNegSum sets x[i] = expNeg(x[i] - sub) and returns the sum of the results.
func expNegSum(x []float32, sub float32) float32 {
	var sum float32
	for i, v := range x {
		e := expNeg(v - sub)
		x[i] = e
		sum += e
	}
	return sum
}
