package policies

import (
	"cmp"
	"fmt"
	goruntime "runtime"
	"slices"

	"github.com/kvbench/kvbench/internal/crew"
	"github.com/kvbench/kvbench/runtime"
)

// h2o is Heavy-Hitter Oracle (H2O, Zhang et al. 2023; reference
// FMInference/H2O utils_real_drop): every layer and KV head keeps an
// accumulated score per cached token, the sum over every query that attended
// to it (all query heads of the GQA group, prefill and decode) of its softmax
// probability. Whenever a KV head holds more than heavy+recent tokens it keeps
// the recent most recent tokens (by position) and, of the others, the heavy
// with the highest score, and evicts the rest. Heads choose independently.
//
// Scores come from attention itself (runtime.AttnArgs.Acc): the backend adds
// each query row's probabilities into one buffer per query head, which the
// policy sums over the group into a float64 score per token after the
// layer's attention. The scores are kept aligned with the cache's token
// indices: after an eviction the policy applies the cache's own rule (the
// last token moves into each freed slot) to its score array.
//
// Timing. A decode step evicts before attention, with the scores
// accumulated through the previous step, so attention reads at most
// heavy+recent tokens, the newest included. This is the reference's
// evict-after-attention shifted by one step; the one difference is that the
// reference's recent window counts the tokens up to the previous one and then
// attends the new token on top (heavy+recent+1 tokens), while here the window
// includes the new token and attention reads heavy+recent. A prompt attends
// causally in full and accumulates the probabilities of every one of its
// rows; after its last row's attention each layer is evicted down to
// heavy+recent, as the reference does after prefill. The runner feeds a long
// prompt in chunks of its maxRows, and under PrefillDense (the default)
// nothing is evicted between them, so the scores are the column sums of the
// whole prompt's causal attention matrix, as in the reference's single
// prefill. Under PrefillChunked each chunk is evicted after its attention (a
// one-row chunk before it, as a decode step): later rows never see the
// evicted tokens and the scores miss their attention.
//
// Ties (equal scores) evict the older position first, a deterministic
// choice (the reference's torch.topk leaves it unspecified).
//
// Budgets are heavy and recent in tokens (the default: 128 and 128); the
// shared knob's budget B (budget.go) is heavy + recent, split evenly (heavy
// B/2 floored, recent the rest) unless heavy or recent is given too; its
// ratio R keeps RatioTokens(R, n) of an n-token prompt, split the same way.
// heavy_ratio and recent_ratio are the paper's two shares of the prompt
// length (0.1 and 0.1 is its setting; giving either selects them), floored
// as the reference does (int(ratio*n)), with recent at least 1 so the newest
// token is always attended. Shares are resolved by the stream's first
// Prompt(n) call with n > 0; a stream that starts without an announced
// prompt has no prompt length to take a share of, and its first forward
// returns an error saying so (there is no silent fallback). The budget then
// stays fixed for the stream.
//
// normalize: false (the paper) ranks by plain column sums, which favour early
// tokens (more queries have seen them); true divides each token's sum by the
// number of queries that saw it (query rows from its position to the last
// accumulated one: every held token was attended by each of them).
type h2o struct {
	base
	heavy, recent int
	ratios        bool // budgets are shares of the prompt length (base.ratioBudget)
	normalize     bool
	score         [][][]float64 // [layer][kvHead][token index] accumulated probability
	accArms                     // the sums asked of attention, a layer's headers each
	cand          []h2oCand     // scratch: eviction candidates
	bulk          []h2oBulk     // scratch of each KV head's bulk eviction (evictBulk)
	bulkMin       int           // evictBulk's threshold, and 1/16 of collect's (bulkMin; tests change it)
	// next[l][h] is the next decode step's eviction as collect found it
	// in its pass over the scores (see h2oNext); scan (tests) turns it off.
	next  [][]h2oNext
	scan  bool
	fused int // evictions that took collect's candidate (tests)
}

