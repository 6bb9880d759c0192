package results

// Report writes a suite's report into a directory: report.md (Markdown),
// index.html (self-contained), a CSV file per task and the plots.

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ReportFiles lists what Report wrote.
type ReportFiles struct {
	Dir      string       // the report's directory
	Markdown string       // report.md
	HTML     string       // index.html
	CSV      []ReportCSV  // one per task
	Plots    []ReportPlot // in report order
	// Warnings are plots that could not be drawn (the report goes on
	// without them); they are also listed in the report.
	Warnings []string
}

// ReportCSV is the CSV file of one task.
type ReportCSV struct {
	Task string
	Path string // <task>.csv
}

// ReportPlot is one plot, written as PNG and SVG.
type ReportPlot struct {
	Name    string // file name without extension, e.g. "ppl_vs_tokens"
	Title   string
	Section string // the task it belongs to, or "cost" (latency, memory) or "recall"
	PNG     string // path of the PNG file
	SVG     string // path of the SVG file
}

// Paths lists every file written, report.md and index.html first.
func (f *ReportFiles) Paths() []string {
	out := []string{f.Markdown, f.HTML}
	for _, c := range f.CSV {
		out = append(out, c.Path)
	}
	for _, p := range f.Plots {
		out = append(out, p.PNG, p.SVG)
	}
	return out
}

// Report file names.
const (
	ReportMarkdownName = "report.md"
	ReportHTMLName     = "index.html"
)

// reportDoc is the content shared by report.md and index.html.
type reportDoc struct {
	Title    string
	Meta     [][2]string
	Sections []reportSection
	Warnings []string
	// Banners are shown above everything (random weights).
	Banners []string
	// Failed counts the failed cells; each section with failures is
	// linked from the top.
	Failed int
}

// reportSection is a task's section (table, CSV, plots, failures) or one of
// the sections of plots across tasks.
type reportSection struct {
	ID       string // HTML anchor
	Title    string
	Task     string // "" for the sections across tasks
	Intro    string
	Markdown string // the task's table (WriteMarkdown)
	CSVName  string // file name
	CSV      []byte
	Plots    []ReportPlot
	Failed   []reportFailure
	// Notes follow the intro (cells left out of the charts, and why).
	Notes []string
	// Rankings: the summary's tables, one per task.
	Rankings []Ranking
	// Tables: the summary's opening tables (accuracy vs budget, perplexity
	// past the trained context).
	Tables []SummaryTable
}

// reportFailedID is the anchor of a section's list of failed cells.
func reportFailedID(s *reportSection) string { return "failed-" + s.ID }

type reportFailure struct{ Cell, Reason string }

