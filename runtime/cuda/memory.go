package cuda

import (
	"fmt"

	"github.com/kvbench/kvbench/runtime"
)

// memAcct is the backend's memory accounting by kind (runtime.MemoryReporter):
// the bytes of its live buffers that are weights and KV pages, as asked for;
// whatever else it took from the driver (activations, workspaces, staging,
// the unused part of slabs, page tables) is scratch: Device.MemStats minus
// the two. Guarded by Backend.mu.
type memAcct struct {
	weights, kv     int64
	peakKV, peakScr int64
	kvBufs          int
	uploads         int
	fail            func(kind runtime.MemKind, bytes int64) error
}

// newBufOf allocates bytes for n elements of dtype, counted as kind: from
// the slabs when small. The failure hook (FailAllocs) may refuse it first.
func (b *Backend) newBufOf(kind runtime.MemKind, n int, dtype runtime.DType, bytes int64) (*buf, error) {
	b.mu.Lock()
	fail := b.mem.fail
	b.mu.Unlock()
	if fail != nil {
		if err := fail(kind, bytes); err != nil {
			return nil, fmt.Errorf("cuda: allocation of %d bytes (%s): %w", bytes, kind, err)
		}
	}
	x := &buf{n: n, dtype: dtype, bytes: bytes, kind: kind}
	alloc := max(bytes, 4)
	fromDriver := true // memory taken from the driver: the scratch may peak
	if blockFor(alloc) != 0 {
		p, bs, grew, err := b.slab.alloc(alloc)
		if err != nil {
			return nil, err
		}
		x.p, x.block, fromDriver = p, bs, grew
	} else {
		p, err := b.D.Alloc(alloc)
		if err != nil {
			return nil, err
		}
		x.p = p
	}
	b.mu.Lock()
	b.liveBuf(x)
	b.mu.Unlock()
	if fromDriver {
		// A block of a slab already taken leaves the driver's total as it
		// was, and the scratch (that total less weights and KV) no higher.
		b.sampleScratch()
	}
	return x, nil
}

// liveBuf puts a new buffer in the live set and the counts (forgetBuf's
// inverse); b.mu is held.
func (b *Backend) liveBuf(x *buf) {
	b.live = append(b.live, x)
	x.live = int32(len(b.live))
	b.now += x.bytes
	b.peak = max(b.peak, b.now)
	switch x.kind {
	case runtime.MemWeights:
		b.mem.weights += x.bytes
	case runtime.MemKV:
		b.mem.kv += x.bytes
		b.mem.kvBufs++
		b.mem.peakKV = max(b.mem.peakKV, b.mem.kv)
	}
}

// growLive makes room in the live set for n more buffers, doubling it
// (append grows a long slice by a quarter: a prompt's millions of KV pages
// would copy the set over and over); b.mu is held.
func (b *Backend) growLive(n int) {
	if len(b.live)+n <= cap(b.live) {
		return
	}
	l := make([]*buf, len(b.live), max(2*cap(b.live), len(b.live)+n, 1024))
	copy(l, b.live)
	b.live = l
}

// forgetBuf takes a buffer out of the live set and the counts; b.mu is held.
// It reports whether the buffer was live.
func (b *Backend) forgetBuf(x *buf) bool {
	i := int(x.live) - 1
	if i < 0 || i >= len(b.live) || b.live[i] != x {
		return false
	}
	last := b.live[len(b.live)-1] // the last one takes its place
	b.live[i], last.live = last, int32(i+1)
	b.live[len(b.live)-1] = nil
	b.live = b.live[:len(b.live)-1]
	x.live = 0
	b.now -= x.bytes
	switch x.kind {
	case runtime.MemWeights:
		b.mem.weights -= x.bytes
	case runtime.MemKV:
		b.mem.kv -= x.bytes
		b.mem.kvBufs--
	}
	return true
}

// sampleScratch folds the scratch held now into its peak: called where the
// backend takes memory from the driver.
func (b *Backend) sampleScratch() {
	now, _ := b.D.MemStats()
	b.mu.Lock()
	b.mem.peakScr = max(b.mem.peakScr, now-b.mem.weights-b.mem.kv)
	b.mu.Unlock()
}

// Memory reports the device memory the backend holds by use
// (runtime.MemoryReporter): weights and KV pages as asked for, and as
// scratch everything else it took from the driver (activations,
// workspaces, staging space, page tables, the unused part of its slabs), so
// that the three add up to Device.MemStats. Peak is the driver-level peak.
// PeakScratch is sampled where the backend allocates.
func (b *Backend) Memory() runtime.Memory {
	b.sampleScratch()
	now, peak := b.D.MemStats()
	b.mu.Lock()
	defer b.mu.Unlock()
	return runtime.Memory{
		Weights: b.mem.weights, KV: b.mem.kv, Scratch: now - b.mem.weights - b.mem.kv,
		KVBuffers: b.mem.kvBufs, Uploads: b.mem.uploads,
		PeakKV: b.mem.peakKV, PeakScratch: b.mem.peakScr, Peak: peak,
	}
}

