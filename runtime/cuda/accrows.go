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
	if a.Acc != nil && b.lateDefers(a) {
		// A deferring pass (lateacc.go): the blocks' sums go to views of
		// their own that live until the next deferring pass, not to the
		// headers' buffers, which a policy shares among its layers.
		for i := range accSlices(a) {
			n := accLen(a, i)
			v := b.lateHost(n)
			if !a.AccZero {
				copy(v, a.Acc[i][:n])
			}
			a.Acc[i] = v
		}
	}
	var heads [][]float32 // a query head's sums, for AccGroup
	if a.Acc != nil && a.AccGroup {
		heads = make([][]float32, a.Heads)
		for h := range heads {
			heads[h] = make([]float32, a.Seqs[h/(a.Heads/a.KVHeads)].N)
		}
	}
	for r0 := 0; r0 < a.Rows; r0 += rb {
		s := b.rowSpan(a, r0, min(a.Rows, r0+rb))
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

// rowSpan is a's rows [r0, r1) as a call of their own: the queries',
// outputs', positions', shifts' and recall's rows in views, the rest as a.
func (b *Backend) rowSpan(a *runtime.AttnArgs, r0, r1 int) runtime.AttnArgs {
	w := a.Heads * a.HeadDim
	s := *a
	s.Rows, s.QPos = r1-r0, a.QPos[r0:r1]
	s.Q, s.Out = b.View(a.Q, r0*w, (r1-r0)*w), b.View(a.Out, r0*w, (r1-r0)*w)
	if a.QShift != nil {
		s.QShift = a.QShift[r0:r1]
	}
	if a.Recall != nil {
		s.Recall = a.Recall[r0*a.Heads : r1*a.Heads]
	}
	return s
}

// accTail is the first row of a that adds to Acc when a accumulates only
// from a later row on, every row before it under AccFrom and every row from
// it at or past (SnapKV's observation window, TOVA's last row: a prompt
// chunk's last rows); 0 otherwise (no Acc, every row adds, or rows out of
// that order).
func accTail(a *runtime.AttnArgs) int {
	if a.Acc == nil || a.Chosen != nil || a.Rows < 2 || a.QPos[0] >= a.AccFrom {
		return 0
	}
	lo := 1
	for lo < a.Rows && a.QPos[lo] < a.AccFrom {
		lo++
	}
	if lo == a.Rows { // no row adds: the call still zeroes or views Acc
		return 0
	}
	for r := lo + 1; r < a.Rows; r++ {
		if a.QPos[r] < a.AccFrom {
			return 0
		}
	}
	return lo
}

// attendAccTail runs a as two calls: its rows before lo (accTail) without
// Acc, which a prompt chunk's tensor-core prefill serves (flashOK) and which
// keep no scores, then the rest with a's Acc as a asks. Without it a
// SnapKV prompt chunk ran every row on the split-KV path keeping every
// row's raw scores (up to accRawMax, 4 GiB, of device memory) for the sums
// of its last 32. The sums are the same: the rows before lo add nothing.
func (b *Backend) attendAccTail(a *runtime.AttnArgs, lo int) {
	head := b.rowSpan(a, 0, lo)
	head.Acc, head.AccFrom, head.AccZero, head.AccView, head.AccGroup = nil, 0, false, false, false
	b.Attend(&head)
	tail := b.rowSpan(a, lo, a.Rows)
	b.Attend(&tail) // Acc's headers are a's: views land there
}
