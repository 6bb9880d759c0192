package runtime

import (
	"cmp"
	"fmt"
	"math/bits"
	"slices"
	"sync/atomic"
)

// DefaultPageSize is the number of token slots of a KV page.
const DefaultPageSize = 16

// KVCache holds the keys and values of every layer and KV head in pages of
// backend memory. Each (layer, KV head) pair is its own sequence of tokens, so
// a policy may keep different tokens per head. Pages come from a free list:
// pages released by eviction are reused before new ones are allocated, so a
// cache that holds a bounded number of tokens holds bounded memory.
type KVCache struct {
	be       Backend
	ops      KVOps // the KV copies' lane while a batch step runs on lanes (nil: be)
	layers   int
	kvHeads  int
	headDim  int
	pageSize int
	dtype    DType        // element type of the pages
	seqs     [][]KVSeq    // [layer][kvHead]
	free     []kvPage     // pages ready for reuse
	total    int          // pages ever allocated
	shifts   bool         // keep KVSeq.Shift beside Pos
	moves    [][2]int32   // Evict's copies (destination, source), reused
	held     []int32      // Evict's token now in each slot past the kept count (its original slot), reused
	marks    []uint64     // sortDrops's bitmap, reused
	ref      [][]KVSeq    // [layer][kvHead] every token ever appended, when recording
	refPages int          // pages held by ref
	pa       KVAddresser  // the backend's page addresses (KVSeq.addr); nil: none
	spares   int          // pages of the sequences' runs (Hold) not in their lists
	agree    []headsAgree // [layer] whether its KV heads are known to hold the same tokens (HeadsAgree)
}

// headsAgree follows a layer's changes for HeadsAgree: appends reach every
// KV head alike; evictions agree when a round of Evict calls gives heads
// 0, 1, ... in turn the same indices. Anything else breaks the agreement
// until Reset.
type headsAgree struct {
	broken bool
	done   int     // heads evicted in the round under way (0: none)
	drop   []int32 // that round's indices, sorted
}

type kvPage struct{ k, v Buffer }

// kv is where the cache's key/value copies go: its lane, else its backend.
func (c *KVCache) kv() KVOps {
	if c.ops != nil {
		return c.ops
	}
	return c.be
}

// kvSeqIDs hands out KVSeq.ID: unique in the process, never 0.
var kvSeqIDs atomic.Uint64

// push appends the pages k, v to s's lists, and their addresses where the
// lists' addresses are whole.
func (c *KVCache) push(s *KVSeq, k, v Buffer) {
	if c.pa != nil && len(s.addr) == 2*len(s.K) {
		s.addr = append(s.addr, c.pa.KVPageAddr(k), c.pa.KVPageAddr(v))
	}
	s.K, s.V = append(s.K, k), append(s.V, v)
}

// addrs returns the copies' KVAddrOps and whether s's page addresses are
// whole for them.
func (c *KVCache) addrs(s *KVSeq) (KVAddrOps, bool) {
	if len(s.addr) != 2*len(s.K) || len(s.K) == 0 {
		return nil, false
	}
	ao, ok := c.kv().(KVAddrOps)
	return ao, ok
}

// moveKV moves token f's key and value of s into token d's slot, through
// the page addresses where they are whole.
func (c *KVCache) moveKV(s *KVSeq, d, f int) {
	ps := c.pageSize
	if ao, ok := c.addrs(s); ok {
		dp, fp := 2*(d/ps), 2*(f/ps)
		ao.MoveKVAt(s.addr[dp], s.addr[dp+1], d%ps, s.addr[fp], s.addr[fp+1], f%ps, c.headDim)
		return
	}
	c.kv().MoveKV(s.K[d/ps], s.V[d/ps], d%ps, s.K[f/ps], s.V[f/ps], f%ps, c.headDim)
}

// newSeq is an empty sequence of pages of pageSize slots with a fresh ID.
func newSeq(pageSize int) KVSeq { return KVSeq{PageSize: pageSize, ID: kvSeqIDs.Add(1)} }

// NewKVCache returns an empty cache of float32 pages for model shape c on
// backend be.
func NewKVCache(be Backend, c Config, pageSize int) *KVCache {
	kc, err := NewKVCacheOf(be, c, pageSize, F32)
	if err != nil {
		panic(err) // float32 pages are always supported
	}
	return kc
}

