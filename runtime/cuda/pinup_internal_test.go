package cuda

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestCopyParallel: the parallel copy of a staged upload leaves dst equal
// to src at sizes around its part boundaries.
func TestCopyParallel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 63, 64, 1<<20 - 1, 1<<20 + 5, 5<<20 + 17, 8 << 20} {
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(rng.Uint32())
		}
		dst := make([]byte, n)
		copyParallel(dst, src)
		if !bytes.Equal(dst, src) {
			t.Errorf("%d bytes: the copy differs", n)
		}
	}
}
