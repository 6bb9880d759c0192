package cuda_test

import (
	"errors"
	"math"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// NaN and Inf are found on the GPU as on the CPU: decode steps (replayed
// as CUDA graphs), prompt chunks and LogProbs passes, each naming the first
// stage whose output is not finite.
func TestNonFiniteGPU(t *testing.T) {
	for _, prec := range []string{"f32", "bf16"} {
		t.Run(prec, func(t *testing.T) {
			g := newGPUPrec(t, prec)
			want := func(err error, layer, pos int) {
				t.Helper()
				var nf *runtime.NonFiniteError
				if !errors.As(err, &nf) || nf.Layer != layer || nf.Pos != pos {
					t.Errorf("error %v, want a NonFiniteError at layer %d, position %d", err, layer, pos)
				}
			}
			m, err := runtime.Synthetic("tiny-interleaved")
			if err != nil {
				t.Fatal(err)
			}
			m.Weights.Layers[1].Down.F32[3] = float32(math.NaN())
			r, err := runtime.NewRunner(m, g, 1)
			if err != nil {
				t.Fatal(err)
			}
			want(r.Forward([]int{1}, make([]float32, m.Config.Vocab)), 1, 0)

			m, _ = runtime.Synthetic("tiny-interleaved")
			m.Weights.Embed.F32[7*m.Config.Dim] = float32(math.Inf(-1))
			r, err = runtime.NewRunner(m, g, 1)
			if err != nil {
				t.Fatal(err)
			}
			logits := make([]float32, m.Config.Vocab)
			for i, id := range []int{1, 40, 41, 42} {
				if err := r.Forward([]int{id}, logits); err != nil {
					t.Fatalf("finite token %d: %v", i, err)
				}
			}
			want(r.Forward([]int{7}, logits), -1, 4)

			r, err = runtime.NewRunner(m, g, 16)
			if err != nil {
				t.Fatal(err)
			}
			// Every row's logits: row 3's are not finite. (With the last
			// row's alone, the GPU's prompt attention may leave them finite:
			// its softmax skips a NaN key that the CPU's propagates.)
			want(r.ForwardAll([]int{1, 40, 41, 7, 42}, make([]float32, 5*m.Config.Vocab)), -1, 3)
			r.Reset()
			t.Logf("last-row logits of the same chunk: %v", r.Forward([]int{1, 40, 41, 7, 42}, logits))
			r.Reset()
			want(r.LogProbs([]int{1, 40, 7, 42}, []int{40, 7, 42, 43}, make([]float64, 4)), -1, 2)
		})
	}
}
