package policies

import (
	"fmt"

	"github.com/kvbench/kvbench/runtime"
)

// sinkWindow keeps the first sinks tokens and the most recent recent tokens
// (window: sinks = 0). With reposition, keys take positions within the cache
// (StreamingLLM); because RoPE scores depend only on distances, the cache
// stores keys rotated at their original positions and attention rotates the
// query per token class instead (runtime.AttnArgs.QShift).
//
// Decode steps evict before attention, so attention reads at most
// sinks+recent tokens. A prompt attends causally in full and is evicted after
// its last row's attention (as the reference implementation prefills, then
// evicts); under PrefillChunked after every chunk (see Prefill).
type sinkWindow struct {
	base
	sinks, recent int
	reposition    bool
	qshift        []int
	// ring[l][p % recent] is the slot of the token at position p >= sinks
	// in layer l's sequences (the same in every KV head) once the window is
	// full (nil: not known): a decode step's new token lands in its victim's
	// slot, p - recent, which shares its ring entry, so the ring stays
	// right and a step evicts in O(1) a head.
	ring     [][]int32
	ringLast []int32 // the newest position of layer l when its ring was last right
	scan     bool    // tests: shift scans every position unless a ring eviction told lo
	lo       int32   // the smallest kept position >= sinks after evict; -1: not known
	ringHits int     // evictions through the ring (for tests)
	one      [1]int32
}

func init() {
	Register(Spec{Name: "window", Doc: "sliding window of the last `window` tokens, no sinks",
		Params: append(knobDocs("tokens kept per layer and KV head: the window"),
			ParamDoc{"window", "256", "tokens kept (the budget under its own name)"},
			ParamDoc{"reposition", "false", "assign positions within the cache"}),
		New: newWindow})
	Register(Spec{Name: "streamingllm", Doc: "attention sinks plus a recent window, positions within the cache",
		Params: append(knobDocs("tokens kept per layer and KV head, sinks included: recent = budget - sinks"),
			ParamDoc{"sinks", "4", "first tokens kept forever"},
			ParamDoc{"recent", "252", "most recent tokens kept (budget - sinks when budget or ratio is given)"}),
		New: newStreamingLLM})
}

// newWindow reads window's parameters: budget is the window; a ratio sets
// it from the prompt.
func newWindow(p Params) (Policy, error) {
	rd := newReader("window", p)
	k := rd.knob(1)
	w := rd.alias("window", k, 256, 1)
	rep := rd.Bool("reposition", false)
	out, err := rd.done()
	if err != nil {
		return nil, err
	}
	pol := &sinkWindow{base: base{name: "window", params: out, budget: w, evicts: true}, recent: w, reposition: rep}
	if !k.share() {
		out["budget"] = w
	} else {
		pol.ratioBudget(fmt.Sprintf("ratio %v", k.ratio), []string{"budget", "window"}, pol.shareOf(k.ratio, func(kept, n int) error {
			pol.recent, pol.budget = kept, kept
			pol.params["window"] = kept
			return nil
		}))
	}
	return pol, nil
}