// h2oNext is the candidate a decode step's collect found for the step
// after it: with the query at position at+1 and the scores as they stand
// (the step's one new token, at position at+1, is no candidate), the
// candidate of the lowest key (best, an index) among ncand, while the KV
// head held n tokens. evict takes it, instead of scanning, when it evicts
// for the query at at+1 from n+1 tokens (the one appended since); any
// other eviction scans, and every eviction spends it.
type h2oNext struct {
	at       int32
	n, ncand int
	best     int32
	ok       bool
}

// h2oLowest finds, among the candidates offered, the one a decode step
// evicts: the lowest key, ties to the older position; n counts them.
type h2oLowest struct {
	n, best int // best: its index, -1 before any
	key     float64
	pos     int32
}

func (m *h2oLowest) offer(t int, key float64, pos int32) {
	m.n++
	if m.best < 0 || key < m.key || key == m.key && pos < m.pos {
		m.best, m.key, m.pos = t, key, pos
	}
}

// h2oCand is a token that may be evicted: its ranking key, position and index.
type h2oCand struct {
	key float64
	pos int32
	idx int32
}

func init() {
	Register(Spec{Name: "h2o", Doc: "heavy hitters by accumulated attention plus a recent window (H2O)",
		Params: append(knobDocs("tokens kept per layer and KV head, heavy + recent: heavy = budget/2 (floored), recent = the rest, unless one of them is given"),
			ParamDoc{"heavy", "128", "heavy-hitter tokens kept per layer and KV head (budget - recent when budget and recent are given)"},
			ParamDoc{"recent", "128", "most recent tokens kept per layer and KV head (budget - heavy when budget and heavy are given)"},
			ParamDoc{"heavy_ratio", "0.1", "heavy as a share of the prompt length, instead of heavy and recent (giving either ratio selects them; 0.1 and 0.1 is the paper's setting; not with budget or ratio)"},
			ParamDoc{"recent_ratio", "0.1", "recent as a share of the prompt length, instead of heavy and recent"},
			ParamDoc{"normalize", "false", "rank by the mean instead of the sum of the probabilities a token received"},
		),
		New: newH2O})
}