// NewKVCacheOf returns an empty cache whose pages hold elements of type t:
// F32 on every backend, others where the backend is a KVAllocator listing t.
func NewKVCacheOf(be Backend, c Config, pageSize int, t DType) (*KVCache, error) {
	if pageSize <= 0 {
		pageSize = DefaultPageSize
	}
	if t != F32 {
		ka, ok := be.(KVAllocator)
		if !ok || !slices.Contains(ka.KVTypes(), t) {
			have := []DType{F32}
			if ok {
				have = append(have, ka.KVTypes()...)
			}
			return nil, fmt.Errorf("kv cache: backend %s stores KV pages as %v, not %v (%v pages need the cuda backend)", be.Name(), have, t, t)
		}
	}
	kc := &KVCache{be: be, layers: c.Layers, kvHeads: c.KVHeads, headDim: c.HeadDim, pageSize: pageSize, dtype: t}
	kc.pa, _ = be.(KVAddresser)
	kc.seqs = make([][]KVSeq, c.Layers)
	kc.agree = make([]headsAgree, c.Layers)
	for l := range kc.seqs {
		kc.seqs[l] = make([]KVSeq, c.KVHeads)
		for h := range kc.seqs[l] {
			kc.seqs[l][h] = newSeq(pageSize)
		}
	}
	return kc, nil
}

// DType is the element type of the pages.
func (c *KVCache) DType() DType { return c.dtype }

// PageSize is the number of token slots per page.
func (c *KVCache) PageSize() int { return c.pageSize }

// Seqs returns the sequences of layer l, one per KV head. The slice and its
// contents are owned by the cache and valid until the next change.
func (c *KVCache) Seqs(l int) []KVSeq { return c.seqs[l] }

// Room gives every sequence's lists room for n more tokens (positions,
// shifts, page lists and their addresses; no pages: Reserve allocates those), so that a long
// prompt appended chunk by chunk does not grow them again and again. It
// changes no token, page or count.
func (c *KVCache) Room(n int) {
	n += n/16 + 64 // and the first tokens after it (a task's answer)
	total := 0
	for l := range c.seqs {
		for h := range c.seqs[l] {
			s := &c.seqs[l][h]
			s.Pos = slices.Grow(s.Pos, s.N+n-len(s.Pos))
			if c.shifts {
				s.Shift = slices.Grow(s.Shift, s.N+n-len(s.Shift))
			}
			pages := (s.N + n + c.pageSize - 1) / c.pageSize
			if c.pa != nil && len(s.addr) == 2*len(s.K) { // push appends the pages' addresses too
				s.addr = slices.Grow(s.addr, 2*(pages-len(s.K)))
			}
			s.K = slices.Grow(s.K, pages-len(s.K))
			s.V = slices.Grow(s.V, pages-len(s.V))
			total += pages
		}
	}
	// Every page may come back to the free list (a policy's compression
	// after the prompt, the next Reset): one growth.
	if more := total - len(c.free); more > 0 {
		c.free = slices.Grow(c.free, more)
	}
}

// HeadsAgree reports that every KV head of layer l is known to hold the same
// positions at the same indices, without comparing them: since the last
// Reset, every change of the layer reached all its heads alike (appends,
// and evictions of the same indices from heads 0, 1, ... in turn, no
// other change between). False where that is not known (the heads may still
// agree: compare their positions).
func (c *KVCache) HeadsAgree(l int) bool {
	a := &c.agree[l]
	return !a.broken && a.done == 0
}

// agreeEvict follows an eviction of drop (sorted) from head h of layer l.
func (c *KVCache) agreeEvict(l, h int, drop []int32) {
	a := &c.agree[l]
	switch {
	case a.broken:
		return
	case h != a.done || h > 0 && !slices.Equal(drop, a.drop):
		a.broken = true
		return
	case h == 0:
		a.drop = append(a.drop[:0], drop...)
	}
	if a.done++; a.done == c.kvHeads {
		a.done = 0
	}
}

// Len is the number of tokens held by layer l, KV head h.
func (c *KVCache) Len(l, h int) int { return c.seqs[l][h].N }

