package results

import (
	"bytes"
	"encoding/csv"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// rulerFixture: full over three RULER tasks at 4096 and 8192 (niah_single_1
// at two depths, vt failing at 8192), streamingllm over niah_single_1 at
// 4096 only, and a passkey record that is no RULER task.
func rulerFixture() []Record {
	rec := func(p rptFxPolicy, task string, n int, depth any, score float64) Record {
		tp := map[string]any{"lengths": n}
		if depth != nil {
			tp["depths"] = depth
		}
		r := rptFxRecord(p, task, tp)
		r.Suite = "ruler"
		r.Metrics["score"] = score
		r.Metrics["match_part"] = math.Ceil(score)
		rptFxCost(p, n, &r)
		return r
	}
	failed := rec(rptFxFull, "vt", 8192, nil, 0)
	failed.Status, failed.Error, failed.Metrics = "failed", "out of memory", nil
	passkey := rptFxRecord(rptFxFull, "passkey", map[string]any{"length": 4096, "depth": 0.5})
	passkey.Metrics["accuracy"] = 1
	return []Record{
		rec(rptFxFull, "cwe", 4096, nil, 0.2),
		rec(rptFxFull, "niah_single_1", 4096, 0.0, 1),
		rec(rptFxFull, "niah_single_1", 4096, 1.0, 0.5),
		rec(rptFxFull, "niah_single_1", 8192, 0.0, 0.5),
		rec(rptFxFull, "vt", 4096, nil, 1),
		failed,
		rec(rptFxFull, "cwe", 8192, nil, 0.1),
		rec(rptFxStreaming, "niah_single_1", 4096, 0.0, 0.25),
		passkey,
	}
}

func TestRulerGrids(t *testing.T) {
	grids := RulerGrids(rulerFixture())
	if len(grids) != 2 || grids[0].Label != "full" || grids[1].Label != "streamingllm sinks=4 recent=1020" {
		t.Fatalf("grids %+v", grids)
	}
	g := grids[0]
	if want := []string{"niah_single_1", "vt", "cwe", RulerAverage}; !reflect.DeepEqual(g.Rows, want) {
		t.Errorf("rows %v, want RULER's order %v", g.Rows, want)
	}
	if !rptEqualFloats(g.Cols, []float64{4096, 8192}) {
		t.Errorf("columns %v", g.Cols)
	}
	// niah_single_1 at 4096: the mean of depths 0 and 1, (1 + 0.5) / 2.
	// The average at 4096: (0.75 + 1 + 0.2) / 3; at 8192 vt failed, so
	// there is none.
	want := [][]float64{{0.75, 0.5}, {1, math.NaN()}, {0.2, 0.1}, {0.65, math.NaN()}}
	for i, row := range want {
		for j, v := range row {
			c := g.Cells[i][j]
			if math.IsNaN(v) != math.IsNaN(c.Value) || (!math.IsNaN(v) && math.Abs(c.Value-v) > 1e-12) {
				t.Errorf("%s at %v: %v, want %v", g.Rows[i], g.Cols[j], c.Value, v)
			}
		}
	}
	if c := g.Cells[0][0]; c.N != 2 {
		t.Errorf("niah_single_1 at 4096 from %d records", c.N)
	}
	if c := g.Cells[1][1]; c.N != 0 || c.Failed != 1 {
		t.Errorf("vt at 8192: %+v", c)
	}
	s := grids[1]
	if s.Cells[0][0].Value != 0.25 || !math.IsNaN(s.Cells[0][1].Value) || !math.IsNaN(s.Cells[3][0].Value) {
		t.Errorf("streamingllm: %+v", s.Cells)
	}
	if RulerGrids(rptFixtureRecords()) != nil {
		t.Error("grids from records without RULER tasks")
	}
	// Two models: the label names the model.
	recs := rulerFixture()
	recs[0].Model = "other"
	if g := RulerGrids(recs); len(g) != 3 || g[0].Label != "other / full" {
		t.Errorf("two models: %d grids, first %q", len(g), g[0].Label)
	}
}

func TestRulerTables(t *testing.T) {
	var md bytes.Buffer
	if err := WriteRulerMarkdown(&md, rulerFixture()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(md.String()), "\n")
	want := []string{
		"| policy | task | 4096 | 8192 | mean |",
		"|---|---|---:|---:|---:|",
		`| full | niah\_single\_1 | 75.0 | 50.0 | 62.5 |`,
		"| full | vt | 100.0 | failed |  |",
		"| full | cwe | 20.0 | 10.0 | 15.0 |",
		"| full | average | 65.0 |  |  |",
		`| streamingllm sinks=4 recent=1020 | niah\_single\_1 | 25.0 |  |  |`,
	}
	if len(lines) != 10 || !reflect.DeepEqual(lines[:7], want) {
		t.Errorf("Markdown:\n%s\nwant first lines\n%s", md.String(), strings.Join(want, "\n"))
	}
	var data bytes.Buffer
	if err := WriteRulerCSV(&data, rulerFixture()); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&data).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 9 || !reflect.DeepEqual(rows[1], []string{"full", "niah_single_1", "75.0", "50.0", "62.5"}) {
		t.Errorf("CSV rows %q", rows)
	}
	md.Reset()
	if err := WriteRulerMarkdown(&md, rptFixtureRecords()); err != nil || md.Len() != 0 {
		t.Errorf("no RULER records: %q, %v", md.String(), err)
	}
}

