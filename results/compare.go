package results

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"
)

// Direction says which way a metric improves.
type Direction int

const (
	Unknown      Direction = iota // reported, never gated
	HigherBetter                  // accuracy, score
	LowerBetter                   // ppl, nll, latency
)

func (d Direction) String() string {
	switch d {
	case HigherBetter:
		return "higher"
	case LowerBetter:
		return "lower"
	}
	return "unknown"
}

// metricFamily is a known kind of metric: its direction and the threshold
// key that gates it when the metric's own name is not a key.
type metricFamily struct {
	dir Direction
	key string // threshold key of the family ("" : only the metric's own key)
}

// knownMetrics maps a metric name, or the first word of one ("ppl" of
// "ppl_final", "accuracy" of "accuracy@4k"), to its family. The Record does
// not carry directions, so they are kept here.
var knownMetrics = map[string]metricFamily{
	"accuracy":    {HigherBetter, "accuracy"},
	"acc":         {HigherBetter, "accuracy"},
	"score":       {HigherBetter, "accuracy"},
	"exact_match": {HigherBetter, "accuracy"},
	"em":          {HigherBetter, "accuracy"},
	"f1":          {HigherBetter, "accuracy"},
	"pass":        {HigherBetter, "accuracy"},
	"success":     {HigherBetter, "accuracy"},
	"ppl":         {LowerBetter, "ppl"},
	"perplexity":  {LowerBetter, "ppl"},
	"nll":         {LowerBetter, ""},
	"loss":        {LowerBetter, ""},
	"bpb":         {LowerBetter, ""},
	"bpc":         {LowerBetter, ""},
	"latency":     {LowerBetter, ""},
	"time":        {LowerBetter, ""},
	"error":       {LowerBetter, ""},
}

// Names of the measurements compared besides the task metrics.
const (
	MetricLatencyP50  = "latency_p50"     // Latency.P50 (µs), noise-aware
	MetricKVMax       = "kv_max_resident" // KV.MaxResident (bytes)
	MetricBytesRead   = "kv_bytes_read"   // KV.BytesRead per step
	MetricTokensPerS  = "tokens_per_s"    // Throughput
	latencyMinSamples = 5
	latencyAlpha      = 0.05
)

var extraMetrics = map[string]metricFamily{
	MetricLatencyP50: {LowerBetter, MetricLatencyP50},
	MetricKVMax:      {LowerBetter, ""},
	MetricBytesRead:  {LowerBetter, ""},
	MetricTokensPerS: {HigherBetter, ""},
}

func familyOf(metric string) (metricFamily, bool) {
	if f, ok := extraMetrics[metric]; ok {
		return f, true
	}
	name := strings.ToLower(metric)
	if f, ok := knownMetrics[name]; ok {
		return f, true
	}
	first := strings.FieldsFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	})
	if len(first) > 0 {
		if f, ok := knownMetrics[first[0]]; ok {
			return f, true
		}
	}
	return metricFamily{}, false
}

// MetricDirection returns the direction of a metric name: exact names
// (accuracy, score, ppl, nll, ...) or names whose first word is one
// ("ppl_final", "accuracy@4k"); Unknown otherwise.
func MetricDirection(metric string) Direction {
	f, _ := familyOf(metric)
	return f.dir
}

// DefaultThresholds are the gates Compare uses when given a nil map.
var DefaultThresholds = map[string]float64{
	"accuracy":       0.02,
	"ppl":            0.05,
	MetricLatencyP50: 0.10,
}

// ParseThresholds parses "accuracy=0.02,ppl=0.05,latency_p50=0.10".
// A key is a metric name or a family ("accuracy" also gates score and the
// like, absolute drop; "ppl" gates perplexities, relative increase;
// "latency_p50" the attention latency, relative increase). Values are
// non-negative numbers. An empty string gives an empty map (nothing gated).
func ParseThresholds(s string) (map[string]float64, error) {
	m := map[string]float64{}
	if strings.TrimSpace(s) == "" {
		return m, nil
	}
	for i, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		key, val, ok := strings.Cut(item, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch {
		case item == "":
			return nil, fmt.Errorf("thresholds: item %d is empty (in %q)", i+1, s)
		case !ok:
			return nil, fmt.Errorf("thresholds: item %d %q: want metric=value", i+1, item)
		case key == "" || strings.ContainsAny(key, " \t"):
			return nil, fmt.Errorf("thresholds: item %d %q: bad metric name %q", i+1, item, key)
		}
		v, err := strconv.ParseFloat(strings.TrimSuffix(val, "%"), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return nil, fmt.Errorf("thresholds: item %d %q: value %q is not a non-negative number", i+1, item, val)
		}
		if strings.HasSuffix(val, "%") {
			v /= 100
		}
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("thresholds: item %d %q: %s given twice", i+1, item, key)
		}
		m[key] = v
	}
	return m, nil
}