// PageBytes is the memory of one page: keys and values.
func (c *KVCache) PageBytes() int64 { return int64(2 * c.pageSize * c.headDim * c.dtype.Size()) }

// ResidentBytes is the memory of the pages the sequences hold now: their
// tokens', and an empty page a sequence keeps for its next token after an
// eviction left its pages full (see Evict).
func (c *KVCache) ResidentBytes() int64 { return int64(c.total-len(c.free)-c.spares) * c.PageBytes() }

// HoldTail is the tokens past a prompt that Hold sets aside with it (its
// answer's first tokens).
const HoldTail = 64

// Hold announces that every sequence is to take n more tokens and keep
// them (a prompt under the dense protocol, and its answer's first HoldTail
// tokens). Each sequence that holds no token takes a run of pages for them
// at once (KVSeq.blk), from one bulk allocation, and takes its next pages
// from the run: its pages then lie one stride apart, which lets a GPU
// backend's attention find a page by arithmetic rather than by loading its
// pointer (the CUDA backend's pageArith). A sequence keeps its run across
// Reset and Evict (pages of the run leaving its lists return to the run),
// and takes a new one only when a prompt needs more: the old runs join the
// free list, which is sorted by address (sortFree), and each new run comes
// from its end where it holds enough (no growth; its pages may not be one
// stride apart), else from a bulk allocation. Pages of a run outside the lists count as neither
// resident nor free. Only a backend that allocates pages in bulk
// (KVPageAllocator) is served; for others Hold does nothing.
func (c *KVCache) Hold(n int) {
	pa, ok := c.be.(KVPageAllocator)
	if !ok || n <= 0 {
		return
	}
	count := (n + HoldTail + c.pageSize - 1) / c.pageSize
	grow := false // runs too short, first released together
	for l := range c.seqs {
		for h := range c.seqs[l] {
			if s := &c.seqs[l][h]; len(s.K) == 0 && len(s.blk) < count {
				grow = true
				c.free = append(c.free, s.blk...)
				c.spares -= len(s.blk)
				clear(s.blk)
				s.blk = s.blk[:0]
			}
		}
	}
	if !grow {
		return
	}
	c.sortFree()
	for l := range c.seqs {
		for h := range c.seqs[l] {
			s := &c.seqs[l][h]
			if len(s.K) > 0 || len(s.blk) >= count {
				continue
			}
			s.blk = slices.Grow(s.blk[:0], count)
			if f := len(c.free); f >= count {
				s.blk = append(s.blk, c.free[f-count:]...)
				clear(c.free[f-count:])
				c.free = c.free[:f-count]
			} else {
				bufs := make([]Buffer, 2*count)
				pa.AllocKVPages(c.pageSize*c.headDim, c.dtype, bufs)
				for i := range count {
					s.blk = append(s.blk, kvPage{k: bufs[2*i], v: bufs[2*i+1]})
				}
				c.total += count
			}
			c.spares += count
		}
	}
}

// sortFree orders the free list by the keys' addresses where the backend
// gives them (KVAddresser), so that the runs Hold takes from its end are
// pages of earlier runs and bulk allocations side by side, mostly one
// stride apart.
func (c *KVCache) sortFree() {
	if c.pa == nil || len(c.free) < 2 {
		return
	}
	type at struct {
		a uint64
		p kvPage
	}
	xs := make([]at, len(c.free))
	for i, p := range c.free {
		xs[i] = at{c.pa.KVPageAddr(p.k), p}
	}
	slices.SortFunc(xs, func(x, y at) int { return cmp.Compare(x.a, y.a) })
	for i := range xs {
		c.free[i] = xs[i].p
	}
}

// spareOf takes the next page of s's run (Hold), if any is left.
func (c *KVCache) spareOf(s *KVSeq) (kvPage, bool) {
	if s.used >= len(s.blk) || s.used != len(s.K) {
		return kvPage{}, false
	}
	s.used++
	c.spares--
	return s.blk[s.used-1], true
}

// AllocatedBytes is the memory of every page the cache has allocated, in use
// or free for reuse: what the process holds for this cache.
func (c *KVCache) AllocatedBytes() int64 { return int64(c.total) * c.PageBytes() }