// newH2O reads h2o's parameters. The budget in tokens is heavy + recent:
// budget alone splits evenly (heavy = budget/2, recent = the rest); with
// heavy or recent given, the other is the rest of the budget; with both,
// they must add up to it. ratio splits its tokens evenly once the prompt
// is known; heavy_ratio and recent_ratio are the paper's separate shares.
func newH2O(p Params) (Policy, error) {
	rd := newReader("h2o", p)
	k := rd.knob(1)
	tokens := rd.has("heavy") || rd.has("recent")
	ratios := rd.has("heavy_ratio") || rd.has("recent_ratio")
	pol := &h2o{base: base{name: "h2o", evicts: true}, bulkMin: bulkMin}
	pol.normalize = rd.Bool("normalize", false)
	for _, n := range []string{"heavy", "recent", "heavy_ratio", "recent_ratio"} {
		rd.used[n] = true
	}
	given := func(names ...string) string {
		for _, n := range names {
			if rd.has(n) {
				return n
			}
		}
		return ""
	}
	switch {
	case tokens && ratios:
		rd.fail(given("heavy", "recent"), "give the budget in tokens (heavy and recent) or as shares of the prompt (heavy_ratio and recent_ratio), not both")
	case ratios && k.tokens():
		rd.fail(given("heavy_ratio", "recent_ratio"), "give the budget in tokens (budget) or as shares of the prompt (heavy_ratio and recent_ratio), not both")
	case ratios && k.share():
		rd.fail(given("heavy_ratio", "recent_ratio"), "give one share of the prompt (ratio, split evenly) or two (heavy_ratio and recent_ratio), not both")
	case k.share():
		if n := given("heavy", "recent"); n != "" {
			rd.forbid(n, "ratio")
		}
		pol.ratios = true
		pol.ratioBudget(fmt.Sprintf("ratio %v", k.ratio), []string{"budget", "heavy", "recent"}, pol.shareOf(k.ratio, func(kept, n int) error {
			pol.setBudget(kept/2, kept-kept/2)
			return nil
		}))
	case ratios:
		pol.ratios = true
		hr := rd.Float("heavy_ratio", 0.1, 0, 1)
		rr := rd.Float("recent_ratio", 0.1, 0, 1)
		// The reference's flooring (int(ratio*n)), recent at least 1 so
		// that the newest token is always attended.
		pol.ratioBudget(fmt.Sprintf("heavy_ratio %v and recent_ratio %v", hr, rr), []string{"budget", "heavy", "recent"}, func(n int) error {
			pol.setBudget(int(hr*float64(n)), max(1, int(rr*float64(n))))
			return nil
		})
	case k.tokens():
		switch {
		case rd.has("heavy") && rd.has("recent"):
			pol.heavy = rd.Int("heavy", 128, 0, 1<<30)
			pol.recent = rd.Int("recent", 128, 1, 1<<30)
			if rd.err == nil && pol.heavy+pol.recent != k.budget {
				rd.fail("heavy", "heavy %d + recent %d = %d differs from budget %d", pol.heavy, pol.recent, pol.heavy+pol.recent, k.budget)
			}
		case rd.has("heavy"):
			pol.heavy = rd.Int("heavy", 128, 0, 1<<30)
			pol.recent = k.budget - pol.heavy
			if rd.err == nil && pol.recent < 1 {
				rd.fail("heavy", "%d leaves no recent token in budget %d (the newest token is always kept)", pol.heavy, k.budget)
			}
		case rd.has("recent"):
			pol.recent = rd.Int("recent", 128, 1, 1<<30)
			pol.heavy = k.budget - pol.recent
			if rd.err == nil && pol.heavy < 0 {
				rd.fail("recent", "%d exceeds budget %d", pol.recent, k.budget)
			}
		default:
			pol.heavy, pol.recent = k.budget/2, k.budget-k.budget/2
		}
		rd.out["heavy"], rd.out["recent"] = pol.heavy, pol.recent
	default: // heavy and recent, given or the defaults
		pol.heavy = rd.Int("heavy", 128, 0, 1<<30)
		pol.recent = rd.Int("recent", 128, 1, 1<<30)
	}
	out, err := rd.done()
	if err != nil {
		return nil, err
	}
	pol.params = out
	if !pol.ratios {
		pol.budget = pol.heavy + pol.recent
		out["budget"] = pol.budget
	}
	return pol, nil
}

func (p *h2o) Start(r *runtime.Runner) error {
	if err := p.bind(r, p); err != nil {
		return err
	}
	c := r.Model.Config
	if len(p.score) != c.Layers || len(p.score[0]) != c.KVHeads {
		p.score = make([][][]float64, c.Layers)
		for l := range p.score {
			p.score[l] = make([][]float64, c.KVHeads)
		}
	}
	for l := range p.score {
		for h := range p.score[l] {
			p.score[l][h] = p.score[l][h][:0]
		}
	}
	p.accArms.start(r)
	p.next = make([][]h2oNext, c.Layers)
	for l := range p.next {
		p.next[l] = make([]h2oNext, c.KVHeads)
	}
	return nil
}

// setBudget fixes heavy and recent (from a share of the prompt).
func (p *h2o) setBudget(heavy, recent int) {
	p.heavy, p.recent, p.budget = heavy, recent, heavy+recent
	p.params["heavy"], p.params["recent"], p.params["budget"] = heavy, recent, heavy+recent
}

// Scores returns the accumulated score of each token layer l, KV head h holds,
// by cache index (the positions are Cache.Seqs(l)[h].Pos), through the last
// finished forward; for inspection and tests. The slice is the policy's own,
// valid until the next forward.
func (p *h2o) Scores(l, h int) []float64 { return p.score[l][h] }

// LaneSafe: its hooks touch only its cache and its own state (runtime.LaneSafe).
func (p *h2o) LaneSafe() {}

// LaneAfter: its AfterAttend (the scores) is worth spreading over goroutines (runtime.LaneAfter).
func (p *h2o) LaneAfter() {}

