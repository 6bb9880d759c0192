package tasks

// RULER's synthetic tasks (arXiv 2404.06654; TASKS.md): eight needle-in-a-
// haystack variants, variable tracking, common words extraction and
// frequent words extraction, with RULER's templates, answer prefixes and
// string_match_all scoring. The QA tasks (qa_1, qa_2) need SQuAD and
// HotpotQA and are not implemented.

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/kvbench/kvbench/internal/num"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime/tokenizer"
)

func init() {
	for i := range rulerSpecs {
		Register(rulerTask{&rulerSpecs[i]})
	}
}

// rulerKind is the generator family of a RULER task.
type rulerKind int

const (
	rulerNIAH rulerKind = iota
	rulerVT
	rulerCWE
	rulerFWE
)

// NIAH haystacks and needle kinds, as RULER names them.
const (
	rulerHayNoise  = "noise"  // the repeated noise sentence
	rulerHayEssay  = "essay"  // a folder of essays (the haystack parameter)
	rulerHayNeedle = "needle" // distractor needles

	rulerWords   = "words"
	rulerNumbers = "numbers"
	rulerUUIDs   = "uuids"
)

// rulerSpec is one RULER task: its generator and RULER's configuration of it
// (scripts/synthetic.yaml), with tokens_to_generate as the default max_new.
type rulerSpec struct {
	name   string
	kind   rulerKind
	maxNew int
	doc    string

	// NIAH: the haystack, what keys and values are, and how many keys,
	// values per key and queried keys.
	haystack              string
	keyKind, valueKind    string
	keys, values, queries int
}

var rulerSpecs = []rulerSpec{
	{name: "niah_single_1", kind: rulerNIAH, maxNew: 128, haystack: rulerHayNoise, keyKind: rulerWords, valueKind: rulerNumbers, keys: 1, values: 1, queries: 1,
		doc: "one needle (word key, 7-digit value) in the repeated noise sentence"},
	{name: "niah_single_2", kind: rulerNIAH, maxNew: 128, haystack: rulerHayEssay, keyKind: rulerWords, valueKind: rulerNumbers, keys: 1, values: 1, queries: 1,
		doc: "one needle (word key, 7-digit value) in essays"},
	{name: "niah_single_3", kind: rulerNIAH, maxNew: 128, haystack: rulerHayEssay, keyKind: rulerWords, valueKind: rulerUUIDs, keys: 1, values: 1, queries: 1,
		doc: "one needle (word key, UUID value) in essays"},
	{name: "niah_multikey_1", kind: rulerNIAH, maxNew: 128, haystack: rulerHayEssay, keyKind: rulerWords, valueKind: rulerNumbers, keys: 4, values: 1, queries: 1,
		doc: "four needles in essays, one key asked (three distractors)"},
	{name: "niah_multikey_2", kind: rulerNIAH, maxNew: 128, haystack: rulerHayNeedle, keyKind: rulerWords, valueKind: rulerNumbers, keys: 1, values: 1, queries: 1,
		doc: "one needle (word key, number) in a haystack of distractor needles"},
	{name: "niah_multikey_3", kind: rulerNIAH, maxNew: 128, haystack: rulerHayNeedle, keyKind: rulerUUIDs, valueKind: rulerUUIDs, keys: 1, values: 1, queries: 1,
		doc: "one needle (UUID key, UUID value) in a haystack of distractor needles"},
	{name: "niah_multivalue", kind: rulerNIAH, maxNew: 128, haystack: rulerHayEssay, keyKind: rulerWords, valueKind: rulerNumbers, keys: 1, values: 4, queries: 1,
		doc: "four values of one key in essays, all asked"},
	{name: "niah_multiquery", kind: rulerNIAH, maxNew: 128, haystack: rulerHayEssay, keyKind: rulerWords, valueKind: rulerNumbers, keys: 4, values: 1, queries: 4,
		doc: "four needles in essays, all four keys asked"},
	{name: "vt", kind: rulerVT, maxNew: 30,
		doc: `variable tracking: chains of "VAR X = Y" in the noise sentence; name every variable that holds the value`},
	{name: "cwe", kind: rulerCWE, maxNew: 120,
		doc: "common words extraction: the 10 words that recur most in a numbered list"},
	{name: "fwe", kind: rulerFWE, maxNew: 50,
		doc: "frequent words extraction: the 3 most frequent coded words of a Zipf-distributed text"},
}

