package cuda_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// TestAttendOnePassMergeGPU: the split-KV merge (one pass of running
// (max, sum) pairs, the first chunks' loads issued first) gives the CPU's outputs and accumulated probabilities within the split
// kernels' tolerance, through the fused last-block merges and through the
// separate combine, over rows of many partials (chunks of 32), the
// chooser's chunks and one chunk a row (2048), for MHA and GQA groups,
// f32 and bf16 pages, one query row and several.
func TestAttendOnePassMergeGPU(t *testing.T) {
	g := newGPU(t)
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
								qpos := cp.queryRows(rng, rows)
								compareAttend(t, c, g, cp, rng, attnCase{heads: hk[0], rows: rows, qpos: qpos, opt: opt, tol: 2e-5})
							})
						}
					}
				}
			}
		}
	}
}
