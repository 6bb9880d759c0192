package cpu

import (
	"math"

	"github.com/kvbench/kvbench/runtime"
)

// ropeTable caches cos/sin of the last positions RoPE was called with, since
// every layer rotates the same positions.
type ropeTable struct {
	pos      []int
	theta    float64
	headDim  int
	cos, sin []float32 // [rows, headDim/2]
}

// fill computes the table for pos unless it already holds it. Angles are
// computed as the reference implementations do, in float32: inv_freq =
// 1/theta^(2i/d), angle = float32(pos) * inv_freq.
func (t *ropeTable) fill(pos []int, theta float64, headDim int) {
	if t.theta == theta && t.headDim == headDim && len(t.pos) == len(pos) {
		same := true
		for i, p := range pos {
			if t.pos[i] != p {
				same = false
				break
			}
		}
		if same {
			return
		}
	}
	half := headDim / 2
	t.pos = append(t.pos[:0], pos...)
	t.theta, t.headDim = theta, headDim
	n := len(pos) * half
	if cap(t.cos) < n {
		t.cos, t.sin = make([]float32, n), make([]float32, n)
	}
	t.cos, t.sin = t.cos[:n], t.sin[:n]
	for i := 0; i < half; i++ {
		inv := float32(1 / math.Pow(theta, float64(2*i)/float64(headDim)))
		for r, p := range pos {
			a := float64(float32(p) * inv)
			t.cos[r*half+i] = float32(math.Cos(a))
			t.sin[r*half+i] = float32(math.Sin(a))
		}
	}
}

// RoPE rotates every head of every row by its position's angles.
func (b *Backend) RoPE(x runtime.Buffer, rows, heads, headDim int, pos []int, theta float64, style runtime.RopeStyle) {
	b.rope.fill(pos[:rows], theta, headDim)
	ropeApply(vec(x), rows, heads, headDim, b.rope.cos, b.rope.sin, style)
}

// ropeApply rotates x [rows, heads*headDim] with cos/sin [rows, headDim/2].
func ropeApply(xs []float32, rows, heads, headDim int, cos, sin []float32, style runtime.RopeStyle) {
	half := headDim / 2
	for r := 0; r < rows; r++ {
		c, s := cos[r*half:(r+1)*half], sin[r*half:(r+1)*half]
		for h := 0; h < heads; h++ {
			v := xs[(r*heads+h)*headDim : (r*heads+h+1)*headDim]
			if style == runtime.RopeInterleaved {
				for i := 0; i < half; i++ {
					a, b := v[2*i], v[2*i+1]
					v[2*i] = a*c[i] - b*s[i]
					v[2*i+1] = a*s[i] + b*c[i]
				}
			} else {
				for i := 0; i < half; i++ {
					a, b := v[i], v[i+half]
					v[i] = a*c[i] - b*s[i]
					v[i+half] = b*c[i] + a*s[i]
				}
			}
		}
	}
}
