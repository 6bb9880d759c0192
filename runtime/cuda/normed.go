package cuda

import (
	"fmt"

	"github.com/kvbench/kvbench/runtime"
)

// A prompt's RMSNorms written in their GEMMs' input type
// (runtime.NormedProducts): be_rmsnorm_narrow rounds the norm's float32
// values as be_narrow would and stores only those, so the products see the
// same bits as after RMSNorm and the GEMMs' own rounding, without the
// float32 row between them (for 8,192 rows of the 8B shape, 134 MB written
// and read again and a launch, twice a layer).

var _ runtime.NormedProducts = (*Backend)(nil)

// narrowType is the 16-bit input type of the GEMMs of rows rows by the
// weights ws, or false where they do not take one (fewer rows than the
// GEMMs', float32 compute or weights, mixed types).
func (b *Backend) narrowType(rows int, ws ...*buf) (runtime.DType, bool) {
	if rows <= 0 || !b.gemmFits(rows) || b.gemm == "f32" {
		return 0, false
	}
	t := ws[0].dtype
	if t != runtime.BF16 && t != runtime.F16 {
		return 0, false
	}
	for _, w := range ws {
		if w.dtype != t {
			return 0, false
		}
	}
	return t, true
}

// normNarrow writes RMSNorm(x) ([rows, dim]; norm's weights, eps) rounded to
// t into the narrowed-input buffer and returns it.
func (b *Backend) normNarrow(x, norm runtime.Buffer, rows, dim int, eps float32, t runtime.DType) Ptr {
	nd := b.dev(norm)
	if nd.n < dim {
		panic(fmt.Sprintf("cuda: RMSNorm weight of %d values for rows of %d", nd.n, dim))
	}
	b.check(x, 0, rows*dim, "RMSNorm")
	nx := b.grow(&b.narrow, int64(rows)*int64(dim)*2)
	b.launchAfter("be_rmsnorm_narrow", Dim3{rows, 1, 1}, Dim3{b.normThreads(dim), 1, 1}, nx, b.f32(x), nd.p, wtype(nd.dtype), int32(dim), eps,
		wtype(t))
	return nx
}

// gemmFrom runs the products of an input already rounded to t (nx, [rows,
// in]) on cuBLAS.
func (b *Backend) gemmFrom(nx Ptr, t runtime.DType, rows, in int, outs ...gemmOut) {
	gt := GemmBF16
	if t == runtime.F16 {
		gt = GemmF16
	}
	for _, o := range outs {
		gemm := b.blas.GemmNT
		if o.add {
			gemm = b.blas.GemmNTAdd
		}
		must(gemm(b.f32(o.dst), nx, o.w.p, gt, rows, in, o.out))
	}
}

// NormMatMul3 is the norm and the three products of a prompt's rows
// (runtime.NormedProducts); it declines where the GEMMs take no 16-bit
// input (narrowType).
func (b *Backend) NormMatMul3(x, norm runtime.Buffer, eps float32, rows, in int, p, q, r runtime.MatOut) bool {
	wp, wq, wr := b.dev(p.W), b.dev(q.W), b.dev(r.W)
	t, ok := b.narrowType(rows, wp, wq, wr)
	if !ok {
		return false
	}
	b.checkGemm(x, rows, in, p.Dst, wp, p.Out)
	b.checkGemm(x, rows, in, q.Dst, wq, q.Out)
	b.checkGemm(x, rows, in, r.Dst, wr, r.Out)
	nx := b.normNarrow(x, norm, rows, in, eps, t)
	b.gemmFrom(nx, t, rows, in, gemmOut{dst: p.Dst, w: wp, out: p.Out}, gemmOut{dst: q.Dst, w: wq, out: q.Out}, gemmOut{dst: r.Dst, w: wr, out: r.Out})
	b.addBiases(rows, mvOut{p.Dst, wp, p.Out, b.biasOf(p)}, mvOut{q.Dst, wq, q.Out, b.biasOf(q)}, mvOut{r.Dst, wr, r.Out, b.biasOf(r)})
	return true
}

// NormMatMul is NormMatMul3 of one product (the output head of a pass
// that keeps every row's logits).
func (b *Backend) NormMatMul(x, norm runtime.Buffer, eps float32, rows, in int, p runtime.MatOut) bool {
	wp := b.dev(p.W)
	t, ok := b.narrowType(rows, wp)
	if !ok {
		return false
	}
	b.checkGemm(x, rows, in, p.Dst, wp, p.Out)
	nx := b.normNarrow(x, norm, rows, in, eps, t)
	b.gemmFrom(nx, t, rows, in, gemmOut{dst: p.Dst, w: wp, out: p.Out})
	b.addBiases(rows, mvOut{p.Dst, wp, p.Out, b.biasOf(p)})
	return true
}

// NormMLP is the norm and the fused MLP of a prompt's rows
// (runtime.NormedProducts), where MLP serves them.
func (b *Backend) NormMLP(x, norm runtime.Buffer, eps float32, gate, up, down runtime.Buffer, rows, dim, hidden int) bool {
	g, u, d, ok := b.mlpWeights(x, gate, up, down, rows, dim, hidden)
	if !ok {
		return false
	}
	b.mlpFrom(x, b.normNarrow(x, norm, rows, dim, eps, runtime.BF16), g, u, d, rows, dim, hidden)
	return true
}
