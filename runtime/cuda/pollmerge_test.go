package cuda_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
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
	polled := map[string]int{} // polled calls by kernel: the tensor cores' and attn_rt's
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
								qpos := cp.queryRows(rng, rows)
								ac := attnCase{heads: hk[0], rows: rows, qpos: qpos, opt: opt, tol: 2e-5}
								if opt == "window" {
									ac.opt, ac.window = "plain", 150
								}
								for range 2 {
									compareAttend(t, c, g, cp, rng, ac)
									if p := g.AttnPlan(); p.Merge == "polled" {
										polled[p.Kernel]++
									}
								}
							})
						}
					}
				}
			}
		}
	}
	tc, rt := 0, 0
	for k, n := range polled {
		if strings.HasSuffix(k, "_tc") {
			tc += n
		} else {
			rt += n
		}
	}
	if tc == 0 || rt == 0 {
		t.Errorf("calls merged polled by kernel: %v; want some on the tensor cores and some on attn_rt", polled)
	}
	t.Logf("calls merged polled: %v", polled)
}

// TestFakePolledRows: on the fake device (132 multiprocessors), rows the
// polled merge can take merge in the kernel even where the counted merge
// would leave them to the combine launch: 32/16 heads of 64 at 256 tokens
// (8 chunks of 32 a row on the _short kernel); at 4,096 (128 chunks) the
// combine; with KVBENCH_ATTN_COMBINE=separate or KVBENCH_ATTN_POLL=off the
// combine again; 32/32 at 256 polled, and merged counted with the poll off.
func TestFakePolledRows(t *testing.T) {
	for _, c := range []struct {
		kv, tokens int
		env, val   string
		merge      string
	}{
		{16, 256, "", "", "polled"},
		{16, 4096, "", "", "combine"},
		{16, 256, "KVBENCH_ATTN_COMBINE", "separate", "combine"},
		{16, 256, "KVBENCH_ATTN_POLL", "off", "combine"},
		{32, 256, "", "", "polled"},
		{32, 256, "KVBENCH_ATTN_POLL", "off", "fused"},
	} {
		if c.env != "" {
			t.Setenv(c.env, c.val)
		}
		p := decodePlan(t, 32, c.kv, 64, c.tokens)
		if c.env != "" {
			t.Setenv(c.env, "")
		}
		if p.Merge != c.merge {
			t.Errorf("32/%d heads of 64 at %d tokens (%s=%s): %+v; want merge %q", c.kv, c.tokens, c.env, c.val, p, c.merge)
		}
	}
}
