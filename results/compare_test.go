package results

import (
	"bytes"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvbench/kvbench/tasks"
)

// latencySamples returns n samples around center with the given relative
// jitter (deterministic).
func latencySamples(seed int64, n int, center, jitter float64) []float64 {
	rng := rand.New(rand.NewSource(seed))
	s := make([]float64, n)
	for i := range s {
		s[i] = center * (1 + jitter*(2*rng.Float64()-1))
	}
	return s
}

var (
	pplDecl     = []tasks.Metric{{Name: "ppl", Better: tasks.BetterLower}, {Name: "nll", Unit: "nats", Better: tasks.BetterLower}}
	passkeyDecl = []tasks.Metric{{Name: "accuracy", Unit: tasks.UnitFraction, Better: tasks.BetterHigher}}
)

// compareRecords is one run of a two-cell suite, as the runner writes it
// (with the tasks' declarations).
func compareRecords(seed int64) []Record {
	mk := func(cell, task string, decl []tasks.Metric, metrics map[string]float64, lat []float64) Record {
		return Record{Cell: cell, Model: "ref25m", Policy: "quest", Task: task, TaskVersion: 1, Status: "ok",
			Declared: decl, Metrics: metrics,
			Latency: Latency{P50: Median(lat), N: len(lat), Samples: lat},
			KV:      KV{MaxResident: 1 << 20, BytesRead: 1000}, Throughput: 100}
	}
	return []Record{
		mk("ppl-cell", "perplexity", pplDecl, map[string]float64{"ppl": 12.0, "nll": 2.48}, latencySamples(seed, 30, 100, 0.02)),
		mk("passkey-cell", "passkey", passkeyDecl, map[string]float64{"accuracy": 0.90}, latencySamples(seed+1, 30, 200, 0.02)),
	}
}

// repeated returns n runs of compareRecords whose latencies are scaled by
// scale times a run-level factor drawn with the given relative spread: the
// run-to-run drift of a real machine, which the per-step samples of one run
// do not show.
func repeated(rng *rand.Rand, n int, scale, spread float64) []Run {
	runs := make([]Run, n)
	for i := range runs {
		recs := compareRecords(int64(i))
		for j := range recs {
			f := scale * (1 + spread*rng.NormFloat64())
			recs[j].Latency.P50 *= f
			for k := range recs[j].Latency.Samples {
				recs[j].Latency.Samples[k] *= f
			}
		}
		runs[i] = Run{Dir: fmt.Sprintf("run%d", i+1), Records: recs}
	}
	return runs
}

func cmp1(t *testing.T, base, nw []Record, th map[string]float64) *Comparison {
	t.Helper()
	c, err := Compare(Single(base), Single(nw), Options{Thresholds: th})
	require.NoError(t, err)
	return c
}

// storeDir writes records into a results directory.
func storeDir(t *testing.T, recs []Record) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "run")
	storeInto(t, dir, recs)
	return dir
}

func storeInto(t *testing.T, dir string, recs []Record) {
	t.Helper()
	s, err := Open(dir)
	require.NoError(t, err)
	for i := range recs {
		require.NoError(t, s.Append(&recs[i]))
	}
	require.NoError(t, s.Close())
}

func findChange(t *testing.T, c *Comparison, cell, metric string) Change {
	t.Helper()
	for _, ch := range c.Changes {
		if ch.Cell == cell && ch.Metric == metric {
			return ch
		}
	}
	t.Fatalf("no change for %s %s in %+v", cell, metric, c.Changes)
	return Change{}
}

func TestCompareIdenticalDirs(t *testing.T) {
	a := storeDir(t, compareRecords(1))
	b := storeDir(t, compareRecords(1))
	base, _, err := LoadRuns(a)
	require.NoError(t, err)
	nw, _, err := LoadRuns(b)
	require.NoError(t, err)
	c, err := Compare(base, nw, Options{})
	require.NoError(t, err)
	assert.Empty(t, c.Regressions())
	assert.Empty(t, c.Problems)
	assert.False(t, c.Failed())
	assert.Empty(t, c.OnlyBase)
	assert.Empty(t, c.OnlyNew)
	for _, ch := range c.Changes {
		assert.Equal(t, VerdictSame, ch.Verdict, "%s %s", ch.Cell, ch.Metric)
	}
	var md bytes.Buffer
	require.NoError(t, c.Markdown(&md))
	assert.Contains(t, md.String(), "No regressions")
	// One run a side cannot gate latency, and the output says so.
	assert.Contains(t, md.String(), "latency_p50 is gated over repeated runs")
	assert.Contains(t, md.String(), "runs per side are needed")
}

