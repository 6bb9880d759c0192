package results

// The comparison as Markdown: its table of changes and its notes.

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"

	"github.com/kvbench/kvbench/tasks"
)

func fmtNum(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

func fmtChange(ch Change) string {
	switch {
	case math.IsNaN(ch.Delta):
		return "—"
	case ch.Delta == 0:
		return "0"
	case math.IsNaN(ch.Rel) || math.IsInf(ch.Rel, 0):
		return fmt.Sprintf("%+.4g", ch.Delta)
	case ch.Unit == tasks.UnitFraction:
		return fmt.Sprintf("%+.4g (%+.1f%%)", ch.Delta, 100*ch.Rel)
	}
	return fmt.Sprintf("%+.1f%%", 100*ch.Rel)
}

// Markdown writes the comparison: the verdict, the problems and regressions,
// a table of the changes per cell and metric (medians over the runs), then
// missing cells and notes.
func (c *Comparison) Markdown(w io.Writer) error {
	regs := c.Regressions()
	runs := fmt.Sprintf("%d BASE and %d NEW run(s)", c.BaseRuns, c.NewRuns)
	switch {
	case len(c.Problems) > 0:
		fmt.Fprintf(w, "**Gate failed: %d problem(s)", len(c.Problems))
		if len(regs) > 0 {
			fmt.Fprintf(w, " and %d regression(s)", len(regs))
		}
		fmt.Fprintf(w, "** (%d changes compared over %s).\n\n", len(c.Changes), runs)
		fmt.Fprintln(w, "Problems:")
		fmt.Fprintln(w)
		for _, p := range c.Problems {
			fmt.Fprintf(w, "- %s\n", mdEscape(p))
		}
		fmt.Fprintln(w)
	case len(regs) == 0:
		fmt.Fprintf(w, "**No regressions** (%d changes compared over %s).\n\n", len(c.Changes), runs)
	default:
		fmt.Fprintf(w, "**%d regression(s)** (%d changes compared over %s).\n\n", len(regs), len(c.Changes), runs)
	}
	if len(regs) > 0 {
		fmt.Fprintln(w, "Regressions:")
		fmt.Fprintln(w)
		for _, r := range regs {
			fmt.Fprintf(w, "- %s\n", mdEscape(r))
		}
		fmt.Fprintln(w)
	}
	if len(c.Changes) > 0 {
		t := tablewriter.NewTable(w,
			tablewriter.WithRenderer(renderer.NewMarkdown()),
			tablewriter.WithHeaderAutoFormat(tw.Off),
			tablewriter.WithHeaderAutoWrap(tw.WrapNone),
			tablewriter.WithRowAutoWrap(tw.WrapNone),
			tablewriter.WithHeaderAlignment(tw.AlignLeft),
			tablewriter.WithRowAlignmentConfig(tw.CellAlignment{PerColumn: []tw.Align{
				tw.AlignLeft, tw.AlignLeft, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignLeft, tw.AlignLeft}}),
		)
		t.Header([]string{"cell", "metric", "base", "new", "change", "p (Holm)", "verdict", "note"})
		for _, ch := range c.Changes {
			p := ""
			if !math.IsNaN(ch.PAdj) {
				p = fmt.Sprintf("%.3g", ch.PAdj)
			} else if !math.IsNaN(ch.P) {
				p = fmt.Sprintf("(%.3g)", ch.P)
			}
			verdict := ch.Verdict
			if ch.Regression {
				verdict = "**" + VerdictRegression + "**"
			}
			if err := t.Append([]string{mdEscape(ch.Cell), mdEscape(ch.Metric), fmtNum(ch.Base), fmtNum(ch.New),
				fmtChange(ch), p, verdict, mdEscape(ch.Note)}); err != nil {
				return err
			}
		}
		if err := t.Render(); err != nil {
			return err
		}
		fmt.Fprintln(w)
		if c.BaseRuns > 1 || c.NewRuns > 1 {
			fmt.Fprintf(w, "Values are medians over the runs; p is the exact Mann-Whitney p-value of the run-level values, Holm-adjusted over the %d gated timings (in parentheses: unadjusted, not gated).\n\n", c.TimingTests)
		}
	}
	if len(c.OnlyBase) > 0 {
		fmt.Fprintf(w, "Cells only in BASE (%d):\n\n", len(c.OnlyBase))
		for _, s := range c.OnlyBase {
			fmt.Fprintf(w, "- %s\n", mdEscape(s))
		}
		fmt.Fprintln(w)
	}
	if len(c.OnlyNew) > 0 {
		fmt.Fprintf(w, "Cells only in NEW (%d):\n\n", len(c.OnlyNew))
		for _, s := range c.OnlyNew {
			fmt.Fprintf(w, "- %s\n", mdEscape(s))
		}
		fmt.Fprintln(w)
	}
	if len(c.Notes) > 0 {
		fmt.Fprintln(w, "Notes:")
		fmt.Fprintln(w)
		for _, s := range c.Notes {
			fmt.Fprintf(w, "- %s\n", mdEscape(s))
		}
		fmt.Fprintln(w)
	}
	return nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
