//go:build linux

package runtime

import (
	"fmt"
	"os"
	goruntime "runtime"
	"syscall"
	"unsafe"
)

// mapping is a file mapped read-only into memory: tensors read from it point
// into data (Tensor.mem keeps the mapping alive while they do), and it is
// unmapped once no tensor refers to it.
type mapping struct {
	data []byte
}

// mapFile maps the first size bytes of f read-only (private: the file is
// never written through it).
func mapFile(f *os.File, size int64) (*mapping, error) {
	if size <= 0 || int64(int(size)) != size {
		return nil, fmt.Errorf("mmap: cannot map %d bytes", size)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", f.Name(), err)
	}
	m := &mapping{data: data}
	goruntime.AddCleanup(m, func(d []byte) { _ = syscall.Munmap(d) }, data)
	return m, nil
}

// drop lets the kernel take back the resident pages of the n bytes at p
// (which lie in the mapping): they are read from the file again if touched.
func (m *mapping) drop(p unsafe.Pointer, n int) {
	if n <= 0 || len(m.data) == 0 {
		return
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(m.data)))
	lo := uintptr(p) - base
	if uintptr(p) < base || lo+uintptr(n) > uintptr(len(m.data)) {
		panic(fmt.Sprintf("runtime: drop of %d bytes at %#x outside a mapping of %d bytes at %#x", n, uintptr(p), len(m.data), base))
	}
	page := uintptr(os.Getpagesize())
	start := lo &^ (page - 1)
	end := min((lo+uintptr(n)+page-1)&^(page-1), uintptr(len(m.data)))
	// Advice is only a hint: a refusal leaves the pages resident, which
	// costs memory, not correctness.
	_ = syscall.Madvise(m.data[start:end], syscall.MADV_DONTNEED)
}

// mapped reports whether mapping files works on this system.
const mapped = true
