package policies_test

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/policies/policytest"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

func TestQuestConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "quest",
		Small: policies.Params{"budget": 32, "page": 8, "dense_layers": 1}, Large: policies.Params{"budget": 4096}})
}

func TestQuestPromptConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "quest", Prompt: 50,
		Small: policies.Params{"budget": 32, "page": 8, "dense_layers": 1}, Large: policies.Params{"budget": 4096}})
}

func TestQuestParams(t *testing.T) {
	for _, c := range []struct {
		params policies.Params
		want   string
	}{
		{policies.Params{"budget": 64, "page": 0}, "out of range"},
		{policies.Params{"budget": 64, "dense_layer": 1}, "did you mean dense_layers"},
	} {
		_, err := policies.New("quest", c.params)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(quest, %v) error %v, want it to mention %q", c.params, err, c.want)
		}
	}
	p, err := policies.New("quest", policies.Params{"budget": 70})
	if err != nil {
		t.Fatal(err)
	}
	if pr := p.Params(); pr["page"] != 16 || pr["dense_layers"] != 2 {
		t.Errorf("resolved params %v, want page 16 and dense_layers 2", pr)
	}
	h0, a0 := p.LayerBudget(1)
	h2, a2 := p.LayerBudget(2)
	if p.Budget() != 70 || p.Evicts() || h0 != 0 || a0 != 0 || h2 != 0 || a2 != 64 {
		t.Errorf("budget %d, evicts %v, layer budgets (%d, %d) and (%d, %d); want 70, false, (0, 0), (0, 64)",
			p.Budget(), p.Evicts(), h0, a0, h2, a2)
	}
	p, _ = policies.New("quest", policies.Params{"budget": 5, "page": 16})
	if _, a := p.LayerBudget(3); a != 16 {
		t.Errorf("budget below a page attends %d tokens, want one page (16)", a)
	}
}

// noScorer hides the runtime.Scorer methods of a backend.
type noScorer struct{ runtime.Backend }

func (noScorer) Name() string { return "noscore" }

func TestQuestOracleNeedScorer(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	r, err := runtime.NewRunner(m, noScorer{cpu.New(0)}, 8)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"quest", "oracle"} {
		p, err := policies.New(name, policies.Params{"budget": 16})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(r); err == nil || !strings.Contains(err.Error(), "noscore") || !strings.Contains(err.Error(), "Scorer") {
			t.Errorf("%s on a backend without Scorer: error %v, want one naming the backend and runtime.Scorer", name, err)
		}
	}
}

// readKeys copies the keys of s out through the backend: [N*headDim].
func readKeys(be runtime.Backend, s *runtime.KVSeq, hd int) []float32 {
	k := make([]float32, s.N*hd)
	for t := 0; t < s.N; t++ {
		be.Read(k[t*hd:(t+1)*hd], s.K[t/s.PageSize], (t%s.PageSize)*hd)
	}
	return k
}

// questPageScores computes, in float64, each page's bound sum_i max(q_i m_i,
// q_i M_i) from the keys, and checks that it is at least q·k for every key of
// the page.
func questPageScores(t *testing.T, q, keys []float32, n, hd, page int) []float64 {
	t.Helper()
	pages := (n + page - 1) / page
	out := make([]float64, pages)
	for pg := range out {
		t0, t1 := pg*page, min(n, (pg+1)*page)
		var bound float64
		for i := 0; i < hd; i++ {
			lo, hi := float64(keys[t0*hd+i]), float64(keys[t0*hd+i])
			for tk := t0 + 1; tk < t1; tk++ {
				lo, hi = min(lo, float64(keys[tk*hd+i])), max(hi, float64(keys[tk*hd+i]))
			}
			x := float64(q[i])
			bound += max(x*lo, x*hi)
		}
		for tk := t0; tk < t1; tk++ {
			var dot float64
			for i := 0; i < hd; i++ {
				dot += float64(q[i]) * float64(keys[tk*hd+i])
			}
			if dot > bound {
				t.Fatalf("page %d (tokens %d..%d): bound %v below q·k %v of token %d", pg, t0, t1-1, bound, dot, tk)
			}
		}
		out[pg] = bound
	}
	return out
}

