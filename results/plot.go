package results

// Plots of a suite's records (gonum/plot), each written as PNG and SVG:
// perplexity against tokens, passkey accuracy against length, depth × length
// heatmaps for passkey and needle, attention latency and KV memory against
// context length, and attention recall against budget.

import (
	"bytes"
	"fmt"
	"github.com/kvbench/kvbench/internal/num"
	"image/color"
	"maps"
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
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/tasks"
)

// Task names the plots know.
const (
	plotTaskPerplexity = "perplexity"
	plotTaskPasskey    = "passkey"
	plotTaskNeedle     = "needle"
)

// plotDPI is the resolution of the PNG files.
const plotDPI = 120

// PlotLabel is the label of a record's policy configuration in plots and
// legends: the policy's name and its parameters, in the order the policy
// documents them (others sorted after), e.g. "streamingllm sinks=4
// recent=1020".
func PlotLabel(r *Record) string {
	name := r.Policy
	if name == "" {
		name = "(none)"
	}
	if len(r.PolicyParams) == 0 {
		return name
	}
	var order []string
	seen := map[string]bool{}
	if spec, err := policies.Lookup(r.Policy); err == nil {
		for _, d := range spec.Params {
			if _, ok := r.PolicyParams[d.Name]; ok && !seen[d.Name] {
				order = append(order, d.Name)
				seen[d.Name] = true
			}
		}
	}
	var rest []string
	for k := range r.PolicyParams {
		if !seen[k] {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	order = append(order, rest...)
	var b strings.Builder
	b.WriteString(name)
	for _, k := range order {
		fmt.Fprintf(&b, " %s=%s", k, plotFormatAny(r.PolicyParams[k]))
	}
	return b.String()
}

// plotFormatAny formats a parameter value: integral numbers without a
// decimal point or exponent.
func plotFormatAny(v any) string {
	if f, ok := plotNumber(v); ok {
		if _, isStr := v.(string); !isStr {
			return plotFormatNum(f)
		}
	}
	return fmt.Sprint(v)
}

// plotFormatNum formats a number compactly: integers in full, others with
// up to 4 significant digits.
func plotFormatNum(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.FormatInt(int64(f), 10)
	}
	return strconv.FormatFloat(f, 'g', 4, 64)
}

// plotNumber reads a number from a parameter value (as a suite file or
// JSON decoding gives it).
func plotNumber(v any) (float64, bool) {
	x, ok := num.Float(v)
	return x, ok && !math.IsNaN(x) && !math.IsInf(x, 0)
}

// plotParam reads a numeric task parameter.
// A suite names the expanded parameters as written ("lengths", "depths"),
// so each name is also looked up in its plural form.
func plotParam(r *Record, name string) (float64, bool) {
	v, ok := r.TaskParams[name]
	if !ok {
		if v, ok = r.TaskParams[name+"s"]; !ok {
			return 0, false
		}
	}
	return plotNumber(v)
}

// plotContext is a record's context length: its task's "length", else
// "tokens" (perplexity).
func plotContext(r *Record) (float64, bool) {
	if x, ok := plotParam(r, "length"); ok && x > 0 {
		return x, true
	}
	if x, ok := plotParam(r, "tokens"); ok && x > 0 {
		return x, true
	}
	return 0, false
}

// plotAccuracy is a record's accuracy ("accuracy", else "score").
func plotAccuracy(r *Record) (float64, bool) {
	for _, k := range []string{"accuracy", "score"} {
		if v, ok := r.Metrics[k]; ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
			return v, true
		}
	}
	return 0, false
}

// plotIsNeedleTask reports whether a task is the needle-in-a-haystack task.
func plotIsNeedleTask(t string) bool {
	t = strings.ToLower(t)
	return t == plotTaskNeedle || t == "niah" || strings.HasPrefix(t, "needle")
}

