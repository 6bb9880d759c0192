package policies

import "github.com/kvbench/kvbench/runtime"

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
}

func init() {
	Register(Spec{Name: "window", Doc: "sliding window of the last `window` tokens, no sinks",
		Params: []ParamDoc{{"window", "256", "tokens kept"}, {"reposition", "false", "assign positions within the cache"}},
		New: func(p Params) (Policy, error) {
			rd := newReader("window", p)
			w := rd.Int("window", 256, 1, 1<<30)
			rep := rd.Bool("reposition", false)
			out, err := rd.done()
			if err != nil {
				return nil, err
			}
			return &sinkWindow{base: base{name: "window", params: out, budget: w, evicts: true}, recent: w, reposition: rep}, nil
		}})
	Register(Spec{Name: "streamingllm", Doc: "attention sinks plus a recent window, positions within the cache",
		Params: []ParamDoc{{"sinks", "4", "first tokens kept forever"}, {"recent", "252", "most recent tokens kept"}},
		New: func(p Params) (Policy, error) {
			rd := newReader("streamingllm", p)
			s := rd.Int("sinks", 4, 0, 1<<20)
			rc := rd.Int("recent", 252, 1, 1<<30)
			out, err := rd.done()
			if err != nil {
				return nil, err
			}
			return &sinkWindow{base: base{name: "streamingllm", params: out, budget: s + rc, evicts: true},
				sinks: s, recent: rc, reposition: true}, nil
		}})
}

func (w *sinkWindow) Start(r *runtime.Runner) error {
	if w.reposition {
		r.Cache.TrackShifts()
	}
	return w.bind(r, w)
}

func (w *sinkWindow) BeforeAttend(l int, a *runtime.AttnArgs) {
	w.begin(l, a)
	if w.stepEvict {
		w.evict(l, newest(a))
	}
	if w.reposition {
		w.shift(l, a)
	}
	w.finish(l, a, 0)
}

func (w *sinkWindow) AfterAttend(l int, a *runtime.AttnArgs) {
	if w.promptEvict {
		w.evict(l, newest(a))
	}
	w.end(l, a)
}

// evict drops tokens that are neither sinks nor among the recent ones.
func (w *sinkWindow) evict(l int, last int32) {
	lo := last - int32(w.recent) + 1
	if lo <= int32(w.sinks) {
		return
	}
	sinks := int32(w.sinks)
	w.evictWhere(l, func(p int32) bool { return p >= sinks && p < lo })
}

// shift sets cache positions: the kept tokens are positions [0, sinks) and a
// contiguous run [lo, last], so a token's cache position is p (sink) or
// sinks + p - lo, and its shift (position minus cache position) is 0 or
// lo - sinks. While nothing has been evicted (a dense prompt) every shift is
// 0 and attention gets no QShift: plain attention, the same numbers, which a
// backend may run on its fastest prompt kernel.
func (w *sinkWindow) shift(l int, a *runtime.AttnArgs) {
	seqs := w.cache.Seqs(l)
	sinks := int32(w.sinks)
	shifted := false
	for g := range seqs {
		s := &seqs[g]
		lo := int32(-1)
		for _, p := range s.Pos[:s.N] {
			if p >= sinks && (lo < 0 || p < lo) {
				lo = p
			}
		}
		d := int32(0)
		if lo > sinks {
			d = lo - sinks
			shifted = true
		}
		for t, p := range s.Pos[:s.N] {
			if p < sinks {
				s.Shift[t] = 0
			} else {
				s.Shift[t] = d
			}
		}
		if g == 0 {
			w.qshift = w.qshift[:0]
			for r := 0; r < a.Rows; r++ {
				if int32(a.QPos[r]) < sinks {
					w.qshift = append(w.qshift, 0)
				} else {
					w.qshift = append(w.qshift, int(d))
				}
			}
		}
	}
	a.QShift = nil
	if shifted {
		a.QShift = w.qshift
	}
}
