package runtime_test

import (
	"errors"
	"math"
	"math/rand/v2"
	goruntime "runtime"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// siblings returns n runners of m on be (prefill chunks of maxRows), the
// first made by NewRunner and the rest by its Sibling.
func siblings(tb testing.TB, m *runtime.Model, be runtime.Backend, maxRows, n int) []*runtime.Runner {
	tb.Helper()
	first, err := runtime.NewRunner(m, be, maxRows)
	if err != nil {
		tb.Fatal(err)
	}
	rs := []*runtime.Runner{first}
	for len(rs) < n {
		r, err := first.Sibling()
		if err != nil {
			tb.Fatal(err)
		}
		rs = append(rs, r)
	}
	return rs
}

// batchRunners returns n runners of m on be made with Sibling, each fed a
// prompt of a different length, so that the batch's streams sit at
// different positions.
func batchRunners(t *testing.T, m *runtime.Model, be runtime.Backend, n int) []*runtime.Runner {
	t.Helper()
	rs := siblings(t, m, be, 8, n)
	logits := make([]float32, m.Config.Vocab)
	for i, r := range rs {
		if err := r.Forward(randTokens(3+5*i, m.Config.Vocab, uint64(i)), logits); err != nil {
			t.Fatal(err)
		}
	}
	return rs
}

// tinyBatch returns the tiny synthetic model, n of its runners on a CPU
// backend (closed with the test), fed prompts of different lengths, and a
// batch over them.
func tinyBatch(t *testing.T, n int) (*runtime.Model, []*runtime.Runner, *runtime.Batch) {
	t.Helper()
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	be := cpu.New(1)
	t.Cleanup(func() { be.Close() })
	rs := batchRunners(t, m, be, n)
	b, err := runtime.NewBatch(rs...)
	if err != nil {
		t.Fatal(err)
	}
	return m, rs, b
}

func randTokens(n, vocab int, seed uint64) []int {
	rng := rand.New(rand.NewPCG(seed, 9))
	v := make([]int, n)
	for i := range v {
		v[i] = rng.IntN(vocab)
	}
	return v
}

// noViewBackend hides every optional capability of the CPU backend, the
// Viewer among them.
type noViewBackend struct{ runtime.Backend }

// TestBatchWithoutViewer checks a batch on a backend that cannot give a
// stream views of the batch's rows: its streams step one after another,
// bit for bit what each gives alone, and so do log-probabilities and a
// step that reads no logits back.
func TestBatchWithoutViewer(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cb := cpu.New(1)
	defer cb.Close()
	be := noViewBackend{cb}
	V := m.Config.Vocab
	batched := batchRunners(t, m, be, 3)
	alone := batchRunners(t, m, be, 3)
	b, err := runtime.NewBatch(batched...)
	if err != nil {
		t.Fatal(err)
	}
	logits := make([]float32, 3*V)
	one := make([]float32, V)
	lp := make([]float64, 3)
	for step := range 6 {
		toks := randTokens(3, V, uint64(100+step))
		streams := []int{2, 0, 1}
		switch step % 3 {
		case 0:
			if err := b.Step(streams, toks, logits); err != nil {
				t.Fatal(err)
			}
		case 1:
			if err := b.LogProbs(streams, toks, []int{1, 2, 3}, lp); err != nil {
				t.Fatal(err)
			}
		default:
			if err := b.Step(streams, toks, nil); err != nil {
				t.Fatal(err)
			}
		}
		for j, i := range streams {
			if err := alone[i].Forward(toks[j:j+1], one); err != nil {
				t.Fatal(err)
			}
			switch step % 3 {
			case 0:
				for k := range one {
					if math.Float32bits(one[k]) != math.Float32bits(logits[j*V+k]) {
						t.Fatalf("step %d stream %d token %d: %v batched, %v alone", step, i, k, logits[j*V+k], one[k])
					}
				}
			case 1:
				if want := runtime.LogProb(one, j+1); lp[j] != want {
					t.Fatalf("step %d stream %d: log-prob %v batched, %v alone", step, i, lp[j], want)
				}
			}
			if batched[i].Pos() != alone[i].Pos() {
				t.Fatalf("step %d stream %d at position %d, alone %d", step, i, batched[i].Pos(), alone[i].Pos())
			}
		}
	}
}

// TestBatchErrors checks that bad batches and bad steps are errors that say
// what is wrong, never panics.
func TestBatchErrors(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	other, err := runtime.Synthetic("tiny-mha")
	if err != nil {
		t.Fatal(err)
	}
	be := cpu.New(1)
	defer be.Close()
	be2 := cpu.New(1)
	defer be2.Close()
	rs := batchRunners(t, m, be, 2)
	onOther, err := runtime.NewRunner(m, be2, 1)
	if err != nil {
		t.Fatal(err)
	}
	ofOther, err := runtime.NewRunner(other, be, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		runners []*runtime.Runner
		want    string
	}{
		{nil, "no runners"},
		{[]*runtime.Runner{rs[0], nil}, "runner 1 is nil"},
		{[]*runtime.Runner{rs[0], rs[1], rs[0]}, "runners 0 and 2 are the same"},
		{[]*runtime.Runner{rs[0], ofOther}, "a batch runs one model"},
		{[]*runtime.Runner{rs[0], onOther}, "a batch runs on one backend"},
	} {
		if _, err := runtime.NewBatch(c.runners...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewBatch: error %v, want one saying %q", err, c.want)
		}
	}
	b, err := runtime.NewBatch(rs...)
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.Vocab
	logits := make([]float32, 2*V)
	out := make([]float64, 2)
	pos0, pos1 := rs[0].Pos(), rs[1].Pos()
	for _, c := range []struct {
		name string
		run  func() error
		want string
	}{
		{"no streams", func() error { return b.Step(nil, nil, logits) }, "no streams"},
		{"tokens", func() error { return b.Step([]int{0, 1}, []int{1}, logits) }, "1 tokens for 2 streams"},
		{"index", func() error { return b.Step([]int{0, 2}, []int{1, 1}, logits) }, "stream 2 of a batch of 2"},
		{"negative", func() error { return b.Step([]int{-1}, []int{1}, logits) }, "stream -1 of a batch of 2"},
		{"twice", func() error { return b.Step([]int{1, 1}, []int{1, 1}, logits) }, "stream 1 given twice"},
		{"vocab", func() error { return b.Step([]int{0, 1}, []int{1, V}, logits) }, "token " + itoa(V) + " of stream 1 is outside the vocabulary"},
		{"logits", func() error { return b.Step([]int{0, 1}, []int{1, 1}, logits[:V]) }, "logits buffer holds"},
		{"targets", func() error { return b.LogProbs([]int{0, 1}, []int{1, 1}, []int{1}, out) }, "2 streams, 1 targets"},
		{"target", func() error { return b.LogProbs([]int{0, 1}, []int{1, 1}, []int{1, -3}, out) }, "target -3 of stream 1 is outside"},
	} {
		if err := c.run(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.want)
		}
	}
	if rs[0].Pos() != pos0 || rs[1].Pos() != pos1 {
		t.Errorf("a refused step moved the streams: positions %d, %d, were %d, %d", rs[0].Pos(), rs[1].Pos(), pos0, pos1)
	}
}

