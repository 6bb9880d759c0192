package cpu

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/kvbench/kvbench/runtime"
)

// memCounter is the CPU backend's memory accounting (runtime.MemoryReporter):
// the bytes of the buffers it made and has not seen given back (Free,
// ReleaseWork), by kind, and the distinct weight tensors it serves. The
// garbage collector reclaims a buffer once nothing refers to it, freed or
// not; a buffer dropped without Free stays counted until ReleaseWork, or
// until its memory is seen again in a new buffer.
type memCounter struct {
	mu      sync.Mutex
	now     [3]int64 // by runtime.MemKind
	peak    [3]int64
	total   int64 // peak of the sum
	kvBufs  int
	uploads int
	// bufs is the kind of each counted buffer, by the address of its data
	// (an address, not a reference: the table keeps nothing alive, and
	// the garbage collector does not move heap memory).
	bufs    map[uintptr]counted
	weights map[*runtime.Tensor]bool // tensors served by Upload and not freed
	fail    func(kind runtime.MemKind, bytes int64) error
	// releases counts ReleaseWork calls (runtime.WorkCounter).
	releases uint64
}

// alloc makes a zeroed buffer of n float32s counted as kind, after asking
// the failure hook; it panics with the hook's error, as an allocation that
// ran out of memory would.
func (m *memCounter) alloc(kind runtime.MemKind, n int) *f32 {
	bytes := int64(n) * 4
	m.mu.Lock()
	fail := m.fail
	m.mu.Unlock()
	if fail != nil {
		if err := fail(kind, bytes); err != nil {
			panic(fmt.Errorf("cpu: allocation of %d bytes (%s): %w", bytes, kind, err))
		}
	}
	x := &f32{make([]float32, n)}
	if n == 0 {
		return x // no memory, and no address of its own
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.bufs == nil {
		m.bufs = map[uintptr]counted{}
	}
	key := uintptr(unsafe.Pointer(unsafe.SliceData(x.d)))
	if old, ok := m.bufs[key]; ok { // dropped without Free: collected, its memory reused
		m.forget(key, old)
	}
	m.bufs[key] = counted{kind, bytes}
	m.add(kind, bytes)
	if kind == runtime.MemKV {
		m.kvBufs++
	}
	return x
}

// counted is a buffer in the count.
type counted struct {
	kind  runtime.MemKind
	bytes int64
}

// forget stops counting the buffer c at key; m.mu is held.
func (m *memCounter) forget(key uintptr, c counted) {
	delete(m.bufs, key)
	m.now[c.kind] -= c.bytes
	if c.kind == runtime.MemKV {
		m.kvBufs--
	}
}

// add moves the count of kind by bytes and the peaks with it; m.mu is held.
func (m *memCounter) add(kind runtime.MemKind, bytes int64) {
	m.now[kind] += bytes
	m.peak[kind] = max(m.peak[kind], m.now[kind])
	m.total = max(m.total, m.now[0]+m.now[1]+m.now[2])
}

// upload counts a weight tensor served by Upload (its bytes once per
// tensor), after asking the failure hook, whose error it returns.
func (m *memCounter) upload(t *runtime.Tensor) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		if err := m.fail(runtime.MemWeights, t.Bytes()); err != nil {
			return fmt.Errorf("cpu: weight %s of %d bytes: %w", t.Name, t.Bytes(), err)
		}
	}
	m.uploads++
	if m.weights == nil {
		m.weights = map[*runtime.Tensor]bool{}
	}
	if !m.weights[t] {
		m.weights[t] = true
		m.add(runtime.MemWeights, t.Bytes())
	}
	return nil
}

// Memory reports the bytes of the buffers the backend made and still counts:
// weights (the distinct tensors Upload serves, read where they are), KV
// pages (AllocKV) and activations (Alloc) (runtime.MemoryReporter).
func (b *Backend) Memory() runtime.Memory {
	m := &b.mem
	m.mu.Lock()
	defer m.mu.Unlock()
	return runtime.Memory{
		Weights: m.now[runtime.MemWeights], KV: m.now[runtime.MemKV], Scratch: m.now[runtime.MemScratch],
		KVBuffers: m.kvBufs, Uploads: m.uploads,
		PeakKV: m.peak[runtime.MemKV], PeakScratch: m.peak[runtime.MemScratch], Peak: m.total,
	}
}

