package cuda_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// scaledModel is synthetic tiny (or small) with its config edited, random
// weights drawn again for it (q/k norms where QKNorm asks for them).
func scaledModel(t *testing.T, base, name string, edit func(c *runtime.Config)) *runtime.Model {
	t.Helper()
	s, err := runtime.Synthetic(base)
	if err != nil {
		t.Fatal(err)
	}
	c := s.Config
	edit(&c)
	m := runtime.NewRandomModel(c, 5)
	m.Source = base + "+" + name
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	return m
}

// scaledVariants are the RoPE scalings, Qwen3's q/k norms and Qwen2's
// q/k/v biases, on tiny's shape (head_dim 16).
func scaledVariants() map[string]func(c *runtime.Config) {
	short := []float64{1, 1.1, 1.3, 1.6, 2, 2.5, 3, 4}
	long := []float64{1.2, 1.5, 2, 3, 4, 6, 8, 12}
	return map[string]func(c *runtime.Config){
		"linear": func(c *runtime.Config) { c.RopeScaling = runtime.RopeScaling{Type: runtime.RopeLinear, Factor: 4} },
		"dynamic": func(c *runtime.Config) {
			c.RopeScaling = runtime.RopeScaling{Type: runtime.RopeDynamic, Factor: 2, OriginalMaxSeq: 16}
		},
		"llama3": func(c *runtime.Config) {
			c.RopeScaling = runtime.RopeScaling{Type: runtime.RopeLlama3, Factor: 8, OriginalMaxSeq: 64, LowFreqFactor: 1, HighFreqFactor: 4}
		},
		"yarn": func(c *runtime.Config) {
			c.RopeScaling = runtime.RopeScaling{Type: runtime.RopeYarn, Factor: 4, OriginalMaxSeq: 64, BetaFast: 32, BetaSlow: 1,
				AttnFactor: runtime.YarnAttnFactor(4, 0, 0)}
		},
		"longrope": func(c *runtime.Config) {
			c.RopeScaling = runtime.RopeScaling{Type: runtime.RopeLongrope, Factor: 4, OriginalMaxSeq: 16,
				ShortFactor: short, LongFactor: long, AttnFactor: runtime.LongropeAttnFactor(4, 16)}
		},
		"qknorm":  func(c *runtime.Config) { c.QKNorm = true },
		"qkvbias": func(c *runtime.Config) { c.QKVBias = true }, // Qwen2's: in the decode products' epilogue
	}
}

// TestArchGPU runs each scaling, Qwen3's norms and Qwen2's biases on the GPU against the CPU:
// a 40-token prompt in chunks of 32 and 32 decode steps (compareModel), and
// the small shape (head_dim 64, the tensor-core prompt kernel) with yarn and
// q/k norms together.
func TestArchGPU(t *testing.T) {
	g := newGPU(t)
	for name, edit := range scaledVariants() {
		t.Run(name, func(t *testing.T) { compareModel(t, g, scaledModel(t, "tiny", name, edit)) })
	}
	t.Run("small qkvbias", func(t *testing.T) {
		compareModel(t, g, scaledModel(t, "small", "qkvbias", scaledVariants()["qkvbias"]))
	})
	t.Run("small yarn qknorm", func(t *testing.T) {
		compareModel(t, g, scaledModel(t, "small", "yarn+qknorm", func(c *runtime.Config) {
			scaledVariants()["yarn"](c)
			c.QKNorm = true
		}))
	})
}

// TestArchRepositionGPU runs StreamingLLM (re-positioned keys) under the
// scalings with fixed frequencies on both backends: the GPU's attention
// rotates queries by the shift with AttnArgs.InvFreq.
func TestArchRepositionGPU(t *testing.T) {
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	for _, name := range []string{"linear", "llama3", "yarn"} {
		t.Run(name, func(t *testing.T) {
			m := scaledModel(t, "tiny", name, scaledVariants()[name])
			run := func(be runtime.Backend) (*runtime.Runner, []float32) {
				r, err := runtime.NewRunner(m, be, 16)
				if err != nil {
					t.Fatal(err)
				}
				p, err := policies.New("streamingllm", policies.Params{"sinks": 3, "recent": 9})
				if err != nil {
					t.Fatal(err)
				}
				if err := p.Start(r); err != nil {
					t.Fatal(err)
				}
				return r, make([]float32, m.Config.Vocab)
			}
			rc, lc := run(c)
			rg, lg := run(g)
			step := func(toks []int) {
				if err := rc.Forward(toks, lc); err != nil {
					t.Fatal(err)
				}
				if err := rg.Forward(toks, lg); err != nil {
					t.Fatal(err)
				}
				if d := relDiff(lg, lc); d > 1e-3 {
					t.Fatalf("position %d: GPU logits differ from the CPU's by %.3g relative", rc.Pos()-1, d)
				}
			}
			step([]int{1, 40, 50, 60, 70})
			for i := range 40 {
				step([]int{3 + (i*37)%256})
			}
		})
	}
}

// TestArchWindowGPU runs models with a sliding window shorter than the
// prompt on the GPU against the CPU (compareModel: a 40-token prompt in
// chunks of 32, then decode steps): tiny (head dim 16, the general
// attention kernel) and small (head dim 64, the split-KV kernels).
func TestArchWindowGPU(t *testing.T) {
	g := newGPU(t)
	if !g.AttendsWindow() {
		t.Fatal("the CUDA backend does not apply sliding windows")
	}
	for _, base := range []string{"tiny", "small"} {
		t.Run(base, func(t *testing.T) {
			compareModel(t, g, scaledModel(t, base, "window", func(c *runtime.Config) { c.SlidingWindow = 9 }))
		})
	}
}

// TestArchGoldenGPU checks the models of runtime/testdata/arch (made by
// bench/golden_arch.py) on the GPU against transformers' logits, the one
// with a sliding window (mistral-window: 8 tokens over a 48-token prompt)
// included. Cases whose folder is absent skip.
func TestArchGoldenGPU(t *testing.T) {
	g := newGPU(t)
	for _, name := range []string{"linear", "dynamic", "llama3", "yarn", "qwen3", "mistral-window", "phi3-longrope"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("..", "testdata", "arch", name)
			if _, err := os.Stat(dir); err != nil {
				t.Skipf("%s absent: make it with `python3 bench/golden_arch.py`", dir)
			}
			m, err := runtime.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(filepath.Join(dir, "golden.json"))
			if err != nil {
				t.Fatal(err)
			}
			var gold struct {
				IDs    []int       `json:"ids"`
				Logits [][]float64 `json:"logits"`
			}
			if err := json.Unmarshal(data, &gold); err != nil {
				t.Fatal(err)
			}
			r, err := runtime.NewRunner(m, g, len(gold.IDs))
			if err != nil {
				t.Fatal(err)
			}
			v := m.Config.Vocab
			got := make([]float32, len(gold.IDs)*v)
			if err := r.ForwardAll(gold.IDs, got); err != nil {
				t.Fatal(err)
			}
			var d, scale float64
			for i, row := range gold.Logits {
				for j, w := range row {
					d = math.Max(d, math.Abs(float64(got[i*v+j])-w))
					scale = math.Max(scale, math.Abs(w))
				}
			}
			t.Logf("%s: largest difference from transformers %.3g relative", name, d/scale)
			if d/scale > 1e-3 {
				t.Errorf("logits differ from transformers' by %.3g relative", d/scale)
			}
		})
	}
}