// Verdicts of a Change.
const (
	VerdictSame         = "same"
	VerdictImproved     = "improved"
	VerdictWorse        = "worse"      // worse, within the threshold
	VerdictRegression   = "REGRESSION" // worse beyond the threshold (and significant, for latency)
	VerdictNoise        = "noise"      // latency beyond the threshold but not significant
	VerdictInsufficient = "insufficient samples"
	VerdictChanged      = "changed" // unknown direction
	VerdictMissing      = "missing"
	VerdictFailed       = "failed"
)

// Change is the comparison of one metric of one cell.
type Change struct {
	Cell      string
	Metric    string
	Base, New float64 // NaN where absent
	Delta     float64 // New - Base
	Rel       float64 // Delta / |Base| (NaN when Base is 0)
	Direction Direction
	// Threshold is the gate applied (see ParseThresholds); Gated is false
	// when no threshold applies to the metric.
	Threshold float64
	Gated     bool
	// P is the Mann-Whitney p-value of the latency samples (NaN if not run).
	P          float64
	Verdict    string
	Regression bool
	Note       string
}

// Comparison is the result of Compare.
type Comparison struct {
	Changes  []Change
	OnlyBase []string // cells in base only
	OnlyNew  []string // cells in new only
	Notes    []string
}

// Compare matches the cells of base and new by Cell key and compares every
// task metric, the attention latency p50 and the cache's and throughput
// figures. A metric regresses when it moves in its worse direction beyond
// its threshold: thresholds[metric] if present, else its family's key
// ("accuracy": absolute drop, for accuracy, score...; "ppl": relative
// increase; other lower-is-better keys relative increase, other
// higher-is-better keys relative drop). latency_p50 regresses only when,
// beyond its threshold, the Mann-Whitney test of the latency samples also
// gives p < 0.05 (with fewer than 5 samples on a side it is not gated).
// Metrics of unknown direction, or without a threshold, are reported and
// not gated. A cell that succeeded in base and failed in new is a
// regression. A nil thresholds map means DefaultThresholds.
func Compare(base, new []Record, thresholds map[string]float64) (*Comparison, error) {
	if thresholds == nil {
		thresholds = DefaultThresholds
	}
	for k, v := range thresholds {
		if math.IsNaN(v) || v < 0 {
			return nil, fmt.Errorf("compare: threshold %s=%v must be a non-negative number", k, v)
		}
	}
	bm, bdup := byCell(base)
	nm, ndup := byCell(new)
	c := &Comparison{}
	for _, d := range bdup {
		c.Notes = append(c.Notes, fmt.Sprintf("base: cell %s appears more than once; the last record is used", d))
	}
	for _, d := range ndup {
		c.Notes = append(c.Notes, fmt.Sprintf("new: cell %s appears more than once; the last record is used", d))
	}
	cells := make([]string, 0, len(bm))
	for k := range bm {
		if _, ok := nm[k]; ok {
			cells = append(cells, k)
		} else {
			c.OnlyBase = append(c.OnlyBase, k)
		}
	}
	for k := range nm {
		if _, ok := bm[k]; !ok {
			c.OnlyNew = append(c.OnlyNew, k)
		}
	}
	sort.Strings(cells)
	sort.Strings(c.OnlyBase)
	sort.Strings(c.OnlyNew)
	for _, cell := range cells {
		c.compareCell(bm[cell], nm[cell], thresholds)
	}
	return c, nil
}

