package policies

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestH2OFusedEviction checks H2O's decode eviction taken from collect's
// pass (h2oNext: the next step's victim found while the scores are summed)
// against the scan of every candidate: two streams over the same tokens,
// one scanning every time, keep the same tokens in the same slots with the
// same scores and give the same logits at every step, summed and
// normalized, and the fused path does serve the decode steps.
func TestH2OFusedEviction(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	for _, params := range []Params{{"heavy": 20, "recent": 20}, {"heavy": 12, "recent": 30, "normalize": true}, {"heavy": 30, "recent": 1}} {
		ps, rs := twinRunners(t, m, "h2o", params)
		ps[1].(*h2o).scan = true
		toks := make([]int, 160)
		for i := range toks {
			toks[i] = 3 + (i*37)%200
		}
		stepTwins(t, m, ps, rs, toks, 60, func(n int) {
			for l := range m.Config.Layers {
				a, b := rs[0].Cache.Seqs(l), rs[1].Cache.Seqs(l)
				for h := range a {
					if !slices.Equal(a[h].Pos[:a[h].N], b[h].Pos[:b[h].N]) {
						t.Fatalf("%v token %d layer %d head %d: holds %v, the scan's %v", params, n, l, h, a[h].Pos[:a[h].N], b[h].Pos[:b[h].N])
					}
					if sa, sb := ps[0].(*h2o).Scores(l, h), ps[1].(*h2o).Scores(l, h); !slices.Equal(sa, sb) {
						t.Fatalf("%v token %d layer %d head %d: scores differ from the scan's", params, n, l, h)
					}
				}
			}
		})
		steps := (len(toks) - 60) * m.Config.Layers * m.Config.KVHeads
		if f, s := ps[0].(*h2o).fused, ps[1].(*h2o).fused; s != 0 || f < steps/2 {
			t.Errorf("%v: %d evictions fused (the scanning twin %d) of %d decode evictions at most", params, f, s, steps)
		}
	}
}

// TestLowestCands: lowestCands's first k candidates are the set a sort by
// (key, position) puts first, on keys with many ties (and a NaN, which
// cmp.Compare puts first), for every k.
func TestLowestCands(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 2))
	for range 200 {
		n := 1 + rng.IntN(70)
		c := make([]h2oCand, n)
		for i, p := range rng.Perm(n) {
			c[i] = h2oCand{key: float64(rng.IntN(4)), pos: int32(p), idx: int32(i)}
		}
		if rng.IntN(5) == 0 {
			c[rng.IntN(n)].key = math.NaN()
		}
		sorted := slices.Clone(c)
		slices.SortFunc(sorted, func(x, y h2oCand) int {
			if d := cmp.Compare(x.key, y.key); d != 0 {
				return d
			}
			return cmp.Compare(x.pos, y.pos)
		})
		for k := 0; k <= n; k++ {
			got := slices.Clone(c)
			lowestCands(got, k)
			idx := func(cs []h2oCand) []int32 {
				var v []int32
				for _, x := range cs {
					v = append(v, x.idx)
				}
				slices.Sort(v)
				return v
			}
			if g, w := idx(got[:k]), idx(sorted[:k]); !slices.Equal(g, w) {
				t.Fatalf("n %d k %d: lowest %v, want %v", n, k, g, w)
			}
			if g, w := idx(got), idx(c); !slices.Equal(g, w) {
				t.Fatalf("n %d k %d: the candidates changed: %v, want %v", n, k, g, w)
			}
		}
	}
}

// TestH2OBulkEviction: the prompt's compression with the KV heads choosing
// side by side (evictBulk), and the sums added to the scores side by side
// (collect on the crew), keep what head by head keeps: two streams over the
// same tokens, one always on the crew and one never, hold the
// same positions in the same slots with the same scores and give the same
// logits at every step, under the dense protocol (one compression) and the
// chunked one (one a chunk).
func TestH2OBulkEviction(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	for _, pre := range []Prefill{PrefillDense, PrefillChunked} {
		for _, params := range []Params{{"heavy": 20, "recent": 20}, {"heavy": 12, "recent": 30, "normalize": true}, {"heavy": 1, "recent": 1}} {
			ps, rs := twinRunners(t, m, "h2o", params)
			ps[0].(*h2o).bulkMin, ps[1].(*h2o).bulkMin = 1, math.MaxInt32
			for _, p := range ps {
				p.SetPrefill(pre)
			}
			toks := make([]int, 170)
			for i := range toks {
				toks[i] = 3 + (i*37)%200
			}
			stepTwins(t, m, ps, rs, toks, 150, func(n int) {
				for l := range m.Config.Layers {
					a, b := rs[0].Cache.Seqs(l), rs[1].Cache.Seqs(l)
					for h := range a {
						if !slices.Equal(a[h].Pos[:a[h].N], b[h].Pos[:b[h].N]) {
							t.Fatalf("%v %v token %d layer %d head %d: holds %v, head by head %v", pre, params, n, l, h, a[h].Pos[:a[h].N], b[h].Pos[:b[h].N])
						}
						if sa, sb := ps[0].(*h2o).Scores(l, h), ps[1].(*h2o).Scores(l, h); !slices.Equal(sa, sb) {
							t.Fatalf("%v %v token %d layer %d head %d: scores differ from head by head's", pre, params, n, l, h)
						}
					}
				}
			})
			if got := len(ps[0].(*h2o).bulk); got != m.Config.KVHeads {
				t.Errorf("%v %v: %d heads' bulk scratch, want %d: no bulk eviction ran", pre, params, got, m.Config.KVHeads)
			}
			if len(ps[1].(*h2o).bulk) != 0 {
				t.Errorf("%v %v: the head-by-head twin evicted in bulk", pre, params)
			}
		}
	}
}
