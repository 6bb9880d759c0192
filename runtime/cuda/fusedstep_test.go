package cuda_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/runtime"
)

// TestBackendFusedStep decodes with a one-row step's fusions and without
// each, at both computes and with f32 and bf16 KV pages: the KV stores in
// the RoPE kernel (KVBENCH_ROPE_KV: the same values stored, identical
// logits); the greedy tokens are the same either way.
func TestBackendFusedStep(t *testing.T) {
	m, err := runtime.Load(fixtures.Path(t, "models/kvbench-ref-13m"))
	if err != nil {
		t.Fatal(err)
	}
	vocab := m.Config.Vocab
	prompt := make([]int, 300)
	for i := range prompt {
		prompt[i] = 3 + (i*7919)%(vocab-3)
	}
	const steps = 40
	for _, fusion := range []struct {
		env string
		tol float64
	}{{"KVBENCH_ROPE_KV", 0}} {
		for _, prec := range []string{"bf16", "f32"} {
			for _, kt := range []runtime.DType{runtime.F32, runtime.BF16} {
				run := func(t *testing.T, env string) ([]float32, []int) {
					t.Setenv(fusion.env, env)
					r, err := runtime.NewRunnerWith(m, newGPUPrec(t, prec), runtime.RunnerOptions{MaxRows: 256, KVType: kt})
					if err != nil {
						t.Fatal(err)
					}
					logits := make([]float32, vocab)
					if err := r.Forward(prompt, logits); err != nil {
						t.Fatal(err)
					}
					var all []float32
					var ids []int
					for range steps {
						next := greedy(logits)
						ids = append(ids, next)
						if err := r.Forward([]int{next}, logits); err != nil {
							t.Fatal(err)
						}
						all = append(all, logits...)
					}
					return all, ids
				}
				t.Run(fmt.Sprintf("%s/%s/%v", fusion.env, prec, kt), func(t *testing.T) {
					on, idOn := run(t, "")
					off, idOff := run(t, "off")
					if d := relDiff(on, off); d > fusion.tol || (fusion.tol == 0 && !slices.Equal(on, off)) {
						t.Errorf("logits fused and not (%s=off) differ by %.3g (relative), more than %g", fusion.env, d, fusion.tol)
					}
					if fmt.Sprint(idOn) != fmt.Sprint(idOff) {
						t.Errorf("greedy tokens %v fused, %v with %s=off", idOn, idOff, fusion.env)
					}
				})
			}
		}
	}
}

// greedy is the index of the largest logit.
func greedy(logits []float32) int {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	return best
}
