package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/results"
)

// gateRun runs a small suite once and returns its results directory.
func gateRun(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "run")
	suite := filepath.Join(t.TempDir(), "gate.yaml")
	text, _ := filepath.Abs("../../configs/data/river.txt")
	if err := os.WriteFile(suite, []byte(fmt.Sprintf(`name: gate
models: [{name: tiny, path: "synthetic:tiny"}]
policies: [full, {name: streamingllm, sinks: 4, recent: 28}]
tasks:
  - {name: perplexity, text: %q, tokens: 200, bucket: 50}
  - {name: passkey, lengths: [400], depths: [0.5], trials: 2}
`, text)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "run", suite, "--out", dir, "--quiet"); err != nil {
		t.Fatal(err)
	}
	return dir
}

// writeRecords writes records (doctored by edit) as DIR/results.jsonl.
func writeRecords(t *testing.T, dir string, recs []results.Record, edit func(*results.Record)) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, r := range recs {
		r.Metrics = copyMetrics(r.Metrics)
		if edit != nil {
			edit(&r)
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(b))
	}
	data := strings.Join(lines, "\n")
	if len(lines) > 0 {
		data += "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, results.FileName), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyMetrics(m map[string]float64) map[string]float64 {
	c := make(map[string]float64, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func wantExit1(t *testing.T, what string, err error, out, stderr string) {
	t.Helper()
	if ex, ok := err.(exitError); !ok || ex != 1 {
		t.Fatalf("%s: error %v, want exit status 1\nstdout:\n%s\nstderr:\n%s", what, err, out, stderr)
	}
}

// TestCompareRecordsCarryDeclarations: the runner copies each task's
// declared metrics into its records.
func TestCompareRecordsCarryDeclarations(t *testing.T) {
	recs, err := results.Load(gateRun(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		want := map[string]string{"perplexity": "ppl", "passkey": "accuracy"}[r.Task]
		found := false
		for _, d := range r.Declared {
			if d.Name == want && d.Better != "" {
				found = true
			}
		}
		if !found {
			t.Errorf("cell %s: declarations %+v lack %s", r.Cell, r.Declared, want)
		}
	}
}

// TestCompareIncompleteNew: NEW that is empty, lacks cells or holds failed
// cells fails the gate with the list, unless --allow-missing (never when
// empty).
func TestCompareIncompleteNew(t *testing.T) {
	base := gateRun(t)
	recs, err := results.Load(base)
	if err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	writeRecords(t, empty, nil, nil)
	out, stderr, err := runCLI(t, "compare", base, empty)
	wantExit1(t, "empty NEW", err, out, stderr)
	if !strings.Contains(stderr, "problem: NEW holds no records") || strings.Contains(out, "No regressions") {
		t.Errorf("empty NEW:\nstdout:\n%s\nstderr:\n%s", out, stderr)
	}
	out, stderr, err = runCLI(t, "compare", base, empty, "--allow-missing")
	wantExit1(t, "empty NEW, --allow-missing", err, out, stderr)

	part := filepath.Join(t.TempDir(), "part")
	writeRecords(t, part, recs[:1], nil)
	out, stderr, err = runCLI(t, "compare", base, part)
	wantExit1(t, "NEW with 1 cell", err, out, stderr)
	for _, r := range recs[1:] {
		if !strings.Contains(stderr, "problem: cell "+r.Cell+": in BASE, missing in NEW") {
			t.Errorf("missing cell %s not listed:\n%s", r.Cell, stderr)
		}
	}
	if out, stderr, err = runCLI(t, "compare", base, part, "--allow-missing"); err != nil {
		t.Errorf("--allow-missing: %v\n%s\n%s", err, out, stderr)
	}

	failed := filepath.Join(t.TempDir(), "failed")
	writeRecords(t, failed, recs, func(r *results.Record) {
		if r.Task == "passkey" && r.Policy == "full" {
			r.Status, r.Error, r.Metrics = "failed", "model not found", nil
		}
	})
	out, stderr, err = runCLI(t, "compare", base, failed, "--allow-missing")
	wantExit1(t, "a cell failed in NEW", err, out, stderr)
	if !strings.Contains(stderr, "regression:") || !strings.Contains(stderr, "failed in NEW (1 of 1 runs): model not found") {
		t.Errorf("failed cell not named:\n%s", stderr)
	}
}

// TestCompareThresholdFlags: a typo in --max-regress is an error with a
// suggestion; gates named merge with the defaults.
func TestCompareThresholdFlags(t *testing.T) {
	base := gateRun(t)
	for flag, want := range map[string]string{
		"acuracy=0.02": "did you mean accuracy?",
		"latency=0.1":  "did you mean latency_p50?",
		"ppl=0.05,x=1": `unknown metric "x"`,
		"ppl=abc":      `--max-regress: thresholds: item 1 "ppl=abc"`,
	} {
		_, _, err := runCLI(t, "compare", base, base, "--max-regress", flag)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--max-regress %s: error %v, want one containing %q", flag, err, want)
		}
	}
	// One run a side cannot gate latency: asking for it is an error.
	_, _, err := runCLI(t, "compare", base, base, "--max-regress", "latency_p50=0.1")
	if err == nil || !strings.Contains(err.Error(), "runs per side are needed") {
		t.Errorf("latency gate over one run: %v", err)
	}

	recs, err := results.Load(base)
	if err != nil {
		t.Fatal(err)
	}
	worse := filepath.Join(t.TempDir(), "worse")
	writeRecords(t, worse, recs, func(r *results.Record) {
		if r.Task == "perplexity" {
			r.Metrics["ppl"] *= 1.08
		}
	})
	// ppl keeps its default 5% when only nll is named.
	out, stderr, err := runCLI(t, "compare", base, worse, "--max-regress", "nll=0.5")
	wantExit1(t, "ppl +8% with nll named", err, out, stderr)
	if !strings.Contains(stderr, "ppl") {
		t.Errorf("ppl regression not named:\n%s", stderr)
	}
	if _, _, err := runCLI(t, "compare", base, worse, "--max-regress", "ppl=0.1"); err != nil {
		t.Errorf("ppl +8%% under a 10%% gate: %v", err)
	}
}

// TestCompareRepeatedRuns: directories of runs are compared by their
// run-level latencies: six runs a side with a common 30% slowdown fail, the
// same runs without it pass; --gobench writes one line per run and cell.
func TestCompareRepeatedRuns(t *testing.T) {
	recs, err := results.Load(gateRun(t))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	jitter := []float64{1.00, 1.03, 0.98, 1.01, 0.99, 1.02}
	side := func(name string, slow float64) string {
		dir := filepath.Join(root, name)
		for i, j := range jitter {
			writeRecords(t, filepath.Join(dir, fmt.Sprint(i+1)), recs, func(r *results.Record) {
				r.Latency.P50 *= slow * j
			})
		}
		return dir
	}
	base, same, slow := side("base", 1), side("same", 1), side("slow", 1.3)
	out, stderr, err := runCLI(t, "compare", base, same, "--max-regress", "latency_p50=0.1")
	if err != nil {
		t.Fatalf("identical runs: %v\n%s\n%s", err, out, stderr)
	}
	if !strings.Contains(out, "over 6 BASE and 6 NEW run(s)") {
		t.Errorf("the summary does not count the runs:\n%s", out)
	}
	gb := filepath.Join(t.TempDir(), "attn.txt")
	out, stderr, err = runCLI(t, "compare", base, slow, "--gobench", gb)
	wantExit1(t, "30% slower", err, out, stderr)
	if n := strings.Count(stderr, "regression:"); n != len(recs) || !strings.Contains(stderr, "latency_p50") || !strings.Contains(stderr, "Holm p=") {
		t.Errorf("want %d latency regressions, got %d:\n%s", len(recs), n, stderr)
	}
	data, err := os.ReadFile(gb)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "ns/op"); n != 6*len(recs) {
		t.Errorf("gobench: %d result lines, want %d (runs x cells):\n%s", n, 6*len(recs), data)
	}
}
