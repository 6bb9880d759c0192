package cuda

import (
	_ "embed"
	"fmt"
	"math"
	"sync"

	"github.com/kvbench/kvbench/runtime"
)

// backendSource is the kernels of the runtime.Backend (backend.cu), a module
// of its own beside the benchmark's kernels.
//
//go:embed backend.cu
var backendSource string

// buf is a Backend buffer: float32 activations or KV pages (dtype F32), or a
// weight kept as stored.
type buf struct {
	p     Ptr
	n     int
	dtype runtime.DType
	block int64 // slab block size; 0: an allocation of its own
	bytes int64
}

func (b *buf) Len() int { return b.n }

// Backend is runtime.Backend (and runtime.Scorer) on one CUDA GPU. Buffers
// live in device memory; the host only sees them through Write and Read.
// Kernels run in order on the device's stream; Read waits for them. Like the
// CPU backend it is not safe for concurrent use.
type Backend struct {
	D    *Device
	mod  *Module
	fns  map[string]*Function
	slab *slabAllocator
	mu   sync.Mutex
	live map[*buf]struct{}
	now  int64 // bytes held by live buffers (as asked for)
	peak int64

	// Per-call scratch on the device, grown as needed.
	ints, ptrs, scores, full, recall, small scratch
	// Host staging for the per-call metadata.
	hInts  []int32
	hPtrs  []uint64
	hProbs []float32
	hRec   []float32
	desc   string
}

// scratch is a growable device buffer.
type scratch struct {
	p     Ptr
	bytes int64
}

// NewBackend opens GPU ordinal and compiles the backend's kernels.
func NewBackend(ordinal int) (*Backend, error) {
	d, err := Open(ordinal)
	if err != nil {
		return nil, err
	}
	m, err := d.Load("kvbench_backend.cu", backendSource, KernelOptions())
	if err != nil {
		d.Close()
		return nil, err
	}
	b := &Backend{D: d, mod: m, fns: map[string]*Function{}, slab: newSlabAllocator(d), live: map[*buf]struct{}{}}
	nv, _, err := NVRTCVersion()
	if err != nil {
		nv = "unknown"
	}
	b.desc = fmt.Sprintf("%s, %s, NVRTC %s", d.Name, d.Arch(), nv)
	return b, nil
}

// Close frees every buffer and releases the device.
func (b *Backend) Close() error {
	for _, s := range []*scratch{&b.ints, &b.ptrs, &b.scores, &b.full, &b.recall, &b.small} {
		if s.p != 0 {
			_ = b.D.Free(s.p)
			*s = scratch{}
		}
	}
	b.mu.Lock()
	for x := range b.live {
		if x.block == 0 {
			_ = b.D.Free(x.p)
		}
		delete(b.live, x)
	}
	b.now = 0
	b.mu.Unlock()
	b.slab.close()
	_ = b.mod.Unload()
	return b.D.Close()
}

// Name returns "cuda".
func (b *Backend) Name() string { return "cuda" }

// Device describes the GPU, its architecture and the NVRTC version.
func (b *Backend) Device() string { return b.desc }

// MemStats returns the bytes held by the backend's live buffers now and at
// the peak, as asked for (Device.MemStats counts what was taken from the
// driver: whole slabs for small buffers).
func (b *Backend) MemStats() (now, peak int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.now, b.peak
}

func (b *Backend) fn(name string) *Function {
	if f, ok := b.fns[name]; ok {
		return f
	}
	f, err := b.mod.Function(name)
	if err != nil {
		panic(err)
	}
	b.fns[name] = f
	return f
}

