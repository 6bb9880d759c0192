package tasks_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/kvbench/kvbench/bench"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/tokenizer"
	"github.com/kvbench/kvbench/tasks"
)

var tiny = sync.OnceValues(func() (*runtime.Model, error) { return runtime.Synthetic("tiny") })

// newEngine returns synthetic:tiny with the byte tokenizer under policy.
func newEngine(t testing.TB, policy string, params policies.Params) *bench.Engine {
	t.Helper()
	m, err := tiny()
	if err != nil {
		t.Fatal(err)
	}
	e, err := bench.NewEngine(m, tokenizer.Bytes{}, policy, params)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// run runs a registered task, failing the test on error.
func run(t testing.TB, m tasks.Model, name string, p tasks.Params) *tasks.Result {
	t.Helper()
	task, err := tasks.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Check(p); err != nil {
		t.Fatal(err)
	}
	r, err := task.Run(context.Background(), m, p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// checkErrors asserts that Check rejects every case with an error naming the
// task and the parameter.
func checkErrors(t *testing.T, name string, cases map[string]struct {
	p     tasks.Params
	param string
}) {
	t.Helper()
	task, err := tasks.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	for label, c := range cases {
		err := task.Check(c.p)
		if err == nil {
			t.Errorf("%s: Check(%v) accepted bad parameters", label, c.p)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "task "+name) || !strings.Contains(msg, c.param) {
			t.Errorf("%s: error %q does not name task %s and parameter %s", label, msg, name, c.param)
		}
	}
}

func TestRegistered(t *testing.T) {
	for _, name := range []string{"needle", "passkey", "perplexity"} {
		task, err := tasks.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if task.Name() != name || task.Version() < 1 || len(task.Metrics()) == 0 || len(task.Params()) == 0 {
			t.Errorf("%s: incomplete description", name)
		}
		for _, m := range task.Metrics() {
			if m.Better != "higher" && m.Better != "lower" {
				t.Errorf("%s: metric %s: Better %q", name, m.Name, m.Better)
			}
		}
		documented := map[string]bool{}
		for _, d := range task.Params() {
			documented[d.Name] = true
		}
		for _, e := range task.Expand() {
			if !documented[e] {
				t.Errorf("%s: expanded parameter %s is not documented", name, e)
			}
		}
	}
	if _, err := tasks.Lookup("passkye"); err == nil || !strings.Contains(err.Error(), "passkey") {
		t.Errorf("Lookup(passkye) = %v, want a suggestion of passkey", err)
	}
}

func TestArgmax(t *testing.T) {
	for _, c := range []struct {
		v    []float32
		want int
	}{{nil, -1}, {[]float32{1}, 0}, {[]float32{1, 3, 3, 2}, 1}, {[]float32{-5, -2, -9}, 1}} {
		if got := tasks.Argmax(c.v); got != c.want {
			t.Errorf("Argmax(%v) = %d, want %d", c.v, got, c.want)
		}
	}
}

// scripted is a stream whose logits after each fed token point at the next
// token of a script.
type scripted struct {
	script []int
	fed    []int
}

func (s *scripted) set(logits []float32) {
	clear(logits)
	if i := len(s.fed); i < len(s.script) {
		logits[s.script[i]] = 1
	}
}
func (s *scripted) Prompt(ids []int, logits []float32) error {
	s.fed = append(s.fed, ids...)
	s.set(logits)
	return nil
}
func (s *scripted) Step(id int, logits []float32) error { return s.Prompt([]int{id}, logits) }
func (s *scripted) Pos() int                            { return len(s.fed) }
func (s *scripted) Stats() *policies.Stats              { return &policies.Stats{} }
func (s *scripted) Close()                              {}

func TestGreedy(t *testing.T) {
	// Position i predicts script[i]; the prompt is one token.
	s := &scripted{script: []int{0, 5, 6, 2, 7}}
	logits := make([]float32, 8)
	if err := s.Prompt([]int{4}, logits); err != nil {
		t.Fatal(err)
	}
	got, err := tasks.Greedy(context.Background(), s, logits, 10, 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{5, 6}; !reflect.DeepEqual(got, want) {
		t.Errorf("Greedy = %v, want %v (stop at EOS 2)", got, want)
	}
	if want := []int{4, 5, 6}; !reflect.DeepEqual(s.fed, want) {
		t.Errorf("fed %v, want %v", s.fed, want)
	}
	s = &scripted{script: []int{0, 5, 6, 2, 7}}
	s.Prompt([]int{4}, logits)
	if got, _ := tasks.Greedy(context.Background(), s, logits, 1, 2); !reflect.DeepEqual(got, []int{5}) {
		t.Errorf("Greedy n=1 = %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tasks.Greedy(ctx, s, logits, 3, -1); !errors.Is(err, context.Canceled) {
		t.Errorf("Greedy after cancel: %v", err)
	}
}
