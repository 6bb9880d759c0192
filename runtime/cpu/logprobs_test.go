package cpu_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// TestRunnerLogProbs checks the scoring pass against ForwardAll and LogProb
// over several chunks, and its errors.
func TestRunnerLogProbs(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	be := cpu.New(1)
	defer be.Close()
	V := m.Config.Vocab
	rng := rand.New(rand.NewPCG(5, 6))
	toks := randomTokens(rng, 50, V)
	targets := randomTokens(rng, 50, V)
	ra, rb := newRunner(t, m, be, 16), newRunner(t, m, be, 16)
	logits := make([]float32, len(toks)*V)
	if err := ra.ForwardAll(toks, logits); err != nil {
		t.Fatal(err)
	}
	got := make([]float64, len(toks))
	if err := rb.LogProbs(toks, targets, got); err != nil {
		t.Fatal(err)
	}
	for i := range toks {
		want := runtime.LogProb(logits[i*V:(i+1)*V], targets[i])
		if math.Abs(got[i]-want) > 1e-9*max(1, math.Abs(want)) || math.IsNaN(got[i]) {
			t.Fatalf("row %d: log prob %v, want %v", i, got[i], want)
		}
	}
	if rb.Pos() != len(toks) {
		t.Errorf("position %d after scoring %d tokens", rb.Pos(), len(toks))
	}
	// The runner goes on as after ForwardAll.
	la, lb := make([]float32, V), make([]float32, V)
	if err := ra.Forward([]int{3}, la); err != nil {
		t.Fatal(err)
	}
	if err := rb.Forward([]int{3}, lb); err != nil {
		t.Fatal(err)
	}
	if d := maxRelDiff(la, lb); d != 0 {
		t.Errorf("decode after scoring differs by %g", d)
	}
	if err := rb.LogProbs(toks[:3], targets[:2], got); err == nil {
		t.Error("LogProbs with 3 tokens and 2 targets: no error")
	}
	if err := rb.LogProbs(toks[:2], []int{0, V}, got); err == nil {
		t.Error("LogProbs with a target outside the vocabulary: no error")
	}
}
