package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvbench/kvbench/results"
)

// TestMain lets a test re-run this binary as the kvbench command, in a real
// child process that can be killed.
func TestMain(m *testing.M) {
	if args := os.Getenv("KVBENCH_TEST_CHILD_ARGS"); args != "" {
		err := run(os.Stdout, os.Stderr, strings.Split(args, "\x1f"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "kvbench:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func child(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "KVBENCH_TEST_CHILD_ARGS="+strings.Join(args, "\x1f"))
	return cmd
}

// cellCounts reads results.jsonl and counts records per cell.
func cellCounts(t *testing.T, dir string) map[string]int {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "results.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	counts := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var r struct {
			Cell   string `json:"cell"`
			Status string `json:"status"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue // a torn last line; the next run repairs it
		}
		counts[r.Cell]++
	}
	return counts
}

func lines(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(data), "\n")
}

func TestSmokeSuiteAndReport(t *testing.T) {
	dir := t.TempDir()
	out, _, err := runCLI(t, "run", "../../configs/smoke.yaml", "--out", dir, "--quiet")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "0 failed") {
		t.Errorf("smoke run reports failures: %s", out)
	}
	if _, _, err := runCLI(t, "report", dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"results.jsonl", "report.md", "index.html", "perplexity.csv", "passkey.csv", "needle.csv",
		"ppl_vs_tokens.png", "ppl_vs_tokens.svg", "passkey_accuracy.png", "latency_vs_context_passkey.png", "memory_vs_context_passkey.png", "recall_vs_budget.png",
		"passkey_vs_budget.png", "perplexity_vs_budget.png", "needle_pareto_memory.png"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("report file missing: %v", err)
			continue
		}
		if st.Size() < 500 {
			t.Errorf("%s is only %d bytes", name, st.Size())
		}
	}
	heat, _ := filepath.Glob(filepath.Join(dir, "needle_heatmap_*.png"))
	if len(heat) < 10 {
		t.Errorf("%d needle heatmaps, want one per policy configuration", len(heat))
	}
	f, err := os.Open(filepath.Join(dir, "ppl_vs_tokens.png"))
	if err == nil {
		if _, err := png.Decode(f); err != nil {
			t.Errorf("ppl_vs_tokens.png: %v", err)
		}
		f.Close()
	}
	html, _ := os.ReadFile(filepath.Join(dir, "index.html"))
	if n := strings.Count(string(html), "data:image/png;base64,"); n < 10 {
		t.Errorf("index.html embeds %d images", n)
	}
	counts := cellCounts(t, dir)
	if len(counts) < 100 {
		t.Errorf("%d cells recorded", len(counts))
	}
	// A rerun into the same directory resumes: nothing left to do.
	out, _, err = runCLI(t, "run", "../../configs/smoke.yaml", "--out", dir, "--quiet")
	if err != nil || !strings.Contains(out, "0 run") {
		t.Errorf("rerun: %v, %s", err, out)
	}
}

// TestKilledRunResumes kills a real run with SIGKILL part-way, reruns it, and
// checks that every cell is recorded exactly once.
func TestKilledRunResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a real run; skipped in -short mode")
	}
	dir := t.TempDir()
	suite := "../../configs/smoke.yaml"
	resultsFile := filepath.Join(dir, "results.jsonl")
	for _, killAfter := range []int{3, 40} {
		cmd := child("run", suite, "--out", dir, "--quiet")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Minute)
		for lines(resultsFile) < killAfter && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
	}
	before := len(cellCounts(t, dir))
	cmd := child("run", suite, "--out", dir, "--quiet")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rerun after kill: %v\n%s", err, out)
	}
	counts := cellCounts(t, dir)
	for cell, n := range counts {
		if n != 1 {
			t.Errorf("cell %s recorded %d times", cell, n)
		}
	}
	out, _, err := runCLI(t, "run", suite, "--dry-run")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Count(out, "\n") - 1
	if len(counts) != want {
		t.Errorf("%d cells recorded after kill and rerun, suite has %d", len(counts), want)
	}
	if before == 0 || before >= want {
		t.Logf("note: the kills left %d of %d cells", before, want)
	}
	// The manifest, rewritten by every run, survived the kills whole and
	// describes every cell.
	m, err := results.ReadManifest(dir)
	if err != nil || m == nil {
		t.Fatalf("manifest after kills: %v, %v", m, err)
	}
	for cell := range counts {
		if _, ok := m.Cells[cell]; !ok {
			t.Errorf("cell %s has a record but no manifest entry", cell)
		}
	}
}

// TestCompareGate doctors one metric in a copy of a results directory:
// compare exits 1 and names it; identical directories pass.
func TestCompareGate(t *testing.T) {
	base := t.TempDir()
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
	if _, _, err := runCLI(t, "run", suite, "--out", base, "--quiet"); err != nil {
		t.Fatal(err)
	}
	if out, _, err := runCLI(t, "compare", base, base); err != nil {
		t.Fatalf("identical dirs: %v\n%s", err, out)
	}
	doctored := t.TempDir()
	data, err := os.ReadFile(filepath.Join(base, "results.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var outLines []string
	changed := ""
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		if m, ok := r["metrics"].(map[string]any); ok && changed == "" && r["task"] == "perplexity" && r["policy"] == "streamingllm" {
			m["ppl"] = m["ppl"].(float64) * 1.2
			changed = r["cell"].(string)
		}
		b, _ := json.Marshal(r)
		outLines = append(outLines, string(b))
	}
	if changed == "" {
		t.Fatal("no perplexity record to doctor")
	}
	if err := os.WriteFile(filepath.Join(doctored, "results.jsonl"), []byte(strings.Join(outLines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runCLI(t, "compare", base, doctored, "--max-regress", "ppl=0.05")
	if ex, ok := err.(exitError); !ok || ex != 1 {
		t.Fatalf("compare of a doctored ppl: error %v, want exit status 1\n%s", err, out)
	}
	if !strings.Contains(stderr, changed) || !strings.Contains(stderr, "ppl") {
		t.Errorf("regression message does not name the cell and metric:\n%s", stderr)
	}
	// benchstat format of latency.
	gb := filepath.Join(t.TempDir(), "attn.txt")
	if _, _, err := runCLI(t, "compare", base, base, "--gobench", gb); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(gb); !strings.Contains(string(data), "BenchmarkAttn") || !strings.Contains(string(data), "ns/op") {
		t.Errorf("gobench output lacks benchmark lines:\n%.300s", data)
	}
}
