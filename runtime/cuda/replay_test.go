package cuda_test

import (
	"math"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// replayConfig is a small model whose batch steps of 20 streams take the
// cuBLAS path (20 rows >= gemmMinRows).
var replayConfig = runtime.Config{Arch: "llama", Dim: 256, Hidden: 512, Layers: 3, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 300, MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}

// kernelsDuring returns the launches by kernel name that run made on the
// fake device.
func kernelsDuring(run func()) map[string]int64 {
	k0 := cuda.FakeKernels()
	run()
	k1 := cuda.FakeKernels()
	for k := range k1 {
		k1[k] -= k0[k]
	}
	return k1
}

// TestFakeBatchReplays checks, on the fake device (in CI), that a batch's
// decode steps replay each layer's products as two graphs (its first step
// runs them directly, its second records them), that only the output head
// then calls cuBLAS, that KVBENCH_GRAPHS=off runs them directly, and that
// the graphs are recorded again after the scratch the products use moved
// (a longer prompt grows it).
func TestFakeBatchReplays(t *testing.T) {
	const streams, steps = 20, 5
	L := int64(replayConfig.Layers)
	for _, graphs := range []string{"", "on", "off"} { // unset: a batch step replays
		t.Run("graphs "+graphs, func(t *testing.T) {
			t.Setenv("KVBENCH_GRAPHS", graphs)
			be := fakeBackend(t)
			m := runtime.ZeroModel(replayConfig)
			batch := promptedBatch(t, be, m, "window", policies.Params{"budget": 64}, streams, 16, func(i int) int { return 20 + i })
			sids, toks, targets, out := make([]int, streams), make([]int, streams), make([]int, streams), make([]float64, streams)
			for i := range sids {
				sids[i], toks[i], targets[i] = i, 3+i, 4+i
			}
			step := func() {
				if err := batch.LogProbs(sids, toks, targets, out); err != nil {
					t.Fatal(err)
				}
			}
			first := kernelsDuring(func() { step(); step() })
			k := kernelsDuring(func() {
				for range steps {
					step()
				}
			})
			if graphs == "off" {
				if k["graph"] != 0 || first["capture"] != 0 || k["cublas"] != steps*(7*L+1) {
					t.Errorf("graphs off: %d graph launches, %d captures, %d GEMMs in %d steps, want 0, 0 and %d", k["graph"], first["capture"], k["cublas"], steps, steps*(7*L+1))
				}
				return
			}
			if first["capture"] != 2*L || k["capture"] != 0 {
				t.Errorf("%d captures in the first two steps and %d in the next %d, want %d and 0", first["capture"], k["capture"], steps, 2*L)
			}
			if k["graph"] != steps*2*L || k["cublas"] != steps || k["be_swiglu"] != 0 {
				t.Errorf("%d steps: %d graph launches, %d GEMMs, %d SwiGLU launches, want %d, %d (the head's) and 0", steps, k["graph"], k["cublas"], k["be_swiglu"], steps*2*L, steps)
			}
			// A prompt of more rows than the batch's (another runner, 64 a
			// chunk) grows the products' scratch: the next step records
			// every graph again.
			r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: 64, KVType: runtime.BF16})
			if err != nil {
				t.Fatal(err)
			}
			ids := make([]int, 64)
			for i := range ids {
				ids[i] = 3 + i%50
			}
			if err := r.Forward(ids, make([]float32, replayConfig.Vocab)); err != nil {
				t.Fatal(err)
			}
			k = kernelsDuring(step)
			if k["capture"] != 2*L || k["graph"] != 2*L {
				t.Errorf("the step after the scratch grew: %d captures, %d graph launches, want %d each", k["capture"], k["graph"], 2*L)
			}
		})
	}
}

// TestBatchReplayGPU checks on the GPU that a batch's decode steps give the
// same log-probabilities with their products replayed from CUDA graphs as
// run directly (KVBENCH_GRAPHS=off), at bf16 compute (the products round
// their input to bf16 in scratch the graphs read).
func TestBatchReplayGPU(t *testing.T) {
	const streams, steps = 20, 6
	m := runtime.NewRandomModel(replayConfig, 5)
	run := func(graphs string) [][]float64 {
		t.Setenv("KVBENCH_GRAPHS", graphs)
		be := newGPUPrec(t, "bf16")
		batch := promptedBatch(t, be, m, "streamingllm", policies.Params{"budget": 40, "sinks": 4}, streams, 16, func(i int) int { return 30 + 2*i })
		sids, toks, targets := make([]int, streams), make([]int, streams), make([]int, streams)
		var got [][]float64
		for s := range steps {
			for i := range sids {
				sids[i], toks[i], targets[i] = i, 3+(i+s)%50, 4+(i*s)%50
			}
			out := make([]float64, streams)
			if err := batch.LogProbs(sids, toks, targets, out); err != nil {
				t.Fatal(err)
			}
			got = append(got, out)
		}
		return got
	}
	off, on := run("off"), run("on")
	for s := range off {
		for i := range off[s] {
			if d := math.Abs(on[s][i] - off[s][i]); d > 1e-5*math.Max(1, math.Abs(off[s][i])) {
				t.Errorf("step %d stream %d: log-probability %v replayed, %v direct", s, i, on[s][i], off[s][i])
			}
		}
	}
}
