package results

// Charts that compare policies: a task's score against the budget (one line
// per policy), the Pareto front of KV memory held against the score, the
// latency and memory of each task on its own axis, the ranking of the
// policies per task, and the formatting of numbers, units and paths for
// people.

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/kvbench/kvbench/tasks"
)

// ---------------------------------------------------------------------------
// Numbers for people

// HumanNumber formats v with 3 significant digits, without an exponent
// between 0.001 and 10^15 (1234 → "1234", 0.012345 → "0.0123",
// 19980.4 → "19980"); "—" for NaN.
func HumanNumber(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case math.IsInf(v, 1):
		return "∞"
	case math.IsInf(v, -1):
		return "-∞"
	case v == 0:
		return "0"
	}
	a := math.Abs(v)
	if a >= 1000 && a < 1e15 {
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	}
	if a < 0.001 || a >= 1e15 {
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
	// 3 significant digits as a decimal.
	decimals := max(0, 2-int(math.Floor(math.Log10(a))))
	s := strconv.FormatFloat(v, 'f', decimals, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// HumanBytes formats a byte count in binary units with 3 significant
// digits: "512 B", "1.5 KiB", "20.3 MiB".
func HumanBytes(b float64) string {
	if math.IsNaN(b) {
		return "—"
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for math.Abs(b) >= 1024 && i < len(units)-1 {
		b /= 1024
		i++
	}
	if i == 0 {
		return strconv.FormatFloat(math.Round(b), 'f', 0, 64) + " B"
	}
	return HumanNumber(b) + " " + units[i]
}

// HumanMicros formats a duration given in microseconds: "850 ns", "16.2 µs",
// "3.45 ms", "1.2 s".
func HumanMicros(us float64) string {
	a := math.Abs(us)
	switch {
	case math.IsNaN(us):
		return "—"
	case us == 0:
		return "0 µs"
	case a < 1:
		return HumanNumber(us*1000) + " ns"
	case a < 1000:
		return HumanNumber(us) + " µs"
	case a < 1e6:
		return HumanNumber(us/1000) + " ms"
	}
	return HumanNumber(us/1e6) + " s"
}

// ShortPath shortens a file path for a table: relative to the working
// directory when below it, else its last two elements after "…/". Other
// text is returned as it is.
func ShortPath(p string) string {
	if !filepath.IsAbs(p) {
		return p
	}
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(rel, "..") {
			return rel
		}
	}
	dir, base := filepath.Split(filepath.Clean(p))
	parent := filepath.Base(dir)
	if parent == "/" || parent == "." || parent == "" {
		return p
	}
	return "…/" + parent + "/" + base
}

// ShortParams is FormatParams with file paths shortened (ShortPath).
func ShortParams(p map[string]any) string {
	q := make(map[string]any, len(p))
	for k, v := range p {
		if s, ok := v.(string); ok {
			v = ShortPath(s)
		}
		q[k] = v
	}
	return FormatParams(q)
}

// ---------------------------------------------------------------------------
// Synthetic models

// SyntheticNote is the report's warning when a model has random weights.
const SyntheticNote = "random weights: accuracy is meaningless, use for speed and memory only"

// SyntheticModels lists the models of the records that are synthetic
// (model path "synthetic:NAME"), sorted.
func SyntheticModels(records []Record) []string {
	var out []string
	for i := range records {
		r := &records[i]
		if strings.HasPrefix(r.ModelPath, "synthetic:") || strings.HasPrefix(r.Model, "synthetic:") {
			if !slices.Contains(out, r.Model) {
				out = append(out, r.Model)
			}
		}
	}
	sort.Strings(out)
	return out
}

// ---------------------------------------------------------------------------
// The score of a task

// chartScore is a task's headline score of a record: accuracy (or score),
// higher better; else perplexity, lower better.
func chartScore(r *Record) (v float64, name string, higher bool, ok bool) {
	if a, ok := plotAccuracy(r); ok {
		return a, "accuracy", true, true
	}
	for _, k := range []string{"ppl", "perplexity"} {
		if v, ok := r.Metrics[k]; ok && v > 0 && !math.IsInf(v, 0) {
			return v, "perplexity", false, true
		}
	}
	return 0, "", false, false
}

// chartLineLabel is a record's line in the charts against the budget: its
// policy and the parameters that do not set the budget (budget, ratio, and
// any whose value is the record's budget are left out).
func chartLineLabel(r *Record) string {
	if len(r.PolicyParams) == 0 || r.Budget <= 0 {
		return PlotLabel(r)
	}
	q := *r
	q.PolicyParams = map[string]any{}
	for k, v := range r.PolicyParams {
		if k == "budget" || k == "ratio" {
			continue
		}
		if f, ok := plotNumber(v); ok && f == float64(r.Budget) {
			continue
		}
		q.PolicyParams[k] = v
	}
	return PlotLabel(&q)
}

// chartTasks lists the tasks of the records with a score, in report order.
func chartTasks(records []Record) []string {
	var out []string
	for _, t := range reportTasks(records) {
		for i := range records {
			if records[i].Task == t && records[i].OK() {
				if _, _, _, ok := chartScore(&records[i]); ok {
					out = append(out, t)
					break
				}
			}
		}
	}
	return out
}

// chartNotApplicable lists the labels of a task's cells whose policy did
// not apply, with why ("snapkv capacity=64 (no prompt)").
func chartNotApplicable(task string, records []Record) []string {
	var out []string
	for i := range records {
		r := &records[i]
		if r.Task != task {
			continue
		}
		if na := NotApplicable(r); na != "" {
			if s := PlotLabel(r) + " (" + na + ")"; !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	sort.Strings(out)
	return out
}

// BudgetSeries is a task's score against the budget: one line per policy
// configuration (chartLineLabel), the mean over the cells of each budget;
// records without a budget (full) come back as flat, the mean of their
// cells, keyed by label. Failed cells and cells whose policy did not apply
// are left out.
func budgetSeries(task string, records []Record) (lines []plotSeries, flat map[string]float64, metric string, higher bool) {
	a := plotNewAgg()
	sums := map[string][]float64{}
	for i := range records {
		r := &records[i]
		if r.Task != task || !r.OK() || NotApplicable(r) != "" {
			continue
		}
		v, m, h, ok := chartScore(r)
		if !ok {
			continue
		}
		metric, higher = m, h
		if r.Budget > 0 {
			a.add(chartLineLabel(r), float64(r.Budget), v)
		} else {
			l := PlotLabel(r)
			sums[l] = append(sums[l], v)
		}
	}
	flat = map[string]float64{}
	for l, vs := range sums {
		flat[l] = plotMean(vs)
	}
	return a.result(plotMean), flat, metric, higher
}

// chartBudgetJob is the chart of a task's score against the budget, nil
// when no policy has a budget. A configuration without a budget (full) is a
// flat line across the budgets.
func chartBudgetJob(task string, records []Record, styler plotStyler, unique func(string) string) *plotJob {
	lines, flat, metric, higher := budgetSeries(task, records)
	if len(lines) == 0 {
		return nil
	}
	xmin, xmax, _, _, _ := plotSeriesRange(lines)
	for _, l := range slices.Sorted(mapsKeys(flat)) {
		lines = append(lines, plotSeries{Label: l + " (no budget)", Pts: []tasks.Point{{X: xmin, Y: flat[l]}, {X: xmax, Y: flat[l]}}})
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].Label < lines[j].Label })
	title := fmt.Sprintf("%s: %s vs KV budget", task, metric)
	ylabel := metric + " (mean over cells)"
	ch := plotLineChart{
		Title: title, XLabel: "KV budget (tokens kept or attended per KV head)", YLabel: ylabel,
		Series: lines, Styler: styler, LogXFactor: 7, XValueTicks: true, YFormat: HumanNumber,
	}
	if higher {
		ch.UnitY = true
	} else {
		ch.LogYFactor = 10
	}
	return &plotJob{Name: unique(PlotFileName(task) + "_vs_budget"), Title: title, Section: task, Fig: ch.figure()}
}

func mapsKeys(m map[string]float64) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// ParetoPoint is one configuration of a task: the KV memory it held (the
// mean over its cells of the most resident), its score, and whether no
// other configuration holds less or as much and scores better.
type ParetoPoint struct {
	Label  string
	Bytes  float64
	Score  float64
	Front  bool
	Higher bool // a higher score is better
}

// ParetoPoints are a task's configurations (successful cells whose policy
// applied), sorted by bytes then label, their front marked.
func ParetoPoints(task string, records []Record) []ParetoPoint {
	type acc struct{ bytes, score []float64 }
	by := map[string]*acc{}
	higher := true
	for i := range records {
		r := &records[i]
		if r.Task != task || !r.OK() || NotApplicable(r) != "" || r.KV.MaxResident <= 0 {
			continue
		}
		v, _, h, ok := chartScore(r)
		if !ok {
			continue
		}
		higher = h
		l := PlotLabel(r)
		if by[l] == nil {
			by[l] = &acc{}
		}
		by[l].bytes = append(by[l].bytes, float64(r.KV.MaxResident))
		by[l].score = append(by[l].score, v)
	}
	var pts []ParetoPoint
	for l, a := range by {
		pts = append(pts, ParetoPoint{Label: l, Bytes: plotMean(a.bytes), Score: plotMean(a.score), Higher: higher})
	}
	sort.Slice(pts, func(i, j int) bool {
		if pts[i].Bytes != pts[j].Bytes {
			return pts[i].Bytes < pts[j].Bytes
		}
		return pts[i].Label < pts[j].Label
	})
	better := func(a, b float64) bool {
		if higher {
			return a > b
		}
		return a < b
	}
	for i := range pts {
		pts[i].Front = true
		for j := range pts {
			if j == i {
				continue
			}
			// j dominates i: no more memory, no worse a score, better in one.
			le := pts[j].Bytes <= pts[i].Bytes && !better(pts[i].Score, pts[j].Score)
			if le && (pts[j].Bytes < pts[i].Bytes || better(pts[j].Score, pts[i].Score)) {
				pts[i].Front = false
				break
			}
		}
	}
	return pts
}

// chartParetoJob is the chart of a task's score against the KV memory held,
// one marker per configuration, the front joined by a grey line.
func chartParetoJob(task string, records []Record, styler plotStyler, unique func(string) string) *plotJob {
	pts := ParetoPoints(task, records)
	if len(pts) < 2 {
		return nil
	}
	_, metric, _, _ := chartScoreOfTask(task, records)
	var series []plotSeries
	var front plotter.XYs
	for _, p := range pts {
		series = append(series, plotSeries{Label: p.Label, Pts: []tasks.Point{{X: p.Bytes, Y: p.Score}}})
		if p.Front {
			front = append(front, plotter.XY{X: p.Bytes, Y: p.Score})
		}
	}
	sort.Slice(series, func(i, j int) bool { return series[i].Label < series[j].Label })
	title := fmt.Sprintf("%s: %s vs KV memory held (Pareto front dotted)", task, metric)
	ch := plotLineChart{
		Title: title, XLabel: "KV memory held (max resident, mean over cells)", YLabel: metric,
		Series: series, Styler: styler, YFormat: HumanNumber, LogXFactor: 7,
	}
	if pts[0].Higher {
		ch.UnitY = true
	} else {
		ch.LogYFactor = 10
	}
	xmin, xmax, ymin, ymax, _ := plotSeriesRange(series)
	logX := xmin > 0 && xmax/xmin > ch.LogXFactor
	logY := !ch.UnitY && ymin > 0 && ymax/ymin > ch.LogYFactor && ch.LogYFactor > 0
	if len(front) > 1 {
		for i := range front {
			if logX {
				front[i].X = math.Log10(front[i].X)
			}
			if logY {
				front[i].Y = math.Log10(front[i].Y)
			}
		}
		if l, err := plotter.NewLine(front); err == nil {
			l.Color = color.RGBA{0x66, 0x66, 0x66, 0xff}
			l.Width = vg.Points(1)
			l.Dashes = []vg.Length{vg.Points(1), vg.Points(2)}
			ch.Extra = []plot.Plotter{l}
		}
	}
	ch.XFormat = HumanBytes
	return &plotJob{Name: unique(PlotFileName(task) + "_pareto_memory"), Title: title, Section: task, Fig: ch.figure()}
}

// chartScoreOfTask is the score's name of a task's records.
func chartScoreOfTask(task string, records []Record) (float64, string, bool, bool) {
	for i := range records {
		if records[i].Task == task && records[i].OK() {
			if v, m, h, ok := chartScore(&records[i]); ok {
				return v, m, h, true
			}
		}
	}
	return 0, "score", true, false
}

// ---------------------------------------------------------------------------
// Cost per task

// costSeries is a task's latency (mean p50, µs) or memory (max resident,
// bytes) against context length. Cells whose policy did not apply are left
// out: their costs are full attention's.
func costSeries(task string, records []Record, memory bool) []plotSeries {
	a := plotNewAgg()
	for i := range records {
		r := &records[i]
		if r.Task != task || !r.OK() || NotApplicable(r) != "" {
			continue
		}
		n, ok := plotContext(r)
		if !ok {
			continue
		}
		switch {
		case memory && r.KV.MaxResident > 0:
			a.add(PlotLabel(r), n, float64(r.KV.MaxResident))
		case !memory && r.Latency.P50 > 0:
			a.add(PlotLabel(r), n, r.Latency.P50)
		}
	}
	if memory {
		return a.result(plotMax)
	}
	return a.result(plotMean)
}

// chartCostJobs are each task's latency and memory charts against context
// length: a task on its own axis.
func chartCostJobs(records []Record, styler plotStyler, unique func(string) string) []plotJob {
	var jobs []plotJob
	for _, task := range reportTasks(records) {
		if s := costSeries(task, records, false); len(s) > 0 {
			t := "Attention latency (p50) vs context length: " + task
			jobs = append(jobs, plotJob{unique("latency_vs_context_" + PlotFileName(task)), t, plotSectionCost, plotLineChart{
				Title: t, XLabel: "context length (tokens)", YLabel: "attention p50 per layer and step",
				Series: s, Styler: styler, LogXFactor: 7, LogYFactor: 10, XValueTicks: true, YFormat: HumanMicros,
			}.figure()})
		}
		if s := costSeries(task, records, true); len(s) > 0 {
			t := "KV memory (max resident) vs context length: " + task
			jobs = append(jobs, plotJob{unique("memory_vs_context_" + PlotFileName(task)), t, plotSectionCost, plotLineChart{
				Title: t, XLabel: "context length (tokens)", YLabel: "max resident KV",
				Series: s, Styler: styler, LogXFactor: 7, LogYFactor: 10, XValueTicks: true, YFormat: HumanBytes,
			}.figure()})
		}
	}
	return jobs
}

// ---------------------------------------------------------------------------
// Ranking

// RankRow is one policy configuration's place in a task's ranking.
type RankRow struct {
	Rank       int // 1 = best; 0 when not ranked (not applicable, or every cell failed)
	Label      string
	Score      float64 // mean over successful cells (NaN: none)
	Budget     int     // the configuration's budget (0: none or several)
	Held       float64 // mean tokens held per KV head (NaN: not recorded)
	KVBytes    float64 // mean max resident KV bytes (NaN: none)
	AttnP50    float64 // mean attention p50, µs (NaN: none)
	OK, Failed int
	NA         string // why the policy did not apply
}

// Ranking is a task's configurations, best first by its score (accuracy
// higher, perplexity lower; ties by less KV memory, then label), those not
// ranked last.
type Ranking struct {
	Task   string
	Metric string
	Higher bool
	Rows   []RankRow
}

// Rankings ranks the policy configurations of each task with a score, in
// report order.
func Rankings(records []Record) []Ranking {
	var out []Ranking
	for _, task := range chartTasks(records) {
		_, metric, higher, _ := chartScoreOfTask(task, records)
		type acc struct {
			score, held, bytes, p50 []float64
			budgets                 []int
			ok, failed              int
			na                      string
		}
		by := map[string]*acc{}
		var order []string
		for i := range records {
			r := &records[i]
			if r.Task != task {
				continue
			}
			l := PlotLabel(r)
			a := by[l]
			if a == nil {
				a = &acc{}
				by[l] = a
				order = append(order, l)
			}
			if !r.OK() {
				a.failed++
				continue
			}
			if na := NotApplicable(r); na != "" {
				a.na = na
				continue
			}
			a.ok++
			if v, _, _, ok := chartScore(r); ok {
				a.score = append(a.score, v)
			}
			if h, ok := plotNumber(r.Detail["tokens_held"]); ok {
				a.held = append(a.held, h)
			}
			if r.KV.MaxResident > 0 {
				a.bytes = append(a.bytes, float64(r.KV.MaxResident))
			}
			if r.Latency.P50 > 0 {
				a.p50 = append(a.p50, r.Latency.P50)
			}
			if r.Budget > 0 && !slices.Contains(a.budgets, r.Budget) {
				a.budgets = append(a.budgets, r.Budget)
			}
		}
		mean := func(v []float64) float64 {
			if len(v) == 0 {
				return math.NaN()
			}
			return plotMean(v)
		}
		rk := Ranking{Task: task, Metric: metric, Higher: higher}
		for _, l := range order {
			a := by[l]
			row := RankRow{Label: l, Score: mean(a.score), Held: mean(a.held), KVBytes: mean(a.bytes),
				AttnP50: mean(a.p50), OK: a.ok, Failed: a.failed, NA: a.na}
			if len(a.budgets) == 1 {
				row.Budget = a.budgets[0]
			}
			rk.Rows = append(rk.Rows, row)
		}
		sort.SliceStable(rk.Rows, func(i, j int) bool {
			a, b := &rk.Rows[i], &rk.Rows[j]
			ra, rb := !math.IsNaN(a.Score), !math.IsNaN(b.Score)
			if ra != rb {
				return ra
			}
			if ra && a.Score != b.Score {
				if higher {
					return a.Score > b.Score
				}
				return a.Score < b.Score
			}
			if a.KVBytes != b.KVBytes && !math.IsNaN(a.KVBytes) && !math.IsNaN(b.KVBytes) {
				return a.KVBytes < b.KVBytes
			}
			return a.Label < b.Label
		})
		// Equal scores share a rank.
		for i := range rk.Rows {
			r := &rk.Rows[i]
			if math.IsNaN(r.Score) {
				continue
			}
			r.Rank = i + 1
			if i > 0 && rk.Rows[i-1].Score == r.Score {
				r.Rank = rk.Rows[i-1].Rank
			}
		}
		out = append(out, rk)
	}
	return out
}

// RankingHeader is the ranking table's column names.
func RankingHeader(metric string) []string {
	return []string{"rank", "policy", metric, "budget", "tokens held", "KV held", "attn p50", "cells"}
}

// Cells formats a row for the ranking table.
func (r *RankRow) Cells(metric string) []string {
	rank := "—"
	if r.Rank > 0 {
		rank = strconv.Itoa(r.Rank)
	}
	score := HumanNumber(r.Score)
	switch {
	case r.NA != "" && r.OK == 0:
		score = "n/a (" + r.NA + ")"
	case math.IsNaN(r.Score) && r.Failed > 0:
		score = "failed"
	case metric == "accuracy" && !math.IsNaN(r.Score):
		score = HumanNumber(r.Score*100) + "%"
	}
	budget := "—"
	if r.Budget > 0 {
		budget = strconv.Itoa(r.Budget)
	}
	held := "—"
	if !math.IsNaN(r.Held) {
		held = HumanNumber(r.Held)
	}
	cells := fmt.Sprintf("%d ok", r.OK)
	if r.Failed > 0 {
		cells += fmt.Sprintf(", %d failed", r.Failed)
	}
	kv, p50 := "—", "—"
	if !math.IsNaN(r.KVBytes) {
		kv = HumanBytes(r.KVBytes)
	}
	if !math.IsNaN(r.AttnP50) {
		p50 = HumanMicros(r.AttnP50)
	}
	return []string{rank, r.Label, score, budget, held, kv, p50, cells}
}