func (p *h2o) BeforeAttend(l int, a *runtime.AttnArgs) {
	if p.idle() {
		return // the budget waits for a prompt: the stream's error says so
	}
	p.begin(l, a)
	p.grow(l, p.promptRest(a))
	if p.stepEvict {
		pos := int32(a.QPos[0])
		p.evict(l, pos, pos-1)
	}
	p.arm(l, a, 0) // every query row's probabilities
	p.finish(l, a, 0)
}

// AfterAttendLate: a decode step's AfterAttend only adds the layer's
// probabilities to its scores (the eviction comes before the next step's
// attention), unless the step samples recall; so does a dense prompt's
// chunk before the last (the prompt is compressed after its last row)
// (runtime.LateHook).
func (p *h2o) AfterAttendLate() bool {
	if p.idle() || p.promptEvict || p.sampled {
		return false
	}
	return (p.inStep && p.stepEvict) || (p.prompting && !p.decode)
}

// AfterAttendLag: a prompt chunk's AfterAttend adds its layer's sums to
// the scores and evicts from its layer's cache alone, which nothing reads
// before the next layer's BeforeAttend (runtime.LagHook).
func (p *h2o) AfterAttendLag() bool { return !p.idle() && !p.sampled }

func (p *h2o) AfterAttend(l int, a *runtime.AttnArgs) {
	if p.idle() {
		return
	}
	p.collect(l, a)
	if p.promptEvict {
		last := newest(a)
		p.evict(l, last, last)
	}
	p.end(l, a)
}

// grow gives the tokens just appended to layer l a zero score, with room
// for more tokens after them (the rest of a prompt: its chunks would grow
// the scores one chunk at a time, each growth a copy).
func (p *h2o) grow(l, more int) {
	seqs := p.cache.Seqs(l)
	for h := range seqs {
		sc := p.score[l][h]
		n := seqs[h].N
		if len(sc) > n {
			panic(fmt.Sprintf("policy h2o: layer %d KV head %d holds %d tokens, the policy scored %d: the cache changed behind the policy", l, h, n, len(sc)))
		}
		if m := len(sc); m < n { // one growth at most, not an append a token
			sc = slices.Grow(sc, n-m+more)[:n]
			clear(sc[m:])
		}
		p.score[l][h] = sc
	}
}

// collect adds what attention accumulated to the scores of layer l: the
// probabilities of every query row and every head of a KV head's group.
//
// A token's score takes the float32 sum of its group's heads' sums, added
// in head order (by the backend, AccGroup, or here: the same sum), in one
// pass over the scores.
func (p *h2o) collect(l int, a *runtime.AttnArgs) {
	group := a.Heads / a.KVHeads
	// A decode step (one row, evicting before attention) also finds the
	// next step's victim in the same pass (h2oNext): the candidates are
	// the tokens before the next query's recent window.
	fuse := a.Rows == 1 && p.stepEvict && !p.scan
	q := newest(a)
	lo := q + 2 - int32(p.recent)
	few := false // a head too short to be worth a goroutine
	for g := range a.Seqs {
		few = few || a.Seqs[g].N < p.bulkMin*16
	}
	parts := min(len(a.Seqs), goruntime.GOMAXPROCS(0), crew.MaxParts)
	if few || parts < 2 {
		for g := range a.Seqs {
			p.collectHead(l, g, a, group, fuse, q, lo)
		}
		return
	}
	// Long sequences (a prompt's, or the steps fed one at a time before it
	// is compressed: 32 layers x 8 KV heads x 32K tokens a step on the 8B
	// shape): the KV heads side by side on the crew.
	per := (len(a.Seqs) + parts - 1) / parts
	crew.Run(parts, func(k int) {
		for g := k * per; g < min(len(a.Seqs), (k+1)*per); g++ {
			p.collectHead(l, g, a, group, fuse, q, lo)
		}
	})
}

