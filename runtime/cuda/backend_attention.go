package cuda

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"slices"
	"strings"

	"github.com/kvbench/kvbench/runtime"
)

// Descriptor words per KV head, as SD_* in backend_attn.cu; the range of
// token indices a row without a selection may see (SD_LO, SD_HI); the
// words of pageArith's stride and offsets (SD_KO, SD_VO, SD_PST).
const (
	sdWords   = 16
	sdLo      = 10
	sdHi      = 11
	sdKOff    = 13
	sdVOff    = 14
	sdPStride = 15
)

// pagePtrs appends the device pointers of pages and returns their offset;
// every page of a call must have the same type (b.kvt, -1 before the first).
// A call whose lists come from the device page tables (callPages) has no
// pointers of its own.
func (b *Backend) pagePtrs(pages []runtime.Buffer) int32 {
	off := b.ptrsStart()
	for _, p := range pages {
		ptr, t := b.kvPage(p)
		b.pagePtr(uint64(ptr), int32(t))
	}
	return off
}

// addrPtrs is pagePtrs over the key pages [p0, p1) of a sequence's page
// addresses a (KVSeq.PageAddrs: KVPageAddr's, the type in the lowest bit).
func (b *Backend) addrPtrs(a []uint64, p0, p1 int) int32 {
	off := b.ptrsStart()
	for i := p0; i < p1; i++ {
		b.pagePtr(a[2*i]&^1, int32(a[2*i]&1))
	}
	return off
}

// ptrsStart is where a call's page list starts in b.hPtrs; a call over the
// device page tables has none.
func (b *Backend) ptrsStart() int32 {
	if b.pt.call {
		panic("cuda: a page list uploaded in a call whose lists come from the page tables (callPages, tablePages)")
	}
	return int32(len(b.hPtrs))
}

// pagePtr appends one page's pointer, of page type t: the call's first
// sets b.kvt, the others must match it.
func (b *Backend) pagePtr(ptr uint64, t int32) {
	if b.kvt < 0 {
		b.kvt = t
	} else if b.kvt != t {
		panic("cuda: one attention call over KV pages of different types")
	}
	b.hPtrs = append(b.hPtrs, ptr)
}

// pageType is the page type of the call built (float32 when it has none).
func (b *Backend) pageType() int32 { return max(b.kvt, 0) }

// putMeta uploads the call's ints and pointers (after reserve), in one copy.
// A call whose lists come from the device page tables uploads its ints
// alone, and its pointer array is the tables' pool. A call over a device
// selection (Chosen, see chosenHead) has it copied, on the device, right
// after its ints.
func (b *Backend) putMeta() (ints, ptrs Ptr) {
	if len(b.hInts) == 0 {
		b.hInts = append(b.hInts, 0)
	}
	tables, sel := b.pt.call, b.cs
	b.pt.call, b.cs = false, chosenCall{}
	if !tables && len(b.hPtrs) == 0 {
		b.hPtrs = append(b.hPtrs, 0)
	}
	if !sel.on {
		if tables {
			return b.putBytes(raw(b.hInts))[0], b.pt.pool
		}
		p := b.putBytes(raw(b.hInts), raw(b.hPtrs))
		return p[0], p[1]
	}
	n := int64(len(b.hInts)) * 4
	if int(sel.base) != len(b.hInts) {
		panic(fmt.Sprintf("cuda: %d ints appended after the selection's place (%d)", len(b.hInts)-int(sel.base), sel.base))
	}
	room, pb, pbRoom := span(n+sel.bytes), int64(0), int64(0)
	if !tables {
		pb = int64(len(b.hPtrs)) * 8
		pbRoom = span(pb)
	}
	off := b.st.off
	if off+room+pbRoom > b.st.size {
		panic(fmt.Sprintf("cuda: staging put of %d bytes without reserve (%d of %d used)", room+pbRoom, off, b.st.size))
	}
	h := b.st.host.Bytes()
	copy(h[off:], raw(b.hInts))
	must(b.D.CopyHtoDAsync(b.st.dev.Add(off), b.st.host, off, n))
	must(b.D.CopyAsync(b.st.dev.Add(off+n), sel.src, sel.bytes))
	ints, ptrs = b.st.dev.Add(off), b.pt.pool
	if !tables {
		copy(h[off+room:], raw(b.hPtrs))
		must(b.D.CopyHtoDAsync(b.st.dev.Add(off+room), b.st.host, off+room, pb))
		ptrs = b.st.dev.Add(off + room)
	}
	b.st.off += room + pbRoom
	return ints, ptrs
}

