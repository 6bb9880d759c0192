package cuda

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/kvbench/kvbench/runtime"
)

// pageBounds is runtime.PageBounds (and runtime.PageChooser) in device
// memory: one buffer [pages][2][headDim] per KV head (a page's minimum, then
// its maximum), grown by doubling, of the cache pages' type: the minimum and
// maximum of bf16 keys are bf16 values, held exactly in half the bytes of
// float32 (the bytes the scores read; the policy's accounting counts a bound
// as a key vector of the cache). Extend is one kernel for
// every KV head (no wait); Score is one kernel for every query head and one
// download of the scores; Choose scores and chooses on the device, no wait.
type pageBounds struct {
	b        *Backend
	hd, page int
	kvt      int32        // the bounds' page type (kvF32, kvBF16): the cache's, -1 before the first tokens
	heads    []boundsHead // [kvHeads]
	ch       choice       // Choose's selection
	gen      uint64       // 1 + the flush count (questQueue.gen) when it was last extended
}

// boundsHead is the bounds of one KV head.
type boundsHead struct {
	buf   *buf // nil before the first token
	pages int  // pages buf has room for
	n     int  // tokens folded in
}

// minBoundsPages is the room of a KV head's first bounds buffer, in pages.
const minBoundsPages = 16

// NewPageBounds returns empty page bounds held on the GPU (see
// runtime.PageScorer).
func (b *Backend) NewPageBounds(kvHeads, headDim, page int) runtime.PageBounds {
	if kvHeads <= 0 || headDim <= 0 || page <= 0 {
		panic(fmt.Sprintf("cuda: NewPageBounds(%d kv heads, head dim %d, page %d)", kvHeads, headDim, page))
	}
	return &pageBounds{b: b, hd: headDim, page: page, kvt: -1, heads: make([]boundsHead, kvHeads)}
}

// grow gives head h room for pages bounds pages, keeping the folded ones.
func (pb *pageBounds) grow(h *boundsHead, pages int) {
	b := pb.b
	b.flushQuest() // queued work may name the old buffer
	c := max(pages, 2*h.pages, minBoundsPages)
	dt, vec := runtime.F32, int64(pb.hd)*4
	if pb.kvt == kvBF16 {
		dt, vec = runtime.BF16, int64(pb.hd)*2
	}
	x, err := b.newBuf(c*2*pb.hd, dt, int64(c)*2*vec)
	must(err)
	if h.buf != nil {
		if used := (h.n + pb.page - 1) / pb.page; used > 0 {
			b.flushKV()
			must(b.D.CopyAsync(x.p, h.buf.p, int64(used)*2*vec))
		}
		b.sync() // the copy and the kernels before it read the old buffer
		b.Free(h.buf)
	}
	h.buf, h.pages = x, c
}

// Extend folds the new tokens of every KV head into its bounds: queued,
// launched with the batch's other Extends (questbatch.go).
func (pb *pageBounds) Extend(seqs []runtime.KVSeq) {
	b := pb.b
	if len(seqs) != len(pb.heads) {
		panic(fmt.Sprintf("cuda: PageBounds.Extend with %d sequences for %d kv heads", len(seqs), len(pb.heads)))
	}
	if pb.gen == b.qq.gen+1 {
		// Already extended in the queue: launched first. One launch of
		// both would fold them side by side, each reading and writing the
		// same partial page (the later one's fold could be lost).
		b.flushQuest()
	}
	pb.setType(seqs)
	// Room first: growing waits for the stream, which restarts the arena.
	touched := 0
	for g := range seqs {
		s, h := &seqs[g], &pb.heads[g]
		if s.N < h.n { // the sequence shrank behind the bounds: rebuild
			h.n = 0
		}
		if s.N == h.n {
			continue
		}
		if s.PageSize <= 0 || len(s.K)*s.PageSize < s.N {
			panic(fmt.Sprintf("cuda: PageBounds.Extend kv head %d: %d tokens in %d pages of %d", g, s.N, len(s.K), s.PageSize))
		}
		pages := (s.N + pb.page - 1) / pb.page
		if pages > h.pages {
			pb.grow(h, pages)
		}
		touched = max(touched, pages-h.n/pb.page)
	}
	if touched == 0 {
		return
	}
	b.hInts, b.hPtrs, b.kvt = b.hInts[:0], b.hPtrs[:0], -1
	for g := range seqs {
		s, h := &seqs[g], &pb.heads[g]
		n0, n1 := h.n, s.N
		kOff, bOff := int32(0), int32(0)
		if n1 > n0 {
			// The cache pages holding tokens [n0, n1): by the addresses the
			// append just wrote through where the sequence has them (the
			// pages' buffers are a cold load or two a KV head: 15 % of a
			// 64-stream 8B Quest step's host time went to them).
			p0, p1 := n0/s.PageSize, (n1-1)/s.PageSize+1
			if a := s.PageAddrs(); a != nil {
				kOff = b.addrPtrs(a, p0, p1)
			} else {
				kOff = b.pagePtrs(s.K[p0:p1])
			}
			bOff = int32(len(b.hPtrs))
			b.hPtrs = append(b.hPtrs, uint64(h.buf.p))
		}
		b.hInts = append(b.hInts, int32(n0), int32(n1), kOff, int32(max(s.PageSize, 1)), bOff)
	}
	if t := b.pageType(); t != pb.kvt {
		panic(fmt.Sprintf("cuda: PageBounds.Extend over pages of type %d, bounds of type %d", t, pb.kvt))
	}
	b.queueExtend(touched, int32(pb.page), int32(pb.hd), pb.kvt) // launched with the batch's others (questbatch.go)
	pb.gen = b.qq.gen + 1                                        // after queueExtend, which may flush first
	for g := range seqs {
		pb.heads[g].n = seqs[g].N
	}
}

