package cuda

import (
	"fmt"
	"math"

	"github.com/kvbench/kvbench/runtime"
)

// Descriptor words per KV head, as SD_* in backend.cu.
const sdWords = 10

// pagePtrs appends the device pointers of pages and returns their offset.
func (b *Backend) pagePtrs(pages []runtime.Buffer) int32 {
	off := int32(len(b.hPtrs))
	for _, p := range pages {
		b.hPtrs = append(b.hPtrs, uint64(b.f32(p)))
	}
	return off
}

// appendInts appends v and returns its offset.
func (b *Backend) appendInts(v []int32) int32 {
	off := int32(len(b.hInts))
	b.hInts = append(b.hInts, v...)
	return off
}

// Attend computes attention for every query row and head of a, with the
// policy options (selection, shifts, accumulation, recall), on the device.
// The per-call metadata (page pointers, positions, selections) is uploaded;
// accumulated probabilities and recall are downloaded and written into the
// host slices of a.
func (b *Backend) Attend(a *runtime.AttnArgs) {
	if a.KVHeads <= 0 || a.Heads%a.KVHeads != 0 || len(a.Seqs) != a.KVHeads {
		panic(fmt.Sprintf("cuda: Attend with %d heads, %d kv heads, %d sequences", a.Heads, a.KVHeads, len(a.Seqs)))
	}
	if a.HeadDim > 512 || a.HeadDim%2 != 0 {
		panic(fmt.Sprintf("cuda: Attend with head dim %d (even, at most 512)", a.HeadDim))
	}
	if a.Rows == 0 {
		return
	}
	hd, group := a.HeadDim, a.Heads/a.KVHeads
	b.check(a.Q, 0, a.Rows*a.Heads*hd, "Attend Q")
	b.check(a.Out, 0, a.Rows*a.Heads*hd, "Attend Out")
	shifted := a.QShift != nil
	recall := a.Recall != nil && a.Ref != nil
	if a.Recall != nil && len(a.Ref) != a.KVHeads {
		panic(fmt.Sprintf("cuda: Attend with Recall and %d reference sequences for %d kv heads", len(a.Ref), a.KVHeads))
	}

	b.hInts = append(b.hInts[:0], make([]int32, a.KVHeads*sdWords)...)
	b.hPtrs = b.hPtrs[:0]
	rowOff := int32(len(b.hInts))
	for r := 0; r < a.Rows; r++ {
		qs := 0
		if shifted {
			qs = a.QShift[r]
		}
		b.hInts = append(b.hInts, int32(a.QPos[r]), int32(qs))
	}
	headOff := int32(len(b.hInts))
	b.hInts = append(b.hInts, make([]int32, 2*a.Heads)...)
	invOff := int32(len(b.hInts))
	if shifted {
		b.hInts = invFreq(b.hInts, a.Theta, hd)
	}
	stride, fstride := 1, 1
	for g := range a.Seqs {
		s := &a.Seqs[g]
		if len(s.Pos) < s.N || len(s.K)*s.PageSize < s.N || len(s.V)*s.PageSize < s.N {
			panic(fmt.Sprintf("cuda: Attend kv head %d: %d tokens, %d positions, %d+%d pages of %d", g, s.N, len(s.Pos), len(s.K), len(s.V), s.PageSize))
		}
		d := [sdWords]int32{int32(s.N), int32(max(s.PageSize, 1)), 0, 0, 0, -1, 0, 1, 0, 0}
		d[2] = b.pagePtrs(s.K)
		d[3] = b.pagePtrs(s.V)
		d[4] = b.appendInts(s.Pos[:s.N])
		if shifted && s.Shift != nil {
			d[5] = b.appendInts(s.Shift[:s.N])
		}
		if recall {
			ref := &a.Ref[g]
			d[6], d[7] = int32(ref.N), int32(max(ref.PageSize, 1))
			d[8] = b.pagePtrs(ref.K)
			d[9] = b.appendInts(ref.Pos[:ref.N])
			fstride = max(fstride, ref.N)
		}
		copy(b.hInts[g*sdWords:], d[:])
		stride = max(stride, s.N)
	}
	for h := 0; h < a.Heads; h++ {
		cnt, off := int32(-1), int32(0)
		if a.Sel != nil && a.Sel[h] != nil {
			sel := a.Sel[h]
			n := a.Seqs[h/group].N
			for _, t := range sel {
				if t < 0 || int(t) >= n {
					panic(fmt.Sprintf("cuda: Attend head %d selects token %d of %d", h, t, n))
				}
			}
			cnt, off = int32(len(sel)), b.appendInts(sel)
			stride = max(stride, len(sel))
		}
		b.hInts[int(headOff)+2*h] = off
		b.hInts[int(headOff)+2*h+1] = cnt
	}
	if len(b.hPtrs) == 0 {
		b.hPtrs = append(b.hPtrs, 0)
	}
	ints := b.uploadInts(b.hInts)
	ptrs := b.grow(&b.ptrs, int64(len(b.hPtrs))*8)
	must(Upload(b.D, ptrs, b.hPtrs))
	items := a.Rows * a.Heads
	scores := b.grow(&b.scores, int64(items*stride)*4)
	full, rec := Ptr(0), Ptr(0)
	if recall {
		full = b.grow(&b.full, int64(items*fstride)*4)
		rec = b.grow(&b.recall, int64(items)*4)
	}
	flag := func(v bool) int32 {
		if v {
			return 1
		}
		return 0
	}
	b.launch("be_attend", Dim3{a.Heads, a.Rows, 1}, Dim3{128, 1, 1},
		b.f32(a.Out), b.f32(a.Q), ptrs, ints, int32(a.Heads), int32(a.KVHeads), int32(hd), a.Scale,
		rowOff, headOff, invOff, flag(shifted), flag(a.Rope == runtime.RopeInterleaved),
		scores, int32(stride), full, int32(fstride), rec, flag(recall))

	if a.Acc != nil {
		need := items * stride
		if cap(b.hProbs) < need {
			b.hProbs = make([]float32, need)
		}
		probs := b.hProbs[:need]
		must(Download(b.D, probs, scores))
		for h := 0; h < a.Heads; h++ {
			acc := a.Acc[h]
			var sel []int32
			if a.Sel != nil {
				sel = a.Sel[h]
			}
			n := a.Seqs[h/group].N
			if sel != nil {
				n = len(sel)
			}
			for r := 0; r < a.Rows; r++ {
				if a.QPos[r] < a.AccFrom {
					continue
				}
				p := probs[(r*a.Heads+h)*stride:]
				for i := 0; i < n; i++ {
					t := i
					if sel != nil {
						t = int(sel[i])
					}
					acc[t] += p[i]
				}
			}
		}
	}
	if recall {
		if cap(b.hRec) < items {
			b.hRec = make([]float32, items)
		}
		rv := b.hRec[:items]
		must(Download(b.D, rv, rec))
		for i, v := range rv {
			if !math.IsNaN(float64(v)) {
				a.Recall[i] = v
			}
		}
	}
}

