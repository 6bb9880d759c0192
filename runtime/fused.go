package runtime

// The forward pass's fused operations: one FusedMatMul or RoPEPairer call
// where the backend has it, else the Backend calls it stands for.

// matMul3 is MatMul of x by a.W, b.W and c.W into a.Dst, b.Dst and c.Dst.
func matMul3(be Backend, x Buffer, rows, in int, a, b, c MatOut) {
	if f, ok := be.(FusedMatMul); ok {
		f.MatMul3(x, rows, in, a, b, c)
		return
	}
	for _, o := range []MatOut{a, b, c} {
		be.MatMul(o.Dst, x, o.W, rows, in, o.Out)
		if o.Bias != nil {
			be.AddBias(o.Dst, o.Bias, rows, o.Out)
		}
	}
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

// rope2 is RoPE of the queries q and the keys k, in one operation where the
// backend has it.
func rope2(be Backend, q, k Buffer, rows, heads, kvHeads, headDim int, pos []int, theta float64, style RopeStyle) {
	if p, ok := be.(RoPEPairer); ok {
		p.RoPE2(q, k, rows, heads, kvHeads, headDim, pos, theta, style)
		return
	}
	be.RoPE(q, rows, heads, headDim, pos, theta, style)
	be.RoPE(k, rows, kvHeads, headDim, pos, theta, style)
}

// mlp adds the MLP block to x: x += down·(silu(gate·xb) ⊙ up·xb), in one
// call where the backend takes it, else through hb, hb2 [rows, hidden] and
// tmp [rows, dim] (scratch; hb and hb2 hold mlpRows' rows).
func mlp(be Backend, x, tmp, xb, hb, hb2, gate, up, down Buffer, rows, dim, hidden int) {
	if f, ok := be.(FusedMLP); ok && f.MLP(x, xb, gate, up, down, rows, dim, hidden) {
		return
	}
	matMulSwiGLU(be, hb, hb2, xb, gate, up, rows, dim, hidden)
	matMulAdd(be, x, tmp, hb, down, rows, hidden, dim)
}

// rope2Freqs is RoPEFreqs of the queries q and the keys k with the inverse
// frequencies inv, in one operation where the backend has it.
func rope2Freqs(sr ScaledRoPE, q, k Buffer, rows, heads, kvHeads, headDim int, pos []int, inv []float32, style RopeStyle) {
	if p, ok := sr.(ScaledRoPEPairer); ok {
		p.RoPE2Freqs(q, k, rows, heads, kvHeads, headDim, pos, inv, style)
		return
	}
	sr.RoPEFreqs(q, rows, heads, headDim, pos, inv, style)
	sr.RoPEFreqs(k, rows, kvHeads, headDim, pos, inv, style)
}

// mlpRows is the rows the fallback of mlp can see in passes of up to n rows
// of w on be: n, or fewer where the backend's FusedMLP serves the larger
// passes for every layer (a GPU's prompt chunks: the float32 [rows, hidden]
// buffers then hold only the rows a decode step or a small batch needs).
func mlpRows(be Backend, w *deviceWeights, c Config, n int) int {
	f, ok := be.(FusedMLP)
	if !ok || w == nil || len(w.layers) == 0 {
		return n
	}
	from := 0
	for _, l := range w.layers {
		m := f.MLPFrom(l.gate, l.up, l.down, c.Dim, c.Hidden)
		if m <= 0 {
			return n
		}
		from = max(from, m)
	}
	return max(1, min(n, from-1))
}

// normMatMul3 sets each o.Dst = RMSNorm(x)·o.Wᵀ of the products a, b and c,
// in one operation where the backend has it, else through xb [rows, in]
// (RMSNorm's output).
func normMatMul3(be Backend, xb, x, norm Buffer, eps float32, rows, in int, a, b, c MatOut) {
	if f, ok := be.(NormedProducts); ok && f.NormMatMul3(x, norm, eps, rows, in, a, b, c) {
		return
	}
	be.RMSNorm(xb, x, norm, rows, in, eps)
	matMul3(be, xb, rows, in, a, b, c)
}

// normMatMul is normMatMul3 of one product.
func normMatMul(be Backend, xb, x, norm Buffer, eps float32, rows, in int, a MatOut) {
	if f, ok := be.(NormedProducts); ok && f.NormMatMul(x, norm, eps, rows, in, a) {
		return
	}
	be.RMSNorm(xb, x, norm, rows, in, eps)
	be.MatMul(a.Dst, xb, a.W, rows, in, a.Out)
	if a.Bias != nil {
		be.AddBias(a.Dst, a.Bias, rows, a.Out)
	}
}

// normMLP adds the MLP block of RMSNorm(x) to x, in one operation where the
// backend has it, else RMSNorm into xb, then mlp.
func normMLP(be Backend, x, tmp, xb, hb, hb2, norm Buffer, eps float32, gate, up, down Buffer, rows, dim, hidden int) {
	if f, ok := be.(NormedProducts); ok && f.NormMLP(x, norm, eps, gate, up, down, rows, dim, hidden) {
		return
	}
	be.RMSNorm(xb, x, norm, rows, dim, eps)
	mlp(be, x, tmp, xb, hb, hb2, gate, up, down, rows, dim, hidden)
}