func byCell(recs []Record) (map[string]*Record, []string) {
	m := make(map[string]*Record, len(recs))
	var dups []string
	for i := range recs {
		if _, ok := m[recs[i].Cell]; ok {
			dups = append(dups, recs[i].Cell)
		}
		m[recs[i].Cell] = &recs[i]
	}
	sort.Strings(dups)
	return m, dups
}

func (c *Comparison) compareCell(b, n *Record, th map[string]float64) {
	cell := b.Cell
	if b.TaskVersion != n.TaskVersion {
		c.Notes = append(c.Notes, fmt.Sprintf("cell %s: task version %d in base, %d in new; its metrics may not be comparable", cell, b.TaskVersion, n.TaskVersion))
	}
	switch {
	case b.OK() && !n.OK():
		c.Changes = append(c.Changes, Change{Cell: cell, Metric: "status", Base: math.NaN(), New: math.NaN(),
			Delta: math.NaN(), Rel: math.NaN(), P: math.NaN(), Verdict: VerdictRegression, Regression: true,
			Note: "failed in new: " + oneLine(n.Error)})
		return
	case !b.OK() && n.OK():
		c.Notes = append(c.Notes, fmt.Sprintf("cell %s: failed in base (%s), ok in new", cell, oneLine(b.Error)))
		return
	case !b.OK() && !n.OK():
		c.Notes = append(c.Notes, fmt.Sprintf("cell %s: failed in both (new: %s)", cell, oneLine(n.Error)))
		return
	}

	names := map[string]bool{}
	for k := range b.Metrics {
		names[k] = true
	}
	for k := range n.Metrics {
		names[k] = true
	}
	metrics := make([]string, 0, len(names))
	for k := range names {
		metrics = append(metrics, k)
	}
	sortMetrics(metrics)
	for _, m := range metrics {
		bv, bok := b.Metrics[m]
		nv, nok := n.Metrics[m]
		if !bok || !nok {
			ch := Change{Cell: cell, Metric: m, Base: math.NaN(), New: math.NaN(), Delta: math.NaN(),
				Rel: math.NaN(), P: math.NaN(), Direction: MetricDirection(m), Verdict: VerdictMissing}
			if bok {
				ch.Base, ch.Note = bv, "absent in new"
			} else {
				ch.New, ch.Note = nv, "absent in base"
			}
			c.Changes = append(c.Changes, ch)
			continue
		}
		c.Changes = append(c.Changes, judge(cell, m, bv, nv, th))
	}

	if b.Latency.P50 > 0 || n.Latency.P50 > 0 {
		c.Changes = append(c.Changes, judgeLatency(cell, b, n, th))
	}
	if b.KV.MaxResident > 0 || n.KV.MaxResident > 0 {
		c.Changes = append(c.Changes, judge(cell, MetricKVMax, float64(b.KV.MaxResident), float64(n.KV.MaxResident), th))
	}
	if b.KV.BytesRead > 0 || n.KV.BytesRead > 0 {
		c.Changes = append(c.Changes, judge(cell, MetricBytesRead, b.KV.BytesRead, n.KV.BytesRead, th))
	}
	if b.Throughput > 0 || n.Throughput > 0 {
		c.Changes = append(c.Changes, judge(cell, MetricTokensPerS, b.Throughput, n.Throughput, th))
	}
}

// threshold finds the gate of a metric: its own key, else its family's.
func threshold(metric string, fam metricFamily, th map[string]float64) (float64, string, bool) {
	if v, ok := th[metric]; ok {
		return v, metric, true
	}
	if fam.key != "" {
		if v, ok := th[fam.key]; ok {
			return v, fam.key, true
		}
		if fam.key == "accuracy" {
			if v, ok := th["score"]; ok {
				return v, "score", true
			}
		}
	}
	return 0, "", false
}

func newChange(cell, metric string, bv, nv float64) Change {
	ch := Change{Cell: cell, Metric: metric, Base: bv, New: nv, Delta: nv - bv, P: math.NaN()}
	ch.Rel = math.NaN()
	if bv != 0 {
		ch.Rel = (nv - bv) / math.Abs(bv)
	} else if nv == 0 {
		ch.Rel = 0
	}
	return ch
}

