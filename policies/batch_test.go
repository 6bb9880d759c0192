package policies_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// batchPolicies are the configurations the batch tests run: every kind of
// policy (keep all, position-based eviction with and without re-positioned
// keys, score-based eviction, selection without eviction, a prompt
// compressor), at budgets the streams outgrow.
var batchPolicies = []struct {
	name   string
	params policies.Params
}{
	{"full", nil},
	{"window", policies.Params{"budget": 20}},
	{"streamingllm", policies.Params{"budget": 24, "sinks": 4}},
	{"h2o", policies.Params{"budget": 24}},
	{"tova", policies.Params{"budget": 20}},
	{"quest", policies.Params{"budget": 32, "page": 8}},
	{"snapkv", policies.Params{"budget": 24, "window": 8}},
	{"oracle", policies.Params{"budget": 16}},
}

// batchStream is one stream of a batch test: an optional prompt fed alone
// (announced to the policy) at the batch step where the stream joins, then
// decode tokens fed one per batch step.
type batchStream struct {
	prompt []int
	decode []int
	join   int // the batch step of its first decode token
}

// batchStreams makes n streams of different prompt lengths (some none),
// decode lengths and joining steps.
func batchStreams(n int, vocab int, seed uint64) []batchStream {
	rng := rand.New(rand.NewPCG(seed, 11))
	tok := func(k int) []int {
		v := make([]int, k)
		for i := range v {
			v[i] = 3 + rng.IntN(vocab-3)
		}
		return v
	}
	out := make([]batchStream, n)
	for i := range out {
		plen := []int{0, 37, 5, 61, 0, 23}[i%6]
		out[i] = batchStream{prompt: tok(plen), decode: tok(40 + 13*i), join: (7 * i) % 17}
	}
	return out
}

// streamTrace is what a stream produced: after each decode step its logits
// (or the log-probability of the next token) and the positions every layer
// and KV head of its cache held; and the policy's final accounting.
type streamTrace struct {
	logits [][]float32
	lp     []float64
	held   []string
	stats  policies.Stats
}

// cacheHeld describes the positions held by every layer and KV head of
// a cache, in cache order (eviction moves tokens, so order is part of it).
func cacheHeld(c *runtime.KVCache, layers int) string {
	var b strings.Builder
	for l := range layers {
		for h, s := range c.Seqs(l) {
			fmt.Fprintf(&b, "%d/%d:%v;", l, h, s.Pos[:s.N])
		}
	}
	return b.String()
}

// startPolicy binds a fresh instance of a batch test policy to r.
func startPolicy(t testing.TB, r *runtime.Runner, name string, params policies.Params) policies.Policy {
	t.Helper()
	p, err := policies.New(name, params)
	if err != nil {
		t.Fatal(err)
	}
	p.MeasureRecall(5)
	if err := p.Start(r); err != nil {
		t.Fatal(err)
	}
	return p
}

// feedPrompt feeds a stream's prompt, announced, through its runner alone.
func feedPrompt(t testing.TB, r *runtime.Runner, p policies.Policy, prompt []int, logits []float32) {
	t.Helper()
	if len(prompt) == 0 {
		return
	}
	p.Prompt(len(prompt))
	if err := r.Forward(prompt, logits); err != nil {
		t.Fatal(err)
	}
}

// scoreStep says whether decode step j of a stream is scored as a
// log-probability (Batch.LogProbs) rather than returned as logits: the two
// alternate in runs of three.
func scoreStep(j int) bool { return (j/3)%2 == 1 }

// unbatchedTrace runs stream st alone on a runner of its own under the policy.
func unbatchedTrace(t testing.TB, m *runtime.Model, be runtime.Backend, name string, params policies.Params, st batchStream) streamTrace {
	t.Helper()
	return unbatchedTraceWith(t, m, be, name, params, st, nil)
}

