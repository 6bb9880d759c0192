package results

import (
	"bytes"
	"encoding/csv"
	"encoding/xml"
	"fmt"
	"html"
	"image"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kvbench/kvbench/tasks"
)

// Policy configurations of the synthetic suite.
var (
	rptFxFull      = rptFxPolicy{"full", nil, 0}
	rptFxStreaming = rptFxPolicy{"streamingllm", map[string]any{"sinks": 4, "recent": 1020}, 1024}
	rptFxH2O       = rptFxPolicy{"h2o", map[string]any{"heavy": 256.0, "recent": 256.0}, 512}
)

type rptFxPolicy struct {
	name   string
	params map[string]any
	budget int
}

var (
	rptFxLengths = []int{1024, 4096, 16384}
	rptFxDepths  = []float64{0, 0.5, 1}
)

func rptFxRecord(p rptFxPolicy, task string, tp map[string]any) Record {
	start := time.Date(2025, 11, 24, 10, 0, 0, 0, time.UTC)
	r := Record{
		Suite:        "smoke",
		Model:        "tiny-llama",
		Policy:       p.name,
		PolicyParams: p.params,
		Budget:       p.budget,
		Task:         task,
		TaskVersion:  1,
		TaskParams:   tp,
		Status:       "ok",
		Metrics:      map[string]float64{},
		KV:           KV{Recall: -1},
		Meta: Meta{GitRevision: "abc1234", Version: "0.1.0", GoVersion: "go1.26", Backend: "cpu",
			Device: "Test CPU <x86-64>", Host: "ci", Seed: 1, Start: start, End: start.Add(90 * time.Minute)},
	}
	var ps []string
	for k, v := range tp {
		ps = append(ps, fmt.Sprintf("%s=%v", k, v))
	}
	r.Cell = fmt.Sprintf("tiny/%s/%s(%s)", PlotLabel(&r), task, strings.Join(ps, ","))
	return r
}

// fxLatency and fxMemory fake the costs of a configuration at a context.
func rptFxCost(p rptFxPolicy, ctx int, r *Record) {
	kept := float64(ctx)
	if p.budget > 0 {
		kept = math.Min(kept, float64(p.budget))
	}
	r.Latency = Latency{P50: 2 + kept/200, P90: 3 + kept/150, Mean: 2.5 + kept/180, N: 100}
	r.KV.MaxResident = int64(kept) * 4 * 2 * 64 * 2 * 22
	if p.budget > 0 {
		r.KV.Recall = math.Min(1, 0.55+float64(p.budget)/4096)
	}
}

// rptFixtureRecords is a small suite: perplexity curves for three policies,
// passkey and needle for two policies over 3 lengths × 3 depths, and one
// failed needle cell. Needle accuracy is 0 at depth 0 for streamingllm
// (the needle falls out of its window) and 1 elsewhere at short lengths.
func rptFixtureRecords() []Record {
	var recs []Record
	for k, p := range []rptFxPolicy{rptFxFull, rptFxStreaming, rptFxH2O} {
		r := rptFxRecord(p, "perplexity", map[string]any{"tokens": 32768})
		var ppl, nll []tasks.Point
		for x := 512.0; x <= 32768; x *= 2 {
			y := 8 - math.Log2(x/512)*0.3
			if k == 1 {
				y = 8 + math.Pow(x/1024, 0.9)
			}
			if k == 2 {
				y = 8 + math.Pow(x/512, 1.2)
			}
			ppl = append(ppl, tasks.Point{X: x, Y: y})
			nll = append(nll, tasks.Point{X: x, Y: math.Log(y)})
		}
		r.Curves = map[string][]tasks.Point{"ppl": ppl, "nll": nll}
		r.Metrics["ppl"] = ppl[len(ppl)-1].Y
		r.Metrics["nll"] = math.Log(ppl[len(ppl)-1].Y)
		rptFxCost(p, 32768, &r)
		recs = append(recs, r)
	}
	for _, task := range []string{"passkey", "needle"} {
		for _, p := range []rptFxPolicy{rptFxFull, rptFxStreaming} {
			for _, n := range rptFxLengths {
				for _, d := range rptFxDepths {
					r := rptFxRecord(p, task, map[string]any{"length": n, "depth": d})
					acc := 1.0
					if p.name == "streamingllm" && n > p.budget {
						acc = d // only what is in the recent window survives
						if task == "needle" && d == 0.5 {
							acc = 0.25
						}
					}
					if task == "needle" && p.name == "streamingllm" && n == 16384 && d == 1 {
						r.Status = "failed"
						r.Error = "cuda: out of memory | allocating <kv> & retrying"
						r.Metrics = nil
						recs = append(recs, r)
						continue
					}
					r.Metrics["accuracy"] = acc
					rptFxCost(p, n, &r)
					recs = append(recs, r)
				}
			}
		}
	}
	return recs
}

