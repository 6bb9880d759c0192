package cuda

import (
	"fmt"
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

// accSlices is the slices of a's Acc: a query head's, or with AccGroup a
// KV head's.
func accSlices(a *runtime.AttnArgs) int {
	if a.AccGroup {
		return a.KVHeads
	}
	return a.Heads
}

// accLen is the tokens of slice i of a's Acc (its KV head's).
func accLen(a *runtime.AttnArgs, i int) int {
	if a.AccGroup {
		return a.Seqs[i].N
	}
	return a.Seqs[i/(a.Heads/a.KVHeads)].N
}

// checkAccGroup panics (a programmer error) where a asks for group sums
// (AccGroup) the kernels do not make: without AccZero, or over a selection.
func checkAccGroup(a *runtime.AttnArgs, call string) {
	if a.AccGroup && (!a.AccZero || a.Sel != nil || a.Chosen != nil) {
		panic("cuda: " + call + " with AccGroup needs AccZero and no selection")
	}
}

// accStride is the values a slice of a's Acc read takes (attendSplit's
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
	if b.late.on { // each call's read waits for FlushAcc, or is its own
		for _, a := range calls {
			b.Attend(a)
		}
		return
	}
	need := int64(0)
	for _, a := range calls {
		need += span(int64(accSlices(a)*accStride(a)) * 4)
	}
	q := b.accPinned(need)
	q.off, q.items = 0, q.items[:0]
	b.accOn = true
	defer func() { b.accOn = false }()
	for _, a := range calls {
		b.Attend(a)
	}
	b.sync()
	buf := q.pin.Bytes()
	for _, it := range q.items {
		fillAcc(it.a, unsafe.Slice((*float32)(unsafe.Pointer(&buf[it.off])), accSlices(it.a)*it.astride), it.astride)
	}
	q.items = q.items[:0]
}

// accPinned gives the Acc reads a pinned buffer of need bytes at least.
func (b *Backend) accPinned(need int64) *accQueue {
	q := &b.accq
	if q.pin == nil || q.pin.bytes < need {
		if q.pin != nil {
			b.sync() // no read queued into the old buffer is pending
			must(q.pin.Free())
			q.pin = nil
		}
		p, err := b.D.AllocPinned(max(need+need/4, 1<<20))
		must(err)
		q.pin = p
	}
	return q
}

// The batched launch's calls with accumulated probabilities (batchable:
// Acc zeroed by the call, AccZero). Their split rows run in the batch's
// grid like the others', each writing its base-2 scores and (row, head)
// maxima and sums where its table entry says (RtbCall's raw and ml, in
// accWork); one attn_rtb_acc launch then turns every call's scores into
// its sums (in accWork too, zeroed by one be_zero), one read brings them
// all back and the host waits once: 4 launches and a read a (stream,
// layer) before, 3 launches and a read a layer now.

// accPlan lays out the Acc calls of the batch in accWork (raw scores:
// rows*heads x the call's longest list; maxima and sums; the sums: heads x
// accStride) and builds their attn_rtb_acc table in bt.acct; it returns
// how many there are. The calls' ints are built (batchMeta): c.longest is
// the stride attn_rt writes its raw scores with.
func (b *Backend) accPlan(bt *batchAttn) int {
	bt.acct = bt.acct[:0]
	var rawB, mlB, accB int64
	n := 0
	for i := range bt.calls {
		c := &bt.calls[i]
		if c.a.Acc == nil {
			continue
		}
		checkAccGroup(c.a, "AttendBatch")
		items := int64(c.a.Rows * c.a.Heads)
		c.astride = accStride(c.a)
		rawB += span(items * int64(max(c.longest, 1)) * 4)
		mlB += span(items * 8)
		accB += span(int64(accSlices(c.a)*c.astride) * 4)
		n++
	}
	if n == 0 {
		return 0
	}
	base := b.grow(&b.accWork, rawB+mlB+accB)
	b.sideDone() // the last side copy out of accWork has run before it is written again
	bt.accDev, bt.accBytes = base.Add(rawB+mlB), accB
	bt.accLongest, bt.accHeads = 0, 0
	var ro, mo, ao int64
	for i := range bt.calls {
		c := &bt.calls[i]
		if c.a.Acc == nil {
			continue
		}
		items := int64(c.a.Rows * c.a.Heads)
		c.raw, c.ml, c.accOff = base.Add(ro), base.Add(rawB+mo), ao
		acc := bt.accDev.Add(ao)
		ro += span(items * int64(max(c.longest, 1)) * 4)
		mo += span(items * 8)
		ao += span(int64(accSlices(c.a)*c.astride) * 4)
		bt.acct = append(bt.acct, uint64(acc), uint64(c.raw), uint64(c.ml),
			uint64(uint32(c.base))|uint64(uint32(c.hdr))<<32, uint64(uint32(c.astride))|uint64(uint32(int32(c.a.AccFrom)))<<32,
			uint64(flag(c.a.AccGroup)))
		bt.accLongest, bt.accHeads = max(bt.accLongest, c.longest), max(bt.accHeads, accSlices(c.a))
	}
	return n
}

