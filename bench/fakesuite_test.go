package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSmokeSuiteOnFakeDevice runs configs/smoke.yaml (every policy, every
// task) on the CUDA backend's host code over the fake device (no GPU,
// nothing computed: runtime/cuda/fake.go), in a process of its own (the
// fake must be that process's only device): the engine's batched streams
// and trials, H2O's and TOVA's batched sums, Quest's queued choices and the
// graphs all run to the end without a failed cell. The numbers are not
// checked: the fake device computes nothing.
func TestSmokeSuiteOnFakeDevice(t *testing.T) {
	if os.Getenv("KVBENCH_CUDA_FAKE") != "1" {
		if testing.Short() {
			t.Skip("short: no subprocess")
		}
		cmd := exec.Command(os.Args[0], "-test.run", "^TestSmokeSuiteOnFakeDevice$", "-test.count", "1")
		cmd.Env = append(os.Environ(), "KVBENCH_CUDA_FAKE=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "PASS") {
			t.Fatalf("the suite on the fake device: %v\n%s", err, out)
		}
		return
	}
	s, err := LoadSuite("../configs/smoke.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s.Backend = "cuda"
	out := t.TempDir()
	sum, err := Run(context.Background(), s, RunOptions{Out: out, Quiet: true, Revision: "fake", Binary: "fake"})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Backend != "cuda" || sum.Failed != 0 || sum.Ran != sum.Cells {
		t.Fatalf("backend %s: %d of %d cells ran, %d failed: %+v", sum.Backend, sum.Ran, sum.Cells, sum.Failed, sum.FailedCells)
	}
	if _, err := os.Stat(filepath.Join(out, "results.jsonl")); err != nil {
		t.Fatal(err)
	}
}
