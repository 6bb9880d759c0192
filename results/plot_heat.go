package results

// The heatmaps: depth × length grids of accuracy (HeatGrids) and their
// figures, a colour a cell from red at 0 through yellow to green at 1.

import (
	"fmt"
	"image/color"
	"math"
	"slices"
	"sort"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// ---------------------------------------------------------------------------
// The grids

// HeatCell is one cell of a depth × length grid.
type HeatCell struct {
	Value  float64 // mean accuracy of the cell's successful records (NaN: none)
	N      int     // successful records
	Failed int     // failed records
}

// HeatGrid is a depth × length accuracy grid of one task and one policy
// configuration, in display order: Rows are depths from the top of the
// picture down (shallowest, 0%, first), Cols are lengths from left to right
// (shortest first); Cells[row][col].
type HeatGrid struct {
	Task  string
	Label string
	Rows  []float64
	Cols  []float64
	Cells [][]HeatCell
}

// HeatGrids builds the grids of a task, one per policy configuration, all
// over the same depths and lengths (those of any record of the task), in
// label order. Records without a numeric length and depth are left out.
func HeatGrids(task string, records []Record) []HeatGrid {
	type key struct {
		label string
		d, n  float64
	}
	var depths, lengths []float64
	var labels []string
	cells := map[key]*HeatCell{}
	for i := range records {
		r := &records[i]
		if r.Task != task {
			continue
		}
		n, ok1 := plotParam(r, "length")
		d, ok2 := plotParam(r, "depth")
		if !ok1 || !ok2 {
			continue
		}
		acc, okAcc := plotAccuracy(r)
		if r.OK() && !okAcc {
			continue
		}
		l := PlotLabel(r)
		k := key{l, d, n}
		c := cells[k]
		if c == nil {
			c = &HeatCell{}
			cells[k] = c
		}
		if !slices.Contains(labels, l) {
			labels = append(labels, l)
		}
		if !slices.Contains(depths, d) {
			depths = append(depths, d)
		}
		if !slices.Contains(lengths, n) {
			lengths = append(lengths, n)
		}
		if r.OK() {
			c.Value += acc
			c.N++
		} else {
			c.Failed++
		}
	}
	sort.Strings(labels)
	sort.Float64s(depths)
	sort.Float64s(lengths)
	var out []HeatGrid
	for _, l := range labels {
		g := HeatGrid{Task: task, Label: l, Rows: depths, Cols: lengths}
		for _, d := range depths {
			row := make([]HeatCell, len(lengths))
			for j, n := range lengths {
				row[j] = HeatCell{Value: math.NaN()}
				if c := cells[key{l, d, n}]; c != nil {
					row[j] = *c
					if c.N > 0 {
						row[j].Value = c.Value / float64(c.N)
					} else {
						row[j].Value = math.NaN()
					}
				}
			}
			g.Cells = append(g.Cells, row)
		}
		out = append(out, g)
	}
	return out
}

// plotDepthLabels formats depths as percentages: fractions when all are <= 1,
// percentages already otherwise.
func plotDepthLabels(depths []float64) []string {
	frac := true
	for _, d := range depths {
		if d > 1 {
			frac = false
		}
	}
	out := make([]string, len(depths))
	for i, d := range depths {
		if frac {
			d *= 100
		}
		d = math.Round(d*1e4) / 1e4
		out[i] = strconv.FormatFloat(d, 'f', -1, 64) + "%"
	}
	return out
}

// ---------------------------------------------------------------------------
// The figures

// plotHeatStops are the colours from 0 (red) through yellow to 1 (green).
var plotHeatStops = []color.RGBA{
	{0xd7, 0x19, 0x1c, 0xff},
	{0xfd, 0xae, 0x61, 0xff},
	{0xff, 0xff, 0xbf, 0xff},
	{0xa6, 0xd9, 0x6a, 0xff},
	{0x1a, 0x96, 0x41, 0xff},
}

var (
	plotHeatFailedColor  = color.RGBA{0x8c, 0x8c, 0x8c, 0xff}
	plotHeatMissingColor = color.RGBA{0xee, 0xee, 0xee, 0xff}
)

// HeatColor is the colour of an accuracy in the heatmaps: red at 0 through
// yellow to green at 1 (values are clamped to [0, 1]).
func HeatColor(v float64) color.RGBA {
	if math.IsNaN(v) {
		return plotHeatMissingColor
	}
	v = min(max(v, 0), 1)
	f := v * float64(len(plotHeatStops)-1)
	i := int(f)
	if i >= len(plotHeatStops)-1 {
		return plotHeatStops[len(plotHeatStops)-1]
	}
	t := f - float64(i)
	a, b := plotHeatStops[i], plotHeatStops[i+1]
	mix := func(x, y uint8) uint8 { return uint8(math.Round(float64(x) + (float64(y)-float64(x))*t)) }
	return color.RGBA{mix(a.R, b.R), mix(a.G, b.G), mix(a.B, b.B), 0xff}
}

// plotHeatBar is the colour scale of the heatmaps, as vector strips (an image
// would be stretched out of shape in SVG).
type plotHeatBar struct{}

func (plotHeatBar) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	const n = 100
	x0, x1 := trX(0), trX(1)
	for i := range n {
		lo, hi := float64(i)/n, float64(i+1)/n
		y0, y1 := trY(lo), trY(hi)+vg.Points(0.3) // overlap: no seams
		c.FillPolygon(HeatColor((lo+hi)/2), []vg.Point{{X: x0, Y: y0}, {X: x1, Y: y0}, {X: x1, Y: y1}, {X: x0, Y: y1}})
	}
}

