package cpu

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"time"

	"github.com/kvbench/kvbench/runtime"
)

// SlowdownEnv names a test-only knob: KVBENCH_TEST_ATTN_SLOWDOWN=1.25 makes
// every Attend take 1.25 times as long, by spinning on the core after the
// real work for the extra share of the time it took. It exists to prove that
// the regression gate (kvbench compare) catches a slower attention kernel;
// never set it for measurements. A value that is not a number >= 1 makes
// Attend panic with the variable named (a cell run by the runner records it
// as its failure).
const SlowdownEnv = "KVBENCH_TEST_ATTN_SLOWDOWN"

// attnSlowdown is the factor of SlowdownEnv (1: none), or the error of its
// value.
var attnSlowdown, attnSlowdownErr = parseSlowdown(os.Getenv(SlowdownEnv))

func parseSlowdown(v string) (float64, error) {
	if v == "" {
		return 1, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f >= 1) || math.IsInf(f, 0) {
		return 1, fmt.Errorf("cpu: %s=%q: want a slowdown factor >= 1 (test only)", SlowdownEnv, v)
	}
	return f, nil
}

// spinUntil busy-waits until time.Since(t0) reaches d: the extra time of the
// slowdown knob, spent on the core like real work.
func spinUntil(t0 time.Time, d time.Duration) {
	for time.Since(t0) < d {
	}
}

// attnJob computes attention for (row, head) items in parallel.
type attnJob struct {
	a       *runtime.AttnArgs
	q, out  []float32
	byHead  bool // items are heads (each looping over rows): Acc is written
	blocked bool // items are blocks of query rows and heads of one KV head, a page at a time
	rows    int  // query rows an item's block holds (blocked)
	heads   int  // query heads an item's block holds (blocked): a KV head's group, or one
	lanes   int  // rows x heads: the (row, head) pairs of a block
	items   int
	scratch [][]float32 // per worker: scores (a block's lanes' one after another)
	full    [][]float32 // per worker: full-attention scores for recall
	qrot    [][]float32 // per worker: the query rotated for shifted keys
	invFreq []float32   // RoPE inverse frequencies, for shifts
}

var negInf = float32(math.Inf(-1))

// pageKernels: Attend forms a page's scores and value sums in one call
// each (dotRows, axpyRows) where a head's rows are whole multiples of 32
// elements; false (tests) takes the call a token (dotHead, axpyHead) that
// they match bit for bit.
var pageKernels = true

// Attend computes softmax(q·K^T·scale) V for every query row and head over
// the cached tokens of its KV head at positions <= the row's position, with
// the policy options of a (selection, shifts, accumulation, recall).
func (b *Backend) Attend(a *runtime.AttnArgs) {
	if a.KVHeads <= 0 || a.Heads%a.KVHeads != 0 || len(a.Seqs) != a.KVHeads {
		panic(fmt.Sprintf("cpu: Attend with %d heads, %d kv heads, %d sequences", a.Heads, a.KVHeads, len(a.Seqs)))
	}
	if attnSlowdownErr != nil {
		panic(attnSlowdownErr)
	}
	if attnSlowdown > 1 {
		t0 := time.Now()
		defer func() { spinUntil(t0, time.Duration(attnSlowdown*float64(time.Since(t0)))) }()
	}
	j := &b.att
	longest := 0
	for i := range a.Seqs {
		longest = max(longest, a.Seqs[i].N)
	}
	refLongest := 0
	for i := range a.Ref {
		refLongest = max(refLongest, a.Ref[i].N)
	}
	grow := func(bufs [][]float32, n int) {
		for w := range bufs {
			if cap(bufs[w]) < n {
				bufs[w] = make([]float32, n+n/4+64)
			}
		}
	}
	if j.full == nil {
		j.full = make([][]float32, len(j.scratch))
		j.qrot = make([][]float32, len(j.scratch))
	}
	grow(j.full, refLongest)
	grow(j.qrot, a.HeadDim)
	if a.QShift != nil {
		if a.InvFreq != nil {
			j.invFreq = append(j.invFreq[:0], a.InvFreq[:a.HeadDim/2]...)
		} else {
			j.invFreq = baseInvFreq(j.invFreq[:0], a.Theta, a.HeadDim)
		}
	}
	j.a, j.q, j.out = a, vec(a.Q), vec(a.Out)
	j.byHead = a.Acc != nil
	if a.Acc != nil && a.AccZero { // the sums start from zero, whatever Acc holds
		group := a.Heads / a.KVHeads
		for h := range a.Heads {
			clear(a.Acc[h][:a.Seqs[h/group].N])
		}
	}
	j.plan()
	grow(j.scratch, j.lanes*longest)
	grain := max(1, (1<<14)/max(1, longest*a.HeadDim*j.lanes))
	b.pool.run(j, j.items, grain)
}