// questExpected is the brute-force choice: the top k pages by score (ties to
// the lower page), the last page replacing the lowest when it is not among
// them; it returns their token indices in order.
func questExpected(score []float64, k, page, n int) []int32 {
	pages := len(score)
	ord := make([]int, pages)
	for i := range ord {
		ord[i] = i
	}
	slices.SortFunc(ord, func(x, y int) int {
		if c := cmp.Compare(score[y], score[x]); c != 0 {
			return c
		}
		return cmp.Compare(x, y)
	})
	top := ord[:k]
	if !slices.Contains(top, pages-1) {
		top[k-1] = pages - 1
	}
	slices.Sort(top)
	var out []int32
	for _, pg := range top {
		for tk := pg * page; tk < min(n, (pg+1)*page); tk++ {
			out = append(out, int32(tk))
		}
	}
	return out
}

// questCheckSel compares a.Sel with the brute-force choice for every query
// head and returns the bytes the step reads for this layer by the formula:
// page bounds of every scored KV head plus the union of selected tokens.
func questCheckSel(t *testing.T, be runtime.Backend, a *runtime.AttnArgs, k, page int, vb int64, where string) int64 {
	t.Helper()
	hd, group := a.HeadDim, a.Heads/a.KVHeads
	q := make([]float32, a.Heads*hd)
	be.Read(q, a.Q, 0)
	var bytes int64
	for g := range a.Seqs {
		s := &a.Seqs[g]
		keys := readKeys(be, s, hd)
		pages := (s.N + page - 1) / page
		if pages <= k {
			for h := g * group; h < (g+1)*group; h++ {
				if a.Sel != nil && a.Sel[h] != nil {
					t.Fatalf("%s: head %d selects %d tokens with %d pages cached, K %d: want all", where, h, len(a.Sel[h]), pages, k)
				}
			}
			bytes += int64(s.N) * 2 * vb
			continue
		}
		union := map[int32]bool{}
		for h := g * group; h < (g+1)*group; h++ {
			score := questPageScores(t, q[h*hd:(h+1)*hd], keys, s.N, hd, page)
			want := questExpected(score, k, page, s.N)
			if a.Sel == nil || a.Sel[h] == nil {
				t.Fatalf("%s: head %d attends everything with %d pages cached, K %d", where, h, pages, k)
			}
			got := slices.Sorted(slices.Values(a.Sel[h]))
			if !slices.Equal(got, want) {
				t.Fatalf("%s: head %d selects tokens %v, brute force %v (page scores %v)", where, h, got, want, score)
			}
			for _, tk := range got {
				union[tk] = true
			}
		}
		bytes += int64(pages)*2*vb + int64(len(union))*2*vb
	}
	return bytes
}

