package policies_test

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	_ "github.com/kvbench/kvbench/runtime/cuda" // registers the cuda backend
)

// needGPU returns the CUDA backend's spec, or skips the test where it
// cannot run.
func needGPU(t *testing.T) runtime.BackendSpec {
	t.Helper()
	spec, err := runtime.LookupBackend("cuda")
	if err != nil {
		t.Skip(err)
	}
	if ok, why := spec.Available(); !ok {
		t.Skipf("no GPU here: %s", why)
	}
	return spec
}

// gpuBackend returns a fresh CUDA backend, or skips the test where there is
// none.
func gpuBackend(t *testing.T) runtime.Backend {
	t.Helper()
	be, err := needGPU(t).New(0)
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

// streamOn runs an announced prompt of prompt tokens and steps decode
// tokens of model m on be under c's policy and protocol, with a runner of
// maxRows rows; it returns what prefillResult holds and the prompt's
// duration.
func streamOn(t *testing.T, be runtime.Backend, m *runtime.Model, c prefillCase, pre policies.Prefill, maxRows, prompt, steps int) (prefillResult, time.Duration) {
	t.Helper()
	r, err := runtime.NewRunner(m, be, maxRows)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policies.New(c.policy, c.params)
	if err != nil {
		t.Fatal(err)
	}
	p.SetPrefill(pre)
	if err := p.Start(r); err != nil {
		t.Fatal(err)
	}
	cfg := m.Config
	toks := streamTokens(prompt+steps, 41)
	logits := make([]float32, cfg.Vocab)
	var res prefillResult
	p.Prompt(prompt)
	t0 := time.Now()
	if err := r.Forward(toks[:prompt], logits); err != nil {
		t.Fatal(err)
	}
	el := time.Since(t0)
	res.Logits = append(res.Logits, slices.Clone(logits))
	res.KeptAfter = keptSets(r.Cache, cfg.Layers)
	res.stats = *p.Stats()
	for i := prompt; i < len(toks); i++ {
		if err := r.Forward(toks[i:i+1], logits); err != nil {
			t.Fatal(err)
		}
	}
	res.Logits = append(res.Logits, slices.Clone(logits))
	res.KeptEnd = keptSets(r.Cache, cfg.Layers)
	return res, el
}

// overlap is the share of b's kept positions that a keeps too.
func overlap(a, b [][][]int32) float64 {
	same, all := 0, 0
	for l := range b {
		for g := range b[l] {
			for _, p := range b[l][g] {
				all++
				if _, ok := slices.BinarySearch(a[l][g], p); ok {
					same++
				}
			}
		}
	}
	return float64(same) / float64(max(all, 1))
}

// logitDiff is the largest difference of two runs' logits relative to the
// largest logit of want.
func logitDiff(got, want prefillResult) float64 {
	worst := 0.0
	for i := range want.Logits {
		scale := 0.0
		for _, v := range want.Logits[i] {
			scale = max(scale, math.Abs(float64(v)))
		}
		for j, v := range want.Logits[i] {
			worst = max(worst, math.Abs(float64(got.Logits[i][j])-float64(v))/scale)
		}
	}
	return worst
}

// TestPrefillDenseGPU: the dense protocol through the same policy code on
// the GPU, at both compute precisions, on a model of head dim 64 (whose
// prompt chunks without policy options may run on the tensor-core prefill
// kernel): a prompt of several chunks keeps what a one-shot prefill keeps
// on the GPU and what the CPU keeps, and the peak memory is the same.
// With float32 compute the kept sets must match exactly; with bf16 the
// position-based policies must, and the score-based ones may differ in
// near ties (their overlap is reported and must stay above 90 %).
func TestPrefillDenseGPU(t *testing.T) {
	const maxRows, prompt, steps = 64, 300, 6
	needGPU(t)
	m, err := runtime.Synthetic("small")
	if err != nil {
		t.Fatal(err)
	}
	cases := []prefillCase{
		{"h2o", "h2o", policies.Params{"heavy": 40, "recent": 24}},
		{"tova", "tova", policies.Params{"cache": 64}},
		{"window", "window", policies.Params{"window": 64}},
		{"streamingllm", "streamingllm", policies.Params{"sinks": 4, "recent": 60}},
		{"random", "random", policies.Params{"budget": 64, "seed": 3}},
		{"snapkv", "snapkv", policies.Params{"capacity": 64, "window": 16}},
	}
	cpuRes := map[string]prefillResult{}
	for _, c := range cases {
		cpuRes[c.name], _ = streamOn(t, cpu.New(0), m, c, policies.PrefillDense, maxRows, prompt, steps)
	}
	for _, prec := range []string{"f32", "bf16"} {
		t.Run(prec, func(t *testing.T) {
			t.Setenv("KVBENCH_PRECISION", prec)
			be := gpuBackend(t)
			logTol := 1e-3
			if prec == "bf16" {
				logTol = 0.1
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					dense, _ := streamOn(t, be, m, c, policies.PrefillDense, maxRows, prompt, steps)
					one, _ := streamOn(t, be, m, c, policies.PrefillDense, 512, prompt, steps)
					ref := cpuRes[c.name]
					exact := prec == "f32" || c.policy == "window" || c.policy == "streamingllm" || c.policy == "random"
					for _, cmp := range []struct {
						what string
						want prefillResult
					}{{"one-shot on the GPU", one}, {"dense on the CPU", ref}} {
						oa, oe := overlap(dense.KeptAfter, cmp.want.KeptAfter), overlap(dense.KeptEnd, cmp.want.KeptEnd)
						d := logitDiff(dense, cmp.want)
						t.Logf("against %s: kept overlap %.4f after the prompt, %.4f at the end; logits differ by %.2g", cmp.what, oa, oe, d)
						if exact && (oa != 1 || oe != 1) {
							t.Errorf("against %s: kept sets differ (overlap %.4f, %.4f)", cmp.what, oa, oe)
						}
						if oa < 0.9 || oe < 0.9 {
							t.Errorf("against %s: kept overlap %.4f, %.4f below 90 %%", cmp.what, oa, oe)
						}
						if d > logTol {
							t.Errorf("against %s: logits differ by %.3g relative, more than %g", cmp.what, d, logTol)
						}
					}
					if dense.stats.MaxResidentBytes != ref.stats.MaxResidentBytes {
						t.Errorf("peak resident %d bytes on the GPU, %d on the CPU", dense.stats.MaxResidentBytes, ref.stats.MaxResidentBytes)
					}
				})
			}
		})
	}
}

