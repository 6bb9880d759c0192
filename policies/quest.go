package policies

import (
	"slices"

	"github.com/kvbench/kvbench/runtime"
)

// quest is query-aware page selection (Quest, Tang et al. 2024; reference
// mit-han-lab/Quest). Each KV head's cache is split into logical pages of
// page tokens by index (nothing is evicted, so index order is position
// order); for every page the policy keeps the per-channel minimum m and
// maximum M of its keys, extended as tokens are appended (only the last,
// partial page changes: its bounds grow by runtime.Scorer.KeyBounds over the
// new tokens).
//
// At each decode step, in layers from dense_layers on, every query head
// scores each page by sum_i max(q_i m_i, q_i M_i) — an upper bound on q·k for
// any key of the page — and attends exactly over the top K = max(1,
// budget/page) pages, the current last page always among them (when it does
// not rank it replaces the lowest). Ties go to the lower page. With at most K
// pages every token is attended. The first dense_layers layers and prompt
// chunks attend in full.
//
// Bytes read per step are the page bounds scored (2 vectors per page of each
// scored KV head) plus the selected tokens; resident memory is the whole
// cache. Scores are summed in float64 (products of float32 are exact there).
type quest struct {
	base
	page, dense, k int
	scorer         runtime.Scorer
	bounds         [][]questBounds // [layer][kvHead], for layers >= dense
	q              []float32       // [heads*headDim] the query of the step
	score          []float64       // [pages] page scores of one head
	idx            []int32         // scratch: candidate pages
	sel            [][]int32       // [heads] attention's selection, reused
	tlo, thi       []float32       // scratch: bounds of new tokens
}

// questBounds are the key bounds of one layer and KV head: page p's minimum
// and maximum in lo and hi [p*headDim, (p+1)*headDim).
type questBounds struct {
	lo, hi []float32
	n      int // tokens folded in
}

func init() {
	Register(Spec{Name: "quest", Doc: "query-aware selection of the top pages by a key-bound upper bound on q·k (Quest)",
		Params: []ParamDoc{{"budget", "", "tokens attended per query head"}, {"page", "16", "tokens per page"},
			{"dense_layers", "2", "first layers attending in full"}},
		New: func(p Params) (Policy, error) {
			rd := newReader("quest", p)
			b := rd.Int("budget", 0, 1, 1<<30)
			pg := rd.Int("page", 16, 1, 1<<20)
			d := rd.Int("dense_layers", 2, 0, 1<<20)
			out, err := rd.done()
			if err != nil {
				return nil, err
			}
			return &quest{base: base{name: "quest", params: out, budget: b}, page: pg, dense: d, k: max(1, b/pg)}, nil
		}})
}

// LayerBudget: the cache is unbounded; sparse layers attend at most K pages.
func (p *quest) LayerBudget(l int) (hold, attend int) {
	if l < p.dense {
		return 0, 0
	}
	return 0, p.k * p.page
}

func (p *quest) Start(r *runtime.Runner) error {
	sc, err := needScorer(p.name, r)
	if err != nil {
		return err
	}
	p.scorer = sc
	if err := p.bind(r, p); err != nil {
		return err
	}
	c := r.Model.Config
	if len(p.bounds) != c.Layers {
		p.bounds = make([][]questBounds, c.Layers)
	}
	for l := range p.bounds {
		if len(p.bounds[l]) != c.KVHeads {
			p.bounds[l] = make([]questBounds, c.KVHeads)
		}
		for g := range p.bounds[l] {
			b := &p.bounds[l][g]
			b.lo, b.hi, b.n = b.lo[:0], b.hi[:0], 0
		}
	}
	return nil
}

func (p *quest) BeforeAttend(l int, a *runtime.AttnArgs) {
	p.begin(l, a)
	var meta int64
	if l >= p.dense {
		p.extend(l, a)
		if a.Rows == 1 {
			meta = p.choose(l, a)
		}
	}
	p.finish(l, a, meta)
}

func (p *quest) AfterAttend(l int, a *runtime.AttnArgs) { p.end(l, a) }

// extend folds the tokens appended since the last call into the bounds of
// layer l: only pages from the last partial one on change.
func (p *quest) extend(l int, a *runtime.AttnArgs) {
	hd := a.HeadDim
	p.tlo, p.thi = growF32(p.tlo, hd), growF32(p.thi, hd)
	for g := range a.Seqs {
		s, b := &a.Seqs[g], &p.bounds[l][g]
		if s.N < b.n { // the cache shrank behind the policy: rebuild
			b.lo, b.hi, b.n = b.lo[:0], b.hi[:0], 0
		}
		for b.n < s.N {
			pg := b.n / p.page
			t1 := min(s.N, (pg+1)*p.page)
			if b.n == pg*p.page { // a new page
				b.lo = slices.Grow(b.lo, hd)[:(pg+1)*hd]
				b.hi = slices.Grow(b.hi, hd)[:(pg+1)*hd]
				p.scorer.KeyBounds(s, b.n, t1, b.lo[pg*hd:(pg+1)*hd], b.hi[pg*hd:(pg+1)*hd])
			} else {
				p.scorer.KeyBounds(s, b.n, t1, p.tlo, p.thi)
				lo, hi := b.lo[pg*hd:(pg+1)*hd], b.hi[pg*hd:(pg+1)*hd]
				for i := range lo {
					lo[i] = min(lo[i], p.tlo[i])
					hi[i] = max(hi[i], p.thi[i])
				}
			}
			b.n = t1
		}
	}
}

// choose sets a.Sel for a decode step of layer l and returns the bytes of
// page bounds it read.
func (p *quest) choose(l int, a *runtime.AttnArgs) int64 {
	hd, group := a.HeadDim, a.Heads/a.KVHeads
	if len(p.sel) < a.Heads {
		p.sel = make([][]int32, a.Heads)
	}
	p.q = growF32(p.q, a.Heads*hd)
	p.r.Backend.Read(p.q, a.Q, 0)
	var meta int64
	some := false
	for g := range a.Seqs {
		s, b := &a.Seqs[g], &p.bounds[l][g]
		pages := (s.N + p.page - 1) / p.page
		if pages <= p.k {
			for h := g * group; h < (g+1)*group; h++ {
				p.sel[h] = nil
			}
			continue
		}
		some = true
		meta += int64(pages) * 2 * p.vecBytes()
		if cap(p.score) < pages {
			p.score = make([]float64, pages, pages+pages/4+64)
		}
		score := p.score[:pages]
		for h := g * group; h < (g+1)*group; h++ {
			q := p.q[h*hd : (h+1)*hd]
			for pg := range score {
				lo, hi := b.lo[pg*hd:(pg+1)*hd], b.hi[pg*hd:(pg+1)*hd]
				var sum float64
				for i, qi := range q {
					x := float64(qi)
					sum += max(x*float64(lo[i]), x*float64(hi[i]))
				}
				score[pg] = sum
			}
			// The last page, plus the best K-1 of the others.
			p.idx = slices.Grow(p.idx[:0], pages)[:pages-1]
			for i := range p.idx {
				p.idx[i] = int32(i)
			}
			topK(p.idx, score, p.k-1)
			chosen := append(p.idx[:p.k-1], int32(pages-1))
			slices.Sort(chosen)
			sel := p.sel[h][:0]
			for _, pg := range chosen {
				for t := int(pg) * p.page; t < min(s.N, (int(pg)+1)*p.page); t++ {
					sel = append(sel, int32(t))
				}
			}
			p.sel[h] = sel
		}
	}
	if some {
		a.Sel = p.sel[:a.Heads]
	} else {
		a.Sel = nil
	}
	return meta
}