// setType takes the bounds' type from the cache pages of the first
// sequence holding tokens; bounds of another type are folded again from the
// first token (their buffers replaced as they grow).
func (pb *pageBounds) setType(seqs []runtime.KVSeq) {
	t := int32(-1)
	for g := range seqs {
		if s := &seqs[g]; s.N > 0 && len(s.K) > 0 {
			if a := s.PageAddrs(); a != nil {
				t = int32(a[0] & 1)
			} else {
				_, kt := pb.b.kvPage(s.K[0])
				t = int32(kt)
			}
			break
		}
	}
	if t < 0 || t == pb.kvt {
		return
	}
	if pb.kvt >= 0 {
		for g := range pb.heads {
			pb.heads[g].n, pb.heads[g].pages = 0, 0
		}
	}
	pb.kvt = t
}

// Score scores the pages of every query head that out asks for, one launch,
// and downloads the scores (one wait).
func (pb *pageBounds) Score(a *runtime.AttnArgs, out [][]float64) {
	b, hd := pb.b, pb.hd
	b.flushQuest() // the scores' scratch and the bounds
	if a.KVHeads != len(pb.heads) || a.HeadDim != hd || len(out) != a.Heads || a.Heads%a.KVHeads != 0 {
		panic(fmt.Sprintf("cuda: PageBounds.Score with %d heads, %d kv heads, head dim %d, %d outputs; bounds of %d kv heads, head dim %d",
			a.Heads, a.KVHeads, a.HeadDim, len(out), len(pb.heads), hd))
	}
	group := a.Heads / a.KVHeads
	b.hInts, b.hPtrs = b.hInts[:0], b.hPtrs[:0]
	total, most := 0, 0
	for h, o := range out {
		if n := len(o); n > 0 {
			if pages := (pb.heads[h/group].n + pb.page - 1) / pb.page; n != pages {
				panic(fmt.Sprintf("cuda: PageBounds.Score head %d: %d outputs for %d pages", h, n, pages))
			}
		}
		b.hInts = append(b.hInts, int32(len(o)), int32(total))
		total += len(o)
		most = max(most, len(o))
	}
	if total == 0 {
		return
	}
	b.check(a.Q, 0, a.Heads*hd, "PageBounds.Score Q")
	for g := range pb.heads {
		p := uint64(0)
		if x := pb.heads[g].buf; x != nil {
			p = uint64(x.p)
		}
		b.hPtrs = append(b.hPtrs, p)
	}
	b.flushKV()
	b.reserve(b.metaSpan())
	ints, ptrs := b.putMeta()
	dev := b.grow(&b.pscore, int64(total)*8)
	kvt := max(pb.kvt, 0)
	per := questScorePages(hd, kvt)
	b.launch("be_quest_score", Dim3{(most + per - 1) / per, a.KVHeads, 1}, Dim3{questScoreThreads, 1, 1},
		dev, b.f32(a.Q), ptrs, ints, int32(group), int32(hd), kvt)
	if cap(b.hF64) < total {
		b.hF64 = make([]float64, total, total+total/4+256)
	}
	s := b.hF64[:total]
	get(b, s, dev)
	off := 0
	for _, o := range out {
		off += copy(o, s[off:off+len(o)])
	}
}

// choice is the selection a pageBounds' Choose leaves on the device
// (runtime.Chosen), valid until its next Choose.
type choice struct {
	pb      *pageBounds
	sel     *buf    // [heads, cap] int32: the token indices of each head
	pages   *buf    // [heads, max(k-1, 1)] int32: the chosen pages but the last
	done    *buf    // [kvHeads] int32: be_quest_choose_batch's counters, 0 between launches
	host    *Pinned // [kvHeads] int32: distinct tokens per KV head (Covered), written by the device
	heads   int     // heads sel has room for
	cap     int     // tokens per head sel has room for
	kr      int     // pages per head pages has room for
	counts  []int   // [heads] tokens each head attends; -1: every token
	epoch   int     // b.epoch when its choice was launched (Covered waits if the host has not since)
	pending bool    // its Choose is queued, not launched (questbatch.go)
	lists   choiceLists
	va      runtime.AttnArgs // listCall's call (questlists.go)
	vseqs   []runtime.KVSeq  // its sequences, one a query head
}