func TestComparePplRegressionNamed(t *testing.T) {
	base := compareRecords(1)
	nw := compareRecords(1)
	nw[0].Metrics["ppl"] = 13.2 // +10%
	c := cmp1(t, base, nw, map[string]float64{"accuracy": 0.02, "ppl": 0.05})
	regs := c.Regressions()
	require.Len(t, regs, 1)
	assert.Contains(t, regs[0], "ppl-cell")
	assert.Contains(t, regs[0], "ppl 12 → 13.2")
	assert.Contains(t, regs[0], "+10.0%")
	ch := findChange(t, c, "ppl-cell", "ppl")
	assert.True(t, ch.Regression)
	assert.InDelta(t, 0.1, ch.Rel, 1e-12)
	assert.True(t, c.Failed())

	// Within the gate (+4%): worse, not a regression.
	nw[0].Metrics["ppl"] = 12.48
	c = cmp1(t, base, nw, map[string]float64{"ppl": 0.05})
	assert.Empty(t, c.Regressions())
	assert.Equal(t, VerdictWorse, findChange(t, c, "ppl-cell", "ppl").Verdict)

	// nll is declared lower-is-better, so it has the default gate (5%);
	// a threshold given for it replaces that, the others keep theirs.
	nw[0].Metrics["nll"] = 2.48 * 1.04
	c = cmp1(t, base, nw, nil)
	assert.Empty(t, c.Regressions())
	c = cmp1(t, base, nw, map[string]float64{"nll": 0.01})
	require.Len(t, c.Regressions(), 1)
	assert.Contains(t, c.Regressions()[0], "nll")
	c = cmp1(t, base, nw, map[string]float64{"nll": Off})
	assert.Empty(t, c.Regressions())
	assert.Equal(t, "gate off", findChange(t, c, "ppl-cell", "nll").Note)

	var md bytes.Buffer
	require.NoError(t, c.Markdown(&md))
	t.Log("\n" + md.String())
}

// TestCompareThresholdsMergeWithDefaults: naming one metric keeps every
// other default gate (a --max-regress once dropped them all).
func TestCompareThresholdsMergeWithDefaults(t *testing.T) {
	base := compareRecords(1)
	nw := compareRecords(1)
	nw[0].Metrics["ppl"] = 12.0 * 1.06                // beyond the default 5%
	nw[1].Metrics["accuracy"] = 0.87                  // beyond the default 0.02 drop
	nw[0].KV.MaxResident = base[0].KV.MaxResident * 2 // beyond the default 5%
	c := cmp1(t, base, nw, map[string]float64{"nll": 0.2})
	regs := strings.Join(c.Regressions(), "\n")
	assert.Contains(t, regs, "ppl-cell: ppl")
	assert.Contains(t, regs, "passkey-cell: accuracy")
	assert.Contains(t, regs, "ppl-cell: kv_max_resident")
	assert.Len(t, c.Regressions(), 3, regs)

	d, ok := DefaultThreshold(MetricInfo{Name: "accuracy", Unit: tasks.UnitFraction, Direction: HigherBetter})
	assert.True(t, ok)
	assert.Equal(t, DefaultFractionGate, d)
	d, ok = DefaultThreshold(MetricInfo{Name: "ppl", Direction: LowerBetter})
	assert.True(t, ok)
	assert.Equal(t, DefaultRelativeGate, d)
	d, ok = DefaultThreshold(MetricInfo{Name: MetricLatencyP50, Unit: "us", Direction: LowerBetter})
	assert.True(t, ok)
	assert.Equal(t, DefaultLatencyGate, d)
	_, ok = DefaultThreshold(MetricInfo{Name: MetricTokensPerS, Unit: "tokens/s", Direction: HigherBetter})
	assert.False(t, ok)
	_, ok = DefaultThreshold(MetricInfo{Name: "mystery"})
	assert.False(t, ok)
}