// collectHead is collect's work for KV head g (it touches that head's
// scores and next victim alone).
func (p *h2o) collectHead(l, g int, a *runtime.AttnArgs, group int, fuse bool, q, lo int32) {
	s := &a.Seqs[g]
	sc := p.score[l][g][:s.N]
	pos := s.Pos[:s.N]
	low := h2oLowest{best: -1}
	switch {
	case a.AccGroup || group == 1: // one slice a KV head: its group's sums
		acc := a.Acc[g]
		if !a.AccGroup {
			acc = a.Acc[g*group]
		}
		acc = acc[:len(sc)]
		for t := range sc {
			v := sc[t] + float64(acc[t])
			sc[t] = v
			if fuse && pos[t] < lo {
				low.offer(t, p.key(v, pos[t], q), pos[t])
			}
		}
	case group == 4: // the common GQA group, unrolled
		accs := a.Acc[g*group : (g+1)*group]
		a0, a1, a2, a3 := accs[0][:len(sc)], accs[1][:len(sc)], accs[2][:len(sc)], accs[3][:len(sc)]
		for t := range sc {
			v := sc[t] + float64(a0[t]+a1[t]+a2[t]+a3[t])
			sc[t] = v
			if fuse && pos[t] < lo {
				low.offer(t, p.key(v, pos[t], q), pos[t])
			}
		}
	default:
		accs := a.Acc[g*group : (g+1)*group]
		for t := range sc {
			s := accs[0][t]
			for _, acc := range accs[1:] {
				s += acc[t]
			}
			v := sc[t] + float64(s)
			sc[t] = v
			if fuse && pos[t] < lo {
				low.offer(t, p.key(v, pos[t], q), pos[t])
			}
		}
	}
	p.next[l][g] = h2oNext{at: q, n: len(sc), ncand: low.n, best: int32(low.best), ok: fuse}
}

// key is token t's ranking score; lastQ is the position of the last query
// whose probabilities the scores hold.
func (p *h2o) key(sc float64, pos, lastQ int32) float64 {
	if !p.normalize {
		return sc
	}
	return sc / float64(max(1, lastQ-pos+1))
}

// evict trims every KV head of layer l to heavy+recent tokens: the tokens at
// positions > last-recent stay, and of the others the heavy with the highest
// key; ties evict the older position. lastQ is the position of the last query
// accumulated into the scores.
func (p *h2o) evict(l int, last, lastQ int32) {
	seqs := p.cache.Seqs(l)
	lo := last - int32(p.recent) + 1 // the recent window is [lo, last]
	if p.evictBulk(l, seqs, lo, lastQ) {
		return
	}
	for h := range seqs {
		nx := p.next[l][h]
		p.next[l][h].ok = false // every eviction spends what collect found
		s := &seqs[h]
		if s.N <= p.heavy+p.recent {
			continue
		}
		sc := p.score[l][h]
		// One pass: count the candidates and find the lowest, which is all a
		// decode step needs (it evicts one token); or none, where the last
		// step's collect found them for this query (h2oNext).
		low := h2oLowest{best: -1}
		if nx.ok && nx.at+1 == last && nx.at == lastQ && nx.n+1 == s.N {
			low.n, low.best = nx.ncand, int(nx.best)
			p.fused++
		} else {
			for t, pos := range s.Pos[:s.N] {
				if pos < lo {
					low.offer(t, p.key(sc[t], pos, lastQ), pos)
				}
			}
		}
		best, excess := low.best, low.n-p.heavy
		if excess <= 0 {
			continue
		}
		p.drop = p.drop[:0]
		if excess == 1 {
			p.drop = append(p.drop, int32(best))
		} else {
			p.cand = p.cand[:0]
			for t, pos := range s.Pos[:s.N] {
				if pos < lo {
					p.cand = append(p.cand, h2oCand{key: p.key(sc[t], pos, lastQ), pos: pos, idx: int32(t)})
				}
			}
			lowestCands(p.cand, excess)
			for _, c := range p.cand[:excess] {
				p.drop = append(p.drop, c.idx)
			}
		}
		p.cache.Evict(l, h, p.drop)
		p.score[l][h] = h2oCompact(sc, p.drop)
	}
}

// h2oBulk is one KV head's scratch in a bulk eviction: its candidates and
// the indices it drops.
type h2oBulk struct {
	cand []h2oCand
	drop []int32
}