// TestQuestBoundsAndSelection drives the policy's hook directly with random
// queries and keys (negative values included) appended in random chunks:
// every page bound is at least each q·k of its page, and the selection equals
// the brute-force top K of the bounds, the last page always in.
func TestQuestBoundsAndSelection(t *testing.T) {
	r := tinyRunner(t, "tiny", 8)
	c := r.Model.Config
	be := r.Backend
	hd := c.HeadDim
	rng := rand.New(rand.NewPCG(42, 7))
	vb := int64(hd * 4)
	for trial := 0; trial < 300; trial++ {
		page := []int{1, 2, 3, 5, 8, 16}[rng.IntN(6)]
		budget := 1 + rng.IntN(6*page)
		k := max(1, budget/page)
		p, err := policies.New("quest", policies.Params{"budget": budget, "page": page, "dense_layers": 0})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(r); err != nil {
			t.Fatal(err)
		}
		ps := []int{4, 16}[rng.IntN(2)]
		seqs := make([]runtime.KVSeq, c.KVHeads)
		for g := range seqs {
			seqs[g].PageSize = ps
		}
		qbuf := be.Alloc(c.Heads * hd)
		shift := float32(rng.NormFloat64())
		if trial%3 == 0 {
			shift = float32(math.Round(float64(shift)))
		}
		// A third of the trials use small integers: many exactly tied page
		// scores, which go to the lower page.
		ties := trial%3 == 0
		val := func(scale float64) float32 {
			v := float32(rng.NormFloat64() * scale)
			if ties {
				return float32(math.Round(float64(v) / 2))
			}
			return v
		}
		n := 0
		for step := 0; step < 12; step++ {
			add := 1 + rng.IntN(2*page+3)
			for g := range seqs {
				s := &seqs[g]
				for i := 0; i < add; i++ {
					tk := s.N
					if tk%ps == 0 {
						s.K = append(s.K, be.Alloc(ps*hd))
						s.V = append(s.V, be.Alloc(ps*hd))
					}
					key := make([]float32, hd)
					for j := range key {
						key[j] = val(2) + shift
					}
					be.Write(s.K[tk/ps], (tk%ps)*hd, key)
					s.Pos = append(s.Pos, int32(tk))
					s.N++
				}
			}
			n += add
			q := make([]float32, c.Heads*hd)
			for j := range q {
				q[j] = val(1)
			}
			be.Write(qbuf, 0, q)
			a := &runtime.AttnArgs{Out: be.Alloc(c.Heads * hd), Q: qbuf, Rows: 1, QPos: []int{n - 1},
				Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: hd, Scale: 0.25, Seqs: seqs}
			p.BeforeAttend(0, a)
			questCheckSel(t, be, a, k, page, vb, fmt.Sprintf("trial %d (page %d, budget %d) step %d", trial, page, budget, step))
		}
	}
}

// questRef wraps the quest policy's hook: after its BeforeAttend, it checks
// the selection against the brute force from keys read out of the cache, and
// adds up the bytes the step should read.
type questRef struct {
	t       *testing.T
	inner   runtime.Hook
	be      runtime.Backend
	k, page int
	dense   int
	vb      int64
	step    int
	bytes   int64 // expected bytes of the decode step in progress
	checked int   // sparse layer steps checked
}

func (x *questRef) BeforeAttend(l int, a *runtime.AttnArgs) {
	x.inner.BeforeAttend(l, a)
	if a.Rows != 1 {
		if a.Sel != nil {
			x.t.Fatalf("layer %d: a prompt chunk of %d rows has a selection", l, a.Rows)
		}
		return
	}
	if l == 0 {
		x.bytes = 0
	}
	if l < x.dense {
		if a.Sel != nil {
			x.t.Fatalf("step %d: dense layer %d has a selection", x.step, l)
		}
		for g := range a.Seqs {
			x.bytes += int64(a.Seqs[g].N) * 2 * x.vb
		}
		return
	}
	x.bytes += questCheckSel(x.t, x.be, a, x.k, x.page, x.vb, fmt.Sprintf("step %d layer %d", x.step, l))
	x.checked++
}

func (x *questRef) AfterAttend(l int, a *runtime.AttnArgs) { x.inner.AfterAttend(l, a) }

