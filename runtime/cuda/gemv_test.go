package cuda_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestBackendMatVec checks the one-row products (be_mv, be_mv_swiglu) and
// their fused epilogues against the CPU for every weight type, at widths
// that leave a part of a block's stride and outputs that leave a part of
// a block's rows; an unaligned view of x takes the general kernel.
func TestBackendMatVec(t *testing.T) {
	for _, rows := range []string{"4", "8"} {
		t.Run("rows"+rows, func(t *testing.T) {
			t.Setenv("KVBENCH_MV_ROWS", rows)
			testMatVec(t)
		})
	}
}

func testMatVec(t *testing.T) {
	c := cpu.New(0)
	defer c.Close()
	g := newGPU(t)
	rng := rand.New(rand.NewPCG(14, 3))
	for _, dt := range []runtime.DType{runtime.BF16, runtime.F16, runtime.F32} {
		for _, sh := range []struct{ in, o0, o1, o2 int }{{8, 1, 2, 3}, {264, 5, 3, 7}, {2056, 13, 4, 1}, {4096, 512, 128, 128}} {
			in := sh.in
			up := func(out int) (runtime.Buffer, runtime.Buffer) { return uploadBoth(t, c, g, weight(rng, dt, out, in)) }
			name := fmt.Sprintf("%v in %d", dt, in)
			x := newPair(c, g, randVec(rng, in, 1))
			wc0, wg0 := up(sh.o0)
			wc1, wg1 := up(sh.o1)
			wc2, wg2 := up(sh.o2)
			tol := 1e-5

			// MatMul of one row, and three in one launch.
			d0 := newPair(c, g, make([]float32, sh.o0))
			c.MatMul(d0.c, x.c, wc0, 1, in, sh.o0)
			g.MatMul(d0.g, x.g, wg0, 1, in, sh.o0)
			d0.cmp(t, c, g, name+" MatMul", tol)
			ds := [3]pair{newPair(c, g, make([]float32, sh.o0)), newPair(c, g, make([]float32, sh.o1)), newPair(c, g, make([]float32, sh.o2))}
			wcs, wgs, outs := [3]runtime.Buffer{wc0, wc1, wc2}, [3]runtime.Buffer{wg0, wg1, wg2}, [3]int{sh.o0, sh.o1, sh.o2}
			var ms [3]runtime.MatOut
			for i := range ds {
				c.MatMul(ds[i].c, x.c, wcs[i], 1, in, outs[i])
				ms[i] = runtime.MatOut{Dst: ds[i].g, W: wgs[i], Out: outs[i]}
			}
			g.MatMul3(x.g, 1, in, ms[0], ms[1], ms[2])
			for i := range ds {
				ds[i].cmp(t, c, g, fmt.Sprintf("%s MatMul3 [%d]", name, i), tol)
			}

			// dst += W x, against MatMul then Add.
			base := randVec(rng, sh.o0, 4)
			acc := newPair(c, g, base)
			tmp := newPair(c, g, make([]float32, sh.o0))
			c.MatMul(tmp.c, x.c, wc0, 1, in, sh.o0)
			c.Add(acc.c, tmp.c, sh.o0)
			g.MatMulAdd(acc.g, tmp.g, x.g, wg0, 1, in, sh.o0)
			acc.cmp(t, c, g, name+" MatMulAdd", tol)

			// SwiGLU of two products of the same shape.
			wcu, wgu := up(sh.o0)
			gate, upb := newPair(c, g, make([]float32, sh.o0)), newPair(c, g, make([]float32, sh.o0))
			c.MatMul(gate.c, x.c, wc0, 1, in, sh.o0)
			c.MatMul(upb.c, x.c, wcu, 1, in, sh.o0)
			c.SwiGLU(gate.c, upb.c, sh.o0)
			g.MatMulSwiGLU(gate.g, upb.g, x.g, wg0, wgu, 1, in, sh.o0)
			gate.cmp(t, c, g, name+" MatMulSwiGLU", tol)

			// x at an odd offset: not 16-byte aligned, the general kernel.
			big := newPair(c, g, append([]float32{0.5}, read(c, x.c)...))
			xv := g.View(big.g, 1, in)
			dv := newPair(c, g, make([]float32, sh.o0))
			c.MatMul(dv.c, x.c, wc0, 1, in, sh.o0)
			g.MatMul(dv.g, xv, wg0, 1, in, sh.o0)
			dv.cmp(t, c, g, name+" MatMul of an unaligned view", tol)
		}
	}
}

