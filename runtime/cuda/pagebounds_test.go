package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// growSeq is one KV head's cache filled step by step on both backends: keys
// stored into the GPU's pages of type typ with StoreKV (queued, as the
// runtime appends them) and written, as the GPU's pages hold them (rounded
// to bf16 for BF16), into float32 pages on the CPU.
type growSeq struct {
	c, g   runtime.KVSeq
	keys   []float32      // [capacity*hd] the keys both backends hold
	kg, vg runtime.Buffer // [capacity*hd] float32 sources of StoreKV on the GPU
	hd     int
	typ    runtime.DType
}

func newGrowSeq(c *cpu.Backend, g *cuda.Backend, capacity, ps, hd int, typ runtime.DType) *growSeq {
	s := &growSeq{keys: make([]float32, capacity*hd), kg: g.Alloc(capacity * hd), vg: g.Alloc(capacity * hd), hd: hd, typ: typ}
	s.c.PageSize, s.g.PageSize = ps, ps
	for p := 0; p*ps < capacity; p++ {
		s.c.K, s.c.V = append(s.c.K, c.Alloc(ps*hd)), append(s.c.V, c.Alloc(ps*hd))
		s.g.K, s.g.V = append(s.g.K, g.AllocKV(ps*hd, typ)), append(s.g.V, g.AllocKV(ps*hd, typ))
	}
	pos := make([]int32, capacity)
	for i := range pos {
		pos[i] = int32(i)
	}
	s.c.Pos, s.g.Pos = pos, pos
	return s
}

// store writes new random keys for tokens [t0, t1) and makes the sequence
// t1 tokens long. Channel 0 holds zeros of both signs.
func (s *growSeq) store(c *cpu.Backend, g *cuda.Backend, rng *rand.Rand, t0, t1 int) {
	hd, ps := s.hd, s.c.PageSize
	if t1 > t0 {
		k := randVec(rng, (t1-t0)*hd, 1)
		for t := t0; t < t1; t++ {
			k[(t-t0)*hd] = float32(math.Copysign(0, float64(t%2*2-1)))
		}
		g.Write(s.kg, t0*hd, k)
		g.Write(s.vg, t0*hd, k)
		if s.typ == runtime.BF16 {
			for i := range k {
				k[i] = roundBF16(k[i])
			}
		}
		copy(s.keys[t0*hd:], k)
		for t := t0; t < t1; t++ {
			c.Write(s.c.K[t/ps], (t%ps)*hd, k[(t-t0)*hd:(t-t0+1)*hd])
			g.StoreKV(s.g.K[t/ps], s.g.V[t/ps], t%ps, s.kg, s.vg, t, 0, hd, hd)
		}
	}
	s.c.N, s.g.N = t1, t1
}