// TestQuestMatchesBruteForce streams 512 tokens (a prompt, then decode
// steps) through quest with budget 64 under the brute-force checker: every
// step's selection and bytes read match, and at the end quest reads less than
// full attention.
func TestQuestMatchesBruteForce(t *testing.T) {
	const n, prompt, budget, page, dense = 512, 100, 64, 16, 1
	r := tinyRunner(t, "tiny", 32)
	p, err := policies.New("quest", policies.Params{"budget": budget, "page": page, "dense_layers": dense})
	if err != nil {
		t.Fatal(err)
	}
	p.MeasureRecall(16)
	if err := p.Start(r); err != nil {
		t.Fatal(err)
	}
	toks, logits := streamQuestRef(t, r, r.Backend, p, n, prompt, budget, page, dense, 5)

	f := tinyRunner(t, "tiny", 32)
	fp, _ := policies.New("full", nil)
	if err := fp.Start(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Forward(toks, logits); err != nil {
		t.Fatal(err)
	}
	if err := f.Forward(toks[:1], logits); err != nil { // one decode step at length 513
		t.Fatal(err)
	}
	if err := r.Forward(toks[:1], logits); err != nil {
		t.Fatal(err)
	}
	qb, fb := p.Stats().BytesRead, fp.Stats().BytesRead
	t.Logf("bytes read per step at %d tokens: quest %d, full %d (%.2fx); recall %.3f", n+1, qb, fb, float64(fb)/float64(qb), p.Stats().MeanRecall())
	if qb >= fb {
		t.Errorf("quest reads %d bytes per step at %d tokens, full %d: want fewer", qb, n+1, fb)
	}
	if rc := p.Stats().MeanRecall(); rc <= 0 || rc > 1+1e-6 {
		t.Errorf("recall %v", rc)
	}
}

// TestQuestDecodeAllocs checks that quest allocates per decode step no more
// than full attention does over the same growing cache, up to the amortized
// growth of its page bounds.
func TestQuestDecodeAllocs(t *testing.T) {
	r := tinyRunner(t, "tiny", 32)
	measure := func(p policies.Policy) float64 { return decodeAllocs(t, r, p, 300, 200) }
	fp, _ := policies.New("full", nil)
	qp, _ := policies.New("quest", policies.Params{"budget": 64, "page": 8, "dense_layers": 1})
	op, _ := policies.New("oracle", policies.Params{"budget": 32})
	measure(fp) // warms the cache's own buffers, which Reset keeps
	base, got, orc := measure(fp), measure(qp), measure(op)
	t.Logf("allocations per decode step: quest %.2f, oracle %.2f, full %.2f", got, orc, base)
	if got > base+0.1 {
		t.Errorf("quest allocates %.2f times per decode step, full %.2f", got, base)
	}
	if orc > base {
		t.Errorf("oracle allocates %.2f times per decode step, full %.2f", orc, base)
	}
}

// scorerOnly is a backend with runtime.Scorer but not runtime.PageScorer.
type scorerOnly struct {
	runtime.Backend
	runtime.Scorer
}

// TestQuestScorerOnlyBackend runs quest on a backend without PageScorer (the
// page bounds kept on the host over Scorer.KeyBounds) under the brute-force
// checker of every step's selection and bytes read.
func TestQuestScorerOnlyBackend(t *testing.T) {
	const n, prompt, budget, page, dense = 300, 60, 48, 8, 1
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	c := cpu.New(0)
	defer c.Close()
	be := scorerOnly{c, c}
	if _, ok := runtime.Backend(be).(runtime.PageScorer); ok {
		t.Fatal("scorerOnly has PageScorer")
	}
	r, err := runtime.NewRunner(m, be, 32)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policies.New("quest", policies.Params{"budget": budget, "page": page, "dense_layers": dense})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(r); err != nil {
		t.Fatal(err)
	}
	streamQuestRef(t, r, be, p, n, prompt, budget, page, dense, 8)
}

// streamQuestRef streams n tokens of seed (a prompt, then decode steps)
// through quest policy p on r under the brute-force checker of every sparse
// layer step's selection (scores from be) and of the bytes read, and checks
// that every such step was seen. It returns the tokens and a logits buffer.
func streamQuestRef(t *testing.T, r *runtime.Runner, be runtime.Backend, p policies.Policy, n, prompt, budget, page, dense int, seed uint64) ([]int, []float32) {
	t.Helper()
	vb := r.Cache.PageBytes() / int64(2*r.Cache.PageSize())
	x := &questRef{t: t, inner: r.Hook, be: be, k: budget / page, page: page, dense: dense, vb: vb}
	r.Hook = x
	toks := streamTokens(n, seed)
	logits := make([]float32, r.Model.Config.Vocab)
	p.Prompt(prompt)
	if err := r.Forward(toks[:prompt], logits); err != nil {
		t.Fatal(err)
	}
	for i := prompt; i < n; i++ {
		x.step = i
		if err := r.Forward(toks[i:i+1], logits); err != nil {
			t.Fatal(err)
		}
		if got := p.Stats().BytesRead; got != x.bytes {
			t.Fatalf("step %d: %d bytes read, formula (metadata + selected pages + dense layers) %d", i, got, x.bytes)
		}
	}
	if want := (n - prompt) * (r.Model.Config.Layers - dense); x.checked != want {
		t.Errorf("checked %d sparse layer steps, want %d", x.checked, want)
	}
	return toks, logits
}
