package cuda

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// newMemGPU opens GPU 0 at float32 precision for the memory tests, or skips.
func newMemGPU(t *testing.T) *Backend {
	t.Helper()
	if ok, why := Available(); !ok {
		t.Skip("no CUDA device: " + why)
	}
	b, err := NewBackendAt(0, "f32")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// checkSum checks that weights + KV + scratch is what the backend took from
// the driver.
func checkSum(t *testing.T, b *Backend, when string) runtime.Memory {
	t.Helper()
	m := b.Memory()
	if now, _ := b.D.MemStats(); m.Total() != now || m.Scratch < 0 {
		t.Fatalf("%s: weights %d + KV %d + scratch %d != %d bytes from the driver", when, m.Weights, m.KV, m.Scratch, now)
	}
	return m
}

// TestMemoryByKindAndRelease uploads a model once, runs a runner over the
// upload (prompt and decode steps, bf16 pages), and checks the accounting
// by kind at each point; ReleaseWork then gives back everything but the
// weights (the driver holds what it held right after the upload), and a new
// runner over the same upload computes the same logits. Freeing the weights
// and releasing leaves the driver what the backend held when it opened (the
// cuBLAS workspace).
func TestMemoryByKindAndRelease(t *testing.T) {
	b := newMemGPU(t)
	opened, _ := b.D.MemStats()
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	dw, err := runtime.UploadWeights(m, b)
	if err != nil {
		t.Fatal(err)
	}
	got := checkSum(t, b, "after the upload")
	if got.Weights != dw.Bytes() || got.Uploads != dw.Tensors() || got.KV != 0 {
		t.Fatalf("after the upload: %+v; want %d weight bytes in %d uploads, no KV", got, dw.Bytes(), dw.Tensors())
	}
	base, _ := b.D.MemStats()

	prompt := make([]int, 80)
	for i := range prompt {
		prompt[i] = 3 + (i*7)%(m.Config.Vocab-3)
	}
	run := func() []float32 {
		r, err := runtime.NewRunnerWith(m, b, runtime.RunnerOptions{MaxRows: 32, KVType: runtime.BF16, Weights: dw})
		if err != nil {
			t.Fatal(err)
		}
		logits := make([]float32, m.Config.Vocab)
		if err := r.Forward(prompt, logits); err != nil {
			t.Fatal(err)
		}
		out := append([]float32(nil), logits...)
		for i := range 20 {
			if err := r.Forward([]int{3 + i}, logits); err != nil {
				t.Fatal(err)
			}
			out = append(out, logits...)
		}
		mem := checkSum(t, b, "after the steps")
		if mem.KV != r.Cache.AllocatedBytes() || mem.KVBuffers != int(2*mem.KV/r.Cache.PageBytes()) {
			t.Fatalf("device KV %d bytes in %d buffers, the cache allocated %d bytes of %d-byte pages", mem.KV, mem.KVBuffers, r.Cache.AllocatedBytes(), r.Cache.PageBytes())
		}
		if mem.PeakKV < mem.KV || mem.Peak < mem.Total() || mem.PeakScratch <= 0 {
			t.Fatalf("peaks %+v below what is held", mem)
		}
		return out
	}
	first := run()
	if err := b.ReleaseWork(); err != nil {
		t.Fatal(err)
	}
	got = checkSum(t, b, "after ReleaseWork")
	if now, _ := b.D.MemStats(); got.KV != 0 || got.KVBuffers != 0 || now != base || got.Weights != dw.Bytes() {
		t.Fatalf("after ReleaseWork: %+v, %d bytes from the driver; want no KV and the %d bytes held after the upload", got, now, base)
	}
	if len(b.graphs) != 0 {
		t.Errorf("%d graphs kept after ReleaseWork", len(b.graphs))
	}
	for _, x := range b.live {
		if x.kind != runtime.MemWeights {
			t.Fatalf("a %s buffer of %d bytes is live after ReleaseWork", x.kind, x.bytes)
		}
	}
	second := run()
	if len(first) != len(second) {
		t.Fatalf("%d and %d logits", len(first), len(second))
	}
	var diff, scale float64
	for i := range first {
		diff = max(diff, math.Abs(float64(first[i])-float64(second[i])))
		scale = max(scale, math.Abs(float64(first[i])))
	}
	if diff > 1e-5*max(scale, 1) {
		t.Fatalf("logits differ by up to %g (of %g) before and after ReleaseWork: the weights or the kernels' state changed", diff, scale)
	}
	dw.Free()
	if err := b.ReleaseWork(); err != nil {
		t.Fatal(err)
	}
	if now, _ := b.D.MemStats(); now != opened || b.Memory().Weights != 0 {
		t.Errorf("weights freed and work released: the driver holds %d bytes (%+v), want the %d held when the backend opened", now, b.Memory(), opened)
	}
}

// TestFailAllocs checks the failure hook: a refused KV page panics with the
// hook's error, a refused weight makes Upload return it, and allocations
// of other kinds, or after the hook is cleared, go through.
func TestFailAllocs(t *testing.T) {
	b := newMemGPU(t)
	injected := errors.New("out of memory (injected)")
	b.FailAllocs(func(kind runtime.MemKind, bytes int64) error {
		if kind == runtime.MemKV || kind == runtime.MemWeights {
			return injected
		}
		return nil
	})
	x := b.Alloc(64) // scratch: allowed
	func() {
		defer func() {
			p := recover()
			err, ok := p.(error)
			if !ok || !errors.Is(err, injected) {
				t.Errorf("AllocKV under the hook: panic %v, want the injected error", p)
			}
		}()
		b.AllocKV(256, runtime.BF16)
	}()
	w := runtime.NewF32Tensor("w", make([]float32, 16), 4, 4)
	if _, err := b.Upload(w); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Errorf("Upload under the hook: %v, want the injected error", err)
	}
	b.FailAllocs(nil)
	b.Free(b.AllocKV(256, runtime.BF16))
	buf, err := b.Upload(w)
	if err != nil {
		t.Fatal(err)
	}
	b.Free(buf)
	b.Free(x)
	if m := checkSum(t, b, "after the frees"); m.KV != 0 || m.Weights != 0 || m.Uploads != 1 {
		t.Errorf("after freeing everything: %+v", m)
	}
}