func (b *Backend) launch(name string, grid, block Dim3, args ...any) {
	if err := b.fn(name).Launch(grid, block, 0, args...); err != nil {
		panic(err)
	}
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// newBuf allocates bytes for n elements of dtype: from the slabs when small.
func (b *Backend) newBuf(n int, dtype runtime.DType, bytes int64) (*buf, error) {
	x := &buf{n: n, dtype: dtype, bytes: bytes}
	alloc := max(bytes, 4)
	if blockFor(alloc) != 0 {
		p, bs, err := b.slab.alloc(alloc)
		if err != nil {
			return nil, err
		}
		x.p, x.block = p, bs
	} else {
		p, err := b.D.Alloc(alloc)
		if err != nil {
			return nil, err
		}
		x.p = p
	}
	b.mu.Lock()
	b.live[x] = struct{}{}
	b.now += bytes
	b.peak = max(b.peak, b.now)
	b.mu.Unlock()
	return x, nil
}

// Free releases a buffer of this backend (the runtime never frees; tests
// and long-lived callers may).
func (b *Backend) Free(x runtime.Buffer) {
	d := b.dev(x)
	b.mu.Lock()
	if _, ok := b.live[d]; !ok {
		b.mu.Unlock()
		panic("cuda: Free of a buffer not live in this backend")
	}
	delete(b.live, d)
	b.now -= d.bytes
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
	x, err := b.newBuf(n, t.DType, t.Bytes())
	if err != nil {
		return nil, err
	}
	if t.DType == runtime.F32 {
		err = Upload(b.D, x.p, t.F32)
	} else {
		err = Upload(b.D, x.p, t.U16)
	}
	if err != nil {
		return nil, err
	}
	return x, nil
}

// Alloc returns a zeroed float32 buffer of n elements.
func (b *Backend) Alloc(n int) runtime.Buffer {
	x, err := b.newBuf(n, runtime.F32, int64(n)*4)
	must(err)
	if n > 0 {
		b.launch("be_zero", Dim3{min((n+255)/256, 1024), 1, 1}, Dim3{256, 1, 1}, x.p, int64(n))
	}
	return x
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
	d := b.check(dst, off, len(src), "Write")
	must(Upload(b.D, d.p.Add(int64(off)*4), src))
}

// Read copies from src at element off into dst, after the queued kernels.
func (b *Backend) Read(dst []float32, src runtime.Buffer, off int) {
	d := b.check(src, off, len(dst), "Read")
	must(Download(b.D, dst, d.p.Add(int64(off)*4)))
}

// CopyRows copies rows of width elements between buffers.
func (b *Backend) CopyRows(dst, src runtime.Buffer, dstRow, srcRow, rows, width int) {
	if rows*width == 0 {
		return
	}
	d := b.check(dst, dstRow*width, rows*width, "CopyRows")
	s := b.check(src, srcRow*width, rows*width, "CopyRows")
	must(b.D.CopyAsync(d.p.Add(int64(dstRow*width)*4), s.p.Add(int64(srcRow*width)*4), int64(rows*width)*4))
}

// grow makes s hold at least bytes.
func (b *Backend) grow(s *scratch, bytes int64) Ptr {
	if s.bytes < bytes {
		if s.p != 0 {
			must(b.D.Free(s.p))
		}
		n := max(bytes+bytes/4, 4096)
		p, err := b.D.Alloc(n)
		must(err)
		*s = scratch{p, n}
	}
	return s.p
}

// uploadInts copies v into the ints scratch.
func (b *Backend) uploadInts(v []int32) Ptr {
	p := b.grow(&b.ints, int64(len(v))*4)
	must(Upload(b.D, p, v))
	return p
}

func blocks(n int64) int { return int(min((n+255)/256, 4096)) }

// Embed writes the table rows of tokens into dst.
func (b *Backend) Embed(dst, table runtime.Buffer, tokens []int, dim int) {
	if len(tokens) == 0 {
		return
	}
	t := b.dev(table)
	d := b.check(dst, 0, len(tokens)*dim, "Embed")
	ids := b.hInts[:0]
	for _, tok := range tokens {
		if tok < 0 || (tok+1)*dim > t.n {
			panic(fmt.Sprintf("cuda: Embed token %d outside a table of %d values of width %d", tok, t.n, dim))
		}
		ids = append(ids, int32(tok))
	}
	b.hInts = ids
	p := b.uploadInts(ids)
	b.launch("be_embed", Dim3{len(tokens), 1, 1}, Dim3{256, 1, 1}, d.p, t.p, wtype(t.dtype), p, int32(dim))
}

// RMSNorm normalises each row by its root mean square and scales by w.
func (b *Backend) RMSNorm(dst, x, w runtime.Buffer, rows, dim int, eps float32) {
	wd := b.dev(w)
	b.check(dst, 0, rows*dim, "RMSNorm")
	b.check(x, 0, rows*dim, "RMSNorm")
	b.launch("be_rmsnorm", Dim3{rows, 1, 1}, Dim3{256, 1, 1}, b.f32(dst), b.f32(x), wd.p, wtype(wd.dtype), int32(dim), eps)
}

// MatMul computes dst[r, o] = sum_i x[r, i] * w[o, i].
func (b *Backend) MatMul(dst, x, w runtime.Buffer, rows, in, out int) {
	wd := b.dev(w)
	if wd.n < in*out {
		panic(fmt.Sprintf("cuda: MatMul weight of %d values, need %d x %d", wd.n, out, in))
	}
	b.check(dst, 0, rows*out, "MatMul")
	b.check(x, 0, rows*in, "MatMul")
	if rows == 0 {
		return
	}
	b.launch("be_matmul", Dim3{(out + 7) / 8, (rows + 7) / 8, 1}, Dim3{256, 1, 1},
		b.f32(dst), b.f32(x), wd.p, wtype(wd.dtype), int32(rows), int32(in), int32(out))
}

// AddBias adds bias to every row of x.
func (b *Backend) AddBias(x, bias runtime.Buffer, rows, n int) {
	bd := b.dev(bias)
	b.check(x, 0, rows*n, "AddBias")
	b.launch("be_add_bias", Dim3{blocks(int64(rows * n)), 1, 1}, Dim3{256, 1, 1}, b.f32(x), bd.p, wtype(bd.dtype), int32(rows), int32(n))
}

// invFreq appends the RoPE inverse frequencies, as the CPU computes them,
// as float32 bits.
func invFreq(dst []int32, theta float64, headDim int) []int32 {
	for i := 0; i < headDim/2; i++ {
		dst = append(dst, int32(math.Float32bits(float32(1/math.Pow(theta, float64(2*i)/float64(headDim))))))
	}
	return dst
}

// RoPE rotates every head of every row by its position's angles.
func (b *Backend) RoPE(x runtime.Buffer, rows, heads, headDim int, pos []int, theta float64, style runtime.RopeStyle) {
	if rows == 0 {
		return
	}
	b.check(x, 0, rows*heads*headDim, "RoPE")
	v := b.hInts[:0]
	for _, p := range pos[:rows] {
		v = append(v, int32(p))
	}
	v = invFreq(v, theta, headDim)
	b.hInts = v
	p := b.uploadInts(v)
	inter := int32(0)
	if style == runtime.RopeInterleaved {
		inter = 1
	}
	b.launch("be_rope", Dim3{rows, 1, 1}, Dim3{128, 1, 1}, b.f32(x), p, p.Add(int64(rows)*4), int32(heads), int32(headDim), inter)
}

// SwiGLU sets gate = silu(gate) * up.
func (b *Backend) SwiGLU(gate, up runtime.Buffer, n int) {
	b.check(gate, 0, n, "SwiGLU")
	b.check(up, 0, n, "SwiGLU")
	b.launch("be_swiglu", Dim3{blocks(int64(n)), 1, 1}, Dim3{256, 1, 1}, b.f32(gate), b.f32(up), int64(n))
}

// Add sets dst += x.
func (b *Backend) Add(dst, x runtime.Buffer, n int) {
	b.check(dst, 0, n, "Add")
	b.check(x, 0, n, "Add")
	b.launch("be_add", Dim3{blocks(int64(n)), 1, 1}, Dim3{256, 1, 1}, b.f32(dst), b.f32(x), int64(n))
}

// StoreKV copies one head of one row of k and v into a page slot.
func (b *Backend) StoreKV(kPage, vPage runtime.Buffer, slot int, k, v runtime.Buffer, row, head, headDim, kvDim int) {
	src := row*kvDim + head*headDim
	b.check(kPage, slot*headDim, headDim, "StoreKV")
	b.check(vPage, slot*headDim, headDim, "StoreKV")
	b.check(k, src, headDim, "StoreKV")
	b.check(v, src, headDim, "StoreKV")
	so, do := int64(src)*4, int64(slot*headDim)*4
	b.launch("be_copy_kv", Dim3{1, 1, 1}, Dim3{min(headDim, 256), 1, 1},
		b.f32(kPage).Add(do), b.f32(vPage).Add(do), b.f32(k).Add(so), b.f32(v).Add(so), int32(headDim))
}

// MoveKV copies one slot's key and value to another slot.
func (b *Backend) MoveKV(dstK, dstV runtime.Buffer, dstSlot int, srcK, srcV runtime.Buffer, srcSlot, headDim int) {
	b.check(dstK, dstSlot*headDim, headDim, "MoveKV")
	b.check(dstV, dstSlot*headDim, headDim, "MoveKV")
	b.check(srcK, srcSlot*headDim, headDim, "MoveKV")
	b.check(srcV, srcSlot*headDim, headDim, "MoveKV")
	do, so := int64(dstSlot*headDim)*4, int64(srcSlot*headDim)*4
	b.launch("be_copy_kv", Dim3{1, 1, 1}, Dim3{min(headDim, 256), 1, 1},
		b.f32(dstK).Add(do), b.f32(dstV).Add(do), b.f32(srcK).Add(so), b.f32(srcV).Add(so), int32(headDim))
}

var (
	_ runtime.Backend = (*Backend)(nil)
	_ runtime.Scorer  = (*Backend)(nil)
)
