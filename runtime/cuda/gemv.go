package cuda

import (
	"fmt"
	"os"

	"github.com/kvbench/kvbench/runtime"
)

// A decode step's matrix-vector products (gemv.cu): MatMul of one row, and
// runtime.FusedMatMul, where the query, key and value projections are one
// launch, the residual adds and SwiGLU are the products' epilogues.

// mvThreads is the block of the be_mv kernels: 8 warps share a block's
// rows; be_mv_swiglu's block computes swigluRows rows of each matrix.
const (
	mvThreads  = 256
	swigluRows = 4 // MV_ROWS in gemv.cu
)

// mvRowsEnv picks be_mv_r4 or be_mv_r8 (the rows of a block) for the
// products of one matrix: 4 or 8, default 8.
const mvRowsEnv = "KVBENCH_MV_ROWS"

// mvKernelOf reads $KVBENCH_MV_ROWS: the be_mv kernel to launch.
func mvKernelOf() (string, error) {
	switch v := os.Getenv(mvRowsEnv); v {
	case "", "8":
		return "be_mv_r8", nil
	case "4":
		return "be_mv_r4", nil
	default:
		return "", fmt.Errorf("cuda: %s=%q: want 4 or 8", mvRowsEnv, v)
	}
}

// mvRows is the rows a block of the chosen be_mv kernel computes.
func (b *Backend) mvRows() int {
	if b.mvKernel == "be_mv_r4" {
		return 4
	}
	return 8
}

// checkWeight panics (a programmer error) when w holds fewer than out x in
// values.
func checkWeight(w *buf, in, out int) {
	if w.n < in*out {
		panic(fmt.Sprintf("cuda: MatMul weight of %d values, need %d x %d", w.n, out, in))
	}
}

// be_mv's modes.
const (
	mvStore = 0
	mvAdd   = 1
)

// mvOut is one matrix of a be_mv launch: dst [out] = w [out, in] · x
// (+ bias [out] where not nil).
type mvOut struct {
	dst  runtime.Buffer
	w    *buf
	out  int
	bias *buf
}

// mvBiases returns the biases' pointers of ms (0: none) and their one
// element type, or false where two differ in type or one is shorter than
// its product (then the caller adds them apart).
func mvBiases(ms []mvOut) (ps [3]Ptr, wt int32, ok bool) {
	wt = -1
	for i, m := range ms {
		if m.bias == nil {
			continue
		}
		if m.bias.n < m.out || wt >= 0 && wtype(m.bias.dtype) != wt {
			return ps, 0, false
		}
		ps[i], wt = m.bias.p, wtype(m.bias.dtype)
	}
	return ps, max(wt, 0), true
}

var _ runtime.FusedMatMul = (*Backend)(nil)

// mvFits reports whether be_mv can run x [1, in] by the weights ws: in a
// multiple of 8 (16-byte pieces), x 16-byte aligned (a view may not be),
// one weight type.
func (b *Backend) mvFits(x runtime.Buffer, rows, in int, ws ...*buf) bool {
	if rows != 1 || in%8 != 0 || uint64(b.f32(x))%16 != 0 {
		return false
	}
	for _, w := range ws {
		if w.dtype != ws[0].dtype || uint64(w.p)%16 != 0 {
			return false
		}
	}
	return true
}