// room gives c buffers for heads query heads of cap tokens and kr pages
// each, over kvHeads KV heads. New buffers wait for the queued work that
// may still use the old ones.
func (c *choice) room(heads, kvHeads, capTokens, kr int) {
	b := c.pb.b
	if c.sel != nil && heads <= c.heads && capTokens <= c.cap && kr <= c.kr {
		return
	}
	c.free()
	c.heads, c.cap, c.kr = heads, capTokens, kr
	var err error
	alloc := func(words int) *buf {
		x, e := b.newBuf(words, runtime.F32, int64(words)*4)
		if e != nil && err == nil {
			err = e
		}
		return x
	}
	c.sel, c.pages, c.done = alloc(heads*capTokens), alloc(heads*kr), alloc(kvHeads)
	must(err)
	b.zero(c.done, int64(kvHeads))
	c.host, err = b.D.AllocPinned(int64(kvHeads) * 4)
	must(err)
}

// free releases c's buffers (after the queued work).
func (c *choice) free() {
	if c.sel == nil {
		return
	}
	b := c.pb.b
	b.flushQuest() // queued work may name these buffers
	b.sync()
	for _, x := range []*buf{c.sel, c.pages, c.done} {
		b.Free(x)
	}
	must(c.host.Free())
	c.sel, c.pages, c.done, c.host = nil, nil, nil, nil
}

// freeLists releases c's page lists' region in the pool (after the queued
// work).
func (c *choice) freeLists() {
	if c.lists.words == 0 {
		return
	}
	c.pb.b.flushQuest() // a queued choice may write them
	c.pb.b.releaseRegion(c.lists.off, c.lists.words)
	c.lists.on, c.lists.words = false, 0
}

// Choose is Quest's choice on the device (runtime.PageChooser): the pages
// scored as Score does (be_quest_score), then be_quest_choose_batch picks each
// head's pages and writes its token indices, and counts each KV head's
// distinct tokens; that count is downloaded without a wait. Queued with the
// batch's other Quest work (questbatch.go): no launch, no wait here.
func (pb *pageBounds) Choose(a *runtime.AttnArgs, k int) {
	b, hd := pb.b, pb.hd
	if a.KVHeads != len(pb.heads) || a.HeadDim != hd || len(a.Seqs) != a.KVHeads || a.Heads%a.KVHeads != 0 || k < 1 {
		panic(fmt.Sprintf("cuda: PageBounds.Choose of %d pages with %d heads, %d kv heads, %d sequences, head dim %d; bounds of %d kv heads, head dim %d",
			k, a.Heads, a.KVHeads, len(a.Seqs), a.HeadDim, len(pb.heads), hd))
	}
	group := a.Heads / a.KVHeads
	for g := range pb.heads {
		if n := pb.heads[g].n; n != a.Seqs[g].N {
			panic(fmt.Sprintf("cuda: PageBounds.Choose: kv head %d holds %d tokens, %d folded (Extend first)", g, a.Seqs[g].N, n))
		}
	}
	c := &pb.ch
	c.pb = pb
	c.counts = slices.Grow(c.counts[:0], a.Heads)[:a.Heads]
	b.hInts, b.hPtrs = b.hInts[:0], b.hPtrs[:0]
	total, most := 0, 0
	for h := range a.Heads {
		n := pb.heads[h/group].n
		pages := (n + pb.page - 1) / pb.page
		c.counts[h] = -1
		if pages <= k {
			pages = 0 // every token attended: not scored
		} else {
			c.counts[h] = (k-1)*pb.page + n - (pages-1)*pb.page
		}
		b.hInts = append(b.hInts, int32(pages), int32(total))
		total += pages
		most = max(most, pages)
	}
	a.Sel, a.Chosen = nil, nil
	if total == 0 {
		return
	}
	for g := range pb.heads {
		p := uint64(0) // no tokens folded: no bounds, not scored
		if x := pb.heads[g].buf; x != nil {
			p = uint64(x.p)
		}
		b.hInts = append(b.hInts, int32(pb.heads[g].n))
		b.hPtrs = append(b.hPtrs, p)
	}
	b.check(a.Q, 0, a.Heads*hd, "PageBounds.Choose Q")
	// Buffers first: growing them waits for the stream, and new ones are
	// cleared by a queued operation, both before the uploads below.
	c.room(a.Heads, len(pb.heads), k*pb.page, max(k-1, 1))
	kv := len(b.hInts)
	b.hInts = c.setLists(a, k, b.hInts)                                                                                        // the heads' page lists (questlists.go): the KV heads' list offsets appended
	b.queueChoose(c, b.f32(a.Q), a.Heads, len(pb.heads), group, k, total, most, kv, int32(pb.page), int32(hd), max(pb.kvt, 0)) // questbatch.go
	a.Chosen = c
}

