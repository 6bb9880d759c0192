package cuda_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestMergeEnv: $KVBENCH_ATTN_MERGE chooses the split-KV merge's build;
// onepass adds the macro and says so in the backend's description, a
// value it does not know stops the backend with an error naming it.
func TestMergeEnv(t *testing.T) {
	if be := fakeBackend(t); strings.Contains(be.Device(), "one-pass") || slices.Contains(cuda.KernelOptions(), "-DKVB_MERGE1=1") {
		t.Errorf("default build: %q, options %v", be.Device(), cuda.KernelOptions())
	}
	t.Setenv("KVBENCH_ATTN_MERGE", "onepass")
	if be := fakeBackend(t); !strings.Contains(be.Device(), "one-pass attention merge") || !slices.Contains(cuda.KernelOptions(), "-DKVB_MERGE1=1") {
		t.Errorf("onepass: %q, options %v", be.Device(), cuda.KernelOptions())
	}
	t.Setenv("KVBENCH_ATTN_MERGE", "twopass")
	if be := fakeBackend(t); strings.Contains(be.Device(), "one-pass") {
		t.Errorf("twopass: %q", be.Device())
	}
	t.Setenv("KVBENCH_ATTN_MERGE", "fast")
	if be, err := cuda.NewFakeBackend("bf16"); err == nil {
		be.Close()
		t.Fatal("KVBENCH_ATTN_MERGE=fast: no error")
	} else if !strings.Contains(err.Error(), "KVBENCH_ATTN_MERGE") || !strings.Contains(err.Error(), "fast") {
		t.Errorf("error %q names neither the variable nor its value", err)
	}
}

// TestAttendOnePassMergeGPU: kernels built with the one-pass merge give
// the CPU's outputs and accumulated probabilities within the split
// kernels' tolerance, through the fused last-block merges and through the
// separate combine, over rows of many partials (chunks of 32), the
// chooser's chunks and one chunk a row (2048), for MHA and GQA groups,
// f32 and bf16 pages, one query row and several.
func TestAttendOnePassMergeGPU(t *testing.T) {
	t.Setenv("KVBENCH_ATTN_MERGE", "onepass")
	g := newGPU(t)
	if !strings.Contains(g.Device(), "one-pass attention merge") {
		t.Fatalf("backend %q: not the one-pass build", g.Device())
	}
	c := cpu.New(0)
	defer c.Close()
	defer g.SetAttnChunk(0)
	rng := rand.New(rand.NewPCG(41, 7))
	for _, typ := range []runtime.DType{runtime.F32, runtime.BF16} {
		for _, hk := range [][2]int{{8, 8}, {8, 2}, {32, 8}} {
			for _, rows := range []int{1, 3} {
				for _, opt := range []string{"plain", "acc"} {
					for _, combine := range []string{"fused", "separate"} {
						for _, chunk := range []int{0, 32, 2048} { // 2048: one chunk a row (the one-chunk merge)
							name := fmt.Sprintf("%v/%dx%d/rows%d/%s/%s/chunk%d", typ, hk[0], hk[1], rows, opt, combine, chunk)
							t.Run(name, func(t *testing.T) {
								t.Setenv("KVBENCH_ATTN_COMBINE", combine)
								if err := g.SetAttnChunk(chunk); err != nil {
									t.Fatal(err)
								}
								cp := newCachePair(t, c, g, runtime.Config{Heads: hk[0], KVHeads: hk[1], HeadDim: 128}, 16, typ, false)
								cp.append(rng, 1500)
								cp.append(rng, rows)
								qpos := make([]int, rows)
								for r := range qpos {
									qpos[r] = cp.next - rows + r
								}
								compareAttend(t, c, g, cp, rng, attnCase{heads: hk[0], rows: rows, qpos: qpos, opt: opt, tol: 2e-5})
							})
						}
					}
				}
			}
		}
	}
}
