package cuda_test

import (
	"math/rand/v2"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// TestStagingGrows checks that the staging arena grows until what the host
// queues between two of its downloads fits: steps of six attention calls
// whose uploads (selections and positions, about 4 MB a step) exceed the
// first arena wait for the device more than once at first, and once (the
// step's download) after a few steps.
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
	if waits[0] < 2 {
		t.Errorf("the first step waited %d times: its uploads were meant to overflow the first arena", waits[0])
	}
	for i, w := range waits[4:] {
		if w != 1 {
			t.Errorf("step %d waited %d times for the device, want once (its download)", i+4, w)
		}
	}
}
