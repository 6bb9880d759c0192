package cuda

// The backend's buffers and host staging: the staging arena that uploads
// go through (reserve, put), device buffers' allocation, upload, zeroing,
// reads, writes and growth, and frees deferred until the device is past
// the work that reads them (retire).

import (
	"fmt"
	"unsafe"

	"github.com/kvbench/kvbench/runtime"
)

// stagerMax is the size up to which the staging arena grows when it fills
// between two of the host's own waits for the device (see reserve).
const stagerMax = 64 << 20

// span is the arena bytes a put of n bytes takes.
func span(n int64) int64 { return (max(n, 1) + 255) &^ 255 }

// reserve makes room in the staging arena for puts of n bytes in all (the
// sum of their spans), waiting for the stream and starting the arena over
// when it is full. Every operation reserves once, after flushKV and before
// its puts, so that no put overwrites data a queued kernel has yet to read.
func (b *Backend) reserve(n int64) {
	b.notCapturing("an upload")
	if b.st.off+n <= b.st.size {
		return
	}
	// The arena filled before the host waited for the device on its own (a
	// download): without more room the host would stall mid-step, the
	// device then idle while the host queues the rest. Grow it, up to
	// stagerMax, so that what the host queues between its own waits (a
	// decode step's uploads) fits; the old one serves the copies queued
	// from it until the next wait (retire), so growing waits for nothing.
	if n > b.st.size || b.st.size < stagerMax {
		if b.st.host != nil {
			b.retire(b.st.dev, b.st.host)
		}
		size := max(n, min(2*b.st.size, stagerMax), 1<<20)
		h, err := b.D.AllocPinned(size)
		must(err)
		d, err := b.D.Alloc(size)
		must(err)
		b.st = stager{host: h, dev: d, size: size}
		return
	}
	b.wait()
}

// putBytes enqueues one upload of the byte ranges parts (at most putMax),
// laid out in the device arena one after the other at span boundaries (in
// room made by reserve), and returns the device address of each (by value:
// no allocation, several uploads a layer); the host does not wait.
func (b *Backend) putBytes(parts ...[]byte) [putMax]Ptr {
	out, off, last := b.stageBytes(parts...)
	if last > 0 {
		must(b.D.CopyHtoDAsync(b.st.dev.Add(off), b.st.host, off, last))
	}
	return out
}

// stageBytes lays parts out in the arena's host copy for putBytes and takes
// their room: it returns each part's device address, where they start and
// the bytes to send from there (to the last part's last byte).
func (b *Backend) stageBytes(parts ...[]byte) (out [putMax]Ptr, off, last int64) {
	if len(parts) > putMax {
		panic(fmt.Sprintf("cuda: an upload of %d parts (at most %d)", len(parts), putMax))
	}
	need := int64(0)
	for _, p := range parts {
		need += span(int64(len(p)))
	}
	if b.st.off+need > b.st.size {
		panic(fmt.Sprintf("cuda: staging put of %d bytes without reserve (%d of %d used)", need, b.st.off, b.st.size))
	}
	off = b.st.off
	at := off
	h := b.st.host.Bytes()
	for i, p := range parts {
		copy(h[at:], p)
		out[i] = b.st.dev.Add(at)
		if len(p) > 0 {
			last = at + int64(len(p)) - off
		}
		at += span(int64(len(p)))
	}
	b.st.off += need
	return out, off, last
}

// raw is the bytes of a slice.
func raw[T any](v []T) []byte {
	p, n := bytesOf(v)
	return unsafe.Slice((*byte)(p), n)
}

// put uploads the elements of v through the arena (see putBytes).
func put[T any](b *Backend, v []T) Ptr { return b.putBytes(raw(v))[0] }

// putMax is the most parts of one putBytes.
const putMax = 5

// retire frees dev and host (either may be none) at the host's next wait
// for the device: queued work may still read them.
func (b *Backend) retire(dev Ptr, host *Pinned) {
	b.retired = append(b.retired, retired{dev: dev, host: host})
}

// freeRetired frees what retire kept, every one of them, and returns the
// first error; the device has finished the work queued before (the caller
// waited for it).
func (b *Backend) freeRetired() error {
	var first error
	keep := func(err error) {
		if first == nil {
			first = err
		}
	}
	for _, r := range b.retired {
		if r.host != nil {
			keep(r.host.Free())
		}
		if r.dev != 0 {
			keep(b.D.Free(r.dev))
		}
	}
	clear(b.retired)
	b.retired = b.retired[:0]
	return first
}

// download copies len(dst) floats from src once the queued work has run
// (see get).
func (b *Backend) download(dst []float32, src Ptr) { get(b, dst, src) }

