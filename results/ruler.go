package results

// RULER's summary (TASKS.md): a task × length table of string_match_all
// scores per policy configuration, with the average over tasks, as a
// Markdown table, a CSV file, a heatmap per configuration and the average
// against context length.

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"

	"github.com/kvbench/kvbench/tasks"
)

// RulerAverage is the name of the row that averages a grid's tasks.
const RulerAverage = "average"

// plotSectionRuler is the report section of RULER's summary.
const plotSectionRuler = "ruler"

// rulerRank is a RULER task's place in RULER's order, or -1.
func rulerRank(task string) int { return slices.Index(tasks.RulerTaskNames(), task) }

// RulerGrid is the task × length grid of one policy configuration over
// RULER's tasks. Rows are the tasks present in the records, in RULER's
// order, then RulerAverage when there are two or more; Cols are lengths,
// shortest first; Cells[row][col] holds the mean score of the cell's
// records (over depths and repeated runs). The average of a length is the
// mean over the tasks, defined only when every task has a score there.
type RulerGrid struct {
	Label string // PlotLabel, with "model / " in front when the records hold several models
	Rows  []string
	Cols  []float64
	Cells [][]HeatCell
}

// rulerLabel names a record's configuration in RULER's summary.
func rulerLabel(r *Record, models int) string {
	if models > 1 {
		return r.Model + " / " + PlotLabel(r)
	}
	return PlotLabel(r)
}

// RulerGrids builds the grids of RULER's tasks, one per configuration in
// label order, all over the same tasks and lengths; nil without RULER
// records. Records without a numeric length are left out; a failed record
// counts in its cell's Failed.
func RulerGrids(records []Record) []RulerGrid {
	models := map[string]bool{}
	for i := range records {
		if rulerRank(records[i].Task) >= 0 {
			models[records[i].Model] = true
		}
	}
	type key struct {
		label, task string
		n           float64
	}
	cells := map[key]*HeatCell{}
	var labels, taskNames []string
	var lengths []float64
	for i := range records {
		r := &records[i]
		if rulerRank(r.Task) < 0 {
			continue
		}
		n, ok := plotParam(r, "length")
		if !ok {
			continue
		}
		score, okScore := r.Metrics["score"]
		if r.OK() && (!okScore || math.IsNaN(score) || math.IsInf(score, 0)) {
			continue
		}
		l := rulerLabel(r, len(models))
		k := key{l, r.Task, n}
		c := cells[k]
		if c == nil {
			c = &HeatCell{}
			cells[k] = c
		}
		if r.OK() {
			c.Value += score
			c.N++
		} else {
			c.Failed++
		}
		if !slices.Contains(labels, l) {
			labels = append(labels, l)
		}
		if !slices.Contains(taskNames, r.Task) {
			taskNames = append(taskNames, r.Task)
		}
		if !slices.Contains(lengths, n) {
			lengths = append(lengths, n)
		}
	}
	if len(labels) == 0 {
		return nil
	}
	sort.Strings(labels)
	sort.Slice(taskNames, func(i, j int) bool { return rulerRank(taskNames[i]) < rulerRank(taskNames[j]) })
	sort.Float64s(lengths)
	var out []RulerGrid
	for _, l := range labels {
		g := RulerGrid{Label: l, Rows: slices.Clone(taskNames), Cols: lengths}
		for _, task := range taskNames {
			row := make([]HeatCell, len(lengths))
			for j, n := range lengths {
				row[j] = HeatCell{Value: math.NaN()}
				if c := cells[key{l, task, n}]; c != nil {
					row[j] = *c
					row[j].Value = math.NaN()
					if c.N > 0 {
						row[j].Value = c.Value / float64(c.N)
					}
				}
			}
			g.Cells = append(g.Cells, row)
		}
		if len(taskNames) > 1 {
			avg := make([]HeatCell, len(lengths))
			for j := range lengths {
				sum, n := 0.0, 0
				for _, row := range g.Cells {
					if row[j].N > 0 {
						sum += row[j].Value
						n++
					}
				}
				avg[j] = HeatCell{Value: math.NaN()}
				if n == len(taskNames) {
					avg[j] = HeatCell{Value: sum / float64(n), N: n}
				}
			}
			g.Rows = append(g.Rows, RulerAverage)
			g.Cells = append(g.Cells, avg)
		}
		out = append(out, g)
	}
	return out
}

// rulerPercent formats a score as RULER reports it: a percentage with one
// decimal; "failed" for a cell with only failed records, "" for none.
func rulerPercent(c HeatCell) string {
	switch {
	case c.N == 0 && c.Failed > 0:
		return "failed"
	case c.N == 0 || math.IsNaN(c.Value):
		return ""
	}
	return strconv.FormatFloat(c.Value*100, 'f', 1, 64)
}

// rulerRowMean is the mean of a row's defined cells, over lengths.
func rulerRowMean(row []HeatCell) HeatCell {
	sum, n := 0.0, 0
	for _, c := range row {
		if c.N > 0 && !math.IsNaN(c.Value) {
			sum += c.Value
			n++
		}
	}
	if n == 0 || n < len(row) {
		return HeatCell{Value: math.NaN()}
	}
	return HeatCell{Value: sum / float64(n), N: n}
}

// rulerTableRows is RULER's summary as rows of text: a header (policy,
// task, each length, mean over lengths), then a row per configuration and
// task.
func rulerTableRows(grids []RulerGrid) [][]string {
	if len(grids) == 0 {
		return nil
	}
	head := []string{"policy", "task"}
	for _, n := range grids[0].Cols {
		head = append(head, plotFormatNum(n))
	}
	head = append(head, "mean")
	rows := [][]string{head}
	for _, g := range grids {
		for i, task := range g.Rows {
			row := []string{g.Label, task}
			for _, c := range g.Cells[i] {
				row = append(row, rulerPercent(c))
			}
			rows = append(rows, append(row, rulerPercent(rulerRowMean(g.Cells[i]))))
		}
	}
	return rows
}

