package cuda

import (
	"fmt"
	"os"
	"strconv"

	"github.com/kvbench/kvbench/runtime"
)

// The forward pass's operations (runtime.Backend) other than attention, KV
// pages and RoPE: embedding, norms, products (cuBLAS GEMMs for prompt rows,
// be_mv for one row: gemv.go), bias, SwiGLU and residual adds.

// blocks is the grid of an elementwise kernel of 256 threads a block over n
// values: at most 4,096 blocks (the kernels loop over the rest).
func blocks(n int64) int { return int(min((n+255)/256, 4096)) }

// Embed writes the table rows of tokens into dst.
func (b *Backend) Embed(dst, table runtime.Buffer, tokens []int, dim int) {
	if len(tokens) == 0 {
		return
	}
	t := b.dev(table)
	d := b.check(dst, 0, len(tokens)*dim, "Embed")
	ids := b.hInts[:0]
	for _, tok := range tokens {
		if tok < 0 || (tok+1)*dim > t.n {
			panic(fmt.Sprintf("cuda: Embed token %d outside a table of %d values of width %d", tok, t.n, dim))
		}
		ids = append(ids, int32(tok))
	}
	b.hInts = ids
	b.flushKV()
	b.reserve(span(int64(len(ids)) * 4))
	p := put(b, ids)
	b.launch("be_embed", Dim3{len(tokens), 1, 1}, Dim3{256, 1, 1}, d.p, t.p, wtype(t.dtype), p, int32(dim))
}

// RMSNorm normalises each row by its root mean square and scales by w.
func (b *Backend) RMSNorm(dst, x, w runtime.Buffer, rows, dim int, eps float32) {
	wd := b.dev(w)
	b.check(dst, 0, rows*dim, "RMSNorm")
	b.check(x, 0, rows*dim, "RMSNorm")
	b.launchAfter("be_rmsnorm", Dim3{rows, 1, 1}, Dim3{b.normThreads(dim), 1, 1}, b.f32(dst), b.f32(x), wd.p, wtype(wd.dtype), int32(dim), eps)
}

// normThreads is the block of the RMSNorm kernels for rows of dim values:
// about a float4 a thread, so that a one-row norm (a decode step) is one
// load's latency, not a chain of them; at most $KVBENCH_NORM_THREADS
// (b.normMax: 1024 by default; 256 or 512 to compare).
func (b *Backend) normThreads(dim int) int { return min(b.normMax, max(32, (dim/4+31)&^31)) }

// normMaxOf reads $KVBENCH_NORM_THREADS: the most threads a block of the
// RMSNorm kernels has (a multiple of 32 from 32 to 1024; default 1024).
func normMaxOf() (int, error) {
	v := os.Getenv("KVBENCH_NORM_THREADS")
	if v == "" {
		return 1024, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 32 || n > 1024 || n%32 != 0 {
		return 0, fmt.Errorf("cuda: KVBENCH_NORM_THREADS=%q: want a multiple of 32 from 32 to 1024", v)
	}
	return n, nil
}

// MatMul computes dst[r, o] = sum_i x[r, i] * w[o, i].
func (b *Backend) MatMul(dst, x, w runtime.Buffer, rows, in, out int) {
	wd := b.dev(w)
	b.checkGemm(x, rows, in, dst, wd, out)
	if rows == 0 {
		return
	}
	if b.gemmFits(rows) {
		b.gemmNT(x, rows, in, gemmOut{dst: dst, w: wd, out: out})
		return
	}
	if b.mvFits(x, rows, in, wd) {
		b.mv(mvStore, x, in, mvOut{dst, wd, out, nil})
		return
	}
	b.launch("be_matmul", Dim3{(out + 7) / 8, (rows + 7) / 8, 1}, Dim3{256, 1, 1},
		b.f32(dst), b.f32(x), wd.p, wtype(wd.dtype), int32(rows), int32(in), int32(out))
}

// gemmOut is one product of gemmNT: dst [rows, out] (+)= x w^T.
type gemmOut struct {
	dst runtime.Buffer
	w   *buf
	out int
	add bool // add the product to dst (the GEMM's beta 1) instead of storing it
}

// gemmNT runs products of one input x on cuBLAS: float32 weights directly;
// bf16/f16 weights widened to float32 (gemm f32: the float32 result of
// be_matmul, to rounding order) or with the activations rounded to the
// weight's type (gemm bf16: tensor cores, bf16 in, float32 accumulate),
// once for every product whose weights share that type.
func (b *Backend) gemmNT(x runtime.Buffer, rows, in int, outs ...gemmOut) {
	b.flushKV()
	var nx Ptr // x rounded to narrowT (when narrowed), for the products after the first of that type
	var narrowT runtime.DType
	narrowed := false
	for _, o := range outs {
		w := o.w
		n := int64(in) * int64(o.out)
		gemm := b.blas.GemmNT
		if o.add {
			gemm = b.blas.GemmNTAdd
		}
		switch {
		case w.dtype == runtime.F32:
			must(gemm(b.f32(o.dst), b.f32(x), w.p, GemmF32, rows, in, o.out))
		case b.gemm == "f32":
			wide := b.grow(&b.wide, n*4)
			b.launch("be_widen", Dim3{blocks(n), 1, 1}, Dim3{256, 1, 1}, wide, w.p, wtype(w.dtype), n)
			must(gemm(b.f32(o.dst), b.f32(x), wide, GemmF32, rows, in, o.out))
		default:
			if !narrowed || w.dtype != narrowT {
				m := int64(rows) * int64(in)
				nx = b.grow(&b.narrow, m*2)
				b.launch("be_narrow", Dim3{blocks(m), 1, 1}, Dim3{256, 1, 1}, nx, b.f32(x), wtype(w.dtype), m)
				narrowT, narrowed = w.dtype, true
			}
			b.gemmFrom(nx, w.dtype, rows, in, o)
		}
	}
}

// gemmFits says whether products of rows rows go to cuBLAS.
func (b *Backend) gemmFits(rows int) bool { return rows >= b.gemmRows && b.blas != nil }

// AddBias adds bias to every row of x.
func (b *Backend) AddBias(x, bias runtime.Buffer, rows, n int) {
	bd := b.dev(bias)
	b.check(x, 0, rows*n, "AddBias")
	b.launch("be_add_bias", Dim3{blocks(int64(rows * n)), 1, 1}, Dim3{256, 1, 1}, b.f32(x), bd.p, wtype(bd.dtype), int32(rows), int32(n))
}

// SwiGLU sets gate = silu(gate) * up.
func (b *Backend) SwiGLU(gate, up runtime.Buffer, n int) {
	b.check(gate, 0, n, "SwiGLU")
	b.check(up, 0, n, "SwiGLU")
	b.launch("be_swiglu", Dim3{blocks(int64(n)), 1, 1}, Dim3{256, 1, 1}, b.f32(gate), b.f32(up), int64(n))
}

// Add sets dst += x.
func (b *Backend) Add(dst, x runtime.Buffer, n int) {
	b.check(dst, 0, n, "Add")
	b.check(x, 0, n, "Add")
	b.launch("be_add", Dim3{blocks(int64(n)), 1, 1}, Dim3{256, 1, 1}, b.f32(dst), b.f32(x), int64(n))
}