// The report holds RULER's section before its tasks' sections, with the
// table, its CSV file, the average plot and a heatmap per configuration.
func TestRulerReport(t *testing.T) {
	dir := t.TempDir()
	files, err := Report(dir, rulerFixture())
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(files.Markdown)
	if err != nil {
		t.Fatal(err)
	}
	md := string(data)
	iRuler, iNiah, iVT, iCWE := strings.Index(md, "\n## RULER\n"), strings.Index(md, "\n## niah\\_single\\_1\n"), strings.Index(md, "\n## vt\n"), strings.Index(md, "\n## cwe\n")
	if iRuler < 0 || !(strings.Index(md, "\n## passkey\n") < iRuler && iRuler < iNiah && iNiah < iVT && iVT < iCWE) {
		t.Errorf("sections: RULER at %d, niah_single_1 %d, vt %d, cwe %d", iRuler, iNiah, iVT, iCWE)
	}
	if !strings.Contains(md, `| full | niah\_single\_1 | 75.0 | 50.0 | 62.5 |`) || !strings.Contains(md, "CSV: [ruler.csv](ruler.csv)") {
		t.Errorf("report.md lacks RULER's table:\n%s", md[iRuler:iNiah])
	}
	var names []string
	for _, p := range files.Plots {
		if p.Section == plotSectionRuler {
			names = append(names, p.Name)
		}
	}
	if want := []string{"ruler_average", "ruler_heatmap_full", "ruler_heatmap_streamingllm_sinks_4_recent_1020"}; !reflect.DeepEqual(names, want) {
		t.Errorf("RULER plots %v, want %v", names, want)
	}
	found := false
	for _, c := range files.CSV {
		if c.Task == "ruler" && filepath.Base(c.Path) == "ruler.csv" {
			found = true
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "ruler.csv")); err != nil || !found {
		t.Errorf("ruler.csv: %v (listed %v)", err, found)
	}
	f, err := os.Open(filepath.Join(dir, "ruler_heatmap_full.png"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	// The vt row (the second of four) holds the one 100% cell (green) at
	// 4096 and the failed cell (grey) right of it.
	right := img.Bounds().Max.X - int(1.2*plotDPI)
	green := rptBoxOf(img, right, HeatColor(1))
	band := img.(interface {
		SubImage(image.Rectangle) image.Image
	}).SubImage(image.Rect(green.Max.X, green.Min.Y, right, green.Max.Y))
	grey := rptBoxOf(band, right, plotHeatFailedColor)
	t.Logf("green %v, grey %v in %v", green, grey, img.Bounds())
	if green.Empty() || grey.Dx() < green.Dx()*2/3 || grey.Dy() < green.Dy()*2/3 {
		t.Errorf("vt's cells: green %v, grey %v right of it", green, grey)
	}
	if h := img.Bounds().Dy(); green.Min.Y < h/5 || green.Max.Y > h*3/5 || green.Dx() < 60 {
		t.Errorf("the green cell %v is not in the second of four rows of %v", green, img.Bounds())
	}
	page, _ := os.ReadFile(files.HTML)
	if !strings.Contains(string(page), `<section id="ruler">`) || !strings.Contains(string(page), `<td class="num">62.5</td>`) ||
		!strings.Contains(string(page), `id="plot-ruler_heatmap_full"`) {
		t.Error("index.html lacks RULER's section, table or heatmap")
	}
}
