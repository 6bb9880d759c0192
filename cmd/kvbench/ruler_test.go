package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The shipped RULER suite runs on the synthetic model and its report holds
// the task × length table and a heatmap per policy.
func TestRulerSuiteAndReport(t *testing.T) {
	if testing.Short() {
		t.Skip("runs configs/ruler.yaml (about 20 s on 2 cores); skipped with -short")
	}
	dir := t.TempDir()
	out, _, err := runCLI(t, "run", "../../configs/ruler.yaml", "--out", dir, "--quiet")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "44 cells") || !strings.Contains(out, "0 failed") {
		t.Errorf("ruler run: %s", out)
	}
	if _, _, err := runCLI(t, "report", dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ruler.csv", "ruler_average.png", "ruler_heatmap_full.png",
		"ruler_heatmap_streamingllm_sinks_4_recent_252.png", "niah_single_1.csv", "vt.csv", "cwe.csv", "fwe.csv"} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Size() < 100 {
			t.Errorf("report file %s: %v", name, err)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "ruler.csv"))
	if err != nil {
		t.Fatal(err)
	}
	// Two policies × (11 tasks + the average), under a header.
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 1+2*12 || lines[0] != "policy,task,2048,3072,mean" || !strings.HasPrefix(lines[1], "full,niah_single_1,") {
		t.Errorf("ruler.csv:\n%s", data)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "report.md"))
	if !strings.Contains(string(md), "\n## RULER\n") {
		t.Error("report.md has no RULER section")
	}
}
