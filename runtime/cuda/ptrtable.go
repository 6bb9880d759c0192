package cuda

// ptrTable maps device addresses to int32 values: open addressing with
// linear probing, emptied in O(1) by moving to a new epoch (an entry of an
// older epoch is empty). kvBatch looks up two or three addresses for every
// KV copy of a step (16K copies a 1B step of 64 streams); Go's maps spent a
// fifth of that step's host time hashing, probing and clearing.
type ptrTable struct {
	keys  []Ptr
	vals  []int32
	epoch []uint32 // the epoch an entry was written in; cur: occupied
	cur   uint32
	n     int // entries of the current epoch
	shift uint
}

// minPtrTable is a table's first size (a power of two).
const minPtrTable = 1024

// slot is the first probe of p.
func (t *ptrTable) slot(p Ptr) int {
	return int((uint64(p) * 0x9E3779B97F4A7C15) >> t.shift)
}

// get returns p's value and whether p is in the table.
func (t *ptrTable) get(p Ptr) (int32, bool) {
	if t.n == 0 {
		return 0, false
	}
	mask := len(t.keys) - 1
	for i := t.slot(p); ; i = (i + 1) & mask {
		if t.epoch[i] != t.cur {
			return 0, false
		}
		if t.keys[i] == p {
			return t.vals[i], true
		}
	}
}

// has reports whether p is in the table.
func (t *ptrTable) has(p Ptr) bool {
	_, ok := t.get(p)
	return ok
}

// put sets p's value.
func (t *ptrTable) put(p Ptr, v int32) {
	if 2*(t.n+1) > len(t.keys) {
		t.grow()
	}
	mask := len(t.keys) - 1
	for i := t.slot(p); ; i = (i + 1) & mask {
		if t.epoch[i] != t.cur {
			t.keys[i], t.vals[i], t.epoch[i] = p, v, t.cur
			t.n++
			return
		}
		if t.keys[i] == p {
			t.vals[i] = v
			return
		}
	}
}

// grow doubles the table (or makes the first), keeping the entries.
func (t *ptrTable) grow() {
	old := *t
	size := max(2*len(old.keys), minPtrTable)
	bits := uint(0)
	for 1<<bits < size {
		bits++
	}
	*t = ptrTable{keys: make([]Ptr, size), vals: make([]int32, size), epoch: make([]uint32, size), cur: 1, shift: 64 - bits}
	for i := range old.keys {
		if old.epoch[i] == old.cur && old.n > 0 {
			t.put(old.keys[i], old.vals[i])
		}
	}
}

// reset empties the table.
func (t *ptrTable) reset() {
	if t.n == 0 {
		return
	}
	t.n = 0
	t.cur++
	if t.cur == 0 { // the epochs wrapped: clear them once
		clear(t.epoch)
		t.cur = 1
	}
}
