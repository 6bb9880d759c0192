package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestStreams runs the streams benchmark on the synthetic model on the CPU
// and checks its table: a prompt row, the batched decode row with
// streams x tokens tokens and a rate that is tokens over seconds, the
// one-after-another row, and the memory and bytes-read lines.
func TestStreams(t *testing.T) {
	out, _, err := runCLI(t, "streams", "--model", "synthetic:tiny", "--backend", "cpu", "--threads", "1",
		"--streams", "3", "--tokens", "4", "--prompt", "9", "--policy", "h2o", "--budget", "8", "--alone", "2")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"3 streams under h2o map[budget:8], 9-token prompts", "| prompts (each alone) | 3 | 27 |",
		"| decode, streams one after another | 3 | 6 |", "device memory: weights", "a batch step reads the weights once"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	m := regexp.MustCompile(`\| decode, one batch \| 3 \| 12 \| ([0-9.]+) \| ([0-9]+) \| ([0-9]+) \|`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no batched decode row of 3 streams and 12 tokens:\n%s", out)
	}
	perS, _ := strconv.ParseFloat(m[2], 64)
	perMin, _ := strconv.ParseFloat(m[3], 64)
	if perS <= 0 || perMin < 59*perS || perMin > 61*perS {
		t.Errorf("%v tokens/s and %v tokens/min", perS, perMin)
	}
}

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
	for _, args := range [][]string{{"--chunk", "0"}, {"--lengths", "x"}, {"--kv-dtype", "f8"}} {
		a := append([]string{"e2e", "--model", "synthetic:tiny", "--backend", "cpu"}, args...)
		if _, _, err := runCLI(t, a...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

// TestStreamsErrors checks the flags the benchmark refuses.
func TestStreamsErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--streams", "0"}, "--streams and --tokens must be >= 1"},
		{[]string{"--param", "sinks"}, "sinks"},
		{[]string{"--policy", "nope"}, "unknown policy"},
		{[]string{"--kv-dtype", "f8"}, "--kv-dtype"},
	} {
		args := append([]string{"streams", "--model", "synthetic:tiny", "--backend", "cpu"}, c.args...)
		if _, _, err := runCLI(t, args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one saying %q", c.args, err, c.want)
		}
	}
}