// key returns token t's key (or value) in pages.
func tokenVec(pages []runtime.Buffer, pageSize, hd, t int) []float32 {
	return vec(pages[t/pageSize])[(t%pageSize)*hd : (t%pageSize+1)*hd]
}

// one computes attention of query row r, head h.
func (j *attnJob) one(w, r, h int) {
	a := j.a
	hd, group := a.HeadDim, a.Heads/a.KVHeads
	seq := &a.Seqs[h/group]
	q := j.q[(r*a.Heads+h)*hd : (r*a.Heads+h+1)*hd]
	out := j.out[(r*a.Heads+h)*hd : (r*a.Heads+h+1)*hd]
	qpos := int32(a.QPos[r])
	lo := windowStart(a, qpos) // keys at positions <= lo are outside the model's window
	var sel []int32
	if a.Sel != nil {
		sel = a.Sel[h]
	}
	count := seq.N
	if sel != nil {
		count = len(sel)
	}
	sc := j.scratch[w][:count]
	shifted := seq.Shift != nil && a.QShift != nil
	qr, curShift := q, int32(0)
	if shifted {
		qr = j.qrot[w][:hd]
		copy(qr, q)
	}

	// Scores, with the causal mask by position.
	maxs := negInf
	if sel == nil && !shifted {
		for p := range seq.K {
			keys := vec(seq.K[p])
			base := p * seq.PageSize
			n := min(seq.PageSize, seq.N-base)
			pos := seq.Pos[base : base+n]
			out := sc[base : base+n]
			if hd < smallHead {
				// Small heads: the dot product inline, no call per token.
				for s := range out {
					if pos[s] > qpos || pos[s] <= lo {
						out[s] = negInf
						continue
					}
					k := keys[s*hd : (s+1)*hd]
					k = k[:len(q)]
					var v float32
					for i, x := range q {
						v += x * k[i]
					}
					v *= a.Scale
					out[s] = v
					if v > maxs {
						maxs = v
					}
				}
				continue
			}
			if pageKernels && hd%32 == 0 { // a page's scores in one call (dotRows)
				maxs = max(maxs, pageScores(out, q, keys, pos, a.Scale, lo, qpos))
				continue
			}
			for s := range out {
				if pos[s] > qpos || pos[s] <= lo {
					out[s] = negInf
					continue
				}
				v := dotHead(q, keys[s*hd:(s+1)*hd]) * a.Scale
				out[s] = v
				maxs = max(maxs, v)
			}
		}
	} else if pageKernels && !shifted && hd%32 == 0 {
		// A selection's runs of consecutive tokens of one page in one call
		// each (pageScores).
		ps := seq.PageSize
		for i := 0; i < len(sc); {
			t, e := int(sel[i]), selRun(sel, i, ps)
			maxs = max(maxs, pageScores(sc[i:e], q, vec(seq.K[t/ps])[(t%ps)*hd:], seq.Pos[t:t+e-i], a.Scale, lo, qpos))
			i = e
		}
	} else {
		for i := range sc {
			t := i
			if sel != nil {
				t = int(sel[i])
			}
			if seq.Pos[t] > qpos || seq.Pos[t] <= lo {
				sc[i] = negInf
				continue
			}
			if shifted {
				if d := seq.Shift[t] - int32(a.QShift[r]); d != curShift {
					j.rotate(qr, q, d, a.Rope)
					curShift = d
				}
			}
			v := dotHead(qr, tokenVec(seq.K, seq.PageSize, hd, t)) * a.Scale
			sc[i] = v
			maxs = max(maxs, v)
		}
	}
	clear(out)
	if maxs == negInf {
		return // nothing visible: the output stays zero
	}

	// Softmax weights and the weighted sum of values.
	sum := expNegSum(sc, maxs) // masked tokens (-Inf) give 0
	if sel == nil {
		for p := range seq.V {
			vals := vec(seq.V[p])
			base := p * seq.PageSize
			w := sc[base:min(base+seq.PageSize, seq.N)]
			if pageKernels && hd%32 == 0 {
				axpyRows(out, w, vals, hd) // the page's rows with their weights, as axpyHead adds them
				continue
			}
			for s, e := range w {
				if e != 0 {
					axpyHead(out, e, vals[s*hd:(s+1)*hd])
				}
			}
		}
	} else if pageKernels && hd%32 == 0 {
		ps := seq.PageSize
		for i := 0; i < len(sc); {
			t, e := int(sel[i]), selRun(sel, i, ps)
			axpyRows(out, sc[i:e], vec(seq.V[t/ps])[(t%ps)*hd:], hd)
			i = e
		}
	} else {
		for i, e := range sc {
			if e != 0 {
				axpyHead(out, e, tokenVec(seq.V, seq.PageSize, hd, int(sel[i])))
			}
		}
	}
	inv := 1 / sum
	for i := range out {
		out[i] *= inv
	}
	if a.Acc != nil && int(qpos) >= a.AccFrom {
		acc := a.Acc[h]
		for i, e := range sc {
			t := i
			if sel != nil {
				t = int(sel[i])
			}
			acc[t] += e * inv
		}
	}
	if a.Recall != nil {
		a.Recall[r*a.Heads+h] = j.recall(w, q, qpos, &a.Ref[h/group], seq, sel)
	}
}

