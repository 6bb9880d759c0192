package policies_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
)

// budgeted are the policies that take the shared budget knob.
var budgeted = []string{"h2o", "oracle", "pyramidkv", "quest", "random", "snapkv", "streamingllm", "tova", "window"}

func TestBudgetedList(t *testing.T) {
	var want []string
	for _, n := range policies.Names() {
		if n != "full" {
			want = append(want, n)
		}
	}
	if fmt.Sprint(want) != fmt.Sprint(budgeted) {
		t.Errorf("policies %v, the test covers %v: add the new one", want, budgeted)
	}
}

func TestRatioTokens(t *testing.T) {
	for _, c := range []struct {
		ratio float64
		n     int
		want  int
	}{
		{0.25, 100, 25},
		{0.29, 100, 29}, // 28.999999999999996 in float64
		{0.3, 10, 3},
		{0.7, 10, 7},
		{0.5, 7, 3}, // floored
		{0.001, 100, 1},
		{1, 7, 7},
		{0.1, 2048, 204},
	} {
		if got := policies.RatioTokens(c.ratio, c.n); got != c.want {
			t.Errorf("RatioTokens(%v, %d) = %d, want %d", c.ratio, c.n, got, c.want)
		}
	}
}

// budget maps onto each policy's own parameters as documented.
func TestBudgetKnobMapping(t *testing.T) {
	for _, c := range []struct {
		name   string
		params policies.Params
		want   policies.Params // resolved parameters to check
		hold   int             // LayerBudget's hold of the last layer (0: unbounded)
	}{
		{"window", policies.Params{"budget": 100}, policies.Params{"window": 100, "budget": 100}, 100},
		{"window", policies.Params{"budget": 100, "window": 100}, policies.Params{"window": 100}, 100},
		{"streamingllm", policies.Params{"budget": 100}, policies.Params{"sinks": 4, "recent": 96, "budget": 100}, 100},
		{"streamingllm", policies.Params{"budget": 100, "sinks": 8}, policies.Params{"sinks": 8, "recent": 92}, 100},
		{"streamingllm", policies.Params{"budget": 100, "recent": 96}, policies.Params{"sinks": 4, "recent": 96}, 100},
		{"streamingllm", policies.Params{"recent": 60}, policies.Params{"sinks": 4, "recent": 60, "budget": 64}, 64},
		{"h2o", policies.Params{"budget": 101}, policies.Params{"heavy": 50, "recent": 51, "budget": 101}, 101},
		{"h2o", policies.Params{"budget": 100, "heavy": 70}, policies.Params{"heavy": 70, "recent": 30}, 100},
		{"h2o", policies.Params{"budget": 100, "recent": 10}, policies.Params{"heavy": 90, "recent": 10}, 100},
		{"h2o", policies.Params{"budget": 100, "heavy": 0}, policies.Params{"heavy": 0, "recent": 100}, 100},
		{"h2o", policies.Params{"budget": 100, "heavy": 40, "recent": 60}, policies.Params{"heavy": 40, "recent": 60}, 100},
		{"tova", policies.Params{"budget": 100}, policies.Params{"cache": 100, "budget": 100}, 100},
		{"snapkv", policies.Params{"budget": 100}, policies.Params{"capacity": 100, "budget": 100, "window": 32}, 0},
		{"pyramidkv", policies.Params{"budget": 100, "capacity": 100}, policies.Params{"capacity": 100}, 0},
		{"quest", policies.Params{"budget": 100}, policies.Params{"budget": 100, "page": 16}, 0},
		{"oracle", policies.Params{"budget": 100}, policies.Params{"budget": 100}, 0},
		{"random", policies.Params{"budget": 100}, policies.Params{"budget": 100}, 100},
	} {
		p, err := policies.New(c.name, c.params)
		if err != nil {
			t.Errorf("%s %v: %v", c.name, c.params, err)
			continue
		}
		got := p.Params()
		for k, v := range c.want {
			if got[k] != v {
				t.Errorf("%s %v: %s resolves to %v, want %v (all: %v)", c.name, c.params, k, got[k], v, got)
			}
		}
		want := c.params["budget"]
		if want == nil {
			want = c.want["budget"]
		}
		if p.Budget() != want || got["budget"] != want {
			t.Errorf("%s %v: Budget() %d, budget parameter %v, want %v", c.name, c.params, p.Budget(), got["budget"], want)
		}
		if hold, _ := p.LayerBudget(1); hold != c.hold {
			t.Errorf("%s %v: holds %d tokens per layer and KV head, want %d", c.name, c.params, hold, c.hold)
		}
	}
}

