package tasks_test

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/bench"
	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime/tokenizer"
	"github.com/kvbench/kvbench/tasks"
)

// rulerHaystack is a few kilobytes of sentences for the tasks on essays.
var rulerHaystack = strings.Repeat(haystack+" ", 3) + sample

// rulerEssayTasks take a haystack parameter.
var rulerEssayTasks = map[string]bool{
	"niah_single_2": true, "niah_single_3": true, "niah_multikey_1": true,
	"niah_multivalue": true, "niah_multiquery": true,
}

func TestRulerRegistered(t *testing.T) {
	want := []string{"niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
		"niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe"}
	if got := tasks.RulerTaskNames(); !reflect.DeepEqual(got, want) {
		t.Fatalf("RulerTaskNames() = %v", got)
	}
	for _, name := range want {
		task, err := tasks.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if m := task.Metrics(); m[0].Name != "score" || m[0].Unit != tasks.UnitFraction || m[0].Better != tasks.BetterHigher {
			t.Errorf("%s: headline metric %+v", name, m[0])
		}
		var params []string
		for _, d := range task.Params() {
			params = append(params, d.Name)
		}
		if slices.Contains(params, "haystack") != rulerEssayTasks[name] {
			t.Errorf("%s: parameters %v", name, params)
		}
		if slices.Contains(params, "depths") != strings.HasPrefix(name, "niah_") {
			t.Errorf("%s: parameters %v", name, params)
		}
	}
	for _, qa := range []string{"qa_1", "qa_2"} {
		if _, err := tasks.Lookup(qa); err == nil {
			t.Errorf("%s is registered, but needs downloaded data", qa)
		}
	}
}

func TestStringMatch(t *testing.T) {
	for _, c := range []struct {
		pred      string
		refs      []string
		all, part float64
	}{
		// Two of three 7-digit values.
		{"The special magic numbers are 1234567 and 7654321.", []string{"1234567", "7654321", "1111111"}, 2.0 / 3, 1},
		// Case is ignored on both sides.
		{"they are: abc-DEF", []string{"ABC-def"}, 1, 1},
		{"VAR ABCDE, VAR FGHIJ", []string{"abcde", "fghij", "klmno", "pqrst"}, 0.5, 1},
		// A substring is enough (RULER's "in").
		{"cartwheel", []string{"art"}, 1, 1},
		{"nothing here", []string{"1234567"}, 0, 0},
		{"", []string{"x"}, 0, 0},
		{"anything", nil, 0, 0},
		// A value given twice counts once per reference.
		{"42 42 42", []string{"42", "43"}, 0.5, 1},
	} {
		if got := tasks.StringMatchAll(c.pred, c.refs); math.Abs(got-c.all) > 1e-12 {
			t.Errorf("StringMatchAll(%q, %q) = %v, want %v", c.pred, c.refs, got, c.all)
		}
		if got := tasks.StringMatchPart(c.pred, c.refs); got != c.part {
			t.Errorf("StringMatchPart(%q, %q) = %v, want %v", c.pred, c.refs, got, c.part)
		}
	}
	for in, want := range map[string]string{
		"  9419109.\n\nThe rain ": "9419109.\n\nThe rain",
		"a\tb\x00c\r":             "a\nb\nc",
		"\x01\x02 x \x1f":         "x",
		"":                        "",
	} {
		if got := tasks.RulerPostprocess(in); got != want {
			t.Errorf("RulerPostprocess(%q) = %q, want %q", in, got, want)
		}
	}
}

