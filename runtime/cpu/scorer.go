package cpu

import (
	"github.com/kvbench/kvbench/runtime"
)

// QK writes the scaled q·k of query row r, head h against every token of its
// KV head, -Inf where the causal mask or the model's window hides the token.
func (b *Backend) QK(a *runtime.AttnArgs, r, h int, out []float32) {
	hd := a.HeadDim
	seq := &a.Seqs[h/(a.Heads/a.KVHeads)]
	q := vec(a.Q)[(r*a.Heads+h)*hd : (r*a.Heads+h+1)*hd]
	qpos := int32(a.QPos[r])
	seqScores(out[:seq.N], q, seq, hd, a.Scale, windowStart(a, qpos), qpos)
}

// KeyBounds writes the per-channel min and max of keys [t0, t1) of seq.
func (b *Backend) KeyBounds(seq *runtime.KVSeq, t0, t1 int, lo, hi []float32) {
	hd := len(lo)
	for t := t0; t < t1; t++ {
		k := tokenVec(seq.K, seq.PageSize, hd, t)
		if t == t0 {
			copy(lo, k)
			copy(hi, k)
			continue
		}
		for i, v := range k {
			lo[i] = min(lo[i], v)
			hi[i] = max(hi[i], v)
		}
	}
}

// NewPageBounds returns Quest's page bounds in host memory, built on
// KeyBounds and scored on the host (runtime.NewHostPageBounds).
func (b *Backend) NewPageBounds(kvHeads, headDim, page int) runtime.PageBounds {
	return runtime.NewHostPageBounds(b, b, kvHeads, headDim, page)
}

var (
	_ runtime.Scorer     = (*Backend)(nil)
	_ runtime.PageScorer = (*Backend)(nil)
)
