package cuda

import "github.com/kvbench/kvbench/runtime"

// A call whose kernels keep every (row, head)'s scores over its token list
// (raw scores for Acc on the split-KV path, and the be_attend path's always)
// needs rows x heads x tokens floats of scratch: a 8,448-row prompt chunk of
// the 8B shape's 32 heads over 128K tokens would be 141 GB (H2O's and TOVA's
// dense prefill). Attend runs such a call in blocks of rows whose scores fit
// accRawMax, the sums carried from block to block: each head's are the same
// additions in the same order as one call's.

// accRawMax is the most bytes of such scores a call's block of rows keeps.
var accRawMax int64 = 4 << 30

// scoreRows is the most rows of a a block may hold for its kept scores to
// fit accRawMax (a.Rows when they fit or a keeps none).
func (b *Backend) scoreRows(a *runtime.AttnArgs, recall bool) int {
	if a.Rows <= 1 || a.Chosen != nil || (a.Acc == nil && splitOK(a, recall)) || b.flashOK(a) {
		return a.Rows
	}
	perRow := int64(a.Heads) * int64(max(accStride(a), 1)) * 4
	if recall {
		perRow *= 2 // the reference's scores too (be_attend)
	}
	return int(max(1, min(int64(a.Rows), accRawMax/perRow)))
}

// attendRows runs a as calls of at most rb rows each, in order: its queries'
// and outputs' rows in views, the sums carried (the first block starts them
// as a asks, the others add to them). With AccGroup the blocks keep each
// query head's sums and the groups are added up at the end, in head order,
// as one call's kernel adds them.
func (b *Backend) attendRows(a *runtime.AttnArgs, rb int) {
	w := a.Heads * a.HeadDim
	var heads [][]float32 // a query head's sums, for AccGroup
	if a.Acc != nil && a.AccGroup {
		heads = make([][]float32, a.Heads)
		for h := range heads {
			heads[h] = make([]float32, a.Seqs[h/(a.Heads/a.KVHeads)].N)
		}
	}
	for r0 := 0; r0 < a.Rows; r0 += rb {
		r1 := min(a.Rows, r0+rb)
		s := *a
		s.Rows, s.QPos = r1-r0, a.QPos[r0:r1]
		s.Q, s.Out = b.View(a.Q, r0*w, (r1-r0)*w), b.View(a.Out, r0*w, (r1-r0)*w)
		if a.QShift != nil {
			s.QShift = a.QShift[r0:r1]
		}
		if a.Recall != nil {
			s.Recall = a.Recall[r0*a.Heads : r1*a.Heads]
		}
		if a.Acc != nil {
			s.AccView = false // the sums land in the caller's buffers, the next block's start
			s.AccZero = a.AccZero && r0 == 0
			if heads != nil {
				s.Acc, s.AccGroup, s.AccZero = heads, false, false
			}
		}
		b.Attend(&s)
	}
	if heads == nil {
		return
	}
	group := a.Heads / a.KVHeads
	for g := range a.KVHeads {
		out := a.Acc[g][:a.Seqs[g].N]
		copy(out, heads[g*group])
		for h := g*group + 1; h < (g+1)*group; h++ {
			for t := range out {
				out[t] += heads[h][t]
			}
		}
	}
}