func TestCompareUnknownThresholdName(t *testing.T) {
	base, nw := compareRecords(1), compareRecords(1)
	for key, want := range map[string]string{
		"acuracy":  "did you mean accuracy?",
		"latency":  "did you mean latency_p50?",
		"pplx":     "did you mean ppl?",
		"zzzzzzzz": `unknown metric "zzzzzzzz"`,
	} {
		_, err := Compare(Single(base), Single(nw), Options{Thresholds: map[string]float64{key: 0.1, "ppl": 0.05}})
		if assert.Error(t, err, key) {
			assert.Contains(t, err.Error(), want, key)
			for _, m := range []string{"accuracy", "latency_p50", "nll", "ppl"} {
				assert.Regexp(t, `the metrics are .*\b`+m+`\b`, err.Error(), "lists the metrics")
			}
		}
	}
	// A metric of a registered task, absent from these records, is a valid
	// name (a shared --max-regress across suites).
	_, err := Compare(Single(base), Single(nw), Options{Thresholds: map[string]float64{"score": 0.02}})
	assert.NoError(t, err)
}

func TestCompareAccuracyAbsoluteDrop(t *testing.T) {
	base := compareRecords(1)
	nw := compareRecords(1)
	th, err := ParseThresholds("accuracy=0.02")
	require.NoError(t, err)

	nw[1].Metrics["accuracy"] = 0.885 // -0.015: within
	c := cmp1(t, base, nw, th)
	assert.Empty(t, c.Regressions())

	nw[1].Metrics["accuracy"] = 0.87 // -0.03: beyond (absolute, not relative)
	c = cmp1(t, base, nw, th)
	require.Len(t, c.Regressions(), 1)
	assert.Contains(t, c.Regressions()[0], "passkey-cell: accuracy 0.9 → 0.87")
	assert.Contains(t, c.Regressions()[0], "-0.03")

	nw[1].Metrics["accuracy"] = 0.99
	c = cmp1(t, base, nw, th)
	assert.Empty(t, c.Regressions())
	assert.Equal(t, VerdictImproved, findChange(t, c, "passkey-cell", "accuracy").Verdict)
}

// TestCompareNewTaskMetricGated: a task unknown to this build whose records
// declare their metrics is gated by those declarations, with the defaults.
func TestCompareNewTaskMetricGated(t *testing.T) {
	mk := func(recall, cost float64) []Record {
		return []Record{{Cell: "c", Task: "brandnew", Status: "ok",
			Declared: []tasks.Metric{{Name: "recall_at_5", Unit: tasks.UnitFraction, Better: tasks.BetterHigher},
				{Name: "cost", Unit: "joules", Better: tasks.BetterLower}},
			Metrics: map[string]float64{"recall_at_5": recall, "cost": cost}}}
	}
	c := cmp1(t, mk(0.8, 10), mk(0.75, 10.3), nil)
	require.Len(t, c.Regressions(), 1, "%v", c.Regressions())
	assert.Contains(t, c.Regressions()[0], "recall_at_5 0.8 → 0.75")
	ch := findChange(t, c, "c", "cost")
	assert.Equal(t, VerdictWorse, ch.Verdict)
	assert.True(t, ch.Gated)
	c = cmp1(t, mk(0.8, 10), mk(0.8, 11), nil)
	require.Len(t, c.Regressions(), 1)
	assert.Contains(t, c.Regressions()[0], "cost 10 → 11 (+10.0%)")
	// Its metric names are valid thresholds.
	_, err := Compare(Single(mk(0.8, 10)), Single(mk(0.8, 10)), Options{Thresholds: map[string]float64{"cost": 0.2}})
	assert.NoError(t, err)
}

// TestCompareUndeclaredMetric: a metric a record reports without its task
// declaring it cannot be gated, and the gate fails saying so.
func TestCompareUndeclaredMetric(t *testing.T) {
	base, nw := compareRecords(1), compareRecords(1)
	base[1].Metrics["mystery"], nw[1].Metrics["mystery"] = 3, 100
	c := cmp1(t, base, nw, nil)
	assert.Empty(t, c.Regressions())
	require.Len(t, c.Problems, 1)
	assert.Contains(t, c.Problems[0], "task passkey reports metric mystery without declaring it")
	assert.True(t, c.Failed())
	m := findChange(t, c, "passkey-cell", "mystery")
	assert.Equal(t, VerdictChanged, m.Verdict)
	assert.Equal(t, Unknown, m.Direction)
}