// get copies len(dst) elements from src once the queued work has run
// (Download waits for the stream; the staging arenas are free again after).
func get[T any](b *Backend, dst []T, src Ptr) {
	if len(dst) == 0 {
		return
	}
	b.flushKV()
	b.notCapturing("a download")
	must(Download(b.D, dst, src))
	b.settled()
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// newBuf allocates bytes for n elements of dtype: from the slabs when small.
// It counts as scratch (newBufOf: another kind).
func (b *Backend) newBuf(n int, dtype runtime.DType, bytes int64) (*buf, error) {
	return b.newBufOf(runtime.MemScratch, n, dtype, bytes)
}

// Free releases a buffer of this backend (the runtime never frees; tests
// and long-lived callers may).
func (b *Backend) Free(x runtime.Buffer) {
	d := b.dev(x)
	b.flushKV() // queued copies may read it
	b.mu.Lock()
	if !b.forgetBuf(d) {
		b.mu.Unlock()
		panic("cuda: Free of a buffer not live in this backend")
	}
	b.mu.Unlock()
	if d.block != 0 {
		b.slab.release(d.p, d.block)
	} else {
		must(b.D.Free(d.p))
	}
}

func (b *Backend) dev(x runtime.Buffer) *buf {
	d, ok := x.(*buf)
	if !ok {
		panic(fmt.Sprintf("cuda: buffer %T is not from the CUDA backend", x))
	}
	return d
}

// f32 returns the device pointer of a float32 buffer.
func (b *Backend) f32(x runtime.Buffer) Ptr {
	d := b.dev(x)
	if d.dtype != runtime.F32 {
		panic(fmt.Sprintf("cuda: buffer is %v, not float32", d.dtype))
	}
	return d.p
}

func wtype(t runtime.DType) int32 {
	switch t {
	case runtime.F32:
		return 0
	case runtime.BF16:
		return 1
	case runtime.F16:
		return 2
	}
	panic(fmt.Sprintf("cuda: weight type %v", t))
}

// Upload copies a weight to the device as stored.
func (b *Backend) Upload(t *runtime.Tensor) (runtime.Buffer, error) {
	n := t.Len()
	switch t.DType {
	case runtime.F32:
		if len(t.F32) != n {
			return nil, fmt.Errorf("tensor %s: %d values for shape %v", t.Name, len(t.F32), t.Shape)
		}
	case runtime.BF16, runtime.F16:
		if len(t.U16) != n {
			return nil, fmt.Errorf("tensor %s: %d values for shape %v", t.Name, len(t.U16), t.Shape)
		}
	default:
		return nil, fmt.Errorf("tensor %s: unsupported type %v", t.Name, t.DType)
	}
	x, err := b.newBufOf(runtime.MemWeights, n, t.DType, t.Bytes())
	if err != nil {
		return nil, err
	}
	switch {
	case t.Bytes() >= stageMin && t.DType == runtime.F32:
		err = b.uploadStaged(x.p, asBytes(t.F32))
	case t.Bytes() >= stageMin:
		err = b.uploadStaged(x.p, asBytes(t.U16))
	case t.DType == runtime.F32:
		err = Upload(b.D, x.p, t.F32)
	default:
		err = Upload(b.D, x.p, t.U16)
	}
	if err != nil {
		b.Free(x)
		return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
	}
	b.mu.Lock()
	b.mem.uploads++
	b.mu.Unlock()
	return x, nil
}

// Alloc returns a zeroed float32 buffer of n elements.
func (b *Backend) Alloc(n int) runtime.Buffer {
	x, err := b.newBuf(n, runtime.F32, int64(n)*4)
	must(err)
	b.zero(x, int64(n))
	return x
}

// zero clears words float32 words of x: a small buffer (a KV page) joins the
// list that one be_zero_many clears before the next operation, so that a
// prompt's thousands of new pages cost one launch; a large one is cleared at
// once.
func (b *Backend) zero(x *buf, words int64) {
	if words == 0 {
		return
	}
	if x.block != 0 {
		b.zeros = append(b.zeros, uint64(x.p), uint64(words))
		return
	}
	b.launch("be_zero", Dim3{int(min((words+255)/256, 1024)), 1, 1}, Dim3{256, 1, 1}, x.p, words)
}

// flushZeros launches the pending clears (before any other operation).
func (b *Backend) flushZeros() {
	n := len(b.zeros) / 2
	b.reserve(span(int64(len(b.zeros)) * 8))
	p := put(b, b.zeros)
	b.zeros = b.zeros[:0]
	if err := b.fn("be_zero_many").Launch(Dim3{n, 1, 1}, Dim3{256, 1, 1}, 0, p); err != nil {
		panic(err)
	}
}

func (b *Backend) check(x runtime.Buffer, off, n int, what string) *buf {
	d := b.dev(x)
	if off < 0 || off+n > d.n {
		panic(fmt.Sprintf("cuda: %s of %d elements at %d in a buffer of %d", what, n, off, d.n))
	}
	return d
}

// Write copies src into dst at element off.
func (b *Backend) Write(dst runtime.Buffer, off int, src []float32) {
	b.check(dst, off, len(src), "Write")
	b.flushKV() // a queued copy may read dst; Upload is ordered after the rest
	must(Upload(b.D, b.f32(dst).Add(int64(off)*4), src))
}

// Read copies from src at element off into dst, after the queued kernels.
func (b *Backend) Read(dst []float32, src runtime.Buffer, off int) {
	b.check(src, off, len(dst), "Read")
	b.download(dst, b.f32(src).Add(int64(off)*4))
}

// CopyRows copies rows of width elements between buffers.
func (b *Backend) CopyRows(dst, src runtime.Buffer, dstRow, srcRow, rows, width int) {
	if rows*width == 0 {
		return
	}
	d := b.check(dst, dstRow*width, rows*width, "CopyRows")
	s := b.check(src, srcRow*width, rows*width, "CopyRows")
	b.flushKV()
	must(b.D.CopyAsync(d.p.Add(int64(dstRow*width)*4), s.p.Add(int64(srcRow*width)*4), int64(rows*width)*4))
}

// grow makes s hold at least bytes (waiting for the queued work before it
// frees a smaller one that work may use).
func (b *Backend) grow(s *scratch, bytes int64) Ptr {
	if s.bytes < bytes {
		if s == &b.wide || s == &b.narrow || s == &b.mlp {
			b.notCapturing("growing the products' scratch")
			b.replayGen++ // graphs that read the old one are recorded again
		}
		if s.p != 0 {
			b.sync()
			must(b.D.Free(s.p))
		}
		n := max(bytes+bytes/4, 4096)
		p, err := b.D.Alloc(n)
		must(err)
		*s = scratch{p, n}
		b.sampleScratch()
	}
	return s.p
}