// rtBox fills b.box (RtBox) with the call's ints where they can go to the
// split-KV kernel by value, and says whether they do: the page lists are in
// the device tables (no pointers of the call's own), no device selection is
// copied after the ints, and they are at most rtBoxWords. Otherwise the box
// holds none (the kernel reads the uploaded ints).
func (b *Backend) rtBox() bool {
	if b.noBox || !b.pt.call || b.cs.on || len(b.hInts) == 0 || len(b.hInts) > rtBoxWords {
		b.box[0] = 0
		return false
	}
	b.box[0] = int32(len(b.hInts))
	copy(b.box[1:], b.hInts)
	return true
}

// placeMeta is putMeta for a call whose ints go by value (rtBox): it takes
// their room in the arena without a copy (the kernel writes them there for
// the kernels after it) and returns it with the device page tables.
func (b *Backend) placeMeta() (ints, ptrs Ptr) {
	if !b.pt.call || b.cs.on {
		panic("cuda: placeMeta for a call with its own page pointers or a device selection")
	}
	b.pt.call = false
	room := span(int64(len(b.hInts)) * 4)
	if b.st.off+room > b.st.size {
		panic(fmt.Sprintf("cuda: staging put of %d bytes without reserve (%d of %d used)", room, b.st.off, b.st.size))
	}
	ints = b.st.dev.Add(b.st.off)
	b.st.off += room
	return ints, b.pt.pool
}

// metaSpan is the arena room putMeta takes.
func (b *Backend) metaSpan() int64 {
	ints := int64(max(len(b.hInts), 1)) * 4
	if b.cs.on {
		ints += b.cs.bytes
	}
	if b.pt.call {
		return span(ints)
	}
	return span(ints) + span(int64(max(len(b.hPtrs), 1))*8)
}

// Attend computes attention for every query row and head of a, with the
// policy options (selection, shifts, accumulation, recall, the model's
// sliding window), on the device. The per-call metadata (page pointers,
// positions, selections) is uploaded; accumulated probabilities and recall
// are downloaded and written into the host slices of a. Kernels: prompt
// chunks without a policy option at bf16 precision run the tensor-core
// prefill (flash_prefill_*, prefill.cu); every other call of head dim 64 or
// 128 without recall runs the split-KV kernels of attention_rt.cu (attendSplit,
// the kernels `kvbench kernels` times); recall and other head dims run the
// general kernel be_attend (backend_attn.cu). AttnPlan names the last one.
func (b *Backend) Attend(a *runtime.AttnArgs) {
	b.flushQuest()         // a selection queued by Quest's Choose (questbatch.go)
	b.trace.traced = false // AttnTrace reads this call's trace, or none (attntrace.go)
	if a.KVHeads <= 0 || a.Heads%a.KVHeads != 0 || len(a.Seqs) != a.KVHeads {
		panic(fmt.Sprintf("cuda: Attend with %d heads, %d kv heads, %d sequences", a.Heads, a.KVHeads, len(a.Seqs)))
	}
	if a.HeadDim > 512 || a.HeadDim%2 != 0 {
		panic(fmt.Sprintf("cuda: Attend with head dim %d (even, at most 512)", a.HeadDim))
	}
	if a.Rows == 0 {
		return
	}
	if lo := accTail(a); lo > 0 && !b.noAccTail { // rows that add nothing to Acc apart (accrows.go)
		b.attendAccTail(a, lo)
		return
	}
	if b.accColsOK(a) { // every row adds: the prefill, then the sums by key (acccols.go)
		b.attendAccCols(a)
		return
	}
	if rb := b.scoreRows(a, a.Recall != nil); rb < a.Rows { // scores past accRawMax: blocks of rows (accrows.go)
		b.attendRows(a, rb)
		return
	}
	hd := a.HeadDim
	m, a := b.attnMeta(a)
	shifted, recall, stride, fstride := a.QShift != nil, m.recall, m.stride, m.fstride
	hdr, rowOff, headOff, invOff := m.hdr, m.rowOff, m.headOff, m.invOff
	if b.flashOK(a) {
		b.attendFlash(a, rowOff)
		return
	}
	if splitOK(a, recall) {
		b.attendSplit(a, hdr, rowOff, headOff, invOff)
		return
	}
	b.split.last = Plan{Kernel: "be_attend", Blocks: a.Heads * a.Rows}
	b.flushKV()
	b.reserve(b.metaSpan())
	ints, ptrs := b.putMeta()
	items := a.Rows * a.Heads
	scores := b.grow(&b.scores, int64(items*stride)*4)
	full, rec := Ptr(0), Ptr(0)
	if recall {
		full = b.grow(&b.full, int64(items*fstride)*4)
		rec = b.grow(&b.recall, int64(items)*4)
	}
	b.launch("be_attend", Dim3{a.Heads, a.Rows, 1}, Dim3{128, 1, 1},
		b.f32(a.Out), b.f32(a.Q), ptrs, ints, int32(a.Heads), int32(a.KVHeads), int32(hd), a.Scale,
		rowOff, headOff, invOff, flag(shifted), flag(a.Rope == runtime.RopeInterleaved),
		scores, int32(stride), full, int32(fstride), rec, flag(recall), b.pageType(), int32(max(a.Window, 0)))

	if a.Acc != nil {
		need := items * stride
		if cap(b.hAcc) < need {
			b.hAcc = make([]float32, need)
		}
		probs := b.hAcc[:need]
		b.download(probs, scores)
		b.accFromProbs(a, probs, stride)
	}
	if recall {
		if cap(b.hRec) < items {
			b.hRec = make([]float32, items)
		}
		rv := b.hRec[:items]
		b.download(rv, rec)
		for i, v := range rv {
			if !math.IsNaN(float64(v)) {
				a.Recall[i] = v
			}
		}
	}
}