// PlotFileName turns a label into a plain file-name part: lower case
// letters, digits, '.' and '-', other runs replaced by '_'.
func PlotFileName(s string) string {
	var b strings.Builder
	under := false
	for _, c := range strings.ToLower(s) {
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' {
			b.WriteRune(c)
			under = false
		} else if !under && b.Len() > 0 {
			b.WriteByte('_')
			under = true
		}
	}
	out := strings.Trim(b.String(), "_.")
	if out == "" {
		out = "x"
	}
	if len(out) > 80 {
		out = out[:80]
	}
	return out
}

// ---------------------------------------------------------------------------
// Data extraction

// plotSeries is one line of a chart.
type plotSeries struct {
	Label string
	Pts   []tasks.Point // sorted by X
}

// plotAgg accumulates values per series and X.
type plotAgg struct {
	order  []string
	series map[string]map[float64][]float64
}

func plotNewAgg() *plotAgg { return &plotAgg{series: map[string]map[float64][]float64{}} }

func (a *plotAgg) add(label string, x, y float64) {
	if math.IsNaN(x) || math.IsInf(x, 0) || math.IsNaN(y) || math.IsInf(y, 0) {
		return
	}
	m, ok := a.series[label]
	if !ok {
		m = map[float64][]float64{}
		a.series[label] = m
		a.order = append(a.order, label)
	}
	m[x] = append(m[x], y)
}

// result reduces the values at each X with reduce (mean or max) and
// returns the series sorted by label.
func (a *plotAgg) result(reduce func([]float64) float64) []plotSeries {
	labels := slices.Clone(a.order)
	sort.Strings(labels)
	var out []plotSeries
	for _, l := range labels {
		m := a.series[l]
		s := plotSeries{Label: l}
		for x, ys := range m {
			s.Pts = append(s.Pts, tasks.Point{X: x, Y: reduce(ys)})
		}
		sort.Slice(s.Pts, func(i, j int) bool { return s.Pts[i].X < s.Pts[j].X })
		if len(s.Pts) > 0 {
			out = append(out, s)
		}
	}
	return out
}

func plotMean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func plotMax(v []float64) float64 {
	m := v[0]
	for _, x := range v[1:] {
		m = max(m, x)
	}
	return m
}

// plotPPLSeries: perplexity per bucket of tokens, one series per policy
// configuration (Curves["ppl"], else exp of Curves["nll"]).
func plotPPLSeries(records []Record) []plotSeries {
	a := plotNewAgg()
	for i := range records {
		r := &records[i]
		if !r.OK() || NotApplicable(r) != "" {
			continue
		}
		pts, isNLL := r.Curves["ppl"], false
		if len(pts) == 0 {
			pts, isNLL = r.Curves["nll"], true
		}
		if len(pts) == 0 {
			continue
		}
		l := PlotLabel(r)
		for _, p := range pts {
			y := p.Y
			if isNLL {
				y = math.Exp(y)
			}
			if y > 0 {
				a.add(l, p.X, y)
			}
		}
	}
	return a.result(plotMean)
}

// plotAccuracyVsLength: mean accuracy per length (over depths) of one task.
func plotAccuracyVsLength(task string, records []Record) []plotSeries {
	a := plotNewAgg()
	for i := range records {
		r := &records[i]
		if r.Task != task || !r.OK() {
			continue
		}
		n, ok1 := plotParam(r, "length")
		acc, ok2 := plotAccuracy(r)
		if ok1 && ok2 {
			a.add(PlotLabel(r), n, acc)
		}
	}
	return a.result(plotMean)
}

// plotLatencySeries: attention p50 per context length (mean over cells).
func plotLatencySeries(records []Record) []plotSeries {
	a := plotNewAgg()
	for i := range records {
		r := &records[i]
		if !r.OK() || r.Latency.P50 <= 0 {
			continue
		}
		if n, ok := plotContext(r); ok {
			a.add(PlotLabel(r), n, r.Latency.P50)
		}
	}
	return a.result(plotMean)
}