// Reserve allocates pages ahead so that every sequence can grow to tokens
// tokens without allocating.
func (c *KVCache) Reserve(tokens int) {
	need := 0
	for l := range c.seqs {
		for h := range c.seqs[l] {
			s := &c.seqs[l][h]
			pages := (tokens + c.pageSize - 1) / c.pageSize
			if pages > len(s.K) {
				need += pages - len(s.K)
			}
			if cap(s.Pos) < tokens {
				pos := make([]int32, len(s.Pos), tokens)
				copy(pos, s.Pos)
				s.Pos = pos
			}
			if cap(s.K) < pages {
				k := make([]Buffer, len(s.K), pages)
				v := make([]Buffer, len(s.V), pages)
				copy(k, s.K)
				copy(v, s.V)
				s.K, s.V = k, v
			}
		}
	}
	for len(c.free) < need {
		c.free = append(c.free, c.newPage())
	}
}

func (c *KVCache) newPage() kvPage {
	c.total++
	return c.allocPage()
}

// allocPage makes a page: through AllocKV where the backend is a
// KVAllocator (float32 pages too, so that it counts them as KV memory).
func (c *KVCache) allocPage() kvPage {
	n := c.pageSize * c.headDim
	if ka, ok := c.be.(KVAllocator); ok {
		return kvPage{k: ka.AllocKV(n, c.dtype), v: ka.AllocKV(n, c.dtype)}
	}
	return kvPage{k: c.be.Alloc(n), v: c.be.Alloc(n)}
}

// freePage gives a page back where the backend is a BufferFreer.
func (c *KVCache) freePage(k, v Buffer) {
	if f, ok := c.be.(BufferFreer); ok {
		f.Free(k)
		f.Free(v)
	}
}

// Free gives every page back to the backend (where it is a BufferFreer):
// the tokens held, the free list and the recall reference. The cache is
// empty after, as after Reset, and allocates anew if used again.
func (c *KVCache) Free() {
	c.Reset() // the tokens' pages join the free list (or their runs); the reference's are freed
	for _, p := range c.free {
		c.freePage(p.k, p.v)
	}
	clear(c.free)
	c.free = c.free[:0]
	for l := range c.seqs {
		for h := range c.seqs[l] {
			s := &c.seqs[l][h]
			for _, p := range s.blk {
				c.freePage(p.k, p.v)
			}
			clear(s.blk)
			s.blk = s.blk[:0]
		}
	}
	c.total, c.spares = 0, 0
}

// TrackShifts makes every sequence carry a Shift per token (initially 0),
// moved with its token on eviction; a re-positioning policy sets the values.
func (c *KVCache) TrackShifts() {
	c.shifts = true
	for l := range c.seqs {
		for h := range c.seqs[l] {
			s := &c.seqs[l][h]
			for len(s.Shift) < s.N {
				s.Shift = append(s.Shift, 0)
			}
		}
	}
}

// RecordAll makes the cache keep, beside the policy's tokens, a reference
// copy of every token appended from now on, never evicted: the full-attention
// key set that attention recall is measured against. Its memory is not part
// of ResidentBytes (see ReferenceBytes).
func (c *KVCache) RecordAll() {
	if c.ref != nil {
		return
	}
	c.ref = make([][]KVSeq, c.layers)
	for l := range c.ref {
		c.ref[l] = make([]KVSeq, c.kvHeads)
		for h := range c.ref[l] {
			c.ref[l][h] = newSeq(c.pageSize)
		}
	}
}

// Reference returns the reference sequences of layer l (see RecordAll), or
// nil when the cache does not record them.
func (c *KVCache) Reference(l int) []KVSeq {
	if c.ref == nil {
		return nil
	}
	return c.ref[l]
}

// ReferenceBytes is the memory of the reference copy kept for recall.
func (c *KVCache) ReferenceBytes() int64 { return int64(c.refPages) * c.PageBytes() }