// RulerTaskNames lists the RULER tasks kvbench implements, in RULER's order.
func RulerTaskNames() []string {
	out := make([]string, len(rulerSpecs))
	for i, s := range rulerSpecs {
		out[i] = s.name
	}
	return out
}

// rulerSpecOf returns the spec of a RULER task name.
func rulerSpecOf(name string) (*rulerSpec, bool) {
	for i := range rulerSpecs {
		if rulerSpecs[i].name == name {
			return &rulerSpecs[i], true
		}
	}
	return nil, false
}

// usesEssay reports whether the task's haystack is the essays folder.
func (s *rulerSpec) usesEssay() bool { return s.kind == rulerNIAH && s.haystack == rulerHayEssay }

// StringMatchAll is RULER's string_match_all for one prediction: the share
// of refs that occur in pred as substrings, ignoring case (0 without refs).
func StringMatchAll(pred string, refs []string) float64 {
	if len(refs) == 0 {
		return 0
	}
	p := strings.ToLower(pred)
	n := 0
	for _, r := range refs {
		if strings.Contains(p, strings.ToLower(r)) {
			n++
		}
	}
	return float64(n) / float64(len(refs))
}

// StringMatchPart is RULER's string_match_part for one prediction: 1 when
// any of refs occurs in pred as a substring, ignoring case, else 0.
func StringMatchPart(pred string, refs []string) float64 {
	p := strings.ToLower(pred)
	for _, r := range refs {
		if strings.Contains(p, strings.ToLower(r)) {
			return 1
		}
	}
	return 0
}

// RulerPostprocess is RULER's clean-up of a prediction before scoring:
// surrounding space trimmed, every control character (bytes 0x00-0x1f)
// turned into a newline, and trimmed again.
func RulerPostprocess(pred string) string {
	b := []byte(strings.TrimSpace(pred))
	for i, c := range b {
		if c < 0x20 {
			b[i] = '\n'
		}
	}
	return strings.TrimSpace(string(b))
}

// RulerOptions are the settings of one RULER prompt.
type RulerOptions struct {
	// Length is the token budget of the prompt (BOS included) and the
	// answer together: RULER's max_seq_length.
	Length int
	// MaxNew is the part of Length kept for the answer (RULER's
	// tokens_to_generate); 0 takes the task's.
	MaxNew int
	// Depth is where the needles that hold the answers sit in the context,
	// 0 (start) to 1 (end), for the NIAH tasks; negative: RULER's random
	// placement. Other tasks place their insertions at random.
	Depth float64
	// Seed and Trial pick the keys, values, words and positions.
	Seed  uint64
	Trial int
	// Haystack is the text of the essays, for the tasks on essays; its
	// words are taken from the start, repeated when short.
	Haystack string
	// Hops and Chains shape vt's chains (0: RULER's 4 hops, 1 chain).
	Hops, Chains int
}

// RulerSample is one RULER prompt fitted to a length.
type RulerSample struct {
	Task    string
	Prompt  string   // the whole input, answer prefix included
	IDs     []int    // BOS (when the tokenizer has one) and the prompt's tokens
	Answers []string // the expected values, scored by StringMatchAll
	// ContextStart and Question are the byte offsets in Prompt where the
	// context (haystack and insertions) starts and where the question
	// (with the answer prefix) starts, just after the context.
	ContextStart, Question int
	// QuestionTokens is the number of prompt tokens from the question on.
	QuestionTokens int
	// Size is how much haystack the context holds: noise or needle
	// sentences, essay words, listed words (cwe) or coded words drawn (fwe).
	Size int
	// Needles are the byte offsets in Prompt of the insertions that hold
	// the answers (NIAH needles, vt's first chain), in prompt order.
	Needles []int
}

