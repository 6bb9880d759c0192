package runtime

// The forward pass's fused matrix products: one FusedMatMul call where the
// backend has it, else the Backend calls it stands for.

// matMul3 is MatMul of x by a.W, b.W and c.W into a.Dst, b.Dst and c.Dst.
func matMul3(be Backend, x Buffer, rows, in int, a, b, c MatOut) {
	if f, ok := be.(FusedMatMul); ok {
		f.MatMul3(x, rows, in, a, b, c)
		return
	}
	be.MatMul(a.Dst, x, a.W, rows, in, a.Out)
	be.MatMul(b.Dst, x, b.W, rows, in, b.Out)
	be.MatMul(c.Dst, x, c.W, rows, in, c.Out)
}

// matMulAdd sets dst += x·wᵀ, with tmp [rows, out] as scratch.
func matMulAdd(be Backend, dst, tmp, x, w Buffer, rows, in, out int) {
	if f, ok := be.(FusedMatMul); ok {
		f.MatMulAdd(dst, tmp, x, w, rows, in, out)
		return
	}
	be.MatMul(tmp, x, w, rows, in, out)
	be.Add(dst, tmp, rows*out)
}

// matMulSwiGLU sets gate = silu(x·wgᵀ) ⊙ x·wuᵀ, with up [rows, out] as
// scratch.
func matMulSwiGLU(be Backend, gate, up, x, wg, wu Buffer, rows, in, out int) {
	if f, ok := be.(FusedMatMul); ok {
		f.MatMulSwiGLU(gate, up, x, wg, wu, rows, in, out)
		return
	}
	be.MatMul(gate, x, wg, rows, in, out)
	be.MatMul(up, x, wu, rows, in, out)
	be.SwiGLU(gate, up, rows*out)
}
