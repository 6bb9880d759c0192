package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestE2E runs the end-to-end timing on the synthetic model on the CPU: the
// weights' upload line, a prefill and an NLL row per length, the decode
// row, and the refusals of bad flags.
func TestE2E(t *testing.T) {
	out, _, err := runCLI(t, "e2e", "--model", "synthetic:tiny", "--backend", "cpu", "--threads", "1",
		"--lengths", "40,70", "--decode", "5", "--decode-prompt", "9", "--chunk", "32")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`weights: [0-9.]+ GB uploaded in [0-9.]+ s \([0-9.]+ GB/s\)`).MatchString(out) {
		t.Errorf("no upload line:\n%s", out)
	}
	for _, want := range []string{"| prefill (last logits) | 40 |", "| NLL pass (all logits) | 70 |", "| decode (one token a step) | 5 |", "chunk 32"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "stepwise decode") { // the CPU has no DeviceArgmax: one loop
		t.Errorf("a stepwise decode row on the CPU:\n%s", out)
	}
	for _, args := range [][]string{{"--chunk", "0"}, {"--lengths", "x"}, {"--kv-dtype", "f8"}} {
		a := append([]string{"e2e", "--model", "synthetic:tiny", "--backend", "cpu"}, args...)
		if _, _, err := runCLI(t, a...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

// TestE2EKernelTimes: on the fake CUDA device with KVBENCH_KERNEL_TIMES=1,
// e2e prints each prefill's and NLL pass's kernel table after its own
// (the fake's times are zero; the names and launches are the backend's).
// In a process of its own: the fake must be that process's only device.
func TestE2EKernelTimes(t *testing.T) {
	if os.Getenv("KVBENCH_CUDA_FAKE") != "1" {
		if testing.Short() {
			t.Skip("short: no subprocess")
		}
		cmd := exec.Command(os.Args[0], "-test.run", "^TestE2EKernelTimes$", "-test.count", "1")
		cmd.Env = append(os.Environ(), "KVBENCH_CUDA_FAKE=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "PASS") {
			t.Fatalf("e2e on the fake device: %v\n%s", err, out)
		}
		return
	}
	t.Setenv("KVBENCH_KERNEL_TIMES", "1")
	out, _, err := runCLI(t, "e2e", "--model", "synthetic:tiny", "--backend", "cuda", "--lengths", "40", "--decode", "0", "--chunk", "32")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kernel times, prefill of 40 tokens", "kernel times, NLL pass of 40 tokens", "| be_embed | 2 |", "| cublas gemm 64x64 ", "ms of wall time"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// fixedClock is a kernelClock that returns its times.
type fixedClock []cuda.KernelTime

func (f fixedClock) KernelTimes(bool) ([]cuda.KernelTime, error) { return f, nil }

// TestClockTable: the 15 longest kernels listed, the rest summed in one row,
// the kernels' sum against the wall time; nothing without a clock.
func TestClockTable(t *testing.T) {
	var kt fixedClock
	for i := range 17 {
		kt = append(kt, cuda.KernelTime{Name: fmt.Sprintf("k%02d", i), Launches: 2, Ms: float64(17 - i)})
	}
	var w strings.Builder
	if err := clockTable(&w, kt, "a pass", 0.306); err != nil {
		t.Fatal(err)
	}
	out := w.String()
	for _, want := range []string{"| k00 | 2 | 17.00 |", "| k14 | 2 | 3.00 |", "| 2 others | 4 | 3.00 | 2.0 % |", "kernels 153.0 ms of 306.0 ms of wall time (50.0 %)"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "| k15 |") {
		t.Errorf("the 16th kernel listed:\n%s", out)
	}
	w.Reset()
	if err := clockTable(&w, nil, "a pass", 1); err != nil || w.Len() != 0 {
		t.Errorf("no clock: %q, %v", w.String(), err)
	}
}

// TestE2EDecodeHold: e2e's decode after a prompt (decodePrompted) holds the
// prompt's and the steps' pages in one run per sequence, so that on a GPU
// the decode steps past the prompt's last page find their pages by
// arithmetic: on the fake device, the last step's plan has every KV head
// so (Plan.Arith). In a process of its own: the fake must be that
// process's only device.
func TestE2EDecodeHold(t *testing.T) {
	if os.Getenv("KVBENCH_CUDA_FAKE") != "1" {
		if testing.Short() {
			t.Skip("short: no subprocess")
		}
		cmd := exec.Command(os.Args[0], "-test.run", "^TestE2EDecodeHold$", "-test.count", "1", "-test.v")
		cmd.Env = append(os.Environ(), "KVBENCH_CUDA_FAKE=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "PASS") {
			t.Fatalf("decode on the fake device: %v\n%s", err, out)
		}
		return
	}
	m, err := runtime.Synthetic("small") // heads of 64: the split-KV kernels
	if err != nil {
		t.Fatal(err)
	}
	be, release, err := openBackendAt("cuda", 0, "", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: 64, KVType: runtime.BF16})
	if err != nil {
		t.Fatal(err)
	}
	prompt := make([]int, 40) // 3 pages of 16 tokens; 30 steps take 2 more
	for i := range prompt {
		prompt[i] = 3 + i
	}
	const steps = 30
	logits := make([]float32, m.Config.Vocab)
	first, err := decodePrompted(r, prompt, steps, logits)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Greedy(first, steps, make([]int, steps), logits); err != nil {
		t.Fatal(err)
	}
	p := be.(interface{ AttnPlan() cuda.Plan }).AttnPlan()
	if p.Arith != m.Config.KVHeads {
		t.Errorf("the last decode step's plan %+v: %d KV heads found by arithmetic, want %d", p, p.Arith, m.Config.KVHeads)
	}
}
