package tasks_test

import (
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime/tokenizer"
	"github.com/kvbench/kvbench/tasks"
)

func TestPasskeyPrompt(t *testing.T) {
	got := tasks.PasskeyPrompt(4711, 2, 1)
	f := "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
	want := []string{
		"There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about the important information there.",
		f + " " + f,
		"The pass key is 4711. Remember it. 4711 is the pass key.",
		f,
		"What is the pass key? The pass key is",
	}
	if lines := strings.Split(got, "\n"); !reflect.DeepEqual(lines, want) {
		t.Errorf("PasskeyPrompt lines:\n%q\nwant\n%q", lines, want)
	}
}

func TestBuildPasskey(t *testing.T) {
	tok := tokenizer.Bytes{}
	per := len(tok.Encode(tasks.PasskeyFiller + " "))
	for _, length := range []int{400, 777, 1500, 5000} {
		for _, depth := range []float64{0, 0.3, 0.5, 1} {
			p := tasks.BuildPasskey(tok, length, depth, 123)
			if n := len(p.IDs); n > length || length-n > per {
				t.Errorf("length %d depth %v: %d tokens, want within a filler sentence (%d) below", length, depth, n, per)
			}
			if p.IDs[0] != tok.BOS() || tok.Decode(p.IDs) != p.Prompt {
				t.Errorf("length %d: ids are not BOS + the prompt", length)
			}
			if p.Prompt != tasks.PasskeyPrompt(123, p.Before, p.After) {
				t.Errorf("length %d depth %v: prompt differs from PasskeyPrompt", length, depth)
			}
			if want := int(depth*float64(p.Before+p.After) + 0.5); p.Before != want {
				t.Errorf("length %d depth %v: %d filler sentences before of %d", length, depth, p.Before, p.Before+p.After)
			}
		}
	}
	key := tasks.PasskeyLine(123)
	p0 := tasks.BuildPasskey(tok, 1000, 0, 123)
	if !strings.HasPrefix(p0.Prompt, tasks.PasskeyIntro+"\n\n"+key+"\n") {
		t.Errorf("depth 0: key line not right after the intro:\n%s", p0.Prompt)
	}
	p1 := tasks.BuildPasskey(tok, 1000, 1, 123)
	if !strings.HasSuffix(p1.Prompt, "\n"+key+"\n\n"+tasks.PasskeyQuestion) {
		t.Errorf("depth 1: key line not right before the question:\n%s", p1.Prompt)
	}
	if p1.Before == 0 || p0.After == 0 {
		t.Error("no filler at length 1000")
	}
	// Too short for any filler: the bare prompt, longer than asked.
	if p := tasks.BuildPasskey(tok, 50, 0.5, 123); p.Before+p.After != 0 || len(p.IDs) <= 50 {
		t.Errorf("length 50: %d filler sentences, %d tokens", p.Before+p.After, len(p.IDs))
	}
}

