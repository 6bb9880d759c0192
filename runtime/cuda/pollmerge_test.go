package cuda_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// TestPolledMergeGPU: with KVBENCH_ATTN_POLL=on every split row merged in
// the kernel is merged by block 0 polling the tagged partials (Plan.Merge
// "polled") where its chunks allow it, and Attend's outputs, maxima and
// sums (H2O's accumulation) match the CPU's: on the tensor cores and off
// them, f32 and bf16 pages, rows of 1, 2, 4 and 8 heads, one query row and
// several, chunk counts up to the polled merge's limit, and tokens evicted
// (chunks with nothing visible merge as empty). The calls run twice, so
// the second reads words the first left behind (an older epoch).
func TestPolledMergeGPU(t *testing.T) {
	t.Setenv("KVBENCH_ATTN_POLL", "on")
	t.Setenv("KVBENCH_ATTN_COMBINE", "fused") // every row merged in the kernel, the polled merge's candidates
	t.Setenv("KVBENCH_ATTN_CLUSTER", "0")
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(41, 7))
	defer g.SetAttnChunk(0)
	polled := 0
	for _, typ := range []runtime.DType{runtime.F32, runtime.BF16} {
		for _, hd := range []int{64, 128} {
			for _, hk := range [][2]int{{16, 16}, {8, 4}, {8, 2}, {8, 1}} {
				for _, rows := range []int{1, 3} {
					for _, opt := range []string{"plain", "acc", "window"} {
						for _, chunk := range []int{64, 128, 256} {
							name := fmt.Sprintf("%v/hd%d/%dx%d/rows%d/%s/chunk%d", typ, hd, hk[0], hk[1], rows, opt, chunk)
							t.Run(name, func(t *testing.T) {
								if err := g.SetAttnChunk(chunk); err != nil {
									t.Fatal(err)
								}
								cfg := runtime.Config{Heads: hk[0], KVHeads: hk[1], HeadDim: hd}
								cp := newCachePair(t, c, g, cfg, 16, typ, false)
								cp.append(rng, 700)
								if chunk == 128 {
									cp.evict(rng, 0.25)
								}
								cp.append(rng, rows)
								qpos := make([]int, rows)
								for r := range qpos {
									qpos[r] = cp.next - rows + r
								}
								ac := attnCase{heads: hk[0], rows: rows, qpos: qpos, opt: opt, tol: 2e-5}
								if opt == "window" {
									ac.opt, ac.window = "plain", 150
								}
								for range 2 {
									compareAttend(t, c, g, cp, rng, ac)
									if g.AttnPlan().Merge == "polled" {
										polled++
									}
								}
							})
						}
					}
				}
			}
		}
	}
	if polled == 0 {
		t.Error("no call merged polled")
	}
	t.Logf("%d calls merged polled", polled)
}