// TestCompareLegacyRecords: records written before declarations were
// carried take them from this build's tasks, and the notes say so; a task
// this build lacks is not gated, and the notes say that too.
func TestCompareLegacyRecords(t *testing.T) {
	base, nw := compareRecords(1), compareRecords(1)
	for _, rs := range [][]Record{base, nw} {
		for i := range rs {
			rs[i].Declared = nil
		}
	}
	base = append(base, Record{Cell: "gone-task", Task: "retired", Status: "ok", Metrics: map[string]float64{"quality": 1}})
	nw = append(nw, Record{Cell: "gone-task", Task: "retired", Status: "ok", Metrics: map[string]float64{"quality": 0.1}})
	nw[1].Metrics["accuracy"] = 0.5
	c := cmp1(t, base, nw, nil)
	require.Len(t, c.Regressions(), 1)
	assert.Contains(t, c.Regressions()[0], "passkey-cell: accuracy 0.9 → 0.5")
	notes := strings.Join(c.Notes, "\n")
	assert.Contains(t, notes, "NEW: 3 record(s) carry no metric declarations")
	assert.Contains(t, notes, "those their tasks declare in this build")
	assert.Contains(t, notes, "task(s) retired are not in this build")
	q := findChange(t, c, "gone-task", "quality")
	assert.Equal(t, VerdictChanged, q.Verdict)
	assert.False(t, q.Gated)
	assert.Empty(t, c.Problems, "an old record is not a problem")
}

