package cuda

// Device-resident page tables (issue 14, the host's share of a decode
// step). An attention kernel finds token t of a KV head in page t/ps of the
// head's list of page pointers. Those lists used to be rebuilt on the host
// and uploaded for every call: at 32K tokens, 16K page pointers per layer, a
// cache miss each. Now each KV sequence with an ID (runtime.KVSeq.ID, every
// sequence of a runtime.KVCache) has its key and value lists in one device
// pool, kept by the backend and extended by the pages appended since the
// last call; a change of KVSeq.Gen (pages left the lists) re-sends the lists
// from the first page that differs. A decode step that adds no page uploads
// no pointer.
//
// For the attention code (backend_attention.go): an attention call starts
// its lists with callPages(seqs, refs) and takes each sequence's offsets
// with tablePages, or pagePtrs where callPages did not; when every sequence has an
// ID the offsets index the pool and putMeta returns the pool as the call's
// pointer array (no pointer upload), else they index the call's own
// pointers, uploaded by putMeta as before. Kernels read the array as
// before (ptrs[off + t/ps]); no kernel signature changed. Within one call
// the two sources do not mix: pagePtrs panics while the call's lists come
// from the tables.
//
// Quest's selection made on the device (runtime.AttnArgs.Chosen, see
// backend_quest.go) keeps the head table's contract too: Attend's loop over
// the heads takes each head's (offset, count) from chosenHead, for head 0
// first and once every other int of the call is appended; putMeta then
// copies the selection, on the device, right after the call's ints, where
// the offsets point (token indices, as Sel's). A kernel that reads Sel
// through the head table reads it unchanged.

import (
	"fmt"
	"math"
	"math/bits"
	"slices"

	"github.com/kvbench/kvbench/runtime"
)

// pageTables is the device pool of the page lists of the KV sequences the
// backend has seen, by KVSeq.ID. Regions of the pool are powers of two of
// 8-byte words; one holds a sequence's key list then its value list. A
// region a sequence outgrows goes to a free list and is reused; since every
// write to the pool is queued on the device's one stream, a kernel queued
// before a region is reused has read it before it is overwritten. The
// backend cannot tell when a sequence is gone (its cache dropped or freed),
// so before the pool grows, the tables no call has used for tableIdleCalls
// calls are dropped: a sequence still alive gets a new table at its next
// call (its lists uploaded whole once).
type pageTables struct {
	off   bool              // KVBENCH_PAGE_TABLES=off: every call uploads its lists
	pool  Ptr               // [words] page pointers
	words int64             // the pool's size in words
	top   int64             // words handed out from the pool's start
	free  map[int64][]int64 // released regions by size in words: their offsets
	seqs  map[uint64]*pageTable
	// slots[i-1] is the table whose KVSeq.Slot is i (nil: dropped; its
	// index free for another in freeSlots): a sequence whose Slot names a
	// table of its ID finds it without the map.
	slots     []*pageTable
	freeSlots []int32
	clock     uint64 // calls that used the tables
	// call says the attention call being built takes its lists from the
	// pool (set by callPages, cleared by putMeta).
	call bool
	// hold keeps the uploads staged across calls (AttendBatch sends those
	// of all its calls at once, before its launches).
	hold bool
	// held is the words of the regions handed out for lists the device
	// writes (Quest's choices: holdRegion), in no table.
	held int64
	// low is the lowest page address the tables have held, 16-byte
	// aligned (0: none yet): where the calls' page offsets count from
	// (arithWords, RH_PBASE).
	low   uint64
	runs  []tableRun // scratch: the uploads staged
	host  []uint64   // scratch: the pointers they upload
	pairs []uint64   // scratch: (word, pointer) pairs of a scattered upload
}

// pageTable is the device copy of one sequence's page lists.
type pageTable struct {
	id   uint64 // the sequence's KVSeq.ID
	slot int32  // its index in pageTables.slots, plus one
	gen  uint64
	// What the last lean tensor-core call over the sequence saw (earlyReads):
	// the device's serialising count after its KV writes were queued, the
	// sequence's Writes and N then.
	watched bool
	serial  uint64
	writes  uint64
	n       int
	off     int64            // region: key list at off, value list at off+size
	size    int64            // pages each list has room for (0: no region yet)
	k, v    []runtime.Buffer // the pages the device lists hold, as the host knows them
	kr, vr  pageRun          // where the lists' first pages lie (pageArith)
	kvt     int32            // page type of the lists; -1 while they are empty
	used    uint64           // the clock of the last call that used it
}

