package results

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/plot/vg"

	"github.com/kvbench/kvbench/tasks"
)

func TestHumanNumber(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want string
	}{
		{0, "0"}, {1, "1"}, {1.5, "1.5"}, {0.25, "0.25"}, {155.03338943962044, "155"},
		{12.345, "12.3"}, {0.012345, "0.0123"}, {19983.4, "19983"}, {-2.5, "-2.5"},
		{0.0001234, "0.000123"}, {math.NaN(), "—"}, {math.Inf(1), "∞"}, {1e20, "1e+20"},
	} {
		if got := HumanNumber(c.v); got != c.want {
			t.Errorf("HumanNumber(%v) = %q, want %q", c.v, got, c.want)
		}
	}
}

func TestHumanBytesAndMicros(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want string
	}{
		{0, "0 B"}, {512, "512 B"}, {1536, "1.5 KiB"}, {466944, "456 KiB"}, {3 << 20, "3 MiB"},
		{21.3 * (1 << 20), "21.3 MiB"}, {5 << 30, "5 GiB"}, {math.NaN(), "—"},
	} {
		if got := HumanBytes(c.v); got != c.want {
			t.Errorf("HumanBytes(%v) = %q, want %q", c.v, got, c.want)
		}
	}
	for _, c := range []struct {
		v    float64
		want string
	}{
		{0.85, "850 ns"}, {16.23, "16.2 µs"}, {3450, "3.45 ms"}, {1.2e6, "1.2 s"}, {0, "0 µs"},
	} {
		if got := HumanMicros(c.v); got != c.want {
			t.Errorf("HumanMicros(%v) = %q, want %q", c.v, got, c.want)
		}
	}
}

func TestShortPath(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if got := ShortPath(filepath.Join(wd, "testdata", "x.txt")); got != filepath.Join("testdata", "x.txt") {
		t.Errorf("below the working directory: %q", got)
	}
	if got := ShortPath("/elsewhere/deep/configs/data/river.txt"); got != "…/data/river.txt" {
		t.Errorf("elsewhere: %q", got)
	}
	if got := ShortPath("synthetic:tiny"); got != "synthetic:tiny" {
		t.Errorf("not a path: %q", got)
	}
	p := map[string]any{"text": "/elsewhere/deep/configs/data/river.txt", "tokens": 600}
	if got := ShortParams(p); got != "text=…/data/river.txt, tokens=600" {
		t.Errorf("ShortParams: %q", got)
	}
	if got := htmlShortParams("bucket=100, text=/elsewhere/deep/data/river.txt"); got != "bucket=100, text=…/data/river.txt" {
		t.Errorf("htmlShortParams: %q", got)
	}
}

// TestPaletteStable: a policy has the same colour, dash pattern and marker
// in every chart, whatever else the chart holds; the known policies all
// differ, in colour and in dash pattern or marker; full is black and on top.
func TestPaletteStable(t *testing.T) {
	if len(plotColors) < 10 {
		t.Fatalf("%d colours, want at least 10", len(plotColors))
	}
	for i, a := range plotColors {
		for _, b := range plotColors[i+1:] {
			if a == b {
				t.Errorf("colour %v repeats", a)
			}
		}
	}
	type look struct {
		color        [4]uint8
		dash, marker string
	}
	lookOf := func(st plotStyle) look {
		c := st.Color
		return look{[4]uint8{c.R, c.G, c.B, c.A}, fmtLengths(st.Dashes), typeName(st.Shape)}
	}
	seen := map[[4]uint8]string{}
	shapes := map[[2]string]string{}
	for _, p := range plotPolicyOrder {
		st := plotPolicyStyle(p, 0)
		l := lookOf(st)
		if q, ok := seen[l.color]; ok {
			t.Errorf("%s and %s share a colour", p, q)
		}
		seen[l.color] = p
		k := [2]string{l.dash, l.marker}
		if q, ok := shapes[k]; ok {
			t.Errorf("%s and %s share dash pattern and marker", p, q)
		}
		shapes[k] = p
		if st.Top {
			t.Errorf("%s drawn on top", p)
		}
	}
	if f := plotPolicyStyle("full", 0); !f.Top || f.Color != plotFullColor || seen[[4]uint8{0, 0, 0, 255}] != "" {
		t.Errorf("full: %+v", f)
	}
	// The same policy in two reports with other labels: the same look.
	a := plotNewStyler([]string{"h2o heavy=32 recent=32", "window window=64"})
	b := plotNewStyler([]string{"full", "tova cache=64", "h2o heavy=32 recent=32", "window window=64", "quest budget=64"})
	for _, l := range []string{"h2o heavy=32 recent=32", "window window=64"} {
		if lookOf(a.style(l)) != lookOf(b.style(l)) {
			t.Errorf("%s looks different in two charts", l)
		}
	}
	if a.style("h2o heavy=32 recent=32").Color == a.style("window window=64").Color {
		t.Errorf("h2o and window share a colour")
	}
	// Two configurations of a policy: its colour, another marker.
	q1, q2 := b.style("quest budget=64"), b.style("quest budget=32")
	if q1.Color != q2.Color || typeName(q1.Shape) == typeName(q2.Shape) {
		t.Errorf("quest variants: %+v %+v", q1, q2)
	}
	// An unknown policy: a palette colour, the same every time.
	if x, y := plotPolicyStyle("mine", 0), plotPolicyStyle("mine", 0); x.Color != y.Color || !slices.Contains(plotColors, x.Color) {
		t.Errorf("unknown policy: %+v %+v", x, y)
	}
	if plotLabelPolicy("m1 / quest budget=64") != "quest" {
		t.Errorf("plotLabelPolicy with a model")
	}
}

