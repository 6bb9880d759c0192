package cuda_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestFakeDecodeStepOrder: in a one-row decode step each layer's RoPE
// (left pending by ropeWith) is launched before the layer's attention, any
// store kernel between them; the query, key and value products take the
// RoPE and the stores (be_mv_qkv_rope; be_rope_kv, RoPE with the stores,
// under KVBENCH_QKV_ROPE=off) under full attention and under the policies
// that evict a token a step (window, streamingllm, h2o: the move of the new
// token into the hole is forwarded to a store from its row, and the store
// into the slot it leaves dropped), so no store kernel runs.
func TestFakeDecodeStepOrder(t *testing.T) {
	c := runtime.Config{Arch: "llama", Dim: 512, Hidden: 1024, Layers: 3, Heads: 8, KVHeads: 2, HeadDim: 64, Vocab: 1000,
		MaxSeq: 4096, RopeTheta: 1e4, NormEps: 1e-5}
	m := runtime.ZeroModel(c)
	for _, pc := range []struct {
		name   string
		params policies.Params
		qkv    string
	}{{"full", nil, ""}, {"full", nil, "off"}, {"window", policies.Params{"budget": 64}, ""}, {"streamingllm", policies.Params{"sinks": 4, "budget": 64}, ""},
		{"h2o", policies.Params{"budget": 64}, ""}, {"h2o", policies.Params{"budget": 64}, "off"}} {
		t.Run(pc.name+" qkv rope "+pc.qkv, func(t *testing.T) {
			t.Setenv("KVBENCH_QKV_ROPE", pc.qkv)
			fusedName := map[string]string{"": "be_mv_qkv_rope", "off": "be_rope_kv"}[pc.qkv]
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
					case k == "be_rope" || k == "be_rope_kv" || k == "be_mv_qkv_rope":
						if rope != attn {
							t.Fatalf("step %d: %s at %d before the last layer's attention ran: %v", i, k, j, trace)
						}
						rope++
						fused = k == fusedName
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

// TestBackendFusedStep decodes with the query, key and value products,
// RoPE and the KV stores in one kernel, with the stores in the RoPE kernel
// (KVBENCH_QKV_ROPE=off) and with neither (KVBENCH_ROPE_KV=off), at both
// computes and with f32 and bf16 KV pages: the same values are stored, so
// the logits are identical.
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
			run := func(t *testing.T, ropeKV, qkv string) []float32 {
				t.Setenv("KVBENCH_ROPE_KV", ropeKV)
				t.Setenv("KVBENCH_QKV_ROPE", qkv)
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
				all, rope, off := run(t, "", ""), run(t, "", "off"), run(t, "off", "")
				if !slices.Equal(all, off) {
					t.Errorf("logits with the products, RoPE and the stores in one kernel differ from KVBENCH_ROPE_KV=off's by %.3g (relative)", relDiff(all, off))
				}
				if !slices.Equal(rope, off) {
					t.Errorf("logits with the stores in RoPE differ from KVBENCH_ROPE_KV=off's by %.3g (relative)", relDiff(rope, off))
				}
			})
		}
	}
}

// TestBackendQKVRope runs a decode step's query, key and value products,
// RoPE of the queries and keys, and one KV store a key head into f32 pages
// as the forward pass queues them: on the GPU with the three in one kernel
// (be_mv_qkv_rope) and with KVBENCH_QKV_ROPE=off (be_mv_r8, then
// be_rope_kv), which must agree to the bit, and on the CPU, within
// rounding. Both RoPE styles; head dims 8 (a head one block of pairs), 64
// and 128; bf16 and f32 weights.
func TestBackendQKVRope(t *testing.T) {
	c := cpu.New(0)
	defer c.Close()
	const heads, kvHeads, in, pageSize, slot, pos = 4, 2, 256, 16, 5, 1234
	for _, style := range []runtime.RopeStyle{runtime.RopeHalf, runtime.RopeInterleaved} {
		for _, hd := range []int{8, 64, 128} {
			for _, dt := range []runtime.DType{runtime.BF16, runtime.F32} {
				name := fmt.Sprintf("style %v hd %d weights %v", style, hd, dt)
				rng := rand.New(rand.NewPCG(uint64(hd), 9))
				x := randVec(rng, in, 1)
				ws := []*runtime.Tensor{weight(rng, dt, heads*hd, in), weight(rng, dt, kvHeads*hd, in), weight(rng, dt, kvHeads*hd, in)}
				// step returns q, k, v and the key and value pages after the step.
				step := func(be runtime.Backend) [][]float32 {
					var w [3]runtime.Buffer
					for i, wt := range ws {
						var err error
						if w[i], err = be.Upload(wt); err != nil {
							t.Fatal(err)
						}
					}
					xb, q, k, v := be.Alloc(in), be.Alloc(heads*hd), be.Alloc(kvHeads*hd), be.Alloc(kvHeads*hd)
					be.Write(xb, 0, x)
					var kp, vp []runtime.Buffer
					for range kvHeads {
						kp, vp = append(kp, be.Alloc(pageSize*hd)), append(vp, be.Alloc(pageSize*hd))
					}
					if g, ok := be.(*cuda.Backend); ok {
						g.MatMul3(xb, 1, in, runtime.MatOut{Dst: q, W: w[0], Out: heads * hd}, runtime.MatOut{Dst: k, W: w[1], Out: kvHeads * hd},
							runtime.MatOut{Dst: v, W: w[2], Out: kvHeads * hd})
						g.RoPE2(q, k, 1, heads, kvHeads, hd, []int{pos}, 5e5, style)
					} else {
						be.MatMul(q, xb, w[0], 1, in, heads*hd)
						be.MatMul(k, xb, w[1], 1, in, kvHeads*hd)
						be.MatMul(v, xb, w[2], 1, in, kvHeads*hd)
						be.RoPE(q, 1, heads, hd, []int{pos}, 5e5, style)
						be.RoPE(k, 1, kvHeads, hd, []int{pos}, 5e5, style)
					}
					for j := range kvHeads {
						be.StoreKV(kp[j], vp[j], slot, k, v, 0, j, hd, kvHeads*hd)
					}
					out := [][]float32{read(be, q), read(be, k), read(be, v)}
					for j := range kvHeads {
						out = append(out, read(be, kp[j]), read(be, vp[j]))
					}
					return out
				}
				want := step(c)
				t.Setenv("KVBENCH_QKV_ROPE", "")
				fused := step(newGPU(t))
				t.Setenv("KVBENCH_QKV_ROPE", "off")
				apart := step(newGPU(t))
				for i := range want {
					if !slices.Equal(fused[i], apart[i]) {
						t.Errorf("%s: output %d of the fused kernel differs from the separate kernels' by %.3g", name, i, relDiff(fused[i], apart[i]))
					}
					if d := relDiff(fused[i], want[i]); d > 1e-5 {
						t.Errorf("%s: output %d differs from the CPU's by %.3g", name, i, d)
					}
				}
			}
		}
	}
}
