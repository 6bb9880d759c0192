package policies

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"unsafe"

	"github.com/kvbench/kvbench/runtime"
)

// tova is Token Omission Via Attention (TOVA, Oren et al. 2024; reference
// schwartz-lab-NLP/TOVA): whenever a layer holds more than cache tokens, each
// token is scored by the attention probability the current (last) query gives
// it, averaged over all query heads of the layer, and the lowest are evicted,
// the same positions from every KV head. In steady state one token leaves per
// step. There is no sink or recent protection: the newest token may go too.
//
// The choice needs the current query's attention, so a decode step attends to
// cache+1 tokens (the held ones and the new one) and evicts in AfterAttend:
// LayerBudget is (cache, cache+1). A prompt attends causally in full and is
// evicted down to cache after its last row's attention, scored by that row,
// the prompt's last query, as the reference does; under PrefillDense (the
// default) the runner's earlier chunks of a long prompt neither accumulate
// nor evict. Under PrefillChunked every chunk is evicted after its
// attention, scored by its own last row.
//
// The probabilities come from attention itself (runtime.AttnArgs.Acc, from the
// last row only, through AccFrom), one buffer per query head, summed over the
// heads of the layer in float64 and divided by the number of heads. Ties evict
// the older position first (the reference's argmin takes the first index, its
// cache being in position order).
//
// All KV heads of a layer hold the same positions, since the policy evicts the
// same positions from each; it normally finds them at the same indices as
// well (the cache moves tokens the same way in every head), and otherwise
// matches them by position.
type tova struct {
	base
	size    int
	armed   []bool    // [layers] the layer's call was armed (Acc) this forward
	accArms           // the sums asked of attention, a layer's headers each
	avg     []float64 // [tokens] head-averaged probability, by KV head 0's index
	cand    []h2oCand // scratch: tokens ranked for eviction
	idx     [][]int32 // [kvHead] index in head h of KV head 0's token t; nil: the same
	maps    [][]int32 // [kvHead] storage of idx
	drops   [][]int32 // [kvHead] indices to evict
	ord0    []int32   // scratch for matching positions
	ordH    []int32
	rows    [][]float32 // scratch: the KV heads' sums (sumRows)
}

func init() {
	Register(Spec{Name: "tova", Doc: "evicts the token the current query attends least, averaged over the layer's heads (TOVA)",
		Params: append(knobDocs("tokens kept per layer (every KV head holds the same ones): the cache"),
			ParamDoc{"cache", "256", "tokens kept per layer (the budget under its own name)"}),
		New: func(p Params) (Policy, error) {
			rd := newReader("tova", p)
			k := rd.knob(1)
			c := rd.alias("cache", k, 256, 1)
			out, err := rd.done()
			if err != nil {
				return nil, err
			}
			pol := &tova{base: base{name: "tova", params: out, budget: c, evicts: true}, size: c}
			if k.share() {
				pol.ratioBudget(fmt.Sprintf("ratio %v", k.ratio), []string{"budget", "cache"}, pol.shareOf(k.ratio, func(kept, n int) error {
					pol.size, pol.budget = kept, kept
					pol.params["cache"] = kept
					return nil
				}))
			} else {
				out["budget"] = c
			}
			return pol, nil
		}})
}

// LayerBudget: cache tokens held after a step, cache+1 attended in it.
func (p *tova) LayerBudget(l int) (hold, attend int) { return p.size, p.size + 1 }

func (p *tova) Start(r *runtime.Runner) error {
	if err := p.bind(r, p); err != nil {
		return err
	}
	c := r.Model.Config
	p.accArms.start(r)
	if len(p.armed) != c.Layers {
		p.armed = make([]bool, c.Layers)
	}
	if len(p.idx) != c.KVHeads {
		p.idx = make([][]int32, c.KVHeads)
		p.maps = make([][]int32, c.KVHeads)
		p.drops = make([][]int32, c.KVHeads)
	}
	return nil
}

// LaneSafe: its hooks touch only its cache and its own state (runtime.LaneSafe).
func (p *tova) LaneSafe() {}

