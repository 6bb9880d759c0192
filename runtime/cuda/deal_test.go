package cuda_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestFakeDeal: the tensor-core decode kernels' launches take fixed
// chunks by default and deal tiles from the rows' counters under
// KVBENCH_ATTN_DEAL=on (Plan.Dealt), never on the CUDA-core kernels (32/32
// heads at 1,024 tokens); a value other than on or off stops the backend
// with an error naming the variable.
func TestFakeDeal(t *testing.T) {
	plan := func(heads, kv, n int) cuda.Plan {
		t.Helper()
		be := fakeBackend(t)
		cfg := runtime.Config{Arch: "llama", Dim: heads * 128, Hidden: 1024, Layers: 1, Heads: heads, KVHeads: kv,
			HeadDim: 128, Vocab: 100, MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
		be.Attend(fakeDecodeArgs(t, be, cfg, n))
		return be.AttnPlan()
	}
	if p := plan(32, 8, 32768); !strings.HasSuffix(p.Kernel, "_tc") || p.Dealt {
		t.Errorf("32/8 at 32K by default: %+v, want a tensor-core kernel in fixed chunks", p)
	}
	t.Setenv("KVBENCH_ATTN_DEAL", "on")
	if p := plan(32, 8, 32768); !strings.HasSuffix(p.Kernel, "_tc") || !p.Dealt {
		t.Errorf("32/8 at 32K with KVBENCH_ATTN_DEAL=on: %+v, want a tensor-core kernel dealing tiles", p)
	}
	if p := plan(32, 32, 1024); strings.HasSuffix(p.Kernel, "_tc") || p.Dealt {
		t.Errorf("32/32 at 1K with KVBENCH_ATTN_DEAL=on: %+v, want a CUDA-core kernel in fixed chunks", p)
	}
	t.Setenv("KVBENCH_ATTN_DEAL", "sometimes")
	if be, err := cuda.NewFakeBackend("bf16"); err == nil {
		be.Close()
		t.Fatal("KVBENCH_ATTN_DEAL=sometimes: no error")
	} else if !strings.Contains(err.Error(), "KVBENCH_ATTN_DEAL") {
		t.Errorf("error %q does not name the variable", err)
	}
}

// TestAttendDealtGPU: the tensor-core decode kernels dealing tiles from the
// rows' counters give the CPU's outputs where most tiles are dealt (long
// rows in few blocks: large chunks asked for), launch after launch (the
// counters reset themselves; one left behind would skip the next launch's
// tiles), with accumulated probabilities (H2O's and TOVA's raw scores by
// token), and in windows whose first token is not a multiple of 16 (those
// rows take fixed chunks in the same launch).
func TestAttendDealtGPU(t *testing.T) {
	t.Setenv("KVBENCH_ATTN_TC", "on")
	t.Setenv("KVBENCH_ATTN_CLUSTER", "0")
	t.Setenv("KVBENCH_ATTN_DEAL", "on")
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(43, 5))
	defer g.SetAttnChunk(0)
	for _, hd := range []int{64, 128} {
		for _, hk := range [][2]int{{32, 8}, {8, 8}, {8, 1}} {
			for _, ps := range []int{16, 64} {
				for _, n := range []int{40, 5000, 20000} {
					for _, chunk := range []int{0, 1024, 8192} {
						t.Run(fmt.Sprintf("hd%d/%dx%d/ps%d/n%d/chunk%d", hd, hk[0], hk[1], ps, n, chunk), func(t *testing.T) {
							if err := g.SetAttnChunk(chunk); err != nil {
								t.Fatal(err)
							}
							cfg := runtime.Config{Heads: hk[0], KVHeads: hk[1], HeadDim: hd}
							cp := newCachePair(t, c, g, cfg, ps, runtime.BF16, false)
							cp.append(rng, n)
							for range 3 {
								compareAttend(t, c, g, cp, rng, attnCase{heads: hk[0], rows: 1, qpos: []int{cp.next - 1}, opt: "plain", tol: 2e-5})
								if p := g.AttnPlan(); !strings.HasSuffix(p.Kernel, "_tc") || !p.Dealt {
									t.Fatalf("plan %+v: want a tensor-core kernel dealing tiles", p)
								}
							}
							if n <= 5000 {
								compareAttend(t, c, g, cp, rng, attnCase{heads: hk[0], rows: 1, qpos: []int{cp.next - 1}, opt: "acc", tol: 2e-5})
							}
							w := n/2 + 7 // the window's first token: n-1 - (w-1), not a multiple of 16
							compareAttend(t, c, g, cp, rng, attnCase{heads: hk[0], rows: 1, qpos: []int{cp.next - 1}, window: w, opt: "plain", tol: 2e-5})
							compareAttend(t, c, g, cp, rng, attnCase{heads: hk[0], rows: 1, qpos: []int{cp.next - 1}, opt: "plain", tol: 2e-5})
						})
					}
				}
			}
		}
	}
}