// unbatchedTraceWith is unbatchedTrace with set (when not nil) called on
// the policy once it is started.
func unbatchedTraceWith(t testing.TB, m *runtime.Model, be runtime.Backend, name string, params policies.Params, st batchStream,
	set func(policies.Policy)) streamTrace {
	t.Helper()
	V := m.Config.Vocab
	r, err := runtime.NewRunner(m, be, 16)
	if err != nil {
		t.Fatal(err)
	}
	p := startPolicy(t, r, name, params)
	if set != nil {
		set(p)
	}
	logits := make([]float32, V)
	feedPrompt(t, r, p, st.prompt, logits)
	var tr streamTrace
	for j, tok := range st.decode {
		if err := r.Forward([]int{tok}, logits); err != nil {
			t.Fatalf("alone, step %d: %v", j, err)
		}
		if scoreStep(j) {
			tr.lp = append(tr.lp, runtime.LogProb(logits, nextTarget(st, j, V)))
		} else {
			tr.logits = append(tr.logits, slices.Clone(logits))
		}
		tr.held = append(tr.held, cacheHeld(r.Cache, m.Config.Layers))
	}
	tr.stats = cloneStats(p.Stats())
	return tr
}

// nextTarget is the token scored after decode step j of st.
func nextTarget(st batchStream, j, vocab int) int {
	if j+1 < len(st.decode) {
		return st.decode[j+1]
	}
	return (st.decode[0] + 1) % vocab
}

func cloneStats(s *policies.Stats) policies.Stats {
	c := *s
	c.Attended = make([][]int, len(s.Attended))
	for i := range s.Attended {
		c.Attended[i] = slices.Clone(s.Attended[i])
	}
	c.RecallByLayer = slices.Clone(s.RecallByLayer)
	c.RecallNByLayer = slices.Clone(s.RecallNByLayer)
	return c
}

// batchedTraces runs the streams as one batch on be: runners made with
// Sibling, each under its own instance of the policy; each batch step feeds
// the streams active at that step (joined, not yet done), splitting them
// into a logits group and a log-probability group by scoreStep.
func batchedTraces(t testing.TB, m *runtime.Model, be runtime.Backend, name string, params policies.Params, sts []batchStream) []streamTrace {
	t.Helper()
	return mixedTraces(t, m, be, func(int) (string, policies.Params) { return name, params }, sts)
}

// mixedTraces is batchedTraces with stream i under policy pick(i).
func mixedTraces(t testing.TB, m *runtime.Model, be runtime.Backend, pick func(i int) (string, policies.Params), sts []batchStream) []streamTrace {
	t.Helper()
	return mixedTracesWith(t, m, be, pick, sts, nil)
}

// mixedTracesWith is mixedTraces with set (when not nil) called on each
// stream's policy once it is started.
func mixedTracesWith(t testing.TB, m *runtime.Model, be runtime.Backend, pick func(i int) (string, policies.Params), sts []batchStream,
	set func(policies.Policy)) []streamTrace {
	t.Helper()
	V := m.Config.Vocab
	first, err := runtime.NewRunner(m, be, 16)
	if err != nil {
		t.Fatal(err)
	}
	runners := []*runtime.Runner{first}
	for range sts[1:] {
		r, err := first.Sibling()
		if err != nil {
			t.Fatal(err)
		}
		runners = append(runners, r)
	}
	b, err := runtime.NewBatch(runners...)
	if err != nil {
		t.Fatal(err)
	}
	pols := make([]policies.Policy, len(sts))
	for i := range sts {
		name, params := pick(i)
		pols[i] = startPolicy(t, runners[i], name, params)
		if set != nil {
			set(pols[i])
		}
	}
	traces := make([]streamTrace, len(sts))
	logits := make([]float32, len(sts)*V)
	lp := make([]float64, len(sts))
	done := 0
	for step := 0; done < len(sts); step++ {
		var ls, lt, ss, stok, starget []int
		for i, st := range sts {
			if step == st.join {
				feedPrompt(t, runners[i], pols[i], st.prompt, logits[:V])
			}
			j := step - st.join
			if j < 0 || j >= len(st.decode) {
				continue
			}
			if j == len(st.decode)-1 {
				done++
			}
			if scoreStep(j) {
				ss, stok, starget = append(ss, i), append(stok, st.decode[j]), append(starget, nextTarget(st, j, V))
			} else {
				ls, lt = append(ls, i), append(lt, st.decode[j])
			}
		}
		if len(ls) > 0 {
			if err := b.Step(ls, lt, logits); err != nil {
				t.Fatalf("batch step %d: %v", step, err)
			}
			for k, i := range ls {
				traces[i].logits = append(traces[i].logits, slices.Clone(logits[k*V:(k+1)*V]))
			}
		}
		if len(ss) > 0 {
			if err := b.LogProbs(ss, stok, starget, lp); err != nil {
				t.Fatalf("batch step %d (log probs): %v", step, err)
			}
			for k, i := range ss {
				traces[i].lp = append(traces[i].lp, lp[k])
			}
		}
		for i, st := range sts {
			if j := step - st.join; j >= 0 && j < len(st.decode) {
				traces[i].held = append(traces[i].held, cacheHeld(runners[i].Cache, m.Config.Layers))
			}
		}
	}
	for i := range sts {
		traces[i].stats = cloneStats(pols[i].Stats())
	}
	return traces
}

