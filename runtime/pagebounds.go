package runtime

import (
	"fmt"
	"slices"
)

// NewHostPageBounds returns PageBounds kept in host memory: the bounds of
// new tokens come from sc.KeyBounds (sc is usually be itself), the query
// from be.Read, and pages are scored on the host. It serves backends with a
// Scorer but no PageScorer, and is the CPU backend's PageScorer.
func NewHostPageBounds(be Backend, sc Scorer, kvHeads, headDim, page int) PageBounds {
	if kvHeads <= 0 || headDim <= 0 || page <= 0 {
		panic(fmt.Sprintf("runtime: NewHostPageBounds(%d kv heads, head dim %d, page %d)", kvHeads, headDim, page))
	}
	return &hostPageBounds{be: be, sc: sc, hd: headDim, page: page, heads: make([]hostBounds, kvHeads)}
}

// hostPageBounds is PageBounds in host slices.
type hostPageBounds struct {
	be       Backend
	sc       Scorer
	hd, page int
	heads    []hostBounds // [kvHeads]
	tlo, thi []float32    // [headDim] bounds of new tokens of a partial page
	q        []float32    // [heads*headDim] query row 0
}

// hostBounds are one KV head's bounds: page p's minimum and maximum in lo
// and hi [p*headDim, (p+1)*headDim).
type hostBounds struct {
	lo, hi []float32
	n      int // tokens folded in
}

func (b *hostPageBounds) Extend(seqs []KVSeq) {
	if len(seqs) != len(b.heads) {
		panic(fmt.Sprintf("runtime: PageBounds.Extend with %d sequences for %d kv heads", len(seqs), len(b.heads)))
	}
	hd, page := b.hd, b.page
	if len(b.tlo) < hd {
		b.tlo, b.thi = make([]float32, hd), make([]float32, hd)
	}
	for g := range seqs {
		s, h := &seqs[g], &b.heads[g]
		if s.N < h.n { // the sequence shrank behind the bounds: rebuild
			h.lo, h.hi, h.n = h.lo[:0], h.hi[:0], 0
		}
		for h.n < s.N {
			pg := h.n / page
			t1 := min(s.N, (pg+1)*page)
			if h.n == pg*page { // a new page
				h.lo = slices.Grow(h.lo, hd)[:(pg+1)*hd]
				h.hi = slices.Grow(h.hi, hd)[:(pg+1)*hd]
				b.sc.KeyBounds(s, h.n, t1, h.lo[pg*hd:(pg+1)*hd], h.hi[pg*hd:(pg+1)*hd])
			} else {
				b.sc.KeyBounds(s, h.n, t1, b.tlo[:hd], b.thi[:hd])
				lo, hi := h.lo[pg*hd:(pg+1)*hd], h.hi[pg*hd:(pg+1)*hd]
				for i := range lo {
					lo[i] = min(lo[i], b.tlo[i])
					hi[i] = max(hi[i], b.thi[i])
				}
			}
			h.n = t1
		}
	}
}

func (b *hostPageBounds) Score(a *AttnArgs, out [][]float64) {
	hd := b.hd
	if a.KVHeads != len(b.heads) || a.HeadDim != hd || len(out) != a.Heads || a.Heads%a.KVHeads != 0 {
		panic(fmt.Sprintf("runtime: PageBounds.Score with %d heads, %d kv heads, head dim %d, %d outputs; bounds of %d kv heads, head dim %d",
			a.Heads, a.KVHeads, a.HeadDim, len(out), len(b.heads), hd))
	}
	group := a.Heads / a.KVHeads
	some := false
	for h, o := range out {
		if len(o) == 0 {
			continue
		}
		if pages := (b.heads[h/group].n + b.page - 1) / b.page; len(o) != pages {
			panic(fmt.Sprintf("runtime: PageBounds.Score head %d: %d outputs for %d pages", h, len(o), pages))
		}
		some = true
	}
	if !some {
		return
	}
	if cap(b.q) < a.Heads*hd {
		b.q = make([]float32, a.Heads*hd)
	}
	b.q = b.q[:a.Heads*hd]
	b.be.Read(b.q, a.Q, 0)
	for h, o := range out {
		hb := &b.heads[h/group]
		q := b.q[h*hd : (h+1)*hd]
		for pg := range o {
			lo, hi := hb.lo[pg*hd:(pg+1)*hd], hb.hi[pg*hd:(pg+1)*hd]
			var sum float64
			for i, qi := range q {
				x := float64(qi)
				sum += max(x*float64(lo[i]), x*float64(hi[i]))
			}
			o[pg] = sum
		}
	}
}

func (b *hostPageBounds) Reset() {
	for g := range b.heads {
		h := &b.heads[g]
		h.lo, h.hi, h.n = h.lo[:0], h.hi[:0], 0
	}
}

func (b *hostPageBounds) Free() {
	b.heads, b.tlo, b.thi, b.q = nil, nil, nil, nil
}

// RefPageScores is the brute force of PageBounds.Score for one query head q
// [hd] over the keys [n*hd] of its KV head: each page's per-channel minimum
// and maximum recomputed from its keys, then the score summed in float64 in
// channel order. Tests compare the implementations with it.
func RefPageScores(q, keys []float32, n, hd, page int) []float64 {
	out := make([]float64, (n+page-1)/page)
	for pg := range out {
		t0, t1 := pg*page, min(n, (pg+1)*page)
		var sum float64
		for i := 0; i < hd; i++ {
			lo, hi := keys[t0*hd+i], keys[t0*hd+i]
			for t := t0 + 1; t < t1; t++ {
				lo, hi = min(lo, keys[t*hd+i]), max(hi, keys[t*hd+i])
			}
			x := float64(q[i])
			sum += max(x*float64(lo), x*float64(hi))
		}
		out[pg] = sum
	}
	return out
}