// mv launches be_mv over up to three matrices of one input (mvFits holds),
// their biases added in its epilogue (mvStore; else, or where mvBiases
// declines, by AddBias after).
func (b *Backend) mv(mode int32, x runtime.Buffer, in int, ms ...mvOut) {
	if len(ms) == 0 || len(ms) > 3 {
		panic(fmt.Sprintf("cuda: be_mv of %d matrices", len(ms)))
	}
	bias, bwt, ok := mvBiases(ms)
	if !ok || mode != mvStore && bias != [3]Ptr{} {
		var plain [3]mvOut
		copy(plain[:], ms)
		for i := range ms {
			plain[i].bias = nil
		}
		b.mv(mode, x, in, plain[:len(ms)]...)
		b.addBiases(1, ms...)
		return
	}
	var args [3]struct {
		d   Ptr
		w   Ptr
		out int32
	}
	blocks, rows := 0, b.mvRows()
	for i, m := range ms {
		checkWeight(m.w, in, m.out)
		b.check(m.dst, 0, m.out, "MatMul")
		args[i].d, args[i].w, args[i].out = b.f32(m.dst), m.w.p, int32(m.out)
		blocks += (m.out + rows - 1) / rows
	}
	b.check(x, 0, in, "MatMul")
	b.launchAfter(b.mvKernel, Dim3{blocks, 1, 1}, Dim3{mvThreads, 1, 1}, b.f32(x), int32(in), wtype(ms[0].w.dtype), mode,
		args[0].d, args[0].w, args[0].out, args[1].d, args[1].w, args[1].out, args[2].d, args[2].w, args[2].out,
		bias[0], bias[1], bias[2], bwt)
}

// addBiases adds each product's bias to its rows rows (AddBias), for the
// paths whose kernels do not.
func (b *Backend) addBiases(rows int, ms ...mvOut) {
	for _, m := range ms {
		if m.bias != nil {
			b.check(m.dst, 0, rows*m.out, "AddBias")
			if m.bias.n < m.out {
				panic(fmt.Sprintf("cuda: AddBias of a bias of %d values to rows of %d", m.bias.n, m.out))
			}
			b.launch("be_add_bias", Dim3{blocks(int64(rows * m.out)), 1, 1}, Dim3{256, 1, 1}, b.f32(m.dst), m.bias.p, wtype(m.bias.dtype),
				int32(rows), int32(m.out))
		}
	}
}

// biasOf is the device buffer of a product's bias (nil: none).
func (b *Backend) biasOf(o runtime.MatOut) *buf {
	if o.Bias == nil {
		return nil
	}
	return b.dev(o.Bias)
}

// MatMul3 runs the three products of one row as one launch (else one
// MatMul each). A one-row step's are left pending (qkvCall): the RoPE of
// its queries and keys may take them into its launch.
func (b *Backend) MatMul3(x runtime.Buffer, rows, in int, p, q, r runtime.MatOut) {
	wp, wq, wr := b.dev(p.W), b.dev(q.W), b.dev(r.W)
	ms := [3]mvOut{{p.Dst, wp, p.Out, b.biasOf(p)}, {q.Dst, wq, q.Out, b.biasOf(q)}, {r.Dst, wr, r.Out, b.biasOf(r)}}
	if b.mvFits(x, rows, in, wp, wq, wr) {
		if b.InterleaveQK() && p.Out%8 == 0 && q.Out == r.Out && q.Out%8 == 0 { // be_mv_qkv_rope may take them
			b.flushKV() // what came before runs before
			b.qkvAt = qkvCall{pending: true, x: x, in: in, ms: ms}
			return
		}
		b.mv(mvStore, x, in, ms[:]...)
		return
	}
	if rows > 0 && b.gemmFits(rows) { // x rounded for the GEMMs once
		b.checkGemm(x, rows, in, p.Dst, wp, p.Out)
		b.checkGemm(x, rows, in, q.Dst, wq, q.Out)
		b.checkGemm(x, rows, in, r.Dst, wr, r.Out)
		b.gemmNT(x, rows, in, gemmOut{dst: p.Dst, w: wp, out: p.Out}, gemmOut{dst: q.Dst, w: wq, out: q.Out}, gemmOut{dst: r.Dst, w: wr, out: r.Out})
		b.addBiases(rows, ms[:]...)
		return
	}
	b.MatMul(p.Dst, x, p.W, rows, in, p.Out)
	b.MatMul(q.Dst, x, q.W, rows, in, q.Out)
	b.MatMul(r.Dst, x, r.W, rows, in, r.Out)
	b.addBiases(rows, ms[:]...)
}