// accTabWords is the 8-byte words of an attn_rtb_acc table entry (AccCall
// in attention_rtb.cu: sums, raw scores, maxima and sums, then base and header,
// astride and accFrom, grp and padding).
const accTabWords = 6

// accFinish runs attn_rtb_acc over the n Acc calls (table at tab in the
// upload, ints the batch's), reads every call's sums back in one copy,
// waits once and fills each call's Acc.
func (b *Backend) accFinish(bt *batchAttn, n int, tab, ints Ptr) {
	b.launch("attn_rtb_acc", Dim3{(max(bt.accLongest, 1) + 127) / 128, bt.accHeads, n}, Dim3{128, 1, 1}, tab, ints)
	if b.late.on && b.lateBatch(bt) {
		return
	}
	q := b.accPinned(bt.accBytes)
	must(b.D.CopyDtoHAsync(q.pin, 0, bt.accDev, bt.accBytes))
	b.sync()
	buf := q.pin.Bytes()
	fill := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if c := &bt.calls[i]; c.a.Acc != nil {
				fillAcc(c.a, unsafe.Slice((*float32)(unsafe.Pointer(&buf[c.accOff])), accSlices(c.a)*c.astride), c.astride)
			}
		}
	}
	// The copies are the step's largest serial host work for H2O and TOVA
	// (a 1B step of 64 streams: ~130 MB): on goroutines where there are
	// threads for them (as batchMeta's parts).
	calls := len(bt.calls)
	inParts(b.partsFor(calls, accCallsPerPart), calls, func(_, lo, hi int) { fill(lo, hi) })
}

// accCallsPerPart is the fewest calls worth a goroutine of accFinish's
// copies.
const accCallsPerPart = 8

// fillAcc copies the sums read back from the device, astride values a query
// head, into a's Acc (each head's first N, N its KV head's tokens), or with
// AccView points Acc[h] at them in the pinned buffer (no copy: only the
// next attention call's reads write the buffer again, or free it to grow
// it, after the policies' AfterAttend hooks have read these).
func fillAcc(a *runtime.AttnArgs, vals []float32, astride int) {
	for i := range accSlices(a) {
		n := accLen(a, i)
		v := vals[i*astride : i*astride+n : i*astride+n]
		if fakeSums {
			fakeFillSums(v)
		}
		if a.AccView {
			a.Acc[i] = v
			continue
		}
		copy(a.Acc[i][:n], v)
	}
}

// queueAcc queues the read of call a's Acc values from dev (astride a head),
// behind the kernel that writes them (attendSplit, under attendAcc).
func (b *Backend) queueAcc(a *runtime.AttnArgs, dev Ptr, astride int) {
	q := &b.accq
	n := int64(accSlices(a)*astride) * 4
	if q.off+span(n) > q.pin.bytes {
		panic("cuda: Acc reads past their pinned buffer (attendAcc sized it)")
	}
	must(b.D.CopyDtoHAsync(q.pin, q.off, dev, n))
	q.items = append(q.items, accItem{a: a, off: q.off, astride: astride})
	q.off += span(n)
}

// accHost readies b.hAcc for a call's sums, astride (accStride) values a
// slice of Acc: each slice's values where the sums add to them (not
// AccZero), for accDevice to upload. It returns astride.
func (b *Backend) accHost(a *runtime.AttnArgs) int {
	checkAccGroup(a, "Attend")
	astride := accStride(a)
	need := accSlices(a) * astride
	if cap(b.hAcc) < need {
		b.hAcc = make([]float32, need)
	}
	b.hAcc = b.hAcc[:need]
	for i := range accSlices(a) {
		n := accLen(a, i)
		if len(a.Acc[i]) < n {
			panic(fmt.Sprintf("cuda: Attend Acc[%d] holds %d values for %d tokens", i, len(a.Acc[i]), n))
		}
		if !a.AccZero {
			copy(b.hAcc[i*astride:], a.Acc[i][:n])
		}
	}
	return astride
}

// accDevice is where a call's sums are kept on the device: room in the
// staging arena (the call's reserve counts it), zeroed there for AccZero
// (no upload), else b.hAcc uploaded (accHost).
func (b *Backend) accDevice(a *runtime.AttnArgs) Ptr {
	if !a.AccZero {
		return put(b, b.hAcc)
	}
	n := int64(len(b.hAcc))
	dev := b.st.dev.Add(b.st.off)
	b.st.off += span(n * 4)
	b.launch("be_zero", Dim3{blocks(n), 1, 1}, Dim3{256, 1, 1}, dev, n)
	return dev
}

// accRead brings a call's sums back from dev, astride values a slice, into
// its Acc: deferred to the pass's FlushAcc (lateacc.go), queued with the
// batch's (attendAcc), or read now.
func (b *Backend) accRead(a *runtime.AttnArgs, dev Ptr, astride int) {
	switch {
	case b.lateDefers(a):
		b.lateRead(a, dev, astride)
	case b.accOn:
		b.queueAcc(a, dev, astride)
	default:
		b.download(b.hAcc, dev)
		fillAcc(a, b.hAcc, astride)
	}
}
