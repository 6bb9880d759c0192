package cuda

import (
	"slices"

	"github.com/kvbench/kvbench/runtime"
)

// Quest's bounds and choices of a batch step, launched together. Quest
// folds each stream's new keys into its page bounds (Extend) and chooses
// its pages (Choose) in its policy hook, stream after stream, before the
// batch attends: launched at once, that was three launches, two uploads
// and a read a (stream, layer). The backend queues them instead
// (questQueue) and launches them when something needs their results
// (flushQuest: Attend, AttendBatch, the scores downloaded, a choice read
// back, a bounds or choice buffer freed or grown): every queued Extend as
// one be_quest_extend (its descriptors are per KV head already), or, where
// each folds one token into its last page (a decode step), in blocks of the
// choice's launch; every queued Choose as one be_quest_score_batch and one
// be_quest_choose_batch over a table of calls (QuestCall in quest.cu), with
// one upload (carried by attn_rtb_put launches where they fit: putCarried).
// A choice's counts are known on the host when Choose returns; its token
// indices wait for the launch, and its distinct-token counts too, which the
// device writes straight into the choice's pinned host memory (no read).
// KVBENCH_BATCH_ATTN=off launches each at once (for comparison).

// questQueue is the Quest work queued since the last flushQuest.
type questQueue struct {
	// Extends: be_quest_extend descriptors (QX_WORDS a KV head; their page
	// and bounds offsets index xPtrs) and the most bounds pages a head
	// touches; every one with the same page, head dim and page type.
	xInts            []int32
	xPtrs            []uint64
	xMost            int
	xPage, xHd, xKvt int32
	// xMany: some descriptor folds more than one token (into pages the
	// scores may read: the Extends then run before them, not beside the
	// choice).
	xMany bool
	gen   uint64 // counts the flushes (pageBounds.gen: the last one whose queue it extended)
	// Chooses: their ints (2*heads + kvHeads each: be_quest_score's and
	// be_quest_choose_batch's layout), their KV heads' bounds (every one of
	// the same page, head dim and page type), the calls.
	cInts  []int32
	cPtrs  []uint64
	calls  []questJob
	scores int64 // doubles the calls' scores take
	cMost  int   // most pages a head scores
	cHeads int   // most query heads
	cKV    int   // most KV heads
	cPage  int32
	cHd    int32
	cKvt   int32 // the calls' bounds' page type
	tab    []uint64
}

// questJob is one queued Choose.
type questJob struct {
	c                        *choice
	q                        Ptr
	ints, bounds, heads, kvh int32
	group, k                 int32
	scores                   int64 // its first score
	lists, kv                int32 // its heads' page lists in the pool (-1: none), its KV heads' list offsets in its ints
}

// questTabWords is the 8-byte words of a QuestCall (quest.cu): q, scores,
// pages, sel, cov, done, then (ints, bounds), (heads, group), (K, cap),
// (lists, kv).
const questTabWords = 10

// queueExtend queues an Extend's descriptors (b.hInts, b.hPtrs, as
// be_quest_extend takes them for one call).
func (b *Backend) queueExtend(touched int, page, hd, kvt int32) {
	q := &b.qq
	if len(q.xInts) > 0 && (q.xPage != page || q.xHd != hd || q.xKvt != kvt) {
		b.flushQuest()
	}
	base := int32(len(q.xPtrs))
	for i := 0; i+qxWords <= len(b.hInts); i += qxWords {
		d := b.hInts[i : i+qxWords]
		if d[1] > d[0] { // tokens to fold: its page and bounds offsets index xPtrs now
			d[2] += base
			d[4] += base
		}
		q.xMany = q.xMany || d[1]-d[0] > 1
		q.xInts = append(q.xInts, d...)
	}
	q.xPtrs = append(q.xPtrs, b.hPtrs...)
	q.xMost = max(q.xMost, touched)
	q.xPage, q.xHd, q.xKvt = page, hd, kvt
	b.questNow()
}

// qxWords is be_quest_extend's descriptor (QX_WORDS in backend_quest.cu).
const qxWords = 5

// queueChoose queues a Choose of choice c for the query row at qp (its
// ints in b.hInts, its bounds in b.hPtrs; total scores, most a head). With
// c.lists set, the choice also writes its heads' page lists into the pool,
// from its KV heads' lists, whose offsets are the ints from index kv on.
func (b *Backend) queueChoose(c *choice, qp Ptr, heads, kvHeads, group, k, total, most, kv int, page, hd, kvt int32) {
	q := &b.qq
	if len(q.calls) > 0 && (q.cPage != page || q.cHd != hd || q.cKvt != kvt) {
		b.flushQuest()
	}
	q.calls = append(q.calls, questJob{c: c, q: qp, ints: int32(len(q.cInts)), bounds: int32(len(q.cPtrs)),
		heads: int32(heads), kvh: int32(kvHeads), group: int32(group), k: int32(k), scores: q.scores, lists: -1})
	if c.lists.on {
		j := &q.calls[len(q.calls)-1]
		j.lists, j.kv = int32(c.lists.off), int32(len(q.cInts)+kv)
	}
	q.cInts = append(q.cInts, b.hInts...)
	q.cPtrs = append(q.cPtrs, b.hPtrs...)
	q.scores += int64(total)
	q.cMost, q.cHeads, q.cKV = max(q.cMost, most), max(q.cHeads, heads), max(q.cKV, kvHeads)
	q.cPage, q.cHd, q.cKvt = page, hd, kvt
	c.pending = true
	b.questNow()
}

