package policies

import (
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// twinRunners starts two CPU runners of m, each under a fresh instance of
// the policy, and returns the policies and runners.
func twinRunners(t *testing.T, m *runtime.Model, name string, params Params) ([2]Policy, [2]*runtime.Runner) {
	t.Helper()
	var ps [2]Policy
	var rs [2]*runtime.Runner
	for i := range 2 {
		p, err := New(name, params)
		if err != nil {
			t.Fatal(err)
		}
		r, err := runtime.NewRunner(m, cpu.New(1), 64)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(r); err != nil {
			t.Fatal(err)
		}
		ps[i], rs[i] = p, r
	}
	return ps, rs
}

// stepTwins feeds both runners toks: the first prompt as a prompt
// (announced to each policy), then one token a step; after every step it
// checks that their logits agree bit for bit, then calls check with the
// token's index.
func stepTwins(t *testing.T, m *runtime.Model, ps [2]Policy, rs [2]*runtime.Runner, toks []int, prompt int, check func(n int)) {
	t.Helper()
	lg := [2][]float32{make([]float32, m.Config.Vocab), make([]float32, m.Config.Vocab)}
	for i := range 2 {
		ps[i].Prompt(prompt)
		if err := rs[i].Forward(toks[:prompt], lg[i]); err != nil {
			t.Fatal(err)
		}
	}
	for n := prompt; n < len(toks); n++ {
		for i := range 2 {
			if err := rs[i].Forward(toks[n:n+1], lg[i]); err != nil {
				t.Fatal(err)
			}
		}
		if !slices.Equal(lg[0], lg[1]) {
			t.Fatalf("token %d: the two runners' logits differ", n)
		}
		check(n)
	}
}