// TestSlabTrim fills slabs of two block classes, frees every block of one
// slab and some of another, and checks that trim gives back exactly the
// empty slab and that the blocks left stay usable.
func TestSlabTrim(t *testing.T) {
	b := fakeOf(t, "f32") // the allocator's bookkeeping: the fake device's will do
	s := newSlabAllocator(b.D)
	defer s.close()
	const small = 4096
	per := int(slabBytes / small)
	var a, c []Ptr
	for i := range per { // one slab of 4 KiB blocks
		p, _, grew, err := s.alloc(small)
		if err != nil {
			t.Fatal(err)
		}
		if grew != (i == 0) {
			t.Fatalf("block %d of the first slab: took a slab from the driver %v", i, grew)
		}
		a = append(a, p)
	}
	for i := range 3 { // three blocks of another class, in one more slab
		p, _, grew, err := s.alloc(2 * small)
		if err != nil {
			t.Fatal(err)
		}
		if grew != (i == 0) {
			t.Fatalf("block %d of the second slab: took a slab from the driver %v", i, grew)
		}
		c = append(c, p)
	}
	before, _ := b.D.MemStats()
	for _, p := range a {
		s.release(p, small)
	}
	s.release(c[0], 2*small)
	s.trim()
	after, _ := b.D.MemStats()
	if before-after != slabBytes || len(s.slabs) != 1 {
		t.Fatalf("trim freed %d bytes and kept %d slabs; want one slab (%d bytes) freed, one kept", before-after, len(s.slabs), int64(slabBytes))
	}
	if n := len(s.classes[2*small].free); n != per/2-2 {
		t.Errorf("%d free blocks left in the kept slab, want %d", n, per/2-2)
	}
	if n := len(s.classes[small].free); n != 0 {
		t.Errorf("%d free blocks of the freed slab left on the list", n)
	}
	p, _, _, err := s.alloc(2 * small)
	if err != nil || p == 0 {
		t.Fatalf("allocation after trim: %v", err)
	}
}