func rptFixtureReport(t *testing.T) (*ReportFiles, []Record) {
	t.Helper()
	recs := rptFixtureRecords()
	files, err := Report(t.TempDir(), recs)
	if err != nil {
		t.Fatal(err)
	}
	if len(files.Warnings) > 0 {
		t.Fatalf("warnings: %v", files.Warnings)
	}
	return files, recs
}

func TestReportFiles(t *testing.T) {
	files, _ := rptFixtureReport(t)
	want := []string{
		"report.md", "index.html", "perplexity.csv", "passkey.csv", "needle.csv",
		"ppl_vs_tokens", "passkey_accuracy",
		"passkey_heatmap_full", "passkey_heatmap_streamingllm_sinks_4_recent_1020",
		"needle_heatmap_full", "needle_heatmap_streamingllm_sinks_4_recent_1020",
		"latency_vs_context_perplexity", "memory_vs_context_perplexity",
		"latency_vs_context_passkey", "memory_vs_context_passkey",
		"latency_vs_context_needle", "memory_vs_context_needle", "recall_vs_budget",
		"perplexity_vs_budget", "passkey_vs_budget", "needle_vs_budget",
		"perplexity_pareto_memory", "passkey_pareto_memory", "needle_pareto_memory",
	}
	for _, w := range want {
		names := []string{w}
		if !strings.Contains(w, ".") {
			names = []string{w + ".png", w + ".svg"}
		}
		for _, n := range names {
			if _, err := os.Stat(filepath.Join(files.Dir, n)); err != nil {
				t.Errorf("missing %s: %v", n, err)
			}
		}
	}
	if len(files.Plots) != 19 {
		t.Errorf("%d plots, want 19: %+v", len(files.Plots), files.Plots)
	}
	if len(files.CSV) != 3 || files.CSV[0].Task != "perplexity" {
		t.Errorf("CSV files %+v", files.CSV)
	}
	for _, p := range files.Paths() {
		if st, err := os.Stat(p); err != nil || st.Size() == 0 {
			t.Errorf("%s: not written (%v)", p, err)
		}
	}

	for _, p := range files.Plots {
		data, err := os.ReadFile(p.PNG)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", p.PNG, err)
		}
		if len(data) < 10<<10 {
			t.Errorf("%s: only %d bytes", p.PNG, len(data))
		}
		if n := rptDistinctColors(img, 64); n < 16 {
			t.Errorf("%s: %d distinct colours", p.PNG, n)
		}
		if b := img.Bounds(); b.Dx() < 600 || b.Dy() < 400 {
			t.Errorf("%s: %v is small", p.PNG, b)
		}
		svg, err := os.ReadFile(p.SVG)
		if err != nil {
			t.Fatal(err)
		}
		if err := rptParseXML(svg); err != nil {
			t.Errorf("%s: %v", p.SVG, err)
		}
		if !bytes.Contains(svg, []byte("<svg")) {
			t.Errorf("%s: no <svg>", p.SVG)
		}
	}
}

// rptDistinctColors counts distinct colours, stopping at limit.
func rptDistinctColors(img image.Image, limit int) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
			if len(seen) >= limit {
				return len(seen)
			}
		}
	}
	return len(seen)
}

