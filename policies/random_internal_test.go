package policies

import (
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
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
	ps, rs := twinRunners(t, m, "random", Params{"budget": 40, "seed": 7})
	ps[1].(*random).list = true
	toks := make([]int, 200)
	for i := range toks {
		toks[i] = 3 + (i*29)%200
	}
	stepTwins(t, m, ps, rs, toks, 60, func(n int) {
		for l := range m.Config.Layers {
			a, b := rs[0].Cache.Seqs(l), rs[1].Cache.Seqs(l)
			for h := range a {
				if a[h].N != 40 || !slices.Equal(a[h].Pos[:a[h].N], b[h].Pos[:b[h].N]) {
					t.Fatalf("token %d layer %d head %d: holds %v, the listing's %v", n, l, h, a[h].Pos[:a[h].N], b[h].Pos[:b[h].N])
				}
			}
		}
	})
}
