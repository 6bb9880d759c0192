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
// so no store kernel runs; and it takes the layer's q/k/v products too
// (be_mv_qkv_rope: no be_mv launch of them) unless KVBENCH_MV_ROPE=off.
func TestFakeDecodeStepOrder(t *testing.T) {
	c := runtime.Config{Arch: "llama", Dim: 512, Hidden: 1024, Layers: 3, Heads: 8, KVHeads: 2, HeadDim: 64, Vocab: 1000,
		MaxSeq: 4096, RopeTheta: 1e4, NormEps: 1e-5}
	m := runtime.ZeroModel(c)
	for _, pc := range []struct {
		name   string
		params policies.Params
	}{{"full", nil}, {"window", policies.Params{"budget": 64}}, {"streamingllm", policies.Params{"sinks": 4, "budget": 64}},
		{"h2o", policies.Params{"budget": 64}}} {
		for _, mvRope := range []string{"", "off"} {
			t.Run(pc.name+"/"+mvRope, func(t *testing.T) {
				t.Setenv("KVBENCH_MV_ROPE", mvRope)
				r, logits := fakePolicyPrompted(t, fakeBackend(t), m, pc.name, pc.params)
				wantRope, wantMV := "be_mv_qkv_rope", 2*c.Layers+1 // the output and down products, the head
				if mvRope == "off" {
					wantRope, wantMV = "be_rope_kv", 3*c.Layers+1
				}
				for i := range 3 {
					stop := cuda.FakeTrace()
					if err := r.Forward([]int{5 + i}, logits); err != nil {
						t.Fatal(err)
					}
					trace := stop()
					rope, stores, attn, mv := 0, 0, 0, 0
					for j, k := range trace {
						switch {
						case k == "be_rope" || k == "be_rope_kv" || k == "be_mv_qkv_rope":
							if rope != attn {
								t.Fatalf("step %d: %s at %d before the last layer's attention ran: %v", i, k, j, trace)
							}
							if k != wantRope {
								t.Fatalf("step %d: %s at %d, want %s: %v", i, k, j, wantRope, trace)
							}
							rope++
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
						case strings.HasPrefix(k, "be_mv_r"):
							mv++
						}
					}
					if rope != c.Layers || attn != c.Layers {
						t.Fatalf("step %d: %d RoPE launches, %d attention launches, want %d each: %v", i, rope, attn, c.Layers, trace)
					}
					if stores != 0 || mv != wantMV {
						t.Errorf("step %d: %d store launches, %d be_mv launches; want none, %d: %v", i, stores, mv, wantMV, trace)
					}
				}
			})
		}
	}
}

// TestBackendFusedStep decodes with the q/k/v products, RoPE and the KV
// stores in one kernel (be_mv_qkv_rope, the default), with the products
// apart (KVBENCH_MV_ROPE=off: be_rope_kv takes the stores) and with every
// step apart (KVBENCH_ROPE_KV=off), at both computes, with f32 and bf16 KV
// pages, on a model of half-split RoPE pairs (kvbench-ref-13m), one of
// interleaved pairs and heads of 8 (stories260K) and a random one with
// Qwen2's q/k/v biases (synthetic small's shape). The last two compute and
// store the same values: identical logits. The fused kernel computes the
// same values too, but for a half-split model its queries and keys are in
// interleaved order (runtime.QKInterleaver), so attention's dot products
// sum the same terms in another order: logits within float32 rounding and
// the same greedy tokens (bf16 pages: within 1e-3); for the interleaved
// model, identical.
func TestBackendFusedStep(t *testing.T) {
	if ok, why := cuda.Available(); !ok {
		t.Skip("no CUDA device: " + why)
	}
	models := map[string]*runtime.Model{}
	for _, name := range []string{"kvbench-ref-13m", "stories260K/stories260K.bin"} {
		m, err := runtime.Load(fixtures.Path(t, "models/"+name))
		if err != nil {
			t.Fatal(err)
		}
		models[name] = m
	}
	// Qwen2's q/k/v biases, added in the products' epilogue.
	s, err := runtime.Synthetic("small")
	if err != nil {
		t.Fatal(err)
	}
	c := s.Config
	c.QKVBias = true
	models["small+qkvbias"] = runtime.NewRandomModel(c, 5)
	for name, m := range models {
		vocab := m.Config.Vocab
		prompt := spreadTokens(200, vocab)
		const steps = 40
		for _, prec := range []string{"bf16", "f32"} {
			for _, kt := range []runtime.DType{runtime.F32, runtime.BF16} {
				run := func(t *testing.T, mvRope, ropeKV string) []float32 {
					t.Setenv("KVBENCH_MV_ROPE", mvRope)
					t.Setenv("KVBENCH_ROPE_KV", ropeKV)
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
						if err := r.Forward([]int{runtime.Argmax(logits)}, logits); err != nil {
							t.Fatal(err)
						}
						all = append(all, logits...)
					}
					return all
				}
				t.Run(fmt.Sprintf("%s/%s/%v", name, prec, kt), func(t *testing.T) {
					fused, ropeKV, apart := run(t, "", ""), run(t, "off", ""), run(t, "off", "off")
					// bf16 compute rounds the activations: a reordered sum's
					// last bit can move one of them by a bf16 step.
					reordered, tol, greedy := m.Config.Rope == runtime.RopeHalf, 1e-4, steps
					if kt == runtime.BF16 {
						// Over bf16 pages attention runs on the tensor cores
						// (the query split into two bf16 halves, sums in the
						// MMA's own order): the channels' order moves more
						// (measured on the H200: 1.8e-4 after 40 steps).
						tol = 1e-3
					}
					if prec == "bf16" {
						tol, greedy = 3e-2, 10
					}
					if d := relDiff(fused, ropeKV); !reordered && d != 0 || d > tol {
						t.Errorf("logits with the products, RoPE and the stores in one kernel differ from KVBENCH_MV_ROPE=off's by %.3g (relative)", d)
					}
					for i := 0; i < greedy*vocab; i += vocab {
						if a, b := runtime.Argmax(fused[i:i+vocab]), runtime.Argmax(ropeKV[i:i+vocab]); a != b {
							t.Fatalf("step %d: greedy token %d with the fused kernel, %d with KVBENCH_MV_ROPE=off", i/vocab, a, b)
						}
					}
					if !slices.Equal(ropeKV, apart) {
						t.Errorf("logits with the stores in RoPE differ from KVBENCH_ROPE_KV=off's by %.3g (relative)", relDiff(ropeKV, apart))
					}
				})
			}
		}
	}
}

