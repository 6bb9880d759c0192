package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestWGMMALayouts checks the shared-memory layout and the descriptors
// flash_wg (prefill_wg.cu) gives Hopper's wgmma, one m64n64k16 product
// against the CPU: Q and K as K-major operands (A and B from shared
// memory), P and V as flash_wg's P V (A from registers, B read
// transposed). Each also runs with the descriptor's two byte offsets
// swapped, so that a failure says which reading of the layout the hardware
// takes. It runs on sm_90 devices only.
func TestWGMMALayouts(t *testing.T) {
	k := gpu(t)
	d := k.D
	if d.Arch() != "sm_90a" {
		t.Skip("wgmma needs sm_90a, device is " + d.Arch())
	}
	f, err := k.Func("wg_probe64")
	if err != nil {
		t.Fatal(err)
	}
	const n = 64
	rng := rand.New(rand.NewPCG(5, 6))
	a := randBF16(rng, 64*16)
	for _, c := range []struct {
		name     string
		mode     int
		lbo, sbo int32 // the layout's offsets (prefill_wg.cu)
	}{
		{"QK^T (both from shared memory, K-major)", 0, 128, 16 * 16}, // A and B: 16 channels
		{"PV (A in registers, B transposed)", 1, n * 16, 128},        // 16 tokens of 64 channels
	} {
		b := randBF16(rng, n*16)
		want := make([]float64, 64*n)
		for i := range 64 {
			for j := range n {
				s := 0.0
				for kk := range 16 {
					bv := b[j*16+kk] // mode 0: B given as [n][16]
					if c.mode == 1 {
						bv = b[kk*n+j] // mode 1: B given as [16][n]
					}
					s += BF16Float64(a[i*16+kk]) * BF16Float64(bv)
				}
				want[i*n+j] = s
			}
		}
		ad, bd := upload(t, d, a), upload(t, d, b)
		worst := func(lbo, sbo int32) float64 {
			out := devOut(t, d, 64*n)
			if err := f.Launch(Dim3{1, 1, 1}, Dim3{128, 1, 1}, 0, out, ad, bd, int32(c.mode), lbo, sbo); err != nil {
				t.Fatal(err)
			}
			got := make([]float32, 64*n)
			if err := Download(d, got, out); err != nil {
				t.Fatal(err)
			}
			w := 0.0
			for i, g := range got {
				e := math.Abs(float64(g) - want[i])
				if g != g {
					e = math.Inf(1)
				}
				w = math.Max(w, e)
			}
			return w
		}
		nominal, swapped := worst(c.lbo, c.sbo), worst(c.sbo, c.lbo)
		t.Logf("%s: worst absolute error %.2e (lbo %d, sbo %d), %.2e swapped", c.name, nominal, c.lbo, c.sbo, swapped)
		if !(nominal < 1e-3) {
			hint := ""
			if swapped < 1e-3 {
				hint = fmt.Sprintf(": the hardware reads lbo %d, sbo %d", c.sbo, c.lbo)
			}
			t.Errorf("%s: worst absolute error %.3e%s", c.name, nominal, hint)
		}
	}
}
