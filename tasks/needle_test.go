package tasks_test

import (
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/runtime/tokenizer"
	"github.com/kvbench/kvbench/tasks"
)

func TestNeedleDepths(t *testing.T) {
	if got, want := tasks.NeedleDepths(5), []float64{0, 0.25, 0.5, 0.75, 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("NeedleDepths(5) = %v, want %v", got, want)
	}
	if got := tasks.NeedleDepths(1); !reflect.DeepEqual(got, []float64{0}) {
		t.Errorf("NeedleDepths(1) = %v", got)
	}
	if got := tasks.NeedleDepths(0); got != nil {
		t.Errorf("NeedleDepths(0) = %v", got)
	}
}

func TestInsertNeedle(t *testing.T) {
	text := "Aa bb. Cc dd. Ee ff. Gg hh." // 27 bytes; sentences start at 0, 7, 14, 21
	for _, c := range []struct {
		depth float64
		want  string
		at    int
	}{
		{0, "N. Aa bb. Cc dd. Ee ff. Gg hh.", 0},
		{0.2, "N. Aa bb. Cc dd. Ee ff. Gg hh.", 0},   // byte 5, inside the first sentence
		{0.26, "Aa bb. N. Cc dd. Ee ff. Gg hh.", 7},  // byte 7, a sentence start
		{0.5, "Aa bb. N. Cc dd. Ee ff. Gg hh.", 7},   // byte 13 (after "dd.") moves back to 7
		{0.75, "Aa bb. Cc dd. N. Ee ff. Gg hh.", 14}, // byte 20 moves back to 14
		{0.99, "Aa bb. Cc dd. Ee ff. N. Gg hh.", 21}, // byte 26 moves back to 21
		{1, "Aa bb. Cc dd. Ee ff. Gg hh. N.", 28},    // the end
	} {
		got, at := tasks.InsertNeedle(text, "N.", c.depth)
		if got != c.want || at != c.at {
			t.Errorf("depth %v: %q at %d, want %q at %d", c.depth, got, at, c.want, c.at)
		}
		if !strings.HasPrefix(got[at:], "N.") {
			t.Errorf("depth %v: offset %d is not the needle's", c.depth, at)
		}
	}
	if got, at := tasks.InsertNeedle("", "N.", 0.5); got != "N." || at != 0 {
		t.Errorf("empty text: %q at %d", got, at)
	}
}

// The needle scored as the references score it (ROUGE-1 F1 against the
// needle, and the key phrase for an exact match): an answer that only echoes
// the question scores well below the right one, which word-set recall
// (version 1) scored 0.47 against 0.58.
func TestRouge1F1(t *testing.T) {
	n := tasks.DefaultNeedle
	// The needle's 21 unigrams: the best thing to do in san francisco is eat
	// a sandwich and sit in dolores park on a sunny day ("in" and "a" twice).
	if got := len(tasks.Tokens(n)); got != 21 {
		t.Errorf("needle has %d unigrams, want 21: %v", got, tasks.Tokens(n))
	}
	wrong := "The best thing to do in San Francisco is to visit the Golden Gate Bridge."
	right := "eat a sandwich and sit in Dolores Park on a sunny day."
	for _, c := range []struct {
		answer string
		want   float64
		exact  bool
	}{
		{n, 1, true},
		{strings.ToUpper(n), 1, true},
		{"", 0, false},
		// 15 unigrams, 9 shared (the, best, thing, to, do, in, san,
		// francisco, is: "the" and "to" count once, as often as the needle
		// has them): 2*9/(15+21).
		{wrong, 0.5, false},
		// 12 unigrams, all in the needle: 2*12/(12+21).
		{right, 24.0 / 33, true},
		{"Eat a sandwich!", 6.0 / 24, false},
		{"eat a sandwich, and sit in Dolores Park", 16.0 / 29, true},
		{"sandwiches", 0, false},                                        // no stemming
		{"a a a a", 4.0 / 25, false},                                    // "a" counts twice at most: 2*2/(4+21)
		{"xyz " + n + " xyz", 42.0 / 44, true},                          // precision 21/23, recall 1
		{"eat a sandwich and sit in Dolores Parkway", 14.0 / 29, false}, // whole words only
	} {
		if got := tasks.Rouge1F1(n, c.answer); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("Rouge1F1(%q) = %v, want %v", c.answer, got, c.want)
		}
		if got := tasks.ContainsPhrase(c.answer, tasks.NeedleKeyPhrase); got != c.exact {
			t.Errorf("ContainsPhrase(%q) = %v, want %v", c.answer, got, c.exact)
		}
	}
	if w, r := tasks.Rouge1F1(n, wrong), tasks.Rouge1F1(n, right); r-w < 0.2 {
		t.Errorf("the echoing answer scores %v, the right one %v: want the right one well above", w, r)
	}
	if got := tasks.Rouge1F1("Hello, world!", "world... hello?"); got != 1 {
		t.Errorf("punctuation and case: %v", got)
	}
	if got := tasks.Rouge1F1("...", "anything"); got != 0 {
		t.Errorf("needle without words: %v", got)
	}
	if tasks.ContainsPhrase("anything", "?!") {
		t.Error("a phrase without words is contained")
	}
	// Symmetric, as F1 is.
	if a, b := tasks.Rouge1F1(n, wrong), tasks.Rouge1F1(wrong, n); a != b {
		t.Errorf("not symmetric: %v, %v", a, b)
	}
}