// Inconsistent or meaningless combinations are errors naming the parameter.
func TestBudgetKnobErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		params policies.Params
		want   string
	}{
		{"window", policies.Params{"budget": 128, "window": 64}, "parameter window: 64 differs from budget 128"},
		{"window", policies.Params{"budget": 128, "ratio": 0.5}, "parameter ratio: give the budget in tokens (budget) or as a share of the prompt (ratio), not both"},
		{"window", policies.Params{"ratio": 0.5, "window": 64}, "parameter window: ratio sets window"},
		{"window", policies.Params{"ratio": 0}, "parameter ratio: 0 is out of range (0, 1]"},
		{"window", policies.Params{"ratio": 1.5}, "out of range (0, 1]"},
		{"window", policies.Params{"ratio": "half"}, "not a number"},
		{"window", policies.Params{"budget": 0}, "parameter budget: 0 is out of range"},
		{"window", policies.Params{"budgte": 10}, "did you mean budget"},
		{"window", policies.Params{"ration": 0.1}, "did you mean ratio"},
		{"streamingllm", policies.Params{"budget": 128, "recent": 100}, "parameter recent: sinks 4 + recent 100 = 104 differs from budget 128"},
		{"streamingllm", policies.Params{"budget": 4}, "parameter budget: 4 leaves no recent token beside 4 sinks"},
		{"streamingllm", policies.Params{"ratio": 0.5, "recent": 10}, "parameter recent: ratio sets recent"},
		{"h2o", policies.Params{"budget": 128, "heavy": 64, "recent": 60}, "heavy 64 + recent 60 = 124 differs from budget 128"},
		{"h2o", policies.Params{"budget": 128, "heavy": 128}, "parameter heavy: 128 leaves no recent token in budget 128"},
		{"h2o", policies.Params{"budget": 128, "recent": 129}, "parameter recent: 129 exceeds budget 128"},
		{"h2o", policies.Params{"budget": 128, "heavy_ratio": 0.1}, "parameter heavy_ratio: give the budget in tokens (budget) or as shares"},
		{"h2o", policies.Params{"ratio": 0.2, "recent_ratio": 0.1}, "parameter recent_ratio: give one share of the prompt"},
		{"h2o", policies.Params{"ratio": 0.2, "heavy": 10}, "parameter heavy: ratio sets heavy"},
		{"tova", policies.Params{"budget": 100, "cache": 99}, "parameter cache: 99 differs from budget 100"},
		{"snapkv", policies.Params{"budget": 16}, "parameter budget: 16 is less than window 32"},
		{"snapkv", policies.Params{"capacity": 16}, "parameter capacity: 16 is less than window 32"},
		{"pyramidkv", policies.Params{"ratio": 0.2, "capacity": 100}, "parameter capacity: ratio sets capacity"},
		{"quest", policies.Params{"budget": 64, "ratio": 0.1}, "not both"},
		{"full", policies.Params{"budget": 64}, "unknown parameter budget"},
		{"full", policies.Params{"ratio": 0.5}, "unknown parameter ratio"},
	} {
		_, err := policies.New(c.name, c.params)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%s, %v) error %v, want it to mention %q", c.name, c.params, err, c.want)
		}
	}
}

// run feeds a prompt of the first prompt tokens and then the rest one at a
// time, returning every forward's logits (nil and the error if one fails).
func runPolicy(t *testing.T, p policies.Policy, toks []int, prompt int) ([][]float32, error) {
	t.Helper()
	r := tinyRunner(t, "tiny", 32)
	if err := p.Start(r); err != nil {
		t.Fatal(err)
	}
	var out [][]float32
	lg := make([]float32, r.Model.Config.Vocab)
	i := 0
	if prompt > 0 {
		p.Prompt(prompt)
		if err := r.Forward(toks[:prompt], lg); err != nil {
			return nil, err
		}
		out = append(out, append([]float32(nil), lg...))
		i = prompt
	}
	for ; i < len(toks); i++ {
		if err := r.Forward(toks[i:i+1], lg); err != nil {
			return nil, err
		}
		out = append(out, append([]float32(nil), lg...))
	}
	return out, nil
}