// Evict removes the tokens at indices drop (distinct; sorted in place) from
// layer l, KV head h. The last tokens move into the freed slots, so the order
// of tokens is not kept; positions and shifts travel with them. Pages left
// empty return to the free list, but for one past a sequence's last full
// page (the next token's), which the sequence keeps; ShiftSpan and
// ShiftEqual are reset.
//
// The key and value copies are those of the final layout: a token moved
// twice (into a hole that later became the last slot, then on) is copied
// once, from where it was, so no copy reads a slot another one writes and
// the backend may run them all together.
func (c *KVCache) Evict(l, h int, drop []int32) {
	s := &c.seqs[l][h]
	if len(drop) == 1 { // a decode step's usual eviction: no sorting, no move list
		c.agreeEvict(l, h, drop)
		c.evictOne(l, h, s, int(drop[0]))
		return
	}
	c.sortDrops(drop, s.N)
	c.agreeEvict(l, h, drop)
	// The swap-removes, last drop first, track which original token each
	// slot past the kept count holds (held); a token moved into such a slot
	// moves on when that slot becomes the last, so only the copies into the
	// kept slots are made, each from the token's original slot.
	keep := s.N - len(drop)
	if keep < 0 {
		panic(fmt.Sprintf("kvcache: evict %d of %d tokens (layer %d head %d)", len(drop), s.N, l, h))
	}
	c.moves = c.moves[:0] // (destination, original slot) of the copies
	c.held = slices.Grow(c.held[:0], len(drop))[:len(drop)]
	for i := range c.held {
		c.held[i] = int32(keep + i)
	}
	for i := len(drop) - 1; i >= 0; i-- {
		d := int(drop[i])
		if d < 0 || d >= s.N || (i > 0 && drop[i-1] == drop[i]) {
			panic(fmt.Sprintf("kvcache: evict index %d of %d tokens (layer %d head %d), or repeated", d, s.N, l, h))
		}
		last := s.N - 1 // >= keep
		if d != last {
			from := c.held[last-keep]
			if d >= keep {
				c.held[d-keep] = from // moves on when d is the last
			} else {
				c.moves = append(c.moves, [2]int32{int32(d), from})
			}
			s.Pos[d] = s.Pos[last]
			s.Ascending = false // the last token moved into the hole
			if c.shifts {
				s.Shift[d] = s.Shift[last]
			}
		}
		s.N--
	}
	ps := c.pageSize
	s.Writes += uint64(len(c.moves))
	am, byAddr := c.kv().(KVAddrMover)
	mv, bulk := c.kv().(KVMover)
	switch {
	case len(c.moves) == 0:
	case byAddr && len(s.addr) == 2*len(s.K):
		am.MoveKVsAt(s.addr, c.moves, ps, c.headDim)
	case bulk:
		mv.MoveKVs(s.K, s.V, c.moves, ps, c.headDim)
	default:
		for _, m := range c.moves {
			c.moveKV(s, int(m[0]), int(m[1]))
		}
	}
	c.trim(s)
}

// sortDrops sorts drop, indices of a sequence of n tokens, in place: where
// they are many (a prompt's compression drops most of a sequence: a
// comparison sort of 31K indices took about a millisecond), by a bitmap
// of the n indices read in order; else, or where an index is out of range
// or repeated (Evict's checks then say so), by comparisons.
func (c *KVCache) sortDrops(drop []int32, n int) {
	if len(drop) < 256 || len(drop) < n/16 {
		slices.Sort(drop)
		return
	}
	words := (n + 63) / 64
	c.marks = slices.Grow(c.marks[:0], words)[:words]
	clear(c.marks)
	for _, d := range drop {
		if d < 0 || int(d) >= n || c.marks[d>>6]&(1<<(d&63)) != 0 {
			slices.Sort(drop)
			return
		}
		c.marks[d>>6] |= 1 << (d & 63)
	}
	k := 0
	for w, m := range c.marks {
		for m != 0 {
			drop[k] = int32(w<<6 + bits.TrailingZeros64(m))
			k++
			m &= m - 1
		}
	}
}

// evictOne is Evict of the one token d of sequence s (layer l, KV head h):
// the last token moves into its slot.
func (c *KVCache) evictOne(l, h int, s *KVSeq, d int) {
	if d < 0 || d >= s.N {
		panic(fmt.Sprintf("kvcache: evict index %d of %d tokens (layer %d head %d), or repeated", d, s.N, l, h))
	}
	if last := s.N - 1; d != last {
		s.Pos[d] = s.Pos[last]
		s.Ascending = false // the last token moved into the hole
		if c.shifts {
			s.Shift[d] = s.Shift[last]
		}
		c.moveKV(s, d, last)
		s.Writes++
	}
	s.N--
	c.trim(s)
}

