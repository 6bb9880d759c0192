package tasks_test

import (
	"reflect"
	"testing"

	"github.com/kvbench/kvbench/bench"
	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/tasks"
)

// TestTrialsBatchedMatchAlone runs a passkey cell and a RULER cell with
// their trials in batches (the engine is a Batcher; batch 3 of 5 trials:
// a full batch and a ragged one) and one after another (batch 1, and a
// model that cannot batch), under policies that keep, evict by position, by
// score, and select: every trial's answer, prefill and generated count are
// the same, and the record says the batch.
func TestTrialsBatchedMatchAlone(t *testing.T) {
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
				one := run(t, newEngine(t, pc.name, pc.params), task.name, task.p)
				alone := run(t, unbatched{newEngine(t, pc.name, pc.params)}, task.name, task.p)
				bp := tasks.Params{"batch": 3}
				for k, v := range task.p {
					bp[k] = v
				}
				batched := run(t, newEngine(t, pc.name, pc.params), task.name, bp)
				if batched.Detail["batch"] != 3 || one.Detail["batch"] != 1 {
					t.Errorf("%s: batch recorded as %v and %v", task.name, batched.Detail["batch"], one.Detail["batch"])
				}
				if !reflect.DeepEqual(one.Detail["trials"], alone.Detail["trials"]) {
					t.Errorf("%s: batch 1 differs on a model that cannot batch", task.name)
				}
				if !reflect.DeepEqual(batched.Detail["trials"], one.Detail["trials"]) || !reflect.DeepEqual(batched.Metrics, one.Metrics) {
					t.Errorf("%s: trials in batches of 3:\n%v\none after another:\n%v", task.name, batched.Detail["trials"], one.Detail["trials"])
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