// plotHeatCellText is the annotation of a cell.
func plotHeatCellText(c HeatCell) string {
	var s string
	switch {
	case c.N == 0 && c.Failed > 0:
		return "failed"
	case c.N == 0:
		return "–"
	case c.Value >= 0 && c.Value <= 1:
		s = fmt.Sprintf("%.0f%%", c.Value*100)
	default:
		s = strconv.FormatFloat(c.Value, 'g', 3, 64)
	}
	if c.Failed > 0 {
		s += fmt.Sprintf("\n+%d failed", c.Failed)
	}
	return s
}

// plotHeatPlotter draws a HeatGrid in data coordinates: column j at x = j, row
// i (from the top) at y = rows-1-i, so that the first row is at the top.
type plotHeatPlotter struct{ g HeatGrid }

func (h plotHeatPlotter) DataRange() (xmin, xmax, ymin, ymax float64) {
	return -0.5, float64(len(h.g.Cols)) - 0.5, -0.5, float64(len(h.g.Rows)) - 0.5
}

func (h plotHeatPlotter) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	nr := len(h.g.Rows)
	border := draw.LineStyle{Color: color.White, Width: vg.Points(1.5)}
	for i, row := range h.g.Cells {
		y := float64(nr - 1 - i)
		for j, cell := range row {
			x := float64(j)
			x0, x1 := trX(x-0.5), trX(x+0.5)
			y0, y1 := trY(y-0.5), trY(y+0.5)
			fill := HeatColor(cell.Value)
			if cell.N == 0 && cell.Failed > 0 {
				fill = plotHeatFailedColor
			}
			rect := []vg.Point{{X: x0, Y: y0}, {X: x1, Y: y0}, {X: x1, Y: y1}, {X: x0, Y: y1}}
			c.FillPolygon(fill, rect)
			c.StrokeLines(border, append(rect, rect[0]))
			ink := color.Color(color.Black)
			if lum := 0.299*float64(fill.R) + 0.587*float64(fill.G) + 0.114*float64(fill.B); lum < 128 {
				ink = color.White
			}
			size := 12.0
			if cw := float64(x1-x0) / 4.5; cw < size {
				size = max(7, cw)
			}
			c.FillText(plotTextStyle(size, ink), vg.Point{X: (x0 + x1) / 2, Y: (y0 + y1) / 2}, plotHeatCellText(cell))
		}
	}
}

// plotHeatFigure draws a grid with its colour bar on the right.
func plotHeatFigure(g HeatGrid, title, ylabel string) plotFigure {
	return plotHeatFigureRows(g, title, ylabel, "accuracy", plotDepthLabels(g.Rows))
}

// plotHeatFigureRows draws a grid whose rows are labelled by rowLabels (top
// to bottom), its colour bar labelled barLabel.
func plotHeatFigureRows(g HeatGrid, title, ylabel, barLabel string, rowLabels []string) plotFigure {
	nr, nc := len(g.Rows), len(g.Cols)
	p := plotNew(title, "context length (tokens)", ylabel)
	p.Add(plotHeatPlotter{g})
	p.X.Min, p.X.Max = -0.5, float64(nc)-0.5
	p.Y.Min, p.Y.Max = -0.5, float64(nr)-0.5
	p.X.Padding, p.Y.Padding = 0, 0
	var xt, yt plot.ConstantTicks
	for j, n := range g.Cols {
		xt = append(xt, plot.Tick{Value: float64(j), Label: plotFormatNum(n)})
	}
	for i, l := range rowLabels {
		yt = append(yt, plot.Tick{Value: float64(nr - 1 - i), Label: l})
	}
	p.X.Tick.Marker = xt
	p.Y.Tick.Marker = yt
	p.X.Tick.Length, p.Y.Tick.Length = 0, 0
	p.X.LineStyle.Width, p.Y.LineStyle.Width = 0, 0

	cb := plot.New()
	cb.HideX()
	cb.Add(plotHeatBar{})
	cb.X.Min, cb.X.Max = 0, 1
	cb.Y.Min, cb.Y.Max = 0, 1
	cb.Y.Padding = 0
	cb.Y.Label.Text = barLabel
	cb.Y.Label.TextStyle.Font = plotFont(11)
	cb.Y.Tick.Label.Font = plotFont(10)
	cb.Y.Tick.Marker = plotPercentTicks()

	cbW := 1.15 * vg.Inch
	cellW := vg.Length(min(1.25, max(0.7, 9.0/float64(max(nc, 1))))) * vg.Inch
	cellH := vg.Length(min(0.6, max(0.4, 6.0/float64(max(nr, 1))))) * vg.Inch
	w := 1.6*vg.Inch + cellW*vg.Length(nc) + cbW
	h := 1.6*vg.Inch + cellH*vg.Length(nr)
	w, h = max(w, 6*vg.Inch), max(h, 3.5*vg.Inch)
	return plotFigure{W: w, H: h, Draw: func(c draw.Canvas) {
		c.SetColor(color.White)
		c.Fill(c.Rectangle.Path())
		margin := vg.Points(8)
		c = draw.Crop(c, margin, -margin, margin, -margin)
		hc := draw.Crop(c, 0, -cbW, 0, 0)
		p.Draw(hc)
		data := p.DataCanvas(hc)
		bc := c
		bc.Min.X = hc.Max.X + vg.Points(14)
		bc.Max.X = c.Max.X - vg.Points(28)
		bc.Min.Y, bc.Max.Y = data.Min.Y, data.Max.Y
		cb.Draw(bc)
	}}
}
