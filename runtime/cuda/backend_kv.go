package cuda

import (
	"fmt"

	"github.com/kvbench/kvbench/runtime"
)

// KV pages on the device: allocated from the slabs (AllocKV, AllocKVPages),
// written and moved by batched be_kv_ops launches (StoreKV, MoveKV, MoveKVs:
// queued, launched before the next kernel that may read them).

// Page types as the kernels' kvt argument.
const (
	kvF32  = 0
	kvBF16 = 1
)

// queueKV adds one key/value copy to the batch (mode as be_kv_ops; see
// kvBatch), launching the batch first when the copy depends on it.
func (b *Backend) queueKV(dk, dv, sk, sv Ptr, mode, hd int) {
	if !b.kv.add(dk, dv, sk, sv, mode, hd) {
		b.flushKV()
		if !b.kv.add(dk, dv, sk, sv, mode, hd) {
			panic("cuda: a KV copy refused by an empty batch")
		}
	}
}

// flushKV launches the pending operations: a step's q/k/v products its
// RoPE did not take, the page clears, a step's RoPE (with the stores when
// they fit) and the KV copies.
func (b *Backend) flushKV() {
	if b.qkvAt.pending { // queued before everything else here
		b.launchQKV()
	}
	if len(b.zeros) > 0 {
		b.flushZeros()
	}
	k := &b.kv
	if b.ropeAt.pending {
		fused := b.ropeStores()
		b.launchRope(fused)
		if fused {
			k.reset()
			return
		}
	}
	if len(k.ops) == 0 {
		return
	}
	n := len(k.ops) / 5
	grid, block := Dim3{n, 1, 1}, Dim3{min(k.hd, 128), 1, 1}
	if n <= kvBoxOps && !b.noKVBox {
		// By value: no upload on the stream, and the launch may overlap
		// the kernel before it (LaunchAfter).
		copy(b.kvBox, k.ops)
		k.reset()
		must(b.fn("be_kv_box").LaunchAfter(grid, block, 0, ByValue(raw(b.kvBox)), int32(k.hd)))
		return
	}
	b.reserve(span(int64(len(k.ops)) * 8))
	p := put(b, k.ops)
	k.reset()
	must(b.fn("be_kv_ops").Launch(grid, block, 0, p, int32(k.hd)))
}

// kvBoxOps is the most copies be_kv_box takes by value (KV_BOX_OPS in
// backend.cu: KvBox, a kernel parameter of 40 bytes a copy).
const kvBoxOps = 32

// KVTypes lists the KV page types besides float32: bf16.
func (b *Backend) KVTypes() []runtime.DType { return []runtime.DType{runtime.BF16} }

// AllocKV returns a zeroed KV page of n elements of type t (F32 or BF16).
// Pages count as KV memory (Memory).
func (b *Backend) AllocKV(n int, t runtime.DType) runtime.Buffer {
	if t != runtime.F32 && t != runtime.BF16 {
		panic(fmt.Sprintf("cuda: KV pages of type %v", t))
	}
	b.allocKV.Lock() // lanes allocate at once (runtime.KVLaner)
	defer b.allocKV.Unlock()
	x, err := b.newBufOf(runtime.MemKV, n, t, int64(n)*int64(t.Size()))
	must(err)
	b.zero(x, (int64(n)*int64(t.Size())+3)/4)
	b.tma.grow(x.p, x.bytes)
	return x
}

// AllocKVPages fills dst with zeroed KV pages of n elements of type t
// (runtime.KVPageAllocator): AllocKV's pages, taken under one lock each, as
// a prompt's chunk takes thousands.
func (b *Backend) AllocKVPages(n int, t runtime.DType, dst []runtime.Buffer) {
	if t != runtime.F32 && t != runtime.BF16 {
		panic(fmt.Sprintf("cuda: KV pages of type %v", t))
	}
	bytes := int64(n) * int64(t.Size())
	b.mu.Lock()
	fail := b.mem.fail
	b.mu.Unlock()
	if fail != nil || blockFor(max(bytes, 4)) == 0 || len(dst) < 2 {
		for i := range dst {
			dst[i] = b.AllocKV(n, t)
		}
		return
	}
	b.allocKV.Lock() // lanes allocate at once (runtime.KVLaner)
	defer b.allocKV.Unlock()
	ptrs := make([]Ptr, len(dst))
	bs, grew, err := b.slab.allocMany(max(bytes, 4), ptrs)
	must(err)
	bufs := make([]buf, len(dst))
	b.mu.Lock()
	b.growLive(len(bufs))
	for i := range bufs {
		x := &bufs[i]
		*x = buf{p: ptrs[i], n: n, dtype: t, block: bs, bytes: bytes, kind: runtime.MemKV}
		b.liveBuf(x)
		dst[i] = x
	}
	b.mu.Unlock()
	if grew {
		b.sampleScratch()
	}
	words := (bytes + 3) / 4
	for _, p := range ptrs {
		b.zeros = append(b.zeros, uint64(p), uint64(words))
		b.tma.grow(p, bytes)
	}
}

