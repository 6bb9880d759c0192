package policies

import (
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// TestRandomDecodeShortcut checks random's decode-step eviction (one token,
// slot IntN(N-1), drawn without listing the candidates) against the listing
// of every candidate: two streams over the same tokens under the same seed,
// one listing every time, keep the same tokens in the same slots and give
// the same logits at every step.
func TestRandomDecodeShortcut(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	var ps [2]*random
	var rs [2]*runtime.Runner
	for i := range 2 {
		p, err := New("random", Params{"budget": 40, "seed": 7})
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
		ps[i], rs[i] = p.(*random), r
	}
	ps[1].list = true
	toks := make([]int, 200)
	for i := range toks {
		toks[i] = 3 + (i*29)%200
	}
	lg := [2][]float32{make([]float32, m.Config.Vocab), make([]float32, m.Config.Vocab)}
	for i := range 2 {
		ps[i].Prompt(60)
		if err := rs[i].Forward(toks[:60], lg[i]); err != nil {
			t.Fatal(err)
		}
	}
	for n := 60; n < len(toks); n++ {
		for i := range 2 {
			if err := rs[i].Forward(toks[n:n+1], lg[i]); err != nil {
				t.Fatal(err)
			}
		}
		if !slices.Equal(lg[0], lg[1]) {
			t.Fatalf("token %d: the shortcut's logits differ from the listing's", n)
		}
		for l := range m.Config.Layers {
			a, b := rs[0].Cache.Seqs(l), rs[1].Cache.Seqs(l)
			for h := range a {
				if a[h].N != 40 || !slices.Equal(a[h].Pos[:a[h].N], b[h].Pos[:b[h].N]) {
					t.Fatalf("token %d layer %d head %d: holds %v, the listing's %v", n, l, h, a[h].Pos[:a[h].N], b[h].Pos[:b[h].N])
				}
			}
		}
	}
}
