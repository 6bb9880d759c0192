package cuda_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestStagedUpload: on the fake device, a weight of 80 MB goes up in three
// pieces through the two pinned buffers (the third waits for the first
// buffer's copy), a small one in one pageable copy and one wait, and the
// backend closes with its pinned buffers.
func TestStagedUpload(t *testing.T) {
	be, err := cuda.NewFakeBackend("bf16")
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	big := &runtime.Tensor{Name: "big", Shape: []int{40 << 20}, DType: runtime.BF16, U16: make([]uint16, 40<<20)}
	_, c0, _, w0 := cuda.FakeCounts()
	if _, err := be.Upload(big); err != nil {
		t.Fatal(err)
	}
	_, c1, _, w1 := cuda.FakeCounts()
	if c1-c0 != 3 || w1-w0 != 1 {
		t.Errorf("80 MB: %d copies and %d waits, want 3 and 1", c1-c0, w1-w0)
	}
	small := &runtime.Tensor{Name: "small", Shape: []int{1000}, DType: runtime.F32, F32: make([]float32, 1000)}
	if _, err := be.Upload(small); err != nil {
		t.Fatal(err)
	}
	_, c2, _, w2 := cuda.FakeCounts()
	if c2-c1 != 1 || w2-w1 != 1 {
		t.Errorf("4 KB: %d copies and %d waits, want 1 and 1", c2-c1, w2-w1)
	}
}

// BenchmarkStagedUpload times the host's share of a staged upload (the
// fake device copies nothing) of 512 MB read from a mapped file, as a
// safetensors weight is: the source pages fault in as the parallel copy
// reads them. It reports GB/s.
func BenchmarkStagedUpload(b *testing.B) {
	const n = 512 << 20
	path := filepath.Join(b.TempDir(), "w.bin")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.Write(make([]byte, n)); err != nil {
		b.Fatal(err)
	}
	f.Close()
	be, err := cuda.NewFakeBackend("bf16")
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	b.SetBytes(n)
	for range b.N {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		m, err := syscall.Mmap(int(f.Fd()), 0, n, syscall.PROT_READ, syscall.MAP_SHARED)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		t := &runtime.Tensor{Name: "w", Shape: []int{n / 2}, DType: runtime.BF16, U16: unsafe.Slice((*uint16)(unsafe.Pointer(&m[0])), n/2)}
		x, err := be.Upload(t)
		if err != nil {
			b.Fatal(err)
		}
		be.Free(x)
		syscall.Munmap(m)
	}
}
