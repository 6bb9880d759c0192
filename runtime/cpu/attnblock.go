package cpu

import "github.com/kvbench/kvbench/runtime"

// A prompt's query rows that share a KV head read the same keys and values.
// Taken a (row, head) pair at a time, each pair streams its KV head's whole
// cache from the last-level cache (a 2,048-token head of 64 floats is
// 0.5 MB of keys and as much of values: two heads overflow a core's L2);
// taken a block of pairs at a time, a page is read once into L1 and scored
// (then summed) for every pair of the block. Each pair sees the same
// operations in the same order as alone (one): only the loops are swapped,
// so the results are bit for bit the same.

// blockRows is the most query rows a block holds, blockLanes the most
// (row, head) pairs: their scores, a pair's for every cached token, stay
// within a core's L2 at the lengths a CPU runs.
const blockRows, blockLanes = 8, 32

// plan sets the job's items: blocks of rows and heads where every pair may
// take the page-major path (no selection or re-positioned keys, heads a
// multiple of 32 wide; a decode step's single row where a KV head serves
// several query heads), else a pair each (a head each with Acc, its rows
// in order).
func (j *attnJob) plan() {
	a := j.a
	group := a.Heads / a.KVHeads
	j.blocked = pageKernels && a.Sel == nil && !(a.QShift != nil && anyShift(a.Seqs)) &&
		a.HeadDim%32 == 0 && a.HeadDim >= smallHead && (a.Rows > 1 || group > 1 && a.Acc == nil)
	switch {
	case j.blocked && j.byHead: // Acc: an item a head, its rows in blocks, in order
		j.rows, j.heads = min(a.Rows, blockRows), 1
		j.items = a.Heads
	case j.blocked:
		j.heads = group // a KV head's group together, or one head at a time where it is wide
		if group > blockLanes/2 {
			j.heads = 1
		}
		j.rows = min(a.Rows, blockRows, blockLanes/j.heads)
		j.items = a.Heads / j.heads * ((a.Rows + j.rows - 1) / j.rows)
	case j.byHead:
		j.rows, j.heads, j.items = 1, 1, a.Heads
	default:
		j.rows, j.heads, j.items = 1, 1, a.Rows*a.Heads
	}
	j.lanes = j.rows * j.heads
}

// anyShift reports whether any sequence holds re-positioned keys.
func anyShift(seqs []runtime.KVSeq) bool {
	for i := range seqs {
		if seqs[i].Shift != nil {
			return true
		}
	}
	return false
}

func (j *attnJob) run(w, lo, hi int) {
	a := j.a
	for it := lo; it < hi; it++ {
		switch {
		case j.blocked && j.byHead:
			for r0 := 0; r0 < a.Rows; r0 += j.rows {
				j.block(w, r0, min(r0+j.rows, a.Rows), it, it+1)
			}
		case j.blocked:
			nb := (a.Rows + j.rows - 1) / j.rows
			hb, rb := it/nb, it%nb // the block's heads, then its rows: blocks of a KV head are neighbours
			r0 := rb * j.rows
			j.block(w, r0, min(r0+j.rows, a.Rows), hb*j.heads, (hb+1)*j.heads)
		case j.byHead:
			for r := 0; r < a.Rows; r++ {
				j.one(w, r, it)
			}
		default:
			j.one(w, it/a.Heads, it%a.Heads)
		}
	}
}

// block computes attention of query rows [r0, r1) and heads [h0, h1) (one
// KV head's) a page at a time: every pair's scores of a page, then, after
// each pair's softmax, every pair's weighted value rows of a page.
func (j *attnJob) block(w, r0, r1, h0, h1 int) {
	a := j.a
	hd, group := a.HeadDim, a.Heads/a.KVHeads
	seq := &a.Seqs[h0/group]
	n := seq.N
	type lane struct {
		r, h       int
		q, out, sc []float32
		qpos, lo   int32
		max        float32
	}
	var ls [blockLanes]lane
	lanes := ls[:0]
	sc := j.scratch[w]
	for r := r0; r < r1; r++ {
		qpos := int32(a.QPos[r])
		for h := h0; h < h1; h++ {
			i := len(lanes)
			lanes = append(lanes, lane{r: r, h: h, qpos: qpos, lo: windowStart(a, qpos), max: negInf,
				q:   j.q[(r*a.Heads+h)*hd : (r*a.Heads+h+1)*hd],
				out: j.out[(r*a.Heads+h)*hd : (r*a.Heads+h+1)*hd],
				sc:  sc[i*n : (i+1)*n]})
		}
	}
	for p, base := 0, 0; base < n; p, base = p+1, base+seq.PageSize {
		keys, end := vec(seq.K[p]), min(base+seq.PageSize, n)
		pos := seq.Pos[base:end]
		for i := range lanes {
			l := &lanes[i]
			l.max = max(l.max, pageScores(l.sc[base:end], l.q, keys, pos, a.Scale, l.lo, l.qpos))
		}
	}
	for i := range lanes {
		l := &lanes[i]
		clear(l.out)
		if l.max != negInf {
			l.max = 1 / expNegSum(l.sc, l.max) // from here on, the sum's inverse
		}
	}
	for p, base := 0, 0; base < n; p, base = p+1, base+seq.PageSize {
		vals, end := vec(seq.V[p]), min(base+seq.PageSize, n)
		for i := range lanes {
			if l := &lanes[i]; l.max != negInf {
				axpyRows(l.out, l.sc[base:end], vals, hd)
			}
		}
	}
	for i := range lanes {
		l := &lanes[i]
		if l.max == negInf {
			continue // nothing visible: the output stays zero
		}
		inv := l.max
		for k := range l.out {
			l.out[k] *= inv
		}
		if a.Acc != nil && int(l.qpos) >= a.AccFrom {
			acc := a.Acc[l.h]
			for t, e := range l.sc {
				acc[t] += e * inv
			}
		}
		if a.Recall != nil {
			a.Recall[l.r*a.Heads+l.h] = j.recall(w, l.q, l.qpos, &a.Ref[l.h/group], seq, nil)
		}
	}
}