// TestCompareLatencySingleRunNotGated is the failure of the old gate: two
// runs of identical code whose per-step samples differ by 10% with little
// spread inside each run (a Mann-Whitney test over them gave p=1e-28). One
// run a side is one draw: the change is reported, never a regression; asking
// for the latency gate explicitly with one run a side is an error.
func TestCompareLatencySingleRunNotGated(t *testing.T) {
	base, nw := compareRecords(1), compareRecords(1)
	nw[0].Latency.Samples = latencySamples(7, 200, 110.4, 0.01)
	nw[0].Latency.P50 = Median(nw[0].Latency.Samples)
	mw, err := MannWhitney(base[0].Latency.Samples, nw[0].Latency.Samples)
	require.NoError(t, err)
	require.Less(t, mw.P, 1e-6, "the per-step samples look wildly significant")

	c := cmp1(t, base, nw, nil)
	ch := findChange(t, c, "ppl-cell", MetricLatencyP50)
	assert.Equal(t, VerdictInsufficient, ch.Verdict)
	assert.False(t, ch.Regression)
	assert.False(t, c.Failed())

	_, err = Compare(Single(base), Single(nw), Options{Thresholds: map[string]float64{"latency_p50": 0.10}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "latency_p50 was given a threshold")
	assert.Contains(t, err.Error(), "with 1 BASE and 1 NEW runs and 2 gated timings")
	assert.Contains(t, err.Error(), "5 runs per side are needed")
	// latency_p50=off is fine with one run.
	_, err = Compare(Single(base), Single(nw), Options{Thresholds: map[string]float64{"latency_p50": Off}})
	assert.NoError(t, err)
}

func TestCompareLatencyOverRuns(t *testing.T) {
	th := map[string]float64{"latency_p50": 0.10}
	rng := rand.New(rand.NewSource(3))

	// 6 runs a side, +20%, run-to-run spread 2%: a regression of both cells.
	c, err := Compare(repeated(rng, 6, 1, 0.02), repeated(rng, 6, 1.2, 0.02), Options{Thresholds: th})
	require.NoError(t, err)
	assert.Equal(t, 2, c.TimingTests)
	for _, cell := range []string{"ppl-cell", "passkey-cell"} {
		ch := findChange(t, c, cell, MetricLatencyP50)
		assert.True(t, ch.Regression, "%+v", ch)
		assert.Equal(t, 6, ch.NBase)
		assert.InDelta(t, MinP(6, 6), ch.P, 1e-12, "complete separation")
		assert.InDelta(t, 2*MinP(6, 6), ch.PAdj, 1e-12, "Holm over 2 timings")
	}
	regs := c.Regressions()
	require.Len(t, regs, 2)
	assert.Contains(t, regs[0], "Holm p=")
	assert.Contains(t, regs[0], "over 6 and 6 runs")
	var md bytes.Buffer
	require.NoError(t, c.Markdown(&md))
	assert.Contains(t, md.String(), "medians over the runs")

	// +20% in the medians, but the runs overlap: noise.
	base, nw := repeated(rng, 6, 1, 0), repeated(rng, 6, 1, 0)
	for i, v := range []float64{100, 60, 140, 90, 115, 70} {
		base[i].Records[0].Latency.P50 = v
	}
	for i, v := range []float64{125, 65, 150, 85, 135, 110} {
		nw[i].Records[0].Latency.P50 = v
	}
	c, err = Compare(base, nw, Options{Thresholds: th})
	require.NoError(t, err)
	ch := findChange(t, c, "ppl-cell", MetricLatencyP50)
	require.Greater(t, ch.Rel, 0.10)
	assert.Equal(t, VerdictNoise, ch.Verdict, "%+v", ch)
	assert.Greater(t, ch.PAdj, 0.05)
	assert.Contains(t, ch.Note, "beyond +10% but not significant")
	assert.Empty(t, c.Regressions())

	// +3%, significant: within the threshold.
	c, err = Compare(repeated(rng, 6, 1, 0.002), repeated(rng, 6, 1.03, 0.002), Options{Thresholds: th})
	require.NoError(t, err)
	ch = findChange(t, c, "passkey-cell", MetricLatencyP50)
	assert.Equal(t, VerdictWorse, ch.Verdict)
	assert.Less(t, ch.PAdj, 0.05)
	assert.Empty(t, c.Regressions())

	// 5 runs a side suffice for 2 timings (Holm: 2·2/252 < 0.05) but 3 do not.
	c, err = Compare(repeated(rng, 5, 1, 0.02), repeated(rng, 5, 1.3, 0.02), Options{Thresholds: th})
	require.NoError(t, err)
	assert.Len(t, c.Regressions(), 2)
	_, err = Compare(repeated(rng, 3, 1, 0.02), repeated(rng, 3, 1.3, 0.02), Options{Thresholds: th})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "5 runs per side are needed")

	// Throughput has no default gate: a change is reported, as noise when
	// not significant even before the correction.
	c, err = Compare(repeated(rng, 6, 1, 0.01), repeated(rng, 6, 1, 0.01), Options{})
	require.NoError(t, err)
	tp := findChange(t, c, "ppl-cell", MetricTokensPerS)
	assert.False(t, tp.Gated)
	assert.Equal(t, VerdictSame, tp.Verdict)
	nwTp := repeated(rng, 6, 1, 0.01)
	for i, r := range nwTp {
		r.Records[0].Throughput *= []float64{0.8, 1.3, 0.9, 1.2, 1.0, 1.25}[i]
	}
	c, err = Compare(repeated(rng, 6, 1, 0.01), nwTp, Options{})
	require.NoError(t, err)
	tp = findChange(t, c, "ppl-cell", MetricTokensPerS)
	assert.Equal(t, VerdictNoise, tp.Verdict, "%+v", tp)
	assert.Equal(t, "no threshold: not gated", tp.Note)

	// Throughput is a timing too: gated over runs when given a threshold.
	slow := repeated(rng, 6, 1, 0.01)
	for _, r := range slow {
		for i := range r.Records {
			r.Records[i].Throughput *= 0.7
		}
	}
	c, err = Compare(repeated(rng, 6, 1, 0.01), slow, Options{Thresholds: map[string]float64{MetricTokensPerS: 0.1}})
	require.NoError(t, err)
	assert.True(t, findChange(t, c, "ppl-cell", MetricTokensPerS).Regression)
}