// newStreamingLLM reads streamingllm's parameters: budget is sinks +
// recent, so budget (or a ratio's tokens) less the sinks is the recent
// window.
func newStreamingLLM(p Params) (Policy, error) {
	rd := newReader("streamingllm", p)
	k := rd.knob(1)
	s := rd.Int("sinks", 4, 0, 1<<20)
	rc := 0
	switch {
	case k.share():
		rd.forbid("recent", "ratio")
	case k.tokens() && rd.has("recent"):
		rc = rd.Int("recent", 252, 1, 1<<30)
		if rd.err == nil && s+rc != k.budget {
			rd.fail("recent", "sinks %d + recent %d = %d differs from budget %d (the budget counts the sinks)", s, rc, s+rc, k.budget)
		}
	case k.tokens():
		rd.used["recent"] = true
		rc = k.budget - s
		if rd.err == nil && rc < 1 {
			rd.fail("budget", "%d leaves no recent token beside %d sinks (the budget counts the sinks)", k.budget, s)
		}
		rd.out["recent"] = rc
	default:
		rc = rd.Int("recent", 252, 1, 1<<30)
	}
	out, err := rd.done()
	if err != nil {
		return nil, err
	}
	pol := &sinkWindow{base: base{name: "streamingllm", params: out, evicts: true}, sinks: s, recent: rc, reposition: true}
	if k.share() {
		pol.ratioBudget(fmt.Sprintf("ratio %v", k.ratio), []string{"budget", "recent"}, pol.shareOf(k.ratio, func(kept, n int) error {
			if kept <= s {
				return fmt.Errorf("not more than the %d sinks (the budget counts the sinks)", s)
			}
			pol.recent, pol.budget = kept-s, kept
			pol.params["recent"] = kept - s
			return nil
		}))
	} else {
		pol.budget = s + rc
		out["budget"] = s + rc
	}
	return pol, nil
}

func (w *sinkWindow) Start(r *runtime.Runner) error {
	if w.reposition {
		r.Cache.TrackShifts()
	}
	w.ring = make([][]int32, r.Model.Config.Layers)
	w.ringLast = make([]int32, r.Model.Config.Layers)
	return w.bind(r, w)
}

// LaneSafe: its hooks touch only its cache and its own state (runtime.LaneSafe).
func (w *sinkWindow) LaneSafe() {}

func (w *sinkWindow) BeforeAttend(l int, a *runtime.AttnArgs) {
	if w.idle() {
		return
	}
	w.begin(l, a)
	w.lo = -1
	if w.stepEvict {
		w.evict(l, newest(a))
	}
	if w.reposition {
		w.shift(l, a)
	}
	w.finish(l, a, 0)
}

func (w *sinkWindow) AfterAttend(l int, a *runtime.AttnArgs) {
	if w.idle() {
		return
	}
	if w.promptEvict {
		w.evict(l, newest(a))
	}
	w.end(l, a)
}

// evict drops tokens that are neither sinks nor among the recent ones:
// in a decode step after the window filled, the one token at position
// last - recent, found through the ring; otherwise by a scan, after which
// the ring is rebuilt.
func (w *sinkWindow) evict(l int, last int32) {
	lo := last - int32(w.recent) + 1
	if lo <= int32(w.sinks) {
		w.lo = int32(w.sinks) // nothing evicted yet: every position from the sinks on is kept
		return
	}
	if w.evictOne(l, last) {
		w.lo = lo
		return
	}
	sinks := int32(w.sinks)
	w.evictWhere(l, func(p int32) bool { return p >= sinks && p < lo })
	w.buildRing(l, last)
}

// evictOne evicts the token at position last - recent from every KV head
// of layer l where the ring says where it is: one token after the one the
// ring was last right at (so that the sequences hold the sinks and the
// window [last - recent, last], by induction), each sequence that many
// tokens long with last in its last slot. It reports whether it did (else
// nothing changed).
func (w *sinkWindow) evictOne(l int, last int32) bool {
	ring := w.ring[l]
	if ring == nil || last != w.ringLast[l]+1 {
		return false
	}
	v := last - int32(w.recent)
	d := ring[int(v)%w.recent]
	seqs := w.cache.Seqs(l)
	for h := range seqs {
		s := &seqs[h]
		if s.N != w.sinks+w.recent+1 || s.Pos[s.N-1] != last || int(d) >= s.N-1 || s.Pos[d] != v {
			w.ring[l] = nil
			return false
		}
	}
	for h := range seqs {
		w.one[0] = d
		w.cache.Evict(l, h, w.one[:])
	}
	w.ringLast[l] = last
	w.ringHits++
	return true
}