func itoa(n int) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
		if n == 0 {
			return string(b)
		}
	}
}

// TestBatchStepAllocatesNothing checks that a steady batch step (logits or
// log-probabilities) allocates nothing on the host.
func TestBatchStepAllocatesNothing(t *testing.T) {
	m, rs, b := tinyBatch(t, 4)
	for _, r := range rs {
		r.Cache.Reserve(1000)
	}
	V := m.Config.Vocab
	streams, toks, targets := []int{0, 1, 2, 3}, []int{5, 6, 7, 8}, []int{1, 2, 3, 4}
	logits := make([]float32, 4*V)
	out := make([]float64, 4)
	step := func() {
		if err := b.Step(streams, toks, logits); err != nil {
			t.Fatal(err)
		}
		if err := b.LogProbs(streams, toks, targets, out); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 {
		step()
	}
	if n := testing.AllocsPerRun(50, step); n != 0 {
		t.Errorf("a batch step allocates %.1f times, want 0", n)
	}
}

// TestBatchPasses checks a step of more streams than one pass takes: five
// streams with passes of at most two rows (three passes) give each stream
// what it gives alone, within 1e-5 of its largest logit (passes of one and
// two rows run different CPU matrix kernels than one row alone), with
// logits and with log-probabilities.
func TestBatchPasses(t *testing.T) {
	defer runtime.SetMaxBatchRows(2)()
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	be := cpu.New(1)
	defer be.Close()
	V := m.Config.Vocab
	batched := batchRunners(t, m, be, 5)
	alone := batchRunners(t, m, be, 5)
	b, err := runtime.NewBatch(batched...)
	if err != nil {
		t.Fatal(err)
	}
	streams := []int{4, 1, 0, 3, 2}
	logits := make([]float32, 5*V)
	lp := make([]float64, 5)
	one := make([]float32, V)
	for step := range 4 {
		toks := randTokens(5, V, uint64(200+step))
		targets := randTokens(5, V, uint64(300+step))
		score := step%2 == 1
		if score {
			err = b.LogProbs(streams, toks, targets, lp)
		} else {
			err = b.Step(streams, toks, logits)
		}
		if err != nil {
			t.Fatal(err)
		}
		for j, i := range streams {
			if err := alone[i].Forward(toks[j:j+1], one); err != nil {
				t.Fatal(err)
			}
			var scale float64
			for _, v := range one {
				scale = max(scale, math.Abs(float64(v)))
			}
			if score {
				if want := runtime.LogProb(one, targets[j]); math.Abs(lp[j]-want) > 1e-5*math.Abs(want) {
					t.Fatalf("step %d stream %d: log-prob %v batched, %v alone", step, i, lp[j], want)
				}
				continue
			}
			for k, w := range one {
				if g := logits[j*V+k]; math.Abs(float64(g-w)) > 1e-5*scale {
					t.Fatalf("step %d stream %d token %d: %v batched, %v alone", step, i, k, g, w)
				}
			}
		}
	}
	for i := range batched {
		if batched[i].Pos() != alone[i].Pos() {
			t.Errorf("stream %d at position %d, alone %d", i, batched[i].Pos(), alone[i].Pos())
		}
	}
}

// laneBug is a lane-safe hook whose BeforeAttend fails on one stream: with
// a device-style error, or with a bug (an index out of range).
type laneBug struct {
	fail bool
	bug  bool
}

func (h *laneBug) LaneSafe() {}
func (h *laneBug) BeforeAttend(l int, a *runtime.AttnArgs) {
	if !h.fail || l != 1 {
		return
	}
	if h.bug {
		var s []int
		_ = s[l] // index out of range
	}
	panic(errors.New("out of memory (injected)"))
}
func (h *laneBug) AfterAttend(int, *runtime.AttnArgs) {}

// TestBatchLanePanics: a panic in one stream's hook on a lane reaches the
// caller of the batch step, after the lanes are joined: an error as an error
// (errors.Is finds it), a bug as a message with the lane's stack.
func TestBatchLanePanics(t *testing.T) {
	defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(4))
	t.Setenv("KVBENCH_LANES", "2")
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	be := cpu.New(1)
	defer be.Close()
	for _, bug := range []bool{false, true} {
		rs := batchRunners(t, m, be, 8)
		for i, r := range rs {
			r.Hook = &laneBug{fail: i == 5, bug: bug}
		}
		b, err := runtime.NewBatch(rs...)
		if err != nil {
			t.Fatal(err)
		}
		streams, toks := []int{0, 1, 2, 3, 4, 5, 6, 7}, []int{5, 6, 7, 8, 9, 10, 11, 12}
		p := func() (p any) {
			defer func() { p = recover() }()
			_ = b.Step(streams, toks, nil)
			return nil
		}()
		switch v := p.(type) {
		case error:
			if bug || !strings.Contains(v.Error(), "layer 1") || !strings.Contains(v.Error(), "injected") {
				t.Errorf("bug %v: the step panicked with the error %v", bug, v)
			}
		case string:
			if !bug || !strings.Contains(v, "index out of range") || !strings.Contains(v, "laneBug") {
				t.Errorf("bug %v: the step panicked with %q", bug, v)
			}
		default:
			t.Errorf("bug %v: the step panicked with %v (%T)", bug, p, p)
		}
	}
}