// kvPage returns the device pointer and page type of a KV page buffer.
func (b *Backend) kvPage(x runtime.Buffer) (Ptr, int) {
	d := b.dev(x)
	switch d.dtype {
	case runtime.F32:
		return d.p, kvF32
	case runtime.BF16:
		return d.p, kvBF16
	}
	panic(fmt.Sprintf("cuda: KV page of type %v", d.dtype))
}

// StoreKV copies one head of one row of k and v into a page slot (queued:
// the copies of a layer's Append run as one kernel).
func (b *Backend) StoreKV(kPage, vPage runtime.Buffer, slot int, k, v runtime.Buffer, row, head, headDim, kvDim int) {
	b.queueKV(b.storeOp(kPage, vPage, slot, k, v, row, head, headDim, kvDim))
}

// storeOp checks a StoreKV and returns its copy, as queueKV takes it (it
// reads the buffers alone: lanes call it at once).
func (b *Backend) storeOp(kPage, vPage runtime.Buffer, slot int, k, v runtime.Buffer, row, head, headDim, kvDim int) (dk, dv, sk, sv Ptr, mode, hd int) {
	b.check(kPage, slot*headDim, headDim, "StoreKV")
	b.check(vPage, slot*headDim, headDim, "StoreKV")
	return b.storeOpAt(b.KVPageAddr(kPage), b.KVPageAddr(vPage), slot, k, v, row, head, headDim, kvDim)
}

var _ runtime.KVAddresser = (*Backend)(nil)
var _ runtime.KVAddrOps = (*Backend)(nil)

// KVPageAddr (runtime.KVAddresser) is a KV page's device pointer with its
// type (kvF32, kvBF16) in the lowest bit (pages are at least 4-byte
// aligned), for StoreKVAt and MoveKVAt.
func (b *Backend) KVPageAddr(page runtime.Buffer) uint64 {
	p, t := b.kvPage(page)
	if p&1 != 0 {
		panic(fmt.Sprintf("cuda: KV page at odd address %#x", uint64(p)))
	}
	return uint64(p) | uint64(t)
}

// StoreKVAt is StoreKV into the pages at the addresses KVPageAddr gave.
func (b *Backend) StoreKVAt(kPage, vPage uint64, slot int, k, v runtime.Buffer, row, head, headDim, kvDim int) {
	b.queueKV(b.storeOpAt(kPage, vPage, slot, k, v, row, head, headDim, kvDim))
}

// MoveKVAt is MoveKV between the pages at the addresses KVPageAddr gave.
func (b *Backend) MoveKVAt(dstK, dstV uint64, dstSlot int, srcK, srcV uint64, srcSlot, headDim int) {
	b.queueKV(b.moveOpAt(dstK, dstV, dstSlot, srcK, srcV, srcSlot, headDim))
}

// storeOpAt is storeOp on page addresses: the pages' own checks are the
// caller's (storeOp's, or the cache's: a slot within its page), the rows'
// are made here.
func (b *Backend) storeOpAt(kPage, vPage uint64, slot int, k, v runtime.Buffer, row, head, headDim, kvDim int) (dk, dv, sk, sv Ptr, mode, hd int) {
	src := row*kvDim + head*headDim
	b.check(k, src, headDim, "StoreKV")
	b.check(v, src, headDim, "StoreKV")
	kt := int(kPage & 1)
	if int(vPage&1) != kt {
		panic("cuda: StoreKV into key and value pages of different types")
	}
	so, do := int64(src)*4, int64(slot*headDim)*int64(4-2*kt)
	return Ptr(kPage &^ 1).Add(do), Ptr(vPage &^ 1).Add(do), b.f32(k).Add(so), b.f32(v).Add(so), kt, headDim
}