func rptParseXML(data []byte) error {
	d := xml.NewDecoder(bytes.NewReader(data))
	for {
		_, err := d.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func TestReportMarkdown(t *testing.T) {
	files, _ := rptFixtureReport(t)
	data, err := os.ReadFile(files.Markdown)
	if err != nil {
		t.Fatal(err)
	}
	md := string(data)
	for _, want := range []string{
		"# kvbench report: smoke", "abc1234", "cpu", "Test CPU", "2025-11-24 10:00:00 UTC", "2025-11-24 11:30:00 UTC",
		"## perplexity", "## passkey", "## needle", "## Latency and memory", "## Attention recall",
		"[perplexity.csv](perplexity.csv)", "### Failed cells", "cuda: out of memory | allocating <kv> & retrying",
		"39 (38 ok, 1 failed)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	for _, p := range files.Plots {
		base := filepath.Base(p.PNG)
		if !strings.Contains(md, "]("+base+")") {
			t.Errorf("report.md has no image link to %s", base)
		}
		if !strings.Contains(md, "("+filepath.Base(p.SVG)+")") {
			t.Errorf("report.md has no link to %s", filepath.Base(p.SVG))
		}
	}
	// Plots sit in their task's section.
	needle := strings.Index(md, "## needle")
	if i := strings.Index(md, "needle_heatmap_full.png"); i < needle {
		t.Errorf("needle heatmap outside the needle section")
	}
	// The table of each task is there (the same call as WriteMarkdown).
	for _, task := range []string{"perplexity", "passkey", "needle"} {
		var recs []Record
		for _, r := range rptFixtureRecords() {
			if r.Task == task {
				recs = append(recs, r)
			}
		}
		var b bytes.Buffer
		if err := WriteMarkdown(&b, recs); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(md, strings.TrimSpace(b.String())) {
			t.Errorf("report.md lacks the %s table", task)
		}
	}
}

var rptExternalURL = regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?\s*(https?:|//)`)

func TestReportHTML(t *testing.T) {
	files, _ := rptFixtureReport(t)
	data, err := os.ReadFile(files.HTML)
	if err != nil {
		t.Fatal(err)
	}
	page := string(data)
	if m := rptExternalURL.FindString(page); m != "" {
		t.Errorf("index.html refers outside: %q", m)
	}
	if strings.Contains(page, "<link") || strings.Contains(page, "@import") || strings.Contains(page, "url(") {
		t.Errorf("index.html loads external resources")
	}
	imgs := regexp.MustCompile(`<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"`).FindAllStringSubmatch(page, -1)
	if len(imgs) != len(files.Plots) {
		t.Errorf("%d embedded images, want %d", len(imgs), len(files.Plots))
	}
	for _, p := range files.Plots {
		if !strings.Contains(page, `id="plot-`+p.Name+`"`) {
			t.Errorf("index.html lacks plot %s", p.Name)
		}
		if !strings.Contains(page, `href="#plot-`+p.Name+`"`) && (p.Section != plotSectionCost && p.Section != plotSectionRecall) {
			t.Errorf("contents lack plot %s", p.Name)
		}
	}
	for _, id := range []string{"run", "task-perplexity", "task-passkey", "task-needle", "cost", "recall"} {
		if !strings.Contains(page, `href="#`+id+`"`) || !strings.Contains(page, `id="`+id+`"`) {
			t.Errorf("section %s missing from the page or its contents", id)
		}
	}
	// Every table: each CSV cell appears, escaped, in the page, but for the
	// cell-key column, which the page leaves out.
	for _, c := range files.CSV {
		raw, err := os.ReadFile(c.Path)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range rows {
			for i, cell := range row {
				if rows[0][i] == "cell" {
					continue
				}
				esc := html.EscapeString(cell)
				if !strings.Contains(page, ">"+esc+"</t") && !strings.Contains(page, ` title="`+esc+`">`) {
					t.Errorf("%s: cell %q not in a table of index.html", c.Task, cell)
				}
			}
		}
	}
	if strings.Contains(page, "<kv>") || !strings.Contains(page, "&lt;kv&gt; &amp; retrying") {
		t.Errorf("error text not escaped")
	}
}

func TestReportEmpty(t *testing.T) {
	dir := t.TempDir()
	files, err := Report(filepath.Join(dir, "sub"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(files.Plots) != 0 || len(files.CSV) != 0 {
		t.Errorf("empty input gave %+v", files)
	}
	for _, p := range []string{files.Markdown, files.HTML} {
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
	// Only failures, and records with no usable data.
	recs := []Record{
		{Policy: "full", Task: "passkey", Status: "failed", Error: "boom", KV: KV{Recall: -1}},
		{Policy: "full", Task: "perplexity", Status: "ok", KV: KV{Recall: -1}},
		{Policy: "full", Task: "other", Status: "ok", TaskParams: map[string]any{"length": "x"}, Curves: map[string][]tasks.Point{"ppl": nil}},
	}
	files, err = Report(dir, recs)
	if err != nil {
		t.Fatal(err)
	}
	if len(files.Plots) != 0 || len(files.Warnings) != 0 {
		t.Errorf("plots from no data: %+v", files)
	}
	md, _ := os.ReadFile(files.Markdown)
	if !strings.Contains(string(md), "boom") {
		t.Errorf("failure reason missing:\n%s", md)
	}

	// A perplexity curve in a record of another task still shows.
	r := rptFixtureRecords()[1]
	r.Task = "longppl"
	files, err = Report(t.TempDir(), []Record{r})
	if err != nil {
		t.Fatal(err)
	}
	md, _ = os.ReadFile(files.Markdown)
	if len(files.Plots) == 0 || !strings.Contains(string(md), "(ppl_vs_tokens.png)") {
		t.Errorf("orphan plot left out:\n%s", md)
	}
}