// NeedleDepths returns where each of s.Needles sits in the context, as a
// share of its bytes: 0 at the start, 1 at the end.
func (s RulerSample) NeedleDepths() []float64 {
	n := max(s.Question-s.ContextStart, 1)
	out := make([]float64, len(s.Needles))
	for i, at := range s.Needles {
		out[i] = float64(at-s.ContextStart) / float64(n)
	}
	return out
}

// BuildRuler makes the prompt of one trial of a RULER task, fitted to
// o.Length: the most haystack whose prompt (BOS included) leaves o.MaxNew
// tokens free, found by searching on token counts. A length that cannot
// hold the prompt with no haystack is an error saying the length needed.
func BuildRuler(tok tokenizer.Tokenizer, task string, o RulerOptions) (RulerSample, error) {
	spec, ok := rulerSpecOf(task)
	if !ok {
		return RulerSample{}, fmt.Errorf("unknown RULER task %q (have %s)", task, strings.Join(RulerTaskNames(), ", "))
	}
	return buildRuler(prompter{tok: tok}, spec, o, -1)
}

// RulerAnswerPrefix returns the answer prefix that ends a RULER question
// (the text from RulerSample.Question on): from "Answer:" on where the
// question has one (vt, cwe, fwe), else what follows its last "? " (the
// NIAH tasks' "The special magic number for ... is"). With a chat template
// it starts the assistant's reply, after the generation prompt, as RULER
// puts its answer_prefix after the model's template.
func RulerAnswerPrefix(question string) string {
	if i := strings.Index(question, " Answer: "); i >= 0 {
		return question[i+1:]
	}
	if i := strings.LastIndex(question, "? "); i >= 0 {
		return question[i+2:]
	}
	return ""
}

// buildRuler is BuildRuler through a prompter (raw or chat), starting the
// search at hint (< 0: none). Wrapped, the template's tokens count in the
// length and the sample's byte offsets are those of the wrapped prompt.
func buildRuler(pr prompter, spec *rulerSpec, o RulerOptions, hint int) (RulerSample, error) {
	tok := pr.tok
	if o.MaxNew <= 0 {
		o.MaxNew = spec.maxNew
	}
	gen, err := newRulerGen(tok, spec, o)
	if err != nil {
		return RulerSample{}, err
	}
	budget := o.Length - o.MaxNew
	var best *RulerSample
	var wrapErr error
	count := func(n int) int {
		t := gen.build(n)
		prompt, ids, shift, err := pr.wrap(t.prompt, RulerAnswerPrefix(t.prompt[t.question:]))
		if err != nil {
			wrapErr = err
			return math.MaxInt32 // fits nothing: the search stops on it
		}
		if len(ids) <= budget && (best == nil || n > best.Size) {
			needles := make([]int, len(t.needles))
			for i, at := range t.needles {
				needles[i] = at + shift
			}
			best = &RulerSample{
				Task: spec.name, Prompt: prompt, IDs: ids, Answers: t.answers,
				ContextStart: t.contextStart + shift, Question: t.question + shift, Size: n, Needles: needles,
			}
		}
		return len(ids)
	}
	lo, hi := gen.sizes()
	n, fits := rulerSearch(count, budget, lo, min(hi, 4*max(budget, 0)+64), hint)
	if wrapErr != nil {
		return RulerSample{}, fmt.Errorf("task %s: %w", spec.name, wrapErr)
	}
	if !fits {
		need := count(lo) + o.MaxNew
		return RulerSample{}, fmt.Errorf("task %s: parameter lengths: %d is too short: the prompt with the least haystack takes %d tokens with this tokenizer and the answer %d (max_new); use lengths of at least %d",
			spec.name, o.Length, need-o.MaxNew, o.MaxNew, need)
	}
	if n == hi && count(n) < budget-budget/20 {
		return RulerSample{}, fmt.Errorf("task %s: parameter lengths: %d is too long: the most haystack this task generates (%d) makes a prompt of %d tokens with this tokenizer",
			spec.name, o.Length, hi, count(n))
	}
	if best == nil || best.Size != n {
		count(n) // the search ends on a size it measured; rebuild if another was kept
		if best == nil || best.Size != n {
			return RulerSample{}, fmt.Errorf("task %s: internal error: size %d measured as fitting but not kept", spec.name, n)
		}
	}
	s := *best
	s.QuestionTokens = len(s.IDs) - len(pr.ids(s.Prompt[:s.Question]))
	return s, nil
}

