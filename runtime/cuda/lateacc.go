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
//
// Paced (runtime.AccPacer, unless KVBENCH_ACC_PACE=off): an event is
// recorded behind each layer's copies (AccMark), and the pass waits for
// the first layer's alone, runs the hooks of every layer whose copies have
// landed, and so on, while the device runs the rest of the step: the
// host's walk over the sums (H2O's scores, TOVA's choice) overlaps the
// device's later layers instead of following the whole step. Nothing the
// hooks queue (evictions' moves, page releases' work) reaches the device
// before the step's kernels: the stream runs in order.

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
	// marks are the pass's marks (AccPacer), events their pool; filled
	// counts the items filled so far, landed the marks known to have
	// landed.
	marks  []lateMark
	events []*Event
	filled int
	landed int
	// With KVBENCH_ACC_STREAM=on the copies run on the device's side
	// stream (Device.SideCopyDtoH) behind after's record; workDone is
	// recorded after the last copy out of accWork, workBusy until the
	// stream has been told to wait for it (sideDone).
	after, workDone *Event
	workBusy        bool
}

// lateMark is a mark of the deferred reads: the items before it and the
// event recorded behind their copies.
type lateMark struct {
	items int
	ev    *Event
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
	if on {
		if len(b.late.items) > 0 {
			// Reads of a pass that failed before its FlushAcc: their
			// copies may still be landing in the chunks about to be reused.
			b.sync()
		}
		b.late.forget() // and its marks, if any
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
// with views of its values (their Acc headers: the calls asked for AccView);
// where FlushAccTo filled them all, it only forgets the pass's reads.
func (b *Backend) FlushAcc() {
	l := &b.late
	if l.filled < len(l.items) { // else the marks filled them all (AccPacer)
		b.sync()
		b.lateFill(len(l.items))
	}
	l.forget()
}

// lateFill fills the deferred calls' Acc from the item filled next up to
// item n (their reads have landed).
func (b *Backend) lateFill(n int) {
	l := &b.late
	items := l.items[l.filled:n]
	inParts(b.partsFor(len(items), accCallsPerPart), len(items), func(_, lo, hi int) {
		for _, it := range items[lo:hi] {
			a := runtime.AttnArgs{Acc: it.acc, Seqs: it.seqs, Heads: it.heads, KVHeads: it.kvHeads, AccView: true, AccGroup: it.group}
			fillAcc(&a, unsafe.Slice((*float32)(unsafe.Add(it.pin.p, it.off)), accSlices(&a)*it.astride), it.astride)
		}
	})
	l.filled = max(l.filled, n)
}

// forget drops the pass's reads and marks (no references kept to the
// calls' headers); the chunks are filled from the first again.
func (l *lateAccs) forget() {
	clear(l.items)
	l.items, l.cur, l.off = l.items[:0], 0, 0
	l.marks, l.filled, l.landed = l.marks[:0], 0, 0
}

var _ runtime.AccPacer = (*Backend)(nil)

// AccMark marks the reads deferred so far (runtime.AccPacer): an event
// recorded behind their copies. -1 (no pacing) when the pass does not
// defer, with KVBENCH_ACC_PACE=off, or while a graph is captured.
func (b *Backend) AccMark() int {
	l := &b.late
	if !l.on || b.noAccPace || b.capturing {
		return -1
	}
	m := len(l.marks)
	if m == len(l.events) {
		ev, err := b.D.NewSyncEvent()
		must(err)
		l.events = append(l.events, ev)
	}
	ev := l.events[m]
	if b.accSide {
		must(ev.RecordSide()) // behind the side stream's copies
	} else {
		must(ev.Record())
	}
	l.marks = append(l.marks, lateMark{items: len(l.items), ev: ev})
	return m
}

// AccDone reports whether the reads before mark m have landed, without
// waiting (runtime.AccPacer).
func (b *Backend) AccDone(m int) bool {
	l := &b.late
	if m < l.landed {
		return true
	}
	done, err := l.marks[m].ev.Done()
	must(err)
	if done {
		l.landed = m + 1
	}
	return done
}

// FlushAccTo waits for the reads before mark m only and fills their calls'
// Acc (runtime.AccPacer).
func (b *Backend) FlushAccTo(m int) {
	l := &b.late
	if m >= l.landed {
		must(l.marks[m].ev.Wait())
		l.landed = m + 1
	}
	b.lateFill(l.marks[m].items)
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
	b.lateCopy(pin, off, dev, n, false)
	b.late.items = append(b.late.items, lateItem{acc: a.Acc, seqs: a.Seqs, heads: a.Heads, kvHeads: a.KVHeads, group: a.AccGroup,
		astride: astride, pin: pin, off: off})
}

// lateCopy copies n bytes of sums from dev to pin at off: on the stream, or
// with KVBENCH_ACC_STREAM=on on the side stream, which the stream does not
// wait for. A copy out of accWork (work) marks it busy until the stream
// waits for the copy (sideDone); other sums are in the staging arena,
// which is not written again before a wait (and Device.Sync waits for the
// side stream too).
func (b *Backend) lateCopy(pin *Pinned, off int64, dev Ptr, n int64, work bool) {
	l := &b.late
	if !b.accSide {
		must(b.D.CopyDtoHAsync(pin, off, dev, n))
		return
	}
	if l.after == nil {
		var err error
		l.after, err = b.D.NewSyncEvent()
		must(err)
		l.workDone, err = b.D.NewSyncEvent()
		must(err)
	}
	var done *Event
	if work {
		done, l.workBusy = l.workDone, true
	}
	must(b.D.SideCopyDtoH(pin, off, dev, n, l.after, done))
}

// sideDone makes the stream wait for the last side copy out of accWork, if
// one may still run, before it writes accWork again.
func (b *Backend) sideDone() {
	if l := &b.late; l.workBusy {
		must(b.D.WaitFor(l.workDone))
		l.workBusy = false
	}
}

// freeLate gives the chunks back (the callers waited for the device) and
// forgets the reads.
func (b *Backend) freeLate() {
	for _, p := range b.late.pins {
		_ = p.Free()
	}
	for _, ev := range append(b.late.events, b.late.after, b.late.workDone) {
		if ev != nil {
			_ = ev.Destroy()
		}
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
	b.lateCopy(pin, off, bt.accDev, bt.accBytes, true)
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
