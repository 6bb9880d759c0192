package policies_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/policies/policytest"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

func TestH2OConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "h2o",
		Small: policies.Params{"heavy": 12, "recent": 12}, Large: policies.Params{"heavy": 2048, "recent": 2048}})
}

func TestH2ONormalizeConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "h2o",
		Small: policies.Params{"heavy": 16, "recent": 8, "normalize": true},
		Large: policies.Params{"heavy": 4000, "recent": 96, "normalize": true}})
}

func TestH2OPromptConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "h2o", Prompt: 50, LongSteps: 20000,
		Small: policies.Params{"heavy": 12, "recent": 12}, Large: policies.Params{"heavy": 2048, "recent": 2048}})
}

func TestH2OChunkedPromptConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "h2o", Prompt: 50, LongSteps: 5000, Prefill: policies.PrefillChunked,
		Small: policies.Params{"heavy": 12, "recent": 12}, Large: policies.Params{"heavy": 2048, "recent": 2048}})
}

// Ratios of the 50-token prompt: 12 + 12 tokens.
func TestH2ORatioConformance(t *testing.T) {
	policytest.Run(t, policytest.Case{Policy: "h2o", Prompt: 50, LongSteps: 20000,
		Small: policies.Params{"heavy_ratio": 0.25, "recent_ratio": 0.25}, Large: policies.Params{"heavy": 2048, "recent": 2048}})
}

func TestH2OParams(t *testing.T) {
	for _, c := range []struct {
		params policies.Params
		want   string
	}{
		{policies.Params{"heavy": -1}, "parameter heavy: -1 is out of range"},
		{policies.Params{"recent_ratio": -0.5}, "parameter recent_ratio: -0.5 is out of range"},
		{policies.Params{"heavy": 4, "recent": 0}, "out of range"},
		{policies.Params{"heavy": 4, "recent": 4, "heavy_ratio": 0.2}, "not both"},
		{policies.Params{"heavy_ratio": 1.5}, "out of range"},
		{policies.Params{"heavy": 4, "recent": 4, "normalise": true}, "did you mean normalize"},
	} {
		_, err := policies.New("h2o", c.params)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(h2o, %v) error %v, want it to mention %q", c.params, err, c.want)
		}
	}

	// Ratios (the paper's 0.1 + 0.1) resolve at the first prompt.
	p, err := policies.New("h2o", policies.Params{"heavy_ratio": 0.1, "recent_ratio": 0.1})
	if err != nil {
		t.Fatal(err)
	}
	r := tinyRunner(t, "tiny", 32)
	if err := p.Start(r); err != nil {
		t.Fatal(err)
	}
	if b := p.Budget(); b != 0 {
		t.Errorf("budget %d before the prompt, want 0 (unknown)", b)
	}
	p.Prompt(57)
	if b := p.Budget(); b != 10 {
		t.Errorf("budget %d for a 57-token prompt at 0.1 + 0.1, want 5 + 5", b)
	}
	if hold, attend := p.LayerBudget(1); hold != 10 || attend != 10 {
		t.Errorf("layer budget (%d, %d), want (10, 10)", hold, attend)
	}
	if pr := p.Params(); pr["heavy"] != 5 || pr["recent"] != 5 || pr["heavy_ratio"] != 0.1 {
		t.Errorf("resolved params %v", pr)
	}
	p.Prompt(1000) // a later prompt of the same stream keeps the budget
	if b := p.Budget(); b != 10 {
		t.Errorf("budget %d after a second prompt, want it kept at 10", b)
	}

	// A tiny prompt still keeps the newest token.
	r.Reset()
	if err := p.Start(r); err != nil {
		t.Fatal(err)
	}
	p.Prompt(3)
	if b := p.Budget(); b != 1 {
		t.Errorf("budget %d for a 3-token prompt, want 0 heavy + 1 recent", b)
	}

	// Without a prompt, ratios have nothing to apply to: the first forward
	// says so.
	r.Reset()
	if err := p.Start(r); err != nil {
		t.Fatal(err)
	}
	err = r.Forward([]int{5}, make([]float32, r.Model.Config.Vocab))
	if err == nil || !strings.Contains(err.Error(), "heavy_ratio 0.1 and recent_ratio 0.1 are shares of the prompt length, but no prompt was announced") {
		t.Errorf("forward without a prompt: error %v, want a message about the missing prompt", err)
	}
}