// cpuTol is how far a batched stream's logits and log-probabilities may be
// from the stream alone on the CPU, relative: not bit for bit, because the
// CPU's one-row matrix kernel (a decode step alone) sums each dot product in
// two interleaved halves and the multi-row kernels (a batch) in one, which
// rounds differently in the last bits.
const cpuTol = 1e-5

// relDiff is |a-b| / max(|a|, |b|, 1e-30).
func relDiff(a, b float64) float64 {
	if a == b {
		return 0
	}
	return math.Abs(a-b) / max(math.Abs(a), math.Abs(b), 1e-30)
}

// compareTraces checks a batched stream against the same stream alone:
// logits and log-probabilities within tol relative (0: bit for bit), the
// held positions identical after every step, and the policy's accounting
// identical (exact: tol 0) or identical but for the recall figures, which
// follow the scores.
func compareTraces(t *testing.T, what string, got, want streamTrace, tol float64) {
	t.Helper()
	if len(got.logits) != len(want.logits) || len(got.lp) != len(want.lp) || len(got.held) != len(want.held) {
		t.Fatalf("%s: %d/%d/%d logits/log-probs/steps batched, %d/%d/%d alone", what,
			len(got.logits), len(got.lp), len(got.held), len(want.logits), len(want.lp), len(want.held))
	}
	for j := range want.logits {
		// Relative to the largest logit of the call.
		var scale float64
		for _, w := range want.logits[j] {
			scale = max(scale, math.Abs(float64(w)))
		}
		for k := range want.logits[j] {
			g, w := got.logits[j][k], want.logits[j][k]
			if tol == 0 && math.Float32bits(g) != math.Float32bits(w) || math.Abs(float64(g)-float64(w)) > tol*scale {
				t.Fatalf("%s: logits call %d, token %d: %v batched, %v alone", what, j, k, g, w)
			}
		}
	}
	for j := range want.lp {
		// Relative, but never finer than tol nats: a log-probability near 0
		// (a token the model is sure of, -1e-12) is compared in absolute terms.
		if g, w := got.lp[j], want.lp[j]; tol == 0 && g != w || math.Abs(g-w) > tol*math.Max(1, math.Abs(w)) {
			t.Fatalf("%s: log-prob call %d: %v batched, %v alone", what, j, g, w)
		}
	}
	for j := range want.held {
		if got.held[j] != want.held[j] {
			t.Fatalf("%s: after decode step %d the cache holds\n%s\nbatched, and alone\n%s", what, j, got.held[j], want.held[j])
		}
	}
	gs, ws := got.stats, want.stats
	if tol != 0 {
		if relDiff(gs.RecallSum, ws.RecallSum) > 1e-4 {
			t.Errorf("%s: recall sum %v batched, %v alone", what, gs.RecallSum, ws.RecallSum)
		}
		gs.RecallSum, gs.RecallByLayer = ws.RecallSum, ws.RecallByLayer
	}
	if !reflect.DeepEqual(gs, ws) {
		t.Errorf("%s: accounting\n%+v batched,\n%+v alone", what, gs, ws)
	}
}