// trim shortens s's positions and shifts to its N tokens and frees the
// pages past them, but for the empty page past its last full one.
func (c *KVCache) trim(s *KVSeq) {
	s.Pos = s.Pos[:s.N]
	if c.shifts {
		s.Shift = s.Shift[:s.N]
	}
	keep := (s.N + c.pageSize - 1) / c.pageSize
	if s.N%c.pageSize == 0 && keep < len(s.K) {
		// Full pages: the empty page past them stays for the next token.
		// A bounded policy appends a token and evicts one every step;
		// freeing the page would take it back one step later, and change
		// the lists (Gen) a backend keeps a copy of, every step.
		keep++
	}
	s.ShiftSpan, s.ShiftEqual = 0, false
	if keep < len(s.K) {
		s.Gen++ // pages leave the lists: the next ones appended differ
	}
	for i := keep; i < len(s.K); i++ {
		if i >= s.used { // a page of the run returns to it (its place: s.blk[i])
			c.free = append(c.free, kvPage{k: s.K[i], v: s.V[i]})
		}
		s.K[i], s.V[i] = nil, nil
	}
	if s.used > keep {
		c.spares += s.used - keep
		s.used = keep
	}
	s.K, s.V = s.K[:keep], s.V[:keep]
	if len(s.addr) > 2*keep {
		s.addr = s.addr[:2*keep]
	}
}

func (c *KVCache) takePage() kvPage {
	if n := len(c.free); n > 0 {
		p := c.free[n-1]
		c.free = c.free[:n-1]
		return p
	}
	return c.newPage()
}

// Append adds rows tokens to every KV head of layer l: row r of k and v
// [rows, kvHeads*headDim] at position pos[r].
func (c *KVCache) Append(l int, k, v Buffer, rows int, pos []int) {
	if len(pos) < rows {
		panic(fmt.Sprintf("kvcache: %d positions for %d rows", len(pos), rows))
	}
	if a := &c.agree[l]; a.done != 0 { // amid a round of evictions: the heads differ
		a.broken = true
	}
	for h := range c.seqs[l] {
		c.appendSeq(&c.seqs[l][h], h, k, v, rows, pos, false)
		if c.shifts {
			s := &c.seqs[l][h]
			for len(s.Shift) < s.N {
				s.Shift = append(s.Shift, 0)
			}
		}
		if c.ref != nil {
			c.appendSeq(&c.ref[l][h], h, k, v, rows, pos, true)
		}
	}
}

func (c *KVCache) appendSeq(s *KVSeq, h int, k, v Buffer, rows int, pos []int, ref bool) {
	kvDim := c.kvHeads * c.headDim
	// Room for the rows' positions and pages at once: a prompt's chunk
	// appends thousands (grown one by one, the copies cost a fresh cache's
	// prefill several milliseconds a layer on the host).
	pages := (s.N+rows+c.pageSize-1)/c.pageSize - len(s.K) // new pages needed
	if pages > 0 {
		if c.pa != nil && len(s.addr) == 2*len(s.K) { // push appends the pages' addresses too
			s.addr = slices.Grow(s.addr, 2*pages)
		}
		s.K = slices.Grow(s.K, pages)
		s.V = slices.Grow(s.V, pages)
	}
	s.Pos = slices.Grow(s.Pos, rows)
	if ka, ok := c.be.(KVAppender); ok && rows > 1 {
		c.seqPages(s, pages, ref)
		p0, p1 := s.N/c.pageSize, (s.N+rows-1)/c.pageSize+1
		ka.AppendKV(s.K[p0:p1], s.V[p0:p1], s.N, c.pageSize, k, v, rows, h, c.headDim, kvDim)
		s.Writes += uint64(rows)
		for r := range rows {
			s.track(int32(pos[r]))
			s.Pos = append(s.Pos, int32(pos[r]))
		}
		s.N += rows
		return
	}
	for r := 0; r < rows; r++ {
		slot := s.N % c.pageSize
		if slot == 0 && s.N/c.pageSize == len(s.K) {
			p := c.seqPage(s, ref)
			c.push(s, p.k, p.v)
		}
		if ao, ok := c.addrs(s); ok {
			pi := 2 * (s.N / c.pageSize)
			ao.StoreKVAt(s.addr[pi], s.addr[pi+1], slot, k, v, r, h, c.headDim, kvDim)
		} else {
			c.kv().StoreKV(s.K[s.N/c.pageSize], s.V[s.N/c.pageSize], slot, k, v, r, h, c.headDim, kvDim)
		}
		s.Writes++
		s.track(int32(pos[r]))
		s.Pos = append(s.Pos, int32(pos[r]))
		s.N++
	}
}

