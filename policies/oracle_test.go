package policies_test

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/policies/policytest"
	"github.com/kvbench/kvbench/runtime"
)

func TestOracleConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "oracle",
		Small: policies.Params{"budget": 24}, Large: policies.Params{"budget": 4096}})
}

func TestOraclePromptConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "oracle", Prompt: 50,
		Small: policies.Params{"budget": 24}, Large: policies.Params{"budget": 4096}})
}

func TestOracleParams(t *testing.T) {
	for _, c := range []struct {
		params policies.Params
		want   string
	}{
		{policies.Params{"budget": 0}, "out of range"},
		{policies.Params{"budget": 8, "page": 4}, "unknown parameter page"},
	} {
		_, err := policies.New("oracle", c.params)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(oracle, %v) error %v, want it to mention %q", c.params, err, c.want)
		}
	}
	p, err := policies.New("oracle", policies.Params{"budget": 24})
	if err != nil {
		t.Fatal(err)
	}
	if hold, attend := p.LayerBudget(0); hold != 0 || attend != 24 || p.Budget() != 24 || p.Evicts() {
		t.Errorf("budget %d, layer budget (%d, %d), evicts %v; want 24, (0, 24), false", p.Budget(), hold, attend, p.Evicts())
	}
}

// oracleRef wraps the oracle's hook: after its BeforeAttend on a decode step
// it computes q·k of every head against every cached key in float64 and
// checks that the selection is the top budget.
type oracleRef struct {
	t       *testing.T
	inner   runtime.Hook
	be      runtime.Backend
	budget  int
	step    int
	checked int // head selections compared
	exact   int // of which equal to the float64 top set exactly
}

func (x *oracleRef) BeforeAttend(l int, a *runtime.AttnArgs) {
	x.inner.BeforeAttend(l, a)
	if a.Rows != 1 {
		if a.Sel != nil {
			x.t.Fatalf("layer %d: a prompt chunk has a selection", l)
		}
		return
	}
	hd, group := a.HeadDim, a.Heads/a.KVHeads
	q := make([]float32, a.Heads*hd)
	x.be.Read(q, a.Q, 0)
	for g := range a.Seqs {
		s := &a.Seqs[g]
		keys := readKeys(x.be, s, hd)
		for h := g * group; h < (g+1)*group; h++ {
			if s.N <= x.budget {
				if a.Sel != nil && a.Sel[h] != nil {
					x.t.Fatalf("step %d layer %d head %d: selects with %d tokens cached, budget %d", x.step, l, h, s.N, x.budget)
				}
				continue
			}
			if a.Sel == nil || a.Sel[h] == nil {
				x.t.Fatalf("step %d layer %d head %d: attends all %d tokens, budget %d", x.step, l, h, s.N, x.budget)
			}
			score := make([]float64, s.N)
			for tk := range score {
				for i := 0; i < hd; i++ {
					score[tk] += float64(q[h*hd+i]) * float64(keys[tk*hd+i])
				}
			}
			ord := make([]int32, s.N)
			for i := range ord {
				ord[i] = int32(i)
			}
			slices.SortStableFunc(ord, func(a, b int32) int {
				switch {
				case score[a] > score[b]:
					return -1
				case score[a] < score[b]:
					return 1
				}
				return 0
			})
			want := slices.Sorted(slices.Values(ord[:x.budget]))
			got := slices.Sorted(slices.Values(a.Sel[h]))
			if len(got) != x.budget || len(slices.Compact(slices.Clone(got))) != x.budget {
				x.t.Fatalf("step %d layer %d head %d: %d tokens selected (distinct or not), budget %d", x.step, l, h, len(got), x.budget)
			}
			x.checked++
			if slices.Equal(got, want) {
				x.exact++
				continue
			}
			// The kernel scores in float32: only keys within its rounding of
			// the boundary may swap.
			chosen := map[int32]bool{}
			for _, tk := range got {
				chosen[tk] = true
			}
			lowIn, highOut := math.Inf(1), math.Inf(-1)
			for tk, v := range score {
				if chosen[int32(tk)] {
					lowIn = min(lowIn, v)
				} else {
					highOut = max(highOut, v)
				}
			}
			if highOut-lowIn > 1e-4*(1+math.Abs(lowIn)) {
				x.t.Fatalf("step %d layer %d head %d: selects %v, brute-force top %d is %v (lowest chosen q·k %v, highest left %v)",
					x.step, l, h, got, x.budget, want, lowIn, highOut)
			}
		}
	}
}

