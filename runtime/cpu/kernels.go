package cpu

import (
	"math"

	"github.com/x448/float16"
)

// The inner kernels of the CPU backend. Each has a portable Go version
// (suffix Go) that is the reference every faster version is tested against.
//
// matmul kernels compute, for r in [0,rows) and o in [o0,o1):
//
//	out[r*outStride+o] = sum_i x[r*in+i] * w[o*in+i]
//
// with w stored [out, in] row-major as float32, bfloat16 or float16 bits.
//
// On amd64 with AVX2+FMA (and F16C for float16) the dispatchers below run
// the assembly kernels of kernels_amd64.s; elsewhere, or when useAVX2 is
// false, the Go versions. They do not allocate.

func matmulF32(out, x, w []float32, rows, in, outStride, o0, o1 int) {
	if useAVX2 && matmulFits(len(out), len(x), len(w), rows, in, outStride, o0, o1) {
		matmulF32AVX2(out, x, w, rows, in, outStride, o0, o1)
		return
	}
	matmulF32Go(out, x, w, rows, in, outStride, o0, o1)
}

func matmulBF16(out, x []float32, w []uint16, rows, in, outStride, o0, o1 int) {
	if useAVX2 && matmulFits(len(out), len(x), len(w), rows, in, outStride, o0, o1) {
		matmulBF16AVX2(out, x, w, rows, in, outStride, o0, o1)
		return
	}
	matmulBF16Go(out, x, w, rows, in, outStride, o0, o1)
}

func matmulF16(out, x []float32, w []uint16, rows, in, outStride, o0, o1 int) {
	if useAVX2 && hasF16C && matmulFits(len(out), len(x), len(w), rows, in, outStride, o0, o1) {
		matmulF16AVX2(out, x, w, rows, in, outStride, o0, o1)
		return
	}
	matmulF16Go(out, x, w, rows, in, outStride, o0, o1)
}

// matmulFits reports whether the unchecked fast kernels may run: a
// non-empty problem whose every access is in bounds, with output rows that
// do not overlap. Anything else goes to the Go version, which does nothing
// for an empty range and panics on a bad index exactly as before.
func matmulFits(lenOut, lenX, lenW, rows, in, outStride, o0, o1 int) bool {
	const lim = math.MaxInt32 // keeps the products below from overflowing (64-bit)
	if rows <= 0 || in <= 0 || o0 < 0 || o0 >= o1 ||
		rows >= lim || in >= lim || o1 >= lim || outStride >= lim {
		return false
	}
	if rows > 1 && outStride < o1 {
		return false
	}
	return o1*in <= lenW && rows*in <= lenX && (rows-1)*outStride+o1 <= lenOut
}

// dotRows sets out[s] = q·k[s*ks:] for every s < len(out): the scores of a
// query against consecutive keys ks elements apart (a page's rows). Where
// the rows are whole multiples of 32 elements the assembly forms them in
// one call, eight rows at a time, each sum a chain of fused multiply-adds
// a lane (dotsAVX2: a row's sum does not depend on the rows beside it);
// elsewhere as dotF32.
func dotRows(out, q, k []float32, ks int) {
	if useAVX2 && len(q)%32 == 0 && rowsFit(len(out), len(q), len(k), ks) {
		dotRowsAVX2(out, q, k, ks)
		return
	}
	dotRowsGo(out, q, k, ks)
}

// axpyRows adds e[s] * x[s*xs:] to y for every s < len(e) with e[s] != 0,
// in order: a query's weighted sum of a page's value rows. Where the rows
// are whole multiples of 32 elements the assembly keeps y in registers
// over all of them, bit for bit as axpyF32 adds them.
func axpyRows(y, e, x []float32, xs int) {
	if useAVX2 && len(y)%32 == 0 && rowsFit(len(e), len(y), len(x), xs) {
		axpyRowsAVX2(y, e, x, xs)
		return
	}
	axpyRowsGo(y, e, x, xs)
}

// rowsFit reports whether cnt rows of n elements, stride elements apart,
// lie within a slice of length lenX: a non-empty problem the unchecked
// kernels may run.
func rowsFit(cnt, n, lenX, stride int) bool {
	const lim = math.MaxInt32
	return cnt > 0 && n > 0 && stride >= n && cnt < lim && stride < lim && (cnt-1)*stride+n <= lenX
}

func dotRowsGo(out, q, k []float32, ks int) {
	for s := range out {
		out[s] = dotF32(q, k[s*ks:])
	}
}

func axpyRowsGo(y, e, x []float32, xs int) {
	for s, w := range e {
		if w != 0 {
			axpyF32(y, w, x[s*xs:])
		}
	}
}

// dotF32 returns sum_i a[i]*b[i] over len(a) elements (len(b) >= len(a)).
func dotF32(a, b []float32) float32 {
	if useAVX2 && len(a) > 0 && len(b) >= len(a) {
		return dotF32AVX2(a, b)
	}
	return dotF32Go(a, b)
}

// axpyF32 does y[i] += a*x[i] over len(y) elements (len(x) >= len(y)).
func axpyF32(y []float32, a float32, x []float32) {
	if useAVX2 && len(y) > 0 && len(x) >= len(y) {
		axpyF32AVX2(y, a, x)
		return
	}
	axpyF32Go(y, a, x)
}

func dotF32Go(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func axpyF32Go(y []float32, a float32, x []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * x[i]
	}
}

func matmulF32Go(out, x, w []float32, rows, in, outStride, o0, o1 int) {
	for o := o0; o < o1; o++ {
		wr := w[o*in : (o+1)*in]
		for r := 0; r < rows; r++ {
			out[r*outStride+o] = dotF32Go(x[r*in:(r+1)*in], wr)
		}
	}
}

func dotBF16Go(x []float32, w []uint16) float32 {
	w = w[:len(x)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s0 += x[i] * math.Float32frombits(uint32(w[i])<<16)
		s1 += x[i+1] * math.Float32frombits(uint32(w[i+1])<<16)
		s2 += x[i+2] * math.Float32frombits(uint32(w[i+2])<<16)
		s3 += x[i+3] * math.Float32frombits(uint32(w[i+3])<<16)
	}
	for ; i < len(x); i++ {
		s0 += x[i] * math.Float32frombits(uint32(w[i])<<16)
	}
	return (s0 + s1) + (s2 + s3)
}

func matmulBF16Go(out, x []float32, w []uint16, rows, in, outStride, o0, o1 int) {
	for o := o0; o < o1; o++ {
		wr := w[o*in : (o+1)*in]
		for r := 0; r < rows; r++ {
			out[r*outStride+o] = dotBF16Go(x[r*in:(r+1)*in], wr)
		}
	}
}

func matmulF16Go(out, x []float32, w []uint16, rows, in, outStride, o0, o1 int) {
	for o := o0; o < o1; o++ {
		wr := w[o*in : (o+1)*in]
		for r := 0; r < rows; r++ {
			xr := x[r*in : (r+1)*in]
			var s float32
			for i, v := range xr {
				s += v * float16.Frombits(wr[i]).Float32()
			}
			out[r*outStride+o] = s
		}
	}
}
