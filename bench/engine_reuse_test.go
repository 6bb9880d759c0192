package bench

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
)

// TestEngineReusesRunners checks that a stream started on a closed stream's
// runner (its weights kept, its cache emptied) computes what a stream on a
// fresh runner does, for policies that configure the cache (shifts, the
// recall reference) or hold backend memory (Quest's page bounds).
func TestEngineReusesRunners(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	prompt := make([]int, 90)
	for i := range prompt {
		prompt[i] = 3 + rng.IntN(m.Config.Vocab-3)
	}
	for _, tc := range []struct {
		name   string
		params policies.Params
	}{
		{"full", nil},
		{"streamingllm", policies.Params{"sinks": 4, "recent": 28}},
		{"h2o", policies.Params{"heavy": 16, "recent": 16}},
		{"quest", policies.Params{"budget": 32, "page": 8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEngine(m, nil, tc.name, tc.params)
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			e.RecallEvery, e.MaxRows, e.Threads = 4, 32, 1
			run := func() []float32 {
				s, err := e.NewStream()
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				logits := make([]float32, m.Config.Vocab)
				if err := s.Prompt(prompt, logits); err != nil {
					t.Fatal(err)
				}
				var out []float32
				for i := range 12 {
					if err := s.Step(3+i, logits); err != nil {
						t.Fatal(err)
					}
					out = append(out, logits...)
				}
				return out
			}
			first := run()
			if len(e.idle) != 1 {
				t.Fatalf("%d idle runners after one closed stream, want 1", len(e.idle))
			}
			second := run()
			if len(e.idle) != 1 {
				t.Fatalf("%d idle runners after reuse, want 1", len(e.idle))
			}
			if !slices.Equal(first, second) {
				t.Error("a stream on a reused runner computes other logits than the first stream")
			}
		})
	}
}