func fmtLengths(ls []vg.Length) string {
	var b strings.Builder
	for _, l := range ls {
		b.WriteString(HumanNumber(float64(l)) + ",")
	}
	return b.String()
}

func typeName(v any) string { return fmt.Sprintf("%T", v) }

func TestPlotDodge(t *testing.T) {
	pts := func(ys ...float64) []tasks.Point {
		var out []tasks.Point
		for i, y := range ys {
			out = append(out, tasks.Point{X: float64(i), Y: y})
		}
		return out
	}
	ss := []plotSeries{
		{Label: "full", Pts: pts(1, 2)},
		{Label: "h2o", Pts: pts(1, 2)},
		{Label: "tova", Pts: pts(1, 2)},
		{Label: "window", Pts: pts(1, 2)},
		{Label: "quest", Pts: pts(3, 2)},
	}
	got := plotDodge(ss, func(l string) bool { return l == "full" })
	if want := []float64{0, -1, 0, 1, 0}; !slices.Equal(got, want) {
		t.Errorf("dodge %v, want %v", got, want)
	}
}

// chartRecords: a task over two budgets for two policies, full without a
// budget, a not-applicable cell and a failed cell; perplexity too.
func chartRecords() []Record {
	mk := func(policy string, params map[string]any, budget int, task string, acc float64, bytes int64) Record {
		r := Record{Model: "m", ModelPath: "/models/m", Policy: policy, PolicyParams: params, Budget: budget, Task: task,
			TaskParams: map[string]any{"length": 1024}, Status: "ok", Metrics: map[string]float64{},
			KV: KV{MaxResident: bytes, Recall: -1}, Latency: Latency{P50: 10, N: 1}}
		if task == "perplexity" {
			r.Metrics["ppl"] = acc
		} else {
			r.Metrics["accuracy"] = acc
		}
		r.Detail = map[string]any{"tokens_held": float64(max(budget, 1024))}
		return r
	}
	recs := []Record{
		mk("full", nil, 0, "passkey", 1, 4000),
		mk("window", map[string]any{"window": 64}, 64, "passkey", 0.25, 1000),
		mk("window", map[string]any{"window": 128}, 128, "passkey", 0.5, 2000),
		mk("quest", map[string]any{"budget": 64, "page": 16}, 64, "passkey", 0.75, 4000),
		mk("quest", map[string]any{"budget": 128, "page": 16}, 128, "passkey", 1, 4000),
		mk("h2o", map[string]any{"budget": 64}, 64, "passkey", 0, 1000),
		mk("full", nil, 0, "perplexity", 10, 4000),
		mk("window", map[string]any{"window": 64}, 64, "perplexity", 30, 1000),
		mk("snapkv", map[string]any{"budget": 64}, 64, "perplexity", 10, 4000),
	}
	recs[len(recs)-1].Detail[DetailNotApplicable] = "no prompt"
	failed := mk("tova", map[string]any{"budget": 64}, 64, "passkey", 0, 0)
	failed.Status, failed.Metrics = "failed", nil
	return append(recs, failed)
}

