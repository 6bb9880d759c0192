package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/results"
)

// A suite's budgets cross every budgeted policy (not full), with the
// entries' own lists and fine controls.
func TestSuiteBudgets(t *testing.T) {
	suite := `name: sweep
budgets: [64, 256]
models: [{name: m, path: synthetic:tiny}]
policies:
  - full
  - window
  - {name: streamingllm, sinks: 8}
  - {name: h2o, normalize: [false, true]}
  - quest
tasks:
  - {name: passkey, lengths: [512]}
`
	s, err := ParseSuite("sweep.yaml", []byte(suite))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(s.Budgets) != "[64 256]" || s.Ratios != nil {
		t.Errorf("budgets %v, ratios %v", s.Budgets, s.Ratios)
	}
	var got []string
	for _, c := range s.Cells() {
		got = append(got, strings.TrimSuffix(strings.TrimPrefix(c.Key, "m/"), "/passkey(lengths=512)"))
		p, err := policies.New(c.Policy, c.PolicyParams)
		if err != nil {
			t.Errorf("%s: %v", c.Key, err)
			continue
		}
		if b, ok := c.PolicyParams["budget"]; ok && p.Budget() != b {
			t.Errorf("%s: budget %d", c.Key, p.Budget())
		}
		if c.Policy == "streamingllm" && p.Params()["recent"] != p.Budget()-8 {
			t.Errorf("%s: the fine control sinks 8 is lost: %v", c.Key, p.Params())
		}
	}
	want := []string{
		"full",
		"window(budget=64)", "window(budget=256)",
		"streamingllm(budget=64,sinks=8)", "streamingllm(budget=256,sinks=8)",
		"h2o(budget=64,normalize=false)", "h2o(budget=256,normalize=false)",
		"h2o(budget=64,normalize=true)", "h2o(budget=256,normalize=true)",
		"quest(budget=64)", "quest(budget=256)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("cells\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Ratios the same way; a single value is a list of one.
	s, err = ParseSuite("sweep.yaml", []byte(strings.Replace(suite, "budgets: [64, 256]", "ratios: 0.25", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(s.Ratios) != "[0.25]" || s.Budgets != nil {
		t.Errorf("budgets %v, ratios %v", s.Budgets, s.Ratios)
	}
	got = got[:0]
	for _, c := range s.Cells() {
		got = append(got, strings.TrimSuffix(strings.TrimPrefix(c.Key, "m/"), "/passkey(lengths=512)"))
	}
	want = []string{"full", "window(ratio=0.25)", "streamingllm(ratio=0.25,sinks=8)",
		"h2o(normalize=false,ratio=0.25)", "h2o(normalize=true,ratio=0.25)", "quest(ratio=0.25)"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("cells\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The same cells as the lists written into each entry.
	written := `name: sweep
models: [{name: m, path: synthetic:tiny}]
policies:
  - full
  - {name: window, budget: [64, 256]}
tasks:
  - {name: passkey, lengths: [512]}
`
	a, err := ParseSuite("a.yaml", []byte(written))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseSuite("b.yaml", []byte(strings.Replace(strings.Replace(written, "{name: window, budget: [64, 256]}", "window", 1),
		"models:", "budgets: [64, 256]\nmodels:", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if ka, kb := fmt.Sprint(keys(a)), fmt.Sprint(keys(b)); ka != kb {
		t.Errorf("budgets crossing %s, written in the entry %s", kb, ka)
	}
}

func keys(s *Suite) []string {
	var out []string
	for _, c := range s.Cells() {
		out = append(out, c.Key)
	}
	return out
}

func TestSuiteBudgetsErrors(t *testing.T) {
	body := "models: [{name: m, path: synthetic:tiny}]\ntasks:\n  - {name: passkey, lengths: [512]}\n"
	for _, c := range []struct {
		name string
		yaml string // after name
		line int
		at   string
		want string
	}{
		{"both", "budgets: [64]\nratios: [0.5]\npolicies: [window]\n", 3, "ratios", "ratios: give budgets or ratios, not both (budgets is at suite.yaml:2:1)"},
		{"entry gives budget", "budgets: [64]\npolicies:\n  - {name: quest, budget: 32}\n", 4, "32", "policy quest: gives budget, and the suite's budgets (suite.yaml:2:1) cross every budgeted policy"},
		{"entry gives ratio", "budgets: [64]\npolicies:\n  - {name: quest, ratio: 0.5}\n", 4, "0.5", "policy quest: gives ratio"},
		{"zero budget", "budgets: [64, 0]\npolicies: [window]\n", 2, "0]", "budgets: 0 is out of range"},
		{"budget not integer", "budgets: [64.5]\npolicies: [window]\n", 2, "64.5", "budgets: want an integer"},
		{"empty budgets", "budgets: []\npolicies: [window]\n", 2, "[]", "budgets: needs at least one value"},
		{"ratio above 1", "ratios: [0.5, 2]\npolicies: [window]\n", 2, "2]", "ratios: 2 is out of range (0, 1]"},
		{"ratio zero", "ratios: [0]\npolicies: [window]\n", 2, "0]", "ratios: 0 is out of range"},
		{"ratio text", "ratios: [half]\npolicies: [window]\n", 2, "half", `ratios: want a number in (0, 1] (the share of the prompt kept), got string "half"`},
		// A fine control that contradicts a budget fails at that budget.
		{"contradiction", "budgets: [64, 128]\npolicies:\n  - {name: window, window: 64}\n", 4, "64}", "policy window: parameter window: 64 differs from budget 128"},
		{"snapkv below its window", "budgets: [16, 64]\npolicies: [snapkv]\n", 2, "16", "policy snapkv: parameter budget: 16 is less than window 32"},
		{"repeated configuration", "budgets: [64, 64]\npolicies: [window]\n", 3, "", "repeats the configuration"},
	} {
		t.Run(c.name, func(t *testing.T) {
			text := "name: t\n" + c.yaml + body
			_, err := ParseSuite("suite.yaml", []byte(text))
			if err == nil {
				t.Fatalf("no error for\n%s", text)
			}
			prefix := fmt.Sprintf("suite.yaml:%d:", c.line)
			if c.at != "" {
				col := strings.Index(strings.Split(text, "\n")[c.line-1], c.at) + 1
				if col == 0 {
					t.Fatalf("bad case: %q not on line %d", c.at, c.line)
				}
				prefix = fmt.Sprintf("suite.yaml:%d:%d: ", c.line, col)
			}
			if msg := err.Error(); !strings.Contains(msg, prefix) || !strings.Contains(msg, c.want) {
				t.Errorf("error %q\nwant %q ... %q", msg, prefix, c.want)
			}
		})
	}

	// Only the suite that is run crosses: an included file may not.
	dir := t.TempDir()
	inc := filepath.Join(dir, "common.yaml")
	if err := os.WriteFile(inc, []byte("budgets: [64]\npolicies: [window]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	main := filepath.Join(dir, "main.yaml")
	if err := os.WriteFile(main, []byte("name: t\ninclude: common.yaml\n"+body), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadSuite(main)
	if err == nil || !strings.Contains(err.Error(), "common.yaml:1:1: budgets: only the suite file that is run may give it") {
		t.Errorf("budgets in an included file: %v", err)
	}
	// The suite that is run crosses the included policies too.
	if err := os.WriteFile(inc, []byte("policies: [window, full]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(main, []byte("name: t\ninclude: common.yaml\nbudgets: [32]\n"+body), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSuite(main)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(keys(s)); got != "[m/window(budget=32)/passkey(lengths=512) m/full/passkey(lengths=512)]" {
		t.Errorf("included policies crossed: %s", got)
	}
}

// Records carry the tokens held and attended, the budget a ratio resolved
// to, and mark snapkv on a text streamed without a prompt not applicable.
func TestRunRecordsEffective(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	text, err := os.ReadFile("../configs/data/river.txt")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "text.txt"), text, 0o644); err != nil {
		t.Fatal(err)
	}
	suite := `name: effective
backend: cpu
models: [{name: tiny, path: "synthetic:tiny"}]
policies: [full, {name: snapkv, budget: 64}, {name: window, budget: 40}, {name: quest, ratio: 0.25}]
tasks:
  - {name: perplexity, text: text.txt, tokens: 60, bucket: 30}
  - {name: passkey, lengths: [256], trials: 1, decode_tail: 20}
`
	path := filepath.Join(dir, "suite.yaml")
	if err := os.WriteFile(path, []byte(suite), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSuite(path)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Run(context.Background(), s, RunOptions{Out: out, Quiet: true, Revision: "r", Binary: "b"})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := results.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]*results.Record{}
	for i := range recs {
		by[recs[i].Policy+"/"+recs[i].Task] = &recs[i]
	}
	// quest's ratio needs a prompt: its perplexity cell fails and says why.
	if sum.Failed != 1 || by["quest/perplexity"].OK() || !strings.Contains(by["quest/perplexity"].Error, "ratio 0.25 is a share of the prompt length, but no prompt was announced") {
		t.Fatalf("failed %d: %+v", sum.Failed, sum.FailedCells)
	}
	num := func(r *results.Record, key string) float64 {
		f, ok := r.Detail[key].(float64)
		if !ok {
			t.Errorf("%s/%s: detail %s = %v (%T)", r.Policy, r.Task, key, r.Detail[key], r.Detail[key])
		}
		return f
	}
	for key, c := range map[string]struct {
		held, attended float64 // at the last decode step
		budget         int
	}{
		"full/perplexity":   {60, 60, 0},
		"window/perplexity": {40, 40, 40},
		"snapkv/perplexity": {60, 60, 64}, // no prompt: it kept everything
		"window/passkey":    {40, 40, 40},
	} {
		r := by[key]
		if r == nil || !r.OK() {
			t.Fatalf("%s: %+v", key, r)
		}
		if h, a := num(r, DetailHeld), num(r, DetailAttended); h != c.held || a != c.attended || r.Budget != c.budget {
			t.Errorf("%s: held %v, attended %v, budget %d; want %v, %v, %d", key, h, a, r.Budget, c.held, c.attended, c.budget)
		}
	}
	if na := results.NotApplicable(by["snapkv/perplexity"]); na != "no prompt" {
		t.Errorf("snapkv on perplexity: not applicable %q, want %q", na, "no prompt")
	}
	for _, key := range []string{"snapkv/passkey", "full/perplexity", "window/perplexity"} {
		if na := results.NotApplicable(by[key]); na != "" {
			t.Errorf("%s: not applicable %q", key, na)
		}
	}
	// snapkv compressed passkey's prompt to 64 and then decoded; quest's
	// ratio resolved to a quarter of the prefilled prompt and attends it.
	pk, qk := by["snapkv/passkey"], by["quest/passkey"]
	if h := num(pk, DetailHeld); h <= 64 || h >= 200 {
		t.Errorf("snapkv passkey: held %v, want 64 plus the decoded tokens", h)
	}
	if qk.Budget <= 0 || qk.Budget >= 256/4 {
		t.Errorf("quest passkey: budget %d from ratio 0.25 of the prefilled prompt (256 less the decoded tail)", qk.Budget)
	}
	if h := num(qk, DetailHeld); h < 256 {
		t.Errorf("quest passkey: held %v, want the whole context", h)
	}
}

// describeEffective over several streams: the most held and attended, the
// budget when the streams agree, the list when ratios resolved differently,
// and not applicable only when no stream applied.
func TestDescribeEffective(t *testing.T) {
	st := func(held float64, maxHeld, budget int, na string) policies.Stats {
		return policies.Stats{Steps: 1, Held: held, MaxHeld: maxHeld, Budget: budget, NotApplicable: na,
			Attended: [][]int{{budget, budget}}, MaxAttended: budget}
	}
	e := &Engine{stats: []policies.Stats{st(40, 41, 40, ""), st(50, 52, 50, "")}}
	rec := &results.Record{}
	e.describeEffective(rec)
	if rec.Budget != 0 || fmt.Sprint(rec.Detail[DetailBudgets]) != "[40 50]" || rec.Detail[DetailHeld] != 50.0 ||
		rec.Detail[DetailHeldMax] != 52 || rec.Detail[DetailAttended] != 50.0 || rec.Detail[DetailAttendedMax] != 50 {
		t.Errorf("differing budgets: budget %d, detail %v", rec.Budget, rec.Detail)
	}
	e = &Engine{stats: []policies.Stats{st(40, 40, 40, "no prompt"), st(40, 40, 40, "no prompt")}}
	rec = &results.Record{}
	e.describeEffective(rec)
	if rec.Budget != 40 || rec.Detail[DetailNotApplicable] != "no prompt" || rec.Detail[DetailBudgets] != nil {
		t.Errorf("agreeing budgets, no prompt: budget %d, detail %v", rec.Budget, rec.Detail)
	}
	e = &Engine{stats: []policies.Stats{st(40, 40, 40, "no prompt"), st(40, 40, 40, "")}}
	rec = &results.Record{Budget: 64}
	e.describeEffective(rec)
	if rec.Budget != 64 || rec.Detail[DetailNotApplicable] != nil {
		t.Errorf("applied in one stream: budget %d, detail %v", rec.Budget, rec.Detail)
	}
	rec = &results.Record{}
	(&Engine{}).describeEffective(rec)
	if rec.Detail != nil {
		t.Errorf("no streams: detail %v", rec.Detail)
	}
}
