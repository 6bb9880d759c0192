package cuda

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestDescribePositions checks the positions describe lays out for a
// prompt chunk's call (not every token visible to every row): each KV
// head's descriptor points at its own positions, and heads holding the
// same positions (as a prompt's do) share one copy, while heads whose
// positions differ (an eviction moved a token) get their own.
func TestDescribePositions(t *testing.T) {
	b := fakeOf(t, "bf16")
	rng := rand.New(rand.NewPCG(6, 1))
	const heads, kvHeads, hd, ps = 8, 4, 64, 16
	for trial := range 40 {
		n := 20 + rng.IntN(300)
		rows := 2 + rng.IntN(8) // more than one row: the later tokens are hidden from the first
		base := make([]int32, n)
		for i := range base {
			base[i] = int32(i)
		}
		seqs := make([]runtime.KVSeq, kvHeads)
		same := make([]bool, kvHeads) // head g holds the positions of head g-1
		for g := range seqs {
			pos := slices.Clone(base)
			if g > 0 && rng.IntN(3) == 0 { // an eviction moved the last token into a hole
				i := rng.IntN(n - 1)
				pos[i] = pos[n-1]
				pos[n-1] = int32(n + g)
			}
			same[g] = g > 0 && slices.Equal(pos, seqs[g-1].Pos)
			pages := (n + ps - 1) / ps
			s := runtime.KVSeq{N: n, PageSize: ps, Pos: pos, Bounded: true, MaxPos: slices.Max(pos)}
			for range pages {
				s.K = append(s.K, b.AllocKV(ps*hd, runtime.BF16))
				s.V = append(s.V, b.AllocKV(ps*hd, runtime.BF16))
			}
			seqs[g] = s
		}
		qpos := make([]int, rows)
		for r := range qpos {
			qpos[r] = n - rows + r
		}
		a := &runtime.AttnArgs{Q: b.Alloc(rows * heads * hd), Out: b.Alloc(rows * heads * hd), Rows: rows, QPos: qpos,
			Heads: heads, KVHeads: kvHeads, HeadDim: hd, Scale: 0.125, Seqs: seqs}
		var h []int32
		b.hPtrs, b.kvt = b.hPtrs[:0], -1 // as callPages leaves them for a call without tables
		b.describe(&h, a, false)
		for g, s := range seqs {
			off := h[g*sdWords+4]
			if off < 0 {
				t.Fatalf("trial %d head %d: no positions for a call whose rows do not see every token", trial, g)
			}
			if got := h[off : off+int32(n)]; !slices.Equal(got, s.Pos[:n]) {
				t.Fatalf("trial %d head %d: positions at %d are not the head's", trial, g, off)
			}
			if g > 0 && same[g] != (off == h[(g-1)*sdWords+4]) {
				t.Fatalf("trial %d head %d: same positions as head %d %v, shared copy %v", trial, g, g-1, same[g], off == h[(g-1)*sdWords+4])
			}
		}
		b.Free(a.Q)
		b.Free(a.Out)
	}
}
