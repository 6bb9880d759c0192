package cuda_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// attnScale is the attention of a passkey cell at 32K on the 8B shape: 32
// layers, 32 query heads on 8 KV heads of head dim 128, bf16 pages of 16.
var attnScale = runtime.Config{Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128}

const attnTokens = 32768

// stepTimes are the median times of a decode step's attention calls: on the
// host (the calls made, the device still working) and in all (to the
// step's download).
type stepTimes struct{ host, all time.Duration }

// timeSteps runs warm-up and timed steps of step (one decode step's calls
// over every layer) and returns the medians.
func timeSteps(g *cuda.Backend, out runtime.Buffer, step func()) stepTimes {
	var host, all []time.Duration
	for i := range 13 {
		t0 := time.Now()
		step()
		th := time.Since(t0)
		read(g, out)
		if i >= 3 {
			host, all = append(host, th), append(all, time.Since(t0))
		}
	}
	slices.Sort(host)
	slices.Sort(all)
	return stepTimes{host[len(host)/2], all[len(all)/2]}
}

// passkeyCache fills a cache of attnScale with attnTokens random tokens.
func passkeyCache(t *testing.T, g *cuda.Backend) *runtime.KVCache {
	c := attnScale
	kc, err := runtime.NewKVCacheOf(g, c, 16, runtime.BF16)
	if err != nil {
		t.Fatal(err)
	}
	const chunk = 2048
	rng := rand.New(rand.NewPCG(3, 3))
	k, v := g.Alloc(chunk*c.KVDim()), g.Alloc(chunk*c.KVDim())
	g.Write(k, 0, randVec(rng, chunk*c.KVDim(), 1))
	g.Write(v, 0, randVec(rng, chunk*c.KVDim(), 1))
	pos := make([]int, chunk)
	for start := 0; start < attnTokens; start += chunk {
		for i := range pos {
			pos[i] = start + i
		}
		for l := range c.Layers {
			kc.Append(l, k, v, chunk, pos)
		}
	}
	g.Free(k)
	g.Free(v)
	return kc
}

// TestDecodeHostTime times the attention of a decode step at the passkey
// cell's scale (attnScale, 32K tokens): full attention with the page lists
// uploaded per call (KVBENCH_PAGE_TABLES=off) and from the device tables,
// and Quest (1024 tokens, pages of 16, every layer) choosing on the host
// (Score's scores downloaded, a sort, Sel uploaded) and on the device
// (Choose). It logs host and total times per step for docs/benchmarks.md,
// and checks that the tables and the device's choice take less host time
// than what they replace. Skipped in -short mode (about 9 GB of device
// memory).
func TestDecodeHostTime(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a 32K-token cache of the 8B shape")
	}
	c := attnScale
	hd := c.HeadDim
	results := map[string]stepTimes{}
	for _, tables := range []string{"off", "on"} {
		t.Setenv("KVBENCH_PAGE_TABLES", tables)
		g := newGPUPrec(t, "bf16")
		kc := passkeyCache(t, g)
		rng := rand.New(rand.NewPCG(4, 4))
		q, out := g.Alloc(c.Heads*hd), g.Alloc(c.Heads*hd)
		g.Write(q, 0, randVec(rng, c.Heads*hd, 1))
		args := func(l int) *runtime.AttnArgs {
			return &runtime.AttnArgs{Out: out, Q: q, Rows: 1, QPos: []int{attnTokens}, Heads: c.Heads, KVHeads: c.KVHeads,
				HeadDim: hd, Scale: float32(1 / math.Sqrt(float64(hd))), Seqs: kc.Seqs(l)}
		}
		results["full, tables "+tables] = timeSteps(g, out, func() {
			for l := range c.Layers {
				g.Attend(args(l))
			}
		})
		if tables == "on" {
			const k, page = 64, 16
			bounds := make([]runtime.PageBounds, c.Layers)
			for l := range bounds {
				bounds[l] = g.NewPageBounds(c.KVHeads, hd, page)
				bounds[l].Extend(kc.Seqs(l))
			}
			pages := attnTokens / page
			scores := make([][]float64, c.Heads)
			for h := range scores {
				scores[h] = make([]float64, pages)
			}
			results["quest 1024, host choice"] = timeSteps(g, out, func() {
				for l := range c.Layers {
					a := args(l)
					bounds[l].Score(a, scores)
					a.Sel = make([][]int32, c.Heads)
					for h := range a.Sel {
						idx := make([]int, pages-1)
						for i := range idx {
							idx[i] = i
						}
						sort.SliceStable(idx, func(x, y int) bool { return scores[h][idx[x]] > scores[h][idx[y]] })
						chosen := append(idx[:k-1:k-1], pages-1)
						slices.Sort(chosen)
						for _, p := range chosen {
							for tk := p * page; tk < (p+1)*page; tk++ {
								a.Sel[h] = append(a.Sel[h], int32(tk))
							}
						}
					}
					g.Attend(a)
				}
			})
			results["quest 1024, device choice"] = timeSteps(g, out, func() {
				for l := range c.Layers {
					a := args(l)
					bounds[l].(runtime.PageChooser).Choose(a, k)
					g.Attend(a)
				}
			})
			for _, b := range bounds {
				b.Free()
			}
		}
		kc.Free()
	}
	for _, name := range []string{"full, tables off", "full, tables on", "quest 1024, host choice", "quest 1024, device choice"} {
		r := results[name]
		t.Logf("%-26s host %8.3f ms, to the download %8.3f ms per step (32 layers)", name, r.host.Seconds()*1e3, r.all.Seconds()*1e3)
	}
	if off, on := results["full, tables off"], results["full, tables on"]; on.host >= off.host {
		t.Errorf("page tables: %v of host time per step, uploaded lists %v", on.host, off.host)
	}
	if h, d := results["quest 1024, host choice"], results["quest 1024, device choice"]; d.all >= h.all {
		t.Errorf("Quest's device choice: %v per step, the host's %v", d.all, h.all)
	}
}