// tableRun is an upload into the pool: words words at pool offset at, from
// index from of pageTables.host.
type tableRun struct{ at, from, words int64 }

// minTablePages is the room of a sequence's first region, per list.
const minTablePages = 64

// tablePoolMin is the size of the first pool, in words (tests make it
// small, to see the pool grow).
var tablePoolMin int64 = 1 << 16

// tableIdleCalls is how many calls a table may go unused before the pool
// may drop it (a decode step of a 32-layer model makes 32 calls).
var tableIdleCalls uint64 = 1 << 12

// initTables reads KVBENCH_PAGE_TABLES (on, the default, or off).
func (b *Backend) initTables() error {
	off, err := envOff("KVBENCH_PAGE_TABLES")
	b.pt.off = off
	return err
}

// callPages starts the page lists of an attention call over seqs and, when
// refs is not nil, the reference sequences of recall: from the device
// tables when every one of them has an ID (the tables brought up to date
// here, uploading only what changed), else through pagePtrs. It resets the
// call's pointers and page type.
func (b *Backend) callPages(seqs, refs []runtime.KVSeq) {
	b.hPtrs, b.kvt = b.hPtrs[:0], -1
	pt := &b.pt
	pt.call = false
	if !b.refreshSeqs(seqs, refs) {
		return
	}
	if !pt.hold {
		b.sendRuns()
	}
	for _, list := range [][]runtime.KVSeq{seqs, refs} {
		for i := range list {
			t := b.table(&list[i])
			if t.kvt < 0 {
				continue
			}
			if b.kvt < 0 {
				b.kvt = t.kvt
			} else if b.kvt != t.kvt {
				panic("cuda: one attention call over KV pages of different types")
			}
		}
	}
	pt.call = true
}

// refreshSeqs brings the device tables of the sequences of seqs and refs
// up to date, their uploads staged (sendRuns sends them), and says whether
// it could: false, nothing refreshed, where the tables are off or a
// sequence has no ID.
func (b *Backend) refreshSeqs(seqs, refs []runtime.KVSeq) bool {
	if b.pt.off {
		return false
	}
	for _, list := range [][]runtime.KVSeq{seqs, refs} {
		for i := range list {
			if list[i].ID == 0 {
				return false
			}
		}
	}
	b.pt.clock++
	for _, list := range [][]runtime.KVSeq{seqs, refs} {
		for i := range list {
			b.refresh(&list[i])
		}
	}
	return true
}

// tablePages returns the offsets of the key and value page lists of s in
// the device tables' pool, which callPages has brought up to date. It reads
// the tables alone: AttendBatch's calls take theirs side by side.
func (b *Backend) tablePages(s *runtime.KVSeq) (k, v int32) { return b.table(s).lists() }

// lists is the offsets of t's key and value lists in the pool.
func (t *pageTable) lists() (k, v int32) { return int32(t.off), int32(t.off + t.size) }

// pageArith returns where the page lists of table t lie when every page
// of each is a stride from the one before, the same stride in both (a
// sequence whose pages came from one allocation: runtime.KVCache.Hold): the
// first key and value pages' addresses and the stride in bytes, which the
// split-KV kernels turn into a page's address with no load of its pointer
// (arithWords). stride is 0 where the lists are not so, where t is nil
// (the call's lists are not the tables'), or with KVBENCH_ATTN_ARITH=off. A
// list of one page has any stride: 1.
func (b *Backend) pageArith(t *pageTable) (kb, vb uint64, stride int32) {
	if b.split.noArith || t == nil || len(t.k) == 0 || len(t.k) != len(t.v) ||
		t.kr.n != len(t.k) || t.vr.n != len(t.v) {
		return 0, 0, 0
	}
	if len(t.k) == 1 {
		return t.kr.base, t.vr.base, 1
	}
	if t.kr.stride != t.vr.stride || t.kr.stride != int64(int32(t.kr.stride)) {
		return 0, 0, 0
	}
	return t.kr.base, t.vr.base, int32(t.kr.stride)
}

