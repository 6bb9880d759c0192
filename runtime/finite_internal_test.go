package runtime

import (
	"math"
	"testing"
)

func TestNonFinite(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	v := make([]float32, 200)
	for i := range v {
		v[i] = float32(i) - 100
	}
	v[7] = math.MaxFloat32
	v[8] = -math.MaxFloat32
	v[9] = math.SmallestNonzeroFloat32
	v[10] = float32(math.Copysign(0, -1))
	if i := nonFinite32(v); i != -1 {
		t.Errorf("finite values: index %d", i)
	}
	for _, c := range []struct {
		at  int
		val float32
	}{{0, nan}, {63, inf}, {64, -inf}, {130, nan}, {199, -inf}} {
		w := append([]float32(nil), v...)
		w[c.at] = c.val
		if later := c.at + 1 + (len(w)-c.at)/2; later < len(w) {
			w[later] = nan // a later one is not reported first
		}
		if i := nonFinite32(w); i != c.at {
			t.Errorf("%v at %d: index %d", c.val, c.at, i)
		}
	}
	if i := nonFinite32(nil); i != -1 {
		t.Errorf("empty: %d", i)
	}
	if i := nonFinite64([]float64{1, -3, math.Inf(-1)}); i != 2 {
		t.Errorf("nonFinite64: %d", i)
	}
}