func tinyRunner(t testing.TB, name string, maxRows int) *runtime.Runner {
	t.Helper()
	m, err := runtime.Synthetic(name)
	if err != nil {
		t.Fatal(err)
	}
	r, err := runtime.NewRunner(m, cpu.New(0), maxRows)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func streamTokens(n int, seed uint64) []int {
	rng := rand.New(rand.NewPCG(seed, 5))
	out := make([]int, n)
	for i := range out {
		out[i] = 3 + rng.IntN(256)
	}
	return out
}

// refAttn recomputes attention probabilities independently of the backend's
// kernel: it copies the queries and the cached keys out through Backend.Read
// and does the softmax in float64.
type refAttn struct {
	be   runtime.Backend
	q    []float32
	keys [][]float32 // [kvHead] keys of the held tokens, [N*headDim], by index
}

func (x *refAttn) load(a *runtime.AttnArgs) {
	hd := a.HeadDim
	x.q = slices.Grow(x.q[:0], a.Rows*a.Heads*hd)[:a.Rows*a.Heads*hd]
	x.be.Read(x.q, a.Q, 0)
	x.keys = x.keys[:0]
	for g := range a.Seqs {
		s := &a.Seqs[g]
		k := make([]float32, s.N*hd)
		for t := 0; t < s.N; t++ {
			x.be.Read(k[t*hd:(t+1)*hd], s.K[t/s.PageSize], (t%s.PageSize)*hd)
		}
		x.keys = append(x.keys, k)
	}
}

// probs returns the softmax probabilities of query row r, head h over the
// tokens of its KV head, by index (0 where the causal mask hides a token).
func (x *refAttn) probs(a *runtime.AttnArgs, r, h int) []float64 {
	hd := a.HeadDim
	g := h / (a.Heads / a.KVHeads)
	s := &a.Seqs[g]
	q := x.q[(r*a.Heads+h)*hd : (r*a.Heads+h+1)*hd]
	out := make([]float64, s.N)
	m := math.Inf(-1)
	for t := 0; t < s.N; t++ {
		if int(s.Pos[t]) > a.QPos[r] {
			out[t] = math.Inf(-1)
			continue
		}
		var d float64
		for i := 0; i < hd; i++ {
			d += float64(q[i]) * float64(x.keys[g][t*hd+i])
		}
		out[t] = d / math.Sqrt(float64(hd))
		m = max(m, out[t])
	}
	var sum float64
	for t, v := range out {
		if math.IsInf(v, -1) {
			out[t] = 0
			continue
		}
		out[t] = math.Exp(v - m)
		sum += out[t]
	}
	for t := range out {
		out[t] /= sum
	}
	return out
}

// heldPositions copies the positions each KV head of layer l holds.
func heldPositions(c *runtime.KVCache, l int) [][]int32 {
	seqs := c.Seqs(l)
	out := make([][]int32, len(seqs))
	for h := range seqs {
		out[h] = slices.Clone(seqs[h].Pos[:seqs[h].N])
	}
	return out
}

// minus returns the positions of a not in b.
func minus(a, b []int32) []int32 {
	var out []int32
	for _, p := range a {
		if !slices.Contains(b, p) {
			out = append(out, p)
		}
	}
	return out
}

// evictionChecker checks one eviction against reference keys: exactly want
// tokens leave, all of them from cands, and none has a key above a kept
// candidate's by more than tol (ties: the older position goes first). It
// counts the decisions whose margin exceeds tol, which the reference then
// fixes exactly.
type evictionChecker struct {
	t                 *testing.T
	evictions, strict int
}

func (e *evictionChecker) check(what string, cands []int32, key func(pos int32) float64, evicted []int32, want int) {
	t := e.t
	t.Helper()
	if len(evicted) != want {
		t.Fatalf("%s: evicted %v (%d tokens), want %d tokens evicted", what, evicted, len(evicted), want)
	}
	if want == 0 {
		return
	}
	e.evictions++
	tol := 1e-4
	for _, p := range evicted {
		if !slices.Contains(cands, p) {
			t.Fatalf("%s: evicted position %d, which is not a candidate (%v)", what, p, cands)
		}
	}
	// The reference's own choice, and its margin.
	ref := slices.Clone(cands)
	slices.SortFunc(ref, func(x, y int32) int {
		kx, ky := key(x), key(y)
		if kx != ky {
			if kx < ky {
				return -1
			}
			return 1
		}
		return int(x - y)
	})
	for _, p := range evicted {
		for _, k := range cands {
			if slices.Contains(evicted, k) {
				continue
			}
			if key(p) > key(k)+tol*(1+math.Abs(key(k))) {
				t.Fatalf("%s: evicted position %d (reference score %.9g) but kept %d (%.9g)", what, p, key(p), k, key(k))
			}
		}
	}
	if want == len(ref) {
		e.strict++ // no choice to make
	} else if key(ref[want])-key(ref[want-1]) > tol*(1+math.Abs(key(ref[want]))) {
		e.strict++
		got := slices.Clone(evicted)
		slices.Sort(got)
		exp := slices.Clone(ref[:want])
		slices.Sort(exp)
		if !slices.Equal(got, exp) {
			t.Fatalf("%s: evicted %v, reference evicts %v", what, got, exp)
		}
	}
}

// h2oRef wraps the h2o policy's hook: it recomputes every layer's attention
// probabilities in float64, accumulates its own scores by position, and checks
// every eviction and the policy's scores against them.
type h2oRef struct {
	t             *testing.T
	inner         runtime.Hook
	pol           interface{ Scores(l, h int) []float64 }
	cache         *runtime.KVCache
	ref           refAttn
	heavy, recent int
	normalize     bool
	proto         protocol
	score         [][]map[int32]float64 // [layer][kvHead] position -> accumulated probability
	chk           evictionChecker
	maxErr        float64
}

func (x *h2oRef) key(l, g int, lastQ int32) func(pos int32) float64 {
	return func(pos int32) float64 {
		s := x.score[l][g][pos]
		if x.normalize {
			s /= float64(lastQ - pos + 1)
		}
		return s
	}
}

// checkEviction compares what left layer l with what H2O must evict, given
// the newest position and the last query accumulated.
func (x *h2oRef) checkEviction(what string, l int, pre, post [][]int32, newest, lastQ int32) {
	for g := range pre {
		lo := newest - int32(x.recent) + 1
		var cands []int32
		for _, p := range pre[g] {
			if p < lo {
				cands = append(cands, p)
			}
		}
		want := 0
		if len(pre[g]) > x.heavy+x.recent {
			want = max(0, len(cands)-x.heavy)
		}
		x.chk.check(what, cands, x.key(l, g, lastQ), minus(pre[g], post[g]), want)
		for _, p := range minus(pre[g], post[g]) {
			delete(x.score[l][g], p)
		}
	}
}

func (x *h2oRef) BeforeAttend(l int, a *runtime.AttnArgs) {
	pre := heldPositions(x.cache, l)
	x.inner.BeforeAttend(l, a)
	post := heldPositions(x.cache, l)
	if x.proto.before(a) {
		x.checkEviction("decode", l, pre, post, int32(a.QPos[0]), int32(a.QPos[0])-1)
	} else {
		for g := range pre {
			if !slices.Equal(pre[g], post[g]) {
				x.t.Fatalf("a prompt chunk evicted before its attention")
			}
		}
	}
	if a.Acc == nil {
		x.t.Fatalf("h2o did not ask attention to accumulate probabilities")
	}
	// The reference probabilities of every row and head, summed by position.
	x.ref.load(a)
	group := a.Heads / a.KVHeads
	for r := 0; r < a.Rows; r++ {
		for h := 0; h < a.Heads; h++ {
			g := h / group
			for t, p := range x.ref.probs(a, r, h) {
				x.score[l][g][a.Seqs[g].Pos[t]] += p
			}
		}
	}
}

func (x *h2oRef) AfterAttend(l int, a *runtime.AttnArgs) {
	pre := heldPositions(x.cache, l)
	x.inner.AfterAttend(l, a)
	post := heldPositions(x.cache, l)
	if x.proto.after(a) {
		last := int32(a.QPos[a.Rows-1])
		x.checkEviction("prompt chunk", l, pre, post, last, last)
	} else {
		for g := range pre {
			if !slices.Equal(pre[g], post[g]) {
				x.t.Fatalf("rows %d..%d (%s prompt of %d) evicted after their attention", a.QPos[0], a.QPos[a.Rows-1], x.proto, x.proto.prompt)
			}
		}
	}
	// The policy's scores, index by index, against the reference's by
	// position: this also checks that they moved with their tokens.
	seqs := x.cache.Seqs(l)
	for g := range seqs {
		sc := x.pol.Scores(l, g)
		if len(sc) != seqs[g].N {
			x.t.Fatalf("layer %d head %d: policy has %d scores for %d tokens", l, g, len(sc), seqs[g].N)
		}
		if len(x.score[l][g]) != seqs[g].N {
			x.t.Fatalf("layer %d head %d: reference tracks %d tokens, cache holds %d", l, g, len(x.score[l][g]), seqs[g].N)
		}
		for t, p := range seqs[g].Pos[:seqs[g].N] {
			want := x.score[l][g][p]
			err := math.Abs(sc[t]-want) / (1 + want)
			x.maxErr = max(x.maxErr, err)
			if err > 1e-5 {
				x.t.Fatalf("layer %d head %d position %d: policy score %.9g, reference %.9g", l, g, p, sc[t], want)
			}
		}
	}
}

// runH2ORef streams tokens through h2o under the reference checker, the
// prompt under the given protocol.
func runH2ORef(t *testing.T, model string, maxRows, prompt, steps int, params policies.Params, heavy, recent int, chunked bool) {
	r := tinyRunner(t, model, maxRows)
	p, err := policies.New("h2o", params)
	if err != nil {
		t.Fatal(err)
	}
	proto := protocol{prompt: prompt, chunked: chunked}
	proto.set(p)
	p.MeasureRecall(5)
	if err := p.Start(r); err != nil {
		t.Fatal(err)
	}
	c := r.Model.Config
	x := &h2oRef{t: t, inner: r.Hook, pol: p.(interface{ Scores(l, h int) []float64 }), cache: r.Cache,
		ref: refAttn{be: r.Backend}, heavy: heavy, recent: recent, proto: proto, chk: evictionChecker{t: t}}
	x.normalize, _ = params["normalize"].(bool)
	x.score = make([][]map[int32]float64, c.Layers)
	for l := range x.score {
		x.score[l] = make([]map[int32]float64, c.KVHeads)
		for g := range x.score[l] {
			x.score[l][g] = map[int32]float64{}
		}
	}
	r.Hook = x
	toks := streamTokens(prompt+steps, 17)
	logits := make([]float32, c.Vocab)
	if prompt > 0 {
		p.Prompt(prompt)
		if err := r.Forward(toks[:prompt], logits); err != nil {
			t.Fatal(err)
		}
	}
	for i := prompt; i < len(toks); i++ {
		if err := r.Forward(toks[i:i+1], logits); err != nil {
			t.Fatal(err)
		}
		for l := 0; l < c.Layers; l++ {
			for g := 0; g < c.KVHeads; g++ {
				if n := r.Cache.Len(l, g); i >= heavy+recent && n != heavy+recent {
					t.Fatalf("step %d layer %d head %d holds %d tokens, want %d", i, l, g, n, heavy+recent)
				}
			}
		}
	}
	if x.chk.evictions == 0 || x.chk.strict < x.chk.evictions/2 {
		t.Errorf("%d evictions, %d with a clear margin: the check is too weak", x.chk.evictions, x.chk.strict)
	}
	t.Logf("%d evictions checked, %d strictly; largest score error %.2g", x.chk.evictions, x.chk.strict, x.maxErr)
}

func TestH2OReference(t *testing.T) {
	for _, c := range []struct {
		name                   string
		model                  string
		maxRows, prompt, steps int
		heavy, recent          int
		normalize              bool
	}{
		{"decode", "tiny", 32, 0, 160, 6, 5, false},
		{"decode-normalize", "tiny", 32, 0, 160, 6, 5, true},
		{"prompt-chunks", "tiny", 16, 45, 100, 7, 4, false},
		{"prompt-chunks-normalize", "tiny", 16, 45, 100, 7, 4, true},
		{"prompt-one-row-last-chunk", "tiny", 16, 49, 60, 7, 4, false},
		{"no-heavy", "tiny", 8, 20, 60, 0, 6, false},
		{"mha", "tiny-mha", 8, 30, 100, 9, 3, false},
	} {
		for _, chunked := range []bool{false, true} {
			if c.prompt == 0 && chunked {
				continue
			}
			name := c.name
			if chunked {
				name += "/chunked"
			}
			t.Run(name, func(t *testing.T) {
				runH2ORef(t, c.model, c.maxRows, c.prompt, c.steps,
					policies.Params{"heavy": c.heavy, "recent": c.recent, "normalize": c.normalize}, c.heavy, c.recent, chunked)
			})
		}
	}
}

// With ratios the reference budget is the floor of ratio times the prompt.
func TestH2OReferenceRatios(t *testing.T) {
	runH2ORef(t, "tiny", 32, 60, 80, policies.Params{"heavy_ratio": 0.15, "recent_ratio": 0.1}, 9, 6, false)
	runH2ORef(t, "tiny", 32, 60, 80, policies.Params{"heavy_ratio": 0.15, "recent_ratio": 0.1}, 9, 6, true)
}

// After warm-up a decode step allocates nothing beyond what the runner does.
func TestH2ODecodeAllocs(t *testing.T) {
	testDecodeAllocs(t, "h2o", policies.Params{"heavy": 20, "recent": 12})
}

func testDecodeAllocs(t *testing.T, name string, params policies.Params) {
	r := tinyRunner(t, "tiny", 32)
	measure := func(p policies.Policy) float64 { return decodeAllocs(t, r, p, 200, 100) }
	// The baseline is the sliding window, bounded as well: what the runner
	// itself allocates per step (nothing today).
	window, err := policies.New("window", policies.Params{"window": 32})
	if err != nil {
		t.Fatal(err)
	}
	p, err := policies.New(name, params)
	if err != nil {
		t.Fatal(err)
	}
	base, got := measure(window), measure(p)
	t.Logf("allocations per decode step: %s %.2f, window %.2f", name, got, base)
	if got > base {
		t.Errorf("%s allocates %.1f times per decode step, the sliding window %.1f", name, got, base)
	}
}

// decodeAllocs starts p on a fresh stream of r, feeds a 40-token prompt and
// decode steps up to position warm, and returns the allocations per decode
// step over the next runs steps.
func decodeAllocs(t *testing.T, r *runtime.Runner, p policies.Policy, warm, runs int) float64 {
	t.Helper()
	logits := make([]float32, r.Model.Config.Vocab)
	r.Reset()
	if err := p.Start(r); err != nil {
		t.Fatal(err)
	}
	toks := streamTokens(warm+runs+2, 3)
	p.Prompt(40)
	if err := r.Forward(toks[:40], logits); err != nil {
		t.Fatal(err)
	}
	i := 40
	for ; i < warm; i++ {
		_ = r.Forward(toks[i:i+1], logits)
	}
	return testing.AllocsPerRun(runs, func() {
		_ = r.Forward(toks[i:i+1], logits)
		i++
	})
}
