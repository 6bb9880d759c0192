package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync/atomic"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// questKV is one KV head's cache on both backends: keys and values stored
// into GPU pages of type typ with StoreKV, and the same values (rounded as
// the GPU's pages hold them) in float32 pages on the CPU. With coarse, keys
// and values are -1, 0 or 1, so that many pages share their bounds (and
// their scores tie).
func questKV(t *testing.T, c *cpu.Backend, g *cuda.Backend, rng *rand.Rand, n, ps, hd int, typ runtime.DType, coarse bool) kvPair {
	t.Helper()
	var kv kvPair
	kv.c.N, kv.c.PageSize, kv.g.N, kv.g.PageSize = n, ps, n, ps
	k, v := randVec(rng, n*hd, 1), randVec(rng, n*hd, 1)
	for i := range k {
		if coarse {
			k[i], v[i] = float32(rng.IntN(3)-1), float32(rng.IntN(3)-1)
		} else if typ == runtime.BF16 {
			k[i], v[i] = roundBF16(k[i]), roundBF16(v[i])
		}
	}
	kg, vg := g.Alloc(n*hd), g.Alloc(n*hd)
	g.Write(kg, 0, k)
	g.Write(vg, 0, v)
	for p := 0; p*ps < n; p++ {
		kc, vc := c.Alloc(ps*hd), c.Alloc(ps*hd)
		hi := min(n, (p+1)*ps)
		c.Write(kc, 0, k[p*ps*hd:hi*hd])
		c.Write(vc, 0, v[p*ps*hd:hi*hd])
		kv.c.K, kv.c.V = append(kv.c.K, kc), append(kv.c.V, vc)
		kv.g.K, kv.g.V = append(kv.g.K, g.AllocKV(ps*hd, typ)), append(kv.g.V, g.AllocKV(ps*hd, typ))
	}
	for tok := range n {
		g.StoreKV(kv.g.K[tok/ps], kv.g.V[tok/ps], tok%ps, kg, vg, tok, 0, hd, hd)
	}
	pos := make([]int32, n)
	for i := range pos {
		pos[i] = int32(i)
	}
	kv.c.Pos, kv.g.Pos = pos, pos
	g.Free(kg)
	g.Free(vg)
	return kv
}

// testSeqIDs hands out KVSeq IDs to sequences built by tests, far from
// those of runtime.KVCache (which counts from 1).
var testSeqIDs atomic.Uint64

func init() { testSeqIDs.Store(1 << 62) }

// refChoice is Quest's choice from the page scores of one head of n tokens
// (policies/quest.go): the k-1 best pages but the last, ties to the lower
// page, and the last page, as token indices in page order.
func refChoice(scores []float64, n, page, k int) []int32 {
	pages := len(scores)
	idx := make([]int, pages-1)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	chosen := append(slices.Clone(idx[:k-1]), pages-1)
	slices.Sort(chosen)
	var toks []int32
	for _, p := range chosen {
		for t := p * page; t < min(n, (p+1)*page); t++ {
			toks = append(toks, int32(t))
		}
	}
	return toks
}

// TestQuestChoose checks Quest's choice on the device (PageChooser.Choose)
// against the choice made on the host from the CPU's page scores (which the
// GPU's equal bit for bit): each head's tokens and count, each KV head's
// distinct tokens (Covered), heads left unscored when their KV head holds k
// pages or fewer; then attention over the device selection against the
// same selection given as Sel, bit for bit, on the split-KV path and on
// be_attend with recall, and within float32 rounding over the heads' page
// lists (questlists.go), which serve the calls whose every token is visible
// where Quest's page is the cache's. float32 and bf16 pages, head dims 64 and 128, GQA
// groups 1, 4 and 8, bounds pages of 16 and 5 tokens, KV heads of different
// lengths, budgets of 1 to 40 pages (the selection buffers grow), random
// keys and coarse ones whose pages' scores tie.
func TestQuestChoose(t *testing.T) {
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(14, 2))
	for _, typ := range []runtime.DType{runtime.F32, runtime.BF16} {
		for _, hd := range []int{64, 128} {
			for _, sh := range []struct{ heads, kvHeads int }{{4, 4}, {8, 2}, {32, 4}} {
				for _, page := range []int{16, 5} {
					for _, coarse := range []bool{false, true} {
						name := fmt.Sprintf("%v/hd%d/%d-%d/page%d/coarse%v", typ, hd, sh.heads, sh.kvHeads, page, coarse)
						t.Run(name, func(t *testing.T) {
							questChooseCase(t, c, g, rng, typ, hd, sh.heads, sh.kvHeads, page, coarse, 700, []int{1, 2, 5, 13, 40, 44})
						})
					}
				}
			}
		}
	}
}

// TestQuestChooseManyPages is TestQuestChoose's check over thousands of
// pages (pages of one token): the device's select gives each thread a run of
// several scores, held in registers up to 8,192 pages (in runs of up to 2,
// 4, 8 and 16 keys: qc_select's E) and read from memory past that, paths the
// shapes above (at most 140 pages) leave untried.
func TestQuestChooseManyPages(t *testing.T) {
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(14, 3))
	for _, n := range []int{700, 2000, 2600, 6000, 9000} {
		for _, coarse := range []bool{false, true} {
			t.Run(fmt.Sprintf("tokens%d/coarse%v", n, coarse), func(t *testing.T) {
				questChooseCase(t, c, g, rng, runtime.F32, 64, 8, 2, 1, coarse, n, []int{1, 2, 100, 1500})
			})
		}
	}
}

