package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// tableCache is a KVCache on the GPU with its recall reference, driven by
// random appends, evictions and resets.
type tableCache struct {
	kc   *runtime.KVCache
	cfg  runtime.Config
	k, v runtime.Buffer // [maxRows, kvDim] sources of Append
	next int            // position of the next token
}

const tableMaxRows = 40

func newTableCache(t *testing.T, g *cuda.Backend, cfg runtime.Config, ps int, typ runtime.DType) *tableCache {
	kc, err := runtime.NewKVCacheOf(g, cfg, ps, typ)
	if err != nil {
		t.Fatal(err)
	}
	kc.RecordAll()
	return &tableCache{kc: kc, cfg: cfg, k: g.Alloc(tableMaxRows * cfg.KVDim()), v: g.Alloc(tableMaxRows * cfg.KVDim())}
}

// step does one random operation: a prompt chunk or a single token appended
// to every layer, an eviction of few or many tokens of one KV head (pages
// freed), or (rarely) a reset. It returns what it did.
func (tc *tableCache) step(g *cuda.Backend, rng *rand.Rand) string {
	c := tc.cfg
	switch x := rng.IntN(20); {
	case x == 0:
		tc.kc.Reset()
		tc.next = 0
		return "reset"
	case x < 5:
		l, h := rng.IntN(c.Layers), rng.IntN(c.KVHeads)
		n := tc.kc.Len(l, h)
		if n < 2 {
			return "nothing"
		}
		var drop []int32
		for _, i := range rng.Perm(n)[:1+rng.IntN(n-1)] {
			drop = append(drop, int32(i))
		}
		tc.kc.Evict(l, h, drop)
		return fmt.Sprintf("evict %d of %d (layer %d head %d)", len(drop), n, l, h)
	}
	rows := 1
	if rng.IntN(3) == 0 {
		rows = 1 + rng.IntN(tableMaxRows)
	}
	g.Write(tc.k, 0, randVec(rng, rows*c.KVDim(), 1))
	g.Write(tc.v, 0, randVec(rng, rows*c.KVDim(), 1))
	pos := make([]int, rows)
	for i := range pos {
		pos[i] = tc.next
		tc.next++
	}
	for l := range c.Layers {
		tc.kc.Append(l, tc.k, tc.v, rows, pos)
	}
	return fmt.Sprintf("append %d", rows)
}

// noIDs is seqs with ID 0: Attend uploads their page lists per call.
func noIDs(seqs []runtime.KVSeq) []runtime.KVSeq {
	out := slices.Clone(seqs)
	for i := range out {
		out[i].ID = 0
	}
	return out
}

// TestPageTables checks attention over the device-resident page tables
// against the same calls with the lists uploaded per call (sequences
// without an ID): outputs and recall bit for bit, and the device's lists
// equal to the host's page pointers. Two caches share the backend (pages of
// 16 and of 7 slots, float32 and bf16 pages), driven by random prompt
// chunks, single tokens, evictions of few and many tokens (pages freed and
// taken again by the other sequences), and resets; calls of 1, 3 and 20
// rows (the split-KV path, the tensor-core prefill at bf16 precision, and
// be_attend with recall). The pool starts small and tables idle for 30
// calls may be dropped, so the pool grows, regions move and are reused, and
// dropped tables of live sequences are made again; every word handed out
// is in a live table or a free list.
func TestPageTables(t *testing.T) {
	defer cuda.SetTablePoolMin(256)()
	defer cuda.SetTableIdleCalls(30)()
	for _, prec := range []string{"f32", "bf16"} {
		for _, typ := range []runtime.DType{runtime.F32, runtime.BF16} {
			t.Run(fmt.Sprintf("%s/%v", prec, typ), func(t *testing.T) {
				g := newGPUPrec(t, prec)
				cfg := runtime.Config{Layers: 2, Heads: 8, KVHeads: 2, HeadDim: 64}
				caches := []*tableCache{newTableCache(t, g, cfg, 16, typ), newTableCache(t, g, cfg, 7, typ)}
				hd, heads := cfg.HeadDim, cfg.Heads
				q := g.Alloc(20 * heads * hd)
				outT, outU := g.Alloc(20*heads*hd), g.Alloc(20*heads*hd)
				for round := range 2 {
					rng := rand.New(rand.NewPCG(12, 7)) // the same operations each round
					for _, tc := range caches {
						tc.kc.Reset()
						tc.next = 0
					}
					for op := range 150 {
						ci := rng.IntN(len(caches))
						tc := caches[ci]
						what := tc.step(g, rng)
						if tc.kc.Len(0, 0) == 0 || tc.kc.Len(0, 1) == 0 || tc.kc.Len(1, 0) == 0 || tc.kc.Len(1, 1) == 0 {
							continue
						}
						l := rng.IntN(cfg.Layers)
						rows := []int{1, 1, 3, 20}[rng.IntN(4)]
						qpos := make([]int, rows)
						for r := range qpos {
							qpos[r] = tc.next - 1 - 2*(rows-1-r) // earlier rows see part of the cache
						}
						g.Write(q, 0, randVec(rng, rows*heads*hd, 2))
						recall := rows > 1 && rng.IntN(2) == 0
						mk := func(out runtime.Buffer, seqs, ref []runtime.KVSeq) *runtime.AttnArgs {
							a := &runtime.AttnArgs{Out: out, Q: q, Rows: rows, QPos: qpos, Heads: heads, KVHeads: cfg.KVHeads,
								HeadDim: hd, Scale: float32(1 / math.Sqrt(float64(hd))), Seqs: seqs}
							if recall {
								a.Ref, a.Recall = ref, make([]float32, rows*heads)
							}
							return a
						}
						seqs, ref := tc.kc.Seqs(l), tc.kc.Reference(l)
						at := mk(outT, seqs, ref)
						au := mk(outU, noIDs(seqs), noIDs(ref))
						g.Attend(at)
						g.Attend(au)
						ot, ou := read(g, outT)[:rows*heads*hd], read(g, outU)[:rows*heads*hd]
						where := fmt.Sprintf("round %d op %d (cache %d: %s; layer %d, %d rows, recall %v)", round, op, ci, what, l, rows, recall)
						for i := range ou {
							if math.Float32bits(ot[i]) != math.Float32bits(ou[i]) {
								t.Fatalf("%s: output %d: %v through the tables, %v through uploaded lists", where, i, ot[i], ou[i])
							}
						}
						if recall && !slices.Equal(at.Recall, au.Recall) {
							t.Fatalf("%s: recall %v through the tables, %v through uploaded lists", where, at.Recall, au.Recall)
						}
						lists := [][]runtime.KVSeq{seqs}
						if recall { // else the reference was not attended: its tables are not brought up to date
							lists = append(lists, ref)
						}
						for _, list := range lists {
							for h := range list {
								s := &list[h]
								k, v := g.ReadTable(s.ID)
								if len(k) != len(s.K) || len(v) != len(s.V) {
									t.Fatalf("%s: sequence %d: device lists of %d and %d pages, host %d and %d", where, s.ID, len(k), len(v), len(s.K), len(s.V))
								}
								for i := range k {
									if k[i] != g.PagePtr(s.K[i]) || v[i] != g.PagePtr(s.V[i]) {
										t.Fatalf("%s: sequence %d page %d: device %#x/%#x, host %#x/%#x", where, s.ID, i, k[i], v[i], g.PagePtr(s.K[i]), g.PagePtr(s.V[i]))
									}
								}
							}
						}
					}
					size, top, live, free := g.TableWords()
					t.Logf("round %d: pool of %d words, %d handed out: %d in %d live tables, %d free", round, size, top, live, g.Tables(), free)
					if size <= 256 {
						t.Errorf("round %d: the pool never grew (%d words)", round, size)
					}
					if live+free != top {
						t.Errorf("round %d: %d words handed out, %d live + %d free", round, top, live, free)
					}
				}
			})
		}
	}
}