// TestBackendMatVecSpeed logs the device time of a decode step's products
// at the 8B shape (bf16 weights) as a share of a device-to-device copy's
// bandwidth measured in the same run; each weight is one of enough copies
// that none is read from L2. Only -v output; nothing is asserted.
func TestBackendMatVecSpeed(t *testing.T) {
	if testing.Short() {
		t.Skip("timing only")
	}
	for _, rows := range []string{"4", "8"} {
		t.Run("rows"+rows, func(t *testing.T) {
			t.Setenv("KVBENCH_MV_ROWS", rows)
			matVecSpeed(t)
		})
	}
}

func matVecSpeed(t *testing.T) {
	g := newGPU(t)
	rng := rand.New(rand.NewPCG(1, 1))
	const copies = 8 // 8 x 32 MB > the H200's 50 MB L2
	bw := copyBandwidth(t, g)
	t.Logf("device-to-device copy: %.0f GB/s (read + write bytes)", bw/1e9)
	type shape struct {
		name    string
		in, out int
		kind    string
	}
	for _, sh := range []shape{
		{"q (4096 x 4096)", 4096, 4096, "one"}, {"k (4096 x 1024)", 4096, 1024, "one"},
		{"q, k, v in one launch", 4096, 4096, "qkv"}, {"o + residual", 4096, 4096, "add"},
		{"gate, up + SwiGLU (4096 x 14336 x 2)", 4096, 14336, "swiglu"}, {"down + residual (14336 x 4096)", 14336, 4096, "add"},
		{"output (4096 x 32000)", 4096, 32000, "one"},
	} {
		ws := make([][3]runtime.Buffer, copies)
		outs := [3]int{sh.out, sh.out / 4, sh.out / 4}
		for i := range ws {
			for j := range 3 {
				if j > 0 && sh.kind != "qkv" && !(j == 1 && sh.kind == "swiglu") {
					continue
				}
				o := outs[j]
				if sh.kind == "swiglu" {
					o = sh.out
				}
				w, err := g.Upload(weight(rng, runtime.BF16, o, sh.in))
				if err != nil {
					t.Fatal(err)
				}
				ws[i][j] = w
			}
		}
		x := g.Alloc(sh.in)
		g.Write(x, 0, randVec(rng, sh.in, 1))
		d0, d1, d2, tmp := g.Alloc(sh.out), g.Alloc(sh.out), g.Alloc(sh.out), g.Alloc(sh.out)
		bytes := 2 * int64(sh.in) * int64(sh.out)
		step := func(w [3]runtime.Buffer) {
			switch sh.kind {
			case "one":
				g.MatMul(d0, x, w[0], 1, sh.in, sh.out)
			case "qkv":
				g.MatMul3(x, 1, sh.in, runtime.MatOut{Dst: d0, W: w[0], Out: outs[0]}, runtime.MatOut{Dst: d1, W: w[1], Out: outs[1]},
					runtime.MatOut{Dst: d2, W: w[2], Out: outs[2]})
			case "add":
				g.MatMulAdd(d0, tmp, x, w[0], 1, sh.in, sh.out)
			case "swiglu":
				g.MatMulSwiGLU(d0, d1, x, w[0], w[1], 1, sh.in, sh.out)
			}
		}
		switch sh.kind {
		case "qkv":
			bytes = 2 * int64(sh.in) * int64(outs[0]+outs[1]+outs[2])
		case "swiglu":
			bytes *= 2
		}
		step(ws[0])
		const reps = 5
		a := g.Mark()
		for r := range reps * copies {
			step(ws[r%copies])
		}
		d := g.Elapsed(a, g.Mark()) / (reps * copies)
		g.ClearMarks()
		t.Logf("%-40s %8v  %6.0f GB/s  %5.1f %% of copy", sh.name, d, float64(bytes)/d.Seconds()/1e9, 100*float64(bytes)/d.Seconds()/bw)
		for i := range ws {
			for _, w := range ws[i] {
				if w != nil {
					g.Free(w)
				}
			}
		}
		for _, b := range []runtime.Buffer{x, d0, d1, d2, tmp} {
			g.Free(b)
		}
	}
}

// copyBandwidth times CopyRows of 256 MB (read + write bytes a second).
func copyBandwidth(t *testing.T, g *cuda.Backend) float64 {
	const n = 64 << 20 // floats
	src, dst := g.Alloc(n), g.Alloc(n)
	defer g.Free(src)
	defer g.Free(dst)
	g.CopyRows(dst, src, 0, 0, 1, n)
	const reps = 10
	a := g.Mark()
	for range reps {
		g.CopyRows(dst, src, 0, 0, 1, n)
	}
	d := g.Elapsed(a, g.Mark()) / reps
	g.ClearMarks()
	return 2 * 4 * n / d.Seconds()
}
