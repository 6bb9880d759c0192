package main

import (
	"regexp"
	"strings"
	"testing"
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
