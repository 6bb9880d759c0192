package policies_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/policies/policytest"
	"github.com/kvbench/kvbench/runtime"
)

func TestTOVAConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "tova",
		Small: policies.Params{"cache": 24}, Large: policies.Params{"cache": 4096}})
}

func TestTOVAPromptConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "tova", Prompt: 50, LongSteps: 20000,
		Small: policies.Params{"cache": 24}, Large: policies.Params{"cache": 4096}})
}

func TestTOVAChunkedPromptConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "tova", Prompt: 50, LongSteps: 5000, Prefill: policies.PrefillChunked,
		Small: policies.Params{"cache": 20}, Large: policies.Params{"cache": 4096}})
}

func TestTOVAParams(t *testing.T) {
	for _, c := range []struct {
		params policies.Params
		want   string
	}{
		{policies.Params{"cache": 0}, "out of range"},
		{policies.Params{"cache": 8, "budget": 3}, "parameter cache: 8 differs from budget 3"},
		{policies.Params{"cache": 8, "budegt": 3}, "did you mean budget"},
	} {
		_, err := policies.New("tova", c.params)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(tova, %v) error %v, want it to mention %q", c.params, err, c.want)
		}
	}
	p, err := policies.New("tova", policies.Params{"cache": 8})
	if err != nil {
		t.Fatal(err)
	}
	if hold, attend := p.LayerBudget(0); hold != 8 || attend != 9 || p.Budget() != 8 || !p.Evicts() {
		t.Errorf("budget %d, layer budget (%d, %d), evicts %v; want 8, (8, 9), true", p.Budget(), hold, attend, p.Evicts())
	}
}

// tovaRef wraps the tova policy's hook: before each eviction it computes, in
// float64 from the queries and cached keys, the last query's probabilities
// averaged over every head of the layer, and checks that the policy evicts
// the lowest, the same positions from every KV head.
type tovaRef struct {
	t     *testing.T
	inner runtime.Hook
	cache *runtime.KVCache
	ref   refAttn
	size  int
	proto protocol
	chk   evictionChecker
}

func (x *tovaRef) BeforeAttend(l int, a *runtime.AttnArgs) {
	pre := heldPositions(x.cache, l)
	x.inner.BeforeAttend(l, a)
	for g, p := range heldPositions(x.cache, l) {
		if !slices.Equal(p, pre[g]) {
			x.t.Fatalf("tova evicted before attention")
		}
	}
	if x.proto.before(a) {
		for g := range a.Seqs {
			if a.Seqs[g].N > x.size+1 {
				x.t.Fatalf("layer %d head %d attends %d tokens, cache %d", l, g, a.Seqs[g].N, x.size)
			}
		}
	}
}

func (x *tovaRef) AfterAttend(l int, a *runtime.AttnArgs) {
	// The reference score of each position: the last row's probability,
	// averaged over all query heads.
	x.ref.load(a)
	score := map[int32]float64{}
	group := a.Heads / a.KVHeads
	for h := 0; h < a.Heads; h++ {
		seq := &a.Seqs[h/group]
		for t, p := range x.ref.probs(a, a.Rows-1, h) {
			score[seq.Pos[t]] += p / float64(a.Heads)
		}
	}
	pre := heldPositions(x.cache, l)
	x.inner.AfterAttend(l, a)
	post := heldPositions(x.cache, l)
	for g := range pre {
		a, b := slices.Sorted(slices.Values(pre[g])), slices.Sorted(slices.Values(pre[0]))
		if !slices.Equal(a, b) {
			x.t.Fatalf("layer %d: KV heads 0 and %d held different positions", l, g)
		}
		a, b = slices.Sorted(slices.Values(post[g])), slices.Sorted(slices.Values(post[0]))
		if !slices.Equal(a, b) {
			x.t.Fatalf("layer %d: KV heads 0 and %d hold different positions after eviction", l, g)
		}
	}
	if len(score) != len(pre[0]) {
		x.t.Fatalf("layer %d: %d scored positions for %d held", l, len(score), len(pre[0]))
	}
	want := 0
	if x.proto.before(a) || x.proto.after(a) {
		want = max(0, len(pre[0])-x.size)
	}
	x.chk.check("tova", pre[0], func(p int32) float64 { return score[p] }, minus(pre[0], post[0]), want)
}

