// Package cpu is kvbench's pure-Go CPU backend: the correctness oracle the
// other backends are tested against, and a usable runtime on any machine. It
// computes in float32, keeps weights as stored (bf16, f16, f32) and converts
// them inside the matrix kernels, and spreads work over every core.
package cpu

import (
	"fmt"
	"math"
	goruntime "runtime"

	"github.com/kvbench/kvbench/runtime"
)

// f32 is a float32 activation buffer or KV page.
type f32 struct{ d []float32 }

func (b *f32) Len() int { return len(b.d) }

// weight is a weight tensor held as stored.
type weight struct{ t *runtime.Tensor }

func (b *weight) Len() int { return b.t.Len() }

// Backend is the CPU backend. Its methods are not safe for concurrent use:
// one Backend drives one forward pass at a time, using every core inside.
type Backend struct {
	mem  memCounter
	pool *pool
	mm   matmulJob
	att  attnJob
	rope ropeTable
}

// New returns a CPU backend using threads goroutines (0: one per core).
func New(threads int) *Backend {
	if threads <= 0 {
		threads = goruntime.NumCPU()
	}
	b := &Backend{pool: newPool(threads)}
	b.att.scratch = make([][]float32, b.pool.workers)
	return b
}

// Close stops the backend's worker goroutines.
func (b *Backend) Close() { b.pool.close() }

// Name returns "cpu".
func (b *Backend) Name() string { return "cpu" }

// Device describes the cores and the kernels in use.
func (b *Backend) Device() string {
	return fmt.Sprintf("%d threads, %s/%s, kernels %s", b.pool.workers, goruntime.GOOS, goruntime.GOARCH, kernelName())
}

// Threads is the number of goroutines that share the work.
func (b *Backend) Threads() int { return b.pool.workers }

// Upload keeps t as stored; the kernels read it in place.
func (b *Backend) Upload(t *runtime.Tensor) (runtime.Buffer, error) {
	switch t.DType {
	case runtime.F32:
		if len(t.F32) != t.Len() {
			return nil, fmt.Errorf("tensor %s: %d values for shape %v", t.Name, len(t.F32), t.Shape)
		}
	case runtime.BF16, runtime.F16:
		if len(t.U16) != t.Len() {
			return nil, fmt.Errorf("tensor %s: %d values for shape %v", t.Name, len(t.U16), t.Shape)
		}
	default:
		return nil, fmt.Errorf("tensor %s: unsupported type %v", t.Name, t.DType)
	}
	if err := b.mem.upload(t); err != nil {
		return nil, err
	}
	return &weight{t}, nil
}

// Alloc returns a zeroed float32 buffer.
func (b *Backend) Alloc(n int) runtime.Buffer { return b.mem.alloc(runtime.MemScratch, n) }

// Write copies src into dst at element off.
func (b *Backend) Write(dst runtime.Buffer, off int, src []float32) { copy(vec(dst)[off:], src) }

// Read copies from src at element off into dst.
func (b *Backend) Read(dst []float32, src runtime.Buffer, off int) {
	copy(dst, vec(src)[off:off+len(dst)])
}

// CopyRows copies rows of width elements between buffers.
func (b *Backend) CopyRows(dst, src runtime.Buffer, dstRow, srcRow, rows, width int) {
	copy(vec(dst)[dstRow*width:(dstRow+rows)*width], vec(src)[srcRow*width:(srcRow+rows)*width])
}

// vec returns the float32 data of an activation buffer, or of a float32 weight.
func vec(b runtime.Buffer) []float32 {
	switch b := b.(type) {
	case *f32:
		return b.d
	case *weight:
		if b.t.DType == runtime.F32 {
			return b.t.F32
		}
		panic(fmt.Sprintf("cpu: weight %s is %v, not float32", b.t.Name, b.t.DType))
	}
	panic(fmt.Sprintf("cpu: buffer %T is not from the CPU backend", b))
}

// Embed copies (converting) the table rows of tokens into dst.
func (b *Backend) Embed(dst, table runtime.Buffer, tokens []int, dim int) {
	d := vec(dst)
	switch t := table.(type) {
	case *weight:
		for i, tok := range tokens {
			t.t.ToF32(d[i*dim:(i+1)*dim], tok*dim)
		}
	default:
		tab := vec(table)
		for i, tok := range tokens {
			copy(d[i*dim:(i+1)*dim], tab[tok*dim:(tok+1)*dim])
		}
	}
}

// RMSNorm normalises each row by its root mean square and scales by w.
func (b *Backend) RMSNorm(dst, x, w runtime.Buffer, rows, dim int, eps float32) {
	d, xs := vec(dst), vec(x)
	wt := w.(*weight).t
	for r := 0; r < rows; r++ {
		row := xs[r*dim : (r+1)*dim]
		var ss float64
		for _, v := range row {
			ss += float64(v) * float64(v)
		}
		inv := float32(1 / math.Sqrt(ss/float64(dim)+float64(eps)))
		out := d[r*dim : (r+1)*dim]
		for i, v := range row {
			out[i] = wt.At(i) * (v * inv)
		}
	}
}

// AddBias adds b to every row of x.
func (b *Backend) AddBias(x, bias runtime.Buffer, rows, n int) {
	xs, bt := vec(x), bias.(*weight).t
	for r := 0; r < rows; r++ {
		row := xs[r*n : (r+1)*n]
		for i := range row {
			row[i] += bt.At(i)
		}
	}
}

// SwiGLU sets gate = silu(gate) * up.
func (b *Backend) SwiGLU(gate, up runtime.Buffer, n int) {
	g, u := vec(gate)[:n], vec(up)[:n]
	for i, v := range g {
		g[i] = v / (1 + expf(-v)) * u[i]
	}
}

// Add sets dst += x.
func (b *Backend) Add(dst, x runtime.Buffer, n int) {
	d, xs := vec(dst)[:n], vec(x)[:n]
	for i := range d {
		d[i] += xs[i]
	}
}

// StoreKV copies one head of one row of k and v into a page slot.
func (b *Backend) StoreKV(kPage, vPage runtime.Buffer, slot int, k, v runtime.Buffer, row, head, headDim, kvDim int) {
	src := row*kvDim + head*headDim
	copy(vec(kPage)[slot*headDim:(slot+1)*headDim], vec(k)[src:src+headDim])
	copy(vec(vPage)[slot*headDim:(slot+1)*headDim], vec(v)[src:src+headDim])
}

var _ runtime.Backend = (*Backend)(nil)

// MoveKV copies one slot's key and value to another slot.
func (b *Backend) MoveKV(dstK, dstV runtime.Buffer, dstSlot int, srcK, srcV runtime.Buffer, srcSlot, headDim int) {
	copy(vec(dstK)[dstSlot*headDim:(dstSlot+1)*headDim], vec(srcK)[srcSlot*headDim:(srcSlot+1)*headDim])
	copy(vec(dstV)[dstSlot*headDim:(dstSlot+1)*headDim], vec(srcV)[srcSlot*headDim:(srcSlot+1)*headDim])
}

// KVLanes returns n lanes (runtime.KVLaner): the backend itself, whose
// StoreKV and MoveKV copy at once and touch only the pages named (lanes
// write disjoint pages), and whose allocations are locked.
func (b *Backend) KVLanes(n int) []runtime.KVOps {
	ops := make([]runtime.KVOps, n) // batches on other goroutines may ask at once
	for i := range ops {
		ops[i] = b
	}
	return ops
}

// JoinKVLanes does nothing: the lanes' copies are made.
func (b *Backend) JoinKVLanes() {}

var _ runtime.KVLaner = (*Backend)(nil)
