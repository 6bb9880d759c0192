package results

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/kvbench/kvbench/tasks"
)

// Direction says which way a metric improves.
type Direction int

const (
	Unknown      Direction = iota // reported, never gated
	HigherBetter                  // accuracy, score, throughput
	LowerBetter                   // ppl, nll, latency, memory
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

func directionOf(better string) Direction {
	switch better {
	case tasks.BetterHigher:
		return HigherBetter
	case tasks.BetterLower:
		return LowerBetter
	}
	return Unknown
}

// Names of the measurements kvbench itself makes of every cell, compared
// besides the task's metrics.
const (
	MetricLatencyP50 = "latency_p50"     // Latency.P50 (µs): a timing, gated over repeated runs
	MetricTokensPerS = "tokens_per_s"    // Throughput: a timing, gated over repeated runs
	MetricKVMax      = "kv_max_resident" // KV.MaxResident (bytes)
	MetricBytesRead  = "kv_bytes_read"   // KV.BytesRead per step (bytes)
)

// Default gates (see DefaultThreshold) and significance level (see Compare).
const (
	DefaultFractionGate = 0.02 // absolute drop of a fraction (accuracy, score)
	DefaultRelativeGate = 0.05 // relative worsening of another task metric (ppl, nll) and of the cache figures
	DefaultLatencyGate  = 0.10 // relative rise of latency_p50
	DefaultAlpha        = 0.05 // family-wise error rate of the timing tests
)

// Off is the threshold that turns a metric's gate off ("ppl=off").
var Off = math.Inf(1)

// Where a MetricInfo came from.
const (
	SourceRecord  = "record"  // the task's declaration carried in the record
	SourceBuild   = "build"   // an old record without declarations: the task as declared in this build
	SourceHarness = "harness" // measured by kvbench for every cell
)

// MetricInfo is what compare knows of a metric: the direction that is
// better, the unit, and where the two came from (Source*; "" when nothing
// declares the metric).
type MetricInfo struct {
	Name      string
	Unit      string
	Direction Direction
	Source    string
}

// Absolute reports whether changes of the metric are absolute differences:
// it is a fraction (tasks.UnitFraction). Other metrics change relatively.
func (m MetricInfo) Absolute() bool { return m.Unit == tasks.UnitFraction }

// Timing reports whether the metric is a time or a rate, which varies from
// run to run: it is gated only over repeated runs, by significance and effect
// size together.
func (m MetricInfo) Timing() bool { return timingUnits[m.Unit] }

var timingUnits = map[string]bool{"ns": true, "us": true, "µs": true, "ms": true, "s": true, "tokens/s": true}

// harnessMetrics are the measurements of every cell, in table order.
var harnessMetrics = []MetricInfo{
	{MetricLatencyP50, "us", LowerBetter, SourceHarness},
	{MetricKVMax, "bytes", LowerBetter, SourceHarness},
	{MetricBytesRead, "bytes", LowerBetter, SourceHarness},
	{MetricTokensPerS, "tokens/s", HigherBetter, SourceHarness},
}

// harnessValue returns a harness metric of a record; false when the record
// has none (zero).
func harnessValue(r *Record, name string) (float64, bool) {
	var v float64
	switch name {
	case MetricLatencyP50:
		v = r.Latency.P50
	case MetricKVMax:
		v = float64(r.KV.MaxResident)
	case MetricBytesRead:
		v = r.KV.BytesRead
	case MetricTokensPerS:
		v = r.Throughput
	}
	return v, v > 0
}

// Verdicts of a Change.
const (
	VerdictSame         = "same"
	VerdictImproved     = "improved"
	VerdictWorse        = "worse"      // worse, within the threshold (or not gated)
	VerdictRegression   = "REGRESSION" // worse beyond the threshold (and significant, for a timing)
	VerdictNoise        = "noise"      // a timing that moved, but not significantly
	VerdictInsufficient = "too few runs"
	VerdictChanged      = "changed" // unknown direction
	VerdictMissing      = "missing"
)

// Change is the comparison of one metric of one cell: the medians over the
// runs of each side.
type Change struct {
	Cell      string
	Metric    string
	Unit      string
	Base, New float64 // medians over the runs (NaN where absent)
	NBase     int     // runs of each side with a value
	NNew      int
	Delta     float64 // New - Base
	Rel       float64 // Delta / |Base| (NaN when Base is 0)
	Direction Direction
	// Threshold is the gate applied; Gated is false when none applies.
	Threshold float64
	Gated     bool
	// Timing marks a metric gated by a test over repeated runs. P is the
	// exact Mann-Whitney p-value of the run-level values, PAdj the same
	// adjusted by Holm's method over every gated timing of the comparison
	// (NaN when not tested).
	Timing     bool
	P, PAdj    float64
	Verdict    string
	Regression bool
	Note       string
}

// Options configure Compare.
type Options struct {
	// Thresholds set the gates of the metrics they name, which must be
	// metrics of the records, of a registered task or of the harness;
	// every other metric keeps DefaultThreshold. Off turns a gate off.
	Thresholds map[string]float64
	// Alpha is the family-wise error rate of the timing tests (0:
	// DefaultAlpha).
	Alpha float64
	// AllowMissing lets NEW lack cells or metrics of BASE and hold failed
	// cells (a cell that succeeded in BASE and failed in NEW is a
	// regression all the same).
	AllowMissing bool
}

// Comparison is the result of Compare.
type Comparison struct {
	Changes  []Change
	BaseRuns int
	NewRuns  int
	OnlyBase []string // cells of BASE that NEW lacks
	OnlyNew  []string // cells in NEW only
	// Problems make the gate fail whatever the metrics say: NEW or BASE
	// without records, cells of BASE missing in NEW or failed in NEW
	// (unless AllowMissing), metrics a task reports without declaring them.
	Problems []string
	Notes    []string
	Alpha    float64
	// TimingTests is the number of gated timings, the family of Holm's
	// correction.
	TimingTests int
}

// Failed reports whether the gate fails: a regression or a problem.
func (c *Comparison) Failed() bool { return len(c.Problems) > 0 || c.HasRegressions() }

// side is one side's records of one cell, over its runs.
type side struct {
	ok       []*Record
	failed   []*Record
	failedIn []string // runs where the cell failed
	missing  []string // runs without the cell
}

// collect groups the records of runs by cell; dups notes repeated cells.
func collect(runs []Run, name string) (map[string]*side, []string, int) {
	cells := map[string]*side{}
	var notes []string
	total := 0
	present := make([]map[string]bool, len(runs))
	for i := range runs {
		present[i] = map[string]bool{}
		last := map[string]*Record{}
		var order []string
		for j := range runs[i].Records {
			r := &runs[i].Records[j]
			if _, dup := last[r.Cell]; dup {
				notes = append(notes, fmt.Sprintf("%s: cell %s appears more than once in %s; the last record is used", name, r.Cell, runLabel(runs[i], i)))
			} else {
				order = append(order, r.Cell)
			}
			last[r.Cell] = r
			total++
		}
		for _, k := range order {
			r := last[k]
			s := cells[k]
			if s == nil {
				s = &side{}
				cells[k] = s
			}
			present[i][k] = true
			if r.OK() {
				s.ok = append(s.ok, r)
			} else {
				s.failed = append(s.failed, r)
				s.failedIn = append(s.failedIn, runLabel(runs[i], i))
			}
		}
	}
	for k, s := range cells {
		for i := range runs {
			if !present[i][k] {
				s.missing = append(s.missing, runLabel(runs[i], i))
			}
		}
	}
	return cells, notes, total
}

func runLabel(r Run, i int) string {
	if r.Dir != "" {
		return r.Dir
	}
	return fmt.Sprintf("run %d", i+1)
}

// Compare compares the runs of NEW with those of BASE, cell by cell (by Cell
// key): every task metric, attention latency, the cache figures and
// throughput. Each side may hold several runs of the suite, independent
// repetitions; a metric's value on a side is its median over the runs.
//
// A metric regresses when its median moves in the worse direction beyond its
// threshold (Options.Thresholds, else DefaultThreshold): an absolute drop for
// a fraction (accuracy, score), a relative change otherwise. A timing
// (latency_p50, tokens_per_s, a task metric in a time unit) must, besides,
// differ significantly: the exact two-sided Mann-Whitney U test over the
// run-level values (one per run and side, never the per-step samples of a
// run, which are not independent draws), with Holm's correction over every
// gated timing of the comparison, at family-wise level Alpha. So a timing is
// gated only when each side has enough runs for a change to be significant
// (with 12 gated cells, 6 runs per side); with fewer, it is reported and not
// gated, and asking for its gate explicitly is an error. Direction and unit
// come from the tasks' declarations carried in the records (for old records
// without them, from the tasks of this build, which the notes say).
//
// The gate fails (Failed) on a regression, and on problems: NEW or BASE
// without records, no cell compared, a cell of BASE missing from a run of NEW
// or failed in NEW, a metric of BASE missing in NEW (these four unless
// AllowMissing; a cell that succeeded in BASE and failed in NEW is always a
// regression), a metric a task reports without declaring it. Unknown metric
// names among the thresholds are an error naming the closest known one.
func Compare(base, new []Run, opt Options) (*Comparison, error) {
	c := &Comparison{BaseRuns: len(base), NewRuns: len(new), Alpha: opt.Alpha}
	if c.Alpha == 0 {
		c.Alpha = DefaultAlpha
	}
	if !(c.Alpha > 0 && c.Alpha < 1) {
		return nil, fmt.Errorf("compare: alpha %v must be in (0, 1)", opt.Alpha)
	}
	for k, v := range opt.Thresholds {
		if math.IsNaN(v) || v < 0 {
			return nil, fmt.Errorf("compare: threshold %s=%v must be a non-negative number", k, v)
		}
	}
	if err := checkThresholdNames(opt.Thresholds, base, new); err != nil {
		return nil, err
	}
	bm, bnotes, btotal := collect(base, "BASE")
	nm, nnotes, ntotal := collect(new, "NEW")
	c.Notes = append(c.Notes, bnotes...)
	c.Notes = append(c.Notes, nnotes...)
	if btotal == 0 {
		c.Problems = append(c.Problems, fmt.Sprintf("BASE holds no records (%s): nothing to compare against", runList(base)))
	}
	if ntotal == 0 {
		c.Problems = append(c.Problems, fmt.Sprintf("NEW holds no records (%s): a run that produced nothing cannot pass", runList(new)))
	}
	if btotal == 0 || ntotal == 0 {
		return c, nil
	}
	c.noteLegacy(base, "BASE")
	c.noteLegacy(new, "NEW")

	missingOrFailed := func(msg string) {
		if opt.AllowMissing {
			c.Notes = append(c.Notes, msg+" (allowed by --allow-missing)")
		} else {
			c.Problems = append(c.Problems, msg)
		}
	}
	var cells []string
	for _, k := range sortedKeys(bm) {
		b, n := bm[k], nm[k]
		if len(b.missing) > 0 {
			c.Notes = append(c.Notes, fmt.Sprintf("cell %s: missing in BASE run(s) %s", k, strings.Join(b.missing, ", ")))
		}
		if n == nil {
			c.OnlyBase = append(c.OnlyBase, k)
			missingOrFailed(fmt.Sprintf("cell %s: in BASE, missing in NEW", k))
			continue
		}
		if len(n.missing) > 0 {
			missingOrFailed(fmt.Sprintf("cell %s: missing in NEW run(s) %s", k, strings.Join(n.missing, ", ")))
		}
		switch {
		case len(b.ok) > 0 && len(n.failed) > 0:
			c.Changes = append(c.Changes, Change{Cell: k, Metric: "status", Base: math.NaN(), New: math.NaN(),
				Delta: math.NaN(), Rel: math.NaN(), P: math.NaN(), PAdj: math.NaN(), Verdict: VerdictRegression, Regression: true,
				Note: fmt.Sprintf("failed in NEW (%d of %d runs): %s", len(n.failed), len(n.failed)+len(n.ok), oneLine(n.failed[0].Error))})
			continue
		case len(b.ok) == 0 && len(n.ok) > 0:
			c.Notes = append(c.Notes, fmt.Sprintf("cell %s: failed in BASE (%s), ok in NEW", k, oneLine(b.failed[0].Error)))
			continue
		case len(b.ok) == 0:
			missingOrFailed(fmt.Sprintf("cell %s: failed in BASE and in NEW (NEW: %s)", k, oneLine(n.failed[0].Error)))
			continue
		}
		if len(b.failed) > 0 {
			c.Notes = append(c.Notes, fmt.Sprintf("cell %s: failed in BASE run(s) %s; compared over the others", k, strings.Join(b.failedIn, ", ")))
		}
		cells = append(cells, k)
	}
	for _, k := range sortedKeys(nm) {
		if _, ok := bm[k]; ok {
			continue
		}
		c.OnlyNew = append(c.OnlyNew, k)
		if n := nm[k]; len(n.failed) > 0 {
			missingOrFailed(fmt.Sprintf("cell %s: only in NEW, failed: %s", k, oneLine(n.failed[0].Error)))
		}
	}
	if len(cells) == 0 {
		c.Problems = append(c.Problems, "no cell succeeded in both BASE and NEW: nothing was compared")
	}
	for _, k := range cells {
		c.compareCell(k, bm[k], nm[k], opt, missingOrFailed)
	}
	if err := c.testTimings(opt.Thresholds); err != nil {
		return nil, err
	}
	return c, nil
}

func runList(runs []Run) string {
	if len(runs) == 0 {
		return "no runs"
	}
	var s []string
	for i, r := range runs {
		s = append(s, runLabel(r, i))
	}
	return strings.Join(s, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// noteLegacy says when records lack their tasks' declarations.
func (c *Comparison) noteLegacy(runs []Run, name string) {
	n := 0
	unknown := map[string]bool{}
	for _, r := range runs {
		for i := range r.Records {
			rec := &r.Records[i]
			if len(rec.Declared) > 0 || !rec.OK() {
				continue
			}
			n++
			if _, err := tasks.Lookup(rec.Task); err != nil {
				unknown[rec.Task] = true
			}
		}
	}
	if n == 0 {
		return
	}
	msg := fmt.Sprintf("%s: %d record(s) carry no metric declarations (written by an older kvbench); their metrics' directions and units are those their tasks declare in this build", name, n)
	if len(unknown) > 0 {
		msg += fmt.Sprintf("; task(s) %s are not in this build: their metrics are reported, not gated", strings.Join(sortedKeys(unknown), ", "))
	}
	c.Notes = append(c.Notes, msg)
}

// infoOf returns the declaration of a task metric in a record: its own
// declarations, else (an old record) its task's in this build.
func infoOf(r *Record, metric string) (MetricInfo, bool) {
	if len(r.Declared) > 0 {
		for _, d := range r.Declared {
			if d.Name == metric {
				return MetricInfo{Name: metric, Unit: d.Unit, Direction: directionOf(d.Better), Source: SourceRecord}, true
			}
		}
		return MetricInfo{Name: metric}, false
	}
	if t, err := tasks.Lookup(r.Task); err == nil {
		for _, d := range t.Metrics() {
			if d.Name == metric {
				return MetricInfo{Name: metric, Unit: d.Unit, Direction: directionOf(d.Better), Source: SourceBuild}, true
			}
		}
	}
	return MetricInfo{Name: metric}, false
}

func (c *Comparison) compareCell(cell string, b, n *side, opt Options, missing func(string)) {
	names := map[string]bool{}
	for _, sd := range [][]*Record{b.ok, n.ok} {
		for _, r := range sd {
			for k := range r.Metrics {
				names[k] = true
			}
		}
	}
	metrics := sortedKeys(names)
	sortMetrics(metrics)
	nr := n.ok[0]
	for _, m := range metrics {
		info, declared := infoOf(nr, m)
		if !declared {
			if bi, ok := infoOf(b.ok[0], m); ok {
				info = bi
			}
		}
		if len(nr.Declared) > 0 && !declared && hasMetric(n.ok, m) {
			c.Problems = append(c.Problems, fmt.Sprintf("cell %s: task %s reports metric %s without declaring it in its Metrics(): it cannot be gated", cell, nr.Task, m))
		}
		if bi, ok := infoOf(b.ok[0], m); ok && declared && (bi.Direction != info.Direction || bi.Unit != info.Unit) {
			c.Notes = append(c.Notes, fmt.Sprintf("cell %s: metric %s is declared %s-is-better in %q in BASE, %s-is-better in %q in NEW; NEW's declaration is used",
				cell, m, bi.Direction, bi.Unit, info.Direction, info.Unit))
		}
		bv := metricValues(b.ok, func(r *Record) (float64, bool) { v, ok := r.Metrics[m]; return v, ok })
		nv := metricValues(n.ok, func(r *Record) (float64, bool) { v, ok := r.Metrics[m]; return v, ok })
		c.add(cell, info, bv, nv, opt, missing)
	}
	for _, h := range harnessMetrics {
		get := func(r *Record) (float64, bool) { return harnessValue(r, h.Name) }
		bv, nv := metricValues(b.ok, get), metricValues(n.ok, get)
		if len(bv) == 0 && len(nv) == 0 {
			continue
		}
		c.add(cell, h, bv, nv, opt, missing)
	}
}

func hasMetric(recs []*Record, m string) bool {
	for _, r := range recs {
		if _, ok := r.Metrics[m]; ok {
			return true
		}
	}
	return false
}

func metricValues(recs []*Record, get func(*Record) (float64, bool)) []float64 {
	var v []float64
	for _, r := range recs {
		if x, ok := get(r); ok {
			v = append(v, x)
		}
	}
	return v
}

// add judges one metric of one cell from its run-level values.
func (c *Comparison) add(cell string, info MetricInfo, bv, nv []float64, opt Options, missing func(string)) {
	ch := Change{Cell: cell, Metric: info.Name, Unit: info.Unit, Direction: info.Direction,
		Base: Median(bv), New: Median(nv), NBase: len(bv), NNew: len(nv), P: math.NaN(), PAdj: math.NaN()}
	ch.Delta = ch.New - ch.Base
	ch.Rel = math.NaN()
	if ch.Base != 0 {
		ch.Rel = ch.Delta / math.Abs(ch.Base)
	} else if ch.New == 0 {
		ch.Rel = 0
	}
	if len(bv) == 0 || len(nv) == 0 {
		ch.Verdict = VerdictMissing
		if len(nv) == 0 {
			ch.Note = "absent in NEW"
			missing(fmt.Sprintf("cell %s: metric %s of BASE is absent in NEW", cell, info.Name))
		} else {
			ch.Note = "absent in BASE"
		}
		c.Changes = append(c.Changes, ch)
		return
	}
	if info.Direction == Unknown {
		ch.Verdict = VerdictSame
		if ch.Delta != 0 {
			ch.Verdict, ch.Note = VerdictChanged, "no declaration: not gated"
		}
		c.Changes = append(c.Changes, ch)
		return
	}
	t, given := opt.Thresholds[info.Name]
	if !given {
		t, ch.Gated = DefaultThreshold(info)
	} else {
		ch.Gated = !math.IsInf(t, 1)
	}
	ch.Threshold = t
	if info.Timing() {
		ch.Timing = true
		if mw, err := MannWhitney(bv, nv); err == nil {
			ch.P = mw.P
		}
		c.Changes = append(c.Changes, ch) // judged by testTimings
		return
	}
	w := worse(ch, info.Absolute())
	switch {
	case ch.Delta == 0:
		ch.Verdict = VerdictSame
	case w < 0:
		ch.Verdict = VerdictImproved
	case ch.Gated && w > t+gateEps:
		ch.Verdict, ch.Regression = VerdictRegression, true
	default:
		ch.Verdict = VerdictWorse
	}
	ch.Note = gateNote(ch, info)
	c.Changes = append(c.Changes, ch)
}

func gateNote(ch Change, info MetricInfo) string {
	if !ch.Gated {
		if math.IsInf(ch.Threshold, 1) {
			return "gate off"
		}
		return "no threshold: not gated"
	}
	var s string
	switch {
	case info.Absolute():
		s = fmt.Sprintf("gate: drop > %g", ch.Threshold)
		if info.Direction == LowerBetter {
			s = fmt.Sprintf("gate: rise > %g", ch.Threshold)
		}
	case info.Direction == HigherBetter:
		s = "gate: -" + pct(ch.Threshold)
	default:
		s = "gate: +" + pct(ch.Threshold)
	}
	if info.Timing() {
		s += " and significant"
	}
	return s
}

// MinP is the smallest two-sided p-value the exact Mann-Whitney test can
// give for samples of n1 and n2 distinct values: 2/C(n1+n2, n1).
func MinP(n1, n2 int) float64 {
	if n1 <= 0 || n2 <= 0 {
		return 1
	}
	return math.Min(1, 2*math.Exp(-logChoose(n1+n2, n1)))
}

// RunsNeeded is the number of runs per side with which m timing tests can
// show a change at family-wise level alpha: the smallest n with
// m·MinP(n, n) <= alpha.
func RunsNeeded(m int, alpha float64) int {
	n := 1
	for float64(max(m, 1))*MinP(n, n) > alpha {
		n++
	}
	return n
}

// testTimings judges the gated timings together: Holm's step-down
// correction over their p-values, then significance and effect size.
func (c *Comparison) testTimings(given map[string]float64) error {
	var idx []int
	for i := range c.Changes {
		ch := &c.Changes[i]
		if ch.Timing && ch.Gated && ch.Verdict == "" {
			idx = append(idx, i)
		}
	}
	m := len(idx)
	c.TimingTests = m
	sort.SliceStable(idx, func(a, b int) bool { return pOr1(c.Changes[idx[a]].P) < pOr1(c.Changes[idx[b]].P) })
	run := 0.0
	for k, i := range idx {
		run = math.Max(run, math.Min(1, float64(m-k)*pOr1(c.Changes[i].P)))
		c.Changes[i].PAdj = run
	}
	short := map[string]int{} // metric -> changes that cannot reach significance
	for i := range c.Changes {
		ch := &c.Changes[i]
		if !ch.Timing || ch.Verdict != "" {
			continue
		}
		info := MetricInfo{Name: ch.Metric, Unit: ch.Unit, Direction: ch.Direction}
		w := worse(*ch, false)
		sig := ch.Gated && ch.PAdj <= c.Alpha
		if ch.Gated && float64(m)*MinP(ch.NBase, ch.NNew) > c.Alpha {
			short[ch.Metric]++
			ch.Verdict = VerdictInsufficient
			ch.Note = fmt.Sprintf("%d and %d runs cannot show a change at %g over %d timings: not gated", ch.NBase, ch.NNew, c.Alpha, m)
			if ch.Delta == 0 {
				ch.Verdict = VerdictSame
			}
			continue
		}
		switch {
		case ch.Delta == 0:
			ch.Verdict = VerdictSame
		case !ch.Gated && !(ch.P < c.Alpha):
			ch.Verdict = VerdictNoise // not gated, and not significant even before correction
		case !ch.Gated:
			ch.Verdict = VerdictWorse
			if w < 0 {
				ch.Verdict = VerdictImproved
			}
		case w < 0 && sig:
			ch.Verdict = VerdictImproved
		case w > ch.Threshold+gateEps && sig:
			ch.Verdict, ch.Regression = VerdictRegression, true
		case w > ch.Threshold+gateEps:
			ch.Verdict = VerdictNoise
			ch.Note = fmt.Sprintf("beyond %s but not significant (Holm p=%.3g)", pctSigned(*ch), ch.PAdj)
			continue
		case w > 0:
			ch.Verdict = VerdictWorse
		default:
			ch.Verdict = VerdictNoise
		}
		ch.Note = gateNote(*ch, info)
	}
	for _, metric := range sortedKeys(short) {
		need := RunsNeeded(m, c.Alpha)
		msg := fmt.Sprintf("%s is gated over repeated runs: with %d BASE and %d NEW runs and %d gated timings, no change can be significant at %g (Holm); %d runs per side are needed (kvbench run SUITE --out DIR/1 ... --out DIR/%d, for BASE and NEW, interleaved)",
			metric, c.BaseRuns, c.NewRuns, m, c.Alpha, need, need)
		if _, explicit := given[metric]; explicit {
			return fmt.Errorf("compare: %s was given a threshold, but %s", metric, msg)
		}
		c.Notes = append(c.Notes, msg+": it was reported, not gated")
	}
	return nil
}

func pOr1(p float64) float64 {
	if math.IsNaN(p) {
		return 1
	}
	return p
}

func pctSigned(ch Change) string {
	if ch.Direction == HigherBetter {
		return "-" + pct(ch.Threshold)
	}
	return "+" + pct(ch.Threshold)
}

// worse returns how much worse the change is, in the gate's terms: an
// absolute difference for a fraction, else a relative change. Positive is
// worse.
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
		if !math.IsNaN(ch.PAdj) {
			s += fmt.Sprintf(", Holm p=%.3g over %d and %d runs", ch.PAdj, ch.NBase, ch.NNew)
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