// questNow flushes at once when batching is off (KVBENCH_BATCH_ATTN=off).
func (b *Backend) questNow() {
	if b.batchOff {
		b.flushQuest()
	}
}

// FlushQuest launches the Quest work queued by the policies' hooks now,
// rather than with the next attention call (for timing that work alone:
// kvbench kernels --split).
func (b *Backend) FlushQuest() { b.flushQuest() }

// flushQuest launches the queued Quest work: the Extends (unless they run
// in the choice's launch: fusable), then the Chooses' scores and choices.
func (b *Backend) flushQuest() {
	q := &b.qq
	if len(q.xInts) == 0 && len(q.calls) == 0 {
		return
	}
	b.flushKV()  // the keys of queued copies must land first
	b.sendRuns() // the page tables the choices copy their lists from (seqTables)
	var dev Ptr
	if len(q.calls) > 0 {
		dev = b.grow(&b.pscore, q.scores*8) // growing waits: before the upload
	}
	q.tab = slices.Grow(q.tab[:0], questTabWords*len(q.calls))
	for _, j := range q.calls {
		c := j.c
		// cov: the choice's pinned host memory, which the device writes
		// directly (unified addressing: the host pointer is the device's),
		// so no read is queued a call; Covered waits for the stream.
		q.tab = append(q.tab, uint64(j.q), uint64(dev.Add(j.scores*8)), uint64(c.pages.p), uint64(c.sel.p), uint64(uintptr(c.host.p)), uint64(c.done.p),
			uint64(uint32(j.ints))|uint64(uint32(j.bounds))<<32, uint64(uint32(j.heads))|uint64(uint32(j.group))<<32,
			uint64(uint32(j.k))|uint64(uint32(int32(c.cap)))<<32, uint64(uint32(j.lists))|uint64(uint32(j.kv))<<32)
	}
	b.reserve(span(int64(len(q.xInts))*4) + span(int64(len(q.xPtrs))*8) + span(int64(len(q.cInts))*4) +
		span(int64(len(q.cPtrs))*8) + span(int64(len(q.tab))*8))
	// Carried by attn_rtb_put launches where they fit (a copy on the stream
	// cost a batch step 3-9 µs of device time on the H100), else one copy.
	p := b.putCarried(raw(q.xInts), raw(q.xPtrs), raw(q.cInts), raw(q.cPtrs), raw(q.tab))
	// Extends of one token a head fold it into the last page, which the
	// scores leave out: they run in the choice's launch (beside it, in
	// blocks of their own), one launch fewer in the chain.
	nx, fuse := len(q.xInts)/qxWords, q.fusable() && !b.noQuestFuse
	if nx > 0 && !fuse {
		b.launch("be_quest_extend", Dim3{q.xMost, nx, 1}, Dim3{min(max(int(q.xHd), 32), 256), 1, 1},
			p[1], p[0], q.xPage, q.xHd, q.xKvt)
	}
	if n := len(q.calls); n > 0 {
		per := questScorePages(int(q.cHd), q.cKvt)
		b.launch("be_quest_score_batch", Dim3{(q.cMost + per - 1) / per, q.cKV, n}, Dim3{questScoreThreads, 1, 1}, p[4], p[2], p[3], q.cHd, q.cKvt)
		// The pool as it is now: a pool that grew since a Choose was queued
		// holds its lists at the same offsets.
		rows, xn := 0, int32(0)
		if fuse {
			rows, xn = (nx+q.cHeads-1)/q.cHeads, int32(nx)
		}
		b.launch("be_quest_choose_batch", Dim3{q.cHeads, n + rows, 1}, Dim3{questChooseThreads, 1, 1},
			p[4], p[2], q.cPage, b.pt.pool, int32(n), p[1], p[0], xn, q.xHd, q.xKvt)
		for _, j := range q.calls {
			j.c.epoch, j.c.pending = b.epoch, false
		}
	}
	q.reset()
}

// fusable says whether the queued Extends may run in the choice's launch:
// there are Chooses, and every Extend folds at most one token into the last
// page of its head (one that no Choose's scores read: a queue holds one
// Extend of given bounds at most, pageBounds.Extend) and shares their page
// size.
func (q *questQueue) fusable() bool {
	return len(q.calls) > 0 && len(q.xInts) > 0 && !q.xMany && q.xPage == q.cPage // one token a descriptor: one page each
}

// reset forgets the queued work (launched, or dropped after a failure).
func (q *questQueue) reset() {
	q.xInts, q.xPtrs, q.xMost, q.xMany = q.xInts[:0], q.xPtrs[:0], 0, false
	q.gen++
	for _, j := range q.calls {
		j.c.pending = false
	}
	q.cInts, q.cPtrs, q.calls, q.scores, q.cMost, q.cHeads, q.cKV = q.cInts[:0], q.cPtrs[:0], q.calls[:0], 0, 0, 0, 0
}

var _ runtime.PageChooser = (*pageBounds)(nil)