func TestFirstDigits(t *testing.T) {
	for in, want := range map[string]string{
		" 12345. Remember": "12345",
		"is 42":            "42",
		"no digits":        "",
		"a1b22":            "1",
		"007 and 8":        "007",
		"":                 "",
		"x٣4":              "4", // ASCII digits only
	} {
		if got := tasks.FirstDigits(in); got != want {
			t.Errorf("FirstDigits(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPasskeyKey(t *testing.T) {
	seen := map[int]bool{}
	for trial := range 200 {
		k := tasks.PasskeyKey(1, trial)
		if k < 1 || k > tasks.PasskeyMax {
			t.Fatalf("key %d out of range", k)
		}
		if k != tasks.PasskeyKey(1, trial) {
			t.Fatal("PasskeyKey is not deterministic")
		}
		seen[k] = true
	}
	if len(seen) < 190 || tasks.PasskeyKey(1, 0) == tasks.PasskeyKey(2, 0) {
		t.Errorf("keys barely vary: %d distinct of 200", len(seen))
	}
}

// shortContext is an engine that claims a short trained context.
type shortContext struct{ tasks.Model }

func (shortContext) MaxSeq() int { return 300 }

func TestPasskeyRun(t *testing.T) {
	e := newEngine(t, "full", nil)
	p := tasks.Params{"lengths": 420, "depths": 0.5, "trials": 2, "seed": 7, "decode_tail": 40}
	res := run(t, e, "passkey", p)
	acc := res.Metrics["accuracy"]
	if acc < 0 || acc > 1 {
		t.Errorf("accuracy %v", acc)
	}
	trials := res.Detail["trials"].([]tasks.PasskeyTrial)
	if len(trials) != 2 {
		t.Fatalf("%d trials", len(trials))
	}
	total := 0
	correct := 0
	for i, tr := range trials {
		if tr.Key != tasks.PasskeyKey(7, i) {
			t.Errorf("trial %d key %d, want %d", i, tr.Key, tasks.PasskeyKey(7, i))
		}
		if tr.Prefilled != tr.Tokens-40 || tr.Tokens > 420 || tr.Generated > 10 {
			t.Errorf("trial %d: %d prefilled of %d prompt tokens, %d generated", i, tr.Prefilled, tr.Tokens, tr.Generated)
		}
		if tr.Correct != (tasks.FirstDigits(tr.Answer) == strconv.Itoa(tr.Key)) {
			t.Errorf("trial %d: answer %q marked %v for key %d", i, tr.Answer, tr.Correct, tr.Key)
		}
		if tr.Correct {
			correct++
		}
		total += tr.Tokens + tr.Generated
	}
	if res.Tokens != total || acc != float64(correct)/2 {
		t.Errorf("Tokens %d (want %d), accuracy %v with %d correct", res.Tokens, total, acc, correct)
	}
	if _, over := res.Detail["over_max_seq"]; over {
		t.Error("length 420 marked over the trained context of 4096")
	}
	again := run(t, e, "passkey", p)
	if !reflect.DeepEqual(res, again) {
		t.Errorf("two runs with the same seed differ:\n%v\n%v", res, again)
	}
	short := run(t, shortContext{e}, "passkey", tasks.Params{"lengths": 420, "trials": 1})
	if short.Detail["over_max_seq"] != true || short.Detail["max_seq"] != 300 {
		t.Errorf("length 420 over a context of 300 not noted: %v", short.Detail)
	}
	// A tail longer than the prompt still prefills BOS.
	long := run(t, e, "passkey", tasks.Params{"lengths": 300, "trials": 1, "decode_tail": 1000})
	if tr := long.Detail["trials"].([]tasks.PasskeyTrial)[0]; tr.Prefilled != 1 {
		t.Errorf("decode_tail beyond the prompt: %d prefilled", tr.Prefilled)
	}
}

func TestPasskeyCheck(t *testing.T) {
	type c = struct {
		p     tasks.Params
		param string
	}
	checkErrors(t, "passkey", map[string]c{
		"missing lengths":  {tasks.Params{"depths": 0.5}, "lengths"},
		"negative length":  {tasks.Params{"lengths": -100}, "lengths"},
		"negative in list": {tasks.Params{"lengths": []any{1000, -1}}, "lengths"},
		"depth above 1":    {tasks.Params{"lengths": 1000, "depths": 1.5}, "depths"},
		"depth below 0":    {tasks.Params{"lengths": 1000, "depths": []any{0.5, -0.1}}, "depths"},
		"depth word":       {tasks.Params{"lengths": 1000, "depths": "middle"}, "depths"},
		"zero trials":      {tasks.Params{"lengths": 1000, "trials": 0}, "trials"},
		"negative seed":    {tasks.Params{"lengths": 1000, "seed": -1}, "seed"},
		"negative tail":    {tasks.Params{"lengths": 1000, "decode_tail": -5}, "decode_tail"},
		"unknown":          {tasks.Params{"lengths": 1000, "pooling": "avg"}, "pooling"},
	})
	task, _ := tasks.Lookup("passkey")
	if err := task.Check(tasks.Params{"lengths": []any{1000, 2000}, "depths": []float64{0, 0.5, 1}}); err != nil {
		t.Errorf("lists of lengths and depths: %v", err)
	}
	// In a cell, lists must have been expanded by the suite.
	if _, err := task.Run(t.Context(), newEngine(t, "full", nil), tasks.Params{"lengths": []any{300, 400}}); err == nil ||
		!strings.Contains(err.Error(), "expands") {
		t.Errorf("Run with a list of lengths: %v", err)
	}
}
