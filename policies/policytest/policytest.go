// Package policytest is the conformance suite every KV-cache policy's tests
// call: budgets are respected at every step, a budget at least the stream
// length reproduces full attention exactly, bounded policies hold flat memory
// over a long stream, and runs are deterministic.
package policytest

import (
	"math"
	"math/rand/v2"
	"runtime/debug"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// Case is one policy configuration to check.
type Case struct {
	Policy string
	// Small has budgets well below the stream lengths used here (tens of
	// tokens); Large has budgets at least 4096 tokens.
	Small, Large policies.Params
	// Prompt is the length of a prefilled prompt before the decode steps;
	// policies that act on the prompt (snapkv) need one. 0 streams every
	// token one at a time.
	Prompt int
	// Prefill is the protocol of the prompt (default policies.PrefillDense).
	Prefill policies.Prefill
	// LongSteps is the length of the flat-memory stream (default 100,000).
	LongSteps int
}

// Backend returns the backend the suite runs on.
var Backend = func() runtime.Backend { return cpu.New(0) }

// Run checks c against the suite.
func Run(t *testing.T, c Case) {
	t.Run("budget", func(t *testing.T) { testBudget(t, c) })
	t.Run("equals-full", func(t *testing.T) { testEqualsFull(t, c) })
	t.Run("deterministic", func(t *testing.T) { testDeterministic(t, c) })
	t.Run("flat-memory", func(t *testing.T) { testFlatMemory(t, c) })
}

func model(t testing.TB) *runtime.Model {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// stream is a runner with a policy over a fixed random token stream.
type stream struct {
	r      *runtime.Runner
	p      policies.Policy
	tokens []int
	logits []float32
}

func newStream(t testing.TB, be runtime.Backend, m *runtime.Model, name string, params policies.Params, pre policies.Prefill, recall int) *stream {
	t.Helper()
	p, err := policies.New(name, params)
	if err != nil {
		t.Fatal(err)
	}
	p.SetPrefill(pre)
	r, err := runtime.NewRunner(m, be, 32)
	if err != nil {
		t.Fatal(err)
	}
	p.MeasureRecall(recall)
	if err := p.Start(r); err != nil {
		t.Fatal(err)
	}
	return &stream{r: r, p: p, logits: make([]float32, m.Config.Vocab)}
}

func tokens(n int, seed uint64) []int {
	rng := rand.New(rand.NewPCG(seed, 11))
	out := make([]int, n)
	for i := range out {
		out[i] = 3 + rng.IntN(256)
	}
	return out
}

// feed runs the prompt (if any) then single tokens; after every step it calls
// check with the step index and the logits.
func (s *stream) feed(t testing.TB, toks []int, prompt int, check func(step int, logits []float32)) {
	t.Helper()
	i := 0
	if prompt > 0 {
		s.p.Prompt(prompt)
		if err := s.r.Forward(toks[:prompt], s.logits); err != nil {
			t.Fatal(err)
		}
		i = prompt
		if check != nil {
			check(i-1, s.logits)
		}
	}
	for ; i < len(toks); i++ {
		if err := s.r.Forward(toks[i:i+1], s.logits); err != nil {
			t.Fatal(err)
		}
		if check != nil {
			check(i, s.logits)
		}
	}
}

func testBudget(t *testing.T, c Case) {
	be := Backend()
	m := model(t)
	s := newStream(t, be, m, c.Policy, c.Small, c.Prefill, 7)
	toks := tokens(300, 1)
	pageBytes, pages := s.r.Cache.PageBytes(), func(n int) int64 { return int64((n + s.r.Cache.PageSize() - 1) / s.r.Cache.PageSize()) }
	heads := int64(m.Config.Layers * m.Config.KVHeads)
	hold, _ := s.p.LayerBudget(m.Config.Layers - 1)
	bounded := s.p.Evicts() && hold > 0
	// What a bounded policy may hold at the end of a decode step: its budget
	// in pages, plus one partly filled page, in every layer and KV head.
	limit := heads * (pages(hold) + 1) * pageBytes
	s.feed(t, toks, c.Prompt, func(step int, _ []float32) {
		if step < c.Prompt {
			return
		}
		st := s.p.Stats()
		if bounded && st.ResidentBytes > limit {
			t.Fatalf("step %d: resident %d bytes, more than budget pages %d", step, st.ResidentBytes, limit)
		}
		for l := 0; l < m.Config.Layers; l++ {
			hold, attend := s.p.LayerBudget(l)
			for h := 0; h < m.Config.KVHeads; h++ {
				if n := s.r.Cache.Len(l, h); hold > 0 && n > hold {
					t.Fatalf("step %d layer %d kv head %d holds %d tokens, budget %d", step, l, h, n, hold)
				}
			}
			for h := 0; h < m.Config.Heads; h++ {
				if n := st.Attended[l][h]; attend > 0 && n > attend {
					t.Fatalf("step %d layer %d head %d attended %d tokens, budget %d", step, l, h, n, attend)
				}
			}
		}
	})
	st := s.p.Stats()
	if st.Steps != len(toks)-c.Prompt {
		t.Errorf("stats count %d decode steps, fed %d", st.Steps, len(toks)-c.Prompt)
	}
	if st.RecallN == 0 {
		t.Errorf("recall was never sampled")
	}
	if r := st.MeanRecall(); r < 0 || r > 1+1e-6 || math.IsNaN(r) {
		t.Errorf("mean recall %v outside [0, 1]", r)
	}
	if st.TotalBytesRead <= 0 || st.MaxResidentBytes <= 0 {
		t.Errorf("no bytes accounted: read %d, resident %d", st.TotalBytesRead, st.MaxResidentBytes)
	}
	if bounded {
		// The peak: the budget, or a prompt held whole until it is in
		// (the dense protocol), which the accounting must not hide.
		peak := limit
		if c.Prefill == policies.PrefillDense && c.Prompt > 0 {
			peak = max(peak, heads*pages(c.Prompt)*pageBytes)
			if whole := int64(m.Config.KVHeads) * pages(c.Prompt) * pageBytes; c.Prompt > hold && st.MaxResidentBytes < whole {
				t.Errorf("peak resident %d bytes, less than one layer holding the %d-token prompt (%d): the dense prompt's peak is not reported",
					st.MaxResidentBytes, c.Prompt, whole)
			}
		}
		if st.MaxResidentBytes > peak {
			t.Errorf("peak resident %d bytes, more than %d (budget pages, or the prompt)", st.MaxResidentBytes, peak)
		}
	}
	if st.MaxResidentBytes < st.ResidentBytes {
		t.Errorf("peak resident %d bytes, below the resident %d", st.MaxResidentBytes, st.ResidentBytes)
	}
}

// testEqualsFull checks that with a budget at least the stream length the
// policy gives exactly full attention's logits, and recall 1.
func testEqualsFull(t *testing.T, c Case) {
	be := Backend()
	m := model(t)
	toks := tokens(200, 2)
	var want [][]float32
	f := newStream(t, be, m, "full", nil, c.Prefill, 0)
	f.feed(t, toks, c.Prompt, func(_ int, lg []float32) { want = append(want, append([]float32(nil), lg...)) })
	s := newStream(t, be, m, c.Policy, c.Large, c.Prefill, 5)
	i := 0
	s.feed(t, toks, c.Prompt, func(step int, lg []float32) {
		for j := range lg {
			if lg[j] != want[i][j] {
				t.Fatalf("step %d: logit %d is %v, full attention gives %v", step, j, lg[j], want[i][j])
			}
		}
		i++
	})
	if r := s.p.Stats().MeanRecall(); math.Abs(r-1) > 1e-5 {
		t.Errorf("recall %v at full budget, want 1", r)
	}
}

func testDeterministic(t *testing.T, c Case) {
	be := Backend()
	m := model(t)
	toks := tokens(250, 3)
	run := func() ([]float32, policies.Stats) {
		s := newStream(t, be, m, c.Policy, c.Small, c.Prefill, 3)
		var all []float32
		s.feed(t, toks, c.Prompt, func(_ int, lg []float32) { all = append(all, lg[:8]...) })
		st := *s.p.Stats()
		return all, st
	}
	a, sa := run()
	b, sb := run()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("two runs differ at value %d: %v vs %v", i, a[i], b[i])
		}
	}
	if sa.TotalBytesRead != sb.TotalBytesRead || sa.RecallSum != sb.RecallSum || sa.MaxResidentBytes != sb.MaxResidentBytes {
		t.Errorf("two runs account differently: %+v vs %+v", sa, sb)
	}
}