// LaneAfter: its AfterAttend (the scores) is worth spreading over goroutines (runtime.LaneAfter).
func (p *tova) LaneAfter() {}

func (p *tova) BeforeAttend(l int, a *runtime.AttnArgs) {
	if p.idle() {
		return
	}
	p.begin(l, a)
	p.armed[l] = false
	over := false
	if !p.stepEvict && !p.promptEvict {
		p.finish(l, a, 0) // a dense prompt's chunk before its last: keep all
		return
	}
	for g := range a.Seqs {
		over = over || a.Seqs[g].N > p.size
	}
	if over {
		p.arm(l, a, int(newest(a))) // the last row's probabilities
		p.armed[l] = true
	}
	p.finish(l, a, 0)
}

func (p *tova) AfterAttend(l int, a *runtime.AttnArgs) {
	if p.idle() {
		return
	}
	if p.armed[l] {
		p.evict(l, a)
	}
	p.end(l, a)
}

// AfterAttendLate: a decode step's AfterAttend evicts layer l by its own
// call's probabilities, which nothing later in the step reads, unless the
// step samples recall (runtime.LateHook).
func (p *tova) AfterAttendLate() bool { return !p.idle() && p.inStep && p.stepEvict && !p.sampled }

// AfterAttendLag: a prompt chunk's AfterAttend that evicts (its last row's
// probabilities asked for: armed) touches its layer's cache alone, which
// nothing reads before the next layer's BeforeAttend (runtime.LagHook).
func (p *tova) AfterAttendLag() bool { return !p.idle() && !p.sampled && p.armed[0] }

// evict drops the tokens of layer l the last query attended least, averaged
// over every query head, until cache remain.
func (p *tova) evict(l int, a *runtime.AttnArgs) {
	seqs := p.cache.Seqs(l)
	s0 := &seqs[0]
	n := s0.N
	excess := n - p.size
	if excess <= 0 {
		return
	}
	if cap(p.avg) < n {
		p.avg = make([]float64, n, n+n/4+64)
	}
	avg := p.avg[:n]
	inv := 1 / float64(a.Heads)
	// Each KV head's group summed in float32, heads in order (by the
	// backend, AccGroup, or here), then added up over the groups in
	// float64, in group order, from 0: each token's sum is the same
	// additions in the same order however the passes run. A KV head that
	// holds KV head 0's positions at the same indices (match: nil, the
	// usual case) is walked in order, its slice taken once where it holds
	// the group's sums.
	// Where each KV head finds head 0's tokens (p.idx, nil: at the same
	// indices): known without comparing where the cache says its heads
	// agree (HeadsAgree), else matched.
	aligned, agree := true, p.cache.HeadsAgree(l)
	for g := range seqs {
		if agree {
			p.idx[g] = nil
		} else if p.match(l, g) != nil {
			aligned = false
		}
	}
	if aligned && (a.AccGroup || a.Heads == a.KVHeads) {
		// The usual case: each KV head's slice holds its group's sums at
		// head 0's indices; added up four heads at a time.
		p.rows = p.rows[:0]
		for g := range seqs {
			p.rows = append(p.rows, a.Acc[g][:n])
		}
		sumRows(avg, p.rows)
	} else {
		clear(avg)
		for g := range seqs {
			if idx := p.idx[g]; idx == nil {
				for t := range avg {
					avg[t] += float64(groupSum(a, g, t))
				}
			} else {
				for t, i := range idx {
					avg[t] += float64(groupSum(a, g, int(i)))
				}
			}
		}
	}

	// The excess lowest by (score, position); when one token goes, the
	// average's last step and the search are one pass.
	d0 := p.drops[0][:0]
	if excess == 1 {
		pos := s0.Pos[:n]
		best := 0
		avg[0] *= inv
		for t := 1; t < n; t++ {
			v := avg[t] * inv
			avg[t] = v
			if v < avg[best] || v == avg[best] && pos[t] < pos[best] {
				best = t
			}
		}
		d0 = append(d0, int32(best))
	} else {
		for t := range avg {
			avg[t] *= inv
		}
		p.cand = p.cand[:0]
		for t, pos := range s0.Pos[:n] {
			p.cand = append(p.cand, h2oCand{key: avg[t], pos: pos, idx: int32(t)})
		}
		lowestCands(p.cand, excess)
		for _, c := range p.cand[:excess] {
			d0 = append(d0, c.idx)
		}
	}
	p.drops[0] = d0
	// Every head's indices first (head 0's positions change once it evicts).
	for g := 1; g < len(seqs); g++ {
		d := p.drops[g][:0]
		for _, t := range d0 {
			if p.idx[g] == nil {
				d = append(d, t)
			} else {
				d = append(d, p.idx[g][t])
			}
		}
		p.drops[g] = d
	}
	for g := range seqs {
		p.cache.Evict(l, g, p.drops[g])
	}
}

