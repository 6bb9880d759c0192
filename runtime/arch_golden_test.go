package runtime_test

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// archGoldenDir holds the models bench/golden_arch.py makes with
// transformers, one folder each.
const archGoldenDir = "testdata/arch"

// archGoldenTol is the largest difference from transformers' float32
// logits, relative to the largest logit: both compute in float32, in
// different orders.
const archGoldenTol = 1e-4

// archGolden is a golden.json of bench/golden_arch.py.
type archGolden struct {
	Note      string      `json:"note"`
	Name      string      `json:"name"`
	IDs       []int       `json:"ids"`
	Logits    [][]float64 `json:"logits"`
	InvFreq   []float64   `json:"inv_freq"`
	AttnScale *float64    `json:"attention_scaling"`
}

// archGoldenCases are the models of bench/golden_arch.py: what each folder's
// config must say (so a folder cannot silently hold another model), and how
// to take its feature away, which must move the logits well past the
// tolerance (so the comparison can see the feature).
var archGoldenCases = []struct {
	name   string
	want   func(c runtime.Config) error
	ablate func(m *runtime.Model)
}{
	{"linear", scaled(runtime.RopeLinear), plainRoPE},
	{"dynamic", scaled(runtime.RopeDynamic), plainRoPE},
	{"llama3", scaled(runtime.RopeLlama3), plainRoPE},
	{"yarn", scaled(runtime.RopeYarn), plainRoPE},
	{"qwen3", func(c runtime.Config) error {
		if c.Arch != "qwen3" || !c.QKNorm || c.HeadDim*c.Heads == c.Dim {
			return fmt.Errorf("want qwen3 with q/k norms and head_dim*heads != hidden_size, have %s, QKNorm %v, head_dim %d", c.Arch, c.QKNorm, c.HeadDim)
		}
		return nil
	}, func(m *runtime.Model) {
		m.Config.QKNorm = false
		m.Weights.Layers = append([]runtime.LayerWeights(nil), m.Weights.Layers...)
		for i := range m.Weights.Layers {
			m.Weights.Layers[i].QNorm, m.Weights.Layers[i].KNorm = nil, nil
		}
	}},
	{"mistral-window", func(c runtime.Config) error {
		if c.Arch != "mistral" || c.SlidingWindow <= 0 {
			return fmt.Errorf("want mistral with a sliding window, have %s, window %d", c.Arch, c.SlidingWindow)
		}
		return nil
	}, func(m *runtime.Model) { m.Config.SlidingWindow = 0 }},
	{"phi3-longrope", func(c runtime.Config) error {
		if c.Arch != "phi3" {
			return fmt.Errorf("want phi3, have %s", c.Arch)
		}
		return scaled(runtime.RopeLongrope)(c)
	}, plainRoPE},
}

func scaled(typ string) func(c runtime.Config) error {
	return func(c runtime.Config) error {
		if c.RopeScaling.Type != typ {
			return fmt.Errorf("want RoPE scaling %s, have %q", typ, c.RopeScaling.Type)
		}
		return nil
	}
}

func plainRoPE(m *runtime.Model) { m.Config.RopeScaling = runtime.RopeScaling{} }

// TestArchGolden checks each model of testdata/arch against transformers'
// logits, on the CPU, in one forward pass over the prompt. Until
// bench/golden_arch.py has been run (it needs transformers, which this
// machine may lack), each case skips, saying so.
func TestArchGolden(t *testing.T) {
	be := cpu.New(0)
	defer be.Close()
	for _, c := range archGoldenCases {
		t.Run(c.name, func(t *testing.T) {
			m, g := loadArchGolden(t, c.name)
			if err := c.want(m.Config); err != nil {
				t.Fatalf("%s: %v", filepath.Join(archGoldenDir, c.name, "config.json"), err)
			}
			got := archLogits(t, be, m, g.IDs)
			d := relDiff(got, g.Logits)
			t.Logf("%s (%s): largest difference %.3g relative (tolerance %g)", c.name, m.Config.RopeScaling, d, archGoldenTol)
			if d > archGoldenTol {
				t.Errorf("logits differ from transformers' by %.3g relative, tolerance %g", d, archGoldenTol)
			}
			ab := *m
			c.ablate(&ab)
			if d := relDiff(archLogits(t, be, &ab, g.IDs), g.Logits); d < 100*archGoldenTol {
				t.Errorf("without its feature the model is within %.3g of the golden logits: the check cannot see the feature", d)
			}
		})
	}
}

