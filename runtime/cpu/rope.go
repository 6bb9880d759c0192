package cpu

import (
	"math"
	"slices"

	"github.com/kvbench/kvbench/runtime"
)

// ropeTable caches cos/sin of the last positions and inverse frequencies
// RoPE was called with, since every layer rotates the same positions.
type ropeTable struct {
	pos      []int
	inv      []float32 // [headDim/2] the inverse frequencies of the table
	cos, sin []float32 // [rows, headDim/2]
	scratch  []float32 // inverse frequencies derived from a base
}

// fill computes the table for pos and inverse frequencies inv unless it
// already holds it. Angles are computed as the reference implementations do,
// in float32: angle = float32(pos) * inv_freq.
func (t *ropeTable) fill(pos []int, inv []float32) {
	if slices.Equal(t.pos, pos) && slices.Equal(t.inv, inv) && len(t.pos) > 0 {
		return
	}
	half := len(inv)
	t.pos = append(t.pos[:0], pos...)
	t.inv = append(t.inv[:0], inv...)
	n := len(pos) * half
	if cap(t.cos) < n {
		t.cos, t.sin = make([]float32, n), make([]float32, n)
	}
	t.cos, t.sin = t.cos[:n], t.sin[:n]
	for i, f := range inv {
		for r, p := range pos {
			a := float64(float32(p) * f)
			t.cos[r*half+i] = float32(math.Cos(a))
			t.sin[r*half+i] = float32(math.Sin(a))
		}
	}
}

// baseInvFreq appends to dst the inverse frequencies of plain RoPE,
// inv_freq = 1/theta^(2i/d), rounded to float32.
func baseInvFreq(dst []float32, theta float64, headDim int) []float32 {
	for i := 0; i < headDim/2; i++ {
		dst = append(dst, float32(1/math.Pow(theta, float64(2*i)/float64(headDim))))
	}
	return dst
}

// RoPE rotates every head of every row by its position's angles.
func (b *Backend) RoPE(x runtime.Buffer, rows, heads, headDim int, pos []int, theta float64, style runtime.RopeStyle) {
	b.rope.scratch = baseInvFreq(b.rope.scratch[:0], theta, headDim)
	b.RoPEFreqs(x, rows, heads, headDim, pos, b.rope.scratch, style)
}

// RoPEFreqs rotates every head of every row by its position's angles with
// the inverse frequencies inv [headDim/2] (scaled RoPE).
func (b *Backend) RoPEFreqs(x runtime.Buffer, rows, heads, headDim int, pos []int, inv []float32, style runtime.RopeStyle) {
	b.rope.fill(pos[:rows], inv[:headDim/2])
	ropeApply(vec(x), rows, heads, headDim, b.rope.cos, b.rope.sin, style)
}

var _ runtime.ScaledRoPE = (*Backend)(nil)

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