// pageRun is the start of a page list whose pages are a stride apart: its
// first n pages lie at base + i*stride (stride is set once n >= 2).
type pageRun struct {
	base   uint64
	stride int64
	n      int
}

// add notes that page i of the list lies at p (pages are added in order;
// one past the run ends it for good, until cut).
func (r *pageRun) add(i int, p uint64) {
	if i != r.n {
		return
	}
	switch i {
	case 0:
		r.base, r.n = p, 1
	case 1:
		if r.stride = int64(p - r.base); r.stride != 0 {
			r.n = 2
		}
	default:
		if p == r.base+uint64(r.stride*int64(i)) {
			r.n++
		}
	}
}

// cut drops the run's pages from index n on (the list kept n pages).
func (r *pageRun) cut(n int) { r.n = min(r.n, n) }

// table returns the table of s (nil: none), through s.Slot where it names
// one of s's ID, else by ID. It only reads the tables.
func (b *Backend) table(s *runtime.KVSeq) *pageTable {
	pt := &b.pt
	if i := int(s.Slot) - 1; i >= 0 && i < len(pt.slots) {
		if t := pt.slots[i]; t != nil && t.id == s.ID {
			return t
		}
	}
	return pt.seqs[s.ID]
}

// refresh brings the table of s up to date: it finds where the device's
// lists stop matching s (the whole of them while s.Gen is unchanged), gives
// the table room, and stages the pointers of the pages past that point
// (b.pt.host, b.pt.runs) for sendRuns.
func (b *Backend) refresh(s *runtime.KVSeq) {
	pt := &b.pt
	pt.ready()
	t := b.table(s)
	if t == nil {
		t = &pageTable{id: s.ID, gen: s.Gen, kvt: -1}
		pt.seqs[s.ID] = t
		if n := len(pt.freeSlots); n > 0 {
			t.slot = pt.freeSlots[n-1]
			pt.freeSlots = pt.freeSlots[:n-1]
			pt.slots[t.slot-1] = t
		} else {
			pt.slots = append(pt.slots, t)
			t.slot = int32(len(pt.slots))
		}
	}
	s.Slot = t.slot
	t.used = pt.clock
	if t.gen != s.Gen || len(s.K) < len(t.k) || len(s.V) < len(t.v) {
		// Pages left the lists: keep what still matches.
		t.k = t.k[:matching(t.k, s.K)]
		t.v = t.v[:matching(t.v, s.V)]
		t.kr.cut(len(t.k))
		t.vr.cut(len(t.v))
		t.gen = s.Gen
	}
	if len(t.k) == 0 && len(t.v) == 0 {
		t.kvt = -1
	}
	if len(t.k) == len(s.K) && len(t.v) == len(s.V) {
		return
	}
	if need := int64(max(len(s.K), len(s.V))); need > t.size {
		// Room for the lists' capacity too (a prompt's pages to come:
		// KVCache.Room), up to four times what they hold: a table moves
		// once a prompt, not once a chunk.
		b.moveTable(t, max(need, min(int64(min(cap(s.K), cap(s.V))), 4*need)))
	}
	for _, l := range []struct {
		host  *[]runtime.Buffer
		pages []runtime.Buffer
		run   *pageRun
		at    int64
	}{{&t.k, s.K, &t.kr, t.off}, {&t.v, s.V, &t.vr, t.off + t.size}} {
		have := len(*l.host)
		if have == len(l.pages) {
			continue
		}
		from := int64(len(pt.host))
		for i, p := range l.pages[have:] {
			ptr, typ := b.kvPage(p)
			l.run.add(have+i, uint64(ptr))
			if a := uint64(ptr) &^ 15; pt.low == 0 || a < pt.low {
				pt.low = a
			}
			if t.kvt < 0 {
				t.kvt = int32(typ)
			} else if t.kvt != int32(typ) {
				panic(fmt.Sprintf("cuda: KV sequence %d holds pages of different types", s.ID))
			}
			pt.host = append(pt.host, uint64(ptr))
		}
		pt.runs = append(pt.runs, tableRun{at: l.at + int64(have), from: from, words: int64(len(l.pages) - have)})
		if cap(*l.host) < len(l.pages) { // room for the table's pages at once (append grows by a quarter)
			*l.host = slices.Grow(*l.host, max(len(l.pages), int(t.size))-have)
		}
		*l.host = append(*l.host, l.pages[have:]...)
	}
}