// TestGateSimulated runs the gate on synthetic suites of 12 cells whose
// run-level latencies drift as on a shared CPU (6 % relative spread, a
// common factor per run plus a factor per cell): 200 comparisons of
// identical code, 6 runs a side, must pass (the test allows 2; the design
// keeps the family-wise error at 5 % before the effect-size gate), and 200
// with a 25 % slowdown must all fail.
func TestGateSimulated(t *testing.T) {
	rng := rand.New(rand.NewSource(42))
	suite := func(slow float64) []Run {
		runs := make([]Run, 6)
		for i := range runs {
			common := 1 + 0.04*rng.NormFloat64()
			for cell := 0; cell < 12; cell++ {
				f := slow * common * (1 + 0.045*rng.NormFloat64())
				runs[i].Records = append(runs[i].Records, Record{Cell: fmt.Sprintf("cell%02d", cell), Task: "passkey",
					Status: "ok", Declared: passkeyDecl, Metrics: map[string]float64{"accuracy": 0.5},
					Latency: Latency{P50: float64(10+cell) * f}})
			}
		}
		return runs
	}
	falseAlarms, misses := 0, 0
	for trial := 0; trial < 200; trial++ {
		c, err := Compare(suite(1), suite(1), Options{})
		require.NoError(t, err)
		if c.Failed() {
			falseAlarms++
			t.Logf("trial %d: identical code failed: %v", trial, c.Regressions())
		}
		c, err = Compare(suite(1), suite(1.25), Options{})
		require.NoError(t, err)
		if !c.Failed() {
			misses++
		}
		assert.Equal(t, 12, c.TimingTests)
	}
	assert.LessOrEqual(t, falseAlarms, 2, "identical code failed the gate")
	assert.Zero(t, misses, "a 25%% slowdown passed the gate")
}

func TestCompareMissingAndFailedCells(t *testing.T) {
	base := compareRecords(1)
	nw := compareRecords(1)
	extra := nw[0]
	extra.Cell = "only-new"
	nw = append(nw, extra)
	gone := base[0]
	gone.Cell = "only-base"
	base = append(base, gone)
	nw[1].Status, nw[1].Error, nw[1].Metrics = "failed", "panic: index out of range", nil
	c := cmp1(t, base, nw, nil)
	assert.Equal(t, []string{"only-base"}, c.OnlyBase)
	assert.Equal(t, []string{"only-new"}, c.OnlyNew)
	regs := c.Regressions()
	require.Len(t, regs, 1)
	assert.Contains(t, regs[0], "passkey-cell: failed in NEW (1 of 1 runs): panic: index out of range")
	require.Len(t, c.Problems, 1)
	assert.Contains(t, c.Problems[0], "cell only-base: in BASE, missing in NEW")

	// --allow-missing: the missing cell is a note; the failure stays a
	// regression.
	c, err := Compare(Single(base), Single(nw), Options{AllowMissing: true})
	require.NoError(t, err)
	assert.Empty(t, c.Problems)
	assert.Len(t, c.Regressions(), 1)
	assert.Contains(t, strings.Join(c.Notes, "\n"), "only-base: in BASE, missing in NEW (allowed by --allow-missing)")

	// Failed in both, and failed only in NEW: problems unless allowed.
	base, nw = compareRecords(1), compareRecords(1)
	base[1].Status, base[1].Error = "failed", "model not found"
	nw[1].Status, nw[1].Error = "failed", "model not found"
	newOnly := compareRecords(1)[0]
	newOnly.Cell, newOnly.Status, newOnly.Error = "fresh", "failed", "out of memory"
	nw = append(nw, newOnly)
	c = cmp1(t, base, nw, nil)
	assert.Empty(t, c.Regressions())
	require.Len(t, c.Problems, 2)
	assert.Contains(t, c.Problems[0], "cell passkey-cell: failed in BASE and in NEW (NEW: model not found)")
	assert.Contains(t, c.Problems[1], "cell fresh: only in NEW, failed: out of memory")
	c, err = Compare(Single(base), Single(nw), Options{AllowMissing: true})
	require.NoError(t, err)
	assert.False(t, c.Failed())

	// A metric that vanished is a problem too.
	nw = compareRecords(1)
	delete(nw[0].Metrics, "nll")
	c = cmp1(t, compareRecords(1), nw, nil)
	assert.Equal(t, VerdictMissing, findChange(t, c, "ppl-cell", "nll").Verdict)
	require.Len(t, c.Problems, 1)
	assert.Contains(t, c.Problems[0], "cell ppl-cell: metric nll of BASE is absent in NEW")

	// NEW holding 1 of 3 cells of BASE fails, listing the two.
	base = append(compareRecords(1), gone)
	c = cmp1(t, base, compareRecords(1)[:1], nil)
	assert.Len(t, c.Problems, 2)
	var md bytes.Buffer
	require.NoError(t, c.Markdown(&md))
	assert.Contains(t, md.String(), "Gate failed: 2 problem(s)")
	assert.NotContains(t, md.String(), "No regressions")
}

