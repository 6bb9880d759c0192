package cuda_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/runtime"
)

// TestFakeNormsInProducts: a one-row decode step's RMSNorms go into the
// products that read them (be_mv_r8_rms for the query, key and value
// projections and the output head, be_mv_swiglu_rms for the MLP), so the
// step launches no be_rmsnorm; with KVBENCH_MV_NORM=off two a layer and
// the head's. A prompt's chunk keeps its norms (be_rmsnorm_narrow) but for
// the head of its last row.
func TestFakeNormsInProducts(t *testing.T) {
	c := runtime.Config{Arch: "llama", Dim: 512, Hidden: 1024, Layers: 4, Heads: 8, KVHeads: 2, HeadDim: 64, Vocab: 1000,
		MaxSeq: 4096, RopeTheta: 1e4, NormEps: 1e-5}
	L := int64(c.Layers)
	for _, env := range []string{"", "off"} {
		t.Run("KVBENCH_MV_NORM="+env, func(t *testing.T) {
			t.Setenv("KVBENCH_MV_NORM", env)
			be := fakeBackend(t)
			r, err := runtime.NewRunnerWith(runtime.ZeroModel(c), be, runtime.RunnerOptions{MaxRows: 64, KVType: runtime.BF16})
			if err != nil {
				t.Fatal(err)
			}
			ids := make([]int, 64)
			for i := range ids {
				ids[i] = 3 + i
			}
			logits := make([]float32, c.Vocab)
			k := kernelsDuring(func() {
				if err := r.Forward(ids, logits); err != nil {
					t.Fatal(err)
				}
			})
			if want := map[string]int64{"": 1}[env]; k["be_mv_r8_rms"] != want || k["be_mv_swiglu_rms"] != 0 {
				t.Errorf("a 64-row prompt: %d be_mv_r8_rms, %d be_mv_swiglu_rms launches, want %d (its last row's head) and none",
					k["be_mv_r8_rms"], k["be_mv_swiglu_rms"], want)
			}
			k = kernelsDuring(func() {
				if err := r.Forward([]int{5}, logits); err != nil {
					t.Fatal(err)
				}
			})
			got := [4]int64{k["be_mv_r8_rms"], k["be_mv_swiglu_rms"], k["be_mv_swiglu"], k["be_rmsnorm"]}
			want := [4]int64{L + 1, L, 0, 0}
			if env == "off" {
				want = [4]int64{0, 0, L, 2*L + 1}
			}
			if got != want {
				t.Errorf("a decode step: be_mv_r8_rms, be_mv_swiglu_rms, be_mv_swiglu, be_rmsnorm launches %v, want %v", got, want)
			}
		})
	}
}

// TestBackendFusedStep decodes with a one-row step's fusions and without
// each, at both computes and with f32 and bf16 KV pages: the KV stores in
// the RoPE kernel (KVBENCH_ROPE_KV: the same values stored, identical
// logits) and the norms in the products that read them (KVBENCH_MV_NORM:
// W (g x) / rms instead of W (g (x / rms)), so the logits agree to float32
// rounding); the greedy tokens are the same either way.
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
	}{{"KVBENCH_ROPE_KV", 0}, {"KVBENCH_MV_NORM", 1e-5}} {
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
