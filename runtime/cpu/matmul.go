package cpu

import (
	"fmt"

	"github.com/kvbench/kvbench/runtime"
)

// matmulJob splits a matrix product over output columns (weight rows).
type matmulJob struct {
	out, x   []float32
	w        *runtime.Tensor
	rows, in int
}

func (j *matmulJob) run(_, lo, hi int) {
	switch j.w.DType {
	case runtime.BF16:
		matmulBF16(j.out, j.x, j.w.U16, j.rows, j.in, j.w.Shape[0], lo, hi)
	case runtime.F16:
		matmulF16(j.out, j.x, j.w.U16, j.rows, j.in, j.w.Shape[0], lo, hi)
	default:
		matmulF32(j.out, j.x, j.w.F32, j.rows, j.in, j.w.Shape[0], lo, hi)
	}
}

// minMatmulWork is the fewest multiply-adds worth handing to another core.
const minMatmulWork = 1 << 15

// MatMul computes dst[r, o] = sum_i x[r, i] * w[o, i] over every core.
func (b *Backend) MatMul(dst, x, w runtime.Buffer, rows, in, out int) {
	wt, ok := w.(*weight)
	if !ok {
		panic(fmt.Sprintf("cpu: MatMul weight is %T, want a weight from Upload", w))
	}
	if len(wt.t.Shape) != 2 || wt.t.Shape[0] != out || wt.t.Shape[1] != in {
		panic(fmt.Sprintf("cpu: MatMul weight %s has shape %v, want [%d %d]", wt.t.Name, wt.t.Shape, out, in))
	}
	d, xs := vec(dst), vec(x)
	if len(d) < rows*out || len(xs) < rows*in {
		panic(fmt.Sprintf("cpu: MatMul dst %d / x %d values for %d rows of %d -> %d", len(d), len(xs), rows, in, out))
	}
	b.mm = matmulJob{out: d, x: xs, w: wt.t, rows: rows, in: in}
	b.pool.run(&b.mm, out, max(1, minMatmulWork/max(1, rows*in)))
}