// TestCompareMissingInSomeRuns: a cell of BASE that one run of NEW lacks
// fails the gate, naming the run.
func TestCompareMissingInSomeRuns(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	base, nw := repeated(rng, 4, 1, 0.01), repeated(rng, 4, 1, 0.01)
	nw[2].Records = nw[2].Records[:1]
	c, err := Compare(base, nw, Options{})
	require.NoError(t, err)
	require.Len(t, c.Problems, 1)
	assert.Contains(t, c.Problems[0], "cell passkey-cell: missing in NEW run(s) run3")
	assert.Equal(t, 3, findChange(t, c, "passkey-cell", MetricLatencyP50).NNew)
}

func TestCompareEmpty(t *testing.T) {
	for name, tc := range map[string]struct {
		base, nw []Run
		want     string
	}{
		"empty new":   {Single(compareRecords(1)), Single(nil), "NEW holds no records"},
		"no new runs": {Single(compareRecords(1)), nil, "NEW holds no records (no runs)"},
		"empty base":  {Single(nil), Single(compareRecords(1)), "BASE holds no records"},
	} {
		for _, allow := range []bool{false, true} {
			c, err := Compare(tc.base, tc.nw, Options{AllowMissing: allow})
			require.NoError(t, err, name)
			assert.True(t, c.Failed(), name)
			require.NotEmpty(t, c.Problems, name)
			assert.Contains(t, c.Problems[0], tc.want, name)
			var md bytes.Buffer
			require.NoError(t, c.Markdown(&md))
			assert.NotContains(t, md.String(), "No regressions", name)
		}
	}
	// Nothing in common is a failure as well, --allow-missing or not.
	a, b := compareRecords(1)[:1], compareRecords(1)[1:]
	c, err := Compare(Single(a), Single(b), Options{AllowMissing: true})
	require.NoError(t, err)
	assert.True(t, c.Failed())
	assert.Contains(t, strings.Join(c.Problems, "\n"), "nothing was compared")
}

func TestLoadRuns(t *testing.T) {
	root := t.TempDir()
	for i := 1; i <= 3; i++ {
		storeInto(t, filepath.Join(root, fmt.Sprint(i)), compareRecords(int64(i)))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(root, "not-a-run"), 0o755))
	runs, _, err := LoadRuns(root)
	require.NoError(t, err)
	require.Len(t, runs, 3)
	assert.Equal(t, filepath.Join(root, "2"), runs[1].Dir)
	assert.Len(t, runs[1].Records, 2)

	one, _, err := LoadRuns(filepath.Join(root, "1"))
	require.NoError(t, err)
	require.Len(t, one, 1)
	file, _, err := LoadRuns(filepath.Join(root, "1", FileName))
	require.NoError(t, err)
	require.Len(t, file, 1)

	_, _, err = LoadRuns(filepath.Join(root, "not-a-run"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "holds no results.jsonl, and no subdirectory of it does")
	_, _, err = LoadRuns(filepath.Join(root, "absent"))
	assert.Error(t, err)
}

