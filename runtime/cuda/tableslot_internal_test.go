package cuda

import (
	"math/rand/v2"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestTableSlots checks that a sequence finds its own page table through
// KVSeq.Slot or by ID, whatever Slot it carries: its own, one left from a
// table the sweep dropped and another sequence took since, one copied from
// another sequence, or none. Sequences of random pages are refreshed in a
// random order on the fake device, tables are swept (idle ones dropped, their
// slots reused), and after every refresh each sequence's table holds its
// own pages and belongs to its ID, and the slots of live tables are
// distinct.
func TestTableSlots(t *testing.T) {
	b := fakeOf(t, "bf16")
	defer func(v uint64) { tableIdleCalls = v }(tableIdleCalls)
	tableIdleCalls = 3
	rng := rand.New(rand.NewPCG(3, 9))
	page := func() runtime.Buffer { return b.AllocKV(16*64, runtime.BF16) }
	seqs := make([]runtime.KVSeq, 12)
	for i := range seqs {
		seqs[i] = runtime.KVSeq{PageSize: 16, ID: uint64(1000 + i)}
	}
	for step := range 400 {
		s := &seqs[rng.IntN(len(seqs))]
		switch rng.IntN(6) {
		case 0: // a page appended
			s.K, s.V = append(s.K, page()), append(s.V, page())
			s.N = 16 * len(s.K)
		case 1: // a slot copied from another sequence (stale for this one)
			s.Slot = seqs[rng.IntN(len(seqs))].Slot
		case 2: // the tables no call used lately dropped
			b.pt.clock += 2
			b.sweepTables()
		case 3: // a slot out of range
			s.Slot = int32(rng.IntN(1000))
		}
		if len(s.K) == 0 {
			continue
		}
		b.pt.clock++
		b.refresh(s)
		b.pt.runs, b.pt.host = b.pt.runs[:0], b.pt.host[:0]
		tab := b.table(s)
		if tab == nil || tab.id != s.ID || tab != b.pt.seqs[s.ID] {
			t.Fatalf("step %d: sequence %d found the table of %v", step, s.ID, tab)
		}
		if len(tab.k) != len(s.K) {
			t.Fatalf("step %d: sequence %d: table of %d pages, sequence of %d", step, s.ID, len(tab.k), len(s.K))
		}
		for i := range s.K {
			if tab.k[i] != s.K[i] || tab.v[i] != s.V[i] {
				t.Fatalf("step %d: sequence %d: page %d of the table is not the sequence's", step, s.ID, i)
			}
		}
		seen := map[int32]bool{}
		for id, tb := range b.pt.seqs {
			if tb.id != id || b.pt.slots[tb.slot-1] != tb || seen[tb.slot] {
				t.Fatalf("step %d: table of %d at slot %d: id %d, slots[] holds another or the slot is shared", step, id, tb.slot, tb.id)
			}
			seen[tb.slot] = true
		}
	}
}
