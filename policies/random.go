package policies

import (
	"fmt"
	"math/rand/v2"

	"github.com/kvbench/kvbench/runtime"
)

// random keeps a random subset of budget tokens that always includes the
// newest: whenever a KV head holds more than budget tokens, tokens other than
// the newest are dropped uniformly at random. Draws are independent per layer
// and KV head, from one generator seeded by seed (the same seed gives the
// same run). A lower bound for any policy of the same budget.
type random struct {
	base
	seed uint64
	rng  *rand.Rand
	one  [1]int32
	list bool // list the candidates every time (tests: the decode step's shortcut against it)
}

func init() {
	Register(Spec{Name: "random", Doc: "keeps a uniformly random subset of `budget` tokens plus the newest (a lower bound)",
		Params: append(knobDocs("tokens kept per layer and KV head"), ParamDoc{"seed", "1", "random seed"}),
		New: func(p Params) (Policy, error) {
			rd := newReader("random", p)
			k := rd.knob(1)
			seed := rd.Int("seed", 1, 0, 1<<62)
			out, err := rd.done()
			if err != nil {
				return nil, err
			}
			b := 256
			if k.tokens() {
				b = k.budget
			}
			pol := &random{base: base{name: "random", params: out, budget: b, evicts: true}, seed: uint64(seed)}
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

func (p *random) Start(r *runtime.Runner) error {
	p.rng = rand.New(rand.NewPCG(p.seed, 0x72616e646f6d))
	return p.bind(r, p)
}

// LaneSafe: its hooks touch only its cache and its own state (runtime.LaneSafe).
func (p *random) LaneSafe() {}

func (p *random) BeforeAttend(l int, a *runtime.AttnArgs) {
	if p.idle() {
		return
	}
	p.begin(l, a)
	if p.stepEvict {
		p.evict(l, newest(a))
	}
	p.finish(l, a, 0)
}

func (p *random) AfterAttend(l int, a *runtime.AttnArgs) {
	if p.idle() {
		return
	}
	if p.promptEvict {
		p.evict(l, newest(a))
	}
	p.end(l, a)
}

// evict drops random tokens other than the newest until budget remain.
func (p *random) evict(l int, last int32) {
	seqs := p.cache.Seqs(l)
	for h := range seqs {
		s := &seqs[h]
		excess := s.N - p.budget
		if excess <= 0 {
			continue
		}
		if excess == 1 && s.Pos[s.N-1] == last && !p.list {
			// A decode step: the newest token in the last slot, every
			// other one a candidate (positions are unique), so the
			// candidates are slots 0..N-2 and the pick below is slot
			// IntN(N-1), drawn without listing them.
			p.one[0] = int32(p.rng.IntN(s.N - 1))
			p.cache.Evict(l, h, p.one[:])
			continue
		}
		// A partial Fisher-Yates over the candidate indices picks excess of
		// them uniformly.
		p.drop = p.drop[:0]
		for t := 0; t < s.N; t++ {
			if s.Pos[t] != last {
				p.drop = append(p.drop, int32(t))
			}
		}
		for i := 0; i < excess; i++ {
			j := i + p.rng.IntN(len(p.drop)-i)
			p.drop[i], p.drop[j] = p.drop[j], p.drop[i]
		}
		p.cache.Evict(l, h, p.drop[:excess])
	}
}