// questChooseThreads is be_quest_choose_batch's block (QC_NT in quest.cu).
const questChooseThreads = 512

// questScoreThreads is be_quest_score's block (QS_NT in backend_quest.cu).
const questScoreThreads = 256

// questScorePages is the pages a block of be_quest_score scores for head
// dim hd and bounds of page type kvt (qs_pages in backend_quest.cu: QS_FLOATS
// words of bounds, two bf16 a word, at most a page a thread).
func questScorePages(hd int, kvt int32) int {
	if kvt == kvBF16 {
		return min(questScoreThreads, 2*8192/(2*hd))
	}
	return min(questScoreThreads, 8192/(2*hd))
}

// Count is the number of tokens query head h attends (-1: every token).
func (c *choice) Count(h int) int { return c.counts[h] }

// Covered is the number of distinct tokens KV head g's query heads attend,
// as the device wrote it into the choice's pinned memory (waiting for the
// device if the host has not waited since the choice was launched).
func (c *choice) Covered(g int) int {
	b := c.pb.b
	if c.pending {
		b.flushQuest()
	}
	if b.epoch == c.epoch {
		b.sync()
	}
	return int(int32(binary.LittleEndian.Uint32(c.host.Bytes()[4*g:])))
}

// Tokens downloads query head h's token indices (nil: every token).
func (c *choice) Tokens(h int) []int32 {
	c.pb.b.flushQuest()
	if c.counts[h] < 0 {
		return nil
	}
	out := make([]int32, c.counts[h])
	get(c.pb.b, out, c.sel.p.Add(int64(h*c.cap)*4))
	return out
}

var _ runtime.Chosen = (*choice)(nil)

// chosenCall is the device selection of the attention call being built:
// putMeta copies it (src, bytes) into the call's ints at index base.
type chosenCall struct {
	on    bool
	src   Ptr
	bytes int64
	base  int32
}

// selAt writes into a call's header h where the split-KV kernels read its
// device selection cs from (RH_SEL, rt_sel): its address less 4 bytes a
// word of the offsets chosenHead gave, which count from cs.base; none (0:
// the selections are in the ints) where cs is off.
func selAt(h []int32, cs chosenCall) {
	a := uint64(0)
	if cs.on {
		a = uint64(cs.src) - 4*uint64(cs.base)
	}
	h[rhSel], h[rhSel+1] = int32(uint32(a)), int32(uint32(a>>32))
}

// chosenHead returns the offset in the call's ints and the token count of
// query head h's selection in a.Chosen (-1: every token), for describe's
// loop over the heads, which calls it for h = 0 first, once the call's ints
// past the head table are all appended (hlen of them): the selection is
// copied, on the device, right after them; *cs says what to copy where.
// It reads the backend only (AttendBatch describes calls side by side).
func (b *Backend) chosenHead(a *runtime.AttnArgs, h int, hlen int32, cs *chosenCall) (off, cnt int32) {
	c, ok := a.Chosen.(*choice)
	if !ok || c.pb.b != b {
		panic(fmt.Sprintf("cuda: Attend with a selection (%T) not made by this backend", a.Chosen))
	}
	if h == 0 {
		if a.Sel != nil || a.Acc != nil || len(c.counts) != a.Heads {
			panic(fmt.Sprintf("cuda: Attend with Chosen (for %d heads) and Sel or Acc, %d heads", len(c.counts), a.Heads))
		}
		*cs = chosenCall{on: true, src: c.sel.p, bytes: int64(a.Heads*c.cap) * 4, base: hlen}
	}
	if c.counts[h] < 0 {
		return 0, -1
	}
	return cs.base + int32(h*c.cap), int32(c.counts[h])
}

// Reset forgets every folded token; the buffers stay.
func (pb *pageBounds) Reset() {
	for g := range pb.heads {
		pb.heads[g].n = 0
	}
}

// Free returns the bounds' device memory to the backend.
func (pb *pageBounds) Free() {
	if len(pb.heads) == 0 {
		return
	}
	pb.b.flushQuest()
	pb.b.sync() // a queued Extend may still write them
	for g := range pb.heads {
		if x := pb.heads[g].buf; x != nil {
			pb.b.Free(x)
		}
	}
	pb.ch.free()
	pb.ch.freeLists()
	pb.heads = nil
}
