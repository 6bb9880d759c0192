package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeSuite writes a suite file into a new folder and returns its path.
func writeSuite(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "suite.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func riverText(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../../configs/data/river.txt")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRunFailedCellsExitCode: a suite with 7 of 10 cells failing (their
// models are missing) exits non-zero and lists each failed cell with its
// reason; so does a rerun that skips them all, and one with --retry-failed
// that fails them again.
func TestRunFailedCellsExitCode(t *testing.T) {
	var models []string
	for _, m := range []string{"tiny", "tiny-mha", "tiny-qwen"} {
		models = append(models, fmt.Sprintf("{name: %s, path: \"synthetic:%s\"}", m, m))
	}
	for i := 0; i < 7; i++ {
		models = append(models, fmt.Sprintf("{name: gone%d, path: no-such-model-%d}", i, i))
	}
	suite := writeSuite(t, fmt.Sprintf(`name: failing
backend: cpu
models: [%s]
policies: [full]
tasks: [{name: perplexity, text: %q, tokens: 40, bucket: 20}]
`, strings.Join(models, ", "), riverText(t)))
	dir := t.TempDir()
	check := func(args ...string) string {
		t.Helper()
		out, _, err := runCLI(t, append([]string{"run", suite, "--out", dir, "--quiet"}, args...)...)
		if err == nil {
			t.Fatalf("run %v with 7 failed cells exited 0:\n%s", args, out)
		}
		if !strings.Contains(err.Error(), "7 cells of "+dir+" failed") || !strings.Contains(err.Error(), "--retry-failed") {
			t.Errorf("error %q does not count the failed cells", err)
		}
		if !strings.Contains(out, "7 failed") {
			t.Errorf("summary does not count the failed cells of the directory:\n%s", out)
		}
		for i := 0; i < 7; i++ {
			cell := fmt.Sprintf("gone%d/full/perplexity(", i)
			line := ""
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "  "+cell) {
					line = l
				}
			}
			if line == "" {
				t.Errorf("failed cell %s not listed:\n%s", cell, out)
				continue
			}
			if !strings.Contains(line, fmt.Sprintf("no-such-model-%d", i)) {
				t.Errorf("listing of %s lacks the reason: %s", cell, line)
			}
		}
		if strings.Contains(out, "  tiny/") {
			t.Errorf("a successful cell is listed as failed:\n%s", out)
		}
		return out
	}
	out := check()
	if !strings.Contains(out, "10 run") || strings.Contains(out, "[earlier run]") {
		t.Errorf("first run:\n%s", out)
	}
	// A rerun skips every cell and still fails, naming the earlier failures.
	out = check()
	if !strings.Contains(out, "10 already done, 0 run") || strings.Count(out, "[earlier run]") != 7 {
		t.Errorf("rerun:\n%s", out)
	}
	// --retry-failed reruns only the failed cells, which fail again.
	out = check("--retry-failed")
	if !strings.Contains(out, "3 already done, 7 run") || strings.Contains(out, "[earlier run]") {
		t.Errorf("retry:\n%s", out)
	}
}

// TestRunMissingModelExitCode: a suite whose only model is missing exits
// non-zero; once the model is fixed, --retry-failed mends the directory and
// the run exits 0.
func TestRunMissingModelExitCode(t *testing.T) {
	text := fmt.Sprintf(`name: missing
backend: cpu
models: [{name: m, path: %%s}]
policies: [full]
tasks: [{name: perplexity, text: %q, tokens: 40, bucket: 20}]
`, riverText(t))
	suite := writeSuite(t, fmt.Sprintf(text, "no-such-model"))
	dir := t.TempDir()
	out, _, err := runCLI(t, "run", suite, "--out", dir, "--quiet")
	if err == nil || !strings.Contains(out, "no-such-model") || !strings.Contains(out, "1 failed") {
		t.Fatalf("missing model: error %v\n%s", err, out)
	}
	if err := os.WriteFile(suite, []byte(fmt.Sprintf(text, `"synthetic:tiny"`)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err = runCLI(t, "run", suite, "--out", dir, "--quiet", "--retry-failed")
	if err != nil || !strings.Contains(out, "1 run, 0 failed") {
		t.Fatalf("retry with the model fixed: error %v\n%s", err, out)
	}
	if out, _, err := runCLI(t, "run", suite, "--out", dir, "--quiet"); err != nil || !strings.Contains(out, "0 failed") {
		t.Fatalf("rerun of a mended directory: error %v\n%s", err, out)
	}
}

// TestRunResumeMismatchCLI: a changed setting and a different binary
// revision are refused with the difference and the ways out; --force-resume
// goes on.
func TestRunResumeMismatchCLI(t *testing.T) {
	text := fmt.Sprintf(`name: resume
backend: cpu
recall_every: %%d
models: [{name: tiny, path: "synthetic:tiny"}]
policies: [full, {name: streamingllm, sinks: 4, recent: 28}]
tasks: [{name: perplexity, text: %q, tokens: 60, bucket: 30}]
`, riverText(t))
	suite := writeSuite(t, fmt.Sprintf(text, 8))
	dir := t.TempDir()
	if _, _, err := runCLI(t, "run", suite, "--out", dir, "--quiet"); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "results.jsonl"))
	refused := func(want string) {
		t.Helper()
		out, _, err := runCLI(t, "run", suite, "--out", dir, "--quiet")
		if err == nil {
			t.Fatalf("resume with %s exited 0:\n%s", want, out)
		}
		for _, s := range []string{want, "another --out", "delete the directory " + dir, "--force-resume"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error lacks %q:\n%v", s, err)
			}
		}
		if after, _ := os.ReadFile(filepath.Join(dir, "results.jsonl")); string(after) != string(before) {
			t.Errorf("a refused resume changed results.jsonl")
		}
	}
	if err := os.WriteFile(suite, []byte(fmt.Sprintf(text, 16)), 0o644); err != nil {
		t.Fatal(err)
	}
	refused("recall_every: 8 (recorded), 16 (this run)")
	if err := os.WriteFile(suite, []byte(fmt.Sprintf(text, 8)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _, err := runCLI(t, "run", suite, "--out", dir, "--quiet"); err != nil || !strings.Contains(out, "2 already done, 0 run") {
		t.Fatalf("the original suite resumes: %v\n%s", err, out)
	}

	saved := buildRevision
	t.Cleanup(func() { buildRevision = saved })
	buildRevision = "0123abcd"
	refused("revision: ")
	refused("0123abcd (this run)")

	out, _, err := runCLI(t, "run", suite, "--out", dir, "--quiet", "--force-resume")
	if err != nil || !strings.Contains(out, "2 already done, 0 run, 0 failed") {
		t.Fatalf("--force-resume: %v\n%s", err, out)
	}
	m, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if !strings.Contains(string(m), "0123abcd (this run)") {
		t.Errorf("manifest does not note the forced resume:\n%s", m)
	}
}
