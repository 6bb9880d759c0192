package policies

import (
	"fmt"
	"slices"

	"github.com/kvbench/kvbench/runtime"
)

// oracle attends, at every decode step and for every query head, to the
// budget cached tokens with the highest exact q·k, computed over the whole
// cache (runtime.Scorer.QK). The newest token is attended only if it ranks.
// Ties go to the lower index. Nothing is evicted and a prompt (every chunk,
// a one-row last chunk included) attends in full. No real system can choose
// this cheaply: it bounds what any selection policy of the same budget can
// reach.
//
// Bytes read count the selected tokens only (the union over a KV head's
// query heads); the full key scan the choice needs is not counted as
// metadata, so that the figure is what a perfect selector of that budget
// would load.
type oracle struct {
	base
	scorer runtime.Scorer
	sel    [][]int32   // [heads] attention's selection, reused
	scores [][]float32 // [heads] q·k of every token
	idx    []int32     // scratch: candidate indices
}

func init() {
	Register(Spec{Name: "oracle", Doc: "attends to the `budget` keys of highest exact q·k per query head (an upper bound)",
		Params: knobDocs("tokens attended per query head; the cache keeps every token"),
		New: func(p Params) (Policy, error) {
			rd := newReader("oracle", p)
			k := rd.knob(1)
			out, err := rd.done()
			if err != nil {
				return nil, err
			}
			b := 256
			if k.tokens() {
				b = k.budget
			}
			pol := &oracle{base: base{name: "oracle", params: out, budget: b}}
			if k.share() {
				pol.ratioBudget(fmt.Sprintf("ratio %v", k.ratio), []string{"budget"}, pol.shareOf(k.ratio, func(kept, n int) error {
					pol.budget = kept
					return nil
				}))
			} else {
				out["budget"] = b
			}
			return pol, nil
		}})
}

// LayerBudget: the cache is unbounded, budget tokens attended.
func (p *oracle) LayerBudget(l int) (hold, attend int) { return 0, p.budget }

func (p *oracle) Start(r *runtime.Runner) error {
	sc, err := needScorer(p.name, r)
	if err != nil {
		return err
	}
	p.scorer = sc
	return p.bind(r, p)
}

func (p *oracle) BeforeAttend(l int, a *runtime.AttnArgs) {
	if p.idle() {
		return
	}
	p.begin(l, a)
	if p.decode {
		p.choose(a)
	}
	p.finish(l, a, 0)
}

func (p *oracle) AfterAttend(l int, a *runtime.AttnArgs) {
	if p.idle() {
		return
	}
	p.end(l, a)
}

// choose sets a.Sel[h] to the budget best tokens of each query head whose KV
// head holds more than budget tokens.
func (p *oracle) choose(a *runtime.AttnArgs) {
	if len(p.sel) < a.Heads {
		p.sel = make([][]int32, a.Heads)
		p.scores = make([][]float32, a.Heads)
	}
	group := a.Heads / a.KVHeads
	some := false
	for h := 0; h < a.Heads; h++ {
		n := a.Seqs[h/group].N
		if n <= p.budget {
			p.sel[h] = nil
			continue
		}
		some = true
		sc := growF32(p.scores[h], n)
		p.scores[h] = sc
		p.scorer.QK(a, 0, h, sc)
		p.idx = slices.Grow(p.idx[:0], n)[:n]
		for t := range p.idx {
			p.idx[t] = int32(t)
		}
		topK(p.idx, sc, p.budget)
		s := append(p.sel[h][:0], p.idx[:p.budget]...)
		slices.Sort(s)
		p.sel[h] = s
	}
	if some {
		a.Sel = p.sel[:a.Heads]
	} else {
		a.Sel = nil
	}
}

// needScorer returns the runner's backend as a runtime.Scorer, or an error
// naming the backend.
func needScorer(policy string, r *runtime.Runner) (runtime.Scorer, error) {
	sc, ok := r.Backend.(runtime.Scorer)
	if !ok {
		return nil, fmt.Errorf("policy %s: backend %s (%s) does not implement runtime.Scorer (QK, KeyBounds), which the policy needs",
			policy, r.Backend.Name(), r.Backend.Device())
	}
	return sc, nil
}

// growF32 returns b resized to n, reallocated (with room to grow) only when
// its capacity is short.
func growF32(b []float32, n int) []float32 {
	if cap(b) < n {
		b = make([]float32, n, n+n/4+64)
	}
	return b[:n]
}

// topK reorders idx so that its first k entries are the k best by score
// (higher first, ties to the lower index), in no particular order: a
// quickselect with a median-of-three pivot, in place, without allocating.
func topK[S float32 | float64](idx []int32, score []S, k int) {
	// better reports whether index x ranks before index y.
	better := func(x, y int32) bool {
		if score[x] != score[y] {
			return score[x] > score[y]
		}
		return x < y
	}
	lo, hi := 0, len(idx)-1
	if k <= 0 || k >= len(idx) {
		return
	}
	for lo < hi {
		// Median of three moved to hi as the pivot.
		mid := lo + (hi-lo)/2
		if better(idx[mid], idx[lo]) {
			idx[mid], idx[lo] = idx[lo], idx[mid]
		}
		if better(idx[hi], idx[lo]) {
			idx[hi], idx[lo] = idx[lo], idx[hi]
		}
		if better(idx[mid], idx[hi]) {
			idx[mid], idx[hi] = idx[hi], idx[mid]
		}
		pivot := idx[hi]
		s := lo
		for i := lo; i < hi; i++ {
			if better(idx[i], pivot) {
				idx[s], idx[i] = idx[i], idx[s]
				s++
			}
		}
		idx[s], idx[hi] = idx[hi], idx[s]
		// idx[lo:s] rank before the pivot, now at s.
		switch {
		case s == k || s == k-1:
			return
		case s > k:
			hi = s - 1
		default:
			lo = s + 1
		}
	}
}
