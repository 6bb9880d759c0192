package main

// The check of kvbench kernels' cells: each step's output (and
// accumulated probabilities) against a float64 reference on the host.

import (
	"fmt"
	"math"
	"slices"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// checkUnit checks u's run, stream by stream (checkStep, the whole unit run
// once for each), and returns the report of the worst errors and whether
// they passed: outputs within 1e-3 of the largest reference value (a
// prompt chunk's within chunkTol), added
// probabilities within 1e-5 a row that added them, or where more than
// accCheckRows rows added, their total within 1e-4 of one a row and query
// head.
func checkUnit(b *cuda.Backend, d *cellData, u *unit) (string, bool) {
	worst, accWorst, accRows := 0.0, 0.0, 0
	for _, st := range u.steps {
		w, aw, n := checkStep(b, d, st, func() { u.run(b) })
		worst, accWorst, accRows = max(worst, w), max(accWorst, aw), max(accRows, n)
	}
	tol := 1e-3
	if u.steps[0].a.Rows > 1 {
		tol = chunkTol
	}
	ok := worst < tol
	msg := fmt.Sprintf("relerr=%.1e", worst)
	switch {
	case u.steps[0].a.Acc == nil:
	case accRows > accCheckRows:
		ok = ok && accWorst < 1e-4
		msg += fmt.Sprintf(" acc=total(%d rows):%.0e", accRows, accWorst)
	default:
		ok = ok && accWorst < 1e-5*float64(max(accRows, 1))
		msg += fmt.Sprintf(" acc=%.0e", accWorst)
	}
	if !ok {
		msg += " FAIL"
	}
	return msg, ok
}

// chunkTol is the largest error a prompt chunk's outputs may have relative
// to the largest reference value: the tensor-core prefill multiplies the
// queries and the probabilities in bf16, as SDPA does (2-3e-3 measured at
// 8K and 32K tokens, SDPA's own 2.2e-3 at 32K: H100, 2026-12-08), where
// the decode kernels' near-float32 products stay within 1e-3.
const chunkTol = 1e-2

// accCheckRows is the most rows whose added probabilities checkStep
// checks: each such row's reference reads every key of its heads.
const accCheckRows = 64

// checkRows says whether checkStep checks the outputs of row r of an
// n-row call: the first, the middle and the last.
func checkRows(r, n int) bool { return r == 0 || r == n/2 || r == n-1 }

// checkStep compares st's output from one run of attend (which computes
// st's attention, alone or in a batch) with a float64 reference on the
// first and last KV heads, from the host copy of the keys, values and
// queries as the pages hold them (bf16): the output of each of their query
// heads in the call's first, middle and last rows and, where the policy
// accumulates probabilities, what the run added (the sum over the rows
// that add, where they are at most accCheckRows). It returns the worst
// output error relative to the largest reference value (+Inf where an
// output is NaN), the worst added probability's error, and the rows that
// added them. Where more than accCheckRows rows added (H2O's prompt chunk:
// a reference of every row would take minutes), the error is that of the
// total added over every slice and token, relative to the rows times the
// query heads (each row's probabilities of a head sum to one: every row of
// a prompt chunk sees a key, its own).
func checkStep(b *cuda.Backend, d *cellData, st *step, attend func()) (worst, accWorst float64, accRows int) {
	a := &st.a
	hd, group := a.HeadDim, a.Heads/a.KVHeads
	var before [][]float32
	for _, acc := range a.Acc {
		before = append(before, slices.Clone(acc))
	}
	b.Write(a.Out, 0, slices.Repeat([]float32{float32(math.NaN())}, a.Rows*a.Heads*hd))
	attend()
	out := make([]float32, a.Rows*a.Heads*hd)
	b.Read(out, a.Out, 0)
	kvHeads := []int{0}
	if a.KVHeads > 1 {
		kvHeads = append(kvHeads, a.KVHeads-1)
	}
	adds := func(r int) bool { return a.Acc != nil && a.QPos[r] >= a.AccFrom }
	for r := range a.Rows {
		if adds(r) {
			accRows++
		}
	}
	sums := accRows > 0 && accRows <= accCheckRows // the sums are checked
	// What the run added to the sums: Acc's values, less what they held
	// before where the backend adds to them (not under AccZero); a query
	// head's own slice, or under AccGroup its KV head's, holding the sum of
	// the group's probabilities.
	added := func(i int, t int32) float64 {
		v := float64(a.Acc[i][t])
		if !a.AccZero {
			v -= float64(before[i][t])
		}
		return v
	}
	if accRows > accCheckRows {
		total := 0.0
		for i := range a.Acc {
			for t := range a.Seqs[i*a.KVHeads/len(a.Acc)].N {
				total += added(i, int32(t))
			}
		}
		accWorst = math.Abs(total/float64(accRows*a.Heads) - 1)
		if math.IsNaN(accWorst) {
			accWorst = math.Inf(1)
		}
	}
	for _, g := range kvHeads {
		seq := &a.Seqs[g]
		groupProbs := map[int32]float64{} // token -> the group's probabilities (AccGroup)
		for h := g * group; h < (g+1)*group; h++ {
			toks := st.tokens(h)
			headProbs := map[int32]float64{}
			for r := range a.Rows {
				check, add := checkRows(r, a.Rows), sums && adds(r)
				if !check && !add {
					continue
				}
				ref, probs := refAttend(d, a, h, r, seq, toks)
				if check {
					var m, e float64
					for c := range hd {
						m = max(m, math.Abs(ref[c]))
						e = max(e, math.Abs(float64(out[(r*a.Heads+h)*hd+c])-ref[c]))
					}
					if math.IsNaN(e) {
						e = math.Inf(1)
					}
					worst = max(worst, e/max(m, 1e-30))
				}
				if !add {
					continue
				}
				for i, t := range toks {
					if a.AccGroup {
						groupProbs[t] += probs[i]
					} else {
						headProbs[t] += probs[i]
					}
				}
			}
			for t, p := range headProbs {
				accWorst = max(accWorst, math.Abs(added(h, t)-p))
			}
		}
		for t, p := range groupProbs {
			accWorst = max(accWorst, math.Abs(added(g, t)-p))
		}
	}
	return worst, accWorst, accRows
}

// refAttend is query head h's attention in row r of a over tokens toks of
// seq in float64, from the host copies: the row's query is row r of the
// queries; the keys and values of the token at position p are row rowOf(p)
// of the KV block rounded to bf16; a key after the row's position is
// masked; a re-positioned key (KVSeq.Shift with AttnArgs.QShift) is scored
// against the query rotated by its shift minus the row's. It returns the
// output and each token's probability.
func refAttend(d *cellData, a *runtime.AttnArgs, h, r int, seq *runtime.KVSeq, toks []int32) ([]float64, []float64) {
	hd, g := a.HeadDim, h/(a.Heads/a.KVHeads)
	kvDim := a.KVHeads * hd
	q := make([]float64, hd)
	for c := range q {
		q[c] = float64(d.hq[(r*a.Heads+h)*hd+c])
	}
	row := func(src []float32, t int32) []float64 {
		p := d.rowOf(int(seq.Pos[t]))
		v := make([]float64, hd)
		for c := range v {
			v[c] = cuda.BF16Float64(cuda.BF16(src[p*kvDim+g*hd+c]))
		}
		return v
	}
	scores := make([]float64, len(toks))
	m := math.Inf(-1)
	for i, t := range toks {
		qq := q
		if a.QShift != nil && seq.Shift != nil {
			if dd := int(seq.Shift[t]) - a.QShift[r]; dd != 0 {
				qq = rotate(q, dd, a)
			}
		}
		k := row(d.hk, t)
		s := 0.0
		for c := range k {
			s += qq[c] * k[c]
		}
		scores[i] = s * float64(a.Scale)
		if int(seq.Pos[t]) > a.QPos[r] {
			scores[i] = math.Inf(-1)
		}
		m = max(m, scores[i])
	}
	out := make([]float64, hd)
	probs := make([]float64, len(toks))
	if math.IsInf(m, -1) {
		return out, probs
	}
	sum := 0.0
	for i := range scores {
		probs[i] = math.Exp(scores[i] - m)
		sum += probs[i]
	}
	for i, t := range toks {
		probs[i] /= sum
		v := row(d.hv, t)
		for c := range out {
			out[c] += probs[i] * v[c]
		}
	}
	return out, probs
}

// rotate returns q turned by RoPE over dd positions (a's style and base;
// the angle in float32 as the runtime computes it).
func rotate(q []float64, dd int, a *runtime.AttnArgs) []float64 {
	hd := len(q)
	r := slices.Clone(q)
	for i := range hd / 2 {
		inv := float32(1 / math.Pow(a.Theta, float64(2*i)/float64(hd)))
		if a.InvFreq != nil {
			inv = a.InvFreq[i]
		}
		ang := float64(float32(dd) * inv)
		c, s := math.Cos(ang), math.Sin(ang)
		ia, ib := i, i+hd/2
		if a.Rope == runtime.RopeInterleaved {
			ia, ib = 2*i, 2*i+1
		}
		r[ia] = q[ia]*c - q[ib]*s
		r[ib] = q[ib]*c + q[ia]*s
	}
	return r
}