// worse returns how much worse the change is, in the gate's terms: an
// absolute drop for the accuracy family, else a relative change in the
// worse direction. Positive is worse.
func worse(ch Change, absolute bool) float64 {
	var d float64
	if absolute {
		d = ch.Delta
	} else {
		d = ch.Rel
		if math.IsNaN(d) { // base 0: any worsening is infinitely large
			d = math.Copysign(math.Inf(1), ch.Delta)
		}
	}
	if ch.Direction == HigherBetter {
		return -d
	}
	return d
}

const gateEps = 1e-12

func judge(cell, metric string, bv, nv float64, th map[string]float64) Change {
	ch := newChange(cell, metric, bv, nv)
	fam, known := familyOf(metric)
	ch.Direction = fam.dir
	if !known || fam.dir == Unknown {
		if ch.Delta == 0 {
			ch.Verdict = VerdictSame
		} else {
			ch.Verdict = VerdictChanged
			ch.Note = "direction unknown: not gated"
		}
		return ch
	}
	t, key, ok := threshold(metric, fam, th)
	absolute := fam.key == "accuracy" // accuracy-like metrics are fractions: absolute drops
	ch.Threshold, ch.Gated = t, ok
	w := worse(ch, absolute)
	switch {
	case ch.Delta == 0:
		ch.Verdict = VerdictSame
	case w < 0:
		ch.Verdict = VerdictImproved
	case ok && w > t+gateEps:
		ch.Verdict, ch.Regression = VerdictRegression, true
	default:
		ch.Verdict = VerdictWorse
	}
	if ok {
		if absolute {
			ch.Note = fmt.Sprintf("gate: drop > %g (%s)", t, key)
		} else if fam.dir == HigherBetter {
			ch.Note = fmt.Sprintf("gate: -%s (%s)", pct(t), key)
		} else {
			ch.Note = fmt.Sprintf("gate: +%s (%s)", pct(t), key)
		}
	} else if ch.Verdict == VerdictWorse {
		ch.Note = "no threshold: not gated"
	}
	return ch
}

func judgeLatency(cell string, b, n *Record, th map[string]float64) Change {
	ch := newChange(cell, MetricLatencyP50, b.Latency.P50, n.Latency.P50)
	ch.Direction = LowerBetter
	t, key, ok := threshold(MetricLatencyP50, extraMetrics[MetricLatencyP50], th)
	ch.Threshold, ch.Gated = t, ok
	enough := len(b.Latency.Samples) >= latencyMinSamples && len(n.Latency.Samples) >= latencyMinSamples
	if enough {
		if mw, err := MannWhitney(b.Latency.Samples, n.Latency.Samples); err == nil {
			ch.P = mw.P
		}
	}
	w := worse(ch, false)
	switch {
	case ch.Delta == 0:
		ch.Verdict = VerdictSame
	case !enough:
		ch.Verdict = VerdictInsufficient
		ch.Note = fmt.Sprintf("%d and %d samples (need %d each): not gated", len(b.Latency.Samples), len(n.Latency.Samples), latencyMinSamples)
	case w < 0:
		ch.Verdict = VerdictImproved
		if !(ch.P < latencyAlpha) {
			ch.Verdict = VerdictNoise
		}
	case ok && w > t+gateEps:
		if ch.P < latencyAlpha {
			ch.Verdict, ch.Regression = VerdictRegression, true
		} else {
			ch.Verdict = VerdictNoise
			ch.Note = fmt.Sprintf("beyond +%s but not significant (p=%.3g)", pct(t), ch.P)
		}
	default:
		ch.Verdict = VerdictWorse
	}
	if ok && ch.Note == "" {
		ch.Note = fmt.Sprintf("gate: +%s and p<%g (%s)", pct(t), latencyAlpha, key)
	}
	return ch
}

func pct(f float64) string { return strconv.FormatFloat(100*f, 'g', 4, 64) + "%" }

// Regressions names each regression: cell, metric, values and the gate.
func (c *Comparison) Regressions() []string {
	var out []string
	for _, ch := range c.Changes {
		if !ch.Regression {
			continue
		}
		if ch.Metric == "status" {
			out = append(out, fmt.Sprintf("%s: %s", ch.Cell, ch.Note))
			continue
		}
		s := fmt.Sprintf("%s: %s %s → %s (%s)", ch.Cell, ch.Metric, fmtNum(ch.Base), fmtNum(ch.New), fmtChange(ch))
		if !math.IsNaN(ch.P) {
			s += fmt.Sprintf(", p=%.3g", ch.P)
		}
		if ch.Note != "" {
			s += "; " + ch.Note
		}
		out = append(out, s)
	}
	return out
}