func TestParseThresholds(t *testing.T) {
	th, err := ParseThresholds("accuracy=0.02,ppl=0.05,latency_p50=0.10")
	require.NoError(t, err)
	assert.Equal(t, map[string]float64{"accuracy": 0.02, "ppl": 0.05, "latency_p50": 0.10}, th)

	th, err = ParseThresholds(" ppl = 5% , nll=0.01, latency_p50=OFF ")
	require.NoError(t, err)
	assert.InDelta(t, 0.05, th["ppl"], 1e-15)
	assert.Equal(t, 0.01, th["nll"])
	assert.True(t, math.IsInf(th["latency_p50"], 1))

	th, err = ParseThresholds("")
	require.NoError(t, err)
	assert.Empty(t, th)

	for in, want := range map[string]string{
		"accuracy=0.02,ppl":          `item 2 "ppl": want metric=value`,
		"accuracy=abc":               `item 1 "accuracy=abc": value "abc"`,
		"accuracy=0.02,,ppl=0.05":    "item 2 is empty",
		"=0.1":                       `item 1 "=0.1": bad metric name`,
		"ppl=-0.05":                  `value "-0.05" is not a non-negative number`,
		"ppl=NaN":                    `value "NaN"`,
		"ppl=0.05,ppl=0.1":           "ppl given twice",
		"latency_p50=0.1,acc racy=1": `item 2 "acc racy=1": bad metric name`,
	} {
		_, err := ParseThresholds(in)
		if assert.Error(t, err, in) {
			assert.Contains(t, err.Error(), want, in)
		}
	}
	_, err = Compare(nil, nil, Options{Thresholds: map[string]float64{"ppl": math.NaN()}})
	assert.Error(t, err)
	_, err = Compare(nil, nil, Options{Alpha: 1.5})
	assert.Error(t, err)
}

func TestMinPAndRunsNeeded(t *testing.T) {
	assert.InDelta(t, 2.0/252, MinP(5, 5), 1e-15)
	assert.InDelta(t, 2.0/924, MinP(6, 6), 1e-15)
	assert.InDelta(t, 1, MinP(1, 1), 1e-15)
	assert.Equal(t, 1.0, MinP(0, 3))
	assert.Equal(t, 4, RunsNeeded(1, 0.05))
	assert.Equal(t, 5, RunsNeeded(6, 0.05))
	assert.Equal(t, 6, RunsNeeded(12, 0.05))
	assert.Equal(t, 7, RunsNeeded(40, 0.05))
	// MinP agrees with the exact test on fully separated samples.
	mw, err := MannWhitneyExact([]float64{1, 2, 3, 4, 5}, []float64{6, 7, 8, 9, 10})
	require.NoError(t, err)
	assert.InDelta(t, MinP(5, 5), mw.P, 1e-12)
}

// TestCompareHolm checks the step-down adjustment on known p-values: four
// timings with raw p 0.01, 0.02, 0.03, 0.5 adjust to 0.04, 0.06, 0.06, 0.5.
func TestCompareHolm(t *testing.T) {
	c := &Comparison{Alpha: 0.05}
	for i, p := range []float64{0.03, 0.5, 0.01, 0.02} {
		c.Changes = append(c.Changes, Change{Cell: fmt.Sprint(i), Metric: MetricLatencyP50, Unit: "us",
			Direction: LowerBetter, Timing: true, Gated: true, Threshold: 0.1,
			Base: 10, New: 20, Delta: 10, Rel: 1, NBase: 10, NNew: 10, P: p, PAdj: math.NaN()})
	}
	require.NoError(t, c.testTimings(nil))
	want := []float64{0.06, 0.5, 0.04, 0.06}
	for i, ch := range c.Changes {
		assert.InDelta(t, want[i], ch.PAdj, 1e-12, "change %d", i)
		assert.Equal(t, ch.PAdj <= 0.05, ch.Regression, "change %d", i)
	}
}

func TestCompareMarkdownListsEverything(t *testing.T) {
	base := compareRecords(1)
	nw := compareRecords(1)
	nw[0].Metrics["ppl"] = 15
	nw = nw[:1]
	c, err := Compare(Single(base), Single(nw), Options{AllowMissing: true})
	require.NoError(t, err)
	var md bytes.Buffer
	require.NoError(t, c.Markdown(&md))
	out := md.String()
	assert.Contains(t, out, "1 regression(s)")
	assert.Contains(t, out, "Cells only in BASE (1)")
	assert.Contains(t, out, "- passkey-cell")
	// The table has one row per change.
	rows := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "| ppl-cell") {
			rows++
		}
	}
	assert.Equal(t, len(c.Changes), rows, fmt.Sprint(out))
}
