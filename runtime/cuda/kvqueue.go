package cuda

// kvBatch is StoreKV and MoveKV calls not yet launched: they run as one
// kernel (be_kv_ops), every copy reading before any writes, before the next
// other operation. A copy that reads a slot a copy of the batch writes takes
// that copy's source instead (a decode step stores its new token in the
// last slot and an eviction then moves it into a hole: the hole gets the
// token from where the store got it), when the modes compose (the move is a
// plain copy: f32 to f32 or bf16 to bf16), and the copy into the slot it
// moves out of is dropped (a move leaves its source empty: the store was
// for the move alone); any other dependence on the
// batch (reading a slot it writes otherwise, overwriting a slot it reads or
// writes) launches the batch first. Key and value slots move together: a
// copy names its key slot and value slot, and the tracking is by key slot.
//
// Evictions' copies given together (MoveKVs) are not tracked: a batch holds
// either tracked copies or such untracked ones (bulk), of one eviction a
// sequence (bulkSeqs: each sequence's first key page); a copy of the other
// kind, or a second eviction of a sequence, launches the batch first.
type kvBatch struct {
	ops      []uint64 // 5 words per copy, as be_kv_ops: dk, dv, sk, sv, mode
	hd       int
	written  ptrTable // key slot -> the copy that writes it
	read     ptrTable // key slots copies read
	bulk     bool
	bulkSeqs map[uint64]bool // by the first key page's address (KVPageAddr)
}

// be_kv_ops' modes.
const (
	kvCopyF32  = 0 // float32 to float32
	kvStoreB16 = 1 // float32 to bf16
	kvCopyB16  = 2 // bf16 to bf16
)

func newKVBatch() kvBatch {
	return kvBatch{}
}

// add queues the copy of key slot sk and value slot sv into dk and dv (hd
// channels, mode as be_kv_ops), or reports false, queueing nothing, when it
// depends on the batch in a way only a launch of the batch resolves.
func (k *kvBatch) add(dk, dv, sk, sv Ptr, mode, hd int) bool {
	if k.bulk && len(k.ops) > 0 {
		return false
	}
	if len(k.ops) == 0 {
		k.hd = hd
	} else if hd != k.hd {
		return false
	}
	if mode == kvStoreB16 {
		// A store reads the step's keys and values (float32 activations),
		// which no copy writes: only its destination can conflict.
		if k.read.has(dk) || k.written.has(dk) {
			return false
		}
		k.written.put(dk, int32(len(k.ops)/5))
		k.ops = append(k.ops, uint64(dk), uint64(dv), uint64(sk), uint64(sv), uint64(mode))
		return true
	}
	dead := int32(-1)
	if j, ok := k.written.get(sk); ok && j >= 0 {
		o := k.ops[5*j : 5*j+5]
		if Ptr(o[1]) != sv || (mode != kvCopyF32 && mode != kvCopyB16) {
			return false
		}
		sk, sv, mode = Ptr(o[2]), Ptr(o[3]), int(o[4]) // forwarded
		dead = j
	}
	if k.written.has(sk) || k.read.has(dk) || k.written.has(dk) {
		return false
	}
	if dead >= 0 {
		// A move leaves its source slot empty (runtime.KVOps.MoveKV): the
		// copy into it had no other reader and is dropped.
		k.drop(dead)
	}
	k.written.put(dk, int32(len(k.ops)/5))
	k.read.put(sk, 0)
	k.ops = append(k.ops, uint64(dk), uint64(dv), uint64(sk), uint64(sv), uint64(mode))
	return true
}

// drop removes copy j (its destination slot emptied by a move that read
// it, forwarded): the last copy takes its place (the copies of a batch are
// independent: their order is free). The slot stays in written, as -1: a
// later copy into it launches the batch first, one out of it forwards
// nothing.
func (k *kvBatch) drop(j int32) {
	o := k.ops[5*j : 5*j+5]
	k.written.put(Ptr(o[0]), -1)
	last := int32(len(k.ops)/5 - 1)
	if j != last {
		copy(o, k.ops[5*last:5*last+5])
		k.written.put(Ptr(o[0]), j)
	}
	k.ops = k.ops[:5*last]
}

// reset empties the batch (after its launch).
func (k *kvBatch) reset() {
	k.ops = k.ops[:0]
	k.bulk = false
	clear(k.bulkSeqs)
	k.written.reset()
	k.read.reset()
}
