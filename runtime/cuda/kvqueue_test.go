package cuda

import (
	"math/rand/v2"
	"testing"
)

// kvVal is a simulated slot's content: which value, and whether it was
// rounded to bf16 on the way.
type kvVal struct {
	id      int
	rounded bool
}

// kvActs is simulated memory holding n activation rows (values 1000+a)
// at base + a*64.
func kvActs(base, n int) map[Ptr]kvVal {
	m := map[Ptr]kvVal{}
	for a := range n {
		m[Ptr(base+a*64)] = kvVal{id: 1000 + a}
	}
	return m
}

// kvCopy applies a copy of mode m to v.
func kvCopy(v kvVal, m int) kvVal {
	if m == kvStoreB16 {
		v.rounded = true
	}
	return v
}

// TestKVBatchForwarding runs random sequences of stores (activation rows
// into cache slots, float32 to bf16), moves between slots (bf16 copies, often
// out of a slot the batch just wrote, as a decode step's store then
// eviction) and other operations, through kvBatch and its launches (every
// copy of a launch reads before any writes), against the copies applied one
// after another: the slots end the same (but those a move emptied, which
// hold nothing: runtime.KVOps.MoveKV), and the store-then-move chains need
// no launch of their own.
func TestKVBatchForwarding(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	const slots, acts = 24, 6
	for trial := range 500 {
		ref, mem := kvActs(1<<20, acts), kvActs(1<<20, acts)
		k := newKVBatch()
		launches := 0
		launch := func() {
			writes := map[Ptr]kvVal{}
			for i := 0; i < len(k.ops); i += 5 {
				writes[Ptr(k.ops[i])] = kvCopy(mem[Ptr(k.ops[i+2])], int(k.ops[i+4]))
				writes[Ptr(k.ops[i+1])] = kvCopy(mem[Ptr(k.ops[i+3])], int(k.ops[i+4]))
			}
			for p, v := range writes {
				mem[p] = v
			}
			if len(k.ops) > 0 {
				launches++
			}
			k.reset()
		}
		slot := func(i int) (Ptr, Ptr) { return Ptr(i * 64), Ptr(1<<16 + i*64) } // key slot, value slot
		chains := 0
		undef := map[Ptr]bool{} // slots a move emptied, not written since
		for range 40 {
			var dk, dv, sk, sv Ptr
			mode := kvCopyB16
			switch r := rng.IntN(10); {
			case r < 4: // a store
				dk, dv = slot(rng.IntN(slots))
				a := Ptr(1<<20 + rng.IntN(acts)*64)
				sk, sv, mode = a, a, kvStoreB16
			case r < 9: // a move, often out of the slot written last
				dk, dv = slot(rng.IntN(slots))
				if n := len(k.ops); n > 0 && rng.IntN(2) == 0 {
					sk, sv = Ptr(k.ops[n-5]), Ptr(k.ops[n-4])
					chains++
				} else {
					sk, sv = slot(rng.IntN(slots))
				}
				if sk == dk {
					continue
				}
			default: // another operation launches the batch
				launch()
				continue
			}
			if undef[sk] || undef[sv] { // nothing reads a slot a move emptied
				continue
			}
			ref[dk] = kvCopy(ref[sk], mode)
			ref[dv] = kvCopy(ref[sv], mode)
			delete(undef, dk)
			delete(undef, dv)
			if mode != kvStoreB16 { // a move empties its source (runtime.KVOps.MoveKV)
				undef[sk], undef[sv] = true, true
			}
			if !k.add(dk, dv, sk, sv, mode, 64) {
				launch()
				if !k.add(dk, dv, sk, sv, mode, 64) {
					t.Fatal("an empty batch refused a copy")
				}
			}
		}
		launch()
		for p, v := range ref {
			if mem[p] != v && !undef[p] {
				t.Fatalf("trial %d: slot %#x holds %+v, one copy after another gives %+v", trial, p, mem[p], v)
			}
		}
		_ = chains
	}

	// A decode step of 8 KV heads: a store into the last slot, then the
	// eviction's move of it into a hole, per head: one launch.
	k := newKVBatch()
	for h := range 8 {
		last, hole := Ptr(h<<12+15*64), Ptr(h<<12+3*64)
		act := Ptr(1<<20 + h*64)
		if !k.add(last, last+1<<10, act, act+1<<10, kvStoreB16, 64) || !k.add(hole, hole+1<<10, last, last+1<<10, kvCopyB16, 64) {
			t.Fatalf("head %d: the store-then-move chain needed a launch", h)
		}
	}
	// The store into the last slot is dropped: the move emptied it.
	for h := range 8 {
		o := k.ops[5*h : 5*h+5]
		if len(k.ops) != 8*5 || o[0] != uint64(Ptr(h<<12+3*64)) || o[4] != kvStoreB16 || o[2] != uint64(Ptr(1<<20+h*64)) {
			t.Fatalf("head %d: copies %v, want one store a head from its activation row into its hole", h, k.ops)
		}
	}
}

