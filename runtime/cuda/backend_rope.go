package cuda

import (
	"math"
	"slices"

	"github.com/kvbench/kvbench/runtime"
)

// RoPE on the device: the inverse frequencies as float32 bits (from theta
// or a scaled RoPE's own), the rotation of queries and keys in one launch.

var (
	_ runtime.ScaledRoPE       = (*Backend)(nil)
	_ runtime.RoPEPairer       = (*Backend)(nil)
	_ runtime.ScaledRoPEPairer = (*Backend)(nil)
)

// invFreq appends the RoPE inverse frequencies, as the CPU computes them,
// as float32 bits.
func invFreq(dst []int32, theta float64, headDim int) []int32 {
	for i := 0; i < headDim/2; i++ {
		dst = append(dst, int32(math.Float32bits(float32(1/math.Pow(theta, float64(2*i)/float64(headDim))))))
	}
	return dst
}

// freqBits appends the inverse frequencies inv as float32 bits.
func freqBits(dst []int32, inv []float32) []int32 {
	for _, f := range inv {
		dst = append(dst, int32(math.Float32bits(f)))
	}
	return dst
}

// attnInvFreq appends the inverse frequencies of a's re-positioned keys:
// a.InvFreq when set (scaled RoPE), else those of a.Theta.
func (b *Backend) attnInvFreq(dst []int32, a *runtime.AttnArgs) []int32 {
	if a.InvFreq != nil {
		return freqBits(dst, a.InvFreq[:a.HeadDim/2])
	}
	return append(dst, b.thetaFreqs(a.Theta, a.HeadDim)...)
}

// thetaFreqs is invFreq of theta and headDim, computed once for the last
// pair asked for (a model's RoPE: every call asks the same).
func (b *Backend) thetaFreqs(theta float64, headDim int) []int32 {
	if b.rope.inv == nil || b.rope.theta != theta || b.rope.hd != headDim {
		b.rope.inv, b.rope.theta, b.rope.hd = invFreq(b.rope.inv[:0], theta, headDim), theta, headDim
	}
	return b.rope.inv
}

// RoPE rotates every head of every row by its position's angles.
func (b *Backend) RoPE(x runtime.Buffer, rows, heads, headDim int, pos []int, theta float64, style runtime.RopeStyle) {
	b.ropeWith(x, rows, heads, headDim, pos, theta, nil, style, nil, 0)
}

// RoPEFreqs rotates every head of every row by its position's angles with
// the inverse frequencies inv [headDim/2] (scaled RoPE).
func (b *Backend) RoPEFreqs(x runtime.Buffer, rows, heads, headDim int, pos []int, inv []float32, style runtime.RopeStyle) {
	b.ropeWith(x, rows, heads, headDim, pos, 0, inv[:headDim/2], style, nil, 0)
}

// RoPE2Freqs rotates the queries q and the keys k in one launch with the
// inverse frequencies inv [headDim/2] (scaled RoPE).
func (b *Backend) RoPE2Freqs(q, k runtime.Buffer, rows, heads, kvHeads, headDim int, pos []int, inv []float32, style runtime.RopeStyle) {
	b.ropeWith(q, rows, heads, headDim, pos, 0, inv[:headDim/2], style, k, kvHeads)
}

// RoPE2 rotates the queries q and the keys k in one launch.
func (b *Backend) RoPE2(q, k runtime.Buffer, rows, heads, kvHeads, headDim int, pos []int, theta float64, style runtime.RopeStyle) {
	b.ropeWith(q, rows, heads, headDim, pos, theta, nil, style, k, kvHeads)
}

// ropeWith runs be_rope with the inverse frequencies inv, or those of theta
// when inv is nil, over x and, when x2 is not nil, x2 [rows,
// heads2*headDim] too.
func (b *Backend) ropeWith(x runtime.Buffer, rows, heads, headDim int, pos []int, theta float64, inv []float32, style runtime.RopeStyle,
	x2 runtime.Buffer, heads2 int) {
	if rows == 0 {
		return
	}
	b.check(x, 0, rows*heads*headDim, "RoPE")
	var p2 Ptr
	if x2 != nil {
		b.check(x2, 0, rows*heads2*headDim, "RoPE")
		p2 = b.f32(x2)
	} else {
		heads2 = 0
	}
	v := b.hInts[:0]
	for _, p := range pos[:rows] {
		v = append(v, int32(p))
	}
	if inv != nil {
		v = freqBits(v, inv)
	} else {
		v = append(v, b.thetaFreqs(theta, headDim)...)
	}
	b.hInts = v
	b.flushKV()
	// The queries and keys of a layer rotate by the same positions: reuse
	// the upload while the arena still holds it.
	p := b.rope.p
	if b.rope.epoch != b.epoch || !slices.Equal(b.rope.v, v) {
		b.reserve(span(int64(len(v)) * 4))
		p = put(b, v)
		b.rope.v, b.rope.p, b.rope.epoch = append(b.rope.v[:0], v...), p, b.epoch
	}
	inter := int32(0)
	if style == runtime.RopeInterleaved {
		inter = 1
	}
	// A prompt's rows: a block a row, its cos and sin table computed once
	// for every head; a few rows: the pairs spread over blocks.
	threads, pairBlocks := 128, ((heads+heads2)*headDim/2+127)/128
	if rows >= 64 {
		threads, pairBlocks = 256, 1
	}
	b.launchAfter("be_rope", Dim3{rows, pairBlocks, 1}, Dim3{threads, 1, 1}, b.f32(x), p, p.Add(int64(rows)*4), int32(heads), int32(headDim), inter,
		p2, int32(heads2))
}