// plotMemorySeries: max resident KV in MiB per context length (max over cells).
func plotMemorySeries(records []Record) []plotSeries {
	a := plotNewAgg()
	for i := range records {
		r := &records[i]
		if !r.OK() || r.KV.MaxResident <= 0 {
			continue
		}
		if n, ok := plotContext(r); ok {
			a.add(PlotLabel(r), n, float64(r.KV.MaxResident)/(1<<20))
		}
	}
	return a.result(plotMax)
}

// plotRecallSeries: mean sampled attention recall per budget, one series per
// policy.
func plotRecallSeries(records []Record) []plotSeries {
	a := plotNewAgg()
	for i := range records {
		r := &records[i]
		if !r.OK() || r.Budget <= 0 || r.KV.Recall < 0 || math.IsNaN(r.KV.Recall) || NotApplicable(r) != "" {
			continue
		}
		p := r.Policy
		if p == "" {
			p = "(none)"
		}
		a.add(p, float64(r.Budget), r.KV.Recall)
	}
	return a.result(plotMean)
}

// ---------------------------------------------------------------------------
// Figures

// plotFigure is a picture of a known size, drawn onto any canvas.
type plotFigure struct {
	W, H vg.Length
	Draw func(c draw.Canvas)
}

// plotSave writes dir/name.png and dir/name.svg. A drawing that panics
// (gonum/plot panics on some degenerate input) is returned as an error.
func plotSave(dir, name string, f plotFigure) (pngPath, svgPath string, err error) {
	pngBuf, err := plotRender(f, "png")
	if err != nil {
		return "", "", fmt.Errorf("plot %s: %w", name, err)
	}
	svgBuf, err := plotRender(f, "svg")
	if err != nil {
		return "", "", fmt.Errorf("plot %s: %w", name, err)
	}
	pngPath = filepath.Join(dir, name+".png")
	svgPath = filepath.Join(dir, name+".svg")
	if err := os.WriteFile(pngPath, pngBuf, 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(svgPath, svgBuf, 0o644); err != nil {
		return "", "", err
	}
	return pngPath, svgPath, nil
}

func plotRender(f plotFigure, format string) (out []byte, err error) {
	defer func() {
		if e := recover(); e != nil {
			err = fmt.Errorf("drawing %s: %v", format, e)
		}
	}()
	var buf bytes.Buffer
	switch format {
	case "png":
		c := vgimg.NewWith(vgimg.UseWH(f.W, f.H), vgimg.UseDPI(plotDPI))
		f.Draw(draw.New(c))
		_, err = vgimg.PngCanvas{Canvas: c}.WriteTo(&buf)
	case "svg":
		c := vgsvg.New(f.W, f.H)
		f.Draw(draw.New(c))
		_, err = c.WriteTo(&buf)
	default:
		err = fmt.Errorf("unknown format %q", format)
	}
	return buf.Bytes(), err
}

// plotLineChart describes a chart of lines with points, one per series.
type plotLineChart struct {
	Title, XLabel, YLabel string
	Series                []plotSeries
	Styler                plotStyler
	// Unit range: Y fixed to [0, 1], labelled in percent.
	UnitY bool
	// LogX, LogY: log scales when all values are positive and the range
	// spans more than the given factor (0: never).
	LogXFactor, LogYFactor float64
	// XValueTicks labels the X axis at the data's X values when there are
	// few of them.
	XValueTicks bool
	// Extra are drawn after the lines (a Pareto frontier); they must
	// share the chart's scales.
	Extra []plot.Plotter
	// YFormat and XFormat format the ticks' values (nil: the default).
	YFormat, XFormat func(float64) string
}

// plotDodge gives each series an offset, in steps, for its markers: 0
// unless other series have the same points, then centred around 0 (-1, 0,
// 1 for three) in series order. Series for which top is true (full
// attention, drawn on top with larger rings) are not moved.
func plotDodge(ss []plotSeries, top func(string) bool) []float64 {
	keys := make([]string, len(ss))
	groups := map[string][]int{}
	for i, s := range ss {
		if top(s.Label) {
			continue
		}
		var b strings.Builder
		for _, p := range s.Pts {
			fmt.Fprintf(&b, "%.4g,%.4g;", p.X, p.Y)
		}
		keys[i] = b.String()
		groups[keys[i]] = append(groups[keys[i]], i)
	}
	out := make([]float64, len(ss))
	for _, g := range groups {
		if len(g) < 2 {
			continue
		}
		for k, i := range g {
			out[i] = float64(k) - float64(len(g)-1)/2
		}
	}
	return out
}

func plotSeriesRange(ss []plotSeries) (xmin, xmax, ymin, ymax float64, xs []float64) {
	xmin, ymin = math.Inf(1), math.Inf(1)
	xmax, ymax = math.Inf(-1), math.Inf(-1)
	for _, s := range ss {
		for _, p := range s.Pts {
			xmin, xmax = min(xmin, p.X), max(xmax, p.X)
			ymin, ymax = min(ymin, p.Y), max(ymax, p.Y)
			if !slices.Contains(xs, p.X) {
				xs = append(xs, p.X)
			}
		}
	}
	sort.Float64s(xs)
	return
}

// figure is the chart with its legend on the right.
func (ch plotLineChart) figure() plotFigure { return plotFigureOf(ch.build()) }

// build makes the plot and its legend. A log axis is drawn as a linear
// axis over log10 of the values, with ticks labelled in values (gonum/plot
// misplaces a long axis label on its own log scale).
func (ch plotLineChart) build() (*plot.Plot, plot.Legend) {
	xmin, xmax, ymin, ymax, xs := plotSeriesRange(ch.Series)
	logX := ch.LogXFactor > 0 && xmin > 0 && xmax/xmin > ch.LogXFactor
	logY := !ch.UnitY && ch.LogYFactor > 0 && ymin > 0 && ymax/ymin > ch.LogYFactor
	fx, fy := plotIdentity, plotIdentity
	if logX {
		fx = math.Log10
	}
	if logY {
		fy = math.Log10
	}

	p := plotNew(ch.Title, ch.XLabel, ch.YLabel)
	grid := plotter.NewGrid()
	grid.Vertical.Color = color.Gray{Y: 220}
	grid.Horizontal.Color = color.Gray{Y: 220}
	p.Add(grid)

	leg := plot.NewLegend()
	leg.TextStyle.Font = plotFont(11)
	leg.Top, leg.Left = true, true
	leg.ThumbnailWidth = vg.Points(34)
	leg.Padding = vg.Points(5)

	var top []plot.Plotter
	dodge := plotDodge(ch.Series, func(l string) bool { return ch.Styler.style(l).Top })
	step := 0.01 * (fx(xmax) - fx(xmin))
	if step <= 0 {
		step = 0.01
	}
	for si, s := range ch.Series {
		xys := make(plotter.XYs, 0, len(s.Pts))
		for _, pt := range s.Pts {
			if (logX && pt.X <= 0) || (logY && pt.Y <= 0) {
				continue
			}
			xys = append(xys, plotter.XY{X: fx(pt.X), Y: fy(pt.Y)})
		}
		if len(xys) == 0 {
			continue
		}
		st := ch.Styler.style(s.Label)
		line, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			continue
		}
		line.Color = st.Color
		line.Width = st.Width
		line.Dashes = st.Dashes
		pts.Color = st.Color
		pts.Shape = st.Shape
		pts.Radius = st.Radius
		if dodge[si] != 0 {
			// Lines with the same points: the markers side by side.
			moved := make(plotter.XYs, len(xys))
			for k, q := range xys {
				moved[k] = plotter.XY{X: q.X + dodge[si]*step, Y: q.Y}
			}
			if sc, err := plotter.NewScatter(moved); err == nil {
				sc.GlyphStyle = pts.GlyphStyle
				pts = sc
			}
		}
		if st.Top {
			top = append(top, line, pts)
		} else {
			p.Add(line, pts)
		}
		leg.Add(s.Label, line, pts)
	}
	// Full attention last, on top of policies with the same values.
	p.Add(top...)
	p.Add(ch.Extra...)

	switch {
	case logX:
		// A little room either side.
		p.X.Min, p.X.Max = fx(xmin/1.12), fx(xmax*1.12)
		p.X.Tick.Marker = plotLog10Ticks{}
	case xmin == xmax:
		d := max(1, math.Abs(xmin)*0.1)
		p.X.Min, p.X.Max = xmin-d, xmax+d
	default:
		d := (xmax - xmin) * 0.04
		p.X.Min, p.X.Max = xmin-d, xmax+d
		if xmin >= 0 && p.X.Min < 0 {
			p.X.Min = 0
		}
	}
	if ch.XValueTicks && len(xs) <= 10 {
		var t plot.ConstantTicks
		for _, v := range xs {
			t = append(t, plot.Tick{Value: fx(v), Label: plotFormatNum(v)})
		}
		p.X.Tick.Marker = t
	}
	switch {
	case ch.UnitY:
		p.Y.Min, p.Y.Max = 0, 1
		p.Y.Tick.Marker = plotPercentTicks()
	case logY:
		// From an integer multiple of a power of ten to another, both
		// labelled.
		p.Y.Min, p.Y.Max = fy(plotNiceFloor(ymin/1.04)), fy(plotNiceCeil(ymax*1.04))
		p.Y.Tick.Marker = plotLog10Ticks{}
	default:
		lo, hi := ymin, ymax
		if lo == hi {
			lo, hi = lo-max(1, math.Abs(lo)*0.1), hi+max(1, math.Abs(hi)*0.1)
		} else {
			pad := (hi - lo) * 0.06
			lo, hi = lo-pad, hi+pad
		}
		if ymin >= 0 && lo < 0 {
			lo = 0
		}
		p.Y.Min, p.Y.Max = lo, hi
	}
	if ch.YFormat != nil && !ch.UnitY {
		p.Y.Tick.Marker = plotFormattedTicks{Inner: p.Y.Tick.Marker, Format: ch.YFormat, Log: logY}
	}
	if ch.XFormat != nil {
		p.X.Tick.Marker = plotFormattedTicks{Inner: p.X.Tick.Marker, Format: ch.XFormat, Log: logX}
	}

	return p, leg
}