func TestBudgetSeriesPerTask(t *testing.T) {
	recs := chartRecords()
	lines, flat, metric, higher := budgetSeries("passkey", recs)
	if metric != "accuracy" || !higher {
		t.Errorf("passkey metric %q higher %v", metric, higher)
	}
	var labels []string
	for _, l := range lines {
		labels = append(labels, l.Label)
	}
	// One line per policy: the budget's own parameter is left out.
	if want := []string{"h2o", "quest page=16", "window"}; !slices.Equal(labels, want) {
		t.Errorf("lines %v, want %v", labels, want)
	}
	for _, l := range lines {
		if l.Label == "quest page=16" && (len(l.Pts) != 2 || l.Pts[0] != (tasks.Point{X: 64, Y: 0.75}) || l.Pts[1] != (tasks.Point{X: 128, Y: 1})) {
			t.Errorf("quest: %v", l.Pts)
		}
	}
	if len(flat) != 1 || flat["full"] != 1 {
		t.Errorf("flat %v", flat)
	}
	// Perplexity: lower is better; snapkv (not applicable) left out.
	lines, flat, metric, higher = budgetSeries("perplexity", recs)
	if metric != "perplexity" || higher || len(lines) != 1 || lines[0].Label != "window" || flat["full"] != 10 {
		t.Errorf("perplexity: %v %v %q %v", lines, flat, metric, higher)
	}
	if na := chartNotApplicable("perplexity", recs); len(na) != 1 || na[0] != "snapkv budget=64 (no prompt)" {
		t.Errorf("not applicable %v", na)
	}
	// The cost series of a task hold only that task's cells.
	for _, s := range costSeries("perplexity", recs, true) {
		if strings.HasPrefix(s.Label, "quest") || strings.HasPrefix(s.Label, "snapkv") {
			t.Errorf("perplexity memory has %s", s.Label)
		}
	}
	if got := chartTasks(recs); !slices.Equal(got, []string{"perplexity", "passkey"}) {
		t.Errorf("tasks %v", got)
	}
}

func TestParetoPoints(t *testing.T) {
	front := map[string]bool{}
	for _, p := range ParetoPoints("passkey", chartRecords()) {
		front[p.Label] = p.Front
	}
	// full and quest 128 tie (the same memory and accuracy 1): neither
	// dominates the other, so both stay on the front; h2o holds as much as
	// window 64 and scores less; quest 64 as much as full and scores less.
	want := map[string]bool{
		"window window=64": true, "h2o budget=64": false, "window window=128": true,
		"quest budget=128 page=16": true, "full": true, "quest budget=64 page=16": false,
	}
	for l, w := range want {
		if front[l] != w {
			t.Errorf("%s on the front: %v, want %v", l, front[l], w)
		}
	}
}

func TestRankings(t *testing.T) {
	rks := Rankings(chartRecords())
	if len(rks) != 2 || rks[0].Task != "perplexity" || rks[1].Task != "passkey" {
		t.Fatalf("rankings %+v", rks)
	}
	pk := rks[1]
	var order []string
	var ranks []int
	for _, r := range pk.Rows {
		order = append(order, r.Label)
		ranks = append(ranks, r.Rank)
	}
	// Ties share a rank, the one with less memory first; the failed
	// configuration is last and unranked.
	wantOrder := []string{"full", "quest budget=128 page=16", "quest budget=64 page=16", "window window=128", "window window=64", "h2o budget=64", "tova budget=64"}
	if !slices.Equal(order, wantOrder) {
		t.Errorf("order %v, want %v", order, wantOrder)
	}
	if want := []int{1, 1, 3, 4, 5, 6, 0}; !slices.Equal(ranks, want) {
		t.Errorf("ranks %v, want %v", ranks, want)
	}
	cells := pk.Rows[len(pk.Rows)-1].Cells(pk.Metric)
	if cells[0] != "—" || cells[2] != "failed" || cells[7] != "0 ok, 1 failed" {
		t.Errorf("failed row %v", cells)
	}
	if c := pk.Rows[2].Cells(pk.Metric); c[2] != "75%" || c[3] != "64" || c[5] != "3.91 KiB" || c[6] != "10 µs" {
		t.Errorf("quest 64 row %v", c)
	}
	ppl := rks[0]
	if ppl.Metric != "perplexity" || ppl.Higher || ppl.Rows[0].Label != "full" || ppl.Rows[1].Label != "window window=64" {
		t.Errorf("perplexity ranking %+v", ppl.Rows)
	}
	if c := ppl.Rows[2].Cells(ppl.Metric); ppl.Rows[2].Rank != 0 || c[2] != "n/a (no prompt)" {
		t.Errorf("snapkv in perplexity: %v", c)
	}
}

func TestSyntheticModels(t *testing.T) {
	recs := chartRecords()
	if got := SyntheticModels(recs); len(got) != 0 {
		t.Errorf("synthetic %v", got)
	}
	recs[0].Model, recs[0].ModelPath = "tiny", "synthetic:tiny"
	if got := SyntheticModels(recs); !slices.Equal(got, []string{"tiny"}) {
		t.Errorf("synthetic %v", got)
	}
}
