package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestAttendPageKernels: Attend with a page's scores and value sums in one
// call each (pageKernels) gives, bit for bit, the outputs, accumulated
// probabilities and recall of the call a token, and QK its scores: heads of 64 and 128,
// pages of 16 and 7 tokens, caches in position order and shuffled (as
// evictions leave them), a sliding window, selections in runs of a page
// and scattered, unsorted, query rows that see every token, some or none.
// Prompts of several rows take blocks of rows and heads a page at a time
// (attnblock.go): 3 rows of a group of 2 heads (one block), 19 rows (three
// blocks, the last short), 11 rows of 36 heads over one KV head (wider
// than a block's lanes: a head at a time), and a decode step's one row of
// a group of 4 heads (a block of the group).
func TestAttendPageKernels(t *testing.T) {
	setAVX2(t, true)
	rng := rand.New(rand.NewPCG(17, 4))
	b := New(2)
	defer b.Close()
	for _, shape := range []struct{ rows, heads, kvHeads int }{{3, 4, 2}, {19, 4, 2}, {11, 36, 1}, {1, 8, 2}} {
		rows, heads, kvHeads := shape.rows, shape.heads, shape.kvHeads
		for _, hd := range []int{64, 128} {
			for _, ps := range []int{16, 7} {
				for _, n := range []int{1, 40, 300} {
					for _, opt := range []string{"plain", "shuffled", "window", "sel runs", "sel scattered", "acc", "recall"} {
						t.Run(fmt.Sprintf("rows%d/heads%d/hd%d/ps%d/n%d/%s", rows, heads, hd, ps, n, opt), func(t *testing.T) {
							ref := make([]runtime.KVSeq, kvHeads)
							seqs := make([]runtime.KVSeq, kvHeads)
							for g := range kvHeads {
								order := make([]int, n)
								for i := range order {
									order[i] = i
								}
								ref[g] = pagedSeq(rng, ps, hd, order, nil)
								if opt == "shuffled" || opt == "recall" {
									rng.Shuffle(n, func(i, j int) { order[i], order[j] = order[j], order[i] })
									order = order[:max(1, n*3/4)] // a quarter evicted
								}
								seqs[g] = pagedSeq(rng, ps, hd, order, &ref[g])
							}
							qpos := []int{n - 1, n / 2, -1} // every token, half, none; then any
							for len(qpos) < rows {
								qpos = append(qpos, rng.IntN(n+1)-1)
							}
							a := &runtime.AttnArgs{Rows: rows, QPos: qpos, Heads: heads, KVHeads: kvHeads, HeadDim: hd,
								Scale: float32(1 / math.Sqrt(float64(hd))), Seqs: seqs}
							switch opt {
							case "window":
								a.Window = 17
							case "sel runs", "sel scattered":
								a.Sel = make([][]int32, heads)
								for h := range a.Sel {
									a.Sel[h] = pickTokens(rng, seqs[h/(heads/kvHeads)].N, ps, opt == "sel runs")
								}
							case "acc":
								a.Acc, a.AccZero = make([][]float32, heads), true
								for h := range a.Acc {
									a.Acc[h] = make([]float32, seqs[h/(heads/kvHeads)].N)
								}
							case "recall":
								a.Ref, a.Recall = ref, make([]float32, rows*heads)
							}
							q := randF32(rng, rows*heads*hd)
							run := func(on bool) ([]float32, [][]float32, []float32, []float32) {
								pageKernels = on
								defer func() { pageKernels = true }()
								out := make([]float32, rows*heads*hd)
								a.Q, a.Out = &f32{q}, &f32{out}
								b.Attend(a)
								var acc [][]float32
								for _, x := range a.Acc {
									acc = append(acc, slices.Clone(x))
								}
								var qk []float32 // the scores QK gives policies (SnapKV, the oracle), every row and head
								for r := range rows {
									for h := range heads {
										sc := make([]float32, seqs[h/(heads/kvHeads)].N)
										b.QK(a, r, h, sc)
										qk = append(qk, sc...)
									}
								}
								return out, acc, slices.Clone(a.Recall), qk
							}
							same := func(what string, x, y []float32) {
								t.Helper()
								for i := range x {
									if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
										t.Fatalf("%s[%d]: %v with the page kernels, %v with a call a token", what, i, x[i], y[i])
									}
								}
							}
							o1, acc1, rec1, qk1 := run(true)
							o0, acc0, rec0, qk0 := run(false)
							same("QK", qk1, qk0)
							same("out", o1, o0)
							for h := range acc1 {
								same(fmt.Sprintf("acc head %d", h), acc1[h], acc0[h])
							}
							same("recall", rec1, rec0)
							if opt == "recall" && n > 1 && rec1[0] <= 0 {
								t.Errorf("recall %v: the row that sees every token kept none of its mass", rec1[0])
							}
						})
					}
				}
			}
		}
	}
}

// pagedSeq is a sequence of pages of ps tokens holding the tokens of order
// (token order[i] at index i, at position order[i]): with from, their keys
// and values are from's (its token p at index p), else random.
func pagedSeq(rng *rand.Rand, ps, hd int, order []int, from *runtime.KVSeq) runtime.KVSeq {
	s := runtime.KVSeq{PageSize: ps, N: len(order)}
	for t0 := 0; t0 < len(order); t0 += ps {
		k, v := make([]float32, ps*hd), make([]float32, ps*hd)
		for i := t0; i < min(t0+ps, len(order)); i++ {
			kr, vr := k[(i-t0)*hd:(i-t0+1)*hd], v[(i-t0)*hd:(i-t0+1)*hd]
			if from != nil {
				p := order[i]
				copy(kr, vec(from.K[p/ps])[(p%ps)*hd:])
				copy(vr, vec(from.V[p/ps])[(p%ps)*hd:])
			} else {
				copy(kr, randF32(rng, hd))
				copy(vr, randF32(rng, hd))
			}
		}
		s.K, s.V = append(s.K, &f32{k}), append(s.V, &f32{v})
	}
	for _, p := range order {
		s.Pos = append(s.Pos, int32(p))
	}
	return s
}

// pickTokens is a selection of token indices below n: whole pages of ps
// tokens and a few more (runs), or tokens picked one by one, in a shuffled
// order (scattered).
func pickTokens(rng *rand.Rand, n, ps int, runs bool) []int32 {
	var sel []int32
	if runs {
		for t0 := 0; t0 < n; t0 += ps {
			if rng.IntN(2) == 0 {
				for t := t0; t < min(t0+ps, n); t++ {
					sel = append(sel, int32(t))
				}
			}
		}
		sel = append(sel, int32(rng.IntN(n)))
		return sel
	}
	for t := range n {
		if rng.IntN(3) == 0 {
			sel = append(sel, int32(t))
		}
	}
	rng.Shuffle(len(sel), func(i, j int) { sel[i], sel[j] = sel[j], sel[i] })
	if len(sel) == 0 {
		sel = append(sel, 0)
	}
	return sel
}