// WriteRulerMarkdown writes RULER's summary of records as a Markdown table:
// scores in percent per configuration, task and length (mean over trials
// and depths), the average over tasks and the mean over lengths. It writes
// nothing when the records hold no RULER task.
func WriteRulerMarkdown(w io.Writer, records []Record) error {
	rows := rulerTableRows(RulerGrids(records))
	if len(rows) == 0 {
		return nil
	}
	var b bytes.Buffer
	for i, row := range rows {
		b.WriteString("|")
		for j, c := range row {
			if j >= 2 && i > 0 {
				fmt.Fprintf(&b, " %s |", c)
			} else {
				fmt.Fprintf(&b, " %s |", reportMDText(c))
			}
		}
		b.WriteString("\n")
		if i == 0 {
			b.WriteString("|---|---|")
			for range row[2:] {
				b.WriteString("---:|")
			}
			b.WriteString("\n")
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// WriteRulerCSV writes RULER's summary of records as CSV, the same rows as
// WriteRulerMarkdown; nothing when the records hold no RULER task.
func WriteRulerCSV(w io.Writer, records []Record) error {
	rows := rulerTableRows(RulerGrids(records))
	if len(rows) == 0 {
		return nil
	}
	cw := csv.NewWriter(w)
	if err := cw.WriteAll(rows); err != nil {
		return fmt.Errorf("RULER CSV: %w", err)
	}
	return nil
}

// rulerHeatFigure draws a grid: tasks on rows (RULER's order from the top,
// the average last), lengths on columns.
func rulerHeatFigure(g RulerGrid, title string) plotFigure {
	hg := HeatGrid{Task: "ruler", Label: g.Label, Cols: g.Cols, Cells: g.Cells}
	for i := range g.Rows {
		hg.Rows = append(hg.Rows, float64(i))
	}
	return plotHeatFigureRows(hg, title, "task", "score", g.Rows)
}

// rulerAverageSeries is each configuration's average over tasks per length,
// where it is defined.
func rulerAverageSeries(grids []RulerGrid) []plotSeries {
	var out []plotSeries
	for _, g := range grids {
		if len(g.Rows) == 0 || g.Rows[len(g.Rows)-1] != RulerAverage {
			continue
		}
		s := plotSeries{Label: g.Label}
		for j, c := range g.Cells[len(g.Cells)-1] {
			if c.N > 0 {
				s.Pts = append(s.Pts, tasks.Point{X: g.Cols[j], Y: c.Value})
			}
		}
		if len(s.Pts) > 0 {
			out = append(out, s)
		}
	}
	return out
}

// rulerPlotJobs are the figures of RULER's summary: the average score
// against context length, and a heatmap per configuration.
func rulerPlotJobs(records []Record, styler plotStyler, unique func(string) string) []plotJob {
	grids := RulerGrids(records)
	var jobs []plotJob
	if s := rulerAverageSeries(grids); len(s) > 0 {
		t := "RULER: average score over tasks vs context length"
		jobs = append(jobs, plotJob{unique("ruler_average"), t, plotSectionRuler, plotLineChart{
			Title: t, XLabel: "context length (tokens)", YLabel: "score (mean over tasks)",
			Series: s, Styler: styler, UnitY: true, LogXFactor: 7, XValueTicks: true,
		}.figure()})
	}
	for _, g := range grids {
		t := "RULER: " + g.Label
		jobs = append(jobs, plotJob{unique("ruler_heatmap_" + PlotFileName(g.Label)), t, plotSectionRuler, rulerHeatFigure(g, t)})
	}
	return jobs
}

// rulerIntro is the text above RULER's table in the report.
const rulerIntro = "RULER's synthetic tasks: string_match_all in percent (the share of expected values found in the answer), " +
	"the mean over trials and depths of each task and context length; average is the mean over tasks " +
	"(shown where every task has a score), mean the mean over lengths. The QA tasks (qa_1, qa_2) need downloaded data and are not run."

// rulerReportSection is the report's RULER section: the summary table, as
// Markdown and as a CSV file written into dir (its name made unique among
// names, which it joins), and the plots of the RULER section. It returns
// false when the records hold no RULER task.
func rulerReportSection(dir string, records []Record, plots []ReportPlot, names map[string]bool) (reportSection, *ReportCSV, bool, error) {
	if len(RulerGrids(records)) == 0 {
		return reportSection{}, nil, false, nil
	}
	s := reportSection{ID: "ruler", Title: "RULER", Intro: rulerIntro}
	var md, data bytes.Buffer
	if err := WriteRulerMarkdown(&md, records); err != nil {
		return s, nil, false, err
	}
	if err := WriteRulerCSV(&data, records); err != nil {
		return s, nil, false, err
	}
	s.Markdown, s.CSV = md.String(), data.Bytes()
	name := "ruler"
	for k := 2; names[name]; k++ {
		name = fmt.Sprintf("ruler-%d", k)
	}
	names[name] = true
	s.CSVName = name + ".csv"
	path := filepath.Join(dir, s.CSVName)
	if err := os.WriteFile(path, s.CSV, 0o644); err != nil {
		return s, nil, false, err
	}
	for _, p := range plots {
		if p.Section == plotSectionRuler {
			s.Plots = append(s.Plots, p)
		}
	}
	return s, &ReportCSV{Task: "ruler", Path: path}, true, nil
}
