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
`

// writeReportHTML writes the page; pngs holds each plot's PNG by name.
func writeReportHTML(w io.Writer, doc *reportDoc, pngs map[string][]byte) error {
	var b bytes.Buffer
	e := html.EscapeString
	fmt.Fprintf(&b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n")
	fmt.Fprintf(&b, "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n")
	fmt.Fprintf(&b, "<title>%s</title>\n<style>%s</style>\n</head>\n<body>\n", e(doc.Title), reportCSS)
	fmt.Fprintf(&b, "<h1>%s</h1>\n", e(doc.Title))

	fmt.Fprintf(&b, "<nav>\n<h2>Contents</h2>\n<ul>\n<li><a href=\"#run\">Run</a></li>\n")
	for _, s := range doc.Sections {
		fmt.Fprintf(&b, "<li><a href=\"#%s\">%s</a>", e(s.ID), e(s.Title))
		if len(s.Plots) > 0 && s.Task != "" {
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
			fmt.Fprintf(&b, "<h3>Failed cells</h3>\n<ul class=\"failures\">\n")
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
	e := html.EscapeString
	fmt.Fprintf(b, "<div class=\"scroll\">\n<table class=\"data\" aria-label=\"%s\">\n<thead>\n<tr>", e(caption))
	for i, h := range rows[0] {
		if i != skip {
			fmt.Fprintf(b, "<th scope=\"col\">%s</th>", e(h))
		}
	}
	fmt.Fprintf(b, "</tr>\n</thead>\n<tbody>\n")
	for _, row := range rows[1:] {
		fmt.Fprintf(b, "<tr>")
		for i, c := range row {
			if i == skip {
				continue
			}
			switch {
			case htmlIsNumber(c):
				if short := htmlShortNumber(c); short != c {
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

func htmlIsNumber(s string) bool {
	s = strings.TrimSpace(s)
	if s == "" {
		return false
	}
	_, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	return err == nil
}

// htmlShortNumber shows a long decimal (155.03338943962044) with 6
// significant digits (155.033); integers and short numbers stay as they are.
func htmlShortNumber(s string) string {
	t := strings.TrimSpace(s)
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || !strings.Contains(t, ".") || strings.ContainsAny(t, "eE") {
		return s
	}
	short := strconv.FormatFloat(f, 'g', 6, 64)
	if strings.ContainsAny(short, "eE") || len(short) >= len(t) {
		return s
	}
	return short
}