// TestArchGoldenFreqs checks the inverse frequencies and attention factor
// that transformers recorded after its forward pass (for dynamic scaling,
// those of the prompt's length) against Config.RopeInvFreq.
func TestArchGoldenFreqs(t *testing.T) {
	for _, c := range archGoldenCases {
		t.Run(c.name, func(t *testing.T) {
			m, g := loadArchGolden(t, c.name)
			if g.InvFreq == nil || g.AttnScale == nil {
				t.Skipf("%s has no inverse frequencies (the transformers version that made it keeps them elsewhere)", c.name)
			}
			inv := m.Config.RopeInvFreq(len(g.IDs))
			if len(inv) != len(g.InvFreq) {
				t.Fatalf("%d inverse frequencies, transformers has %d", len(inv), len(g.InvFreq))
			}
			for i, f := range g.InvFreq {
				if math.Abs(float64(inv[i])-f) > 2e-6*f {
					t.Errorf("pair %d: %v, transformers %v", i, inv[i], f)
				}
			}
			if a := m.Config.RopeScaling.Attention(); math.Abs(a-*g.AttnScale) > 1e-6 {
				t.Errorf("attention factor %v, transformers %v", a, *g.AttnScale)
			}
		})
	}
}

// TestArchGoldenFolders refuses a folder of testdata/arch that no case
// reads (a model added to the script but not to the test).
func TestArchGoldenFolders(t *testing.T) {
	entries, err := os.ReadDir(archGoldenDir)
	if err != nil {
		t.Fatalf("%v (the folder keeps its README.md)", err)
	}
	known := map[string]bool{}
	for _, c := range archGoldenCases {
		known[c.name] = true
	}
	for _, e := range entries {
		if e.IsDir() && !known[e.Name()] {
			t.Errorf("%s: no case of TestArchGolden reads it", filepath.Join(archGoldenDir, e.Name()))
		}
	}
}

// loadArchGolden loads testdata/arch/name and its golden.json, skipping when
// the folder is absent.
func loadArchGolden(t *testing.T, name string) (*runtime.Model, *archGolden) {
	t.Helper()
	dir := filepath.Join(archGoldenDir, name)
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("%s absent: make it with `python3 bench/golden_arch.py` on a machine with torch and transformers (see %s/README.md)", dir, archGoldenDir)
	}
	m, err := runtime.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g archGolden
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatalf("%s: %v", filepath.Join(dir, "golden.json"), err)
	}
	if g.Name != name || len(g.IDs) == 0 || len(g.Logits) != len(g.IDs) {
		t.Fatalf("%s: name %q, %d ids, %d rows of logits", filepath.Join(dir, "golden.json"), g.Name, len(g.IDs), len(g.Logits))
	}
	for i, row := range g.Logits {
		if len(row) != m.Config.Vocab {
			t.Fatalf("%s: row %d has %d logits, the vocabulary is %d", filepath.Join(dir, "golden.json"), i, len(row), m.Config.Vocab)
		}
	}
	t.Logf("%s: %s", dir, g.Note)
	return m, &g
}

// archLogits runs the prompt in one forward pass and returns every row's
// logits.
func archLogits(t *testing.T, be runtime.Backend, m *runtime.Model, ids []int) []float32 {
	t.Helper()
	r, err := runtime.NewRunner(m, be, len(ids))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(ids)*m.Config.Vocab)
	if err := r.ForwardAll(ids, out); err != nil {
		t.Fatal(err)
	}
	return out
}
