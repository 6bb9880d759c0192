package tasks_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/bench"
	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/tasks"
)

// TestTrialsBatchedMatchAlone runs a passkey cell and a RULER cell with
// their trials in batches (the engine is a Batcher; batch 3 of 5 trials:
// a full batch and a ragged one; auto, the default: all 5, the engine's
// memory holding them) and one after another (batch 1, and a model that
// cannot batch), under policies that keep, evict by position, by score, and
// select: every trial's answer, prefill and generated count are the same,
// and the record says the batch.
func TestTrialsBatchedMatchAlone(t *testing.T) { compareTrialsBatched(t, "") }

// TestTrialsBatchedMatchAloneGPU is the same on the CUDA backend at f32
// precision (skipped without a GPU): the batch steps' logits read back from
// the device.
func TestTrialsBatchedMatchAloneGPU(t *testing.T) {
	skipWithoutGPU(t)
	compareTrialsBatched(t, "cuda")
}

// compareTrialsBatched runs the comparison on a backend ("": cpu).
func compareTrialsBatched(t *testing.T, backend string) {
	engine := func(policy string, params policies.Params) *bench.Engine {
		e := newEngine(t, policy, params)
		t.Cleanup(func() { e.Close() })
		if backend != "" {
			e.Backend, e.Precision = backend, "f32"
		}
		return e
	}
	for _, pc := range []struct {
		name   string
		params policies.Params
	}{
		{"full", nil},
		{"streamingllm", policies.Params{"budget": 64, "sinks": 4}},
		{"h2o", policies.Params{"budget": 64}},
		{"quest", policies.Params{"budget": 64, "page": 8}},
	} {
		t.Run(pc.name, func(t *testing.T) {
			for _, task := range []struct {
				name string
				p    tasks.Params
			}{
				{"passkey", tasks.Params{"lengths": 300, "depths": 0.3, "trials": 5, "seed": 3, "decode_tail": 30}},
				{"niah_single_1", tasks.Params{"lengths": 600, "trials": 5, "seed": 3, "decode_tail": 30, "max_new": 16}},
			} {
				with := func(b any) tasks.Params {
					q := tasks.Params{"batch": b}
					for k, v := range task.p {
						q[k] = v
					}
					return q
				}
				one := run(t, engine(pc.name, pc.params), task.name, with(1))
				alone := run(t, unbatched{engine(pc.name, pc.params)}, task.name, task.p)
				batched := run(t, engine(pc.name, pc.params), task.name, with(3))
				auto := run(t, engine(pc.name, pc.params), task.name, task.p) // batch: auto, the default
				for _, c := range []struct {
					res  *tasks.Result
					want int
				}{{one, 1}, {alone, 1}, {batched, 3}, {auto, 5}} {
					if c.res.Detail["batch"] != c.want {
						t.Errorf("%s: batch recorded as %v, want %d", task.name, c.res.Detail["batch"], c.want)
					}
				}
				if !reflect.DeepEqual(one.Detail["trials"], alone.Detail["trials"]) {
					t.Errorf("%s: batch 1 differs on a model that cannot batch", task.name)
				}
				for _, r := range []*tasks.Result{batched, auto} {
					if !reflect.DeepEqual(r.Detail["trials"], one.Detail["trials"]) || !reflect.DeepEqual(r.Metrics, one.Metrics) {
						t.Errorf("%s: trials in batches of %v:\n%v\none after another:\n%v", task.name, r.Detail["batch"], r.Detail["trials"], one.Detail["trials"])
					}
				}
			}
		})
	}
}

// TestPasskeyBatchedRefModel: kvbench-ref-13m answers the passkey at 1K the
// same with its trials batched (4 at once) as one after another.
func TestPasskeyBatchedRefModel(t *testing.T) {
	if testing.Short() {
		t.Skip("a real model: skipped with -short")
	}
	m, tok, err := bench.OpenModel(fixtures.Path(t, "models/kvbench-ref-13m"), "")
	if err != nil {
		t.Fatal(err)
	}
	p := tasks.Params{"lengths": 1024, "depths": 0.5, "trials": 4, "seed": 2}
	res := map[int]*tasks.Result{}
	for _, b := range []int{1, 4} {
		e, err := bench.NewEngine(m, tok, "full", nil)
		if err != nil {
			t.Fatal(err)
		}
		q := tasks.Params{"batch": b}
		for k, v := range p {
			q[k] = v
		}
		res[b] = run(t, e, "passkey", q)
		e.Close()
	}
	if !reflect.DeepEqual(res[4].Detail["trials"], res[1].Detail["trials"]) {
		t.Errorf("batched:\n%v\none after another:\n%v", res[4].Detail["trials"], res[1].Detail["trials"])
	}
	if res[1].Metrics["accuracy"] < 0.75 {
		t.Errorf("accuracy %v at 1K with full attention (the model retrieves: FIXTURES.md)", res[1].Metrics["accuracy"])
	}
}

// TestBatchParam: batch is auto or a count of 1 or more.
func TestBatchParam(t *testing.T) {
	for _, name := range []string{"passkey", "niah_single_1"} {
		task, _ := tasks.Lookup(name)
		for _, bad := range []any{0, -2, "fast", 2.5} {
			err := task.Check(tasks.Params{"lengths": 1000, "batch": bad})
			if err == nil || !strings.Contains(err.Error(), "batch") {
				t.Errorf("%s with batch %v: %v, want an error naming batch", name, bad, err)
			}
		}
		for _, good := range []any{1, 8, "auto"} {
			if err := task.Check(tasks.Params{"lengths": 1000, "batch": good}); err != nil {
				t.Errorf("%s with batch %v: %v", name, good, err)
			}
		}
	}
}

// failingBatcher is a Batcher whose batches' stream fail (its Prompt) says
// so: a trial that cannot run.
type failingBatcher struct {
	*bench.Engine
	fail int
}

func (f failingBatcher) NewBatch(n int) (tasks.Batch, error) {
	b, err := f.Engine.NewBatch(n)
	if err != nil {
		return nil, err
	}
	return failingBatch{b, f.fail}, nil
}

type failingBatch struct {
	tasks.Batch
	fail int
}

func (b failingBatch) Stream(i int) tasks.Stream {
	if i == b.fail {
		return failingStream{b.Batch.Stream(i)}
	}
	return b.Batch.Stream(i)
}

type failingStream struct{ tasks.Stream }

func (failingStream) Prompt([]int, []float32) error { return errors.New("out of memory (injected)") }

// TestTrialsBatchedFailure: a trial that fails in a batch fails the cell
// with an error naming the trial (prompt 2 of the cell: the third) and the
// reason.
func TestTrialsBatchedFailure(t *testing.T) {
	e := newEngine(t, "full", nil)
	defer e.Close()
	task, _ := tasks.Lookup("passkey")
	_, err := task.Run(t.Context(), failingBatcher{e, 2}, tasks.Params{"lengths": 300, "trials": 4, "batch": 4})
	if err == nil || !strings.Contains(err.Error(), "prompt 2") || !strings.Contains(err.Error(), "out of memory (injected)") {
		t.Errorf("a failing trial in a batch: %v", err)
	}
}
