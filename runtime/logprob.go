package runtime

import "math"

// LogProb returns log softmax(logits)[target], computed in float64.
func LogProb(logits []float32, target int) float64 {
	m := math.Inf(-1)
	for _, v := range logits {
		m = math.Max(m, float64(v))
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - m)
	}
	return float64(logits[target]) - m - math.Log(sum)
}
