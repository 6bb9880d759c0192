package cuda_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestPageArithGPU: decoding with the pages of lists one stride apart
// found by arithmetic (the default) gives the logits of
// KVBENCH_ATTN_ARITH=off, where every page pointer is loaded, bit for bit
// (only where the addresses come from changes), on the tensor cores and
// off them, for groups of 4 and MHA rows, heads of 64 and 128, after a
// prompt of one chunk (its pages one stride) and of many; and the default
// run did use the arithmetic.
func TestPageArithGPU(t *testing.T) {
	if ok, why := cuda.Available(); !ok {
		t.Skip("no CUDA device: " + why)
	}
	for _, sh := range []struct{ heads, kv, hd int }{{8, 2, 64}, {16, 4, 128}, {4, 4, 64}} {
		c := runtime.Config{Arch: "llama", Dim: sh.heads * sh.hd, Hidden: 512, Layers: 2, Heads: sh.heads, KVHeads: sh.kv,
			HeadDim: sh.hd, Vocab: 500, MaxSeq: 8192, RopeTheta: 1e4, NormEps: 1e-5}
		m := runtime.NewRandomModel(c, 5)
		for _, tc := range []string{"on", "off"} {
			for _, n := range []int{200, 3000} {
				t.Run(fmt.Sprintf("%d-%d-d%d/tc-%s/%d", sh.heads, sh.kv, sh.hd, tc, n), func(t *testing.T) {
					t.Setenv("KVBENCH_ATTN_TC", tc)
					run := func(arith string) ([]float32, int) {
						t.Setenv("KVBENCH_ATTN_ARITH", arith)
						return decodeAfterPrompt(t, m, n, 12, func(p cuda.Plan) int { return p.Arith })
					}
					got, used := run("")
					want, off := run("off")
					if off != 0 || (n == 200 && used == 0) {
						t.Fatalf("KV heads found by arithmetic: %d by default, %d with KVBENCH_ATTN_ARITH=off", used, off)
					}
					if !slices.Equal(got, want) {
						t.Errorf("logits with the pages found by arithmetic differ from KVBENCH_ATTN_ARITH=off's by %.3g (relative)", relDiff(got, want))
					}
				})
			}
		}
	}
}

// decodeAfterPrompt runs m on a fresh bf16 GPU backend, under the
// environment as set: a prompt of n tokens in chunks of 512, then steps
// greedy decode steps. It returns the steps' logits and the sum of count
// over their attention calls' plans (the last layer's of each step).
func decodeAfterPrompt(t *testing.T, m *runtime.Model, n, steps int, count func(cuda.Plan) int) ([]float32, int) {
	t.Helper()
	be := newGPUPrec(t, "bf16")
	r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: 512, KVType: runtime.BF16})
	if err != nil {
		t.Fatal(err)
	}
	vocab := m.Config.Vocab
	logits := make([]float32, vocab)
	if err := r.Forward(spreadTokens(n, vocab), logits); err != nil {
		t.Fatal(err)
	}
	var all []float32
	sum := 0
	for range steps {
		if err := r.Forward([]int{runtime.Argmax(logits)}, logits); err != nil {
			t.Fatal(err)
		}
		all = append(all, logits...)
		sum += count(be.AttnPlan())
	}
	return all, sum
}
