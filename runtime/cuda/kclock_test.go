package cuda_test

import (
	"strings"
	"testing"
	"time"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestFakeKernelClock: with KVBENCH_KERNEL_TIMES=1 every kernel launch of a
// prompt chunk and of decode steps is clocked under its name, every cuBLAS
// product under its weights' shape, and a replayed graph as one "graph"
// (nothing is clocked inside a capture): the launches counted match the
// fake device's own count. Without the variable nothing is clocked; a bad
// value is refused.
func TestFakeKernelClock(t *testing.T) {
	c := runtime.Config{Arch: "llama", Dim: 512, Hidden: 1024, Layers: 3, Heads: 8, KVHeads: 2, HeadDim: 64, Vocab: 1000,
		MaxSeq: 4096, RopeTheta: 1e4, NormEps: 1e-5}
	for _, graphs := range []string{"off", "on"} {
		t.Run("graphs "+graphs, func(t *testing.T) {
			t.Setenv("KVBENCH_KERNEL_TIMES", "1")
			t.Setenv("KVBENCH_GRAPHS", graphs)
			be := fakeBackend(t)
			if _, err := be.KernelTimes(true); err != nil {
				t.Fatal(err)
			}
			k0 := cuda.FakeKernels()
			r, logits := fakePrompted(t, be, c)
			for range 4 {
				if err := r.Forward([]int{5}, logits); err != nil {
					t.Fatal(err)
				}
			}
			kt, err := be.KernelTimes(true)
			if err != nil {
				t.Fatal(err)
			}
			k1 := cuda.FakeKernels()
			got := map[string]int64{}
			for _, k := range kt {
				name := k.Name
				if strings.HasPrefix(name, "cublas gemm ") {
					name = "cublas"
				}
				got[name] += int64(k.Launches)
			}
			for name, n := range k1 {
				if name == "capture" {
					continue
				}
				launched := n - k0[name]
				// Inside a capture nothing is clocked: with graphs, a
				// kernel recorded into one is launched but not clocked.
				if g, ok := got[name]; graphs == "off" && g != launched || graphs == "on" && (!ok && launched > 0 && name == "graph" || g > launched) {
					t.Errorf("%s: %d clocked, %d launched", name, g, launched)
				}
			}
			if graphs == "on" && got["graph"] == 0 {
				t.Errorf("no graph replay clocked")
			}
			if again, _ := be.KernelTimes(false); len(again) != 0 {
				t.Errorf("after a reset, %d names clocked", len(again))
			}
		})
	}
	t.Run("off", func(t *testing.T) {
		t.Setenv("KVBENCH_KERNEL_TIMES", "")
		be := fakeBackend(t)
		r, logits := fakePrompted(t, be, c)
		if err := r.Forward([]int{5}, logits); err != nil {
			t.Fatal(err)
		}
		if kt, err := be.KernelTimes(false); kt != nil || err != nil {
			t.Errorf("clock not started: %v, %v", kt, err)
		}
	})
	t.Run("bad", func(t *testing.T) {
		t.Setenv("KVBENCH_KERNEL_TIMES", "yes")
		if _, err := cuda.NewFakeBackend("bf16"); err == nil || !strings.Contains(err.Error(), "KVBENCH_KERNEL_TIMES") {
			t.Errorf("got %v, want a refusal naming KVBENCH_KERNEL_TIMES", err)
		}
	})
}

// TestFakeElapsed: on the fake device the time between two marks is the
// host's between their records (no device time set), so that kvbench's
// device-timed rows print the host's share of a step under the fake, as
// its warning says.
func TestFakeElapsed(t *testing.T) {
	be := fakeBackend(t)
	i := be.Mark()
	time.Sleep(20 * time.Millisecond)
	j := be.Mark()
	if d := be.Elapsed(i, j); d < 20*time.Millisecond || d > 10*time.Second {
		t.Errorf("%v between marks 20 ms apart on the host, want 20 ms or a little more", d)
	}
	if d := be.Elapsed(j, j); d != 0 {
		t.Errorf("%v from a mark to itself", d)
	}
}
