package main

import (
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime/cuda"
)

func TestParseHeads(t *testing.T) {
	got, err := parseHeads("32/8, 32/32")
	if err != nil || len(got) != 2 || got[0] != [2]int{32, 8} || got[1] != [2]int{32, 32} {
		t.Fatalf("parseHeads = %v, %v", got, err)
	}
	for _, bad := range []string{"32", "32/5", "a/b", "0/1", ""} {
		if _, err := parseHeads(bad); err == nil {
			t.Errorf("parseHeads(%q) succeeded", bad)
		}
	}
	if v, err := parseInts("4096,16384"); err != nil || len(v) != 2 || v[1] != 16384 {
		t.Fatalf("parseInts = %v, %v", v, err)
	}
	if _, err := parseInts("4096,-1"); err == nil {
		t.Error("parseInts accepted -1")
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Fatal(m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Fatal(m)
	}
}

func TestKernelsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"kernels", "--policies", "full,bogus"},
		{"kernels", "--heads", "32/7"},
		{"kernels", "--lengths", "x"},
		{"kernels", "--dim", "96"},
		{"kernels", "--heads", "48/3"},
		{"kernels", "--chunk", "-32"},
		{"kernels", "--chunk", "100"},
	} {
		_, _, err := runCLI(t, args...)
		if err == nil {
			t.Errorf("%v: no error", args)
			continue
		}
		// The flag is named before any GPU is looked for.
		if flag := strings.TrimPrefix(args[1], "--"); !strings.Contains(err.Error(), flag) {
			t.Errorf("%v: error %q does not name %s", args, err, flag)
		}
	}
}

// Without a GPU the command fails with the reason; with one, it runs a
// small cell and checks it.
func TestKernelsCommand(t *testing.T) {
	ok, why := cuda.Available()
	out, _, err := runCLI(t, "kernels", "--lengths", "1000", "--heads", "8/2", "--iters", "5", "--policies", "all", "--budget", "256", "--floor")
	if !ok {
		if err == nil || !strings.Contains(err.Error(), "no usable GPU") {
			t.Fatalf("without a GPU (%s): err = %v", why, err)
		}
		t.Logf("expected error: %v", err)
		return
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Log("\n" + out)
	// A row and a floor row per policy, every check passed.
	if n := strings.Count(out, "kvbench "); n != 2*len(kernelPolicies) {
		t.Fatalf("%d rows, want %d:\n%s", n, 2*len(kernelPolicies), out)
	}
	if strings.Contains(out, "FAIL") {
		t.Fatalf("a check failed:\n%s", out)
	}
}