// ResetMemoryPeak sets the peaks to what is counted now.
func (b *Backend) ResetMemoryPeak() {
	m := &b.mem
	m.mu.Lock()
	defer m.mu.Unlock()
	m.peak = m.now
	m.total = m.now[0] + m.now[1] + m.now[2]
}

// FailAllocs sets the test hook that may fail allocations
// (runtime.AllocFailer): Alloc and AllocKV panic with its error, Upload
// returns it.
func (b *Backend) FailAllocs(fail func(kind runtime.MemKind, bytes int64) error) {
	b.mem.mu.Lock()
	b.mem.fail = fail
	b.mem.mu.Unlock()
}

// KVTypes lists the KV page types besides float32 that AllocKV accepts:
// none on the CPU.
func (b *Backend) KVTypes() []runtime.DType { return nil }

// AllocKV returns a zeroed float32 KV page of n elements, counted as KV
// memory (runtime.KVAllocator).
func (b *Backend) AllocKV(n int, t runtime.DType) runtime.Buffer {
	if t != runtime.F32 {
		panic(fmt.Sprintf("cpu: KV pages of type %v (the CPU keeps float32 pages)", t))
	}
	return b.mem.alloc(runtime.MemKV, n)
}

// Free stops counting a buffer the backend made (runtime.BufferFreer); the
// garbage collector reclaims it once nothing refers to it. A view, or a
// buffer no longer counted (freed, or made before ReleaseWork), changes
// nothing. A freed weight's tensor leaves the count (a tensor counts once,
// however often uploaded).
func (b *Backend) Free(x runtime.Buffer) {
	m := &b.mem
	m.mu.Lock()
	defer m.mu.Unlock()
	switch x := x.(type) {
	case *f32:
		if len(x.d) == 0 {
			return
		}
		key := uintptr(unsafe.Pointer(unsafe.SliceData(x.d)))
		if c, ok := m.bufs[key]; ok && c.bytes == int64(len(x.d))*4 {
			m.forget(key, c)
		}
	case *weight:
		if m.weights[x.t] {
			delete(m.weights, x.t)
			m.now[runtime.MemWeights] -= x.t.Bytes()
		}
	default:
		panic(fmt.Sprintf("cpu: Free of a %T, not a buffer of the CPU backend", x))
	}
}

// ReleaseWork stops counting every buffer but the weights
// (runtime.WorkReleaser): the caller drops them, and the garbage collector
// reclaims them. The CPU never fails, so the error is nil.
func (b *Backend) ReleaseWork() error {
	m := &b.mem
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.bufs)
	m.now[runtime.MemKV], m.now[runtime.MemScratch], m.kvBufs = 0, 0, 0
	m.releases++
	return nil
}

// WorkReleases counts the ReleaseWork calls so far (runtime.WorkCounter):
// what the runtime kept across them (the runners' shared scratch) is no
// longer counted, so it makes it anew.
func (b *Backend) WorkReleases() uint64 {
	b.mem.mu.Lock()
	defer b.mem.mu.Unlock()
	return b.mem.releases
}

var (
	_ runtime.MemoryReporter = (*Backend)(nil)
	_ runtime.AllocFailer    = (*Backend)(nil)
	_ runtime.KVAllocator    = (*Backend)(nil)
	_ runtime.BufferFreer    = (*Backend)(nil)
	_ runtime.WorkReleaser   = (*Backend)(nil)
	_ runtime.WorkCounter    = (*Backend)(nil)
)

// FreeBytes is the host's available memory (runtime.MemoryRoom).
func (b *Backend) FreeBytes() int64 { return runtime.HostAvailable() }

var _ runtime.MemoryRoom = (*Backend)(nil)
