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
