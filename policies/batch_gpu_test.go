package policies_test

import (
	"fmt"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// gpuBackendAt returns a fresh CUDA backend at a compute precision, or
// skips the test where there is no GPU.
func gpuBackendAt(t *testing.T, precision string) runtime.Backend {
	t.Helper()
	be, err := needGPU(t).Open(0, precision)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, ok := be.(runtime.Closer); ok {
			c.Close()
		}
	})
	return be
}

// TestBatchMatchesAloneGPU is TestBatchMatchesAlone on the CUDA backend:
// six streams of different prompt lengths, decode lengths and joining
// times stepped as one batch (fewer than 16 rows: the batch's matrix
// products run be_matmul and a stream alone be_gemv, which form the same
// sums for rows this short, not cuBLAS) under every kind of policy, at both
// compute precisions, each stream checked against
// itself alone on the GPU: logits and log-probabilities within 1e-5
// relative, the positions its cache holds after every step and its policy's
// accounting identical. Views of the batch's rows (runtime.Viewer) feed the
// device attention, KV append and the policies' device scoring.
func TestBatchMatchesAloneGPU(t *testing.T) {
	for _, prec := range []string{"f32", "bf16"} {
		be := gpuBackendAt(t, prec)
		for _, name := range []string{"tiny", "tiny-qwen"} {
			m, err := runtime.Synthetic(name)
			if err != nil {
				t.Fatal(err)
			}
			sts := batchStreams(6, m.Config.Vocab, 3)
			for _, pc := range batchPolicies {
				t.Run(fmt.Sprintf("%s/%s/%s", prec, name, pc.name), func(t *testing.T) {
					got := batchedTraces(t, m, be, pc.name, pc.params, sts)
					for i, st := range sts {
						want := unbatchedTrace(t, m, be, pc.name, pc.params, st)
						compareTraces(t, fmt.Sprintf("stream %d", i), got[i], want, 1e-5)
					}
				})
			}
		}
	}
}

// TestBatchWideGPU steps twenty streams as one batch on the CUDA backend,
// enough rows for the matrix products to go to cuBLAS (16 rows or more)
// while a stream alone runs the one-row kernel: the sums are ordered
// differently, so logits agree within 1e-4 of the largest logit, and the
// policies whose evictions follow positions only (full, window,
// streamingllm) hold exactly the same tokens after every step.
func TestBatchWideGPU(t *testing.T) {
	for _, prec := range []string{"f32", "bf16"} {
		be := gpuBackendAt(t, prec)
		m, err := runtime.Synthetic("small")
		if err != nil {
			t.Fatal(err)
		}
		sts := batchStreams(20, m.Config.Vocab, 5)
		for _, pc := range batchPolicies[:3] {
			t.Run(prec+"/"+pc.name, func(t *testing.T) {
				got := batchedTraces(t, m, be, pc.name, pc.params, sts)
				for i, st := range sts {
					want := unbatchedTrace(t, m, be, pc.name, pc.params, st)
					compareTraces(t, fmt.Sprintf("stream %d", i), got[i], want, 1e-4)
				}
			})
		}
	}
}

// TestBatchMixedGPU is TestBatchMixed on the CUDA backend at both compute
// precisions: one batch grid of plain, re-positioned, H2O/TOVA (their sums
// batched), Quest (its queued choices and copied selections) and SnapKV
// calls, each stream against itself alone.
func TestBatchMixedGPU(t *testing.T) {
	for _, prec := range []string{"f32", "bf16"} {
		t.Run(prec, func(t *testing.T) { compareMixed(t, gpuBackendAt(t, prec)) })
	}
}
