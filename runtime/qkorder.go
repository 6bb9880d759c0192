package runtime

import "fmt"

// QKInterleaver is a Backend that wants the query and key rows of a model of
// half-split RoPE pairs (RopeHalf: channels i and i+hd/2 of a head turn
// together) in interleaved order (channels 2i and 2i+1), so that a decode
// step's product kernel finds each pair's two rows side by side and rotates
// them in its epilogue. UploadWeights then uploads Wq, Wk, their biases and
// the heads' query and key norms reordered (interleaveHeads) and the runner
// turns them with RopeInterleaved: the same rotated values, in another
// channel order shared by every query and key, so attention's dot products
// are the same sums taken in another order.
type QKInterleaver interface {
	InterleaveQK() bool
}

// interleavesQK reports whether be wants m's query and key rows reordered.
func interleavesQK(m *Model, be Backend) bool {
	qi, ok := be.(QKInterleaver)
	return ok && m.Config.Rope == RopeHalf && m.Config.HeadDim%2 == 0 && qi.InterleaveQK()
}

// interleaveHeads returns a copy of t, whose rows (a matrix [heads*hd, in])
// or elements (a vector of heads*hd) are heads of hd, with each head in
// interleaved RoPE order: its row 2i is the head's row i, its row 2i+1 the
// head's row i+hd/2. A half-split rotation of t's output is then an
// interleaved rotation of the copy's, value for value.
func interleaveHeads(t *Tensor, hd int) (*Tensor, error) {
	if hd <= 0 || hd%2 != 0 || len(t.Shape) == 0 || len(t.Shape) > 2 || t.Shape[0]%hd != 0 {
		return nil, fmt.Errorf("interleave %s: shape %v is not heads of %d rows", t.Name, t.Shape, hd)
	}
	width := 1 // elements a row
	if len(t.Shape) == 2 {
		width = t.Shape[1]
	}
	out := &Tensor{Name: t.Name + " (RoPE pairs interleaved)", DType: t.DType, Shape: append([]int(nil), t.Shape...)}
	half := hd / 2
	src := func(r int) int { // the source row of row r of the copy
		h, j := r/hd, r%hd
		if j%2 == 0 {
			return h*hd + j/2
		}
		return h*hd + half + j/2
	}
	rows := t.Shape[0]
	switch {
	case t.DType == F32 && len(t.F32) == rows*width:
		out.F32 = permuteRows(t.F32, rows, width, src)
	case t.DType != F32 && len(t.U16) == rows*width:
		out.U16 = permuteRows(t.U16, rows, width, src)
	default:
		return nil, fmt.Errorf("interleave %s: %v data of %d values for shape %v", t.Name, t.DType, max(len(t.F32), len(t.U16)), t.Shape)
	}
	return out, nil
}