// ResetMemoryPeak sets the peaks to what is held now.
func (b *Backend) ResetMemoryPeak() {
	b.D.ResetPeak()
	now, _ := b.D.MemStats()
	b.mu.Lock()
	b.mem.peakKV = b.mem.kv
	b.mem.peakScr = now - b.mem.weights - b.mem.kv
	b.peak = b.now
	b.mu.Unlock()
}

// FailAllocs sets the test hook that may refuse allocations
// (runtime.AllocFailer): Alloc and AllocKV then panic with its error, and
// Upload returns it.
func (b *Backend) FailAllocs(fail func(kind runtime.MemKind, bytes int64) error) {
	b.mu.Lock()
	b.mem.fail = fail
	b.mu.Unlock()
}

// CopiesWeights reports that Upload copies a weight to the GPU, so the host
// need not keep it (runtime.WeightCopier).
func (b *Backend) CopiesWeights() bool { return true }

// ReleaseWork frees every buffer but the weights, every workspace, the page
// tables and every recorded graph, and drops the operations still queued on
// the host (runtime.WorkReleaser): the end of a benchmark cell, or the
// recovery from a failed one, whose Runners, caches and policies are not
// used after. Slabs left without a live block go back to the driver. It then
// waits for the device: an error there is a fault the context cannot
// recover from, and the backend must be closed.
func (b *Backend) ReleaseWork() (err error) {
	defer func() {
		if p := recover(); p != nil { // a failing driver call
			err = fmt.Errorf("cuda: release after a failure: %v", p)
		}
	}()
	if b.capturing { // a failure inside a graph capture: end it, drop the graph
		b.capturing = false
		if g, err := b.D.EndCapture(); err == nil && g != nil {
			_ = g.Destroy()
		}
	}
	// Pending copies and clears name buffers about to be freed.
	b.kv.reset()
	b.qq.reset() // queued Quest work names buffers about to be freed
	b.zeros = b.zeros[:0]
	b.ropeAt.pending = false // a decode step's RoPE, pending, reads buffers about to be freed
	b.qkvAt.pending = false  // and its products
	syncErr := b.D.Sync()
	b.dropReplays()
	b.freeWorkspaces()
	b.releaseTables()
	b.cs = chosenCall{} // a call being built when the failure came
	var dead []*buf
	b.mu.Lock()
	for _, x := range b.live {
		if x.kind != runtime.MemWeights {
			dead = append(dead, x)
		}
	}
	for _, x := range dead {
		b.forgetBuf(x)
	}
	b.mu.Unlock()
	for _, x := range dead {
		if x.block != 0 {
			b.slab.release(x.p, x.block)
		} else if e := b.D.Free(x.p); e != nil && syncErr == nil {
			syncErr = e
		}
	}
	b.slab.trim()
	b.rope.v, b.rope.p, b.rope.epoch = b.rope.v[:0], 0, -1
	b.epoch++
	b.releases++
	b.st.off = 0
	b.marks = 0
	if syncErr != nil {
		return fmt.Errorf("cuda: the device failed: %w", syncErr)
	}
	return nil
}

// workspaces lists the backend's grown scratch buffers (a new one joins
// this list, so that Close and ReleaseWork free it).
func (b *Backend) workspaces() []*scratch {
	return []*scratch{&b.scores, &b.full, &b.recall, &b.small, &b.part, &b.ml, &b.pscore, &b.wide, &b.narrow, &b.accWork, &b.trace.buf, &b.poll.buf}
}

// freeWorkspaces frees the backend's grown scratch buffers and its staging
// arenas; they are made again when needed.
func (b *Backend) freeWorkspaces() {
	for _, s := range b.workspaces() {
		if s.p != 0 {
			_ = b.D.Free(s.p)
			*s = scratch{}
		}
	}
	if b.st.host != nil {
		_ = b.st.host.Free()
		_ = b.D.Free(b.st.dev)
		b.st = stager{}
	}
	_ = b.freeRetired()    // the callers waited for the device
	if b.accq.pin != nil { // the callers waited for the device: no read into it is pending
		_ = b.accq.pin.Free()
		b.accq = accQueue{}
	}
	b.freeLate()
}

// releaseTables frees the device page tables (pagetable.go): the KV
// sequences they describe are gone.
func (b *Backend) releaseTables() {
	pt := &b.pt
	if pt.pool != 0 {
		_ = b.D.Free(pt.pool)
	}
	*pt = pageTables{off: pt.off}
}

var (
	_ runtime.MemoryReporter = (*Backend)(nil)
	_ runtime.AllocFailer    = (*Backend)(nil)
	_ runtime.BufferFreer    = (*Backend)(nil)
	_ runtime.WorkReleaser   = (*Backend)(nil)
	_ runtime.WeightCopier   = (*Backend)(nil)
)

// FreeBytes is the device's free memory (runtime.MemoryRoom), 0 when the
// driver cannot tell.
func (b *Backend) FreeBytes() int64 {
	free, _, err := b.D.MemInfo()
	if err != nil {
		return 0
	}
	return free
}

var _ runtime.MemoryRoom = (*Backend)(nil)