// A ratio is the budget RatioTokens gives the stream's prompt: the policy
// then runs exactly as with that budget in tokens, and its parameters say
// what it resolved to.
func TestRatioEqualsBudget(t *testing.T) {
	const prompt, ratio = 150, 0.3 // 45 tokens
	toks := streamTokens(190, 3)
	kept := policies.RatioTokens(ratio, prompt)
	for _, name := range budgeted {
		t.Run(name, func(t *testing.T) {
			p, err := policies.New(name, policies.Params{"ratio": ratio})
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := p.Params()["budget"]; ok || p.Budget() != 0 {
				t.Errorf("before a prompt: budget %d, parameters %v; want none", p.Budget(), p.Params())
			}
			got, err := runPolicy(t, p, toks, prompt)
			if err != nil {
				t.Fatal(err)
			}
			if p.Budget() != kept || p.Params()["budget"] != kept || p.Params()["ratio"] != ratio {
				t.Errorf("after a %d-token prompt: budget %d, parameters %v; want %d", prompt, p.Budget(), p.Params(), kept)
			}
			if st := p.Stats(); st.Budget != kept {
				t.Errorf("stats budget %d, want %d", st.Budget, kept)
			}
			q, err := policies.New(name, policies.Params{"budget": kept})
			if err != nil {
				t.Fatal(err)
			}
			want, err := runPolicy(t, q, toks, prompt)
			if err != nil {
				t.Fatal(err)
			}
			for i := range want {
				for j := range want[i] {
					if got[i][j] != want[i][j] {
						t.Fatalf("forward %d logit %d: %v with ratio %v, %v with budget %d", i, j, got[i][j], ratio, want[i][j], kept)
					}
				}
			}
			for k, v := range q.Params() {
				if k != "ratio" && p.Params()[k] != v {
					t.Errorf("parameter %s: %v with ratio, %v with budget %d", k, p.Params()[k], v, kept)
				}
			}
			// A new stream waits for its own prompt.
			r := tinyRunner(t, "tiny", 32)
			if err := p.Start(r); err != nil {
				t.Fatal(err)
			}
			if _, ok := p.Params()["budget"]; ok || p.Budget() != 0 {
				t.Errorf("a new stream: budget %d, parameters %v; want none until its prompt", p.Budget(), p.Params())
			}
			p.Prompt(200)
			if want := policies.RatioTokens(ratio, 200); p.Budget() != want {
				t.Errorf("a new stream's 200-token prompt: budget %d, want %d", p.Budget(), want)
			}
		})
	}
}

// A ratio without a prompt, or one that leaves the policy no usable budget,
// fails the stream's first forward with a message saying why.
func TestRatioErrors(t *testing.T) {
	toks := streamTokens(120, 4)
	for _, name := range budgeted {
		p, err := policies.New(name, policies.Params{"ratio": 0.5})
		if err != nil {
			t.Fatal(err)
		}
		_, err = runPolicy(t, p, toks[:5], 0)
		if err == nil || !strings.Contains(err.Error(), "policy "+name+": ratio 0.5 is a share of the prompt length, but no prompt was announced") {
			t.Errorf("%s with a ratio and no prompt: error %v", name, err)
		}
	}
	for _, c := range []struct {
		name  string
		ratio float64
		want  string
	}{
		{"streamingllm", 0.04, "policy streamingllm: ratio 0.04 of a 100-token prompt keeps 4 tokens: not more than the 4 sinks"},
		{"snapkv", 0.1, "policy snapkv: ratio 0.1 of a 100-token prompt keeps 10 tokens: fewer than the window's 32"},
		{"pyramidkv", 0.3, "policy pyramidkv: ratio 0.3 of a 100-token prompt keeps 30 tokens: fewer than the window's 32"},
	} {
		p, err := policies.New(c.name, policies.Params{"ratio": c.ratio})
		if err != nil {
			t.Fatal(err)
		}
		if _, err = runPolicy(t, p, toks, 100); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s ratio %v: error %v, want %q", c.name, c.ratio, err, c.want)
		}
	}
}

