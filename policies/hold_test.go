package policies_test

import (
	"math/rand/v2"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/policies/policytest"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// TestDensePromptHold: on a backend that allocates pages in bulk (the CUDA
// backend; here policytest.BulkPages), a policy that evicts sets no run of pages aside
// for its dense prompt (KVCache.Hold keeps a run's pages with its sequence
// after an eviction), so the backend's KV peak after the prompt and after
// each step is the policy's own peak, as on a backend without the
// capability: its memory savings are real on a GPU too. A policy that keeps
// every token holds its prompt and the answer's first 64 tokens in one run
// a sequence: the backend's peak is the policy's plus at most that reserve,
// and the reserve serves the steps without another allocation.
func TestDensePromptHold(t *testing.T) {
	be := policytest.BulkPages{Backend: cpu.New(1)}
	defer be.Close()
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	prompt := make([]int, 150)
	for i := range prompt {
		prompt[i] = 3 + rng.IntN(m.Config.Vocab-3)
	}
	for _, tc := range []struct {
		name   string
		params policies.Params
		evicts bool
	}{
		{"full", nil, false},
		{"quest", policies.Params{"budget": 32, "page": 16}, false},
		{"window", policies.Params{"window": 40}, true},
		{"streamingllm", policies.Params{"sinks": 4, "recent": 36}, true},
		{"h2o", policies.Params{"heavy": 20, "recent": 20}, true},
		{"tova", policies.Params{"cache": 40}, true},
		{"snapkv", policies.Params{"capacity": 48, "window": 8, "kernel": 3}, true},
		{"random", policies.Params{"budget": 40, "seed": 3}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := runtime.NewRunner(m, be, 256)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Cache.Free()
			be.ResetMemoryPeak()
			p, err := policies.New(tc.name, tc.params)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Start(r); err != nil {
				t.Fatal(err)
			}
			if p.Evicts() != tc.evicts {
				t.Fatalf("%s evicts: %v, the case says %v", tc.name, p.Evicts(), tc.evicts)
			}
			c := r.Cache
			reserve := policytest.HoldReserve(c, m.Config.Layers, m.Config.KVHeads)
			logits := make([]float32, m.Config.Vocab)
			check := func(when string) {
				t.Helper()
				peak, mine := be.Memory().PeakKV, p.Stats().MaxResidentBytes
				if tc.evicts && peak != mine || !tc.evicts && (peak < mine || peak > mine+reserve) {
					t.Fatalf("%s: backend KV peak %d bytes, the policy's peak %d (reserve %d; evicts %v)", when, peak, mine, reserve, tc.evicts)
				}
			}
			feedPrompt(t, r, p, prompt, logits)
			check("after the prompt")
			held := c.AllocatedBytes()
			for i := range 40 {
				if err := r.Forward([]int{3 + i%50}, logits); err != nil {
					t.Fatal(err)
				}
				check("after a step")
			}
			if a := c.AllocatedBytes(); !tc.evicts && a != held {
				t.Errorf("%s allocated %d bytes of pages over 40 steps after its prompt's %d: the reserve should serve them", tc.name, a, held)
			}
		})
	}
}
