package cuda

import (
	"unsafe"

	"github.com/kvbench/kvbench/runtime"
)

// Accumulated probabilities of a batch's calls, read back once. A call with
// Acc (H2O's and TOVA's scores) runs through Attend: the split-KV kernels,
// then attn_rt_acc adds the call's probabilities to the Acc values it was
// given, on the device, and Attend reads them back, a wait for the device
// each. In a batch step that is a wait for every (stream, layer): 2,048 a
// decode step of 64 streams of a 32-layer model. AttendBatch runs such calls
// with an accQueue: each call's read is queued (an asynchronous copy into
// pinned memory, right behind the kernel that writes it), the host waits
// once after the last call, then copies every call's values into its Acc.

// accQueue holds the reads of Acc values a batch queued.
type accQueue struct {
	pin   *Pinned // the values, each read at its item's offset
	off   int64
	items []accItem
}

// accItem is one call's read: astride values a query head, from off.
type accItem struct {
	a       *runtime.AttnArgs
	off     int64
	astride int
}

// accDeferred says whether AttendBatch may queue the read of a's Acc values:
// calls that Attend takes to the split-KV kernels with Acc (no recall, not
// a prompt chunk for the tensor-core prefill, no selection made on the
// device).
func (b *Backend) accDeferred(a *runtime.AttnArgs) bool {
	return a.Acc != nil && a.Rows > 0 && a.Recall == nil && a.Chosen == nil && a.KVHeads > 0 &&
		len(a.Seqs) == a.KVHeads && splitOK(a, false) && !b.flashOK(a)
}

// accStride is the values a query head of a's Acc read takes (attendSplit's
// astride: the longest sequence).
func accStride(a *runtime.AttnArgs) int {
	n := 0
	for g := range a.Seqs {
		n = max(n, a.Seqs[g].N)
	}
	return n
}

// attendAcc runs the calls (accDeferred) through Attend with their reads
// queued, waits once, and fills their Acc.
func (b *Backend) attendAcc(calls []*runtime.AttnArgs) {
	need := int64(0)
	for _, a := range calls {
		need += span(int64(a.Heads*accStride(a)) * 4)
	}
	q := &b.accq
	if q.pin == nil || q.pin.bytes < need {
		if q.pin != nil {
			b.sync() // no read queued into the old buffer is pending
			must(q.pin.Free())
		}
		p, err := b.D.AllocPinned(max(need+need/4, 1<<20))
		must(err)
		q.pin = p
	}
	q.off, q.items = 0, q.items[:0]
	b.accOn = true
	defer func() { b.accOn = false }()
	for _, a := range calls {
		b.Attend(a)
	}
	b.sync()
	buf := q.pin.Bytes()
	for _, it := range q.items {
		fillAcc(it.a, unsafe.Slice((*float32)(unsafe.Pointer(&buf[it.off])), it.a.Heads*it.astride), it.astride)
	}
	q.items = q.items[:0]
}

// fillAcc copies the sums read back from the device, astride values a query
// head, into a's Acc (each head's first N, N its KV head's tokens).
func fillAcc(a *runtime.AttnArgs, vals []float32, astride int) {
	group := a.Heads / a.KVHeads
	for h := 0; h < a.Heads; h++ {
		n := a.Seqs[h/group].N
		copy(a.Acc[h][:n], vals[h*astride:h*astride+n])
	}
}

// queueAcc queues the read of call a's Acc values from dev (astride a head),
// behind the kernel that writes them (attendSplit, under attendAcc).
func (b *Backend) queueAcc(a *runtime.AttnArgs, dev Ptr, astride int) {
	q := &b.accq
	n := int64(a.Heads*astride) * 4
	if q.off+span(n) > q.pin.bytes {
		panic("cuda: Acc reads past their pinned buffer (attendAcc sized it)")
	}
	must(b.D.CopyDtoHAsync(q.pin, q.off, dev, n))
	q.items = append(q.items, accItem{a: a, off: q.off, astride: astride})
	q.off += span(n)
}