// TestQuestChooseStepwise checks the choice of decode steps: the bounds
// extended one token a step (an Extend the choice's launch runs, beside it:
// questbatch.go), then chosen, for steps across several pages; and with
// KVBENCH_QUEST_FUSE=off, where be_quest_extend runs first.
func TestQuestChooseStepwise(t *testing.T) {
	for _, fuse := range []string{"on", "off"} {
		t.Run("fuse-"+fuse, func(t *testing.T) {
			t.Setenv("KVBENCH_QUEST_FUSE", fuse)
			g := newGPU(t)
			c := cpu.New(0)
			defer c.Close()
			rng := rand.New(rand.NewPCG(15, 3))
			for _, typ := range []runtime.DType{runtime.F32, runtime.BF16} {
				for _, page := range []int{16, 5} {
					t.Run(fmt.Sprintf("%v/page%d", typ, page), func(t *testing.T) {
						questStepwiseCase(t, c, g, rng, typ, 128, 8, 2, page, 260, 40, 6)
					})
				}
			}
		})
	}
}

// questStepwiseCase folds n-steps tokens of KV heads of n tokens into the
// bounds of the CPU and the GPU, then steps one token at a time, choosing k
// pages a step on the GPU and checking each choice against the host's.
func questStepwiseCase(t *testing.T, c *cpu.Backend, g *cuda.Backend, rng *rand.Rand, typ runtime.DType, hd, heads, kvHeads, page, n, steps, k int) {
	group := heads / kvHeads
	var sc, sg []runtime.KVSeq
	for range kvHeads {
		s := questKV(t, c, g, rng, n, 16, hd, typ, false)
		sc, sg = append(sc, s.c), append(sg, s.g)
	}
	bc, bg := c.NewPageBounds(kvHeads, hd, page), g.NewPageBounds(kvHeads, hd, page)
	defer bc.Free()
	defer bg.Free()
	pc := bg.(runtime.PageChooser)
	q := newPair(c, g, randVec(rng, heads*hd, 2))
	view := func(s []runtime.KVSeq, m int) []runtime.KVSeq {
		v := slices.Clone(s)
		for i := range v {
			v[i].N = m
		}
		return v
	}
	for m := n - steps; m <= n; m++ {
		vc, vg := view(sc, m), view(sg, m)
		bc.Extend(vc)
		bg.Extend(vg)
		if m == n-steps {
			continue
		}
		mk := func(qb runtime.Buffer, seqs []runtime.KVSeq) *runtime.AttnArgs {
			return &runtime.AttnArgs{Q: qb, Rows: 1, QPos: []int{m}, Heads: heads, KVHeads: kvHeads, HeadDim: hd,
				Scale: float32(1 / math.Sqrt(float64(hd))), Seqs: seqs}
		}
		ag := mk(q.g, vg)
		pc.Choose(ag, k)
		pages := (m + page - 1) / page
		if ag.Chosen == nil {
			t.Fatalf("%d tokens: no selection", m)
		}
		for h := range heads {
			out := make([][]float64, heads)
			out[h] = make([]float64, pages)
			bc.Score(mk(q.c, vc), out)
			want := refChoice(out[h], vc[h/group].N, page, k)
			if got := ag.Chosen.Tokens(h); ag.Chosen.Count(h) != len(want) || !slices.Equal(got, want) {
				t.Fatalf("%d tokens, head %d: chose %v (count %d), want %v", m, h, got, ag.Chosen.Count(h), want)
			}
		}
	}
}