// rulerSearch finds the largest size n in [lo, limit] with count(n) <=
// budget, given that counts grow with n (roughly: the search tolerates
// small dips). It probes hint first when hint > lo, extrapolates from the
// token rate to bracket the answer, then narrows the bracket by
// interpolation and bisection in turn. It returns false when lo does not
// fit. Counts are memoized.
func rulerSearch(count func(int) int, budget, lo, limit, hint int) (int, bool) {
	memo := map[int]int{}
	c := func(n int) int {
		if v, ok := memo[n]; ok {
			return v
		}
		v := count(n)
		memo[n] = v
		return v
	}
	if c(lo) > budget {
		return lo, false
	}
	if limit <= lo {
		return lo, true
	}
	good, bad := lo, -1
	probe := hint
	if probe <= lo {
		probe = lo + 16
	}
	for {
		probe = min(max(probe, good+1), limit)
		if c(probe) > budget {
			bad = probe
			break
		}
		good = probe
		if good == limit {
			return good, true
		}
		rate := float64(c(good)-c(lo)) / float64(good-lo)
		if rate <= 0 {
			rate = 1
		}
		probe = good + int(float64(budget-c(good))/rate) + 1
	}
	for step := 0; bad-good > 1; step++ {
		var mid int
		if tg, tb := c(good), c(bad); step%2 == 0 && tb > tg {
			mid = good + int(float64(budget-tg)/float64(tb-tg)*float64(bad-good))
		} else {
			mid = good + (bad-good)/2
		}
		mid = min(max(mid, good+1), bad-1)
		if c(mid) <= budget {
			good = mid
		} else {
			bad = mid
		}
	}
	return good, true
}

// rulerRand is the random source of one purpose ("keys", "haystack", ...)
// of one trial of a task under seed.
func rulerRand(seed uint64, task string, trial int, purpose string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(task + "/" + purpose))
	return rand.New(rand.NewPCG(seed, h.Sum64()^(uint64(trial)*0x9e3779b97f4a7c15)))
}

// RulerTrial is the record of one trial of a RULER task.
type RulerTrial struct {
	Answers    []string  `json:"answers"`
	Prediction string    `json:"prediction"`
	Score      float64   `json:"score"`      // StringMatchAll
	Part       float64   `json:"match_part"` // StringMatchPart
	Size       int       `json:"haystack"`   // RulerSample.Size
	Depths     []float64 `json:"needle_depths,omitempty"`
	Prefilled  int       `json:"prefilled"` // prompt tokens fed with Prompt (from the start)
	Tokens     int       `json:"tokens"`    // prompt tokens, BOS included; the rest were decoded
	Question   int       `json:"question_tokens"`
	Generated  int       `json:"generated"` // answer tokens generated (and fed)
}

// RulerContextElided stands for the context in a record's chat_prompt.
const RulerContextElided = "[...]"

// rulerTask is one RULER task (TASKS.md). Per trial the prompt is fitted to
// the cell's length (answer included, as RULER counts it); all of it but the
// tail is prefilled, the tail (the question and answer prefix, and at least
// decode_tail tokens) fed one token at a time, and max_new tokens generated
// greedily (stopping at EOS). The prediction, cleaned as RULER does, scores
// string_match_all against the expected values; the cell's score is the
// mean over trials. With chat on (chatParamDoc), the prompt before the
// answer prefix (RulerAnswerPrefix) is the user message of the model's chat
// template and the answer prefix follows the generation prompt; the
// template's tokens count in the length.
type rulerTask struct{ spec *rulerSpec }

