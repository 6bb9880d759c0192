package results

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// SummaryTable is one of the small tables that open a report: what a policy
// keeps of an accuracy task at each budget, and what perplexity does within
// and past the model's trained context.
type SummaryTable struct {
	Title  string
	Note   string
	Header []string
	Rows   [][]string
}

// BudgetTables returns, for each task scored by accuracy, a table of the
// mean accuracy of each policy (its parameters other than the budget, as the
// charts against the budget label it) at each budget: the columns are the
// budgets, smallest first, and "no budget" for policies that keep everything.
func BudgetTables(records []Record) []SummaryTable {
	var out []SummaryTable
	for _, task := range chartTasks(records) {
		lines, flat, metric, _ := budgetSeries(task, records)
		if metric != "accuracy" || len(lines) == 0 {
			continue
		}
		at := map[string]map[float64]float64{}
		var budgets []float64
		for _, l := range lines {
			at[l.Label] = map[float64]float64{}
			for _, p := range l.Pts {
				at[l.Label][p.X] = p.Y
				if !slices.Contains(budgets, p.X) {
					budgets = append(budgets, p.X)
				}
			}
		}
		slices.Sort(budgets)
		header := []string{"policy"}
		for _, b := range budgets {
			header = append(header, "budget "+strconv.Itoa(int(b)))
		}
		if len(flat) > 0 {
			header = append(header, "no budget")
		}
		t := SummaryTable{Title: task + ": accuracy vs KV budget", Header: header,
			Note: "Mean accuracy of each policy's cells at each budget (tokens kept per KV head); — where the policy did not run at that budget."}
		var done []string
		for i := range records { // rows in the order the suite ran them
			r := &records[i]
			l := PlotLabel(r)
			if r.Budget > 0 {
				l = chartLineLabel(r)
			}
			_, isFlat := flat[l]
			if r.Task != task || slices.Contains(done, l) || at[l] == nil && !isFlat {
				continue
			}
			done = append(done, l)
			row := []string{l}
			for _, b := range budgets {
				row = append(row, percentOr(at[l], b))
			}
			if len(flat) > 0 {
				row = append(row, percentOr(flat, l))
			}
			t.Rows = append(t.Rows, row)
		}
		out = append(out, t)
	}
	return out
}

// percentOr formats m[k] as a percentage, or — when absent.
func percentOr[K comparable](m map[K]float64, k K) string {
	if v, ok := m[k]; ok {
		return HumanNumber(100*v) + "%"
	}
	return "—"
}

// ContextTable returns perplexity within the model's trained context and
// past it, per policy configuration, from the per-bucket NLL curves of the
// records whose text runs past the context the model was trained for; ok is
// false when no record does.
func ContextTable(records []Record) (SummaryTable, bool) {
	type acc struct{ within, past []float64 }
	by := map[string]*acc{}
	var order []string
	ctx := 0
	for i := range records {
		r := &records[i]
		pts := r.Curves["nll"]
		if !r.OK() || r.ModelContext <= 0 || len(pts) == 0 || pts[len(pts)-1].X <= float64(r.ModelContext) {
			continue
		}
		if ctx != 0 && ctx != r.ModelContext {
			ctx = -1 // models of different contexts: the header names none
		} else if ctx == 0 {
			ctx = r.ModelContext
		}
		l := PlotLabel(r)
		a := by[l]
		if a == nil {
			a = &acc{}
			by[l] = a
			order = append(order, l)
		}
		for _, p := range pts {
			if math.IsNaN(p.Y) || math.IsInf(p.Y, 0) {
				continue
			}
			if p.X <= float64(r.ModelContext) {
				a.within = append(a.within, p.Y)
			} else {
				a.past = append(a.past, p.Y)
			}
		}
	}
	if len(order) == 0 {
		return SummaryTable{}, false
	}
	within, past := "within the trained context", "past it"
	if ctx > 0 {
		within, past = fmt.Sprintf("tokens 1-%d (trained context)", ctx), fmt.Sprintf("past token %d", ctx)
	}
	t := SummaryTable{Title: "Perplexity within and past the trained context", Header: []string{"policy", within, past, "change"},
		Note: "exp of the mean per-bucket NLL of the stream's buckets ending within the model's trained context (max_position_embeddings) and of those past it. Full attention meets positions it never saw past its context; a bounded window with sinks keeps every distance it attends within what it was trained on."}
	for _, l := range order {
		a := by[l]
		w, p := math.NaN(), math.NaN()
		if len(a.within) > 0 {
			w = math.Exp(plotMean(a.within))
		}
		if len(a.past) > 0 {
			p = math.Exp(plotMean(a.past))
		}
		change := "—"
		if !math.IsNaN(w) && !math.IsNaN(p) {
			change = fmt.Sprintf("%+.0f%%", 100*(p/w-1))
		}
		t.Rows = append(t.Rows, []string{l, HumanNumber(w), HumanNumber(p), change})
	}
	return t, true
}

// summaryTables are the tables the report's summary opens with.
func summaryTables(records []Record) []SummaryTable {
	out := BudgetTables(records)
	if t, ok := ContextTable(records); ok {
		out = append(out, t)
	}
	return out
}

// summaryPlot reports whether a plot belongs in the summary too: the
// perplexity curve over tokens and each accuracy task's score vs budget.
func summaryPlot(p ReportPlot, records []Record) bool {
	if p.Name == "ppl_vs_tokens" {
		return true
	}
	if !strings.HasSuffix(p.Name, "_vs_budget") {
		return false
	}
	_, metric, _, ok := chartScoreOfTask(p.Section, records)
	return ok && metric == "accuracy" && p.Name == PlotFileName(p.Section)+"_vs_budget"
}