// Report writes report.md, index.html, <task>.csv for each task and the
// plots (PNG and SVG) into dir, creating it if needed. Plots without data
// are left out; a plot that cannot be drawn is reported as a warning.
func Report(dir string, records []Record) (*ReportFiles, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	files := &ReportFiles{
		Dir:      dir,
		Markdown: filepath.Join(dir, ReportMarkdownName),
		HTML:     filepath.Join(dir, ReportHTMLName),
	}

	// Plots.
	pngs := map[string][]byte{}
	for _, j := range plotPlan(records) {
		pngPath, svgPath, err := plotSave(dir, j.Name, j.Fig)
		if err != nil {
			files.Warnings = append(files.Warnings, err.Error())
			continue
		}
		data, err := os.ReadFile(pngPath)
		if err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		pngs[j.Name] = data
		files.Plots = append(files.Plots, ReportPlot{Name: j.Name, Title: j.Title, Section: j.Section, PNG: pngPath, SVG: svgPath})
	}

	doc := &reportDoc{Title: reportTitle(records), Meta: reportMeta(records), Warnings: files.Warnings}
	if ms := SyntheticModels(records); len(ms) > 0 {
		doc.Banners = append(doc.Banners, fmt.Sprintf("Model %s has %s.", strings.Join(ms, ", "), SyntheticNote))
	}
	for i := range records {
		if !records[i].OK() {
			doc.Failed++
		}
	}
	summarised := false
	if rk := Rankings(records); len(rk) > 0 {
		summarised = true
		s := reportSection{ID: "summary", Title: "Summary", Intro: reportSummaryIntro, Rankings: rk,
			Tables: summaryTables(records)}
		for _, p := range files.Plots {
			if summaryPlot(p, records) {
				s.Plots = append(s.Plots, p)
			}
		}
		doc.Sections = append(doc.Sections, s)
	}

	// A section per task, with its table and CSV file.
	csvNames := map[string]bool{}
	rulerDone := false
	for _, task := range reportTasks(records) {
		if !rulerDone && rulerRank(task) >= 0 {
			// RULER's summary comes before its tasks' own sections.
			rulerDone = true
			s, c, ok, err := rulerReportSection(dir, records, files.Plots, csvNames)
			if err != nil {
				return nil, fmt.Errorf("report: RULER summary: %w", err)
			}
			if ok {
				doc.Sections = append(doc.Sections, s)
				files.CSV = append(files.CSV, *c)
			}
		}
		var recs []Record
		for i := range records {
			if records[i].Task == task {
				recs = append(recs, records[i])
			}
		}
		title := task
		if title == "" {
			title = "(no task)"
		}
		s := reportSection{ID: "task-" + PlotFileName(title), Title: title, Task: task}
		var md bytes.Buffer
		if err := WriteMarkdown(&md, recs); err != nil {
			return nil, fmt.Errorf("report: table of %s: %w", title, err)
		}
		s.Markdown = md.String()
		var csvBuf bytes.Buffer
		if err := WriteCSV(&csvBuf, task, recs); err != nil {
			return nil, fmt.Errorf("report: CSV of %s: %w", title, err)
		}
		name := PlotFileName(title)
		for k := 2; csvNames[name]; k++ {
			name = fmt.Sprintf("%s-%d", PlotFileName(title), k)
		}
		csvNames[name] = true
		s.CSVName = name + ".csv"
		s.CSV = csvBuf.Bytes()
		path := filepath.Join(dir, s.CSVName)
		if err := os.WriteFile(path, s.CSV, 0o644); err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		files.CSV = append(files.CSV, ReportCSV{Task: task, Path: path})
		for _, p := range files.Plots {
			if p.Section == task && !(summarised && summaryPlot(p, records)) {
				s.Plots = append(s.Plots, p) // the summary's plots are shown there, once
			}
		}
		if na := chartNotApplicable(task, records); len(na) > 0 {
			s.Notes = append(s.Notes, "Not applicable, left out of the charts and the ranking: "+strings.Join(na, "; ")+".")
		}
		for i := range recs {
			if !recs[i].OK() {
				s.Failed = append(s.Failed, reportFailure{Cell: reportCellName(&recs[i]), Reason: reportReason(&recs[i])})
			}
		}
		doc.Sections = append(doc.Sections, s)
	}

	// Sections of plots across tasks.
	for _, x := range []struct{ section, id, title, intro string }{
		{plotSectionCost, "cost", "Latency and memory",
			"One chart per task. Attention-kernel latency is the median (p50) per layer and decoding step, averaged over the cells of a context length; " +
				"KV memory is the largest resident cache of any such cell. The context length is the task's length (tokens for perplexity). " +
				"Full attention is the black dashed line with rings, drawn on top: a policy with the same values shows through its gaps; " +
				"markers of lines with the same points are set side by side. Cells whose policy did not apply (snapkv and pyramidkv without a prompt) are left out."},
		{plotSectionRecall, "recall", "Attention recall",
			"Mean sampled attention recall (the share of full attention mass the policy's cache keeps) against the policy's nominal budget."},
	} {
		s := reportSection{ID: x.id, Title: x.title, Intro: x.intro}
		for _, p := range files.Plots {
			if p.Section == x.section {
				s.Plots = append(s.Plots, p)
			}
		}
		if len(s.Plots) > 0 {
			doc.Sections = append(doc.Sections, s)
		}
	}

	// Plots whose task has no section of its own (curves in records of
	// another task).
	placed := map[string]bool{}
	for _, s := range doc.Sections {
		for _, p := range s.Plots {
			placed[p.Name] = true
		}
	}
	other := reportSection{ID: "other-plots", Title: "Other plots"}
	for _, p := range files.Plots {
		if !placed[p.Name] {
			other.Plots = append(other.Plots, p)
		}
	}
	if len(other.Plots) > 0 {
		doc.Sections = append(doc.Sections, other)
	}

	var md bytes.Buffer
	writeReportMarkdown(&md, doc)
	if err := os.WriteFile(files.Markdown, md.Bytes(), 0o644); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	var html bytes.Buffer
	if err := writeReportHTML(&html, doc, pngs); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if err := os.WriteFile(files.HTML, html.Bytes(), 0o644); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	return files, nil
}

// reportSummaryIntro is the text above the ranking tables.
const reportSummaryIntro = "What each policy keeps of an accuracy task at each budget and what perplexity does past the model's trained context (when the run has them), " +
	"then each task's policy configurations ranked, best first: accuracy higher, perplexity lower, " +
	"the mean over the configuration's successful cells (ties: less KV memory first). " +
	"Tokens held is the mean per KV head at the end of decoding; KV held the mean of the cells' largest resident cache; " +
	"attn p50 the mean median attention time per layer and step."

