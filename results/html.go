package results

// index.html: one self-contained page (inline CSS, PNG plots embedded as
// data: URIs) with every table and every plot.

import (
	"bytes"
	"encoding/base64"
	"encoding/csv"
	"fmt"
	"html"
	"io"
	"strconv"
	"strings"
)

const reportCSS = `
:root { color-scheme: light; }
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Liberation Sans", sans-serif;
  margin: 0; padding: 0 2rem 3rem; color: #1d1d1f; background: #fff; line-height: 1.45; max-width: 1400px; }
h1 { font-size: 1.8rem; margin: 1.5rem 0 0.5rem; }
h2 { font-size: 1.4rem; margin: 2.2rem 0 0.6rem; padding-bottom: 0.25rem; border-bottom: 2px solid #e4e4e7; }
h3 { font-size: 1.1rem; margin: 1.4rem 0 0.5rem; }
nav { background: #f6f7f9; border: 1px solid #e4e4e7; border-radius: 6px; padding: 0.6rem 1.2rem; display: inline-block; }
nav h2 { border: 0; margin: 0.2rem 0; font-size: 1.1rem; }
nav ul { margin: 0.2rem 0; padding-left: 1.2rem; }
a { color: #1f5fa8; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.88rem; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #d4d4d8; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f0f1f4; font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafafb; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.failed { color: #b3261e; font-weight: 600; }
table.meta th { text-align: right; }
.figs { display: flex; flex-wrap: wrap; gap: 1.2rem; }
figure { margin: 0.5rem 0; border: 1px solid #e4e4e7; border-radius: 6px; padding: 0.5rem; background: #fff; max-width: 100%; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { font-size: 0.9rem; color: #52525b; margin-top: 0.3rem; }
ul.failures li { margin: 0.2rem 0; }
code { font-family: "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace; font-size: 0.85rem;
  background: #f4f4f5; padding: 0.05rem 0.3rem; border-radius: 3px; }
.note { color: #52525b; }
.banner { background: #fff4e5; border: 1px solid #f0b35a; border-radius: 6px; padding: 0.5rem 0.9rem; }
.banner.failed-top { background: #fdecea; border-color: #e08a84; }
table.summary td:first-child { text-align: right; }
`

