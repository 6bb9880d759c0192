package results

import (
	"fmt"
	"math"
	"testing"

	"github.com/kvbench/kvbench/tasks"
)

func sumRec(policy string, params map[string]any, budget int, task string, metrics map[string]float64) Record {
	return Record{Policy: policy, PolicyParams: params, Budget: budget, Task: task, Status: "ok", Metrics: metrics}
}

// TestBudgetTables pivots accuracy by policy and budget: cells average,
// the budget parameter leaves the row label, other parameters stay, full
// goes to "no budget", failed cells and tasks scored otherwise are left out.
func TestBudgetTables(t *testing.T) {
	acc := func(v float64) map[string]float64 { return map[string]float64{"accuracy": v} }
	recs := []Record{
		sumRec("full", nil, 0, "passkey", acc(1)),
		sumRec("quest", map[string]any{"budget": 64, "page": 16}, 64, "passkey", acc(1)),
		sumRec("quest", map[string]any{"budget": 64, "page": 16}, 64, "passkey", acc(0.5)),
		sumRec("quest", map[string]any{"budget": 256, "page": 16}, 256, "passkey", acc(1)),
		sumRec("tova", map[string]any{"cache": 256}, 256, "passkey", acc(0.25)),
		{Policy: "tova", PolicyParams: map[string]any{"cache": 64}, Budget: 64, Task: "passkey", Status: "failed"},
		sumRec("full", nil, 0, "perplexity", map[string]float64{"ppl": 10}),
	}
	tabs := BudgetTables(recs)
	if len(tabs) != 1 || tabs[0].Title != "passkey: accuracy vs KV budget" {
		t.Fatalf("tables %+v", tabs)
	}
	got := fmt.Sprint(tabs[0].Header, tabs[0].Rows)
	want := "[policy budget 64 budget 256 no budget] [[full — — 100%] [quest page=16 75% 100% —] [tova — 25% —]]"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if len(BudgetTables(recs[:1])) != 0 {
		t.Errorf("a table without any budget")
	}
}

// TestContextTable splits each perplexity curve at the model's trained
// context: exp of the mean bucket NLL on each side.
func TestContextTable(t *testing.T) {
	curve := func(ys ...float64) map[string][]tasks.Point {
		var p []tasks.Point
		for i, y := range ys {
			p = append(p, tasks.Point{X: float64(512 * (i + 1)), Y: y})
		}
		return map[string][]tasks.Point{"nll": p}
	}
	full := sumRec("full", nil, 0, "perplexity", map[string]float64{"ppl": 1})
	full.ModelContext, full.Curves = 1024, curve(2, 4, 6, 8)
	win := sumRec("window", map[string]any{"window": 64}, 64, "perplexity", map[string]float64{"ppl": 1})
	win.ModelContext, win.Curves = 1024, curve(3, 3, 3, 3)
	short := sumRec("h2o", nil, 64, "perplexity", map[string]float64{"ppl": 1})
	short.ModelContext, short.Curves = 4096, curve(1, 1) // ends within its context: left out
	tab, ok := ContextTable([]Record{full, win, short})
	if !ok {
		t.Fatal("no table")
	}
	want := [][]string{
		{"full", HumanNumber(math.Exp(3)), HumanNumber(math.Exp(7)), fmt.Sprintf("%+.0f%%", 100*(math.Exp(4)-1))},
		{"window window=64", HumanNumber(math.Exp(3)), HumanNumber(math.Exp(3)), "+0%"},
	}
	if fmt.Sprint(tab.Rows) != fmt.Sprint(want) || tab.Header[1] != "tokens 1-1024 (trained context)" {
		t.Errorf("got %v %v, want %v", tab.Header, tab.Rows, want)
	}
	if _, ok := ContextTable([]Record{short}); ok {
		t.Errorf("a table from a stream that never passed its context")
	}
}
