package runtime_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// poisoned returns a synthetic model with one weight set to v by edit.
func poisoned(t *testing.T, name string, edit func(m *runtime.Model)) *runtime.Model {
	t.Helper()
	m, err := runtime.Synthetic(name)
	if err != nil {
		t.Fatal(err)
	}
	edit(m)
	return m
}

func runner(t *testing.T, m *runtime.Model, rows int) *runtime.Runner {
	t.Helper()
	be := cpu.New(1)
	t.Cleanup(be.Close)
	r, err := runtime.NewRunner(m, be, rows)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func nonFinite(t *testing.T, err error) *runtime.NonFiniteError {
	t.Helper()
	var nf *runtime.NonFiniteError
	if !errors.As(err, &nf) {
		t.Fatalf("error %v, want a *NonFiniteError", err)
	}
	return nf
}

func TestNonFiniteLayer(t *testing.T) {
	nan := float32(math.NaN())
	m := poisoned(t, "tiny", func(m *runtime.Model) { m.Weights.Layers[1].Down.F32[5] = nan })
	V := m.Config.Vocab

	// Decode steps: the first token already fails, in layer 1.
	r := runner(t, m, 1)
	err := r.Forward([]int{1}, make([]float32, V))
	nf := nonFinite(t, err)
	if nf.Layer != 1 || nf.Pos != 0 || nf.Token != 1 || !math.IsNaN(nf.Value) || nf.Layers != 3 {
		t.Errorf("got %+v, want layer 1 at position 0", *nf)
	}
	for _, want := range []string{"non-finite logits (NaN) at token 0", "layer 1 (of 3, counting from 0) is the first whose output is not finite"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}

	// A prompt chunk with every row's logits, and LogProbs.
	r = runner(t, m, 8)
	nf = nonFinite(t, r.ForwardAll([]int{1, 5, 6}, make([]float32, 3*V)))
	if nf.Layer != 1 || nf.Pos != 0 {
		t.Errorf("ForwardAll: %+v", *nf)
	}
	r = runner(t, m, 8)
	nf = nonFinite(t, r.LogProbs([]int{1, 5, 6}, []int{5, 6, 7}, make([]float64, 3)))
	if nf.Layer != 1 || nf.Pos != 0 {
		t.Errorf("LogProbs: %+v", *nf)
	}
}

func TestNonFiniteEmbeddingPosition(t *testing.T) {
	// The embedding of token 7 is +Inf (an untied head, so the logits of
	// other tokens stay finite): finite until it is fed.
	m := poisoned(t, "tiny-interleaved", func(m *runtime.Model) { m.Weights.Embed.F32[7*m.Config.Dim+3] = float32(math.Inf(1)) })
	V := m.Config.Vocab
	r := runner(t, m, 1)
	logits := make([]float32, V)
	for i, id := range []int{1, 40, 41, 42} {
		if err := r.Forward([]int{id}, logits); err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
	}
	err := r.Forward([]int{7}, logits)
	nf := nonFinite(t, err)
	if nf.Layer != -1 || nf.Pos != 4 || nf.Token != 7 {
		t.Errorf("got %+v, want the embedding of token 7 at position 4", *nf)
	}
	if !strings.Contains(err.Error(), "at token 4 of the stream (id 7): the token's embedding is not finite") {
		t.Errorf("message: %v", err)
	}

	// In a prompt chunk whose last row alone has logits, the first bad row
	// is named: rows before it are finite (attention is causal).
	r = runner(t, m, 16)
	nf = nonFinite(t, r.Forward([]int{1, 40, 41, 7, 42, 43}, logits))
	if nf.Layer != -1 || nf.Pos != 3 || nf.Token != 7 {
		t.Errorf("chunk: got %+v, want the embedding at position 3", *nf)
	}
	// Chunks after a finite one: positions count from the stream's start.
	r = runner(t, m, 4)
	nf = nonFinite(t, r.Forward([]int{1, 40, 41, 42, 43, 44, 7, 45}, logits))
	if nf.Layer != -1 || nf.Pos != 6 {
		t.Errorf("second chunk: got %+v, want position 6", *nf)
	}
}

func TestNonFiniteOutputHead(t *testing.T) {
	// An untied head with a NaN row: every layer is finite, the logits not.
	m := poisoned(t, "tiny-interleaved", func(m *runtime.Model) { m.Weights.Output.F32[9*m.Config.Dim] = float32(math.NaN()) })
	r := runner(t, m, 1)
	err := r.Forward([]int{1}, make([]float32, m.Config.Vocab))
	nf := nonFinite(t, err)
	if nf.Layer != m.Config.Layers || nf.Pos != 0 {
		t.Errorf("got %+v, want the output head", *nf)
	}
	if !strings.Contains(err.Error(), "every layer's output is finite; the final norm and output projection are not") {
		t.Errorf("message: %v", err)
	}
}

// nanHook makes attention produce NaN from layer 2 at position 3: a cache
// policy gone wrong, which a re-run without the policy does not reproduce.
type nanHook struct{}

func (nanHook) BeforeAttend(l int, a *runtime.AttnArgs) {
	if l == 2 && a.QPos[a.Rows-1] >= 3 {
		a.Scale = float32(math.NaN())
	}
}
func (nanHook) AfterAttend(int, *runtime.AttnArgs) {}

func TestNonFinitePolicy(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	r := runner(t, m, 1)
	r.Hook = nanHook{}
	logits := make([]float32, m.Config.Vocab)
	for i := range 3 {
		if err := r.Forward([]int{10 + i}, logits); err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
	}
	err = r.Forward([]int{20}, logits)
	nf := nonFinite(t, err)
	if nf.Layer != runtime.NotReproduced || nf.Pos != 3 {
		t.Errorf("got %+v, want not reproduced at position 3", *nf)
	}
	if !strings.Contains(err.Error(), "the cache policy's selection or eviction is the likely cause") {
		t.Errorf("message: %v", err)
	}
	if r.Hook == nil || r.Pos() != 4 {
		t.Errorf("after the diagnosis: hook %v, position %d", r.Hook, r.Pos())
	}
	// The diagnosis left the cache holding each position once.
	for l := range m.Config.Layers {
		for h, s := range r.Cache.Seqs(l) {
			seen := map[int32]bool{}
			for _, p := range s.Pos[:s.N] {
				if seen[p] {
					t.Errorf("layer %d head %d holds position %d twice", l, h, p)
				}
				seen[p] = true
			}
			if s.N != 4 {
				t.Errorf("layer %d head %d holds %d tokens, want 4", l, h, s.N)
			}
		}
	}
}