// TestPrefillProtocolGPUTime logs what each protocol's prompt costs on the
// GPU for a long prompt (the dense protocol attends the whole prompt: its
// attention grows with the square of the length), and checks that both
// protocols end at the same budget.
func TestPrefillProtocolGPUTime(t *testing.T) {
	if testing.Short() {
		t.Skip("timing skipped in -short mode")
	}
	be := gpuBackend(t)
	m, err := runtime.Synthetic("small")
	if err != nil {
		t.Fatal(err)
	}
	const maxRows, prompt = 256, 8192
	for _, c := range []prefillCase{
		{"full", "full", nil},
		{"h2o", "h2o", policies.Params{"heavy": 512, "recent": 512}},
		{"tova", "tova", policies.Params{"cache": 1024}},
		{"streamingllm", "streamingllm", policies.Params{"sinks": 4, "recent": 1020}},
	} {
		var line string
		var kept []int
		for _, pre := range []policies.Prefill{policies.PrefillDense, policies.PrefillChunked} {
			streamOn(t, be, m, c, pre, maxRows, 512, 0) // warm-up: kernels compiled, memory pooled
			res, el := streamOn(t, be, m, c, pre, maxRows, prompt, 2)
			kept = append(kept, len(res.KeptEnd[0][0]))
			line += fmt.Sprintf("  %s %.3f s (peak %.1f MiB)", pre, el.Seconds(), float64(res.stats.MaxResidentBytes)/(1<<20))
		}
		t.Logf("%s, prompt %d in chunks of %d:%s", c.name, prompt, maxRows, line)
		if kept[0] != kept[1] {
			t.Errorf("%s: dense ends holding %d tokens, chunked %d", c.name, kept[0], kept[1])
		}
	}
}
