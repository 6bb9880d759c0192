package cuda_test

import (
	"fmt"
	"github.com/kvbench/kvbench/runtime/cpu"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestFakeArrivals: KVBENCH_ATTN_ARRIVE=on makes a decode call merged by a
// separate combine (32/8 heads at 4,096 tokens) wait on its rows'
// arrivals, leaves a call whose kernel merges its own rows (32/32: the
// fused merge) and the default alone, and a value other than on or off
// stops the backend with an error naming the variable.
func TestFakeArrivals(t *testing.T) {
	plan := func(heads, kv int) cuda.Plan {
		t.Helper()
		be := fakeBackend(t)
		cfg := runtime.Config{Arch: "llama", Dim: heads * 128, Hidden: 1024, Layers: 1, Heads: heads, KVHeads: kv,
			HeadDim: 128, Vocab: 100, MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
		be.Attend(fakeDecodeArgs(t, be, cfg, 4096))
		return be.AttnPlan()
	}
	for _, v := range []string{"", "off"} {
		t.Setenv("KVBENCH_ATTN_ARRIVE", v)
		if p := plan(32, 8); p.Arrive {
			t.Errorf("KVBENCH_ATTN_ARRIVE=%q: %+v waits on arrivals", v, p)
		}
	}
	t.Setenv("KVBENCH_ATTN_ARRIVE", "on")
	if p := plan(32, 8); !p.Arrive || p.Blocks <= 8 {
		t.Errorf("32/8 with KVBENCH_ATTN_ARRIVE=on: %+v, want several chunks a row and arrivals", p)
	}
	if p := plan(32, 32); p.Arrive {
		t.Errorf("32/32 with KVBENCH_ATTN_ARRIVE=on: %+v waits on arrivals (its kernel merges the rows)", p)
	}
	t.Setenv("KVBENCH_ATTN_ARRIVE", "yes")
	if be, err := cuda.NewFakeBackend("bf16"); err == nil {
		be.Close()
		t.Fatal("KVBENCH_ATTN_ARRIVE=yes: no error")
	} else if !strings.Contains(err.Error(), "KVBENCH_ATTN_ARRIVE") {
		t.Errorf("error %q does not name the variable", err)
	}
}

// TestAttendArrivalsGPU: with KVBENCH_ATTN_ARRIVE=on the separate combine,
// waiting on each row's arrivals instead of the split kernel's end, gives
// the CPU's outputs and accumulated probabilities within the split
// kernels' tolerance, for MHA and GQA groups, f32 and bf16 pages, one
// query row and several, rows of many partials (chunks of 32: the plan must
// say it waited on arrivals) and the chooser's; the calls follow one another on one backend, so each also
// checks that the last launch left its counts at zero.
func TestAttendArrivalsGPU(t *testing.T) {
	t.Setenv("KVBENCH_ATTN_ARRIVE", "on")
	t.Setenv("KVBENCH_ATTN_COMBINE", "separate")
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	defer g.SetAttnChunk(0)
	rng := rand.New(rand.NewPCG(43, 9))
	for _, typ := range []runtime.DType{runtime.F32, runtime.BF16} {
		for _, hk := range [][2]int{{8, 8}, {8, 2}, {32, 8}} {
			for _, rows := range []int{1, 3} {
				for _, opt := range []string{"plain", "acc"} {
					for _, chunk := range []int{0, 32} {
						name := fmt.Sprintf("%v/%dx%d/rows%d/%s/chunk%d", typ, hk[0], hk[1], rows, opt, chunk)
						t.Run(name, func(t *testing.T) {
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
							if p := g.AttnPlan(); chunk == 32 && !p.Arrive {
								t.Errorf("plan %+v: the combine did not wait on arrivals", p)
							}
						})
					}
				}
			}
		}
	}
}
