package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestPageBoundsBruteForce checks the CPU backend's PageBounds (the host
// implementation) against a brute force recomputed from the keys at every
// step: random keys (small integers in some trials, so that bounds and
// scores tie), KV heads of different lengths, appends of random sizes
// (none, within a page, across several), bounds pages unlike the cache's
// pages, skipped heads, and shrinks that rebuild over new keys.
func TestPageBoundsBruteForce(t *testing.T) {
	b := New(1)
	defer b.Close()
	rng := rand.New(rand.NewPCG(17, 4))
	for trial := range 60 {
		hd := []int{1, 3, 16, 64}[rng.IntN(4)]
		page := []int{1, 3, 8, 16}[rng.IntN(4)]
		ps := []int{4, 16}[rng.IntN(2)]
		kvHeads := 1 + rng.IntN(3)
		heads := kvHeads * (1 + rng.IntN(3))
		group := heads / kvHeads
		ints := trial%3 == 0
		val := func() float32 {
			if ints {
				return float32(rng.IntN(7) - 3)
			}
			return float32(rng.NormFloat64())
		}
		pb := b.NewPageBounds(kvHeads, hd, page)
		seqs := make([]runtime.KVSeq, kvHeads)
		keys := make([][]float32, kvHeads) // [kvHeads][N*hd] what the pages hold
		for g := range seqs {
			seqs[g].PageSize = ps
		}
		// set makes head g hold n tokens, keys [from, n) new.
		set := func(g, from, n int) {
			s := &seqs[g]
			for len(s.K)*ps < n {
				s.K = append(s.K, b.Alloc(ps*hd))
				s.V = append(s.V, b.Alloc(ps*hd))
			}
			keys[g] = keys[g][:from*hd]
			for t := from; t < n; t++ {
				k := make([]float32, hd)
				for i := range k {
					k[i] = val()
				}
				b.Write(s.K[t/ps], (t%ps)*hd, k)
				keys[g] = append(keys[g], k...)
			}
			s.N = n
		}
		q := b.Alloc(heads * hd)
		out := make([][]float64, heads)
		for step := range 25 {
			for g := range seqs {
				n := seqs[g].N
				switch r := rng.IntN(10); {
				case r == 0 && n > 0: // shrink: the cache rebuilt over new keys
					set(g, 0, rng.IntN(n))
				case r == 1: // nothing new
				default:
					set(g, n, n+rng.IntN(2*page+3))
				}
			}
			pb.Extend(seqs)
			qv := make([]float32, heads*hd)
			for i := range qv {
				qv[i] = val()
			}
			b.Write(q, 0, qv)
			for h := range out {
				out[h] = nil
				if rng.IntN(5) > 0 {
					n := seqs[h/group].N
					out[h] = make([]float64, (n+page-1)/page)
					for p := range out[h] {
						out[h][p] = math.NaN()
					}
				}
			}
			a := &runtime.AttnArgs{Q: q, Rows: 1, Heads: heads, KVHeads: kvHeads, HeadDim: hd, Seqs: seqs}
			pb.Score(a, out)
			for h := range out {
				if out[h] == nil {
					continue
				}
				g := h / group
				want := runtime.RefPageScores(qv[h*hd:(h+1)*hd], keys[g], seqs[g].N, hd, page)
				for p := range want {
					if out[h][p] != want[p] {
						t.Fatalf("%s: head %d page %d score %v, brute force %v",
							fmt.Sprintf("trial %d (hd %d, page %d, cache pages %d) step %d", trial, hd, page, ps, step), h, p, out[h][p], want[p])
					}
				}
			}
		}
		// After Reset the bounds fold the sequences afresh.
		pb.Reset()
		for g := range seqs {
			set(g, 0, seqs[g].N)
		}
		pb.Extend(seqs)
		for h := range out {
			g := h / group
			out[h] = make([]float64, (seqs[g].N+page-1)/page)
		}
		qv := make([]float32, heads*hd)
		b.Read(qv, q, 0)
		pb.Score(&runtime.AttnArgs{Q: q, Rows: 1, Heads: heads, KVHeads: kvHeads, HeadDim: hd, Seqs: seqs}, out)
		for h := range out {
			g := h / group
			want := runtime.RefPageScores(qv[h*hd:(h+1)*hd], keys[g], seqs[g].N, hd, page)
			for p := range want {
				if out[h][p] != want[p] {
					t.Fatalf("trial %d after Reset: head %d page %d score %v, brute force %v", trial, h, p, out[h][p], want[p])
				}
			}
		}
		pb.Free()
	}
}
