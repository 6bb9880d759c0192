package results

import (
	"bytes"
	"fmt"
	"math"
	"math/rand"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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

func compareRecords(seed int64) []Record {
	mk := func(cell, task string, metrics map[string]float64, lat []float64) Record {
		return Record{Cell: cell, Model: "ref25m", Policy: "quest", Task: task, TaskVersion: 1, Status: "ok",
			Metrics: metrics,
			Latency: Latency{P50: Median(lat), N: len(lat), Samples: lat},
			KV:      KV{MaxResident: 1 << 20, BytesRead: 1000}, Throughput: 100}
	}
	return []Record{
		mk("ppl-cell", "perplexity", map[string]float64{"ppl": 12.0, "nll": 2.48}, latencySamples(seed, 30, 100, 0.02)),
		mk("passkey-cell", "passkey", map[string]float64{"accuracy": 0.90, "mystery": 3}, latencySamples(seed+1, 30, 200, 0.02)),
	}
}

// storeDir writes records into a results directory.
func storeDir(t *testing.T, recs []Record) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "run")
	s, err := Open(dir)
	require.NoError(t, err)
	for i := range recs {
		require.NoError(t, s.Append(&recs[i]))
	}
	require.NoError(t, s.Close())
	return dir
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
	base, err := Load(a)
	require.NoError(t, err)
	nw, err := Load(b)
	require.NoError(t, err)
	c, err := Compare(base, nw, nil)
	require.NoError(t, err)
	assert.Empty(t, c.Regressions())
	assert.False(t, c.HasRegressions())
	assert.Empty(t, c.OnlyBase)
	assert.Empty(t, c.OnlyNew)
	for _, ch := range c.Changes {
		assert.Equal(t, VerdictSame, ch.Verdict, "%s %s", ch.Cell, ch.Metric)
	}
	var md bytes.Buffer
	require.NoError(t, c.Markdown(&md))
	assert.Contains(t, md.String(), "No regressions")
}

func TestComparePplRegressionNamed(t *testing.T) {
	base := compareRecords(1)
	nw := compareRecords(1)
	nw[0].Metrics["ppl"] = 13.2 // +10%
	c, err := Compare(base, nw, map[string]float64{"accuracy": 0.02, "ppl": 0.05, "latency_p50": 0.10})
	require.NoError(t, err)
	regs := c.Regressions()
	require.Len(t, regs, 1)
	assert.Contains(t, regs[0], "ppl-cell")
	assert.Contains(t, regs[0], "ppl 12 → 13.2")
	assert.Contains(t, regs[0], "+10.0%")
	ch := findChange(t, c, "ppl-cell", "ppl")
	assert.True(t, ch.Regression)
	assert.InDelta(t, 0.1, ch.Rel, 1e-12)

	// Within the gate (+4%): worse, not a regression.
	nw[0].Metrics["ppl"] = 12.48
	c, err = Compare(base, nw, map[string]float64{"ppl": 0.05})
	require.NoError(t, err)
	assert.Empty(t, c.Regressions())
	assert.Equal(t, VerdictWorse, findChange(t, c, "ppl-cell", "ppl").Verdict)

	// nll has no gate unless given one.
	nw[0].Metrics["nll"] = 3.0
	c, err = Compare(base, nw, map[string]float64{"ppl": 0.05})
	require.NoError(t, err)
	assert.Empty(t, c.Regressions())
	c, err = Compare(base, nw, map[string]float64{"ppl": 0.05, "nll": 0.01})
	require.NoError(t, err)
	require.Len(t, c.Regressions(), 1)
	assert.Contains(t, c.Regressions()[0], "nll")

	var md bytes.Buffer
	require.NoError(t, c.Markdown(&md))
	assert.Contains(t, md.String(), "**REGRESSION**")
	t.Log("\n" + md.String())
}

func TestCompareAccuracyAbsoluteDrop(t *testing.T) {
	base := compareRecords(1)
	nw := compareRecords(1)
	th, err := ParseThresholds("accuracy=0.02")
	require.NoError(t, err)

	nw[1].Metrics["accuracy"] = 0.885 // -0.015: within
	c, err := Compare(base, nw, th)
	require.NoError(t, err)
	assert.Empty(t, c.Regressions())

	nw[1].Metrics["accuracy"] = 0.87 // -0.03: beyond (a relative gate of 2% would say the same, but 0.03 absolute is the rule)
	c, err = Compare(base, nw, th)
	require.NoError(t, err)
	require.Len(t, c.Regressions(), 1)
	assert.Contains(t, c.Regressions()[0], "passkey-cell: accuracy 0.9 → 0.87")

	nw[1].Metrics["accuracy"] = 0.99
	c, err = Compare(base, nw, th)
	require.NoError(t, err)
	assert.Empty(t, c.Regressions())
	assert.Equal(t, VerdictImproved, findChange(t, c, "passkey-cell", "accuracy").Verdict)

	// "score" is gated by the accuracy key; an unknown metric is reported only.
	base[1].Metrics["score"], nw[1].Metrics["score"] = 0.5, 0.4
	nw[1].Metrics["mystery"] = 100
	c, err = Compare(base, nw, th)
	require.NoError(t, err)
	require.Len(t, c.Regressions(), 1)
	assert.Contains(t, c.Regressions()[0], "score")
	m := findChange(t, c, "passkey-cell", "mystery")
	assert.Equal(t, VerdictChanged, m.Verdict)
	assert.False(t, m.Regression)
	assert.Equal(t, Unknown, m.Direction)
}