// reportTasks lists the tasks of the records: perplexity, passkey and
// needle first, then RULER's tasks in RULER's order, the others sorted.
func reportTasks(records []Record) []string {
	seen := map[string]bool{}
	var ts []string
	for i := range records {
		if t := records[i].Task; !seen[t] {
			seen[t] = true
			ts = append(ts, t)
		}
	}
	rank := func(t string) int {
		switch {
		case t == plotTaskPerplexity:
			return 0
		case t == plotTaskPasskey:
			return 1
		case plotIsNeedleTask(t):
			return 2
		case rulerRank(t) >= 0:
			return 3
		}
		return 4
	}
	sort.Slice(ts, func(i, j int) bool {
		if ri, rj := rank(ts[i]), rank(ts[j]); ri != rj {
			return ri < rj
		}
		if rank(ts[i]) == 3 {
			return rulerRank(ts[i]) < rulerRank(ts[j])
		}
		return ts[i] < ts[j]
	})
	return ts
}

func reportTitle(records []Record) string {
	suites := reportDistinct(records, func(r *Record) string { return r.Suite })
	if len(suites) == 0 {
		return "kvbench report"
	}
	return "kvbench report: " + strings.Join(suites, ", ")
}

// reportDistinct lists the distinct non-empty values of a field, sorted.
func reportDistinct(records []Record, f func(*Record) string) []string {
	var out []string
	for i := range records {
		if v := strings.TrimSpace(f(&records[i])); v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

// reportMeta lists the run's environment: the distinct values of each
// field, the first start and the last end, and the cell counts.
func reportMeta(records []Record) [][2]string {
	var meta [][2]string
	add := func(name string, f func(*Record) string) {
		if v := reportDistinct(records, f); len(v) > 0 {
			meta = append(meta, [2]string{name, strings.Join(v, ", ")})
		}
	}
	add("Suite", func(r *Record) string { return r.Suite })
	add("Model", func(r *Record) string { return r.Model })
	add("Git revision", func(r *Record) string { return r.Meta.GitRevision })
	add("kvbench version", func(r *Record) string { return r.Meta.Version })
	add("Go version", func(r *Record) string { return r.Meta.GoVersion })
	add("Backend", func(r *Record) string { return r.Meta.Backend })
	add("Device", func(r *Record) string { return r.Meta.Device })
	add("NVRTC", func(r *Record) string { return r.Meta.NVRTC })
	add("Host", func(r *Record) string { return r.Meta.Host })
	add("Seed", func(r *Record) string {
		if r.Meta.Seed == 0 && r.Meta.Start.IsZero() {
			return ""
		}
		return strconv.FormatInt(r.Meta.Seed, 10)
	})
	var first, last time.Time
	for i := range records {
		m := &records[i].Meta
		if !m.Start.IsZero() && (first.IsZero() || m.Start.Before(first)) {
			first = m.Start
		}
		if !m.End.IsZero() && m.End.After(last) {
			last = m.End
		}
	}
	const layout = "2006-01-02 15:04:05 UTC"
	if !first.IsZero() {
		meta = append(meta, [2]string{"Started", first.UTC().Format(layout)})
	}
	if !last.IsZero() {
		v := last.UTC().Format(layout)
		if !first.IsZero() && last.After(first) {
			v += fmt.Sprintf(" (%s)", last.Sub(first).Round(time.Second))
		}
		meta = append(meta, [2]string{"Finished", v})
	}
	failed := 0
	for i := range records {
		if !records[i].OK() {
			failed++
		}
	}
	meta = append(meta, [2]string{"Cells", fmt.Sprintf("%d (%d ok, %d failed)", len(records), len(records)-failed, failed)})
	return meta
}

// reportCellName names a cell: its key, else its policy and task
// parameters.
func reportCellName(r *Record) string {
	if r.Cell != "" {
		return r.Cell
	}
	var ps []string
	for k, v := range r.TaskParams {
		ps = append(ps, k+"="+plotFormatAny(v))
	}
	sort.Strings(ps)
	return PlotLabel(r) + " / " + r.Task + "(" + strings.Join(ps, " ") + ")"
}

func reportReason(r *Record) string {
	if e := strings.TrimSpace(r.Error); e != "" {
		return e
	}
	if r.Status == "" {
		return "no status"
	}
	return "status " + r.Status
}

// reportMDCode writes s as a Markdown code span on one line.
func reportMDCode(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	fence := "`"
	for strings.Contains(s, fence) {
		fence += "`"
	}
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") {
		s = " " + s + " "
	}
	return fence + s + fence
}

// reportMDText escapes text for a Markdown table cell or heading.
func reportMDText(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	r := strings.NewReplacer(`\`, `\\`, "|", `\|`, "*", `\*`, "_", `\_`, "`", "\\`", "[", `\[`, "]", `\]`, "<", "&lt;", ">", "&gt;")
	return r.Replace(s)
}

func writeReportMarkdown(w io.Writer, doc *reportDoc) {
	fmt.Fprintf(w, "# %s\n\n", reportMDText(doc.Title))
	for _, b := range doc.Banners {
		fmt.Fprintf(w, "> **Note:** %s\n\n", reportMDText(b))
	}
	if doc.Failed > 0 {
		fmt.Fprintf(w, "> **%d failed cell(s):**", doc.Failed)
		for _, s := range doc.Sections {
			if len(s.Failed) > 0 {
				fmt.Fprintf(w, " [%s: %d](#failed-cells-%s)", reportMDText(s.Title), len(s.Failed), reportMDAnchor(s.Title))
			}
		}
		fmt.Fprintf(w, "\n\n")
	}
	fmt.Fprintf(w, "## Run\n\n| | |\n|---|---|\n")
	for _, m := range doc.Meta {
		fmt.Fprintf(w, "| %s | %s |\n", reportMDText(m[0]), reportMDText(m[1]))
	}
	fmt.Fprintln(w)
	if len(doc.Sections) == 0 {
		fmt.Fprintf(w, "No records.\n")
		return
	}
	fmt.Fprintf(w, "## Contents\n\n")
	for _, s := range doc.Sections {
		fmt.Fprintf(w, "- [%s](#%s)\n", reportMDText(s.Title), reportMDAnchor(s.Title))
	}
	fmt.Fprintln(w)
	for _, s := range doc.Sections {
		fmt.Fprintf(w, "## %s\n\n", reportMDText(s.Title))
		if s.Intro != "" {
			fmt.Fprintf(w, "%s\n\n", s.Intro)
		}
		for _, n := range s.Notes {
			fmt.Fprintf(w, "%s\n\n", reportMDText(n))
		}
		for _, t := range s.Tables {
			writeSummaryTableMarkdown(w, &t)
		}
		for _, rk := range s.Rankings {
			writeRankingMarkdown(w, &rk)
		}
		if s.Markdown != "" {
			fmt.Fprintf(w, "%s\n", strings.TrimRight(s.Markdown, "\n")+"\n")
		}
		if s.CSVName != "" {
			fmt.Fprintf(w, "CSV: [%s](%s)\n\n", reportMDText(s.CSVName), s.CSVName)
		}
		for _, p := range s.Plots {
			png, svg := filepath.Base(p.PNG), filepath.Base(p.SVG)
			fmt.Fprintf(w, "### %s\n\n![%s](%s)\n\n[PNG](%s) · [SVG](%s)\n\n", reportMDText(p.Title), reportMDText(p.Title), png, png, svg)
		}
		if len(s.Failed) > 0 {
			fmt.Fprintf(w, "### Failed cells: %s\n\n", reportMDText(s.Title))
			for _, f := range s.Failed {
				fmt.Fprintf(w, "- %s: %s\n", reportMDCode(f.Cell), reportMDCode(f.Reason))
			}
			fmt.Fprintln(w)
		}
	}
	if len(doc.Warnings) > 0 {
		fmt.Fprintf(w, "## Warnings\n\n")
		for _, m := range doc.Warnings {
			fmt.Fprintf(w, "- %s\n", reportMDCode(m))
		}
		fmt.Fprintln(w)
	}
}

// reportMDAnchor is the anchor GitHub gives a heading.
func reportMDAnchor(title string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(title) {
		switch {
		case c == ' ':
			b.WriteByte('-')
		case c == '-' || c == '_' || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'):
			b.WriteRune(c)
		}
	}
	return b.String()
}

// writeRankingMarkdown writes a task's ranking as a Markdown table.
func writeSummaryTableMarkdown(w io.Writer, t *SummaryTable) {
	fmt.Fprintf(w, "### %s\n\n", reportMDText(t.Title))
	if t.Note != "" {
		fmt.Fprintf(w, "%s\n\n", reportMDText(t.Note))
	}
	cells := func(row []string) string {
		out := make([]string, len(row))
		for i, c := range row {
			out[i] = reportMDText(c)
		}
		return strings.Join(out, " | ")
	}
	fmt.Fprintf(w, "| %s |\n|%s\n", cells(t.Header), strings.Repeat("---|", len(t.Header)))
	for _, r := range t.Rows {
		fmt.Fprintf(w, "| %s |\n", cells(r))
	}
	fmt.Fprintln(w)
}

func writeRankingMarkdown(w io.Writer, rk *Ranking) {
	fmt.Fprintf(w, "### %s\n\n", reportMDText(rk.Task))
	h := RankingHeader(rk.Metric)
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(h, " | "), strings.Repeat("---|", len(h)))
	for i := range rk.Rows {
		cells := rk.Rows[i].Cells(rk.Metric)
		for j := range cells {
			cells[j] = reportMDText(cells[j])
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	fmt.Fprintln(w)
}