// haystack is a few hundred bytes of sentences.
const haystack = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. " +
	"How vexingly quick daft zebras jump. Sphinx of black quartz, judge my vow. " +
	"The five boxing wizards jump quickly. Jackdaws love my big sphinx of quartz."

func TestBuildNeedle(t *testing.T) {
	tok := tokenizer.Bytes{}
	hay := make([]int32, 0, len(haystack))
	for _, id := range tok.Encode(haystack) {
		hay = append(hay, int32(id))
	}
	suffix := tasks.NeedleSuffix(tasks.DefaultNeedleQuestion)
	if suffix != "\n\nWhat is the best thing to do in San Francisco? Answer:" {
		t.Errorf("suffix %q", suffix)
	}
	for _, length := range []int{300, 1000, 2500} { // shorter and longer than the haystack
		for _, depth := range []float64{0, 0.1, 0.5, 0.9, 1} {
			inst := tasks.BuildNeedle(tok, hay, tasks.DefaultNeedle, tasks.DefaultNeedleQuestion, length, depth)
			if n := len(inst.IDs); n > length || n < length-3 {
				t.Errorf("length %d depth %v: %d tokens", length, depth, n)
			}
			if !strings.HasSuffix(inst.Prompt, suffix) || tok.Decode(inst.IDs) != inst.Prompt {
				t.Errorf("length %d: prompt does not end with the question", length)
			}
			at := inst.InsertAt
			if !strings.HasPrefix(inst.Prompt[at:], tasks.DefaultNeedle) {
				t.Fatalf("length %d depth %v: needle not at %d", length, depth, at)
			}
			if at != 0 && !strings.HasSuffix(inst.Prompt[:at], ". ") && depth != 1 {
				t.Errorf("length %d depth %v: needle after %q, not a sentence end", length, depth, inst.Prompt[max(0, at-10):at])
			}
			// At depth d of the context, moved back at most about a sentence (< 100 bytes here).
			ctx := inst.Context - len(tasks.DefaultNeedle) - 1
			if target := depth * float64(ctx); float64(at) > target+1 || float64(at) < target-100 {
				t.Errorf("length %d depth %v: needle at byte %d of %d", length, depth, at, ctx)
			}
		}
	}
}

