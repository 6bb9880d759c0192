package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestAttendTMABitsGPU: the TMA-fed decode kernel (_tcm,
// KVBENCH_ATTN_TMA=on) fills the _tc kernel's stages with the same bytes in
// the same layout, so the same call over the same cache gives the _tc
// kernel's outputs bit for bit: heads of 64 and 128, groups of 4, 1 and 8
// heads, pages of 16 and 64 tokens, rows whose last tile ends inside a page
// (its value rows past the row are the page's, zeroed in the stage) and
// rows of many chunks; chunks chosen per call and of 32. Pages of 8 tokens
// (a tile over two pages) stay on the _tc kernel. Needs sm_90 and a driver
// with cuTensorMapEncodeTiled; skips elsewhere.
func TestAttendTMABitsGPU(t *testing.T) {
	if ok, why := Available(); !ok {
		t.Skip("no CUDA device: " + why)
	}
	t.Setenv("KVBENCH_ATTN_TC", "on")
	t.Setenv("KVBENCH_ATTN_CLUSTER", "0")
	t.Setenv("KVBENCH_ATTN_TMA", "off")
	b, err := NewBackend(0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.D.Major < 9 || !b.D.HasTMA() {
		t.Skipf("the _tcm kernel needs sm_90 and the TMA, not %s", b.D.Arch())
	}
	defer b.SetAttnChunk(0)
	rng := rand.New(rand.NewPCG(61, 7))
	vec := func(n int) runtime.Buffer {
		v := make([]float32, n)
		for i := range v {
			v[i] = rng.Float32()*2 - 1
		}
		buf := b.Alloc(n)
		b.Write(buf, 0, v)
		return buf
	}
	for _, hd := range []int{64, 128} {
		for _, hk := range [][2]int{{32, 8}, {8, 8}, {8, 1}} {
			for _, ps := range []int{8, 16, 64} {
				for _, n := range []int{15, 1000, 9000} {
					for _, chunk := range []int{0, 32} {
						name := fmt.Sprintf("hd%d/%dx%d/ps%d/n%d/chunk%d", hd, hk[0], hk[1], ps, n, chunk)
						t.Run(name, func(t *testing.T) {
							if err := b.SetAttnChunk(chunk); err != nil {
								t.Fatal(err)
							}
							cfg := runtime.Config{Layers: 1, Heads: hk[0], KVHeads: hk[1], HeadDim: hd}
							kc, err := runtime.NewKVCacheOf(b, cfg, ps, runtime.BF16)
							if err != nil {
								t.Fatal(err)
							}
							for at := 0; at < n; {
								rows := min(n-at, 4096)
								pos := make([]int, rows)
								for i := range pos {
									pos[i] = at + i
								}
								kc.Append(0, vec(rows*cfg.KVDim()), vec(rows*cfg.KVDim()), rows, pos)
								at += rows
							}
							q, out := vec(hk[0]*hd), b.Alloc(hk[0]*hd)
							a := &runtime.AttnArgs{Rows: 1, QPos: []int{n - 1}, Heads: hk[0], KVHeads: hk[1], HeadDim: hd,
								Scale: float32(1 / math.Sqrt(float64(hd))), Seqs: kc.Seqs(0), Rope: runtime.RopeHalf, Theta: 1e4, Q: q, Out: out}
							var got [2][]float32
							var kernels [2]string
							for i, on := range []bool{false, true} {
								b.split.tma = on
								b.Write(out, 0, make([]float32, hk[0]*hd))
								b.Attend(a)
								got[i] = make([]float32, hk[0]*hd)
								b.Read(got[i], out, 0)
								kernels[i] = b.split.last.Kernel
							}
							b.split.tma = false
							wantTM := ps >= 16
							if !strings.HasSuffix(kernels[0], "_tc") || strings.HasSuffix(kernels[1], "_tcm") != wantTM {
								t.Fatalf("kernels %q then %q (the second _tcm: %v)", kernels[0], kernels[1], wantTM)
							}
							for i := range got[0] {
								if math.IsNaN(float64(got[0][i])) || math.Float32bits(got[0][i]) != math.Float32bits(got[1][i]) {
									t.Fatalf("output %d: %v (_tc) against %v (%s)", i, got[0][i], got[1][i], kernels[1])
								}
							}
						})
					}
				}
			}
		}
	}
}