// fakePolicyPrompted is a runner of m on be (bf16 KV pages, chunks of 64
// rows) under a fresh policy name with params, after a 100-token prompt,
// and its logits.
func fakePolicyPrompted(t *testing.T, be *cuda.Backend, m *runtime.Model, name string, params policies.Params) (*runtime.Runner, []float32) {
	t.Helper()
	r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: 64, KVType: runtime.BF16})
	if err != nil {
		t.Fatal(err)
	}
	p, err := policies.New(name, params)
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
	logits := make([]float32, m.Config.Vocab)
	if err := r.Forward(ids, logits); err != nil {
		t.Fatal(err)
	}
	return r, logits
}

// TestFakeQKVRopeDeclines: the q/k/v products stay their own launch, before
// the layer's RoPE, where something runs between them (Qwen3's norms of
// each head) or the head dimension is not a multiple of 8; the interleaved
// pairs of llama2.c take the fused kernel too, and so do Qwen2's biases
// (added in its epilogue: no be_add_bias).
func TestFakeQKVRopeDeclines(t *testing.T) {
	base := runtime.Config{Arch: "llama", Dim: 256, Hidden: 512, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 500,
		MaxSeq: 1024, RopeTheta: 1e4, NormEps: 1e-5}
	for _, tc := range []struct {
		name  string
		edit  func(c *runtime.Config)
		fused bool
	}{
		{"plain", func(c *runtime.Config) {}, true},
		{"interleaved", func(c *runtime.Config) { c.Rope = runtime.RopeInterleaved }, true},
		{"bias", func(c *runtime.Config) { c.QKVBias = true }, true},
		{"qknorm", func(c *runtime.Config) { c.QKNorm = true }, false},
		{"hd12", func(c *runtime.Config) { c.HeadDim, c.Heads, c.KVHeads = 12, 8, 4 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			m := runtime.ZeroModel(c)
			r, err := runtime.NewRunnerWith(m, fakeBackend(t), runtime.RunnerOptions{MaxRows: 64, KVType: runtime.BF16})
			if err != nil {
				t.Fatal(err)
			}
			logits := make([]float32, c.Vocab)
			if err := r.Forward([]int{3, 4, 5, 6, 7}, logits); err != nil {
				t.Fatal(err)
			}
			stop := cuda.FakeTrace()
			if err := r.Forward([]int{8}, logits); err != nil {
				t.Fatal(err)
			}
			trace := stop()
			fused, rope, mvBefore := 0, 0, 0
			lastMV := -1
			for j, k := range trace {
				switch {
				case k == "be_mv_qkv_rope":
					fused++
				case k == "be_rope" || k == "be_rope_kv":
					rope++
					if lastMV >= 0 {
						mvBefore++
					}
					lastMV = -1
				case strings.HasPrefix(k, "be_mv_r"):
					lastMV = j
				case strings.HasPrefix(k, "attn_"):
					lastMV = -1
				}
			}
			if slices.Contains(trace, "be_add_bias") {
				t.Errorf("a decode step added biases apart: %v", trace)
			}
			if tc.fused && (fused != c.Layers || rope != 0) {
				t.Errorf("%d be_mv_qkv_rope and %d RoPE launches, want %d and none: %v", fused, rope, c.Layers, trace)
			}
			if !tc.fused && (fused != 0 || rope != c.Layers || mvBefore != c.Layers) {
				t.Errorf("%d be_mv_qkv_rope, %d RoPE launches (%d after a product), want none and %d after one each: %v", fused, rope, mvBefore, c.Layers, trace)
			}
		})
	}
}
