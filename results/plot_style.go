package results

// The plots' looks: each policy's colour, dash and mark (full attention
// black), the report's fonts, and the axes' ticks (log scales, percentages).

import (
	"fmt"
	"hash/fnv"
	"image/color"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// ---------------------------------------------------------------------------
// Styles

// plotColors is the palette of the policies: twelve colours told apart on
// screen and in print, none black (full attention's).
var plotColors = []color.RGBA{
	{0x1f, 0x77, 0xb4, 0xff}, // blue
	{0xff, 0x7f, 0x0e, 0xff}, // orange
	{0x2c, 0xa0, 0x2c, 0xff}, // green
	{0xd6, 0x27, 0x28, 0xff}, // red
	{0x94, 0x67, 0xbd, 0xff}, // purple
	{0x8c, 0x56, 0x4b, 0xff}, // brown
	{0xe3, 0x77, 0xc2, 0xff}, // pink
	{0xbc, 0xbd, 0x22, 0xff}, // olive
	{0x17, 0xbe, 0xcf, 0xff}, // cyan
	{0x00, 0x2f, 0x6c, 0xff}, // navy
	{0x7f, 0x7f, 0x7f, 0xff}, // grey
	{0x00, 0x80, 0x80, 0xff}, // teal
}

// plotFullColor is full attention's colour, drawn last, on top of the
// others.
var plotFullColor = color.RGBA{0, 0, 0, 0xff}

// plotPolicyOrder fixes each known policy's place in the palette, dash
// patterns and markers, so that a policy looks the same in every chart and
// every report; other policies take a place from a hash of their name.
var plotPolicyOrder = []string{"window", "streamingllm", "h2o", "tova", "snapkv", "pyramidkv", "quest", "oracle", "random"}

var plotDashes = [][]vg.Length{
	nil,
	{vg.Points(7), vg.Points(3)},
	{vg.Points(2), vg.Points(2)},
	{vg.Points(7), vg.Points(2), vg.Points(2), vg.Points(2)},
	{vg.Points(12), vg.Points(3), vg.Points(3), vg.Points(3)},
}

var plotShapes = []draw.GlyphDrawer{
	draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{},
	draw.PyramidGlyph{}, draw.CrossGlyph{}, draw.PlusGlyph{}, draw.BoxGlyph{},
}

// plotStyle is how one line is drawn.
type plotStyle struct {
	Color  color.RGBA
	Dashes []vg.Length
	Shape  draw.GlyphDrawer
	Width  vg.Length
	Radius vg.Length
	Top    bool // drawn after the others (full attention)
}

// plotPolicyIndex is a policy's place in the palette: its place among the
// known policies, else one from a hash of its name.
func plotPolicyIndex(policy string) int {
	if i := slices.Index(plotPolicyOrder, policy); i >= 0 {
		return i
	}
	h := fnv.New32a()
	h.Write([]byte(policy))
	return len(plotPolicyOrder) + int(h.Sum32()%uint32(len(plotColors)-len(plotPolicyOrder)))
}

// plotPolicyStyle is the style of a policy's variant-th configuration
// (0: its first). The colour is the policy's; the dash pattern and marker
// are the policy's for its first configuration and shift for the others.
// Full attention is black, thick, dashed and ringed, drawn on top, so that
// a policy with the same values shows through its gaps.
func plotPolicyStyle(policy string, variant int) plotStyle {
	if policy == "full" {
		return plotStyle{
			Color: plotFullColor, Dashes: []vg.Length{vg.Points(6), vg.Points(4)},
			Shape: draw.RingGlyph{}, Width: vg.Points(2.5), Radius: vg.Points(5.5), Top: true,
		}
	}
	i := plotPolicyIndex(policy)
	return plotStyle{
		Color:  plotColors[i%len(plotColors)],
		Dashes: plotDashes[(i+variant)%len(plotDashes)],
		Shape:  plotShapes[(i+3*variant)%len(plotShapes)],
		Width:  vg.Points(2),
		Radius: vg.Points(3.5),
	}
}

// plotLabelPolicy is the policy named by a label: its first word, after a
// model's "model / " prefix.
func plotLabelPolicy(label string) string {
	if i := strings.LastIndex(label, " / "); i >= 0 {
		label = label[i+3:]
	}
	if f := strings.Fields(label); len(f) > 0 {
		return f[0]
	}
	return label
}

// plotStyler gives each label a stable style: its policy's colour, and a
// variant by the label's place among the sorted labels of its policy in the
// whole report, so that a configuration looks the same in every chart.
type plotStyler map[string]int

func plotNewStyler(labels []string) plotStyler {
	labels = slices.Clone(labels)
	sort.Strings(labels)
	labels = slices.Compact(labels)
	s := plotStyler{}
	n := map[string]int{}
	for _, l := range labels {
		p := plotLabelPolicy(l)
		s[l] = n[p]
		n[p]++
	}
	return s
}

// style is the label's style; a label the styler has not seen takes the
// next variant of its policy.
func (s plotStyler) style(label string) plotStyle {
	p := plotLabelPolicy(label)
	v, ok := s[label]
	if !ok {
		for l, lv := range s {
			if plotLabelPolicy(l) == p {
				v = max(v, lv+1)
			}
		}
		s[label] = v
	}
	return plotPolicyStyle(p, v)
}

func plotFont(size float64) font.Font {
	return font.From(plot.DefaultFont, vg.Points(size))
}

func plotTextStyle(size float64, c color.Color) text.Style {
	return text.Style{
		Color:   c,
		Font:    plotFont(size),
		XAlign:  draw.XCenter,
		YAlign:  draw.YCenter,
		Handler: plot.DefaultTextHandler,
	}
}

// plotNew is a plot with the report's fonts.
func plotNew(title, xlabel, ylabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font = plotFont(15)
	p.Title.Padding = vg.Points(10)
	p.X.Label.Text = xlabel
	p.Y.Label.Text = ylabel
	for _, ax := range []*plot.Axis{&p.X, &p.Y} {
		ax.Label.TextStyle.Font = plotFont(12)
		ax.Tick.Label.Font = plotFont(10)
		ax.Label.Padding = vg.Points(4)
	}
	return p
}

// ---------------------------------------------------------------------------
// Ticks

func plotIdentity(x float64) float64 { return x }

// plotNiceFloor rounds a positive number down to an integer multiple of its
// power of ten (4.56 → 4, 182 → 100); plotNiceCeil rounds up (182 → 200).
func plotNiceFloor(v float64) float64 {
	b := math.Pow(10, math.Floor(math.Log10(v)))
	return math.Floor(v/b*(1+1e-12)) * b
}

func plotNiceCeil(v float64) float64 {
	b := math.Pow(10, math.Floor(math.Log10(v)))
	return math.Ceil(v/b*(1-1e-12)) * b
}

// plotLog10Ticks are ticks for an axis over log10 of the values: 1, 2 and 5
// times powers of ten are labelled (in values), the other integer multiples
// are minor ticks.
type plotLog10Ticks struct{}

func (plotLog10Ticks) Ticks(lo, hi float64) []plot.Tick {
	vlo, vhi := math.Pow(10, lo), math.Pow(10, hi)
	var ticks []plot.Tick
	labelled := 0
	for e := math.Floor(lo); e <= math.Ceil(hi); e++ {
		base := math.Pow(10, e)
		for m := 1; m <= 9; m++ {
			v := float64(m) * base
			if v < vlo*(1-1e-9) || v > vhi*(1+1e-9) {
				continue
			}
			t := plot.Tick{Value: math.Log10(v)}
			end := math.Abs(t.Value-lo) < 1e-9 || math.Abs(t.Value-hi) < 1e-9
			if m == 1 || m == 2 || m == 5 || end {
				t.Label = strconv.FormatFloat(v, 'g', 6, 64)
				labelled++
			}
			ticks = append(ticks, t)
		}
	}
	if labelled < 2 {
		// A narrow range: label the ends too.
		ticks = append(ticks,
			plot.Tick{Value: lo, Label: strconv.FormatFloat(vlo, 'g', 3, 64)},
			plot.Tick{Value: hi, Label: strconv.FormatFloat(vhi, 'g', 3, 64)})
	}
	return ticks
}

// plotPercentTicks labels a [0, 1] axis in percent.
func plotPercentTicks() plot.Ticker {
	var t plot.ConstantTicks
	for _, v := range []float64{0, 0.25, 0.5, 0.75, 1} {
		t = append(t, plot.Tick{Value: v, Label: fmt.Sprintf("%.0f%%", v*100)})
	}
	return t
}