// selRun is the end of the run of sel from i on that names consecutive
// tokens of one page of ps tokens: sel[i:selRun] are sel[i], sel[i]+1, ...
func selRun(sel []int32, i, ps int) int {
	page, e := sel[i]/int32(ps), i+1
	for e < len(sel) && sel[e] == sel[e-1]+1 && sel[e]/int32(ps) == page {
		e++
	}
	return e
}

// pageScores writes into out the scores (q·k times scale) of a page's
// keys, one row of keys a slot of out, -Inf where a query at qpos does not
// see the slot's position pos (above qpos, or at most lo), and returns
// their maximum (-Inf: none seen). The rows go through dotRows (with
// pageKernels off, a dotHead call a row: the same sums).
func pageScores(out, q, keys []float32, pos []int32, scale float32, lo, qpos int32) float32 {
	m := negInf
	if !anyVisible(pos, lo, qpos) {
		fillNegInf(out)
		return m
	}
	if pageKernels {
		dotRows(out, q, keys, len(q))
	} else {
		for s := range out {
			out[s] = dotHead(q, keys[s*len(q):])
		}
	}
	for s, v := range out {
		if pos[s] > qpos || pos[s] <= lo {
			out[s] = negInf
			continue
		}
		v *= scale
		out[s] = v
		m = max(m, v)
	}
	return m
}

// seqScores is pageScores over every page of seq: out[t] for its tokens t,
// and their maximum.
func seqScores(out, q []float32, seq *runtime.KVSeq, hd int, scale float32, lo, qpos int32) float32 {
	m := negInf
	for p := range seq.K {
		base := p * seq.PageSize
		if base >= seq.N {
			break
		}
		end := min(base+seq.PageSize, seq.N)
		m = max(m, pageScores(out[base:end], q, vec(seq.K[p])[:(end-base)*hd], seq.Pos[base:end], scale, lo, qpos))
	}
	return m
}

