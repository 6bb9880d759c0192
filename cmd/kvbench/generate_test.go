package main

import (
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// TestGreedyTokens checks generate's chunked greedy decoding against
// Forward and argmax one token at a time (the loop it replaced): the same
// tokens for step counts around the chunk's size, with and without a stop
// token met on the way, and the tokens fed when no stop ends it.
func TestGreedyTokens(t *testing.T) {
	m, err := runtime.Synthetic("tiny-interleaved")
	if err != nil {
		t.Fatal(err)
	}
	be := cpu.New(1)
	defer be.Close()
	prompt := []int{5, 17, 99, 3}
	start := func() (*runtime.Runner, []float32) {
		r, err := runtime.NewRunner(m, be, 8)
		if err != nil {
			t.Fatal(err)
		}
		logits := make([]float32, m.Config.Vocab)
		if err := r.Forward(prompt, logits); err != nil {
			t.Fatal(err)
		}
		return r, logits
	}
	// The reference: 60 tokens one at a time.
	r, logits := start()
	var ref []int
	for range 60 {
		ref = append(ref, runtime.Argmax(logits))
		if err := r.Forward(ref[len(ref)-1:], logits); err != nil {
			t.Fatal(err)
		}
	}
	for _, steps := range []int{0, 1, 2, 15, 16, 17, 33, 60} {
		for _, stopAt := range []int{-1, 0, 3, 20} {
			stopTok := -1
			if stopAt >= 0 {
				stopTok = ref[stopAt]
			}
			want := ref[:steps]
			if i := slices.Index(ref[:steps], stopTok); stopTok >= 0 && i >= 0 {
				want = ref[:i]
			}
			r, logits := start()
			got, err := greedyTokens(r, runtime.Argmax(logits), steps, logits, func(t int) bool { return t == stopTok })
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("steps %d, stop %d: %v, want %v", steps, stopTok, got, want)
			}
			if len(want) == steps && steps > 0 && r.Pos() != len(prompt)+steps-1 {
				t.Errorf("steps %d: position %d after, want %d", steps, r.Pos(), len(prompt)+steps-1)
			}
		}
	}
}