// rulerMaxNew is a task's documented default of max_new.
func rulerMaxNew(t *testing.T, name string) int {
	t.Helper()
	task, err := tasks.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range task.Params() {
		if d.Name == "max_new" {
			n, err := strconv.Atoi(d.Default)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("%s documents no max_new", name)
	return 0
}

// buildRuler builds a prompt with the byte tokenizer, failing on error.
func buildRuler(t *testing.T, task string, o tasks.RulerOptions) tasks.RulerSample {
	t.Helper()
	if o.Haystack == "" && rulerEssayTasks[task] {
		o.Haystack = rulerHaystack
	}
	s, err := tasks.BuildRuler(tokenizer.Bytes{}, task, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRulerTemplates(t *testing.T) {
	single := buildRuler(t, "niah_single_1", tasks.RulerOptions{Length: 3000, Depth: -1, Seed: 1})
	km := regexp.MustCompile(`^\nWhat is the special magic number for ([a-z]+-[a-z]+) mentioned in the provided text\? The special magic number for ([a-z]+-[a-z]+) mentioned in the provided text is$`).
		FindStringSubmatch(single.Prompt[single.Question:])
	if km == nil || km[1] != km[2] {
		t.Fatalf("niah_single_1 question %q", single.Prompt[single.Question:])
	}
	key := km[1]
	wantIntro := "A special magic number is hidden within the following text. Make sure to memorize it. I will quiz you about the number afterwards.\n"
	wantQ := "\nWhat is the special magic number for " + key + " mentioned in the provided text? The special magic number for " + key + " mentioned in the provided text is"
	if single.Prompt[:single.ContextStart] != wantIntro || single.Prompt[single.Question:] != wantQ {
		t.Errorf("niah_single_1 intro %q, question %q", single.Prompt[:single.ContextStart], single.Prompt[single.Question:])
	}
	needle := "One of the special magic numbers for " + key + " is: " + single.Answers[0] + "."
	if len(single.Needles) != 1 || !strings.HasPrefix(single.Prompt[single.Needles[0]:], needle) {
		t.Errorf("needle %q not at %v", needle, single.Needles)
	}
	if v, err := strconv.Atoi(single.Answers[0]); err != nil || v < 1_000_000 || v > 9_999_999 {
		t.Errorf("value %q is not a 7-digit number", single.Answers[0])
	}
	if !strings.Contains(single.Prompt, tasks.RulerNoise+"\n"+tasks.RulerNoise) {
		t.Error("noise sentences are not one a line")
	}

	uuid := buildRuler(t, "niah_single_3", tasks.RulerOptions{Length: 3000, Depth: -1, Seed: 1})
	if !strings.HasPrefix(uuid.Prompt, "A special magic uuid is hidden within the following text. Make sure to memorize it. I will quiz you about the uuid afterwards.\n") ||
		!regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(uuid.Answers[0]) ||
		!strings.Contains(uuid.Prompt, "One of the special magic uuids for ") {
		t.Errorf("niah_single_3: %q, answer %q", uuid.Prompt[:uuid.ContextStart], uuid.Answers[0])
	}

	mv := buildRuler(t, "niah_multivalue", tasks.RulerOptions{Length: 3000, Depth: -1, Seed: 1})
	if !strings.HasPrefix(mv.Prompt, "Some special magic numbers are hidden within the following text. Make sure to memorize it. I will quiz you about the numbers afterwards.\n") ||
		!strings.HasPrefix(mv.Prompt[mv.Question:], "\nWhat are all the special magic numbers for ") ||
		!strings.HasSuffix(mv.Prompt, " mentioned in the provided text are") || len(mv.Answers) != 4 || len(mv.Needles) != 4 {
		t.Errorf("niah_multivalue: %q ... %q, %d answers", mv.Prompt[:mv.ContextStart], mv.Prompt[mv.Question:], len(mv.Answers))
	}

	mq := buildRuler(t, "niah_multiquery", tasks.RulerOptions{Length: 3000, Depth: -1, Seed: 1})
	q := regexp.MustCompile(`^\nWhat are all the special magic numbers for ([a-z]+-[a-z]+), ([a-z]+-[a-z]+), ([a-z]+-[a-z]+), and ([a-z]+-[a-z]+) mentioned in the provided text\? The special magic numbers for (.*) mentioned in the provided text are$`).
		FindStringSubmatch(mq.Prompt[mq.Question:])
	if q == nil || q[5] != strings.Join(q[1:4], ", ")+", and "+q[4] || len(mq.Answers) != 4 {
		t.Fatalf("niah_multiquery question %q", mq.Prompt[mq.Question:])
	}
	for i, k := range q[1:5] {
		// The answers follow the order of the keys asked.
		if !strings.Contains(mq.Prompt, "One of the special magic numbers for "+k+" is: "+mq.Answers[i]+".") {
			t.Errorf("key %s: value %s not in a needle", k, mq.Answers[i])
		}
	}

	vt := buildRuler(t, "vt", tasks.RulerOptions{Length: 3000, Seed: 1})
	value := regexp.MustCompile(`VAR [A-Z]{5} = (\d{5})\n`).FindStringSubmatch(vt.Prompt)
	if value == nil {
		t.Fatalf("vt: no chain start in %q", vt.Prompt)
	}
	wantVT := "\nQuestion: Find all variables that are assigned the value " + value[1] + " in the text above." +
		" Answer: According to the chain(s) of variable assignment in the text above, 5 variables are assigned the value " + value[1] + ", they are: "
	if vt.Prompt[vt.Question:] != wantVT || vt.Prompt[vt.ContextStart-len("in the following text.\n\n"):vt.ContextStart] != "in the following text.\n\n" {
		t.Errorf("vt question %q", vt.Prompt[vt.Question:])
	}

	cwe := buildRuler(t, "cwe", tasks.RulerOptions{Length: 3000, Seed: 1})
	if !strings.HasSuffix(cwe.Prompt, "\nQuestion: What are the 10 most common words in the above list? Answer: The top 10 words that appear most often in the list are:") ||
		!strings.HasSuffix(cwe.Prompt[:cwe.ContextStart], "\nBelow is a numbered list of words. In these words, some appear more often than others. Memorize the ones that appear most often.\n") {
		t.Errorf("cwe template: %q", cwe.Prompt[cwe.Question:])
	}

	fwe := buildRuler(t, "fwe", tasks.RulerOptions{Length: 3000, Seed: 1})
	if fwe.Prompt[:fwe.ContextStart] != "Read the following coded text and track the frequency of each coded word. Find the three most frequently appeared coded words. " ||
		fwe.Prompt[fwe.Question:] != "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the three most frequently appeared words in the above coded text? Answer: According to the coded text above, the three most frequently appeared words are:" {
		t.Errorf("fwe template: %q ... %q", fwe.Prompt[:fwe.ContextStart], fwe.Prompt[fwe.Question:])
	}
}

// Every task fills its length: the prompt and max_new fit, with less than a
// haystack unit to spare, and the prompt holds every answer.
func TestBuildRulerLength(t *testing.T) {
	tok := tokenizer.Bytes{}
	for _, name := range tasks.RulerTaskNames() {
		for _, length := range []int{2500, 9000} {
			o := tasks.RulerOptions{Length: length, Depth: -1, Seed: 3, Trial: 1}
			s := buildRuler(t, name, o)
			maxNew := rulerMaxNew(t, name)
			// The slack: one more unit of haystack (a noise line, a
			// distractor needle, an essay sentence, three more list
			// entries, a few coded words).
			slack := map[string]int{"niah_multikey_3": 150, "vt": 100, "fwe": 30}[name]
			if slack == 0 {
				slack = 100
			}
			if n := len(s.IDs) + maxNew; n > length || n < length-slack {
				t.Errorf("%s length %d: %d prompt tokens and %d for the answer", name, length, len(s.IDs), maxNew)
			}
			if s.IDs[0] != tok.BOS() || tok.Decode(s.IDs) != s.Prompt {
				t.Errorf("%s: ids are not BOS and the prompt", name)
			}
			if s.QuestionTokens != len(s.Prompt)-s.Question || s.ContextStart >= s.Question {
				t.Errorf("%s: question of %d tokens at %d, context at %d", name, s.QuestionTokens, s.Question, s.ContextStart)
			}
			for _, a := range s.Answers {
				if !strings.Contains(s.Prompt[s.ContextStart:s.Question], a) {
					t.Errorf("%s: answer %q not in the context", name, a)
				}
			}
			if s2 := buildRuler(t, name, o); !reflect.DeepEqual(s, s2) {
				t.Errorf("%s: two builds differ", name)
			}
		}
	}
	// Too short: an error saying the length needed, which then fits.
	_, err := tasks.BuildRuler(tok, "niah_single_1", tasks.RulerOptions{Length: 300, Depth: -1})
	m := regexp.MustCompile(`parameter lengths: 300 is too short: .* use lengths of at least (\d+)`).FindStringSubmatch(fmt.Sprint(err))
	if m == nil {
		t.Fatalf("length 300: %v", err)
	}
	need, _ := strconv.Atoi(m[1])
	if s, err := tasks.BuildRuler(tok, "niah_single_1", tasks.RulerOptions{Length: need, Depth: -1}); err != nil || s.Size != 0 {
		t.Errorf("at the length asked for (%d): %v, %d sentences", need, err, s.Size)
	}
	if _, err := tasks.BuildRuler(tok, "niah_single_1", tasks.RulerOptions{Length: need - 1, Depth: -1}); err == nil {
		t.Errorf("one under the length asked for (%d): no error", need-1)
	}
	if _, err := tasks.BuildRuler(tok, "qa_1", tasks.RulerOptions{Length: 1000}); err == nil || !strings.Contains(err.Error(), "unknown RULER task") {
		t.Errorf("qa_1: %v", err)
	}
}

// The needles that hold the answers sit at the depth asked, in bytes and in
// tokens; the other needles stay where RULER's random placement puts them.
func TestRulerDepth(t *testing.T) {
	tok := tokenizer.Bytes{}
	for _, name := range []string{"niah_single_1", "niah_single_2", "niah_multikey_1", "niah_multikey_2", "niah_multikey_3", "niah_multivalue", "niah_multiquery"} {
		var keys []string
		for _, depth := range []float64{0, 0.25, 0.5, 0.8, 1} {
			s := buildRuler(t, name, tasks.RulerOptions{Length: 8000, Depth: depth, Seed: 5})
			if keys == nil {
				keys = s.Answers
			} else if !reflect.DeepEqual(keys, s.Answers) {
				t.Errorf("%s: the depth changed the values: %v, %v", name, keys, s.Answers)
			}
			if len(s.Needles) != len(s.Answers) {
				t.Fatalf("%s: %d needles hold %d answers", name, len(s.Needles), len(s.Answers))
			}
			// Within one haystack unit: a line, or an essay sentence (the
			// haystack's longest is under 120 bytes), and the needles
			// that share the place.
			ctx := float64(s.Question - s.ContextStart)
			tol := (240 + float64(len(s.Needles))*110) / ctx
			for i, d := range s.NeedleDepths() {
				if math.Abs(d-depth) > tol {
					t.Errorf("%s depth %v: needle %d at %.3f", name, depth, i, d)
				}
				// Token depth: the prompt's tokens before the needle.
				before := len(tok.Encode(s.Prompt[:s.Needles[i]])) - len(tok.Encode(s.Prompt[:s.ContextStart]))
				ctxTokens := len(tok.Encode(s.Prompt[s.ContextStart:s.Question]))
				if td := float64(before) / float64(ctxTokens); math.Abs(td-depth) > tol {
					t.Errorf("%s depth %v: needle %d at token depth %.3f", name, depth, i, td)
				}
			}
			if depth == 0 && s.Needles[0] != s.ContextStart {
				t.Errorf("%s depth 0: first needle at %d, context at %d", name, s.Needles[0], s.ContextStart)
			}
			if depth == 1 {
				last := s.Prompt[s.Needles[len(s.Needles)-1]:s.Question]
				if !strings.HasPrefix(last, "One of the special magic") || strings.Count(last, ".") != 1 && !strings.Contains(last, "uuid") {
					t.Errorf("%s depth 1: the context ends %q", name, last)
				}
			}
		}
	}
	// Random placement: RULER's depths differ between trials.
	var ds []float64
	for trial := range 6 {
		s := buildRuler(t, "niah_single_2", tasks.RulerOptions{Length: 8000, Depth: -1, Seed: 5, Trial: trial})
		ds = append(ds, s.NeedleDepths()[0])
	}
	slices.Sort(ds)
	if ds[5]-ds[0] < 0.2 {
		t.Errorf("random depths over 6 trials: %v", ds)
	}
}

func TestRulerSeeds(t *testing.T) {
	for _, name := range tasks.RulerTaskNames() {
		a := buildRuler(t, name, tasks.RulerOptions{Length: 3000, Depth: -1, Seed: 1, Trial: 0})
		b := buildRuler(t, name, tasks.RulerOptions{Length: 3000, Depth: -1, Seed: 1, Trial: 1})
		c := buildRuler(t, name, tasks.RulerOptions{Length: 3000, Depth: -1, Seed: 2, Trial: 0})
		if reflect.DeepEqual(a.Answers, b.Answers) || reflect.DeepEqual(a.Answers, c.Answers) {
			t.Errorf("%s: answers %v (trial 1: %v, seed 2: %v)", name, a.Answers, b.Answers, c.Answers)
		}
	}
}

// The structure of each task's context, checked by parsing it back.
func TestRulerContexts(t *testing.T) {
	// niah_multikey_2: every line a needle; one holds the key asked.
	s := buildRuler(t, "niah_multikey_2", tasks.RulerOptions{Length: 6000, Depth: -1, Seed: 2})
	lines := strings.Split(s.Prompt[s.ContextStart:s.Question], "\n")
	key := regexp.MustCompile(`for ([a-z]+-[a-z]+) mentioned`).FindStringSubmatch(s.Prompt[s.Question:])[1]
	needleRe := regexp.MustCompile(`^One of the special magic numbers for ([a-z]+-[a-z]+) is: (\d{7})\.$`)
	hits := 0
	for _, l := range lines {
		m := needleRe.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("niah_multikey_2 line %q is not a needle", l)
		}
		if m[1] == key {
			hits++
			if m[2] != s.Answers[0] {
				t.Errorf("the key's needle holds %s, answer %s", m[2], s.Answers[0])
			}
		}
	}
	if hits != 1 || len(lines) != s.Size+1 {
		t.Errorf("niah_multikey_2: %d lines (size %d), the key in %d", len(lines), s.Size, hits)
	}

	// niah_multikey_1: four needles, three of them distractors.
	s = buildRuler(t, "niah_multikey_1", tasks.RulerOptions{Length: 6000, Depth: -1, Seed: 2})
	if n := strings.Count(s.Prompt, "One of the special magic numbers for "); n != 4 || len(s.Answers) != 1 {
		t.Errorf("niah_multikey_1: %d needles, %d answers", n, len(s.Answers))
	}

	// vt: the chain in order, from the value to the last variable, and a
	// solved example of 3-letter variables before the question.
	s = buildRuler(t, "vt", tasks.RulerOptions{Length: 6000, Seed: 2})
	ctxLines := strings.Split(s.Prompt[s.ContextStart:s.Question], "\n")
	var chain []string
	for _, l := range ctxLines {
		if l != tasks.RulerNoise {
			chain = append(chain, l)
		}
	}
	if len(chain) != 5 || len(s.Answers) != 5 {
		t.Fatalf("vt chain %q, answers %v", chain, s.Answers)
	}
	value := strings.TrimPrefix(chain[0], "VAR "+s.Answers[0]+" = ")
	for i := 1; i < 5; i++ {
		if chain[i] != "VAR "+s.Answers[i]+" = VAR "+s.Answers[i-1]+" " {
			t.Errorf("vt line %d: %q", i, chain[i])
		}
	}
	if !strings.Contains(s.Prompt[s.Question:], "assigned the value "+value+" in the text above") {
		t.Errorf("vt: value %s not asked", value)
	}
	ex := regexp.MustCompile(`they are:  ([A-Z]{3}) ([A-Z]{3}) ([A-Z]{3}) ([A-Z]{3}) ([A-Z]{3})\n\nMemorize and track`).FindStringSubmatch(s.Prompt)
	if ex == nil || !strings.HasPrefix(s.Prompt, "Memorize and track the chain(s) of variable assignment") {
		t.Errorf("vt: no solved example before the question: %q", s.Prompt[:min(600, len(s.Prompt))])
	}
	// Two chains: the second is a distractor with its own value.
	s2 := buildRuler(t, "vt", tasks.RulerOptions{Length: 6000, Seed: 2, Hops: 2, Chains: 2})
	if n := strings.Count(s2.Prompt[s2.ContextStart:s2.Question], "VAR "); n != 2*3+2*2 || len(s2.Answers) != 3 {
		t.Errorf("vt 2 chains of 2 hops: %d VARs, answers %v", n, s2.Answers)
	}

	// cwe: a numbered list where the ten answers come 30 times each and
	// the others 3 times (6 and 1 below 4K).
	for _, c := range []struct{ length, common, other int }{{3000, 6, 1}, {9000, 30, 3}} {
		s = buildRuler(t, "cwe", tasks.RulerOptions{Length: c.length, Seed: 2})
		counts := map[string]int{}
		entries := regexp.MustCompile(`(\d+)\. ([a-z]+)`).FindAllStringSubmatch(s.Prompt[s.ContextStart:s.Question], -1)
		for i, e := range entries {
			if e[1] != strconv.Itoa(i+1) {
				t.Fatalf("cwe entry %d numbered %s", i+1, e[1])
			}
			counts[e[2]]++
		}
		if len(counts) != s.Size || len(s.Answers) != 10 {
			t.Errorf("cwe length %d: %d distinct words, size %d", c.length, len(counts), s.Size)
		}
		for w, n := range counts {
			want := c.other
			if slices.Contains(s.Answers, w) {
				want = c.common
			}
			if n != want {
				t.Errorf("cwe length %d: %q listed %d times, want %d", c.length, w, n, want)
			}
		}
		if !strings.Contains(s.Prompt[:s.ContextStart], "The top 10 words that appear most often in the list are: 1. ") {
			t.Errorf("cwe: no solved example")
		}
	}

	// fwe: "..." first, then the three answers, each more frequent than the
	// next.
	s = buildRuler(t, "fwe", tasks.RulerOptions{Length: 6000, Seed: 2})
	counts := map[string]int{}
	for _, w := range strings.Fields(s.Prompt[s.ContextStart:s.Question]) {
		counts[w]++
	}
	var rest int
	for w, n := range counts {
		if w != "..." && !slices.Contains(s.Answers, w) {
			rest = max(rest, n)
			if len(w) != 6 {
				t.Errorf("fwe: coded word %q", w)
			}
		}
	}
	// Zipf with exponent 2 over the words drawn: rank k comes
	// floor(size k^-2 / zeta(2)) times (1000 words: 607, 151, 67, 37).
	zeta := math.Pi * math.Pi / 6
	for k, w := range append([]string{"..."}, s.Answers...) {
		if want := int(float64(s.Size) / float64((k+1)*(k+1)) / zeta); counts[w] != want {
			t.Errorf("fwe: rank %d (%q) %d times of %d, want %d", k+1, w, counts[w], s.Size, want)
		}
	}
	if a := s.Answers; !(counts["..."] > counts[a[0]] && counts[a[0]] > counts[a[1]] && counts[a[1]] > counts[a[2]] && counts[a[2]] > rest) {
		t.Errorf("fwe counts: ... %d, answers %d %d %d, the rest at most %d", counts["..."], counts[a[0]], counts[a[1]], counts[a[2]], rest)
	}
}

// The prompts of a real tokenizer fit by its token counts, with the needle
// at the depth asked in tokens.
func TestRulerLlamaTokenizer(t *testing.T) {
	tok, err := tokenizer.Load(fixtures.Path(t, "tokenizers/llama2/tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range tasks.RulerTaskNames() {
		o := tasks.RulerOptions{Length: 4096, Depth: -1, Seed: 1, Haystack: rulerHaystack}
		if strings.HasPrefix(name, "niah_") {
			o.Depth = 0.4
		}
		s, err := tasks.BuildRuler(tok, name, o)
		if err != nil {
			t.Fatal(err)
		}
		maxNew := rulerMaxNew(t, name)
		if n := len(s.IDs) + maxNew; n > 4096 || n < 4096-100 {
			t.Errorf("%s: %d tokens with the answer", name, n)
		}
		if s.QuestionTokens < 20 || s.QuestionTokens > 100 {
			t.Errorf("%s: the question takes %d tokens", name, s.QuestionTokens)
		}
		ctxStart := len(tok.Encode(s.Prompt[:s.ContextStart]))
		ctxTokens := len(tok.Encode(s.Prompt[:s.Question])) - ctxStart
		for _, at := range s.Needles {
			if !strings.HasPrefix(name, "niah_") {
				break
			}
			d := float64(len(tok.Encode(s.Prompt[:at]))-ctxStart) / float64(ctxTokens)
			if math.Abs(d-0.4) > 0.03 {
				t.Errorf("%s: needle at token depth %.3f for 0.4", name, d)
			}
		}
	}
}

// rulerParams are a cell's parameters for the byte tokenizer of
// synthetic:tiny: the length and, for the tasks on essays, a haystack file.
func rulerParams(t *testing.T, name string, length int) tasks.Params {
	p := tasks.Params{"lengths": length, "trials": 2, "seed": 3, "decode_tail": 40}
	if rulerEssayTasks[name] {
		p["haystack"] = writeText(t, rulerHaystack)
	}
	return p
}

// Every task runs through the engine on synthetic:tiny: the score is the
// mean of the trials' string_match_all of their predictions, the tail holds
// the question, and runs repeat exactly.
func TestRulerRun(t *testing.T) {
	e := newEngine(t, "full", nil)
	for _, name := range tasks.RulerTaskNames() {
		t.Run(name, func(t *testing.T) {
			p := rulerParams(t, name, 2000)
			maxNew := rulerMaxNew(t, name)
			if name != "niah_single_1" {
				// Shorter answers keep the test quick; niah_single_1
				// runs with RULER's 128.
				maxNew = 12
				p["max_new"] = maxNew
			}
			res := run(t, e, name, p)
			trials := res.Detail["trials"].([]tasks.RulerTrial)
			if len(trials) != 2 {
				t.Fatalf("%d trials", len(trials))
			}
			var score, part float64
			total := 0
			for i, tr := range trials {
				if tr.Tokens+maxNew > 2000 || tr.Tokens+maxNew < 1900 || tr.Generated > maxNew {
					t.Errorf("trial %d: %d prompt tokens, %d generated", i, tr.Tokens, tr.Generated)
				}
				if tr.Prefilled != tr.Tokens-max(40, tr.Question) || tr.Question < 40 {
					t.Errorf("trial %d: %d prefilled of %d, question %d tokens", i, tr.Prefilled, tr.Tokens, tr.Question)
				}
				if got := tasks.StringMatchAll(tr.Prediction, tr.Answers); got != tr.Score || tasks.StringMatchPart(tr.Prediction, tr.Answers) != tr.Part {
					t.Errorf("trial %d: score %v for %q against %v", i, tr.Score, tr.Prediction, tr.Answers)
				}
				if tr.Prediction != tasks.RulerPostprocess(tr.Prediction) {
					t.Errorf("trial %d: prediction %q not cleaned", i, tr.Prediction)
				}
				score += tr.Score
				part += tr.Part
				total += tr.Tokens + tr.Generated
			}
			if res.Metrics["score"] != score/2 || res.Metrics["match_part"] != part/2 || res.Tokens != total {
				t.Errorf("metrics %v, tokens %d; trials give %v, %v, %d", res.Metrics, res.Tokens, score/2, part/2, total)
			}
			if reflect.DeepEqual(trials[0].Answers, trials[1].Answers) {
				t.Errorf("both trials expect %v", trials[0].Answers)
			}
			if name != "niah_single_1" {
				return // BuildRuler's test checks that prompts repeat
			}
			if again := run(t, e, name, p); !reflect.DeepEqual(res, again) {
				t.Errorf("two runs differ:\n%v\n%v", res.Metrics, again.Metrics)
			}
		})
	}
	// decode_tail 0 prefills the whole prompt; over the trained context
	// the record says so.
	res := run(t, shortContext{e}, "niah_single_1", tasks.Params{"lengths": 1000, "trials": 1, "decode_tail": 0, "max_new": 8})
	tr := res.Detail["trials"].([]tasks.RulerTrial)[0]
	if tr.Prefilled != tr.Tokens || tr.Generated > 8 || res.Detail["over_max_seq"] != true {
		t.Errorf("decode_tail 0: %d prefilled of %d; detail %v", tr.Prefilled, tr.Tokens, res.Detail)
	}
	// A length too short is an error naming it.
	task, _ := tasks.Lookup("vt")
	if _, err := task.Run(t.Context(), e, tasks.Params{"lengths": 600}); err == nil || !strings.Contains(err.Error(), "task vt: parameter lengths: 600 is too short") {
		t.Errorf("vt at 600: %v", err)
	}
}

// A model that retrieves: kvbench-ref-13m finds niah_single_1's number at
// 2K with full attention, and loses it when a window of 256 tokens cannot
// hold the needle.
func TestRulerRefModel(t *testing.T) {
	if testing.Short() {
		t.Skip("a real model: skipped with -short")
	}
	m, tok, err := bench.OpenModel(fixtures.Path(t, "models/kvbench-ref-13m"), "")
	if err != nil {
		t.Fatal(err)
	}
	p := tasks.Params{"lengths": 2048, "depths": 0.5, "trials": 3, "seed": 1}
	score := func(policy string, params policies.Params) float64 {
		e, err := bench.NewEngine(m, tok, policy, params)
		if err != nil {
			t.Fatal(err)
		}
		res := run(t, e, "niah_single_1", p)
		t.Logf("%s %v: %v", policy, params, res.Detail["trials"])
		return res.Metrics["score"]
	}
	full := score("full", nil)
	window := score("window", policies.Params{"window": 256})
	if full < 2.0/3 || window >= full {
		t.Errorf("niah_single_1 at 2K, depth 0.5: full %v, window 256 %v", full, window)
	}
}

func TestRulerCheck(t *testing.T) {
	type c = struct {
		p     tasks.Params
		param string
	}
	path := writeText(t, rulerHaystack)
	checkErrors(t, "niah_single_1", map[string]c{
		"missing lengths": {tasks.Params{"trials": 2}, "lengths"},
		"zero length":     {tasks.Params{"lengths": 0}, "lengths"},
		"depth above 1":   {tasks.Params{"lengths": 4096, "depths": 1.5}, "depths"},
		"depth count":     {tasks.Params{"lengths": 4096, "depths": 10}, "evenly spaced"},
		"depth in list":   {tasks.Params{"lengths": 4096, "depths": []any{0.5, -0.1}}, "depths"},
		"haystack":        {tasks.Params{"lengths": 4096, "haystack": path}, "haystack"},
		"zero trials":     {tasks.Params{"lengths": 4096, "trials": 0}, "trials"},
		"negative seed":   {tasks.Params{"lengths": 4096, "seed": -1}, "seed"},
		"max_new too big": {tasks.Params{"lengths": 100, "max_new": 100}, "max_new"},
		"negative tail":   {tasks.Params{"lengths": 4096, "decode_tail": -1}, "decode_tail"},
		"unknown":         {tasks.Params{"lengths": 4096, "needles": 3}, "needles"},
	})
	checkErrors(t, "niah_single_2", map[string]c{
		"missing haystack": {tasks.Params{"lengths": 4096}, "haystack"},
		"absent haystack":  {tasks.Params{"lengths": 4096, "haystack": path + ".none"}, "haystack"},
		"binary haystack":  {tasks.Params{"lengths": 4096, "haystack": writeText(t, "\x00\x01")}, "NUL byte"},
	})
	checkErrors(t, "vt", map[string]c{
		"depths":    {tasks.Params{"lengths": 4096, "depths": 0.5}, "depths"},
		"zero hops": {tasks.Params{"lengths": 4096, "hops": 0}, "hops"},
		"chains":    {tasks.Params{"lengths": 4096, "chains": "two"}, "chains"},
	})
	checkErrors(t, "cwe", map[string]c{
		"hops": {tasks.Params{"lengths": 4096, "hops": 2}, "hops"},
	})
	task, _ := tasks.Lookup("niah_multiquery")
	if err := task.Check(tasks.Params{"lengths": []any{4096, 8192}, "depths": []any{0, 0.5, 1}, "haystack": path}); err != nil {
		t.Errorf("lists of lengths and depths: %v", err)
	}
	// A count of depths expands as needle's does.
	ve := task.(interface {
		ExpandValue(string, any) ([]any, bool)
	})
	if got, ok := ve.ExpandValue("depths", 5); !ok || !reflect.DeepEqual(got, []any{0.0, 0.25, 0.5, 0.75, 1.0}) {
		t.Errorf("depths: 5 expands to %v", got)
	}
	if _, ok := ve.ExpandValue("lengths", 5); ok {
		t.Error("lengths: 5 expanded")
	}
	// An empty haystack fails the run, naming it.
	empty := writeText(t, " \n ")
	if _, err := task.Run(t.Context(), newEngine(t, "full", nil), tasks.Params{"lengths": 3000, "haystack": empty}); err == nil || !strings.Contains(err.Error(), "holds no words") {
		t.Errorf("empty haystack: %v", err)
	}
}