// writeReportHTML writes the page; pngs holds each plot's PNG by name.
func writeReportHTML(w io.Writer, doc *reportDoc, pngs map[string][]byte) error {
	var b bytes.Buffer
	e := html.EscapeString
	fmt.Fprintf(&b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n")
	fmt.Fprintf(&b, "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n")
	fmt.Fprintf(&b, "<title>%s</title>\n<style>%s</style>\n</head>\n<body>\n", e(doc.Title), reportCSS)
	fmt.Fprintf(&b, "<h1>%s</h1>\n", e(doc.Title))
	for _, m := range doc.Banners {
		fmt.Fprintf(&b, "<p class=\"banner\" role=\"note\"><strong>Note:</strong> %s</p>\n", e(m))
	}
	if doc.Failed > 0 {
		fmt.Fprintf(&b, "<p class=\"banner failed-top\" role=\"alert\"><strong>%d failed cell(s):</strong>", doc.Failed)
		for i := range doc.Sections {
			s := &doc.Sections[i]
			if len(s.Failed) > 0 {
				fmt.Fprintf(&b, " <a href=\"#%s\">%s: %d</a>", e(reportFailedID(s)), e(s.Title), len(s.Failed))
			}
		}
		fmt.Fprintf(&b, "</p>\n")
	}

	fmt.Fprintf(&b, "<nav>\n<h2>Contents</h2>\n<ul>\n<li><a href=\"#run\">Run</a></li>\n")
	for _, s := range doc.Sections {
		fmt.Fprintf(&b, "<li><a href=\"#%s\">%s</a>", e(s.ID), e(s.Title))
		if len(s.Plots) > 0 && (s.Task != "" || s.ID == "summary") {
			fmt.Fprintf(&b, "\n<ul>")
			for _, p := range s.Plots {
				fmt.Fprintf(&b, "<li><a href=\"#plot-%s\">%s</a></li>", e(p.Name), e(p.Title))
			}
			fmt.Fprintf(&b, "</ul>\n")
		}
		fmt.Fprintf(&b, "</li>\n")
	}
	if len(doc.Warnings) > 0 {
		fmt.Fprintf(&b, "<li><a href=\"#warnings\">Warnings</a></li>\n")
	}
	fmt.Fprintf(&b, "</ul>\n</nav>\n")

	fmt.Fprintf(&b, "<section id=\"run\">\n<h2>Run</h2>\n<table class=\"meta\">\n<tbody>\n")
	for _, m := range doc.Meta {
		fmt.Fprintf(&b, "<tr><th scope=\"row\">%s</th><td>%s</td></tr>\n", e(m[0]), e(m[1]))
	}
	fmt.Fprintf(&b, "</tbody>\n</table>\n")
	if len(doc.Sections) == 0 {
		fmt.Fprintf(&b, "<p class=\"note\">No records.</p>\n")
	}
	fmt.Fprintf(&b, "</section>\n")

	for _, s := range doc.Sections {
		fmt.Fprintf(&b, "<section id=\"%s\">\n<h2>%s</h2>\n", e(s.ID), e(s.Title))
		if s.Intro != "" {
			fmt.Fprintf(&b, "<p class=\"note\">%s</p>\n", e(s.Intro))
		}
		for _, n := range s.Notes {
			fmt.Fprintf(&b, "<p class=\"note\">%s</p>\n", e(n))
		}
		for i := range s.Tables {
			htmlWriteSummaryTable(&b, &s.Tables[i])
		}
		for i := range s.Rankings {
			htmlWriteRanking(&b, &s.Rankings[i])
		}
		if s.CSVName != "" {
			if err := htmlWriteTable(&b, s.CSV, s.Title); err != nil {
				return fmt.Errorf("table of %s: %w", s.Title, err)
			}
		}
		if len(s.Plots) > 0 {
			fmt.Fprintf(&b, "<div class=\"figs\">\n")
			for _, p := range s.Plots {
				data, ok := pngs[p.Name]
				if !ok {
					continue
				}
				fmt.Fprintf(&b, "<figure id=\"plot-%s\">\n<img src=\"data:image/png;base64,%s\" alt=\"%s\">\n<figcaption>%s</figcaption>\n</figure>\n",
					e(p.Name), base64.StdEncoding.EncodeToString(data), e(p.Title), e(p.Title))
			}
			fmt.Fprintf(&b, "</div>\n")
		}
		if len(s.Failed) > 0 {
			fmt.Fprintf(&b, "<h3 id=\"%s\">Failed cells</h3>\n<ul class=\"failures\">\n", e(reportFailedID(&s)))
			for _, f := range s.Failed {
				fmt.Fprintf(&b, "<li><code>%s</code>: %s</li>\n", e(f.Cell), e(f.Reason))
			}
			fmt.Fprintf(&b, "</ul>\n")
		}
		fmt.Fprintf(&b, "</section>\n")
	}
	if len(doc.Warnings) > 0 {
		fmt.Fprintf(&b, "<section id=\"warnings\">\n<h2>Warnings</h2>\n<ul>\n")
		for _, m := range doc.Warnings {
			fmt.Fprintf(&b, "<li>%s</li>\n", e(m))
		}
		fmt.Fprintf(&b, "</ul>\n</section>\n")
	}
	fmt.Fprintf(&b, "</body>\n</html>\n")
	_, err := w.Write(b.Bytes())
	return err
}

// htmlWriteTable renders CSV data as an HTML table: the first row is the
// header; numeric cells are right-aligned. All text is escaped.
func htmlWriteTable(b *bytes.Buffer, data []byte, caption string) error {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		fmt.Fprintf(b, "<p class=\"note\">No rows.</p>\n")
		return nil
	}
	// The cell key repeats the model, policy and task columns at length:
	// it stays in the CSV and is left out here, so the metrics fit the page.
	skip := -1
	for i, h := range rows[0] {
		if h == "cell" {
			skip = i
		}
	}
	// Columns empty in every row (no error) are left out too.
	empty := map[int]bool{}
	for i := range rows[0] {
		empty[i] = true
		for _, row := range rows[1:] {
			if i < len(row) && strings.TrimSpace(row[i]) != "" {
				empty[i] = false
				break
			}
		}
	}
	e := html.EscapeString
	fmt.Fprintf(b, "<div class=\"scroll\">\n<table class=\"data\" aria-label=\"%s\">\n<thead>\n<tr>", e(caption))
	for i, h := range rows[0] {
		if i != skip && !empty[i] {
			label, _ := htmlColumn(h)
			fmt.Fprintf(b, "<th scope=\"col\" title=\"%s\">%s</th>", e(h), e(label))
		}
	}
	fmt.Fprintf(b, "</tr>\n</thead>\n<tbody>\n")
	for _, row := range rows[1:] {
		fmt.Fprintf(b, "<tr>")
		for i, c := range row {
			if i == skip || empty[i] {
				continue
			}
			var format func(string) string
			if i < len(rows[0]) {
				_, format = htmlColumn(rows[0][i])
			}
			if format != nil && strings.TrimSpace(c) != "" {
				short := format(c)
				class := ""
				if htmlIsNumber(c) {
					class = " class=\"num\""
				}
				if short != c {
					// The exact value, as in the CSV, on hover.
					fmt.Fprintf(b, "<td%s title=\"%s\">%s</td>", class, e(c), e(short))
				} else {
					fmt.Fprintf(b, "<td%s>%s</td>", class, e(c))
				}
				continue
			}
			switch {
			case htmlIsNumber(c):
				if short := htmlHumanNumber(c); short != c {
					// The exact value, as in the CSV, on hover.
					fmt.Fprintf(b, "<td class=\"num\" title=\"%s\">%s</td>", e(c), e(short))
				} else {
					fmt.Fprintf(b, "<td class=\"num\">%s</td>", e(c))
				}
			case strings.EqualFold(strings.TrimSpace(c), "failed"):
				fmt.Fprintf(b, "<td class=\"failed\">%s</td>", e(c))
			default:
				fmt.Fprintf(b, "<td>%s</td>", e(c))
			}
		}
		fmt.Fprintf(b, "</tr>\n")
	}
	fmt.Fprintf(b, "</tbody>\n</table>\n</div>\n")
	return nil
}