// anyVisible reports whether a query at qpos sees any of the positions
// pos (those above lo and at most qpos).
func anyVisible(pos []int32, lo, qpos int32) bool {
	for _, p := range pos {
		if p <= qpos && p > lo {
			return true
		}
	}
	return false
}

// fillNegInf sets every score of s to -Inf (masked).
func fillNegInf(s []float32) {
	for i := range s {
		s[i] = negInf
	}
}

// windowStart returns the highest key position the model's sliding window
// hides from a query at qpos (keys at positions <= it are masked), or the
// lowest int32 when there is no window.
func windowStart(a *runtime.AttnArgs, qpos int32) int32 {
	if a.Window <= 0 {
		return math.MinInt32
	}
	return int32(max(int64(qpos)-int64(a.Window), math.MinInt32))
}

// AttendsWindow reports that Attend and QK apply AttnArgs.Window.
func (b *Backend) AttendsWindow() bool { return true }

var _ runtime.WindowAttender = (*Backend)(nil)

// rotate writes into dst the query q rotated by d positions.
func (j *attnJob) rotate(dst, q []float32, d int32, style runtime.RopeStyle) {
	half := len(q) / 2
	for i := 0; i < half; i++ {
		ang := float64(float32(d) * j.invFreq[i])
		c, s := float32(math.Cos(ang)), float32(math.Sin(ang))
		ia, ib := i, i+half
		if style == runtime.RopeInterleaved {
			ia, ib = 2*i, 2*i+1
		}
		x, y := q[ia], q[ib]
		dst[ia] = x*c - y*s
		dst[ib] = y*c + x*s
	}
}

// recall returns the share of full attention's probability mass, over the
// reference tokens ref (token p at index p), that falls on the tokens of seq
// the query attends to (sel, or all of seq).
func (j *attnJob) recall(w int, q []float32, qpos int32, ref, seq *runtime.KVSeq, sel []int32) float32 {
	a := j.a
	hd := a.HeadDim
	full := j.full[w][:ref.N]
	lo := windowStart(a, qpos)
	m := seqScores(full, q, ref, hd, a.Scale, lo, qpos)
	if m == negInf {
		return 1
	}
	var total float64
	for t, x := range full {
		if x == negInf {
			full[t] = 0
			continue
		}
		full[t] = expf(x - m)
		total += float64(full[t])
	}
	var part float64
	n := seq.N
	if sel != nil {
		n = len(sel)
	}
	for i := 0; i < n; i++ {
		t := i
		if sel != nil {
			t = int(sel[i])
		}
		if p := int(seq.Pos[t]); p < len(full) && seq.Pos[t] <= qpos && seq.Pos[t] > lo {
			part += float64(full[p])
		}
	}
	return float32(part / total)
}

// smallHead is the head size below which a plain Go loop beats a call into
// the assembly kernels (small models such as stories260K have 8 channels).
const smallHead = 16

// dotHead is one key's score (before scaling) for a query: dotRows' sum
// for a single row, so that every attention score of a head is summed
// alike, page kernels or not, re-positioned keys or not.
func dotHead(a, b []float32) float32 {
	if len(a) < smallHead {
		b = b[:len(a)]
		var s float32
		for i, x := range a {
			s += x * b[i]
		}
		return s
	}
	var out [1]float32
	dotRows(out[:], a, b[:len(a)], len(a))
	return out[0]
}

// axpyHead is axpyF32 for one head's vectors.
func axpyHead(y []float32, a float32, x []float32) {
	if len(y) < smallHead {
		x = x[:len(y)]
		for i := range y {
			y[i] += a * x[i]
		}
		return
	}
	axpyF32(y, a, x)
}