// sumRows sets avg[t] to the float64 sum of rows[0][t], rows[1][t], ... in
// that order (each row widened; the same additions, from 0, as adding one
// row at a time into a cleared avg), four rows a pass over avg.
func sumRows(avg []float64, rows [][]float32) {
	n := len(avg)
	i := 0
	if len(rows) >= 4 {
		r0, r1, r2, r3 := rows[0][:n], rows[1][:n], rows[2][:n], rows[3][:n]
		for t := range avg {
			avg[t] = float64(r0[t]) + float64(r1[t]) + float64(r2[t]) + float64(r3[t])
		}
		i = 4
	} else {
		clear(avg)
	}
	for ; i+4 <= len(rows); i += 4 {
		r0, r1, r2, r3 := rows[i][:n], rows[i+1][:n], rows[i+2][:n], rows[i+3][:n]
		for t := range avg {
			avg[t] = avg[t] + float64(r0[t]) + float64(r1[t]) + float64(r2[t]) + float64(r3[t])
		}
	}
	for ; i < len(rows); i++ {
		for t, x := range rows[i][:n] {
			avg[t] += float64(x)
		}
	}
}

// sameInt32s reports whether a and b (of one length) hold the same values.
func sameInt32s(a, b []int32) bool {
	if len(a) == 0 {
		return true
	}
	as := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(a))), 4*len(a))
	bs := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(b))), 4*len(b))
	return bytes.Equal(as, bs)
}

// match returns, for KV head g of layer l, the index of each of KV head 0's
// tokens (by its index), or nil when head g holds the same positions at the
// same indices. It panics when the heads hold different positions.
func (p *tova) match(l, g int) []int32 {
	seqs := p.cache.Seqs(l)
	s0, s := &seqs[0], &seqs[g]
	n := s0.N
	if s.N == n && sameInt32s(s.Pos[:n], s0.Pos[:n]) {
		p.idx[g] = nil
		return nil
	}
	bad := s.N != n
	if !bad {
		p.ord0 = tovaOrder(p.ord0, s0.Pos[:n])
		p.ordH = tovaOrder(p.ordH, s.Pos[:n])
		m := p.maps[g]
		if cap(m) < n {
			m = make([]int32, n, n+n/4+64)
		}
		m = m[:n]
		for i, t0 := range p.ord0 {
			th := p.ordH[i]
			if s0.Pos[t0] != s.Pos[th] {
				bad = true
				break
			}
			m[t0] = th
		}
		p.maps[g], p.idx[g] = m, m
	}
	if bad {
		panic(fmt.Sprintf("policy tova: layer %d KV heads 0 and %d hold different tokens (%d and %d): the cache changed behind the policy", l, g, n, s.N))
	}
	return p.idx[g]
}

// tovaOrder fills ord with the indices 0..len(pos)-1 sorted by position.
func tovaOrder(ord []int32, pos []int32) []int32 {
	ord = ord[:0]
	for t := range pos {
		ord = append(ord, int32(t))
	}
	slices.SortFunc(ord, func(x, y int32) int { return cmp.Compare(pos[x], pos[y]) })
	return ord
}
