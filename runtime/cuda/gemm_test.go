package cuda_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// gpuWith opens the CUDA backend with KVBENCH_GEMM set to mode.
func gpuWith(t *testing.T, mode string) *cuda.Backend {
	t.Helper()
	t.Setenv("KVBENCH_GEMM", mode)
	g := newGPU(t)
	if mode != "off" && (strings.Contains(g.Device(), "no cuBLAS") || !strings.Contains(g.Device(), "cuBLAS")) {
		t.Fatalf("KVBENCH_GEMM=%s: no cuBLAS: %s", mode, g.Device())
	}
	return g
}

// uploadBoth uploads w to the CPU and the GPU backend.
func uploadBoth(t *testing.T, c *cpu.Backend, g *cuda.Backend, w *runtime.Tensor) (runtime.Buffer, runtime.Buffer) {
	t.Helper()
	wc, err := c.Upload(w)
	if err != nil {
		t.Fatal(err)
	}
	wg, err := g.Upload(w)
	if err != nil {
		t.Fatal(err)
	}
	return wc, wg
}

// TestBackendGemm checks MatMul through cuBLAS (rows >= 16) against the CPU
// for every weight type: float32 GEMM within float32 rounding, bf16 GEMM
// (activations rounded to bf16) within bf16 rounding.
func TestBackendGemm(t *testing.T) {
	c := cpu.New(0)
	defer c.Close()
	for _, mode := range []string{"f32", "bf16"} {
		t.Run(mode, func(t *testing.T) {
			g := gpuWith(t, mode)
			rng := rand.New(rand.NewPCG(8, 1))
			for _, dt := range []runtime.DType{runtime.F32, runtime.BF16, runtime.F16} {
				for _, sh := range [][3]int{{16, 64, 50}, {64, 512, 1376}, {300, 384, 259}} {
					rows, in, out := sh[0], sh[1], sh[2]
					wc, wg := uploadBoth(t, c, g, weight(rng, dt, out, in))
					x := newPair(c, g, randVec(rng, rows*in, 1))
					dst := newPair(c, g, make([]float32, rows*out))
					c.MatMul(dst.c, x.c, wc, rows, in, out)
					g.MatMul(dst.g, x.g, wg, rows, in, out)
					tol := 1e-5
					if mode == "bf16" && dt != runtime.F32 {
						tol = 2e-2
					}
					dst.cmp(t, c, g, fmt.Sprintf("GEMM %s %v %dx%dx%d", mode, dt, rows, in, out), tol)
				}
			}
		})
	}
}

// TestBackendGemmFused checks the products of many rows that share an
// input or add to their output (MatMul3, MatMulSwiGLU: x rounded to the
// weights' type once for every GEMM; MatMulAdd: the sum in the GEMM's
// epilogue) against the CPU's separate products, in each GEMM mode and for
// every weight type, also with weights of two types in one MatMul3.
func TestBackendGemmFused(t *testing.T) {
	c := cpu.New(0)
	defer c.Close()
	for _, mode := range []string{"f32", "bf16"} {
		t.Run(mode, func(t *testing.T) {
			g := gpuWith(t, mode)
			rng := rand.New(rand.NewPCG(8, 2))
			for _, dts := range [][3]runtime.DType{{runtime.BF16, runtime.BF16, runtime.BF16}, {runtime.F16, runtime.F16, runtime.F16},
				{runtime.F32, runtime.F32, runtime.F32}, {runtime.BF16, runtime.F16, runtime.BF16}} {
				for _, sh := range [][4]int{{16, 64, 50, 24}, {64, 512, 1376, 256}} {
					rows, in, o0, o1 := sh[0], sh[1], sh[2], sh[3]
					tol := 1e-5
					if mode == "bf16" && dts != [3]runtime.DType{runtime.F32, runtime.F32, runtime.F32} {
						tol = 2e-2
					}
					name := fmt.Sprintf("%s %v %dx%d", mode, dts, rows, in)
					x := newPair(c, g, randVec(rng, rows*in, 1))
					outs := [3]int{o0, o1, o1}
					var wc, wg [3]runtime.Buffer
					var ds [3]pair
					var ms [3]runtime.MatOut
					for i := range 3 {
						wc[i], wg[i] = uploadBoth(t, c, g, weight(rng, dts[i], outs[i], in))
						ds[i] = newPair(c, g, make([]float32, rows*outs[i]))
						c.MatMul(ds[i].c, x.c, wc[i], rows, in, outs[i])
						ms[i] = runtime.MatOut{Dst: ds[i].g, W: wg[i], Out: outs[i]}
					}
					g.MatMul3(x.g, rows, in, ms[0], ms[1], ms[2])
					for i := range ds {
						ds[i].cmp(t, c, g, fmt.Sprintf("%s MatMul3 [%d]", name, i), tol)
					}

					acc := newPair(c, g, randVec(rng, rows*o0, 4))
					tmp := newPair(c, g, make([]float32, rows*o0))
					c.MatMul(tmp.c, x.c, wc[0], rows, in, o0)
					c.Add(acc.c, tmp.c, rows*o0)
					g.MatMulAdd(acc.g, tmp.g, x.g, wg[0], rows, in, o0)
					acc.cmp(t, c, g, name+" MatMulAdd", tol)

					gate, up := newPair(c, g, make([]float32, rows*o1)), newPair(c, g, make([]float32, rows*o1))
					c.MatMul(gate.c, x.c, wc[1], rows, in, o1)
					c.MatMul(up.c, x.c, wc[2], rows, in, o1)
					c.SwiGLU(gate.c, up.c, rows*o1)
					g.MatMulSwiGLU(gate.g, up.g, x.g, wg[1], wg[2], rows, in, o1)
					gate.cmp(t, c, g, name+" MatMulSwiGLU", tol)
				}
			}
		})
	}
}