// plotFormattedTicks relabels the labelled ticks of another ticker with a
// formatter of the values (10^value on a log axis).
type plotFormattedTicks struct {
	Inner  plot.Ticker
	Format func(float64) string
	Log    bool
}

// Ticks implements plot.Ticker.
func (t plotFormattedTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := t.Inner.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label == "" {
			continue
		}
		v := ts[i].Value
		if t.Log {
			v = math.Pow(10, v)
		}
		ts[i].Label = t.Format(v)
	}
	return ts
}

// plotFigureOf lays the chart out with its legend in a column on the right,
// the figure widened to fit the labels.
func plotFigureOf(p *plot.Plot, leg plot.Legend) plotFigure {
	legW := leg.Rectangle(draw.Canvas{}).Size().X
	legH := leg.Rectangle(draw.Canvas{}).Size().Y
	gap := vg.Points(16)
	plotW := 7.5 * vg.Inch
	w := plotW + gap + legW + vg.Points(12)
	h := max(5*vg.Inch, legH+vg.Inch)
	return plotFigure{W: w, H: h, Draw: func(c draw.Canvas) {
		c.SetColor(color.White)
		c.Fill(c.Rectangle.Path())
		margin := vg.Points(8)
		c = draw.Crop(c, margin, -margin, margin, -margin)
		pc := draw.Crop(c, 0, -(gap + legW), 0, 0)
		p.Draw(pc)
		data := p.DataCanvas(pc)
		lc := c
		lc.Min.X = pc.Max.X + gap
		lc.Max.Y = data.Max.Y
		lc.Min.Y = c.Min.Y
		leg.Draw(lc)
	}}
}

