//go:build !amd64

package cpu

// No assembly kernels on this architecture: the dispatchers in kernels.go
// always take the Go reference versions.

var (
	hasAVX2FMA = false
	hasF16C    = false
	useAVX2    = false
)

func matmulF32AVX2(out, x, w []float32, rows, in, outStride, o0, o1 int) {
	matmulF32Go(out, x, w, rows, in, outStride, o0, o1)
}

func matmulBF16AVX2(out, x []float32, w []uint16, rows, in, outStride, o0, o1 int) {
	matmulBF16Go(out, x, w, rows, in, outStride, o0, o1)
}

func matmulF16AVX2(out, x []float32, w []uint16, rows, in, outStride, o0, o1 int) {
	matmulF16Go(out, x, w, rows, in, outStride, o0, o1)
}

func dotF32AVX2(a, b []float32) float32 { return dotF32Go(a, b) }

func axpyF32AVX2(y []float32, a float32, x []float32) { axpyF32Go(y, a, x) }

func dotRowsAVX2(out, q, k []float32, ks int) { dotRowsGo(out, q, k, ks) }

func axpyRowsAVX2(y, e, x []float32, xs int) { axpyRowsGo(y, e, x, xs) }
