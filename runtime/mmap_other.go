//go:build !linux

package runtime

import (
	"errors"
	"os"
	"unsafe"
)

// mapping is a mapped file; on this system files are read, never mapped.
type mapping struct {
	data []byte
}

// mapFile always fails here: the caller reads the file instead.
func mapFile(f *os.File, size int64) (*mapping, error) {
	return nil, errors.New("mmap: not used on this system")
}

// drop does nothing: there are no mappings.
func (m *mapping) drop(p unsafe.Pointer, n int) {}

// mapped reports whether mapping files works on this system.
const mapped = false