type rulerParams struct {
	RulerOptions
	trials, decodeTail int
	batch              int
	haystack           string
	chat               string
}

func (t rulerTask) Name() string { return t.spec.name }
func (rulerTask) Version() int   { return 1 }

func (rulerTask) Metrics() []Metric {
	return []Metric{
		{Name: "score", Unit: UnitFraction, Better: BetterHigher},
		{Name: "match_part", Unit: UnitFraction, Better: BetterHigher},
	}
}

func (t rulerTask) Params() []policies.ParamDoc {
	d := []policies.ParamDoc{
		{Name: "lengths", Doc: "tokens of the prompt (BOS included) and the answer together, as RULER counts max_seq_length (one cell per value); " + t.spec.doc},
	}
	if t.spec.usesEssay() {
		d = append(d, policies.ParamDoc{Name: "haystack", Doc: "text file, or folder of .txt files, whose words make the haystack (RULER: Paul Graham's essays), taken from the start and repeated when short"})
	}
	if t.spec.kind == rulerNIAH {
		d = append(d, policies.ParamDoc{Name: "depths", Default: "random", Doc: "where the needles that hold the answers sit, 0 (start of the context) to 1 (its end); one cell per value, an integer count N means N evenly spaced depths; absent: RULER's random placement"})
	}
	if t.spec.kind == rulerVT {
		d = append(d,
			policies.ParamDoc{Name: "hops", Default: "4", Doc: "assignments after the first in each chain (the answer names hops+1 variables)"},
			policies.ParamDoc{Name: "chains", Default: "1", Doc: "chains hidden in the noise; the question asks for the first one's value"})
	}
	return append(d,
		policies.ParamDoc{Name: "trials", Default: "10", Doc: "prompts per cell, each with its own keys, words and positions"},
		policies.ParamDoc{Name: "seed", Default: "1", Doc: "keys, values, words and positions are drawn from PCGs seeded by (seed, task, trial)"},
		policies.ParamDoc{Name: "max_new", Default: fmt.Sprint(t.spec.maxNew), Doc: "tokens generated for the answer (RULER's tokens_to_generate), kept free within the length"},
		policies.ParamDoc{Name: "decode_tail", Default: "100", Doc: "last prompt tokens fed one at a time (decode) instead of prefilled, never fewer than the question and answer prefix, so the question is not prefilled; 0 prefills the whole prompt"},
		batchParamDoc,
		chatParamDoc,
	)
}

func (t rulerTask) Expand() []string {
	if t.spec.kind == rulerNIAH {
		return []string{"lengths", "depths"}
	}
	return []string{"lengths"}
}

// ExpandValue turns "depths: N" (an integer N >= 2) into N evenly spaced
// depths over [0, 1], as needle's.
func (t rulerTask) ExpandValue(name string, v any) ([]any, bool) {
	n, ok := v.(int)
	if t.spec.kind != rulerNIAH || name != "depths" || !ok || n < 2 || n > 1000 {
		return nil, false
	}
	var out []any
	for _, d := range NeedleDepths(n) {
		out = append(out, d)
	}
	return out, true
}

func readRuler(spec *rulerSpec, p Params, cell bool) (rulerParams, error) {
	r := newParamReader(spec.name, p, cell)
	c := rulerParams{}
	c.Length = r.Int("lengths", 0, 1, math.MaxInt32, true)
	c.Depth = -1
	if spec.usesEssay() {
		c.haystack = r.Path("haystack")
	}
	if spec.kind == rulerNIAH {
		if f, isNum := num.Parse(p["depths"]); isNum && f > 1 && f == math.Trunc(f) {
			r.fail("depths", "%v is a count, not a depth in [0, 1]: the suite expands a count N into N evenly spaced depths", p["depths"])
		}
		c.Depth = r.Float("depths", -1, 0, 1, false, true)
	}
	if spec.kind == rulerVT {
		c.Hops = r.Int("hops", 4, 1, 100, false)
		c.Chains = r.Int("chains", 1, 1, 100, false)
	}
	c.trials = r.Int("trials", 10, 1, 1<<20, false)
	c.Seed = uint64(r.Int("seed", 1, 0, math.MaxInt, false))
	c.MaxNew = r.Int("max_new", spec.maxNew, 1, 1<<20, false)
	c.decodeTail = r.Int("decode_tail", 100, 0, math.MaxInt32, false)
	c.batch = readBatch(r)
	c.chat = readChat(r)
	if r.err == nil && c.MaxNew >= c.Length {
		r.fail("max_new", "%d leaves no room for the prompt in a length of %d", c.MaxNew, c.Length)
	}
	if !cell && r.err == nil && c.haystack != "" {
		// Validation reads the start of the files; Run reads them whole.
		if err := SniffText(c.haystack); err != nil {
			r.fail("haystack", "%v", err)
		}
	}
	return c, r.done()
}

