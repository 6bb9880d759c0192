package cuda

import (
	"fmt"

	"github.com/kvbench/kvbench/runtime"
)

// pageBounds is runtime.PageBounds in device memory: one float32 buffer
// [pages][2][headDim] per KV head (a page's minimum, then its maximum),
// grown by doubling. Extend is one kernel for every KV head (no wait); Score
// is one kernel for every query head and one download of the scores.
type pageBounds struct {
	b        *Backend
	hd, page int
	heads    []boundsHead // [kvHeads]
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
	return &pageBounds{b: b, hd: headDim, page: page, heads: make([]boundsHead, kvHeads)}
}

// grow gives head h room for pages bounds pages, keeping the folded ones.
func (pb *pageBounds) grow(h *boundsHead, pages int) {
	b := pb.b
	c := max(pages, 2*h.pages, minBoundsPages)
	vec := int64(pb.hd) * 4
	x, err := b.newBuf(c*2*pb.hd, runtime.F32, int64(c)*2*vec)
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

// Extend folds the new tokens of every KV head into its bounds, one launch.
func (pb *pageBounds) Extend(seqs []runtime.KVSeq) {
	b := pb.b
	if len(seqs) != len(pb.heads) {
		panic(fmt.Sprintf("cuda: PageBounds.Extend with %d sequences for %d kv heads", len(seqs), len(pb.heads)))
	}
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
			// The cache pages holding tokens [n0, n1).
			kOff = b.pagePtrs(s.K[n0/s.PageSize : (n1-1)/s.PageSize+1])
			bOff = int32(len(b.hPtrs))
			b.hPtrs = append(b.hPtrs, uint64(h.buf.p))
		}
		b.hInts = append(b.hInts, int32(n0), int32(n1), kOff, int32(max(s.PageSize, 1)), bOff)
	}
	b.flushKV() // the keys of queued copies must land first
	b.reserve(b.metaSpan())
	ints, ptrs := b.putMeta()
	b.launch("be_quest_extend", Dim3{touched, len(seqs), 1}, Dim3{min(max(pb.hd, 32), 256), 1, 1},
		ptrs, ints, int32(pb.page), int32(pb.hd), b.pageType())
	for g := range seqs {
		pb.heads[g].n = seqs[g].N
	}
}

// Score scores the pages of every query head that out asks for, one launch,
// and downloads the scores (one wait).
func (pb *pageBounds) Score(a *runtime.AttnArgs, out [][]float64) {
	b, hd := pb.b, pb.hd
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
	b.launch("be_quest_score", Dim3{(most + 127) / 128, a.Heads, 1}, Dim3{128, 1, 1},
		dev, b.f32(a.Q), ptrs, ints, int32(group), int32(hd))
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
	pb.b.sync() // a queued Extend may still write them
	for g := range pb.heads {
		if x := pb.heads[g].buf; x != nil {
			pb.b.Free(x)
		}
	}
	pb.heads = nil
}