// TestKVLanesJoin runs random copy sequences on several lanes at once (each
// lane's stores and moves within its own slots, as each stream's cache owns
// its pages; stores read the activation rows all lanes share), joins them
// as JoinKVLanes does (round r of every lane in one launch, every copy of a
// launch reading before any writes) and checks the slots against each
// lane's copies applied one after another.
func TestKVLanesJoin(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	const lanes, slots, acts = 5, 12, 4
	for trial := range 300 {
		ref, mem := kvActs(1<<30, acts), kvActs(1<<30, acts)
		ls := make([]*kvLane, lanes)
		for i := range ls {
			ls[i] = &kvLane{}
		}
		slot := func(lane, i int) (Ptr, Ptr) { // key slot, value slot
			return Ptr(lane<<20 + i*64), Ptr(lane<<20 + 1<<16 + i*64)
		}
		undef := map[Ptr]bool{} // slots a move emptied, not written since
		for range 60 {
			w := rng.IntN(lanes)
			l := ls[w]
			var dk, dv, sk, sv Ptr
			mode := kvCopyB16
			dk, dv = slot(w, rng.IntN(slots))
			switch r := rng.IntN(10); {
			case r < 4: // a store
				a := Ptr(1<<30 + rng.IntN(acts)*64)
				sk, sv, mode = a, a, kvStoreB16
			default: // a move, often out of the slot the lane wrote last
				if l.used > 0 && len(l.rounds[l.used-1].ops) > 0 && rng.IntN(2) == 0 {
					ops := l.rounds[l.used-1].ops
					sk, sv = Ptr(ops[len(ops)-5]), Ptr(ops[len(ops)-4])
				} else {
					sk, sv = slot(w, rng.IntN(slots))
				}
				if sk == dk || undef[sk] || undef[sv] { // nothing reads a slot a move emptied
					continue
				}
			}
			ref[dk] = kvCopy(ref[sk], mode)
			ref[dv] = kvCopy(ref[sv], mode)
			delete(undef, dk)
			delete(undef, dv)
			if mode != kvStoreB16 {
				undef[sk], undef[sv] = true, true
			}
			l.add(dk, dv, sk, sv, mode, 64)
		}
		var pending []uint64
		launches := 0
		joinRounds(ls, func(ops []uint64, hd int) {
			if hd != 64 {
				t.Fatalf("head dim %d", hd)
			}
			pending = append(pending, ops...)
		}, func() {
			writes := map[Ptr]kvVal{}
			for i := 0; i < len(pending); i += 5 {
				for j := range 2 {
					d := Ptr(pending[i+j])
					if _, twice := writes[d]; twice {
						t.Fatalf("trial %d: one launch writes slot %#x twice", trial, d)
					}
					writes[d] = kvCopy(mem[Ptr(pending[i+2+j])], int(pending[i+4]))
				}
			}
			for p, v := range writes {
				mem[p] = v
			}
			pending = pending[:0]
			launches++
		})
		for p, v := range ref {
			if mem[p] != v && !undef[p] {
				t.Fatalf("trial %d: slot %#x holds %+v, each lane's copies one after another give %+v (%d launches)", trial, p, mem[p], v, launches)
			}
		}
		for i, l := range ls {
			if l.used != 0 {
				t.Fatalf("lane %d holds %d rounds after the join", i, l.used)
			}
		}
	}
}