func TestNeedleRun(t *testing.T) {
	path := writeText(t, haystack)
	e := newEngine(t, "full", nil)
	p := tasks.Params{"haystack": path, "lengths": 400, "depths": 0.5, "max_new": 8, "decode_tail": 30}
	res := run(t, e, "needle", p)
	if s := res.Metrics["score"]; s < 0 || s > 1 {
		t.Errorf("score %v", s)
	}
	d := res.Detail
	if d["prefilled"].(int) != d["prompt_tokens"].(int)-30 || d["prompt_tokens"].(int) > 400 {
		t.Errorf("prefilled %v of %v tokens", d["prefilled"], d["prompt_tokens"])
	}
	answer := d["answer"].(string)
	if got := tasks.Rouge1F1(tasks.DefaultNeedle, answer); got != res.Metrics["score"] {
		t.Errorf("score %v, ROUGE-1 F1 of the answer %q %v", res.Metrics["score"], answer, got)
	}
	exact, ok := res.Metrics["exact_match"]
	if want := tasks.ContainsPhrase(answer, tasks.NeedleKeyPhrase); !ok || (exact == 1) != want || (exact != 0 && exact != 1) {
		t.Errorf("exact_match %v (reported %v) for the answer %q, want %v", exact, ok, answer, want)
	}
	if d["key_phrase"] != tasks.NeedleKeyPhrase {
		t.Errorf("key phrase %v", d["key_phrase"])
	}
	if dep := d["insert_depth"].(float64); dep > 0.5 || dep < 0.2 {
		t.Errorf("insert depth %v for 0.5", dep)
	}
	if !reflect.DeepEqual(res, run(t, e, "needle", p)) {
		t.Error("two runs differ")
	}
	// A custom needle and question.
	res = run(t, e, "needle", tasks.Params{"haystack": path, "lengths": 300, "depths": 0, "max_new": 4,
		"needle": "The magic number is 7.", "question": "What is the magic number?"})
	if res.Detail["insert_byte"] != 0 {
		t.Errorf("depth 0: inserted at %v", res.Detail["insert_byte"])
	}
	if res.Detail["key_phrase"] != "The magic number is 7." {
		t.Errorf("a custom needle's key phrase is %v, want the whole needle", res.Detail["key_phrase"])
	}
	res = run(t, e, "needle", tasks.Params{"haystack": path, "lengths": 300, "depths": 0, "max_new": 4,
		"needle": "The magic number is 7.", "question": "What is the magic number?", "key_phrase": "number is 7"})
	if res.Detail["key_phrase"] != "number is 7" {
		t.Errorf("key phrase %v", res.Detail["key_phrase"])
	}
}

func TestNeedlePaulGraham(t *testing.T) {
	dir := fixtures.Path(t, "data/paulgraham")
	tok := tokenizer.Bytes{}
	text, err := tasks.ReadText(dir)
	if err != nil {
		t.Fatal(err)
	}
	hay := make([]int32, 0, len(text))
	for _, id := range tok.Encode(text) {
		hay = append(hay, int32(id))
	}
	inst := tasks.BuildNeedle(tok, hay, tasks.DefaultNeedle, tasks.DefaultNeedleQuestion, 20000, 0.4)
	if n := len(inst.IDs); n > 20000 || n < 19990 {
		t.Errorf("%d tokens for 20000", n)
	}
	if !strings.HasSuffix(inst.Prompt[:inst.InsertAt], ". ") {
		t.Errorf("needle after %q", inst.Prompt[inst.InsertAt-20:inst.InsertAt])
	}
}

func TestNeedleCheck(t *testing.T) {
	path := writeText(t, haystack)
	type c = struct {
		p     tasks.Params
		param string
	}
	checkErrors(t, "needle", map[string]c{
		"missing haystack": {tasks.Params{"lengths": 1000}, "haystack"},
		"absent haystack":  {tasks.Params{"haystack": path + ".none", "lengths": 1000}, "haystack"},
		"missing lengths":  {tasks.Params{"haystack": path}, "lengths"},
		"negative length":  {tasks.Params{"haystack": path, "lengths": -1}, "lengths"},
		"depth above 1":    {tasks.Params{"haystack": path, "lengths": 1000, "depths": 1.01}, "depths"},
		"depth count":      {tasks.Params{"haystack": path, "lengths": 1000, "depths": 10}, "NeedleDepths"},
		"zero max_new":     {tasks.Params{"haystack": path, "lengths": 1000, "max_new": 0}, "max_new"},
		"empty needle":     {tasks.Params{"haystack": path, "lengths": 1000, "needle": " "}, "needle"},
		"wordless needle":  {tasks.Params{"haystack": path, "lengths": 1000, "needle": "?!"}, "needle"},
		"question number":  {tasks.Params{"haystack": path, "lengths": 1000, "question": 5}, "question"},
		"unknown":          {tasks.Params{"haystack": path, "lengths": 1000, "pooling": "max"}, "pooling"},
		"phrase elsewhere": {tasks.Params{"haystack": path, "lengths": 1000, "key_phrase": "eat a taco"}, "key_phrase"},
		"wordless phrase":  {tasks.Params{"haystack": path, "lengths": 1000, "key_phrase": "..."}, "key_phrase"},
		"custom needle":    {tasks.Params{"haystack": path, "lengths": 1000, "needle": "The number is 7.", "key_phrase": tasks.NeedleKeyPhrase}, "key_phrase"},
	})
	task, _ := tasks.Lookup("needle")
	if err := task.Check(tasks.Params{"haystack": path, "lengths": []int{1000, 2000}, "depths": tasks.NeedleDepths(10)}); err != nil {
		t.Errorf("lists: %v", err)
	}
}
