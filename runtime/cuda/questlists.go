package cuda

// Quest's attention over page lists. Quest chooses whole pages: each query
// head attends its K-1 best pages and its KV head's last page. Where its
// page is the cache's page (16 tokens both, the defaults), a head's chosen
// tokens are exactly the tokens of a list of cache pages, every one of them
// visible to the decode row. So be_quest_choose_batch also writes, per query
// head, a key list and a value list of those pages' pointers into a region of
// the device page tables' pool the choice holds (from its KV head's lists,
// which Choose brings up to date first: seqTables), and the attention call
// runs as a call of one query head a KV head over them (listCall): the
// split-KV kernels read a head's tokens page by page, as they read a full
// cache, instead of gathering them token by token through the selection (a
// call of rows of one head with no selection is lean: the tensor-core
// kernel may serve it, and its ints may go by value). Both ways attend the
// same tokens; KVBENCH_QUEST_LISTS=off keeps the gather.

import (
	"math/bits"
	"slices"

	"github.com/kvbench/kvbench/runtime"
)

// choiceLists is where a choice's page lists are in the pool, and what its
// Choose saw.
type choiceLists struct {
	on         bool     // the last Choose wrote lists
	off, words int64    // the region in the pool (words 0: none), 2*k words a query head
	k, group   int      // pages a head's list holds; query heads a KV head
	kv         []int32  // [kvHeads][2] the KV heads' list offsets in the pool at Choose
	ids, gens  []uint64 // the sequences' IDs and generations at Choose
}

// minListWords is the smallest region a choice's lists take.
const minListWords = 64

// setLists prepares Choose's lists for a, k pages a head: it brings a's
// device tables up to date and gives the choice its region, and appends its
// KV heads' list offsets to ints (be_quest_choose_batch reads them there).
// Where lists cannot serve (switched off, another page size, no tables) the
// choice has none and ints are as they were.
func (c *choice) setLists(a *runtime.AttnArgs, k int, ints []int32) []int32 {
	b, pb, l := c.pb.b, c.pb, &c.lists
	l.on = false
	if b.noLists {
		return ints
	}
	for i := range a.Seqs {
		if a.Seqs[i].PageSize != pb.page {
			return ints
		}
	}
	n := len(ints)
	ints, ok := b.seqTables(a.Seqs, ints)
	if !ok {
		return ints
	}
	l.kv = append(l.kv[:0], ints[n:]...)
	l.ids, l.gens = l.ids[:0], l.gens[:0]
	for i := range a.Seqs {
		l.ids, l.gens = append(l.ids, a.Seqs[i].ID), append(l.gens, a.Seqs[i].Gen)
	}
	words := max(int64(1)<<bits.Len64(uint64(2*a.Heads*k-1)), minListWords)
	if l.words < words {
		c.freeLists()
		l.off, l.words = b.holdRegion(words), words
	}
	l.on, l.k, l.group = true, k, a.Heads/a.KVHeads
	return ints
}

// listCall returns the call that runs a over its choice's page lists (a
// itself where it cannot: no lists, a prompt chunk, accumulated
// probabilities, recall, re-positioned keys, tokens some row does not see,
// or tables that changed since the choice). Its KV heads are a's query
// heads, each a sequence of its chosen tokens (describe gives their
// descriptors: listPages). a's device tables must be current (callPages).
func (b *Backend) listCall(a *runtime.AttnArgs) *runtime.AttnArgs {
	c, ok := a.Chosen.(*choice)
	if !ok || !c.lists.on || c.pb == nil || c.pb.b != b || a == &c.va || c.pending {
		return a
	}
	l := &c.lists
	if a.Rows != 1 || a.Acc != nil || a.Recall != nil || a.Sel != nil || !splitOK(a, false) ||
		len(c.counts) != a.Heads || a.KVHeads != len(l.ids) || a.Heads/a.KVHeads != l.group {
		return a
	}
	q := a.QPos[0]
	for g := range a.Seqs {
		s := &a.Seqs[g]
		t := b.table(s)
		if t == nil || s.ID != l.ids[g] || s.Gen != l.gens[g] || int32(t.off) != l.kv[2*g] || int32(t.off+t.size) != l.kv[2*g+1] ||
			s.N != c.pb.heads[g].n || !allVisible(s, q, q, a.Window) || (a.QShift != nil && s.Shift != nil) {
			return a
		}
	}
	c.va = *a
	c.va.KVHeads = a.Heads
	// Its sequences give describe their lengths and pages' size alone (no
	// ID: no device table, no early reads); their other fields stay zero.
	c.vseqs = slices.Grow(c.vseqs[:0], a.Heads)[:a.Heads]
	for h := range a.Heads {
		s := &a.Seqs[h/l.group]
		n := s.N
		if c.counts[h] >= 0 {
			n = c.counts[h]
		}
		c.vseqs[h].N, c.vseqs[h].PageSize = n, s.PageSize
	}
	c.va.Seqs = c.vseqs
	return &c.va
}

// listsOf returns the choice whose listCall a is (nil: a is not one).
func listsOf(a *runtime.AttnArgs) *choice {
	if c, ok := a.Chosen.(*choice); ok && a == &c.va {
		return c
	}
	return nil
}

// listPages returns the pool offsets of the key and value lists of query
// head h of c's listCall: its own lists where it chose, else its KV head's
// (a head whose KV head holds no more than k pages attends every token).
func (c *choice) listPages(h int) (k, v int32) {
	l := &c.lists
	if c.counts[h] < 0 {
		g := h / l.group
		return l.kv[2*g], l.kv[2*g+1]
	}
	at := int32(l.off) + int32(2*h*l.k)
	return at, at + int32(l.k)
}