// moveOpAt is moveOp on page addresses.
func (b *Backend) moveOpAt(dstK, dstV uint64, dstSlot int, srcK, srcV uint64, srcSlot, headDim int) (dk, dv, sk, sv Ptr, mode, hd int) {
	t := int(dstK & 1)
	if int(dstV&1) != t || int(srcK&1) != t || int(srcV&1) != t {
		panic("cuda: MoveKV between pages of different types")
	}
	es := int64(4 - 2*t)
	do, so := int64(dstSlot*headDim)*es, int64(srcSlot*headDim)*es
	return Ptr(dstK &^ 1).Add(do), Ptr(dstV &^ 1).Add(do), Ptr(srcK &^ 1).Add(so), Ptr(srcV &^ 1).Add(so), 2 * t, headDim
}

// MoveKVs (runtime.KVMover) queues one eviction's copies untracked (kvBatch):
// beside other sequences' evictions, after a launch of anything else queued.
func (b *Backend) MoveKVs(k, v []runtime.Buffer, moves [][2]int32, ps, hd int) {
	q := b.bulkMoves(b.KVPageAddr(k[0]), hd)
	for _, m := range moves {
		d, f := int(m[0]), int(m[1])
		dk, dv, sk, sv, mode, _ := b.moveOp(k[d/ps], v[d/ps], d%ps, k[f/ps], v[f/ps], f%ps, hd)
		q.ops = append(q.ops, uint64(dk), uint64(dv), uint64(sk), uint64(sv), uint64(mode))
	}
}

var _ runtime.KVAddrMover = (*Backend)(nil)

// MoveKVsAt (runtime.KVAddrMover) is MoveKVs on the sequence's page
// addresses (addr: each page's key address, then its value address), with
// no buffer looked up and checked a copy: a prompt's compression moves
// about a thousand tokens a sequence.
func (b *Backend) MoveKVsAt(addr []uint64, moves [][2]int32, ps, hd int) {
	q := b.bulkMoves(addr[0], hd)
	for _, m := range moves {
		d, f := int(m[0]), int(m[1])
		dp, fp := 2*(d/ps), 2*(f/ps)
		dk, dv, sk, sv, mode, _ := b.moveOpAt(addr[dp], addr[dp+1], d%ps, addr[fp], addr[fp+1], f%ps, hd)
		q.ops = append(q.ops, uint64(dk), uint64(dv), uint64(sk), uint64(sv), uint64(mode))
	}
}

// bulkMoves readies the KV queue for one eviction's untracked copies of
// the sequence whose first key page is at seq: the queue launched first
// where it holds tracked copies, another head dim's, or this sequence's.
func (b *Backend) bulkMoves(seq uint64, hd int) *kvBatch {
	q := &b.kv
	if len(q.ops) > 0 && (!q.bulk || q.hd != hd || q.bulkSeqs[seq]) {
		b.flushKV()
	}
	if q.bulkSeqs == nil {
		q.bulkSeqs = map[uint64]bool{}
	}
	q.bulk, q.hd, q.bulkSeqs[seq] = true, hd, true
	return q
}

// MoveKV copies one slot's key and value to another slot (queued).
func (b *Backend) MoveKV(dstK, dstV runtime.Buffer, dstSlot int, srcK, srcV runtime.Buffer, srcSlot, headDim int) {
	b.queueKV(b.moveOp(dstK, dstV, dstSlot, srcK, srcV, srcSlot, headDim))
}

// moveOp checks a MoveKV and returns its copy (as storeOp).
func (b *Backend) moveOp(dstK, dstV runtime.Buffer, dstSlot int, srcK, srcV runtime.Buffer, srcSlot, headDim int) (dk, dv, sk, sv Ptr, mode, hd int) {
	b.check(dstK, dstSlot*headDim, headDim, "MoveKV")
	b.check(dstV, dstSlot*headDim, headDim, "MoveKV")
	b.check(srcK, srcSlot*headDim, headDim, "MoveKV")
	b.check(srcV, srcSlot*headDim, headDim, "MoveKV")
	return b.moveOpAt(b.KVPageAddr(dstK), b.KVPageAddr(dstV), dstSlot, b.KVPageAddr(srcK), b.KVPageAddr(srcV), srcSlot, headDim)
}