// QK writes the scaled q·k of query row r, head h against every token of its
// KV head, -Inf where the causal mask hides the token.
func (b *Backend) QK(a *runtime.AttnArgs, r, h int, out []float32) {
	hd := a.HeadDim
	seq := &a.Seqs[h/(a.Heads/a.KVHeads)]
	if seq.N == 0 {
		return
	}
	b.check(a.Q, (r*a.Heads+h)*hd, hd, "QK")
	b.hPtrs = b.hPtrs[:0]
	b.pagePtrs(seq.K)
	ptrs := b.grow(&b.ptrs, int64(len(b.hPtrs))*8)
	must(Upload(b.D, ptrs, b.hPtrs))
	pos := b.uploadInts(seq.Pos[:seq.N])
	o := b.grow(&b.small, int64(seq.N)*4)
	b.launch("be_qk", Dim3{(seq.N + 3) / 4, 1, 1}, Dim3{128, 1, 1},
		o, b.f32(a.Q).Add(int64((r*a.Heads+h)*hd)*4), ptrs, pos, int32(seq.N), int32(seq.PageSize), int32(hd), int32(a.QPos[r]), a.Scale)
	must(Download(b.D, out[:seq.N], o))
}

// KeyBounds writes the per-channel min and max of keys [t0, t1) of seq.
func (b *Backend) KeyBounds(seq *runtime.KVSeq, t0, t1 int, lo, hi []float32) {
	hd := len(lo)
	if t1 <= t0 {
		return
	}
	if t0 < 0 || t1 > seq.N {
		panic(fmt.Sprintf("cuda: KeyBounds [%d, %d) of %d tokens", t0, t1, seq.N))
	}
	b.hPtrs = b.hPtrs[:0]
	b.pagePtrs(seq.K)
	ptrs := b.grow(&b.ptrs, int64(len(b.hPtrs))*8)
	must(Upload(b.D, ptrs, b.hPtrs))
	o := b.grow(&b.small, int64(2*hd)*4)
	b.launch("be_key_bounds", Dim3{1, 1, 1}, Dim3{min(max(hd, 32), 256), 1, 1}, o, ptrs, int32(seq.PageSize), int32(hd), int32(t0), int32(t1))
	if cap(b.hRec) < 2*hd {
		b.hRec = make([]float32, 2*hd)
	}
	v := b.hRec[:2*hd]
	must(Download(b.D, v, o))
	copy(lo, v[:hd])
	copy(hi[:hd], v[hd:])
}