// bulkMin is the fewest tokens past the budget every KV head of a layer
// must hold for evict to choose their drops side by side (evictBulk).
const bulkMin = 256

// evictBulk is evict where every KV head of layer l holds bulkMin tokens or
// more past the budget (a prompt's compression): the heads choose their
// drops side by side (the crew; the same choice as evict's: the excess
// lowest candidates by key, then position), then evict in head order. It
// reports false, doing nothing, where a head holds fewer.
func (p *h2o) evictBulk(l int, seqs []runtime.KVSeq, lo, lastQ int32) bool {
	for h := range seqs {
		if seqs[h].N < p.heavy+p.recent+p.bulkMin {
			return false
		}
	}
	if len(p.bulk) < len(seqs) {
		p.bulk = append(p.bulk, make([]h2oBulk, len(seqs)-len(p.bulk))...)
	}
	parts := min(len(seqs), goruntime.GOMAXPROCS(0), crew.MaxParts)
	per := (len(seqs) + parts - 1) / parts
	crew.Run(parts, func(k int) {
		for h := k * per; h < min(len(seqs), (k+1)*per); h++ {
			b, s, sc := &p.bulk[h], &seqs[h], p.score[l][h]
			b.cand, b.drop = b.cand[:0], b.drop[:0]
			for t, pos := range s.Pos[:s.N] {
				if pos < lo {
					b.cand = append(b.cand, h2oCand{key: p.key(sc[t], pos, lastQ), pos: pos, idx: int32(t)})
				}
			}
			if excess := len(b.cand) - p.heavy; excess > 0 {
				lowestCands(b.cand, excess)
				for _, c := range b.cand[:excess] {
					b.drop = append(b.drop, c.idx)
				}
			}
		}
	})
	for h := range seqs {
		p.next[l][h].ok = false // every eviction spends what collect found
		if b := &p.bulk[h]; len(b.drop) > 0 {
			p.cache.Evict(l, h, b.drop)
			p.score[l][h] = h2oCompact(p.score[l][h], b.drop)
		}
	}
	return true
}

// candBefore orders candidates by key, then position: the order a
// policy's lowest are taken in (positions are distinct within a sequence,
// so it is total; keys compare as cmp.Compare does).
func candBefore(x, y h2oCand) bool {
	if c := cmp.Compare(x.key, y.key); c != 0 {
		return c < 0
	}
	return x.pos < y.pos
}

// lowestCands reorders c so that its first k entries are the k lowest by
// candBefore, in no particular order: the set a sort would put first, by
// a quickselect (median-of-three pivot, in place). A prompt's compression
// drops thousands of a sequence's tokens: a sort took it O(n log n). It is
// topK's loop on candidates; one generic loop taking the comparison as a
// function ran topK 40 % slower (195 to 275 us over 32K scores: the
// comparison no longer inlined), so each keeps its own.
func lowestCands(c []h2oCand, k int) {
	lo, hi := 0, len(c)-1
	if k <= 0 || k >= len(c) {
		return
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		if candBefore(c[mid], c[lo]) {
			c[mid], c[lo] = c[lo], c[mid]
		}
		if candBefore(c[hi], c[lo]) {
			c[hi], c[lo] = c[lo], c[hi]
		}
		if candBefore(c[mid], c[hi]) {
			c[mid], c[hi] = c[hi], c[mid]
		}
		pivot := c[hi]
		s := lo
		for i := lo; i < hi; i++ {
			if candBefore(c[i], pivot) {
				c[s], c[i] = c[i], c[s]
				s++
			}
		}
		c[s], c[hi] = c[hi], c[s]
		// c[lo:s] come before the pivot, now at s.
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

// h2oCompact applies the cache's eviction rule to per-token values aligned
// with a sequence: for each dropped index, highest first (drop is sorted), the
// last value moves into the freed slot.
func h2oCompact(v []float64, drop []int32) []float64 {
	n := len(v)
	for i := len(drop) - 1; i >= 0; i-- {
		d := int(drop[i])
		if d != n-1 {
			v[d] = v[n-1]
		}
		n--
	}
	return v[:n]
}
