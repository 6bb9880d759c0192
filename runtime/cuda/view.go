package cuda

import (
	"fmt"

	"github.com/kvbench/kvbench/runtime"
)

// View returns a buffer over elements [off, off+n) of the float32 buffer x,
// sharing its device memory (runtime.Viewer: a Batch hands each stream its
// rows of the batch's activations this way). A view is not a live
// allocation of its own: it is never freed, and it must not outlive x.
func (b *Backend) View(x runtime.Buffer, off, n int) runtime.Buffer {
	if n < 0 {
		panic(fmt.Sprintf("cuda: View of %d elements", n))
	}
	d := b.check(x, off, n, "View")
	if d.dtype != runtime.F32 {
		panic(fmt.Sprintf("cuda: View of a %v buffer, want float32", d.dtype))
	}
	return &buf{p: d.p.Add(int64(off) * 4), n: n, dtype: runtime.F32}
}

var _ runtime.Viewer = (*Backend)(nil)