// htmlNumberAs formats a numeric cell with f (the value scaled by scale);
// other text stays as it is.
func htmlNumberAs(f func(float64) string, scale float64) func(string) string {
	return func(c string) string {
		v, err := strconv.ParseFloat(strings.TrimSpace(c), 64)
		if err != nil {
			return c
		}
		return f(v * scale)
	}
}

// htmlShortParams shortens the file paths in a "k=v, k2=v2" cell.
func htmlShortParams(c string) string {
	parts := strings.Split(c, ", ")
	for i, p := range parts {
		if k, v, ok := strings.Cut(p, "="); ok && strings.HasPrefix(v, "/") {
			parts[i] = k + "=" + ShortPath(v)
		}
	}
	return strings.Join(parts, ", ")
}

// htmlColumns are the people's names of the CSV columns, with the
// formatting of their values.
var htmlColumns = map[string]struct {
	label  string
	format func(string) string
}{
	"policy_params":          {"policy params", htmlShortParams},
	"task_params":            {"task params", htmlShortParams},
	"budget":                 {"budget (tokens)", nil},
	"kv_max_resident_mib":    {"KV max resident", htmlNumberAs(HumanBytes, 1<<20)},
	"kv_bytes_read_per_step": {"KV read per step", htmlNumberAs(HumanBytes, 1)},
	"kv_recall":              {"attention recall", htmlNumberAs(HumanNumber, 1)},
	"attn_p50_us":            {"attention p50", htmlNumberAs(HumanMicros, 1)},
	"attn_p90_us":            {"attention p90", htmlNumberAs(HumanMicros, 1)},
	"tokens_per_s":           {"tokens/s", htmlNumberAs(HumanNumber, 1)},
	"ppl":                    {"perplexity", htmlNumberAs(HumanNumber, 1)},
}

// htmlColumn is a CSV column's label and the formatting of its values
// (nil: numbers with 3 significant digits, other text as it is).
func htmlColumn(h string) (string, func(string) string) {
	if c, ok := htmlColumns[h]; ok {
		return c.label, c.format
	}
	return strings.ReplaceAll(h, "_", " "), nil
}

func htmlIsNumber(s string) bool {
	s = strings.TrimSpace(s)
	if s == "" {
		return false
	}
	_, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	return err == nil
}

// htmlHumanNumber shows a number with 3 significant digits (HumanNumber);
// a percentage stays as it is.
func htmlHumanNumber(s string) string {
	t := strings.TrimSpace(s)
	v, err := strconv.ParseFloat(t, 64)
	if err != nil {
		return s
	}
	return HumanNumber(v)
}

// htmlWriteRanking writes a task's ranking as a table of class "summary".
func htmlWriteSummaryTable(b *bytes.Buffer, t *SummaryTable) {
	htmlWriteSmallTable(b, t.Title, t.Note, "summary overview", t.Title, t.Header, t.Rows, 0)
}

func htmlWriteRanking(b *bytes.Buffer, rk *Ranking) {
	rows := make([][]string, len(rk.Rows))
	for i := range rk.Rows {
		rows[i] = rk.Rows[i].Cells(rk.Metric)
	}
	htmlWriteSmallTable(b, rk.Task, "", "summary", "ranking of "+rk.Task, RankingHeader(rk.Metric), rows, 1)
}

// htmlWriteSmallTable writes a heading, an optional note and a table of
// text cells; column textCol is text, the others numbers.
func htmlWriteSmallTable(b *bytes.Buffer, heading, note, class, label string, header []string, rows [][]string, textCol int) {
	e := html.EscapeString
	fmt.Fprintf(b, "<h3>%s</h3>\n", e(heading))
	if note != "" {
		fmt.Fprintf(b, "<p class=\"note\">%s</p>\n", e(note))
	}
	fmt.Fprintf(b, "<div class=\"scroll\">\n<table class=\"%s\" aria-label=\"%s\">\n<thead>\n<tr>", e(class), e(label))
	for _, h := range header {
		fmt.Fprintf(b, "<th scope=\"col\">%s</th>", e(h))
	}
	fmt.Fprintf(b, "</tr>\n</thead>\n<tbody>\n")
	for _, r := range rows {
		fmt.Fprintf(b, "<tr>")
		for j, c := range r {
			if j == textCol {
				fmt.Fprintf(b, "<td>%s</td>", e(c))
			} else {
				fmt.Fprintf(b, "<td class=\"num\">%s</td>", e(c))
			}
		}
		fmt.Fprintf(b, "</tr>\n")
	}
	fmt.Fprintf(b, "</tbody>\n</table>\n</div>\n")
}