// HasRegressions reports whether any change is a regression.
func (c *Comparison) HasRegressions() bool {
	for _, ch := range c.Changes {
		if ch.Regression {
			return true
		}
	}
	return false
}

func fmtNum(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

func fmtChange(ch Change) string {
	switch {
	case math.IsNaN(ch.Delta):
		return "—"
	case ch.Delta == 0:
		return "0"
	case math.IsNaN(ch.Rel) || math.IsInf(ch.Rel, 0):
		return fmt.Sprintf("%+.4g", ch.Delta)
	case ch.Direction == HigherBetter && isAccuracyLike(ch.Metric):
		return fmt.Sprintf("%+.4g (%+.1f%%)", ch.Delta, 100*ch.Rel)
	}
	return fmt.Sprintf("%+.1f%%", 100*ch.Rel)
}

func isAccuracyLike(metric string) bool {
	f, ok := familyOf(metric)
	return ok && f.key == "accuracy"
}

// Markdown writes the comparison: a table of the changes per cell and
// metric (regressions marked), then missing cells and notes.
func (c *Comparison) Markdown(w io.Writer) error {
	regs := c.Regressions()
	if len(regs) == 0 {
		fmt.Fprintf(w, "**No regressions** (%d changes compared).\n\n", len(c.Changes))
	} else {
		fmt.Fprintf(w, "**%d regression(s):**\n\n", len(regs))
		for _, r := range regs {
			fmt.Fprintf(w, "- %s\n", mdEscape(r))
		}
		fmt.Fprintln(w)
	}
	if len(c.Changes) > 0 {
		t := tablewriter.NewTable(w,
			tablewriter.WithRenderer(renderer.NewMarkdown()),
			tablewriter.WithHeaderAutoFormat(tw.Off),
			tablewriter.WithHeaderAutoWrap(tw.WrapNone),
			tablewriter.WithRowAutoWrap(tw.WrapNone),
			tablewriter.WithHeaderAlignment(tw.AlignLeft),
			tablewriter.WithRowAlignmentConfig(tw.CellAlignment{PerColumn: []tw.Align{
				tw.AlignLeft, tw.AlignLeft, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignLeft, tw.AlignLeft}}),
		)
		t.Header([]string{"cell", "metric", "base", "new", "change", "p", "verdict", "note"})
		for _, ch := range c.Changes {
			p := ""
			if !math.IsNaN(ch.P) {
				p = fmt.Sprintf("%.3g", ch.P)
			}
			verdict := ch.Verdict
			if ch.Regression {
				verdict = "**" + VerdictRegression + "**"
			}
			if err := t.Append([]string{mdEscape(ch.Cell), mdEscape(ch.Metric), fmtNum(ch.Base), fmtNum(ch.New),
				fmtChange(ch), p, verdict, mdEscape(ch.Note)}); err != nil {
				return err
			}
		}
		if err := t.Render(); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	if len(c.OnlyBase) > 0 {
		fmt.Fprintf(w, "Cells only in base (%d):\n\n", len(c.OnlyBase))
		for _, s := range c.OnlyBase {
			fmt.Fprintf(w, "- %s\n", mdEscape(s))
		}
		fmt.Fprintln(w)
	}
	if len(c.OnlyNew) > 0 {
		fmt.Fprintf(w, "Cells only in new (%d):\n\n", len(c.OnlyNew))
		for _, s := range c.OnlyNew {
			fmt.Fprintf(w, "- %s\n", mdEscape(s))
		}
		fmt.Fprintln(w)
	}
	if len(c.Notes) > 0 {
		fmt.Fprintln(w, "Notes:")
		fmt.Fprintln(w)
		for _, s := range c.Notes {
			fmt.Fprintf(w, "- %s\n", mdEscape(s))
		}
		fmt.Fprintln(w)
	}
	return nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