// ---------------------------------------------------------------------------
// The report's plots

// plotJob is one figure of the report.
type plotJob struct {
	Name    string // file name without extension
	Title   string
	Section string // task name, or "cost" / "recall"
	Fig     plotFigure
}

// Plot sections that are not tasks.
const (
	plotSectionCost   = "cost"
	plotSectionRecall = "recall"
)

// plotPlan lists the report's figures; those without data are left out.
func plotPlan(records []Record) []plotJob {
	var labels []string
	for i := range records {
		labels = append(labels, PlotLabel(&records[i]), chartLineLabel(&records[i]))
	}
	styler := plotNewStyler(labels)
	var jobs []plotJob
	used := map[string]bool{}
	unique := func(name string) string {
		n := name
		for k := 2; used[n]; k++ {
			n = fmt.Sprintf("%s-%d", name, k)
		}
		used[n] = true
		return n
	}

	if s := plotPPLSeries(records); len(s) > 0 {
		t := "Perplexity vs tokens"
		jobs = append(jobs, plotJob{unique("ppl_vs_tokens"), t, plotTaskPerplexity, plotLineChart{
			Title: t, XLabel: "tokens", YLabel: "perplexity", Series: s, Styler: styler,
			LogXFactor: 10, LogYFactor: 10, XValueTicks: true,
		}.figure()})
	}
	if s := plotAccuracyVsLength(plotTaskPasskey, records); len(s) > 0 {
		t := "Passkey accuracy vs context length"
		jobs = append(jobs, plotJob{unique("passkey_accuracy"), t, plotTaskPasskey, plotLineChart{
			Title: t, XLabel: "context length (tokens)", YLabel: "accuracy (mean over depths)",
			Series: s, Styler: styler, UnitY: true, LogXFactor: 7, XValueTicks: true,
		}.figure()})
	}
	for _, g := range HeatGrids(plotTaskPasskey, records) {
		t := "Passkey accuracy: " + g.Label
		jobs = append(jobs, plotJob{unique("passkey_heatmap_" + PlotFileName(g.Label)), t, plotTaskPasskey, plotHeatFigure(g, t, "passkey depth")})
	}
	needleTasks := map[string]bool{}
	for i := range records {
		if plotIsNeedleTask(records[i].Task) {
			needleTasks[records[i].Task] = true
		}
	}
	for _, task := range slices.Sorted(maps.Keys(needleTasks)) {
		for _, g := range HeatGrids(task, records) {
			t := "Needle in a haystack: " + g.Label
			if task != plotTaskNeedle {
				t = task + ": " + g.Label
			}
			jobs = append(jobs, plotJob{unique("needle_heatmap_" + PlotFileName(g.Label)), t, task, plotHeatFigure(g, t, "needle depth")})
		}
	}
	for _, task := range chartTasks(records) {
		for _, j := range []*plotJob{chartBudgetJob(task, records, styler, unique), chartParetoJob(task, records, styler, unique)} {
			if j != nil {
				jobs = append(jobs, *j)
			}
		}
	}
	jobs = append(jobs, rulerPlotJobs(records, styler, unique)...)
	jobs = append(jobs, chartCostJobs(records, styler, unique)...)
	if s := plotRecallSeries(records); len(s) > 0 {
		var names []string
		for _, x := range s {
			names = append(names, x.Label)
		}
		t := "Attention recall vs budget"
		jobs = append(jobs, plotJob{unique("recall_vs_budget"), t, plotSectionRecall, plotLineChart{
			Title: t, XLabel: "budget (tokens)", YLabel: "sampled attention recall",
			Series: s, Styler: plotNewStyler(names), UnitY: true, LogXFactor: 7, XValueTicks: true,
		}.figure()})
	}
	return jobs
}