// track keeps the order and bound flags as position p is appended: the
// positions ascend while each new one exceeds the last, and MaxPos covers
// them (eviction only lowers the true maximum, so the bound stays valid).
func (s *KVSeq) track(p int32) {
	s.Ascending = len(s.Pos) == 0 || (s.Ascending && p > s.Pos[len(s.Pos)-1])
	if !s.Bounded || p > s.MaxPos {
		s.Bounded, s.MaxPos = true, p
	}
}

// seqPage is the next page for s: a fresh one for the recall reference
// (ref), else the next of its run (Hold) or one from the free list.
func (c *KVCache) seqPage(s *KVSeq, ref bool) kvPage {
	if ref {
		c.refPages++
		return c.allocPage()
	}
	if p, ok := c.spareOf(s); ok {
		return p
	}
	return c.takePage()
}

// seqPages appends count pages (none where count <= 0) to s: seqPage's,
// the new ones made in one call where the backend is a KVPageAllocator.
func (c *KVCache) seqPages(s *KVSeq, count int, ref bool) {
	for ; count > 0 && !ref; count-- {
		p, ok := c.spareOf(s)
		if !ok {
			break
		}
		c.push(s, p.k, p.v)
	}
	for ; count > 0 && !ref && len(c.free) > 0; count-- {
		p := c.takePage()
		c.push(s, p.k, p.v)
	}
	pa, ok := c.be.(KVPageAllocator)
	if count <= 0 || !ok {
		for range count {
			p := c.seqPage(s, ref)
			c.push(s, p.k, p.v)
		}
		return
	}
	bufs := make([]Buffer, 2*count)
	pa.AllocKVPages(c.pageSize*c.headDim, c.dtype, bufs)
	for i := range count {
		c.push(s, bufs[2*i], bufs[2*i+1])
	}
	if ref {
		c.refPages += count
	} else {
		c.total += count
	}
}

// Reset empties the cache; its pages go to the free list.
func (c *KVCache) Reset() {
	for l := range c.agree { // empty heads agree
		c.agree[l].broken, c.agree[l].done = false, 0
	}
	pages := 0
	for l := range c.seqs {
		for h := range c.seqs[l] {
			pages += len(c.seqs[l][h].K)
		}
	}
	c.free = slices.Grow(c.free, pages) // a long prompt's million pages: one growth
	for l := range c.seqs {
		for h := range c.seqs[l] {
			s := &c.seqs[l][h]
			for i := s.used; i < len(s.K); i++ { // the run's pages stay with it
				c.free = append(c.free, kvPage{k: s.K[i], v: s.V[i]})
			}
			c.spares += s.used
			s.used = 0
			if len(s.K) > 0 {
				s.Gen++
			}
			s.K, s.V, s.Pos, s.Shift, s.N, s.ShiftSpan, s.ShiftEqual = s.K[:0], s.V[:0], s.Pos[:0], s.Shift[:0], 0, 0, false
			s.addr = s.addr[:0]
			s.Bounded, s.MaxPos, s.Ascending = false, 0, false
		}
	}
	if c.ref != nil {
		for l := range c.ref {
			for h := range c.ref[l] {
				// The reference's own pages go back to the backend: a
				// fresh sequence, with its ID and a new generation.
				s := &c.ref[l][h]
				for i := range s.K {
					c.freePage(s.K[i], s.V[i])
				}
				*s = KVSeq{PageSize: c.pageSize, ID: s.ID, Gen: s.Gen + 1}
			}
		}
		c.refPages = 0
	}
}