// matching is the length of the common start of have and now.
func matching(have, now []runtime.Buffer) int {
	n := min(len(have), len(now))
	for i := range n {
		if have[i] != now[i] {
			return i
		}
	}
	return n
}

// scatterRuns is the fewest runs sendRuns scatters with one kernel rather
// than copying run by run (a decode step's runs are mostly one word each:
// the page a sequence just took, in each of its lists).
const scatterRuns = 4

// sendRuns queues the uploads refresh noted, through the staging arena: a
// few runs one copy each, more as (word, pointer) pairs that be_scatter64
// writes into the pool in one launch.
func (b *Backend) sendRuns() {
	pt := &b.pt
	if len(pt.runs) == 0 {
		return
	}
	b.flushKV() // reserve's rule: pending operations first
	if len(pt.runs) >= scatterRuns {
		pt.pairs = pt.pairs[:0]
		for _, r := range pt.runs {
			for w := range r.words {
				pt.pairs = append(pt.pairs, uint64(r.at+w), pt.host[r.from+w])
			}
		}
		b.reserve(span(int64(len(pt.pairs)) * 8))
		p := put(b, pt.pairs)
		n := len(pt.pairs) / 2
		b.launch("be_scatter64", Dim3{(n + 255) / 256, 1, 1}, Dim3{256, 1, 1}, pt.pool, p, int32(n))
	} else {
		n := span(int64(len(pt.host)) * 8)
		b.reserve(n)
		src := b.st.off
		copy(b.st.host.Bytes()[src:], raw(pt.host))
		b.st.off += n
		for _, r := range pt.runs {
			must(b.D.CopyHtoDAsync(pt.pool.Add(r.at*8), b.st.host, src+r.from*8, r.words*8))
		}
	}
	pt.runs, pt.host = pt.runs[:0], pt.host[:0]
}

// moveTable gives t a region of room for at least pages pages per list,
// copying the lists it holds (on the device) and releasing its old region.
func (b *Backend) moveTable(t *pageTable, pages int64) {
	size := max(int64(minTablePages), int64(1)<<bits.Len64(uint64(pages-1)))
	pt := &b.pt
	if len(pt.runs) > 0 {
		b.sendRuns() // staged words (held for a batch) go before the lists are copied
	}
	off := b.tableRegion(2 * size)
	if t.size > 0 {
		for i, n := range []int{len(t.k), len(t.v)} {
			if n > 0 {
				must(b.D.CopyAsync(pt.pool.Add((off+int64(i)*size)*8), pt.pool.Add((t.off+int64(i)*t.size)*8), int64(n)*8))
			}
		}
		pt.free[2*t.size] = append(pt.free[2*t.size], t.off)
	}
	t.off, t.size = off, size
}

// tableRegion returns the offset of a free region of words words (a power
// of two), growing the pool when none is free.
func (b *Backend) tableRegion(words int64) int64 {
	pt := &b.pt
	take := func() (int64, bool) {
		l := pt.free[words]
		if len(l) == 0 {
			return 0, false
		}
		pt.free[words] = l[:len(l)-1]
		return l[len(l)-1], true
	}
	if off, ok := take(); ok {
		return off
	}
	if pt.top+words > pt.words && b.sweepTables() {
		if off, ok := take(); ok {
			return off
		}
	}
	if pt.top+words > pt.words {
		n := max(2*pt.words, pt.top+words, tablePoolMin)
		if n > math.MaxInt32 {
			// Offsets into the pool are int32 in the kernels.
			panic(fmt.Sprintf("cuda: page tables of %d pointers, more than the kernels can index", n))
		}
		p, err := b.D.Alloc(n * 8)
		must(err)
		if pt.pool != 0 {
			if pt.top > 0 {
				must(b.D.CopyAsync(p, pt.pool, pt.top*8))
			}
			b.retire(pt.pool, nil) // queued kernels read the old pool: freed at the next wait
		}
		pt.pool, pt.words = p, n
	}
	off := pt.top
	pt.top += words
	return off
}

// ready makes the tables' maps before their first use.
func (pt *pageTables) ready() {
	if pt.seqs == nil {
		pt.seqs, pt.free = map[uint64]*pageTable{}, map[int64][]int64{}
	}
}