// TestBackendMLP checks the fused MLP block (bf16 gate and up products,
// SwiGLU rounded to bf16, the down GEMM adding to x) against the CPU's
// separate float32 operations, within bf16 rounding, for bf16 weights in
// the bf16 GEMM mode; elsewhere (float32 weights, the f32 mode, rows under
// the GEMMs' least, a hidden width not a multiple of 8) it must decline.
func TestBackendMLP(t *testing.T) {
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(8, 3))
	for _, mode := range []string{"bf16", "f32"} {
		g := gpuWith(t, mode)
		for _, sh := range [][4]int{{16, 64, 176, 0}, {300, 384, 1024, 0}, {64, 512, 1376, 0}, {64, 256, 100, 1}, {1, 256, 512, 1}} {
			rows, dim, hidden := sh[0], sh[1], sh[2]
			for _, dt := range []runtime.DType{runtime.BF16, runtime.F32} {
				name := fmt.Sprintf("%s %v %dx%dx%d", mode, dt, rows, dim, hidden)
				gc, gg := uploadBoth(t, c, g, weight(rng, dt, hidden, dim))
				uc, ug := uploadBoth(t, c, g, weight(rng, dt, hidden, dim))
				dc, dg := uploadBoth(t, c, g, weight(rng, dt, dim, hidden))
				xb := newPair(c, g, randVec(rng, rows*dim, 1))
				x := newPair(c, g, randVec(rng, rows*dim, 0.5))
				gate, up := c.Alloc(rows*hidden), c.Alloc(rows*hidden)
				c.MatMul(gate, xb.c, gc, rows, dim, hidden)
				c.MatMul(up, xb.c, uc, rows, dim, hidden)
				c.SwiGLU(gate, up, rows*hidden)
				tmp := c.Alloc(rows * dim)
				c.MatMul(tmp, gate, dc, rows, hidden, dim)
				c.Add(x.c, tmp, rows*dim)
				before := read(g, x.g)
				served := g.MLP(x.g, xb.g, gg, ug, dg, rows, dim, hidden)
				if want := mode == "bf16" && dt == runtime.BF16 && sh[3] == 0; served != want {
					t.Fatalf("%s: MLP served %v, want %v", name, served, want)
				}
				if !served {
					if after := read(g, x.g); relDiff(after, before) != 0 {
						t.Fatalf("%s: MLP declined but changed x", name)
					}
					continue
				}
				x.cmp(t, c, g, name+" MLP", 2e-2)
			}
		}
	}
}

// TestBackendGemmModel runs a 512-token prefill of gutenberg-llama-25m with
// each GEMM mode: the logits against the CPU and the prefill time.
func TestBackendGemmModel(t *testing.T) {
	m, err := runtime.Load(fixtures.Path(t, "models/gutenberg-llama-25m"))
	if err != nil {
		t.Fatal(err)
	}
	c := cpu.New(0)
	defer c.Close()
	vocab := m.Config.Vocab
	rng := rand.New(rand.NewPCG(2, 2))
	prompt := make([]int, 512)
	for i := range prompt {
		prompt[i] = 3 + rng.IntN(vocab-3)
	}
	rc, err := runtime.NewRunner(m, c, 256)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, vocab)
	if err := rc.Forward(prompt, want); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"off", "f32", "bf16"} {
		t.Run(mode, func(t *testing.T) {
			g := gpuWith(t, mode)
			rg, err := runtime.NewRunner(m, g, 256)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]float32, vocab)
			best := time.Duration(1 << 62)
			for range 5 {
				rg.Reset()
				t0 := time.Now()
				if err := rg.Forward(prompt, got); err != nil {
					t.Fatal(err)
				}
				best = min(best, time.Since(t0))
			}
			d := relDiff(got, want)
			t.Logf("gemm %s: 512-token prefill (chunks of 256) best of 5 %v (%.0f tokens/s); logits relative difference to the CPU %.3g",
				mode, best, 512/best.Seconds(), d)
			limit := 1e-4
			if mode == "bf16" {
				limit = 5e-2
			}
			if d > limit {
				t.Errorf("gemm %s: logits differ by %.3g relative", mode, d)
			}
		})
	}
}

// TestBackendGemmSpeed logs the device time of MatMul by each path at the
// shapes of a 25M model's prefill and of a 7B model's (bf16 weights), to
// choose where cuBLAS takes over. Only -v output; nothing is asserted.
func TestBackendGemmSpeed(t *testing.T) {
	if testing.Short() {
		t.Skip("timing only")
	}
	rng := rand.New(rand.NewPCG(1, 1))
	for _, mode := range []string{"off", "f32", "bf16"} {
		g := gpuWith(t, mode)
		for _, sh := range [][3]int{{256, 512, 1376}, {256, 512, 32000}, {256, 4096, 4096}, {256, 4096, 11008}, {1024, 4096, 4096}} {
			rows, in, out := sh[0], sh[1], sh[2]
			w, err := g.Upload(weight(rng, runtime.BF16, out, in))
			if err != nil {
				t.Fatal(err)
			}
			x, dst := g.Alloc(rows*in), g.Alloc(rows*out)
			g.MatMul(dst, x, w, rows, in, out)
			const reps = 10
			a := g.Mark()
			for range reps {
				g.MatMul(dst, x, w, rows, in, out)
			}
			d := g.Elapsed(a, g.Mark()) / reps
			g.ClearMarks()
			t.Logf("MatMul bf16 weights %dx%dx%d gemm %s: %v (%.1f TFLOP/s)", rows, in, out, mode, d, 2*float64(rows*in*out)/d.Seconds()/1e12)
			g.Free(w)
			g.Free(x)
			g.Free(dst)
		}
	}
}
