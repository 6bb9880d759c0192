package tasks_test

import (
	"math"
	"testing"

	"github.com/kvbench/kvbench/bench"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/tasks"
)

// unbatched hides a model's Batcher capability: the perplexity task then
// runs its streams one goroutine each, every stream alone.
type unbatched struct{ tasks.Model }

// TestPerplexityBatchedMatchesStreams runs four perplexity streams as one
// batch (the engine is a Batcher) and one goroutine each (unbatched), under
// policies that keep, evict by position, evict by score and select, and
// checks that each stream's NLL and the NLL curve agree within 1e-5
// relative (the CPU's one-row and multi-row matrix kernels round
// differently) and that the cache accounting, which follows every
// eviction, is identical.
func TestPerplexityBatchedMatchesStreams(t *testing.T) {
	comparePerplexityBatched(t, "")
}

// TestPerplexityBatchedMatchesStreamsGPU is the same on the CUDA backend
// at f32 precision (skipped without a GPU): the engine's batch on the
// device, log-probabilities computed there, against the streams stepped
// alone on the same device.
func TestPerplexityBatchedMatchesStreamsGPU(t *testing.T) {
	skipWithoutGPU(t)
	comparePerplexityBatched(t, "cuda")
}

// comparePerplexityBatched runs the comparison on a backend ("": cpu).
func comparePerplexityBatched(t *testing.T, backend string) {
	path := writeText(t, sample+sample)
	p := tasks.Params{"text": path, "tokens": 150, "streams": 4, "bucket": 40}
	for _, pc := range []struct {
		name   string
		params policies.Params
	}{
		{"full", nil},
		{"window", policies.Params{"budget": 24}},
		{"streamingllm", policies.Params{"budget": 24, "sinks": 4}},
		{"h2o", policies.Params{"budget": 24}},
		{"tova", policies.Params{"budget": 20}},
		{"quest", policies.Params{"budget": 32, "page": 8}},
	} {
		t.Run(pc.name, func(t *testing.T) {
			eb, ea := newEngine(t, pc.name, pc.params), newEngine(t, pc.name, pc.params)
			if backend != "" {
				eb.Backend, ea.Backend = backend, backend
				eb.Precision, ea.Precision = "f32", "f32"
			}
			batched := run(t, eb, "perplexity", p)
			alone := run(t, unbatched{ea}, "perplexity", p)
			if batched.Detail["batched"] != true || alone.Detail["batched"] != false {
				t.Fatalf("detail.batched %v and %v, want true (engine) and false (unbatched)", batched.Detail["batched"], alone.Detail["batched"])
			}
			sb, sa := batched.Detail["stream_nll"].([]float64), alone.Detail["stream_nll"].([]float64)
			for i := range sa {
				if math.Abs(sb[i]-sa[i]) > 1e-5*sa[i] {
					t.Errorf("stream %d: nll %v batched, %v alone", i, sb[i], sa[i])
				}
			}
			for i, pt := range alone.Curves["nll"] {
				if got := batched.Curves["nll"][i]; got.X != pt.X || math.Abs(got.Y-pt.Y) > 1e-5*pt.Y {
					t.Errorf("nll curve point %d: %v batched, %v alone", i, got, pt)
				}
			}
			latB, kvB := eb.Summary()
			latA, kvA := ea.Summary()
			if kvB != kvA {
				t.Errorf("cache accounting %+v batched, %+v alone", kvB, kvA)
			}
			// On a GPU only a batch's first stream times its attention, on
			// sampled steps.
			wantB := 4 * 150 * 3 // streams x tokens x layers
			if backend == "cuda" {
				wantB = bench.TimedSteps(150) * 3
			}
			if latB.N != wantB || latA.N != 4*150*3 {
				t.Errorf("%d attention timings batched, %d alone, want %d and %d", latB.N, latA.N, wantB, 4*150*3)
			}
		})
	}
}

// skipWithoutGPU skips the test where the CUDA backend cannot run.
func skipWithoutGPU(t *testing.T) {
	t.Helper()
	spec, err := runtime.LookupBackend("cuda")
	if err != nil {
		t.Skip(err)
	}
	if ok, why := spec.Available(); !ok {
		t.Skipf("no GPU here: %s", why)
	}
}