// holdRegion hands out a region of words words (a power of two) for lists
// that kernels write into the pool (Quest's choices, questlists.go), until
// releaseRegion.
func (b *Backend) holdRegion(words int64) int64 {
	b.pt.ready()
	off := b.tableRegion(words)
	b.pt.held += words
	return off
}

// releaseRegion frees a region holdRegion handed out; work queued before
// reads it before it is written again (one stream).
func (b *Backend) releaseRegion(off, words int64) {
	pt := &b.pt
	pt.free[words] = append(pt.free[words], off)
	pt.held -= words
}

// seqTables brings the device tables of seqs up to date for a kernel queued
// before the attention call over them that reads them (Quest's choice,
// which copies page pointers into its lists: flushQuest sends the uploads
// staged here before it launches the choices, with those of the other
// streams' Chooses), and appends each sequence's key and value list offsets
// to out. It returns false (out as it was, nothing refreshed) where the
// tables are off or a sequence has no ID.
func (b *Backend) seqTables(seqs []runtime.KVSeq, out []int32) ([]int32, bool) {
	if !b.refreshSeqs(seqs, nil) {
		return out, false
	}
	for i := range seqs {
		k, v := b.tablePages(&seqs[i])
		out = append(out, k, v)
	}
	return out, true
}

// sweepTables drops the tables unused for tableIdleCalls calls, their
// regions freed, and says whether it dropped any.
func (b *Backend) sweepTables() bool {
	pt := &b.pt
	dropped := false
	for id, t := range pt.seqs {
		if pt.clock-t.used < tableIdleCalls {
			continue
		}
		if t.size > 0 {
			pt.free[2*t.size] = append(pt.free[2*t.size], t.off)
		}
		delete(pt.seqs, id)
		pt.slots[t.slot-1] = nil
		pt.freeSlots = append(pt.freeSlots, t.slot)
		dropped = true
	}
	return dropped
}

// tableWords is the pool's size in words, the words handed out from it,
// and those in the regions of live tables and in the free lists (for
// tests: handed out = live + free).
func (b *Backend) tableWords() (size, top, live, free int64) {
	pt := &b.pt
	for _, t := range pt.seqs {
		live += 2 * t.size
	}
	live += pt.held
	for w, l := range pt.free {
		free += w * int64(len(l))
	}
	return pt.words, pt.top, live, free
}

// readTable downloads the key and value lists the device holds for the
// sequence id, nil when it has none (for tests).
func (b *Backend) readTable(id uint64) (k, v []uint64) {
	t := b.pt.seqs[id]
	if t == nil {
		return nil, nil
	}
	k, v = make([]uint64, len(t.k)), make([]uint64, len(t.v))
	get(b, k, b.pt.pool.Add(t.off*8))
	get(b, v, b.pt.pool.Add((t.off+t.size)*8))
	return slices.Clip(k), slices.Clip(v)
}

// earlyReads says whether the blocks of a lean tensor-core call over a.Seqs
// (its ints h, their descriptors first) may read the page pointers and every
// token's keys and values but each sequence's last before waiting for the
// kernel ahead of them (RH_EARLY; the kernel may start while that one, and
// the ones before it, still run). It holds when, for every sequence, the
// call reads up to its last token, and since the last such call over it (a
// previous decode step): the sequence took exactly one write, the store of
// one token appended (runtime.KVSeq.Writes and N each one more), and the
// stream was serialised after that call (Device.Serial: an upload, a wait,
// a plain launch), so every write before it has finished; the page tables
// are written by copies and by be_scatter64, a plain launch that does not
// let its dependents start before it ends (no pdl_trigger: it must not
// gain one). Called after the call's
// KV writes are queued (flushKV), it notes what each sequence's table
// sees now for the next call.
func (b *Backend) earlyReads(a *runtime.AttnArgs, h []int32) bool {
	now, ok := b.D.Serial(), !b.split.noEarly
	for g := range a.Seqs {
		s := &a.Seqs[g]
		t := b.table(s)
		if t == nil || s.ID == 0 {
			ok = false
			continue
		}
		ok = ok && t.watched && t.serial != now && s.Writes == t.writes+1 && s.N == t.n+1 &&
			int(h[g*sdWords+11]) == s.N
		t.watched, t.serial, t.writes, t.n = true, now, s.Writes, s.N
	}
	return ok
}