// runTOVARef streams tokens through tova under the reference checker; after
// step scramble (if > 0) it evicts a few tokens itself, from each KV head in
// a different order, so that the heads hold the same positions at different
// indices from then on. The prompt runs under the given protocol.
func runTOVARef(t *testing.T, model string, maxRows, prompt, steps, size, scramble int, chunked bool) {
	r := tinyRunner(t, model, maxRows)
	p, err := policies.New("tova", policies.Params{"cache": size})
	if err != nil {
		t.Fatal(err)
	}
	proto := protocol{prompt: prompt, chunked: chunked}
	proto.set(p)
	p.MeasureRecall(4)
	if err := p.Start(r); err != nil {
		t.Fatal(err)
	}
	c := r.Model.Config
	x := &tovaRef{t: t, inner: r.Hook, cache: r.Cache, ref: refAttn{be: r.Backend}, size: size, proto: proto, chk: evictionChecker{t: t}}
	r.Hook = x
	toks := streamTokens(prompt+steps, 23)
	logits := make([]float32, c.Vocab)
	if prompt > 0 {
		p.Prompt(prompt)
		if err := r.Forward(toks[:prompt], logits); err != nil {
			t.Fatal(err)
		}
	}
	held := min(prompt, size)
	for i := prompt; i < len(toks); i++ {
		if err := r.Forward(toks[i:i+1], logits); err != nil {
			t.Fatal(err)
		}
		held = min(held+1, size)
		for l := 0; l < c.Layers; l++ {
			for g := 0; g < c.KVHeads; g++ {
				if n := r.Cache.Len(l, g); n != held {
					t.Fatalf("step %d layer %d head %d holds %d tokens, want %d", i, l, g, n, held)
				}
			}
		}
		if scramble > 0 && i == scramble {
			for l := 0; l < c.Layers; l++ {
				p1, p2 := r.Cache.Seqs(l)[0].Pos[1], r.Cache.Seqs(l)[0].Pos[5]
				for g := 0; g < c.KVHeads; g++ {
					index := func(p int32) int32 { return int32(slices.Index(r.Cache.Seqs(l)[g].Pos, p)) }
					if g%2 == 0 {
						r.Cache.Evict(l, g, []int32{index(p1)})
						r.Cache.Evict(l, g, []int32{index(p2)})
					} else {
						r.Cache.Evict(l, g, []int32{index(p1), index(p2)})
					}
				}
				s := r.Cache.Seqs(l)
				if slices.Equal(s[0].Pos, s[1].Pos) {
					t.Fatalf("scrambling left the heads' orders equal")
				}
			}
			held -= 2
		}
	}
	if x.chk.evictions == 0 || x.chk.strict < x.chk.evictions/2 {
		t.Errorf("%d evictions, %d with a clear margin: the check is too weak", x.chk.evictions, x.chk.strict)
	}
	t.Logf("%d evictions checked, %d strictly", x.chk.evictions, x.chk.strict)
}

func TestTOVAReference(t *testing.T) {
	for _, c := range []struct {
		name                         string
		model                        string
		maxRows, prompt, steps, size int
		scramble                     int
	}{
		{"decode", "tiny", 32, 0, 150, 10, 0},
		{"prompt-chunks", "tiny", 16, 45, 100, 12, 0},
		{"prompt-one-row-last-chunk", "tiny", 16, 49, 60, 12, 0},
		{"mha", "tiny-mha", 8, 30, 100, 9, 0},
		{"heads-out-of-order", "tiny", 32, 0, 150, 10, 40},
	} {
		for _, chunked := range []bool{false, true} {
			if c.prompt == 0 && chunked {
				continue
			}
			name := c.name
			if chunked {
				name += "/chunked"
			}
			t.Run(name, func(t *testing.T) {
				runTOVARef(t, c.model, c.maxRows, c.prompt, c.steps, c.size, c.scramble, chunked)
			})
		}
	}
}

func TestTOVADecodeAllocs(t *testing.T) {
	testDecodeAllocs(t, "tova", policies.Params{"cache": 32})
}
