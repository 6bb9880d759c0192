package cuda_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// TestAttendRowKernels compares Attend on the _row kernels (one block of
// 512 threads a split row, which reads the whole row and writes its
// outputs: attn_rt_d64_g{1,2}_bf16_row) with the CPU, and checks that they
// ran: bf16 pages of heads of 64, rows of one head (MHA; a selection per
// head) and of two (GQA 2), rows of one token up to the longest the kernel
// takes (576: 9 steps of 64 tokens) and past one round of loads
// (KVBENCH_ATTN_ROW raised: the kernel's loop), pages of 16 and 7,
// eviction (positions out of order), accumulation (the raw scores and each
// head's max and sum, which the kernel writes itself), a selection, the
// sliding window, and two query rows of one head (a split row of 2
// virtual heads). Rows longer than the limit, and
// calls on the tensor cores, run the split kernels.
func TestAttendRowKernels(t *testing.T) {
	t.Setenv("KVBENCH_ATTN_TC", "off") // lean calls of one head stay off the tensor cores (8 rows: useTC's few rows)
	t.Setenv("KVBENCH_ATTN_ROW", "1000")
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(41, 7))
	ran := map[string]int{} // cases on a _row kernel, by option
	defer func() {
		for _, opt := range []string{"plain", "acc", "sel+acc", "window"} {
			if ran[opt] == 0 {
				t.Errorf("no %s case ran a _row kernel (%v)", opt, ran)
			}
		}
	}()
	for _, hk := range [][2]int{{8, 8}, {8, 4}, {6, 6}} {
		for _, n := range []int{1, 37, 513, 576, 577, 1000, 1001} {
			for _, opt := range []string{"plain", "acc", "sel+acc", "window"} {
				for _, ps := range []int{16, 7} {
					for _, rows := range []int{1, 2} {
						evict := (n+ps+rows)%2 == 1
						name := fmt.Sprintf("%dx%d/n%d/%s/ps%d/rows%d/evict%v", hk[0], hk[1], n, opt, ps, rows, evict)
						t.Run(name, func(t *testing.T) {
							cfg := runtime.Config{Heads: hk[0], KVHeads: hk[1], HeadDim: 64}
							cp := newCachePair(t, c, g, cfg, ps, runtime.BF16, false)
							held := n
							if evict {
								cp.append(rng, n+n/3)
								cp.evict(rng, 0.25)
								held = cp.c.Len(0, 0)
							} else {
								cp.append(rng, n)
							}
							held += rows
							compareAttend(t, c, g, cp, rng, queryCase(cp, rng, hk[0], rows, opt))
							p := g.AttnPlan()
							got := strings.HasSuffix(p.Kernel, "_row")
							if got {
								ran[opt]++
								if p.Blocks != p.Rows || p.Merge != "" {
									t.Errorf("a _row kernel's plan %+v: want one block a split row, no merge", p)
								}
							}
							// Split rows of 1 or 2 heads: one query row of a group of 1
							// or 2, or two query rows of one head. A selection's and a
							// window's rows are shorter than the tokens held.
							vg := hk[0] / hk[1] * rows
							if opt == "sel+acc" {
								vg = rows
							}
							if want := vg <= 2 && held <= 1000; (opt == "plain" || opt == "acc") && got != want {
								t.Errorf("kernel %s (plan %+v), want a _row kernel: %v (%d tokens held)", p.Kernel, p, want, held)
							}
							if vg > 2 && got {
								t.Errorf("kernel %s for split rows of %d heads", p.Kernel, vg)
							}
						})
					}
				}
			}
		}
	}
}