func (t rulerTask) Check(p Params) error {
	_, err := readRuler(t.spec, p, false)
	return err
}

func (t rulerTask) Run(ctx context.Context, m Model, p Params) (*Result, error) {
	c, err := readRuler(t.spec, p, true)
	if err != nil {
		return nil, err
	}
	name := t.spec.name
	if c.haystack != "" {
		text, err := ReadText(c.haystack)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if len(strings.Fields(text)) == 0 {
			return nil, fmt.Errorf("%s: haystack %s holds no words", name, c.haystack)
		}
		c.Haystack = text
	}
	pr, err := newPrompter(name, m, c.chat)
	if err != nil {
		return nil, err
	}
	res := &Result{Metrics: map[string]float64{}}
	samples := make([]RulerSample, c.trials)
	prompts, tails := make([][]int, c.trials), make([]int, c.trials)
	hint := -1
	for trial := range c.trials {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		o := c.RulerOptions
		o.Trial = trial
		s, err := buildRuler(pr, t.spec, o, hint)
		if err != nil {
			return nil, err
		}
		hint = s.Size
		samples[trial], prompts[trial] = s, s.IDs
		if c.decodeTail > 0 {
			tails[trial] = max(c.decodeTail, s.QuestionTokens) // the question is never prefilled
		}
	}
	last := samples[len(samples)-1]
	tok := m.Tokenizer()
	batch := trialBatch(m, c.trials, c.Length, c.batch)
	runs, err := generateAll(ctx, m, prompts, tails, c.MaxNew, tok.EOS(), batch)
	if err != nil {
		return nil, fmt.Errorf("%s: length %d: %w", name, c.Length, err)
	}
	trials := make([]RulerTrial, c.trials)
	var score, part float64
	for trial, g := range runs {
		s := samples[trial]
		pred := RulerPostprocess(tok.Decode(g.gen))
		trials[trial] = RulerTrial{Answers: s.Answers, Prediction: pred, Score: StringMatchAll(pred, s.Answers),
			Part: StringMatchPart(pred, s.Answers), Size: s.Size, Depths: s.NeedleDepths(), Prefilled: g.pre,
			Tokens: len(s.IDs), Question: s.QuestionTokens, Generated: len(g.gen)}
		score += trials[trial].Score
		part += trials[trial].Part
		res.Tokens += trials[trial].Tokens + trials[trial].Generated
	}
	res.Metrics["score"] = score / float64(c.trials)
	res.Metrics["match_part"] = part / float64(c.trials)
	res.Detail = map[string]any{
		"trials":      trials,
		"decode_tail": c.decodeTail,
		"max_new":     c.MaxNew,
		"batch":       batch,
		"chat":        pr.mode(),
	}
	if pr.chat() {
		// The last trial's prompt with its context cut out, to show the wrapping.
		res.Detail["chat_template"] = pr.tmpl.Name
		res.Detail["chat_prompt"] = last.Prompt[:last.ContextStart] + RulerContextElided + last.Prompt[last.Question:]
	}
	if c.Length > m.MaxSeq() {
		res.Detail["over_max_seq"] = true
		res.Detail["max_seq"] = m.MaxSeq()
	}
	return res, nil
}
