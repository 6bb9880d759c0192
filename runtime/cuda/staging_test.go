package cuda_test

import (
	"math/rand/v2"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// TestStagingGrows checks that the staging arena grows until what the host
// queues between two of its downloads fits, and that growing it waits for
// nothing: steps of six attention calls whose uploads (selections and
// positions, about 4 MB a step) exceed the first arena (1 MiB) each wait for
// the device once (the step's download), the first one too. (H200,
// 2026-12-04: waits [1 1 1 1 1 1 1 1], an arena of 4 MiB; before the old
// arena was kept to the next wait, the first step waited more than once.)
func TestStagingGrows(t *testing.T) {
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(9, 9))
	const heads, kvHeads, hd, n = 8, 2, 64, 20000
	var seqs []runtime.KVSeq
	for range kvHeads {
		seqs = append(seqs, buildSeq(t, c, g, rng, n, 16, hd, runtime.F32).g)
	}
	sel := make([][]int32, heads)
	for h := range sel {
		for _, tk := range rng.Perm(n)[:16000] {
			sel[h] = append(sel[h], int32(tk))
		}
	}
	q, out := g.Alloc(heads*hd), g.Alloc(heads*hd)
	g.Write(q, 0, randVec(rng, heads*hd, 1))
	a := &runtime.AttnArgs{Out: out, Q: q, Rows: 1, QPos: []int{2 * n}, Heads: heads, KVHeads: kvHeads, HeadDim: hd,
		Scale: 0.125, Seqs: seqs, Sel: sel}
	var waits []int
	for range 8 {
		e0 := g.Epoch()
		for range 6 {
			g.Attend(a)
		}
		read(g, out)
		waits = append(waits, g.Epoch()-e0)
	}
	t.Logf("waits for the device per step: %v; staging arena %d bytes", waits, g.StagingBytes())
	if g.StagingBytes() <= 1<<20 {
		t.Errorf("staging arena of %d bytes: the steps' uploads were meant to overflow the first one (1 MiB)", g.StagingBytes())
	}
	for i, w := range waits {
		if w != 1 { // growing the arena waits for nothing (the old one is freed at the next wait)
			t.Errorf("step %d waited %d times for the device, want once (its download)", i, w)
		}
	}
}
