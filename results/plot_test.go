package results

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"math"
	"testing"
)

func TestPlotLabel(t *testing.T) {
	for _, c := range []struct {
		r    Record
		want string
	}{
		{Record{Policy: "full"}, "full"},
		{Record{Policy: "streamingllm", PolicyParams: map[string]any{"recent": 1020, "sinks": 4}}, "streamingllm sinks=4 recent=1020"},
		{Record{Policy: "streamingllm", PolicyParams: map[string]any{"recent": 1020.0, "sinks": json.Number("4")}}, "streamingllm sinks=4 recent=1020"},
		{Record{Policy: "h2o", PolicyParams: map[string]any{"recent": 64, "heavy": 0.5, "zz": "a b"}}, "h2o heavy=0.5 recent=64 zz=a b"},
		{Record{Policy: "mine", PolicyParams: map[string]any{"b": true, "a": 1}}, "mine a=1 b=true"},
	} {
		if got := PlotLabel(&c.r); got != c.want {
			t.Errorf("PlotLabel = %q, want %q", got, c.want)
		}
	}
	if got := PlotFileName("streamingllm sinks=4 recent=1020"); got != "streamingllm_sinks_4_recent_1020" {
		t.Errorf("PlotFileName = %q", got)
	}
	if got := PlotFileName("h2o heavy=0.5 / x"); got != "h2o_heavy_0.5_x" {
		t.Errorf("PlotFileName = %q", got)
	}
}

func TestHeatColor(t *testing.T) {
	red, green := HeatColor(0), HeatColor(1)
	if red.R < 150 || red.G > 60 {
		t.Errorf("0 is %v, want red", red)
	}
	if green.G < 120 || green.R > 60 {
		t.Errorf("1 is %v, want green", green)
	}
	if HeatColor(-1) != red || HeatColor(2) != green {
		t.Errorf("values are not clamped")
	}
}

func TestHeatGrids(t *testing.T) {
	grids := HeatGrids("needle", rptFixtureRecords())
	if len(grids) != 2 {
		t.Fatalf("%d grids", len(grids))
	}
	g := grids[1]
	if g.Label != "streamingllm sinks=4 recent=1020" {
		t.Fatalf("label %q", g.Label)
	}
	if want := []float64{0, 0.5, 1}; !rptEqualFloats(g.Rows, want) {
		t.Errorf("rows (top to bottom) %v, want %v", g.Rows, want)
	}
	if want := []float64{1024, 4096, 16384}; !rptEqualFloats(g.Cols, want) {
		t.Errorf("cols %v, want %v", g.Cols, want)
	}
	// Top-left: depth 0, the shortest length (in the window): 100%.
	if c := g.Cells[0][0]; c.Value != 1 || c.N != 1 {
		t.Errorf("top-left %+v", c)
	}
	// Top row at 4096: depth 0 is lost.
	if c := g.Cells[0][1]; c.Value != 0 {
		t.Errorf("depth 0, 4096: %+v", c)
	}
	if c := g.Cells[1][2]; c.Value != 0.25 {
		t.Errorf("depth 0.5, 16384: %+v", c)
	}
	if c := g.Cells[2][2]; c.Failed != 1 || c.N != 0 || !math.IsNaN(c.Value) {
		t.Errorf("failed cell %+v", c)
	}
	if got := plotDepthLabels(g.Rows); got[0] != "0%" || got[1] != "50%" || got[2] != "100%" {
		t.Errorf("depth labels %v", got)
	}
	if got := plotDepthLabels([]float64{0, 10, 90}); got[1] != "10%" {
		t.Errorf("depth labels %v", got)
	}
}

func rptEqualFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestHeatmapPixels draws a grid whose only red cell is depth 0 at the
// shortest length and checks, on the PNG, that the red cell is the top-left
// one of the heatmap.
func TestHeatmapPixels(t *testing.T) {
	var recs []Record
	for _, n := range []int{1000, 2000, 4000, 8000} {
		for _, d := range []float64{0, 0.25, 0.5, 0.75, 1} {
			acc := 1.0
			if n == 1000 && d == 0 {
				acc = 0
			}
			recs = append(recs, Record{Policy: "p", Task: "needle", Status: "ok",
				TaskParams: map[string]any{"length": n, "depth": d},
				Metrics:    map[string]float64{"accuracy": acc}})
		}
	}
	grids := HeatGrids("needle", recs)
	if len(grids) != 1 {
		t.Fatalf("%d grids", len(grids))
	}
	data, err := plotRender(plotHeatFigure(grids[0], "probe", "needle depth"), "png")
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	// Leave out the colour bar, on the right.
	right := b.Max.X - int(1.2*plotDPI)
	red, green := rptBoxOf(img, right, HeatColor(0)), rptBoxOf(img, right, HeatColor(1))
	if red.Empty() || green.Empty() {
		t.Fatalf("no heat colours: red %v green %v", red, green)
	}
	t.Logf("red cell %v, green cells %v", red, green)
	if red.Min.X > green.Min.X+2 || red.Min.Y > green.Min.Y+2 {
		t.Errorf("the red cell %v is not at the top left of the heatmap %v", red, green)
	}
	if red.Max.X >= green.Max.X-10 || red.Max.Y >= green.Max.Y-10 {
		t.Errorf("the red cell %v is not a single top-left cell of %v", red, green)
	}
	// Cells are large enough to read.
	if red.Dx() < 60 || red.Dy() < 30 {
		t.Errorf("cell %v is small", red)
	}
}

// rptBoxOf is the bounding box of the pixels of colour c left of xmax.
func rptBoxOf(img image.Image, xmax int, c color.RGBA) image.Rectangle {
	var box image.Rectangle
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < xmax; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if rptNear(r>>8, c.R) && rptNear(g>>8, c.G) && rptNear(bl>>8, c.B) {
				box = box.Union(image.Rect(x, y, x+1, y+1))
			}
		}
	}
	return box
}

func rptNear(a uint32, b uint8) bool { return math.Abs(float64(a)-float64(b)) <= 3 }

func TestPlotsFromNoData(t *testing.T) {
	if jobs := plotPlan(nil); len(jobs) != 0 {
		t.Errorf("%d plots from nothing", len(jobs))
	}
	// One point, a constant, zeros: drawn without panics.
	recs := []Record{
		{Policy: "full", Task: "perplexity", Status: "ok", TaskParams: map[string]any{"tokens": 100},
			Curves: rptFixtureRecords()[0].Curves, Latency: Latency{P50: 5}, KV: KV{MaxResident: 1 << 20, Recall: 1}, Budget: 10},
		{Policy: "full", Task: "passkey", Status: "ok", TaskParams: map[string]any{"length": 100, "depth": 0},
			Metrics: map[string]float64{"accuracy": 0}, Latency: Latency{P50: 5}, KV: KV{Recall: 0}, Budget: 10},
	}
	jobs := plotPlan(recs)
	if len(jobs) == 0 {
		t.Fatal("no plots")
	}
	for _, j := range jobs {
		for _, f := range []string{"png", "svg"} {
			if _, err := plotRender(j.Fig, f); err != nil {
				t.Errorf("%s.%s: %v", j.Name, f, err)
			}
		}
	}
}