// testFlatMemory streams LongSteps tokens through a bounded policy and checks
// that the cache's memory and the Go heap stop growing once the budget is
// reached.
func testFlatMemory(t *testing.T, c Case) {
	if testing.Short() {
		t.Skip("long stream skipped in -short mode")
	}
	be := Backend()
	m := model(t)
	s := newStream(t, be, m, c.Policy, c.Small, c.Prefill, 0)
	if !s.p.Evicts() {
		t.Skipf("%s does not evict: its memory grows with the stream by design", c.Policy)
	}
	hold, _ := s.p.LayerBudget(0)
	if hold == 0 {
		t.Skipf("%s holds an unbounded cache during decode", c.Policy)
	}
	steps := c.LongSteps
	if steps == 0 {
		steps = 100_000
	}
	warm := min(steps/10, 2000)
	toks := tokens(steps, 4)
	var alloc0 int64
	var heap0 uint64
	s.feed(t, toks, c.Prompt, func(step int, _ []float32) {
		switch {
		case step == warm:
			alloc0 = s.r.Cache.AllocatedBytes()
			heap0 = heapInUse()
		case step > warm && step%10000 == 0 || step == steps-1:
			if a := s.r.Cache.AllocatedBytes(); a != alloc0 {
				t.Fatalf("step %d: cache holds %d bytes, %d at step %d", step, a, alloc0, warm)
			}
		}
	})
	if h := heapInUse(); h > heap0+4<<20 {
		t.Errorf("Go heap grew from %d to %d bytes over %d steps", heap0, h, steps)
	}
}

func heapInUse() uint64 {
	debug.FreeOSMemory()
	var ms runtimeMemStats
	readMemStats(&ms)
	return ms.HeapInuse
}