// qkvCall is a one-row step's query, key and value products (MatMul3 by
// be_mv), left pending: the RoPE of that row's queries and keys in these
// buffers takes them (takeQKV; in interleaved order, InterleaveQK), and
// be_mv_qkv_rope then computes the products, the rotation and the keys'
// and values' stores in one launch;
// any other operation first launches them as they are (launchQKV, from
// flushKV or a wait). KVBENCH_MV_ROPE=off (or KVBENCH_ROPE_KV=off): never.
type qkvCall struct {
	pending bool
	x       runtime.Buffer
	in      int
	ms      [3]mvOut // queries, keys, values
}

// launchQKV launches the pending products by be_mv.
func (b *Backend) launchQKV() {
	c := b.qkvAt
	b.qkvAt.pending = false
	b.mv(mvStore, c.x, c.in, c.ms[:]...)
}

// takeQKV reports whether the pending products are those of the queries q
// [heads*hd] and keys k [kvHeads*hd] of one row (their values too) with a
// head dimension be_mv_qkv_rope serves (a multiple of 8), biases it takes
// (mvBiases: none, or of one type) and no queued KV
// copy reading them (it would run before them); if so they are no longer
// pending: the caller launches them with the rotation.
func (b *Backend) takeQKV(q, k runtime.Buffer, heads, kvHeads, hd int) (qkvCall, bool) {
	c := b.qkvAt
	if !c.pending || hd%8 != 0 || c.ms[0].dst != q || c.ms[1].dst != k ||
		c.ms[0].out != heads*hd || c.ms[1].out != kvHeads*hd || c.ms[2].out != kvHeads*hd {
		return qkvCall{}, false
	}
	if _, _, ok := mvBiases(c.ms[:]); !ok {
		return qkvCall{}, false
	}
	for _, m := range c.ms {
		lo, hi := uint64(b.f32(m.dst)), uint64(b.f32(m.dst))+uint64(m.out)*4
		for i := 0; i < len(b.kv.ops); i += 5 {
			if o := b.kv.ops[i:]; o[2] >= lo && o[2] < hi || o[3] >= lo && o[3] < hi {
				return qkvCall{}, false
			}
		}
	}
	b.qkvAt.pending = false
	return c, true
}

// checkGemm checks one product dst = x w^T of rows rows: the weight's
// shape and the buffers' lengths (MatMul's checks, gemmNT's products').
func (b *Backend) checkGemm(x runtime.Buffer, rows, in int, dst runtime.Buffer, w *buf, out int) {
	checkWeight(w, in, out)
	b.check(dst, 0, rows*out, "MatMul")
	b.check(x, 0, rows*in, "MatMul")
}

// MatMulAdd adds the product to dst in the product's kernel for one row.
func (b *Backend) MatMulAdd(dst, tmp, x, w runtime.Buffer, rows, in, out int) {
	if wd := b.dev(w); b.mvFits(x, rows, in, wd) {
		b.mv(mvAdd, x, in, mvOut{dst, wd, out, nil})
		return
	}
	if wd := b.dev(w); rows > 0 && b.gemmFits(rows) { // added in the GEMM's epilogue
		b.checkGemm(x, rows, in, dst, wd, out)
		b.gemmNT(x, rows, in, gemmOut{dst: dst, w: wd, out: out, add: true})
		return
	}
	b.MatMul(tmp, x, w, rows, in, out)
	b.Add(dst, tmp, rows*out)
}

// MatMulSwiGLU computes both products and SwiGLU in one kernel for one row.
func (b *Backend) MatMulSwiGLU(gate, up, x, wg, wu runtime.Buffer, rows, in, out int) {
	g, u := b.dev(wg), b.dev(wu)
	if rows > 0 && b.gemmFits(rows) { // x rounded for both GEMMs once
		b.checkGemm(x, rows, in, gate, g, out)
		b.checkGemm(x, rows, in, up, u, out)
		b.gemmNT(x, rows, in, gemmOut{dst: gate, w: g, out: out}, gemmOut{dst: up, w: u, out: out})
		b.SwiGLU(gate, up, rows*out)
		return
	}
	if !b.mvFits(x, rows, in, g, u) {
		b.MatMul(gate, x, wg, rows, in, out)
		b.MatMul(up, x, wu, rows, in, out)
		b.SwiGLU(gate, up, rows*out)
		return
	}
	checkWeight(g, in, out)
	checkWeight(u, in, out)
	b.check(gate, 0, out, "MatMulSwiGLU")
	b.check(x, 0, in, "MatMulSwiGLU")
	b.launchAfter("be_mv_swiglu", Dim3{(out + swigluRows - 1) / swigluRows, 1, 1}, Dim3{mvThreads, 1, 1},
		b.f32(x), int32(in), wtype(g.dtype), b.f32(gate), g.p, u.p, int32(out))
}