// TestPageTablesSweep checks that the tables of sequences no call uses any
// more (caches dropped) do not hold the pool: 40 caches in turn, each used
// for a few calls and dropped, with tables idle for 20 calls droppable; the
// pool stays within a few caches' worth and keeps serving correct lists.
func TestPageTablesSweep(t *testing.T) {
	defer cuda.SetTablePoolMin(256)()
	defer cuda.SetTableIdleCalls(20)()
	g := newGPU(t)
	cfg := runtime.Config{Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 64}
	hd, heads := cfg.HeadDim, cfg.Heads
	rng := rand.New(rand.NewPCG(2, 2))
	q, outT, outU := g.Alloc(heads*hd), g.Alloc(heads*hd), g.Alloc(heads*hd)
	for i := range 40 {
		kc, err := runtime.NewKVCacheOf(g, cfg, 16, runtime.BF16)
		if err != nil {
			t.Fatal(err)
		}
		k, v := g.Alloc(100*cfg.KVDim()), g.Alloc(100*cfg.KVDim())
		g.Write(k, 0, randVec(rng, 100*cfg.KVDim(), 1))
		g.Write(v, 0, randVec(rng, 100*cfg.KVDim(), 1))
		pos := make([]int, 100)
		for j := range pos {
			pos[j] = j
		}
		for l := range cfg.Layers {
			kc.Append(l, k, v, 100, pos)
		}
		for c := range 5 {
			for l := range cfg.Layers {
				g.Write(q, 0, randVec(rng, heads*hd, 2))
				mk := func(out runtime.Buffer, seqs []runtime.KVSeq) *runtime.AttnArgs {
					return &runtime.AttnArgs{Out: out, Q: q, Rows: 1, QPos: []int{100}, Heads: heads, KVHeads: cfg.KVHeads,
						HeadDim: hd, Scale: 0.125, Seqs: seqs}
				}
				g.Attend(mk(outT, kc.Seqs(l)))
				g.Attend(mk(outU, noIDs(kc.Seqs(l))))
				if ot, ou := read(g, outT), read(g, outU); !slices.Equal(ot, ou) {
					t.Fatalf("cache %d call %d layer %d: outputs through the tables differ from those through uploaded lists", i, c, l)
				}
			}
		}
		kc.Free()
		g.Free(k)
		g.Free(v)
	}
	size, top, live, free := g.TableWords()
	t.Logf("after 40 caches: pool of %d words, %d handed out: %d in %d live tables, %d free", size, top, live, g.Tables(), free)
	// A cache holds 4 tables of 128 words (7 pages each, 64 the least room).
	if g.Tables() > 4*4 || size > 16*512 {
		t.Errorf("after 40 dropped caches: %d tables, a pool of %d words (want at most 16 tables and 8192 words)", g.Tables(), size)
	}
	if live+free != top {
		t.Errorf("%d words handed out, %d live + %d free", top, live, free)
	}
}