// TestBatchMatchesAlone steps six streams of different prompt lengths,
// decode lengths and joining times as one batch (with the members of each
// step changing as streams join and finish, logits and log-probability
// steps interleaved, and prompts fed alone between batch steps) under
// every kind of policy, and checks every stream against the same stream run
// alone: logits and log-probabilities within cpuTol, the positions its cache
// holds after every step, and its policy's accounting. Models: GQA, q/k/v
// biases, interleaved RoPE with an untied head, and dynamic RoPE scaling
// (each stream's frequencies follow its own length inside one step).
func TestBatchMatchesAlone(t *testing.T) {
	be := cpu.New(2)
	defer be.Close()
	dynamic := func(m *runtime.Model) {
		m.Config.RopeScaling = runtime.RopeScaling{Type: runtime.RopeDynamic, Factor: 2, OriginalMaxSeq: 32}
	}
	for _, mc := range []struct {
		name string
		edit func(*runtime.Model)
		skip map[string]bool // policies that re-position keys, which the runner refuses under scaled RoPE
	}{
		{"tiny", nil, nil},
		{"tiny-qwen", nil, nil},
		{"tiny-interleaved", nil, nil},
		{"tiny", dynamic, map[string]bool{"streamingllm": true}},
	} {
		m, err := runtime.Synthetic(mc.name)
		if err != nil {
			t.Fatal(err)
		}
		label := mc.name
		if mc.edit != nil {
			mc.edit(m)
			if err := m.Check(); err != nil {
				t.Fatal(err)
			}
			label += "-dynamic"
		}
		sts := batchStreams(6, m.Config.Vocab, 3)
		for _, pc := range batchPolicies {
			if mc.skip[pc.name] {
				continue
			}
			t.Run(label+"/"+pc.name, func(t *testing.T) {
				got := batchedTraces(t, m, be, pc.name, pc.params, sts)
				for i, st := range sts {
					want := unbatchedTrace(t, m, be, pc.name, pc.params, st)
					compareTraces(t, fmt.Sprintf("stream %d", i), got[i], want, cpuTol)
				}
			})
		}
	}
}

// TestBatchLanesMatchAlone: a batch of streams enough for lanes
// (runtime.KVLaner: each stream's appends, evictions and policy hooks on a
// goroutine of its own) gives each stream what it gives alone, under the
// lane-safe policies and, in the same batch shape, under those that are not
// (one after another); run it with -race.
func TestBatchLanesMatchAlone(t *testing.T) {
	defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(4))
	t.Setenv("KVBENCH_LANES", "2") // the test's steps feed 2 to 12 streams
	be := cpu.New(2)
	defer be.Close()
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	sts := batchStreams(12, m.Config.Vocab, 5)
	for _, pc := range append(batchPolicies, struct {
		name   string
		params policies.Params
	}{"random", policies.Params{"budget": 20, "seed": 3}}) {
		t.Run(pc.name, func(t *testing.T) {
			got := batchedTraces(t, m, be, pc.name, pc.params, sts)
			for i, st := range sts {
				want := unbatchedTrace(t, m, be, pc.name, pc.params, st)
				compareTraces(t, fmt.Sprintf("stream %d", i), got[i], want, cpuTol)
			}
		})
	}
}

// TestBatchMixed steps one batch whose streams run different policies
// (batchPolicies, one a stream, in turn) and checks each stream against
// itself alone, as TestBatchMatchesAlone does for one policy: a batch's
// calls of different kinds (plain, re-positioned, scored, selecting,
// compressing) step together.
func TestBatchMixed(t *testing.T) {
	be := cpu.New(2)
	defer be.Close()
	compareMixed(t, be)
}

// compareMixed is TestBatchMixed on be.
func compareMixed(t *testing.T, be runtime.Backend) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	pick := func(i int) (string, policies.Params) {
		p := batchPolicies[i%len(batchPolicies)]
		return p.name, p.params
	}
	sts := batchStreams(len(batchPolicies)+2, m.Config.Vocab, 5)
	got := mixedTraces(t, m, be, pick, sts)
	for i, st := range sts {
		name, params := pick(i)
		compareTraces(t, fmt.Sprintf("stream %d (%s)", i, name), got[i], unbatchedTrace(t, m, be, name, params, st), 1e-5)
	}
}
