package tokenizer

// symbol is one entry of the doubly linked list the BPE merge loop works on.
type symbol struct {
	start, end int32 // what it covers: bytes of the text, or initial positions
	id         int32 // token id, or -1 when not known
	prev, next int32 // neighbours, -1 at the ends
}

// candidate is a possible merge of two adjacent symbols in the queue.
type candidate struct {
	prio     float32 // higher merges first
	left     int32   // index of the left symbol; ties go to the smaller
	right    int32   // index of the right symbol
	rightEnd int32   // end of the right symbol when queued (detects stale entries)
	id       int32   // id of the merged symbol
}

// pairFunc says whether adjacent symbols l and r merge, into which id and
// with what priority.
type pairFunc func(l, r *symbol) (id int32, prio float32, ok bool)

// merger runs byte-pair merges: repeatedly the adjacent pair with the highest
// priority (leftmost on ties) is merged, until no pair merges. The queue holds
// stale entries that are dropped when popped, so a run is O(n log n).
type merger struct {
	syms []symbol
	heap []candidate
}

// reset empties m, keeping its buffers.
func (m *merger) reset() {
	m.syms = m.syms[:0]
	m.heap = m.heap[:0]
}

// add appends a symbol covering [start, end) with the given id.
func (m *merger) add(start, end, id int32) {
	n := int32(len(m.syms))
	m.syms = append(m.syms, symbol{start: start, end: end, id: id, prev: n - 1, next: n + 1})
}

// run merges the symbols added since the last reset and returns the index of
// the first one (-1 if none); follow next to walk the result.
func (m *merger) run(pair pairFunc) int32 {
	n := len(m.syms)
	if n == 0 {
		return -1
	}
	m.syms[n-1].next = -1
	m.heap = m.heap[:0]
	for i := 0; i+1 < n; i++ {
		m.try(pair, int32(i), int32(i+1))
	}
	syms := m.syms
	for len(m.heap) > 0 {
		c := m.pop()
		l, r := &syms[c.left], &syms[c.right]
		if l.start < 0 || r.start < 0 || l.next != c.right || r.end != c.rightEnd {
			continue // stale: one side changed since it was queued
		}
		l.end = r.end
		l.id = c.id
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = c.left
		}
		r.start = -1
		if l.prev >= 0 {
			m.try(pair, l.prev, c.left)
		}
		if l.next >= 0 {
			m.try(pair, c.left, l.next)
		}
	}
	return 0
}

func (m *merger) try(pair pairFunc, left, right int32) {
	l, r := &m.syms[left], &m.syms[right]
	id, prio, ok := pair(l, r)
	if !ok {
		return
	}
	m.push(candidate{prio: prio, left: left, right: right, rightEnd: r.end, id: id})
}

// before reports whether a pops before b.
func before(a, b *candidate) bool {
	return a.prio > b.prio || (a.prio == b.prio && a.left < b.left)
}

func (m *merger) push(c candidate) {
	h := append(m.heap, c)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !before(&h[i], &h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	m.heap = h
}

func (m *merger) pop() candidate {
	h := m.heap
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	i := 0
	for {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		best := l
		if r := l + 1; r < len(h) && before(&h[r], &h[l]) {
			best = r
		}
		if !before(&h[best], &h[i]) {
			break
		}
		h[i], h[best] = h[best], h[i]
		i = best
	}
	m.heap = h
	return top
}
