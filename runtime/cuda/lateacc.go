package cuda

import (
	"unsafe"

	"github.com/kvbench/kvbench/runtime"
)

// Acc reads deferred to the end of a pass (runtime.AccDeferrer): while a
// pass defers them, a call's sums are copied to pinned memory behind the
// kernel that writes them and the host does not wait; FlushAcc waits once
// and fills every call's Acc with views into that memory. A decode step of
// H2O or TOVA so waits once, where it waited once a layer (the device then
// drained its queue 32 times a step for the 8B shape).

var _ runtime.AccDeferrer = (*Backend)(nil)

// lateAccs is the deferred reads of a pass: pinned chunks kept from pass to
// pass (a view handed over lives until the backend's next attention call),
// the chunk and offset being filled, and the calls' reads.
type lateAccs struct {
	on    bool
	pins  []*Pinned
	cur   int
	off   int64
	items []lateItem
	// host holds the views of calls whose sums the host computed (the
	// be_attend path) in a deferring pass; they live until the next one.
	host [][]float32
	hoff int
}

// lateItem is one call's deferred read: what fillAcc needs of the call, as
// it was (its Acc headers and sequences stay put until FlushAcc), and where
// its values land.
type lateItem struct {
	acc     [][]float32
	seqs    []runtime.KVSeq
	heads   int
	kvHeads int
	group   bool // AccGroup: a slice a KV head
	astride int
	pin     *Pinned
	off     int64
}

// lateChunk is the smallest pinned chunk.
const lateChunk = 64 << 20

// DeferAcc starts (true) or ends deferring the calls' Acc reads
// (runtime.AccDeferrer); it reports false, deferring nothing, with
// KVBENCH_ACC_DEFER=off.
func (b *Backend) DeferAcc(on bool) bool {
	if on && len(b.late.items) > 0 {
		// Reads of a pass that failed before its FlushAcc: their copies
		// may still be landing in the chunks about to be reused.
		b.sync()
		clear(b.late.items)
		b.late.items, b.late.cur, b.late.off = b.late.items[:0], 0, 0
	}
	b.late.on = on && !b.noAccDefer
	if b.late.on { // the last deferring pass's views are read by now
		b.late.hoff = 0
		if len(b.late.host) > 1 { // one chunk the size of them all
			n := 0
			for _, h := range b.late.host {
				n += len(h)
			}
			b.late.host = [][]float32{make([]float32, n)}
		}
	}
	return b.late.on
}

// lateHost is n zeroed float32s that stay put until the next deferring
// pass (the views of a call whose sums the host computes in this one).
func (b *Backend) lateHost(n int) []float32 {
	l := &b.late
	if len(l.host) == 0 || l.hoff+n > len(l.host[len(l.host)-1]) {
		l.host = append(l.host, make([]float32, max(n, 1<<16)))
		l.hoff = 0
	}
	h := l.host[len(l.host)-1]
	v := h[l.hoff : l.hoff+n : l.hoff+n]
	clear(v)
	l.hoff += n
	return v
}

// FlushAcc waits for the device once and fills every deferred call's Acc
// with views of its values (their Acc headers: the calls asked for AccView).
func (b *Backend) FlushAcc() {
	l := &b.late
	if len(l.items) == 0 {
		return
	}
	b.sync()
	items := l.items
	inParts(b.partsFor(len(items), accCallsPerPart), len(items), func(_, lo, hi int) {
		for _, it := range items[lo:hi] {
			a := runtime.AttnArgs{Acc: it.acc, Seqs: it.seqs, Heads: it.heads, KVHeads: it.kvHeads, AccView: true, AccGroup: it.group}
			fillAcc(&a, unsafe.Slice((*float32)(unsafe.Add(it.pin.p, it.off)), accSlices(&a)*it.astride), it.astride)
		}
	})
	clear(l.items) // no references kept to the calls' headers
	l.items, l.cur, l.off = l.items[:0], 0, 0
}

// lateDefers reports whether a's read may wait for FlushAcc: a pass defers
// and a takes views (AccView).
func (b *Backend) lateDefers(a *runtime.AttnArgs) bool { return b.late.on && a.AccView }

// lateRoom is where n bytes of deferred values go: the chunk being filled,
// the next one, or a new one.
func (b *Backend) lateRoom(n int64) (*Pinned, int64) {
	l := &b.late
	n = span(n)
	for {
		if l.cur < len(l.pins) {
			if p := l.pins[l.cur]; l.off+n <= p.bytes {
				off := l.off
				l.off += n
				return p, off
			}
			l.cur, l.off = l.cur+1, 0 // too little room left, or too small
			continue
		}
		p, err := b.D.AllocPinned(max(n, lateChunk))
		must(err)
		l.pins = append(l.pins, p)
		l.cur, l.off = len(l.pins)-1, 0
	}
}

// lateRead queues the read of call a's sums (astride values a query head
// at dev) behind the kernel that writes them, for FlushAcc.
func (b *Backend) lateRead(a *runtime.AttnArgs, dev Ptr, astride int) {
	n := int64(accSlices(a)*astride) * 4
	pin, off := b.lateRoom(n)
	must(b.D.CopyDtoHAsync(pin, off, dev, n))
	b.late.items = append(b.late.items, lateItem{acc: a.Acc, seqs: a.Seqs, heads: a.Heads, kvHeads: a.KVHeads, group: a.AccGroup,
		astride: astride, pin: pin, off: off})
}

// freeLate gives the chunks back (the callers waited for the device) and
// forgets the reads.
func (b *Backend) freeLate() {
	for _, p := range b.late.pins {
		_ = p.Free()
	}
	b.late = lateAccs{}
}

// lateBatch queues the read of a batched launch's sums (accFinish's, one
// copy) for FlushAcc when every call with Acc takes views; else it reports
// false and accFinish reads them now.
func (b *Backend) lateBatch(bt *batchAttn) bool {
	for i := range bt.calls {
		if c := &bt.calls[i]; c.a.Acc != nil && !c.a.AccView {
			return false
		}
	}
	pin, off := b.lateRoom(bt.accBytes)
	must(b.D.CopyDtoHAsync(pin, off, bt.accDev, bt.accBytes))
	for i := range bt.calls {
		if c := &bt.calls[i]; c.a.Acc != nil {
			a := c.a
			b.late.items = append(b.late.items, lateItem{acc: a.Acc, seqs: a.Seqs, heads: a.Heads, kvHeads: a.KVHeads,
				group: a.AccGroup, astride: c.astride, pin: pin, off: off + c.accOff})
		}
	}
	return true
}

var _ runtime.AccGrouper = (*Backend)(nil)

// AccGroups: attn_rt_acc sums a KV head's group where it makes the sums
// (runtime.AccGrouper; the be_attend path adds them on the host), unless
// KVBENCH_ACC_GROUP=off.
func (b *Backend) AccGroups() bool { return !b.noAccGroup }
