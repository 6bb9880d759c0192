package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestKernelEvicting checks the H2O and TOVA steps against float64
// references: the attention output, the per-token scores after two steps
// (H2O accumulates them), and the token chosen for eviction (exactly the
// lowest of the GPU's own scores, and within rounding of the reference's).
func TestKernelEvicting(t *testing.T) {
	k := gpu(t)
	d := k.D
	type tc struct{ heads, kv, dim, n, recent int }
	cases := []tc{{8, 2, 128, 1000, 100}, {4, 4, 64, 300, 0}, {32, 8, 128, 2048, 64}, {8, 1, 128, 70, 70}, {16, 2, 64, 5000, 1000}}
	rng := rand.New(rand.NewPCG(5, 6))
	attnFamilies(t, func(t *testing.T) {
		for _, c := range cases {
			for _, tova := range []bool{false, true} {
				t.Run(fmt.Sprintf("h%d_kv%d_d%d_n%d_recent%d_tova%v", c.heads, c.kv, c.dim, c.n, c.recent, tova), func(t *testing.T) {
					s := Shape{Heads: c.heads, KVHeads: c.kv, HeadDim: c.dim, Tokens: c.n}
					D, G, n := c.dim, s.Group(), c.n
					q, K, V := randBF16(rng, c.heads*D), randBF16(rng, c.kv*n*D), randBF16(rng, c.kv*n*D)
					qd, Kd, Vd := upload(t, d, q), upload(t, d, K), upload(t, d, V)
					out := devOut(t, d, c.heads*D)
					e, err := k.NewEvicting(s, tova, c.recent, 0)
					if err != nil {
						t.Fatal(err)
					}
					defer e.Free()
					for range 2 {
						if err := e.Launch(qd, Kd, Vd, out); err != nil {
							t.Fatal(err)
						}
					}
					got := make([]float32, c.heads*D)
					if err := Download(d, got, out); err != nil {
						t.Fatal(err)
					}
					acc, err := e.Scores()
					if err != nil {
						t.Fatal(err)
					}
					ev, err := e.Evicted()
					if err != nil {
						t.Fatal(err)
					}
					steps := 2.0
					if tova {
						steps = 1
					}
					worst, worstP := 0.0, 0.0
					ref := make([][]float64, c.kv) // [kv][n] the group's probabilities summed
					for h := range c.kv {
						Kh, Vh := headSlice(K, h, n, D), headSlice(V, h, n, D)
						worst = math.Max(worst, RelErr(got[h*G*D:(h+1)*G*D], RefDecode(q[h*G*D:(h+1)*G*D], Kh, Vh, D, nil)))
						ref[h] = make([]float64, n)
						for _, p := range RefProbs(q[h*G*D:(h+1)*G*D], Kh, D) {
							for i, x := range p {
								ref[h][i] += x
							}
						}
						for i, x := range ref[h] {
							worstP = math.Max(worstP, math.Abs(float64(acc[h][i])-steps*x))
						}
					}
					t.Logf("%+v: output error %.2e, scores error %.2e, evicted %v", e.Plan(), worst, worstP, ev)
					if !(worst < 1e-4) || !(worstP < 1e-6*float64(G)) {
						t.Fatalf("output error %.3e, scores error %.3e", worst, worstP)
					}
					if tova {
						sum := make([]float32, n)
						want := make([]float64, n)
						for i := range sum {
							for h := range c.kv {
								sum[i] += acc[h][i]
								want[i] += ref[h][i]
							}
						}
						if int(ev[0]) != ArgMin(sum, n) {
							t.Fatalf("evicted %d, lowest of the GPU's scores %d", ev[0], ArgMin(sum, n))
						}
						if m := want[ArgMin(want, n)]; want[ev[0]]-m > 1e-6 {
							t.Fatalf("evicted %d (%g), reference lowest %g", ev[0], want[ev[0]], m)
						}
						return
					}
					for h := range c.kv {
						lim := n - c.recent
						if int(ev[h]) != ArgMin(acc[h], lim) {
							t.Fatalf("head %d: evicted %d, lowest of the GPU's scores %d", h, ev[h], ArgMin(acc[h], lim))
						}
						if lim > 0 {
							if m := ref[h][ArgMin(ref[h], lim)]; ref[h][ev[h]]-m > 1e-6 {
								t.Fatalf("head %d: evicted %d (%g), reference lowest %g", h, ev[h], ref[h][ev[h]], m)
							}
						}
					}
				})
			}
		}
	})
}