func TestCompareLatencyNoiseAware(t *testing.T) {
	th := map[string]float64{"latency_p50": 0.10}
	base := compareRecords(1)

	// Noisy: the medians differ by more than 10%, but the samples overlap
	// (heavy jitter, few samples): not significant, not gated.
	nw := compareRecords(1)
	bl := []float64{100, 60, 140, 90, 115, 70, 130}
	nl := []float64{118, 65, 150, 80, 125, 75, 145}
	base[0].Latency = Latency{P50: Median(bl), N: len(bl), Samples: bl}
	nw[0].Latency = Latency{P50: Median(nl), N: len(nl), Samples: nl}
	c, err := Compare(base, nw, th)
	require.NoError(t, err)
	ch := findChange(t, c, "ppl-cell", MetricLatencyP50)
	require.Greater(t, ch.Rel, 0.10)
	assert.Greater(t, ch.P, 0.05)
	assert.Equal(t, VerdictNoise, ch.Verdict)
	assert.Empty(t, c.Regressions())

	// Clearly slower (+20%, low jitter, 30 samples each): a regression.
	nw = compareRecords(2)
	nw[1].Latency.Samples = latencySamples(9, 30, 240, 0.02)
	nw[1].Latency.P50 = Median(nw[1].Latency.Samples)
	c, err = Compare(base, nw, th)
	require.NoError(t, err)
	ch = findChange(t, c, "passkey-cell", MetricLatencyP50)
	assert.True(t, ch.Regression, "%+v", ch)
	assert.Less(t, ch.P, 0.001)
	regs := c.Regressions()
	require.Len(t, regs, 1)
	assert.Contains(t, regs[0], "passkey-cell: latency_p50")
	assert.Contains(t, regs[0], "p=")

	// Slower but with fewer than 5 samples a side: insufficient, not gated.
	nw = compareRecords(1)
	base[1].Latency = Latency{P50: 200, N: 4, Samples: []float64{199, 200, 201, 200}}
	nw[1].Latency = Latency{P50: 300, N: 4, Samples: []float64{299, 300, 301, 300}}
	c, err = Compare(base, nw, th)
	require.NoError(t, err)
	ch = findChange(t, c, "passkey-cell", MetricLatencyP50)
	assert.Equal(t, VerdictInsufficient, ch.Verdict)
	assert.False(t, ch.Regression)
	assert.Empty(t, c.Regressions())

	// Slightly slower (+3%) even if significant: within the threshold.
	base = compareRecords(1)
	nw = compareRecords(1)
	for i := range nw[1].Latency.Samples {
		nw[1].Latency.Samples[i] *= 1.03
	}
	nw[1].Latency.P50 *= 1.03
	c, err = Compare(base, nw, th)
	require.NoError(t, err)
	assert.Equal(t, VerdictWorse, findChange(t, c, "passkey-cell", MetricLatencyP50).Verdict)
	assert.Empty(t, c.Regressions())
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
	c, err := Compare(base, nw, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"only-base"}, c.OnlyBase)
	assert.Equal(t, []string{"only-new"}, c.OnlyNew)
	regs := c.Regressions()
	require.Len(t, regs, 1)
	assert.Contains(t, regs[0], "passkey-cell: failed in new: panic: index out of range")

	// A metric that vanished is reported.
	nw = compareRecords(1)
	delete(nw[0].Metrics, "nll")
	c, err = Compare(compareRecords(1), nw, nil)
	require.NoError(t, err)
	assert.Equal(t, VerdictMissing, findChange(t, c, "ppl-cell", "nll").Verdict)

	var md bytes.Buffer
	require.NoError(t, c.Markdown(&md))
	assert.Contains(t, md.String(), "nll")
}

func TestParseThresholds(t *testing.T) {
	th, err := ParseThresholds("accuracy=0.02,ppl=0.05,latency_p50=0.10")
	require.NoError(t, err)
	assert.Equal(t, map[string]float64{"accuracy": 0.02, "ppl": 0.05, "latency_p50": 0.10}, th)

	th, err = ParseThresholds(" ppl = 5% , nll=0.01 ")
	require.NoError(t, err)
	assert.InDelta(t, 0.05, th["ppl"], 1e-15)
	assert.Equal(t, 0.01, th["nll"])

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
	_, err = Compare(nil, nil, map[string]float64{"ppl": math.NaN()})
	assert.Error(t, err)
}

func TestMetricDirection(t *testing.T) {
	for m, d := range map[string]Direction{
		"accuracy": HigherBetter, "score": HigherBetter, "accuracy@4k": HigherBetter,
		"ppl": LowerBetter, "ppl_final": LowerBetter, "nll": LowerBetter, "latency_ms": LowerBetter,
		"mystery": Unknown, "tokens": Unknown,
	} {
		assert.Equal(t, d, MetricDirection(m), m)
	}
}

func TestCompareMarkdownListsEverything(t *testing.T) {
	base := compareRecords(1)
	nw := compareRecords(1)
	nw[0].Metrics["ppl"] = 15
	nw = nw[:1]
	c, err := Compare(base, nw, nil)
	require.NoError(t, err)
	var md bytes.Buffer
	require.NoError(t, c.Markdown(&md))
	out := md.String()
	assert.Contains(t, out, "1 regression(s)")
	assert.Contains(t, out, "Cells only in base (1)")
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
