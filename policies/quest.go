package policies

import (
	"fmt"
	"slices"

	"github.com/kvbench/kvbench/runtime"
)

// quest is query-aware page selection (Quest, Tang et al. 2024; reference
// mit-han-lab/Quest). Each KV head's cache is split into logical pages of
// page tokens by index (nothing is evicted, so index order is position
// order); for every page the policy keeps the per-channel minimum m and
// maximum M of its keys, extended as tokens are appended (only pages from
// the last, partial one on change).
//
// The bounds and the scoring live in a runtime.PageBounds per sparse layer:
// the backend's own (runtime.PageScorer: on the GPU the bounds stay in device
// memory, one launch extends every KV head of a layer, and the scoring and
// the choice below run there too, runtime.PageChooser: no score and no
// selection crosses to the host) or, for a backend with only a
// runtime.Scorer, runtime.NewHostPageBounds (bounds on the host from
// Scorer.KeyBounds, the query read back, scores and choice on the host).
//
// At each decode step, in layers from dense_layers on, every query head
// scores each page by sum_i max(q_i m_i, q_i M_i) — an upper bound on q·k for
// any key of the page — and attends exactly over the top K = max(1,
// budget/page) pages, the current last page always among them (when it does
// not rank it replaces the lowest). Ties go to the lower page. Scores are
// summed in float64 in channel order (products of float32 are exact there),
// so every backend computes the same bits and selects the same pages. With at
// most K pages every token is attended (and nothing is scored). The first
// dense_layers layers attend in full, and so does every row of a prompt,
// under either prefill protocol (a prompt's last chunk may be one row long:
// it is still the prompt, and is not scored): Quest selects in decode only,
// as in the paper.
//
// Bytes read per step are the page bounds scored (2 vectors per page of each
// scored KV head) plus the selected tokens; resident memory is the whole
// cache.
type quest struct {
	base
	page, dense, k int
	bounds         []runtime.PageBounds // [layer], nil for dense layers
	owner          *runtime.Runner      // the runner whose backend holds bounds
	score          [][]float64          // [heads][pages] page scores; empty: not scored
	idx            []int32              // scratch: candidate pages
	sel            [][]int32            // [heads] attention's selection, reused
}

func init() {
	Register(Spec{Name: "quest", Doc: "query-aware selection of the top pages by a key-bound upper bound on q·k (Quest)",
		Params: append(knobDocs("tokens attended per query head in sparse layers (budget/page pages, at least 1); the cache keeps every token"),
			ParamDoc{"page", "16", "tokens per page"},
			ParamDoc{"dense_layers", "2", "first layers attending in full"}),
		New: func(p Params) (Policy, error) {
			rd := newReader("quest", p)
			k := rd.knob(1)
			pg := rd.Int("page", 16, 1, 1<<20)
			d := rd.Int("dense_layers", 2, 0, 1<<20)
			out, err := rd.done()
			if err != nil {
				return nil, err
			}
			b := 256
			if k.tokens() {
				b = k.budget
			}
			pol := &quest{base: base{name: "quest", params: out, budget: b}, page: pg, dense: d, k: max(1, b/pg)}
			if k.share() {
				pol.ratioBudget(fmt.Sprintf("ratio %v", k.ratio), []string{"budget"}, pol.shareOf(k.ratio, func(kept, n int) error {
					pol.budget, pol.k = kept, max(1, kept/pg)
					return nil
				}))
			} else {
				out["budget"] = b
			}
			return pol, nil
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
	ps, native := r.Backend.(runtime.PageScorer)
	var sc runtime.Scorer
	if !native {
		var err error
		if sc, err = needScorer(p.name, r); err != nil {
			return err
		}
	}
	if err := p.bind(r, p); err != nil {
		return err
	}
	c := r.Model.Config
	if p.owner == r && len(p.bounds) == c.Layers {
		for _, b := range p.bounds {
			if b != nil {
				b.Reset()
			}
		}
		return nil
	}
	// A new runner: the bounds held for the last one go back to its backend.
	for _, b := range p.bounds {
		if b != nil {
			b.Free()
		}
	}
	p.owner, p.bounds = r, make([]runtime.PageBounds, c.Layers)
	for l := p.dense; l < c.Layers; l++ {
		if native {
			p.bounds[l] = ps.NewPageBounds(c.KVHeads, c.HeadDim, p.page)
		} else {
			p.bounds[l] = runtime.NewHostPageBounds(r.Backend, sc, c.KVHeads, c.HeadDim, p.page)
		}
	}
	return nil
}

// Release frees the page bounds held on the runner's backend (the engine
// calls it when a stream ends and its runner is kept for the next stream).
func (p *quest) Release() {
	p.settle() // the accounting still reads the last step's selections
	for _, b := range p.bounds {
		if b != nil {
			b.Free()
		}
	}
	p.owner, p.bounds = nil, nil
}

func (p *quest) BeforeAttend(l int, a *runtime.AttnArgs) {
	if p.idle() {
		return
	}
	p.begin(l, a)
	var meta int64
	if l >= p.dense {
		p.bounds[l].Extend(a.Seqs)
		if p.decode {
			meta = p.choose(l, a)
		}
	}
	p.finish(l, a, meta)
}

func (p *quest) AfterAttend(l int, a *runtime.AttnArgs) {
	if p.idle() {
		return
	}
	p.end(l, a)
}

// choose sets a.Sel for a decode step of layer l and returns the bytes of
// page bounds it read.
func (p *quest) choose(l int, a *runtime.AttnArgs) int64 {
	group := a.Heads / a.KVHeads
	if len(p.sel) < a.Heads {
		p.sel = make([][]int32, a.Heads)
		p.score = make([][]float64, a.Heads)
	}
	var meta int64
	some := false
	for g := range a.Seqs {
		pages := (a.Seqs[g].N + p.page - 1) / p.page
		if pages > p.k {
			some = true
			meta += int64(pages) * 2 * p.vecBytes()
		} else {
			pages = 0 // every token attended: not scored
		}
		for h := g * group; h < (g+1)*group; h++ {
			if cap(p.score[h]) < pages {
				p.score[h] = make([]float64, pages, pages+pages/4+64)
			}
			p.score[h] = p.score[h][:pages]
		}
	}
	if !some {
		a.Sel = nil
		return 0
	}
	if pc, ok := p.bounds[l].(runtime.PageChooser); ok {
		pc.Choose(a, p.k) // scores and choice stay on the device (a.Chosen)
		return meta
	}
	p.bounds[l].Score(a, p.score[:a.Heads])
	for h := 0; h < a.Heads; h++ {
		score := p.score[h]
		pages := len(score)
		if pages == 0 {
			p.sel[h] = nil
			continue
		}
		n := a.Seqs[h/group].N
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
			for t := int(pg) * p.page; t < min(n, (int(pg)+1)*p.page); t++ {
				sel = append(sel, int32(t))
			}
		}
		p.sel[h] = sel
	}
	a.Sel = p.sel[:a.Heads]
	return meta
}