// questChooseCase checks Choose for KV heads of n0, n0-37, ... tokens and
// budgets of ks pages (TestQuestChoose).
func questChooseCase(t *testing.T, c *cpu.Backend, g *cuda.Backend, rng *rand.Rand, typ runtime.DType, hd, heads, kvHeads, page int, coarse bool,
	n0 int, ks []int) {
	group := heads / kvHeads
	var sc, sg []runtime.KVSeq
	for kv := range kvHeads {
		s := questKV(t, c, g, rng, n0-37*kv, 16, hd, typ, coarse)
		sc, sg = append(sc, s.c), append(sg, s.g)
	}
	bc, bg := c.NewPageBounds(kvHeads, hd, page), g.NewPageBounds(kvHeads, hd, page)
	defer bc.Free()
	defer bg.Free()
	bc.Extend(sc)
	bg.Extend(sg)
	pc, ok := bg.(runtime.PageChooser)
	if !ok {
		t.Fatal("the GPU's page bounds are not a runtime.PageChooser")
	}
	qv := randVec(rng, heads*hd, 2)
	if coarse {
		for i := range qv {
			qv[i] = float32(rng.IntN(3) - 1)
		}
	}
	q := newPair(c, g, qv)
	maxPos := n0
	for _, k := range ks {
		mk := func(qb runtime.Buffer, seqs []runtime.KVSeq) *runtime.AttnArgs {
			return &runtime.AttnArgs{Q: qb, Rows: 1, QPos: []int{maxPos}, Heads: heads, KVHeads: kvHeads, HeadDim: hd,
				Scale: float32(1 / math.Sqrt(float64(hd))), Seqs: seqs}
		}
		ag := mk(q.g, sg)
		ag.Sel = [][]int32{{0}} // Choose replaces it
		pc.Choose(ag, k)
		if ag.Sel != nil {
			t.Fatalf("k %d: Choose left Sel set", k)
		}
		// The reference: the CPU's scores, the host's choice.
		want := make([][]int32, heads)
		scored := false
		for h := range heads {
			n := sc[h/group].N
			if pages := (n + page - 1) / page; pages > k {
				out := make([][]float64, heads)
				out[h] = make([]float64, pages)
				bc.Score(mk(q.c, sc), out)
				want[h] = refChoice(out[h], n, page, k)
				scored = true
			}
		}
		if !scored {
			if ag.Chosen != nil {
				t.Fatalf("k %d: no head over %d pages, yet a selection", k, k)
			}
			continue
		}
		if ag.Chosen == nil {
			t.Fatalf("k %d: no selection", k)
		}
		for h := range heads {
			got := ag.Chosen.Tokens(h)
			if want[h] == nil {
				if got != nil || ag.Chosen.Count(h) != -1 {
					t.Fatalf("k %d head %d: not scored, yet count %d and tokens %v", k, h, ag.Chosen.Count(h), got)
				}
				continue
			}
			if ag.Chosen.Count(h) != len(want[h]) || !slices.Equal(got, want[h]) {
				t.Fatalf("k %d head %d: chose %v (count %d), want %v", k, h, got, ag.Chosen.Count(h), want[h])
			}
		}
		for kv := range kvHeads {
			union := map[int32]bool{}
			for h := kv * group; h < (kv+1)*group; h++ {
				if want[h] == nil {
					for tk := range sc[kv].N {
						union[int32(tk)] = true
					}
				}
				for _, tk := range want[h] {
					union[tk] = true
				}
			}
			if got := ag.Chosen.Covered(kv); got != len(union) {
				t.Fatalf("k %d kv head %d: covered %d tokens, want %d", k, kv, got, len(union))
			}
		}
		// Attention over the device selection and over the same one as Sel,
		// with the page lists uploaded per call and from the device tables
		// (sequences given IDs of their own), and with positions known to
		// lie before the query's (bounded): where Quest's page is the
		// cache's, such a call runs over its heads' page lists
		// (questlists.go), which add the same tokens in other chunks: equal
		// to the float32 rounding of their sums.
		withIDs, bounded := slices.Clone(sg), slices.Clone(sg)
		for i := range withIDs {
			withIDs[i].ID = testSeqIDs.Add(1)
			bounded[i].ID = testSeqIDs.Add(1)
			bounded[i].Bounded, bounded[i].MaxPos, bounded[i].Ascending = true, int32(bounded[i].N-1), true
		}
		for _, x := range []struct {
			recall bool
			seqs   []runtime.KVSeq
		}{{false, sg}, {true, sg}, {false, withIDs}, {true, withIDs}, {false, bounded}} {
			recall := x.recall
			lists := x.seqs[0].Bounded && page == 16
			outC, outS := g.Alloc(heads*hd), g.Alloc(heads*hd)
			a1, a2 := mk(q.g, x.seqs), mk(q.g, x.seqs)
			a1.Out, a2.Out = outC, outS
			pc.Choose(a1, k)
			a2.Sel = want
			if recall {
				a1.Ref, a1.Recall = x.seqs, make([]float32, heads)
				a2.Ref, a2.Recall = x.seqs, make([]float32, heads)
			}
			g.Attend(a1)
			if got := g.AttnPlan().Lists; got != lists {
				t.Fatalf("k %d recall %v tables %v bounded %v: over page lists %v, want %v", k, recall, x.seqs[0].ID != 0, x.seqs[0].Bounded, got, lists)
			}
			g.Attend(a2)
			o1, o2 := read(g, outC), read(g, outS)
			for i := range o1 {
				if lists {
					if d := math.Abs(float64(o1[i] - o2[i])); d > 5e-5*(1+math.Abs(float64(o2[i]))) || math.IsNaN(float64(o1[i])) {
						t.Fatalf("k %d: output %d over the page lists %v, over Sel %v", k, i, o1[i], o2[i])
					}
					continue
				}
				if math.Float32bits(o1[i]) != math.Float32bits(o2[i]) {
					t.Fatalf("k %d recall %v tables %v: output %d over the device selection %v, over Sel %v", k, recall, x.seqs[0].ID != 0, i, o1[i], o2[i])
				}
			}
			if recall && !slices.Equal(a1.Recall, a2.Recall) {
				t.Fatalf("k %d: recall over the device selection %v, over Sel %v", k, a1.Recall, a2.Recall)
			}
			g.Free(outC)
			g.Free(outS)
		}
	}
}
