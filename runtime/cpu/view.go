package cpu

import (
	"fmt"

	"github.com/kvbench/kvbench/runtime"
)

// View returns a buffer over elements [off, off+n) of the float32 buffer x,
// sharing its memory (runtime.Viewer).
func (b *Backend) View(x runtime.Buffer, off, n int) runtime.Buffer {
	d := vec(x)
	if off < 0 || n < 0 || off+n > len(d) {
		panic(fmt.Sprintf("cpu: View of %d elements at %d in a buffer of %d", n, off, len(d)))
	}
	return &f32{d[off : off+n : off+n]}
}

var _ runtime.Viewer = (*Backend)(nil)