// accFromProbs adds the probabilities of be_attend's rows (probs, stride a
// (row, head)) to a's Acc as Attend does (AccFrom, AccZero, selections;
// AccGroup: a KV head's group added up in float32, heads in order). In a
// pass that defers its reads (lateacc.go) a call taking views gets fresh
// ones: the buffers its headers point at may be shared by the layers whose
// sums are still unread.
func (b *Backend) accFromProbs(a *runtime.AttnArgs, probs []float32, stride int) {
	group := a.Heads / a.KVHeads
	fresh := b.late.on && a.AccView
	if a.AccGroup && !a.AccZero {
		panic("cuda: Attend with AccGroup and without AccZero")
	}
	add := func(h int, acc []float32) {
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
	if a.AccGroup {
		for g := range a.KVHeads {
			n := a.Seqs[g].N
			out := a.Acc[g][:n]
			if fresh {
				out = b.lateHost(n)
			}
			if cap(b.hGrp) < n {
				b.hGrp = make([]float32, n)
			}
			tmp := b.hGrp[:n]
			for k := range group {
				clear(tmp)
				add(g*group+k, tmp)
				if k == 0 {
					copy(out, tmp)
					continue
				}
				for t := range out {
					out[t] += tmp[t]
				}
			}
			a.Acc[g] = out
		}
		return
	}
	for h := range a.Heads {
		n := a.Seqs[h/group].N
		acc := a.Acc[h][:n]
		switch {
		case fresh:
			acc = b.lateHost(n)
			if !a.AccZero {
				copy(acc, a.Acc[h][:n])
			}
		case a.AccZero: // the sums start from zero, whatever Acc holds
			clear(acc)
		}
		add(h, acc)
		if fresh {
			a.Acc[h] = acc
		}
	}
}

// attnLayout is where Attend's metadata of one call lies in b.hInts (from
// index 0): the KV heads' descriptors, the split-KV header's room at hdr,
// the rows' (position, shift) at rowOff, the heads' (selection offset,
// count) at headOff, the RoPE inverse frequencies at invOff; the longest
// token list of a (row, head) (stride) and of a reference sequence
// (fstride), and whether the call measures recall.
type attnLayout struct {
	hdr, rowOff, headOff, invOff int32
	stride, fstride              int
	recall                       bool
	sel                          chosenCall // a device selection to copy after the ints (chosenHead)
}

// attnMeta checks a's buffers and builds its metadata in b.hInts (from
// index 0), its page lists through callPages (pagetable.go): the first half
// of Attend. It returns the call Attend runs: a, or Quest's call over its
// page lists (listCall).
func (b *Backend) attnMeta(a *runtime.AttnArgs) (attnLayout, *runtime.AttnArgs) {
	recall := a.Recall != nil && a.Ref != nil
	var refs []runtime.KVSeq
	if recall {
		refs = a.Ref
	}
	b.callPages(a.Seqs, refs) // page lists from the device tables where they can (pagetable.go)
	if b.pt.call {
		a = b.listCall(a) // Quest's call over its page lists (questlists.go)
	}
	b.hInts = b.hInts[:0]
	m := b.describe(&b.hInts, a, b.pt.call)
	b.cs = m.sel // putMeta copies the selection after the ints (attendSplit's kernels read it in place: selAt)
	return m, a
}

// describe checks a's buffers and appends its metadata to *h (empty), the
// page lists' offsets from the device tables when tables is set (callPages
// has refreshed them), else from the call's own pointers (b.hPtrs). Where
// tables is set and a has no recall, it reads the backend and writes
// nothing but *h: AttendBatch runs it for several calls at once
// (batchattn.go). A device selection (a.Chosen) is to be copied right after
// the ints: the layout's sel says what and where.
func (b *Backend) describe(h *[]int32, a *runtime.AttnArgs, tables bool) attnLayout {
	hd, group := a.HeadDim, a.Heads/a.KVHeads
	b.check(a.Q, 0, a.Rows*a.Heads*hd, "Attend Q")
	b.check(a.Out, 0, a.Rows*a.Heads*hd, "Attend Out")
	shifted := a.QShift != nil
	recall := a.Recall != nil && a.Ref != nil
	if a.Recall != nil && len(a.Ref) != a.KVHeads {
		panic(fmt.Sprintf("cuda: Attend with Recall and %d reference sequences for %d kv heads", len(a.Ref), a.KVHeads))
	}
	add := func(v []int32) int32 { // appends v, returns its offset
		off := int32(len(*h))
		*h = append(*h, v...)
		return off
	}
	*h = append((*h)[:0], make([]int32, a.KVHeads*sdWords+rhWords)...)
	hdr := int32(a.KVHeads * sdWords) // the split-KV kernels' header (attendSplit)
	rowOff := int32(len(*h))
	for r := 0; r < a.Rows; r++ {
		qs := 0
		if shifted {
			qs = a.QShift[r]
		}
		*h = append(*h, int32(a.QPos[r]), int32(qs))
	}
	headOff := int32(len(*h))
	*h = append(*h, make([]int32, 2*a.Heads)...)
	invOff := int32(len(*h))
	if shifted {
		*h = b.attnInvFreq(*h, a)
	}
	stride, fstride := 1, 1
	minQ, maxQ := a.QPos[0], a.QPos[0]
	for _, p := range a.QPos[:a.Rows] {
		minQ, maxQ = min(minQ, p), max(maxQ, p)
	}
	lastPos, lastN := int32(-1), 0 // the last positions added: their offset and count
	var lastShift shiftRun         // the last run of equal shifts added
	lists := listsOf(a)            // Quest's call over its page lists (questlists.go)
	for g := range a.Seqs {
		s := &a.Seqs[g]
		if lists != nil { // a query head's chosen pages, every token visible
			d := [sdWords]int32{int32(s.N), int32(s.PageSize), 0, 0, -1, -1, 0, 1, 0, 0, 0, int32(s.N), 0}
			d[2], d[3] = lists.listPages(g)
			copy((*h)[g*sdWords:], d[:])
			stride = max(stride, s.N)
			continue
		}
		if len(s.Pos) < s.N || len(s.K)*s.PageSize < s.N || len(s.V)*s.PageSize < s.N {
			panic(fmt.Sprintf("cuda: Attend kv head %d: %d tokens, %d positions, %d+%d pages of %d", g, s.N, len(s.Pos), len(s.K), len(s.V), s.PageSize))
		}
		lo, hi := tokenRange(s, minQ, maxQ, a.Window)
		d := [sdWords]int32{int32(s.N), int32(max(s.PageSize, 1)), 0, 0, 0, -1, 0, 1, 0, 0, int32(lo), int32(hi), 0}
		if tables {
			t := b.table(s) // one lookup for the lists and their stride
			d[2], d[3] = t.lists()
			d[sdKOff], d[sdVOff], d[sdPStride] = b.arithWords(t)
		} else {
			d[2], d[3] = b.pagePtrs(s.K), b.pagePtrs(s.V)
		}
		switch {
		case allVisible(s, minQ, maxQ, a.Window) && !recall:
			d[4] = -1 // every token visible to every row: no positions to upload (recall maps tokens by them)
		case lastPos >= 0 && lastN == s.N && bytes.Equal(raw(s.Pos[:s.N]), raw((*h)[lastPos:lastPos+int32(s.N)])):
			// The KV heads of a layer mostly hold the same positions (a
			// prompt's chunks: the whole prompt's, every head): sent once.
			d[4] = lastPos
		default:
			d[4] = add(s.Pos[:s.N])
			lastPos, lastN = d[4], s.N
		}
		if shifted && s.Shift != nil {
			n := s.N // the shifts past ShiftSpan are 0: not sent
			if s.ShiftSpan > 0 {
				n = min(n, s.ShiftSpan)
			}
			if run := (shiftRun{n: int32(n), v: s.ShiftAll, at: -1}); s.ShiftSpan > 0 && s.ShiftEqual {
				// One value for the whole run (the sinks'): written without
				// reading Shift, and once for the KV heads that share it.
				if lastShift.at >= 0 && lastShift.n == run.n && lastShift.v == run.v {
					run.at = lastShift.at
				} else {
					run.at = int32(len(*h))
					for range n {
						*h = append(*h, run.v)
					}
					lastShift = run
				}
				d[5] = run.at
			} else {
				d[5] = add(s.Shift[:n])
			}
			d[12] = int32(n)
		}
		if recall {
			ref := &a.Ref[g]
			d[6], d[7] = int32(ref.N), int32(max(ref.PageSize, 1))
			if tables {
				d[8], _ = b.tablePages(ref)
			} else {
				d[8] = b.pagePtrs(ref.K)
			}
			d[9] = add(ref.Pos[:ref.N])
			fstride = max(fstride, ref.N)
		}
		copy((*h)[g*sdWords:], d[:])
		stride = max(stride, s.N)
	}
	if tables {
		(*h)[hdr+rhPBase], (*h)[hdr+rhPBase+1] = int32(uint32(b.pt.low)), int32(uint32(b.pt.low>>32))
	}
	var cs chosenCall
	for i := 0; i < a.Heads; i++ {
		cnt, off := int32(-1), int32(0)
		if a.Chosen != nil && lists == nil { // a selection on the device (Quest's PageChooser)
			off, cnt = b.chosenHead(a, i, int32(len(*h)), &cs)
			stride = max(stride, int(cnt))
		} else if a.Sel != nil && a.Sel[i] != nil {
			sel := a.Sel[i]
			n := a.Seqs[i/group].N
			for _, t := range sel {
				if t < 0 || int(t) >= n {
					panic(fmt.Sprintf("cuda: Attend head %d selects token %d of %d", i, t, n))
				}
			}
			cnt, off = int32(len(sel)), add(sel)
			stride = max(stride, len(sel))
		}
		(*h)[int(headOff)+2*i] = off
		(*h)[int(headOff)+2*i+1] = cnt
	}
	return attnLayout{hdr: hdr, rowOff: rowOff, headOff: headOff, invOff: invOff, stride: stride, fstride: fstride, recall: recall, sel: cs}
}

// shiftRun is a run of n equal shifts v in a call's ints, at offset at.
type shiftRun struct{ n, v, at int32 }

// allVisible reports whether every token of s is visible to every query row
// at positions minQ..maxQ, so that attention needs no positions: the
// sequence's positions are bounded by minQ (KVSeq.Bounded) and, with a
// sliding window, its smallest position (the first: they must be known to
// ascend) lies inside the window of the row at maxQ.
func allVisible(s *runtime.KVSeq, minQ, maxQ, window int) bool {
	if !s.Bounded || int(s.MaxPos) > minQ {
		return false
	}
	if window <= 0 || s.N == 0 {
		return true
	}
	return s.Ascending && int(s.Pos[0]) > maxQ-window // keys at positions <= maxQ-window are hidden from the row at maxQ
}

// AttendsWindow reports that Attend and QK apply AttnArgs.Window, the model's
// sliding window (runtime.WindowAttender).
func (b *Backend) AttendsWindow() bool { return true }

var _ runtime.WindowAttender = (*Backend)(nil)

// flashMinRows is the smallest call the tensor-core prefill kernel serves.
const flashMinRows = 16

// flashOK says whether a goes to the tensor-core prefill kernel: bf16
// precision, a prompt chunk (flashMinRows rows or more), head dim 64 or 128,
// pages of a power of two tokens, and no policy option (selection,
// re-positioned keys, accumulated probabilities, recall).
func (b *Backend) flashOK(a *runtime.AttnArgs) bool {
	if b.prec != "bf16" || a.Rows < flashMinRows || (a.HeadDim != 64 && a.HeadDim != 128) {
		return false
	}
	for _, s := range a.Seqs {
		if ps := s.PageSize; ps <= 0 || ps&(ps-1) != 0 || ps != a.Seqs[0].PageSize {
			return false // pages of a power of two tokens, the same for every head
		}
	}
	if a.QShift != nil || a.Acc != nil || a.Recall != nil {
		return false
	}
	for _, s := range a.Sel {
		if s != nil {
			return false
		}
	}
	if a.Chosen != nil {
		return false
	}
	return true
}

// attendFlash runs the prefill attention kernel over the descriptors
// Attend built (the KV heads' pages and positions, the rows' positions at
// rowOff): flash_wg (prefill_wg.cu) for bf16 pages where the variant is a
// wgmma one, else flash_prefill (prefill.cu).
func (b *Backend) attendFlash(a *runtime.AttnArgs, rowOff int32) { b.flashCall(a, rowOff, 0, 0) }

// flashCall is attendFlash writing each (row, head)'s lse where lse is not
// 0 ([rows, heads] floats: log2 of the sum of 2^(q.k * scale * log2 e)
// over the keys the row sees), with room more bytes reserved in the
// staging arena beside the call's metadata. It returns where the metadata
// went (putMeta), for a kernel after it over the same call.
func (b *Backend) flashCall(a *runtime.AttnArgs, rowOff int32, lse Ptr, room int64) (ints, ptrs Ptr) {
	sorted := int32(1)
	for g := range a.Seqs {
		if b.hInts[g*sdWords+4] < 0 || a.Seqs[g].Ascending {
			continue // no positions uploaded (every token visible), or known to ascend
		}
		p := a.Seqs[g].Pos[:a.Seqs[g].N]
		for i := 1; i < len(p); i++ {
			if p[i] < p[i-1] {
				sorted = 0
				break
			}
		}
	}
	b.flushKV()
	b.reserve(b.metaSpan() + room)
	ints, ptrs = b.putMeta()
	hd, f, kvt := a.HeadDim, b.flash, b.pageType()
	if hd == 64 {
		f = b.flash64
	}
	if f.wg && kvt != kvBF16 {
		f = flashShapes[flashMMA]
	}
	var tm *TensorMap
	var base Ptr
	var maxRows int64
	if f.tma != 0 {
		var ok bool
		if tm, base, maxRows, ok = b.tmaMap(hd, a.Seqs[0].PageSize, f.keys); !ok {
			f = flashShapes[flashFallback(hd)]
		}
	}
	name, smem := f.kernel(hd)
	b.allowShared(name, smem)
	bm := f.rows()
	grid := Dim3{(a.Rows + bm - 1) / bm, a.Heads, 1}
	b.split.last = Plan{Kernel: name, Blocks: grid.X * grid.Y, SharedMem: smem}
	scale, ps := a.Scale*float32(math.Log2E), int32(bits.TrailingZeros(uint(a.Seqs[0].PageSize)))
	switch {
	case f.tma != 0: // a producer beside the warpgroups
		b.launchSmem(name, grid, Dim3{f.threads(), 1, 1}, smem, b.f32(a.Out), b.f32(a.Q), ptrs, ints,
			int32(a.Heads), int32(a.KVHeads), scale, rowOff, int32(a.Rows), sorted, ps, lse, int32(max(a.Window, 0)),
			base, maxRows, tm)
	case f.wg:
		b.launchSmem(name, grid, Dim3{32 * f.warps, 1, 1}, smem, b.f32(a.Out), b.f32(a.Q), ptrs, ints,
			int32(a.Heads), int32(a.KVHeads), scale, rowOff, int32(a.Rows), sorted, ps, lse, int32(max(a.Window, 0)))
	default:
		b.launchSmem(name, grid, Dim3{32 * f.warps, 1, 1}, smem, b.f32(a.Out), b.f32(a.Q), ptrs, ints,
			int32(a.Heads), int32(a.KVHeads), scale, rowOff, int32(a.Rows), kvt, sorted, ps, lse, int32(max(a.Window, 0)))
	}
	return ints, ptrs
}

// flashShape is a variant of the prefill attention kernel: warps per block
// (the consumers' for flash_tma), m-tiles of 16 rows per warp
// (flash_prefill), keys per tile, whether it is flash_wg (warpgroups of
// four warps, 64 rows each) and, for flash_wg, the order of a warpgroup's
// work (MODE in prefill_wg.cu) and its shared-memory layout (SW: 0 core
// matrices, 1 the 128-byte swizzle); tma: flash_tma (prefill_tma.cu: the
// tiles brought by the TMA, stages deep, swizzled): tmaWarp a producer
// warp, tmaPipe a producer warpgroup and the consumers pipelined (PIPE).
type flashShape struct {
	warps, mtiles, keys int
	wg                  bool
	mode, sw            int
	tma                 int
	stages              int
}

// flashShape.tma's values besides 0 (no TMA).
const (
	tmaWarp = 1
	tmaPipe = 2
)

// threads is a block's threads: the consumers' warps, and the producer's.
func (f flashShape) threads() int {
	switch f.tma {
	case tmaWarp:
		return 32*f.warps + 32
	case tmaPipe:
		return 32*f.warps + 128
	}
	return 32 * f.warps
}

// flashShapes are the compiled variants (FLASH_KERNEL in prefill.cu,
// WG_KERNEL in prefill_wg.cu), by their KVBENCH_FLASH name.
var flashShapes = map[string]flashShape{
	"w4m1n64": {4, 1, 64, false, 0, 0, 0, 0}, "w4m2n64": {4, 2, 64, false, 0, 0, 0, 0},
	"w8m1n64": {8, 1, 64, false, 0, 0, 0, 0}, "w4m2n32": {4, 2, 32, false, 0, 0, 0, 0},
	"g2n128s": {8, 1, 128, true, 0, 0, 0, 0}, "g2n128w": {8, 1, 128, true, 0, 1, 0, 0},
	"g2n128kw": {8, 1, 128, true, 2, 1, 0, 0}, "g2n64kw": {8, 1, 64, true, 2, 1, 0, 0},
	"g3n64w": {12, 1, 64, true, 0, 1, 0, 0}, "g3n64kw": {12, 1, 64, true, 2, 1, 0, 0},
	"t2n64": {8, 1, 64, true, 0, 1, tmaWarp, 4}, "t3n64": {12, 1, 64, true, 0, 1, tmaWarp, 4},
	"t2n128": {8, 1, 128, true, 0, 1, tmaWarp, 3}, "p2n64": {8, 1, 64, true, 0, 1, tmaPipe, 4},
	"p2n128": {8, 1, 128, true, 0, 1, tmaPipe, 3},
}

// chooseFlash is the variant KVBENCH_FLASH names (name), or the default
// for the device's architecture and head dim hd when it is empty. The wgmma
// variants need sm_90a.
func chooseFlash(name, arch string, hd int) (flashShape, error) {
	if name == "" {
		switch {
		case arch != "sm_90a":
			name = flashMMA
		case hd == 64:
			name = flashWG64
		default:
			name = flashWG
		}
	}
	f, ok := flashShapes[name]
	if !ok {
		names := slices.Sorted(maps.Keys(flashShapes))
		return f, fmt.Errorf("cuda: KVBENCH_FLASH=%q is not one of %s", name, strings.Join(names, ", "))
	}
	if f.wg && arch != "sm_90a" {
		return f, fmt.Errorf("cuda: KVBENCH_FLASH=%q needs a Hopper GPU (sm_90a), not %s", name, arch)
	}
	return f, nil
}

// rows is the query rows a block of f takes.
func (f flashShape) rows() int {
	if f.wg {
		return 16 * f.warps
	}
	return 16 * f.warps * f.mtiles
}

// kernel is f's kernel name for head dim hd and its dynamic shared memory
// (FL_SMEM in prefill.cu, WG_SMEM in prefill_wg.cu, TMA_SMEM in
// prefill_tma.cu).
func (f flashShape) kernel(hd int) (string, int) {
	if f.tma != 0 { // TMA_SMEM
		name := fmt.Sprintf("flash_tma_d%d_g%d_n%d_s%d", hd, f.warps/4, f.keys, f.stages)
		if f.tma == tmaPipe {
			name += "_p"
		}
		return name, f.rows()*hd*2 + f.stages*f.keys*(hd*4+4) + f.stages*2*8 + (2+f.warps*2)*4
	}
	if f.wg {
		stages := 2
		if f.mode != 0 {
			stages = 3
		}
		name := fmt.Sprintf("flash_wg_d%d_g%d_n%d_m%d", hd, f.warps/4, f.keys, f.mode)
		if f.sw != 0 {
			name = fmt.Sprintf("%s_w%d", name, f.sw)
		}
		return name, f.rows()*hd*2 + stages*f.keys*(hd*4+4) + stages*2*16*8 + (2+f.warps*2)*4
	}
	return fmt.Sprintf("flash_prefill_d%d_w%d_m%d_n%d", hd, f.warps, f.mtiles, f.keys),
		(16*f.warps*f.mtiles+4*f.keys)*(hd+8)*2 + 2*f.keys*4
}

func flag(v bool) int32 {
	if v {
		return 1
	}
	return 0
}

// QK writes the scaled q·k of query row r, head h against every token of its
// KV head, -Inf where the causal mask or the model's sliding window hides
// the token.
func (b *Backend) QK(a *runtime.AttnArgs, r, h int, out []float32) {
	hd := a.HeadDim
	seq := &a.Seqs[h/(a.Heads/a.KVHeads)]
	if seq.N == 0 {
		return
	}
	b.check(a.Q, (r*a.Heads+h)*hd, hd, "QK")
	b.hPtrs, b.kvt = b.hPtrs[:0], -1
	b.pagePtrs(seq.K)
	b.hInts = append(b.hInts[:0], seq.Pos[:seq.N]...)
	b.flushKV()
	b.reserve(b.metaSpan())
	pos, ptrs := b.putMeta()
	o := b.grow(&b.small, int64(seq.N)*4)
	b.launch("be_qk", Dim3{(seq.N + 3) / 4, 1, 1}, Dim3{128, 1, 1},
		o, b.f32(a.Q).Add(int64((r*a.Heads+h)*hd)*4), ptrs, pos, int32(seq.N), int32(seq.PageSize), int32(hd), int32(a.QPos[r]), a.Scale, b.pageType(),
		int32(max(a.Window, 0)))
	b.download(out[:seq.N], o)
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
	b.hPtrs, b.kvt, b.hInts = b.hPtrs[:0], -1, b.hInts[:0]
	b.pagePtrs(seq.K)
	b.flushKV()
	b.reserve(b.metaSpan())
	_, ptrs := b.putMeta()
	o := b.grow(&b.small, int64(2*hd)*4)
	b.launch("be_key_bounds", Dim3{1, 1, 1}, Dim3{min(max(hd, 32), 256), 1, 1}, o, ptrs, int32(seq.PageSize), int32(hd), int32(t0), int32(t1), b.pageType())
	if cap(b.hRec) < 2*hd {
		b.hRec = make([]float32, 2*hd)
	}
	v := b.hRec[:2*hd]
	b.download(v, o)
	copy(lo, v[:hd])
	copy(hi[:hd], v[hd:])
}

// allowShared lets the flash kernel name take its smem bytes of dynamic
// shared memory (once a kernel: a flash shape's is fixed).
func (b *Backend) allowShared(name string, smem int) {
	if !b.shared[name] {
		must(b.fn(name).AllowShared(smem))
		b.shared[name] = true
	}
}

var _ runtime.RowFitter = (*Backend)(nil)

// FitRows is the rows a prompt pass of about rows tokens runs best at
// (runtime.RowFitter): the prefill attention's grid is a block per row tile
// and query head, and a grid that leaves the last wave of the
// multiprocessors' block slots part empty idles the rest for a block's
// time. Of the whole row tiles within a sixteenth of rows, the one whose
// grid fills its waves best (the closest to rows among equals), where it
// fills them better than rows does; else rows. Measured on the H200 (132
// multiprocessors, 2026-12-04): the 8B shape's 128K prefill in passes of
// 8,192 rows (64 tiles x 32 heads: 15.5 waves) 12.20 s, of 8,448 (16
// waves) 12.07-12.10; 16,384 12.18, 16,896 12.05 (docs/benchmarks.md).
func (b *Backend) FitRows(rows, heads, headDim int) int {
	f := b.flash
	if headDim == 64 {
		f = b.flash64
	}
	if (headDim != 64 && headDim != 128) || heads <= 0 || rows <= 0 {
		return rows
	}
	name, smem := f.kernel(headDim)
	b.allowShared(name, smem)
	occ, err := b.fn(name).Occupancy(f.threads(), smem)
	if err != nil || occ < 1 {
		return rows
	}
	return fitRows(rows, heads, f.rows(), b.D.SMs*occ)
}

// fitRows is FitRows for a grid of a block per tile rows and head, slots
// blocks a wave.
func fitRows(rows, heads, tile, slots int) int {
	fill := func(tiles int) float64 { // the share of the waves' slots the grid uses
		n := tiles * heads
		return float64(n) / float64((n+slots-1)/slots*slots)
	}
	t0 := rows / tile
	if t0 < 1 || heads < 1 || slots < 1 {
		return rows
	}
	best, bestFill := 0, fill((rows+tile-1)/tile)
	for d := 0; d <= t0/16; d++ {
		for _, t := range []int{t0 + d, t0 - d} {
			if t >= 1 && fill(t) > bestFill+1e-9 {
				best, bestFill = t, fill(t)
			}
		}
	}
	if best == 0 {
		return rows
	}
	return best * tile
}

// arithWords is the descriptor's SD_KO, SD_VO and SD_PST for the lists of
// table t (zeros where its pages are not one stride apart): pageArith's
// first pages as 16-byte units past the lowest page the tables hold (the
// call's base, RH_PBASE), where both are 16-byte aligned and under 64 GiB
// past it.
func (b *Backend) arithWords(t *pageTable) (ko, vo, stride int32) {
	k, v, st := b.pageArith(t)
	low := b.pt.low
	if st == 0 || (k|v)&15 != 0 || k < low || v < low || (k-low)/16 > math.MaxUint32 || (v-low)/16 > math.MaxUint32 {
		return 0, 0, 0
	}
	return int32(uint32((k - low) / 16)), int32(uint32((v - low) / 16)), st
}