// Stats carry the tokens held and attended, and the budget in effect.
func TestStatsHeldAttended(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	layers, kvHeads := m.Config.Layers, m.Config.KVHeads
	toks := streamTokens(110, 5)
	for _, c := range []struct {
		name          string
		params        policies.Params
		held, maxHeld float64
		attended      float64
		maxAttd       int
	}{
		// 100 prompt tokens and 10 steps: the last step ends with 110.
		{"full", nil, 110, 110, 110, 110},
		{"window", policies.Params{"budget": 48}, 48, 48, 48, 48},
		{"tova", policies.Params{"budget": 48}, 48, 48, 49, 49}, // attends the new token before evicting
		{"h2o", policies.Params{"ratio": 0.5}, 50, 50, 50, 50},
		// snapkv keeps 64 of the prompt and grows by a token a step.
		{"snapkv", policies.Params{"budget": 64}, 74, 74, 74, 74},
		// quest holds everything, and attends 3 pages in its sparse layers:
		// 2 full ones and the last, which holds 110 mod 16 = 14 tokens; the
		// first 2 layers of the model attend in full.
		{"quest", policies.Params{"budget": 48, "page": 16}, 110, 110, float64(2*110+(layers-2)*(2*16+14)) / float64(layers), 110},
		{"oracle", policies.Params{"budget": 48}, 110, 110, 48, 48},
	} {
		p, err := policies.New(c.name, c.params)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := runPolicy(t, p, toks, 100); err != nil {
			t.Fatal(err)
		}
		st := p.Stats()
		if st.Held != c.held || float64(st.MaxHeld) != c.maxHeld {
			t.Errorf("%s %v: held %v (max %d) per layer and KV head (%d x %d), want %v (max %v)", c.name, c.params, st.Held, st.MaxHeld, layers, kvHeads, c.held, c.maxHeld)
		}
		if st.MeanAttended() != c.attended || st.MaxAttended != c.maxAttd {
			t.Errorf("%s %v: attended %v (max %d), want %v (max %d)", c.name, c.params, st.MeanAttended(), st.MaxAttended, c.attended, c.maxAttd)
		}
		if st.Budget != p.Budget() {
			t.Errorf("%s %v: stats budget %d, policy's %d", c.name, c.params, st.Budget, p.Budget())
		}
		if st.NotApplicable != "" {
			t.Errorf("%s %v: not applicable (%s) with a prompt", c.name, c.params, st.NotApplicable)
		}
	}
}

// SnapKV and PyramidKV act on a prompt: a stream without one runs as full
// attention, and their stats say so instead of passing for compression.
func TestSnapKVNoPromptNotApplicable(t *testing.T) {
	toks := streamTokens(60, 6)
	for _, name := range []string{"snapkv", "pyramidkv"} {
		p, err := policies.New(name, policies.Params{"budget": 40})
		if err != nil {
			t.Fatal(err)
		}
		got, err := runPolicy(t, p, toks, 0)
		if err != nil {
			t.Fatal(err)
		}
		if na := p.Stats().NotApplicable; na != policies.NotApplicableNoPrompt {
			t.Errorf("%s without a prompt: NotApplicable %q, want %q", name, na, policies.NotApplicableNoPrompt)
		}
		if st := p.Stats(); st.MaxHeld != 60 {
			t.Errorf("%s without a prompt: held %d, want all 60 (it ran as full attention)", name, st.MaxHeld)
		}
		full, _ := policies.New("full", nil)
		want, err := runPolicy(t, full, toks, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s without a prompt differs from full attention", name)
		}
		// A prompt makes it applicable.
		if _, err := runPolicy(t, p, toks, 50); err != nil {
			t.Fatal(err)
		}
		if na := p.Stats().NotApplicable; na != "" {
			t.Errorf("%s with a prompt: NotApplicable %q", name, na)
		}
	}
	// Policies that act in decode are applicable without a prompt.
	for _, name := range []string{"window", "h2o", "tova", "quest", "oracle", "random", "streamingllm"} {
		p, _ := policies.New(name, policies.Params{"budget": 40})
		if _, err := runPolicy(t, p, toks, 0); err != nil {
			t.Fatal(err)
		}
		if na := p.Stats().NotApplicable; na != "" {
			t.Errorf("%s without a prompt: NotApplicable %q", name, na)
		}
	}
}