// buildRing records where layer l's tokens are once its sequences hold
// exactly the sinks and the window ending at last (nil otherwise).
func (w *sinkWindow) buildRing(l int, last int32) {
	w.ring[l] = nil
	seqs := w.cache.Seqs(l)
	if len(seqs) == 0 || seqs[0].N != w.sinks+w.recent {
		return
	}
	s := &seqs[0]
	ring := make([]int32, w.recent)
	lo, sinks := last-int32(w.recent)+1, int32(w.sinks)
	for t, p := range s.Pos[:s.N] {
		switch {
		case p < sinks:
		case p < lo || p > last:
			return
		default:
			ring[int(p)%w.recent] = int32(t)
		}
	}
	w.ring[l], w.ringLast[l] = ring, last
}

// shift sets cache positions: the kept tokens are positions [0, sinks) and a
// contiguous run [lo, last], so a token's cache position is p (sink) or
// sinks + p - lo. Attention needs only each key's shift (position minus
// cache position) less its query's, so the shifts are kept up to a constant
// per step: -d for the sinks and 0 for the rest (their cache positions less
// d, d = lo - sinks), queries likewise. Only the sinks' values then change
// from step to step: with the sinks in the first slots, they are all that is
// written (only a sink's shift is ever nonzero: every other token's is
// appended as 0, moves with its token and is written 0 here), and in an
// ascending sequence the lowest kept position past them is the one after
// them (a dense prompt's chunks: no scan). While nothing has been evicted (a
// dense prompt) every shift is 0 and attention gets no QShift: plain
// attention, the same numbers, which a backend may run on its fastest
// prompt kernel.
func (w *sinkWindow) shift(l int, a *runtime.AttnArgs) {
	seqs := w.cache.Seqs(l)
	sinks := int32(w.sinks)
	shifted := false
	for g := range seqs {
		s := &seqs[g]
		first := w.sinksFirst(s) && (!w.scan || w.lo >= 0)
		lo := w.lo // known after a ring eviction: every head holds [lo, last]
		switch {
		case lo >= 0:
		case s.Ascending && first && !w.scan:
			// The sinks, then the rest in order (a prompt's chunks, before
			// any eviction): the first after the sinks is the lowest.
			if s.N > w.sinks {
				lo = s.Pos[w.sinks]
			}
		default:
			for _, p := range s.Pos[:s.N] {
				if p >= sinks && (lo < 0 || p < lo) {
					lo = p
				}
			}
		}
		d := int32(0)
		if lo > sinks {
			d = lo - sinks
			// Without sinks every kept token and query shifts by d alike:
			// no distance changes, plain attention.
			shifted = sinks > 0
		}
		if !first {
			span, held := 0, 0 // one past the last sink's slot; the sinks held
			for t, p := range s.Pos[:s.N] {
				if p < sinks {
					s.Shift[t] = -d
					span, held = t+1, held+1
				} else {
					s.Shift[t] = 0
				}
			}
			// Sinks alone before the span: every shift there is -d.
			s.ShiftSpan, s.ShiftEqual, s.ShiftAll = span, span > 0 && held == span, -d
		} else {
			for t := range w.sinks {
				s.Shift[t] = -d
			}
			s.ShiftSpan, s.ShiftEqual, s.ShiftAll = w.sinks, w.sinks > 0, -d
		}
		if g == 0 {
			w.qshift = w.qshift[:0]
			for r := 0; r < a.Rows; r++ {
				if int32(a.QPos[r]) < sinks {
					w.qshift = append(w.qshift, int(-d))
				} else {
					w.qshift = append(w.qshift, 0)
				}
			}
		}
	}
	a.QShift = nil
	if shifted {
		a.QShift = w.qshift
	}
}

// sinksFirst reports whether s holds the sinks in its first slots (every
// other token's shift is then 0 already: appended as 0, moved with its
// token, and written 0 by every shift).
func (w *sinkWindow) sinksFirst(s *runtime.KVSeq) bool {
	if s.N < w.sinks {
		return false
	}
	for t, p := range s.Pos[:w.sinks] {
		if p != int32(t) {
			return false
		}
	}
	return true
}
