package cuda_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestFakeDecodeStepOrder: in a one-row decode step each layer's RoPE
// (left pending by ropeWith) is launched before the layer's attention, any
// store kernel between them; RoPE takes the stores (be_rope_kv) under full
// attention and under the policies that evict a token a step (window,
// streamingllm, h2o: the move of the new token into the hole is forwarded
// to a store from its row, and the store into the slot it leaves dropped),
// so no store kernel runs.
func TestFakeDecodeStepOrder(t *testing.T) {
	c := runtime.Config{Arch: "llama", Dim: 512, Hidden: 1024, Layers: 3, Heads: 8, KVHeads: 2, HeadDim: 64, Vocab: 1000,
		MaxSeq: 4096, RopeTheta: 1e4, NormEps: 1e-5}
	m := runtime.ZeroModel(c)
	for _, pc := range []struct {
		name   string
		params policies.Params
	}{{"full", nil}, {"window", policies.Params{"budget": 64}}, {"streamingllm", policies.Params{"sinks": 4, "budget": 64}},
		{"h2o", policies.Params{"budget": 64}}} {
		t.Run(pc.name, func(t *testing.T) {
			be := fakeBackend(t)
			r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: 64, KVType: runtime.BF16})
			if err != nil {
				t.Fatal(err)
			}
			p, err := policies.New(pc.name, pc.params)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Start(r); err != nil {
				t.Fatal(err)
			}
			ids := make([]int, 100)
			for i := range ids {
				ids[i] = 3 + i%50
			}
			p.Prompt(len(ids))
			logits := make([]float32, c.Vocab)
			if err := r.Forward(ids, logits); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				stop := cuda.FakeTrace()
				if err := r.Forward([]int{5 + i}, logits); err != nil {
					t.Fatal(err)
				}
				trace := stop()
				rope, stores, attn := 0, 0, 0
				fused := false
				for j, k := range trace {
					switch {
					case k == "be_rope" || k == "be_rope_kv":
						if rope != attn {
							t.Fatalf("step %d: %s at %d before the last layer's attention ran: %v", i, k, j, trace)
						}
						rope++
						fused = k == "be_rope_kv"
					case k == "be_kv_box" || k == "be_kv_ops":
						if rope != attn+1 {
							t.Fatalf("step %d: %s at %d outside a layer's RoPE-attention span: %v", i, k, j, trace)
						}
						stores++
					case strings.HasPrefix(k, "attn_rt_d"):
						if rope != attn+1 {
							t.Fatalf("step %d: attention at %d without its layer's RoPE before it: %v", i, j, trace)
						}
						attn++
					}
				}
				if rope != c.Layers || attn != c.Layers {
					t.Fatalf("step %d: %d RoPE launches, %d attention launches, want %d each: %v", i, rope, attn, c.Layers, trace)
				}
				if !fused || stores != 0 {
					t.Errorf("step %d: RoPE fused %v, %d store launches; want fused, none: %v", i, fused, stores, trace)
				}
			}
		})
	}
}

// TestBackendFusedStep decodes with the KV stores in the RoPE kernel and
// without (KVBENCH_ROPE_KV=off), at both computes and with f32 and bf16 KV
// pages: the same values are stored, so the logits are identical.
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
	for _, prec := range []string{"bf16", "f32"} {
		for _, kt := range []runtime.DType{runtime.F32, runtime.BF16} {
			run := func(t *testing.T, env string) []float32 {
				t.Setenv("KVBENCH_ROPE_KV", env)
				r, err := runtime.NewRunnerWith(m, newGPUPrec(t, prec), runtime.RunnerOptions{MaxRows: 256, KVType: kt})
				if err != nil {
					t.Fatal(err)
				}
				logits := make([]float32, vocab)
				if err := r.Forward(prompt, logits); err != nil {
					t.Fatal(err)
				}
				var all []float32
				for range steps {
					if err := r.Forward([]int{argmaxF(logits)}, logits); err != nil {
						t.Fatal(err)
					}
					all = append(all, logits...)
				}
				return all
			}
			t.Run(fmt.Sprintf("%s/%v", prec, kt), func(t *testing.T) {
				if on, off := run(t, ""), run(t, "off"); !slices.Equal(on, off) {
					t.Errorf("logits with the stores in RoPE differ from KVBENCH_ROPE_KV=off's by %.3g (relative)", relDiff(on, off))
				}
			})
		}
	}
}