// TestKernelOracle checks the oracle step: every token's score against
// float64, the selection against a brute-force top-K of those scores, and
// the output against float64 attention over the selection.
func TestKernelOracle(t *testing.T) {
	k := gpu(t)
	d := k.D
	type tc struct{ heads, kv, dim, n, budget int }
	cases := []tc{{8, 2, 128, 5000, 300}, {4, 4, 64, 1000, 2000}, {8, 1, 128, 777, 64}, {32, 8, 128, 40000, 2048}}
	rng := rand.New(rand.NewPCG(7, 8))
	attnFamilies(t, func(t *testing.T) {
		for _, c := range cases {
			t.Run(fmt.Sprintf("h%d_kv%d_d%d_n%d_b%d", c.heads, c.kv, c.dim, c.n, c.budget), func(t *testing.T) {
				if testing.Short() && c.n > 5000 {
					t.Skip("long sequence in -short mode")
				}
				s := Shape{Heads: c.heads, KVHeads: c.kv, HeadDim: c.dim, Tokens: c.n}
				D, G, n := c.dim, s.Group(), c.n
				q, K, V := randBF16(rng, c.heads*D), randBF16(rng, c.kv*n*D), randBF16(rng, c.kv*n*D)
				qd, Kd, Vd := upload(t, d, q), upload(t, d, K), upload(t, d, V)
				out := devOut(t, d, c.heads*D)
				o, err := k.NewOracle(s, c.budget, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer o.Free()
				if err := o.Launch(qd, Kd, Vd, out); err != nil {
					t.Fatal(err)
				}
				got := make([]float32, c.heads*D)
				if err := Download(d, got, out); err != nil {
					t.Fatal(err)
				}
				scores, err := o.Scores()
				if err != nil {
					t.Fatal(err)
				}
				sel, err := o.Selection()
				if err != nil {
					t.Fatal(err)
				}
				scale := math.Log2E / math.Sqrt(float64(D))
				worst := 0.0
				for h := range c.heads {
					kv := h / G
					Kh, Vh := headSlice(K, kv, n, D), headSlice(V, kv, n, D)
					for i := 0; i < n; i += max(1, n/500) {
						var a float64
						for j := range D {
							a += BF16Float64(q[h*D+j]) * BF16Float64(Kh[i*D+j])
						}
						if math.Abs(float64(scores[h][i])-a*scale) > 1e-4 {
							t.Fatalf("head %d token %d: score %v, want %v", h, i, scores[h][i], a*scale)
						}
					}
					if !slices.Equal(sel[h], TopK(scores[h], o.Select)) {
						t.Fatalf("head %d: selection differs from the brute-force top %d", h, o.Select)
					}
					toks := make([]int, len(sel[h]))
					for i, x := range sel[h] {
						toks[i] = int(x)
					}
					worst = math.Max(worst, RelErr(got[h*D:(h+1)*D], RefDecode(q[h*D:(h+1)*D], Kh, Vh, D, toks)))
				}
				t.Logf("%d selected per head, %+v: max relative error %.2e", o.Select, o.Plan(), worst)
				if !(worst < 1e-4) {
					t.Fatalf("relative error %.3e", worst)
				}
			})
		}
	})
}

// TestReadFloor checks that the floor kernel runs over sizes that are not a
// multiple of its unrolled step.
func TestReadFloor(t *testing.T) {
	k := gpu(t)
	d := k.D
	sink := devOut(t, d, 1)
	for _, bytes := range []int64{16, 16 * 1000, 64 << 20} {
		src, err := d.Alloc(bytes)
		if err != nil {
			t.Fatal(err)
		}
		if err := k.ReadFloor(src, bytes, sink); err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(); err != nil {
			t.Fatal(err)
		}
		_ = d.Free(src)
	}
	if err := k.ReadFloor(0, 15, sink); err == nil {
		t.Fatal("15 bytes accepted")
	}
}

// TestSplitFloor checks the split floor's merged partials against the
// host's (integers, so any order of summation gives them exactly) under
// both merges, twice in a row (the fused one leaves its counters at zero),
// the unmerged partials of FloorNone,
// on rows whose chunks are not a multiple of the unrolled step, and that
// rows of a size that is not a multiple of 16 bytes are refused.
func TestSplitFloor(t *testing.T) {
	k := gpu(t)
	d := k.D
	const rows, chunks, np, rowWords = 3, 7, 520, 9000
	words := make([]uint32, rows*rowWords*4)
	rng := rand.New(rand.NewPCG(5, 11))
	for i := range words {
		words[i] = rng.Uint32()
	}
	src, err := d.Alloc(int64(len(words)) * 4)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free(src)
	if err := Upload(d, src, words); err != nil {
		t.Fatal(err)
	}
	want, wantPart := make([]float32, rows*np), make([]float32, rows*chunks*np)
	for r := range rows {
		for c := range chunks {
			lo, hi := rowWords*c/chunks, rowWords*(c+1)/chunks
			for j := range np {
				x := uint32(0)
				for i := lo + j%floorThreads; i < hi; i += floorThreads {
					w := words[(r*rowWords+i)*4:]
					x ^= w[0] ^ w[1] ^ w[2] ^ w[3]
				}
				p := float32(x&255) + float32(j)
				wantPart[(r*chunks+c)*np+j] = p
				want[r*np+j] += p
			}
		}
	}
	f, err := k.NewSplitFloor(rows, chunks, np)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Free()
	for _, mode := range []int{FloorCombine, FloorFused, FloorFused, FloorNone, FloorCombine} {
		if err := d.PoisonF32(f.out, int64(rows*np)); err != nil {
			t.Fatal(err)
		}
		if err := d.PoisonF32(f.part, int64(rows*chunks*np)); err != nil {
			t.Fatal(err)
		}
		if err := f.Launch(src, rowWords*16, mode); err != nil {
			t.Fatal(err)
		}
		got, exp, what := f.Out, want, "out"
		if mode == FloorNone {
			got, exp, what = f.Parts, wantPart, "part"
		}
		vals, err := got()
		if err != nil {
			t.Fatal(err)
		}
		for i := range exp {
			if vals[i] != exp[i] {
				t.Fatalf("merge %d: %s[%d] = %v, want %v", mode, what, i, vals[i], exp[i])
			}
		}
	}
	if err := f.Launch(src, 24, FloorCombine); err == nil {
		t.Error("rows of 24 bytes accepted")
	}
	if err := f.Launch(src, rowWords*16, FloorNone+1); err == nil {
		t.Error("an unknown merge accepted")
	}
}
