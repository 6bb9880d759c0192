//go:build amd64

package cpu

import "unsafe"

// Assembly kernels (kernels_amd64.s). tile4xR<T> computes R rows of x
// against 4 consecutive weight rows; tile1x1<T> is a single dot product.
// Strides are in elements; nothing is bounds-checked in assembly, so every
// caller below validates the slices first (matmulFits).

//go:noescape
func tile4x1F32(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)

//go:noescape
func tile4x2F32(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)

//go:noescape
func tile4x3F32(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)

//go:noescape
func tile1x1F32(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)

//go:noescape
func tile4x1BF16(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)

//go:noescape
func tile4x2BF16(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)

//go:noescape
func tile4x3BF16(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)

//go:noescape
func tile1x1BF16(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)

//go:noescape
func tile4x1F16(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)

//go:noescape
func tile4x2F16(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)

//go:noescape
func tile4x3F16(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)

//go:noescape
func tile1x1F16(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)

//go:noescape
func axpyAVX2(y *float32, a float32, x *float32, n int)

//go:noescape
func dotsAVX2(q *float32, k *float32, ks int, n int, cnt int, out *float32)

//go:noescape
func axpysAVX2(y *float32, e *float32, x *float32, xs int, n int, cnt int)

// Weight element types of the tile kernels.
const (
	wF32 = iota
	wBF16
	wF16
)

// tile4 runs tile4xR of weight type kind (R in 1..3). Direct calls (not
// function values) keep the noescape annotations effective.
func tile4(kind, R int, x *float32, xs int, w unsafe.Pointer, ws, n int, out *float32, os int) {
	switch kind {
	case wF32:
		switch R {
		case 1:
			tile4x1F32(x, xs, w, ws, n, out, os)
		case 2:
			tile4x2F32(x, xs, w, ws, n, out, os)
		default:
			tile4x3F32(x, xs, w, ws, n, out, os)
		}
	case wBF16:
		switch R {
		case 1:
			tile4x1BF16(x, xs, w, ws, n, out, os)
		case 2:
			tile4x2BF16(x, xs, w, ws, n, out, os)
		default:
			tile4x3BF16(x, xs, w, ws, n, out, os)
		}
	default:
		switch R {
		case 1:
			tile4x1F16(x, xs, w, ws, n, out, os)
		case 2:
			tile4x2F16(x, xs, w, ws, n, out, os)
		default:
			tile4x3F16(x, xs, w, ws, n, out, os)
		}
	}
}

func tile1(kind int, x *float32, w unsafe.Pointer, n int, out *float32) {
	switch kind {
	case wF32:
		tile1x1F32(x, 0, w, 0, n, out, 0)
	case wBF16:
		tile1x1BF16(x, 0, w, 0, n, out, 0)
	default:
		tile1x1F16(x, 0, w, 0, n, out, 0)
	}
}

// xBlockBytes bounds the x rows one pass over the weights works on in
// prefill: the block stays in L1/L2 while every group of 4 weight rows is
// converted once and applied to all of its rows, 3 rows per tile. (On a
// Zen 5 core the 4x3 tile ran at ~117 GFLOP/s against ~99 for 4x2 and ~70
// for 4x1 at rows=64, 384->1024 bf16; the block size mattered little there,
// 12 KiB to unblocked all within a few percent, thanks to a fast L2.)
var xBlockBytes = 32 << 10

// matmulTiled is the AVX2 matmul driver; the caller has checked the
// arguments with matmulFits. w points at the weight matrix, esz bytes per
// element. Weight rows are taken 4 at a time; a last group shorter than 4
// is computed as the 4 rows ending at o1 (recomputing up to 3 outputs with
// identical results), so only ranges narrower than 4 use the 1x1 kernel.
func matmulTiled(kind int, esz uintptr, out, x []float32, w unsafe.Pointer, rows, in, outStride, o0, o1 int) {
	wrow := uintptr(in) * esz
	if o1-o0 < 4 {
		for r := 0; r < rows; r++ {
			for o := o0; o < o1; o++ {
				tile1(kind, &x[r*in], unsafe.Add(w, uintptr(o)*wrow), in, &out[r*outStride+o])
			}
		}
		return
	}
	if rows == 1 {
		for o := o0; o < o1; o += 4 {
			if o > o1-4 {
				o = o1 - 4
			}
			tile4(kind, 1, &x[0], in, unsafe.Add(w, uintptr(o)*wrow), in, in, &out[o], outStride)
		}
		return
	}
	rb := xBlockBytes / (4 * in) / 3 * 3
	if rb < 3 {
		rb = 3
	}
	for r0 := 0; r0 < rows; r0 += rb {
		r1 := min(r0+rb, rows)
		for o := o0; o < o1; o += 4 {
			if o > o1-4 {
				o = o1 - 4
			}
			wp := unsafe.Add(w, uintptr(o)*wrow)
			r := r0
			for ; r+3 <= r1; r += 3 {
				tile4(kind, 3, &x[r*in], in, wp, in, in, &out[r*outStride+o], outStride)
			}
			if r < r1 {
				tile4(kind, r1-r, &x[r*in], in, wp, in, in, &out[r*outStride+o], outStride)
			}
		}
	}
}

func matmulF32AVX2(out, x, w []float32, rows, in, outStride, o0, o1 int) {
	matmulTiled(wF32, 4, out, x, unsafe.Pointer(&w[0]), rows, in, outStride, o0, o1)
}

func matmulBF16AVX2(out, x []float32, w []uint16, rows, in, outStride, o0, o1 int) {
	matmulTiled(wBF16, 2, out, x, unsafe.Pointer(&w[0]), rows, in, outStride, o0, o1)
}

func matmulF16AVX2(out, x []float32, w []uint16, rows, in, outStride, o0, o1 int) {
	matmulTiled(wF16, 2, out, x, unsafe.Pointer(&w[0]), rows, in, outStride, o0, o1)
}

// dotF32AVX2 needs 0 < len(a) <= len(b).
func dotF32AVX2(a, b []float32) float32 {
	var s float32
	tile1x1F32(&a[0], 0, unsafe.Pointer(&b[0]), 0, len(a), &s, 0)
	return s
}

// axpyF32AVX2 needs 0 < len(y) <= len(x).
func axpyF32AVX2(y []float32, a float32, x []float32) {
	axpyAVX2(&y[0], a, &x[0], len(y))
}

// dotRowsAVX2 needs rowsFit(len(out), len(q), len(k), ks) and len(q) a
// multiple of 32.
func dotRowsAVX2(out, q, k []float32, ks int) {
	dotsAVX2(&q[0], &k[0], ks, len(q), len(out), &out[0])
}

// axpyRowsAVX2 needs rowsFit(len(e), len(y), len(x), xs) and len(y) a
// multiple of 32.
func axpyRowsAVX2(y, e, x []float32, xs int) {
	axpysAVX2(&y[0], &e[0], &x[0], xs, len(y), len(e))
}