// TestBackendPageBounds checks the GPU's PageBounds against the CPU's (the
// host implementation) and a brute force: the scores must be exactly equal.
// float32 and bf16 pages, head dims 64 and 128, GQA (8 query heads on 2 KV
// heads of different lengths, one of them empty at first), bounds pages
// smaller and larger than the cache's, appends of one token, within a page,
// across page boundaries and over many pages (the bounds grow), steps with
// nothing new, a skipped head per step, a shrink over new keys (rebuild),
// Reset, cache pages of the other type after all that (the bounds, held in
// the pages' type, start again), and the memory returned by Free.
func TestBackendPageBounds(t *testing.T) {
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(8, 21))
	const heads, kvHeads, capacity = 8, 2, 320
	const group = heads / kvHeads
	// Tokens of KV head 0 at each step; KV head 1 holds 7 fewer. The second
	// list starts below the first's end: the cache shrank and was refilled.
	grow := []int{1, 3, 16, 17, 33, 40, 40, 41, 100, 160, 161, 300}
	shrunk := []int{50, 51, 52, 120, 121}
	for _, typ := range []runtime.DType{runtime.F32, runtime.BF16} {
		for _, hd := range []int{64, 128} {
			for _, pc := range []struct{ page, ps int }{{16, 16}, {5, 4}, {8, 32}} {
				name := fmt.Sprintf("%v/hd%d/page%d/cache%d", typ, hd, pc.page, pc.ps)
				t.Run(name, func(t *testing.T) {
					seqs := make([]*growSeq, kvHeads)
					for i := range seqs {
						seqs[i] = newGrowSeq(c, g, capacity, pc.ps, hd, typ)
					}
					q := newPair(c, g, make([]float32, heads*hd))
					before, _ := g.MemStats()
					bc, bg := c.NewPageBounds(kvHeads, hd, pc.page), g.NewPageBounds(kvHeads, hd, pc.page)
					// check extends both bounds to the sequences' lengths now and
					// compares the scores of a random query (channel 1 zero),
					// skipping head skip (-1: none).
					check := func(what string, skip int, extend bool) {
						sc, sg := make([]runtime.KVSeq, kvHeads), make([]runtime.KVSeq, kvHeads)
						for i, s := range seqs {
							sc[i], sg[i] = s.c, s.g
						}
						if extend {
							bc.Extend(sc)
							bg.Extend(sg)
						}
						qv := randVec(rng, heads*hd, 2)
						for h := range heads {
							qv[h*hd+1] = 0
						}
						c.Write(q.c, 0, qv)
						g.Write(q.g, 0, qv)
						oc, og := make([][]float64, heads), make([][]float64, heads)
						for h := range heads {
							if h == skip {
								continue
							}
							pages := (seqs[h/group].c.N + pc.page - 1) / pc.page
							oc[h], og[h] = make([]float64, pages), make([]float64, pages)
							for p := range og[h] {
								og[h][p] = math.NaN()
							}
						}
						mk := func(be runtime.Buffer, s []runtime.KVSeq) *runtime.AttnArgs {
							return &runtime.AttnArgs{Q: be, Rows: 1, QPos: []int{capacity}, Heads: heads, KVHeads: kvHeads, HeadDim: hd,
								Scale: float32(1 / math.Sqrt(float64(hd))), Seqs: s}
						}
						bc.Score(mk(q.c, sc), oc)
						bg.Score(mk(q.g, sg), og)
						bad := 0
						for h := range heads {
							if h == skip {
								continue
							}
							s := seqs[h/group]
							want := runtime.RefPageScores(qv[h*hd:(h+1)*hd], s.keys, s.c.N, hd, pc.page)
							for p := range want {
								if oc[h][p] != want[p] {
									t.Fatalf("%s: CPU head %d page %d score %v, brute force %v", what, h, p, oc[h][p], want[p])
								}
								if og[h][p] != oc[h][p] {
									if bad++; bad <= 5 {
										t.Errorf("%s: head %d page %d of %d: GPU score %v (bits %#x), CPU %v (bits %#x)", what, h, p, len(want),
											og[h][p], math.Float64bits(og[h][p]), oc[h][p], math.Float64bits(oc[h][p]))
									}
								}
							}
						}
						if bad > 0 {
							t.Fatalf("%s: %d page scores differ", what, bad)
						}
					}
					step := 0
					for phase, ns := range [][]int{grow, shrunk} {
						for i, n := range ns {
							for kv, s := range seqs {
								m := max(0, n-7*kv)
								switch {
								case phase == 1 && i == 0:
									s.store(c, g, rng, 0, m) // refilled from scratch
								case m > s.c.N:
									s.store(c, g, rng, s.c.N, m)
								}
							}
							check(fmt.Sprintf("step %d (%d tokens)", step, n), step%(heads+1)-1, true)
							step++
						}
					}
					// Reset: the bounds fold the sequences again from the start.
					bc.Reset()
					bg.Reset()
					check("after Reset", -1, true)
					check("again, nothing new", 2, false)
					// Cache pages of the other type: the bounds take it (bf16
					// bounds for bf16 keys) and fold from the first token again.
					first, other := seqs, runtime.BF16
					if typ == runtime.BF16 {
						other = runtime.F32
					}
					seqs = make([]*growSeq, kvHeads)
					for kv := range seqs {
						seqs[kv] = newGrowSeq(c, g, capacity, pc.ps, hd, other)
						seqs[kv].store(c, g, rng, 0, 100-7*kv)
					}
					check("pages of the other type", -1, true)
					bg.Free()
					bc.Free()
					for _, s := range seqs {
						for _, x := range [][]runtime.Buffer{s.g.K, s.g.V, {s.kg, s.vg}} {
							for _, b := range x {
								g.Free(b)
							}
						}
					}
					if after, _ := g.MemStats(); after != before {
						t.Errorf("memory held %d bytes before the bounds, %d after Free", before, after)
					}
					for _, s := range first {
						for _, x := range [][]runtime.Buffer{s.g.K, s.g.V, {s.kg, s.vg}} {
							for _, b := range x {
								g.Free(b)
							}
						}
					}
					g.Free(q.g)
				})
			}
		}
	}
}