func (x *oracleRef) AfterAttend(l int, a *runtime.AttnArgs) { x.inner.AfterAttend(l, a) }

// TestOracleMatchesBruteForce streams tokens through the oracle at a small
// budget: every decode step of every layer and head attends to exactly the
// top-budget keys by q·k computed here in float64.
func TestOracleMatchesBruteForce(t *testing.T) {
	for _, model := range []string{"tiny", "tiny-mha"} {
		const n, prompt, budget = 300, 40, 20
		r := tinyRunner(t, model, 32)
		p, err := policies.New("oracle", policies.Params{"budget": budget})
		if err != nil {
			t.Fatal(err)
		}
		p.MeasureRecall(5)
		if err := p.Start(r); err != nil {
			t.Fatal(err)
		}
		x := &oracleRef{t: t, inner: r.Hook, be: r.Backend, budget: budget}
		r.Hook = x
		toks := streamTokens(n, 9)
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
		}
		c := r.Model.Config
		if want := (n - prompt) * c.Layers * c.Heads; x.checked != want {
			t.Errorf("%s: compared %d selections, want %d", model, x.checked, want)
		}
		st := p.Stats()
		t.Logf("%s: %d of %d selections equal the float64 top set exactly; recall %.4f, max attended %d",
			model, x.exact, x.checked, st.MeanRecall(), st.MaxAttended)
		if st.MaxAttended != budget {
			t.Errorf("%s: at most %d tokens attended, budget %d", model, st.MaxAttended, budget)
		}
		if rc := st.MeanRecall(); rc <= 0 || rc >= 1 {
			t.Errorf("%s: recall %v at budget %d of %d tokens, want in (0, 1)", model, rc, budget, n)
		}
	}
}

// TestOracleFullBudgetRecall checks that with a budget at least the context
// every sampled recall is 1.
func TestOracleFullBudgetRecall(t *testing.T) {
	const n = 160
	for _, budget := range []int{n, n + 50} {
		r := tinyRunner(t, "tiny", 32)
		p, _ := policies.New("oracle", policies.Params{"budget": budget})
		p.MeasureRecall(1)
		if err := p.Start(r); err != nil {
			t.Fatal(err)
		}
		logits := make([]float32, r.Model.Config.Vocab)
		for _, tk := range streamTokens(n, 4) {
			if err := r.Forward([]int{tk}, logits); err != nil {
				t.Fatal(err)
			}
		}
		st := p.Stats()
		if st.RecallN == 0 || math.Abs(st.MeanRecall()-1) > 1e-6 {
			t.Errorf("budget %d over %d tokens: recall %v (%d samples), want 1", budget, n, st.MeanRecall(), st.RecallN)
		}
	}
}

// TestOracleRecallAboveQuest checks the oracle bounds selection policies of
// the same budget: its recall is at least quest's on the same stream.
func TestOracleRecallAboveQuest(t *testing.T) {
	const n, budget = 400, 64
	run := func(name string, params policies.Params) float64 {
		r := tinyRunner(t, "tiny", 32)
		p, err := policies.New(name, params)
		if err != nil {
			t.Fatal(err)
		}
		p.MeasureRecall(3)
		if err := p.Start(r); err != nil {
			t.Fatal(err)
		}
		logits := make([]float32, r.Model.Config.Vocab)
		for _, tk := range streamTokens(n, 6) {
			if err := r.Forward([]int{tk}, logits); err != nil {
				t.Fatal(err)
			}
		}
		return p.Stats().MeanRecall()
	}
	o := run("oracle", policies.Params{"budget": budget})
	q := run("quest", policies.Params{"budget": budget, "page": 16, "dense_layers": 0})
	t.Logf("recall at budget %d of %d tokens: oracle %.4f, quest %.4f", budget, n, o, q)
	if o < q {
		t.Errorf("oracle recall %v below quest's %v at the same budget", o, q)
	}
}