// MLP adds a prompt's MLP block to x (runtime.FusedMLP): x += down ·
// (silu(gate · xb) ⊙ up · xb), for rows the GEMMs take and bf16 weights
// under bf16 compute. The gate and up products come out of the GEMMs in
// bf16, SwiGLU rounds its result to bf16 in place, and that is the down
// GEMM's input as it stands: against MatMulSwiGLU then MatMulAdd, no
// float32 [rows, hidden] is written or read (about 1.4 GB less traffic a
// layer for 4,096 rows of the 8B shape). Elsewhere it declines (false).
func (b *Backend) MLP(x, xb, gate, up, down runtime.Buffer, rows, dim, hidden int) bool {
	g, u, d, ok := b.mlpWeights(x, gate, up, down, rows, dim, hidden)
	if !ok {
		return false
	}
	b.check(xb, 0, rows*dim, "MLP")
	m := int64(rows) * int64(dim)
	nx := b.grow(&b.narrow, m*2)
	b.launch("be_narrow", Dim3{blocks(m), 1, 1}, Dim3{256, 1, 1}, nx, b.f32(xb), wtype(runtime.BF16), m)
	b.mlpFrom(x, nx, g, u, d, rows, dim, hidden)
	return true
}

// mlpWeights is the MLP's weights where MLP serves rows rows of x (false:
// it declines), checked against x [rows, dim], after the pending KV copies.
func (b *Backend) mlpWeights(x, gate, up, down runtime.Buffer, rows, dim, hidden int) (g, u, d *buf, ok bool) {
	if from := b.MLPFrom(gate, up, down, dim, hidden); from == 0 || rows < from {
		return nil, nil, nil, false
	}
	g, u, d = b.dev(gate), b.dev(up), b.dev(down)
	checkWeight(g, dim, hidden)
	checkWeight(u, dim, hidden)
	checkWeight(d, hidden, dim)
	b.check(x, 0, rows*dim, "MLP")
	b.flushKV()
	return g, u, d, true
}

// mlpFrom is MLP's products from its input rounded to bf16 (nx [rows,
// dim]): gate and up to bf16, SwiGLU in place, down added to x.
func (b *Backend) mlpFrom(x runtime.Buffer, nx Ptr, g, u, d *buf, rows, dim, hidden int) {
	n := int64(rows) * int64(hidden)
	h := b.grow(&b.mlp, n*4) // gate's products, then up's
	hu := h.Add(n * 2)
	must(b.blas.GemmNTNarrow(h, nx, g.p, GemmBF16, rows, dim, hidden))
	must(b.blas.GemmNTNarrow(hu, nx, u.p, GemmBF16, rows, dim, hidden))
	b.launch("be_swiglu_bf16", Dim3{blocks(n / 8), 1, 1}, Dim3{256, 1, 1}, h, hu, n)
	must(b.blas.GemmNTAdd(b.f32(x), h, d.p, GemmBF16, rows, hidden, dim))
}

// MLPFrom is the fewest rows MLP serves for these weights
// (runtime.FusedMLP): the GEMMs' least, for bf16 weights under bf16
// compute and a hidden width of a multiple of 8; else 0.
func (b *Backend) MLPFrom(gate, up, down runtime.Buffer, dim, hidden int) int {
	g, u, d := b.dev(gate), b.dev(up), b.dev(down)
	if b.blas == nil || b.gemm == "f32" || hidden%8 != 0 ||
		g.dtype != runtime.BF16 || u.dtype != runtime.BF16 || d.dtype != runtime.BF16 {
		return 0
	}
	return max(b.gemmRows, 1)
}
