package cpu

import (
	"fmt"
	"math"

	"github.com/kvbench/kvbench/runtime"
)

// attnJob computes attention for (row, head) items in parallel.
type attnJob struct {
	a       *runtime.AttnArgs
	q, out  []float32
	scratch [][]float32 // per worker: scores
}

// Attend computes softmax(q·K^T·scale) V for every query row and head over
// the cached tokens of its KV head at positions <= the row's position.
func (b *Backend) Attend(a *runtime.AttnArgs) {
	if a.Heads%a.KVHeads != 0 || len(a.Seqs) != a.KVHeads {
		panic(fmt.Sprintf("cpu: Attend with %d heads, %d kv heads, %d sequences", a.Heads, a.KVHeads, len(a.Seqs)))
	}
	longest := 0
	for i := range a.Seqs {
		longest = max(longest, a.Seqs[i].N)
	}
	for w := range b.att.scratch {
		if cap(b.att.scratch[w]) < longest {
			b.att.scratch[w] = make([]float32, longest+longest/4+64)
		}
	}
	b.att.a, b.att.q, b.att.out = a, vec(a.Q), vec(a.Out)
	items := a.Rows * a.Heads
	// Each item reads N keys and values of HeadDim channels.
	grain := max(1, (1<<14)/max(1, longest*a.HeadDim))
	b.pool.run(&b.att, items, grain)
}

func (j *attnJob) run(w, lo, hi int) {
	a := j.a
	hd, group := a.HeadDim, a.Heads/a.KVHeads
	scores := j.scratch[w]
	for it := lo; it < hi; it++ {
		r, h := it/a.Heads, it%a.Heads
		seq := &a.Seqs[h/group]
		q := j.q[(r*a.Heads+h)*hd : (r*a.Heads+h+1)*hd]
		out := j.out[(r*a.Heads+h)*hd : (r*a.Heads+h+1)*hd]
		qpos := int32(a.QPos[r])
		sc := scores[:seq.N]

		// Scores, with the causal mask by position.
		maxs := float32(math.Inf(-1))
		for p := range seq.K {
			keys := vec(seq.K[p])
			base := p * seq.PageSize
			n := min(seq.PageSize, seq.N-base)
			for s := 0; s < n; s++ {
				t := base + s
				if seq.Pos[t] > qpos {
					sc[t] = float32(math.Inf(-1))
					continue
				}
				v := dotF32(q, keys[s*hd:(s+1)*hd]) * a.Scale
				sc[t] = v
				maxs = max(maxs, v)
			}
		}
		clear(out)
		if math.IsInf(float64(maxs), -1) {
			continue // nothing visible: the output stays zero
		}
		// Softmax weights and the weighted sum of values.
		var sum float32
		for p := range seq.V {
			vals := vec(seq.V[p])
			base := p * seq.PageSize
			n := min(seq.PageSize, seq.N-base)
			for s := 0; s < n; s++ {
				x := sc[base+s]
				if math.IsInf(float64(x), -1) {
					continue
				}
				e := expf(x - maxs)
				sum += e
				axpyF32(out, e, vals[s*hd:(s+1)*hd])
			}
		}
		inv := 1 / sum
		for i := range out {
			out[i] *= inv
		}
	}
}
