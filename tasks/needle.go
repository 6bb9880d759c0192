package tasks

import (
	"context"
	"fmt"
	"github.com/kvbench/kvbench/internal/num"
	"math"
	"strings"
	"unicode"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime/tokenizer"
)

func init() { Register(needle{}) }

// The usual needle and question (TASKS.md).
const (
	DefaultNeedle         = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
	DefaultNeedleQuestion = "What is the best thing to do in San Francisco?"
)

// NeedleSuffix returns what follows the context in a needle prompt: a blank
// line, the question and " Answer:".
func NeedleSuffix(question string) string { return "\n\n" + question + " Answer:" }

// NeedleDepths returns n depths evenly spaced over [0, 1] (0%, ..., 100%):
// what a suite means by an integer count of depths. n = 1 gives {0}.
func NeedleDepths(n int) []float64 {
	if n <= 0 {
		return nil
	}
	if n == 1 {
		return []float64{0}
	}
	d := make([]float64, n)
	for i := range d {
		d[i] = float64(i) / float64(n-1)
	}
	return d
}

// InsertNeedle puts needle into text at depth (0..1) of its length in
// bytes, moved back to the previous sentence end: just after the last ". "
// at or before that point, or the start when there is none. Depth 1 appends
// the needle at the end. It returns the new text and the byte offset where
// the needle starts.
func InsertNeedle(text, needle string, depth float64) (string, int) {
	p := int(math.Floor(depth * float64(len(text))))
	p = min(max(p, 0), len(text))
	if p < len(text) {
		if i := strings.LastIndex(text[:p], ". "); i >= 0 {
			p = i + 2
		} else {
			p = 0
		}
	}
	switch {
	case text == "":
		return needle, 0
	case p == 0:
		return needle + " " + text, 0
	case p == len(text):
		if strings.HasSuffix(text, " ") {
			return text + needle, p
		}
		return text + " " + needle, p + 1
	}
	return text[:p] + needle + " " + text[p:], p
}

// NeedleKeyPhrase is the part of DefaultNeedle an answer must contain to
// count as an exact match: what the needle says that the question does not.
const NeedleKeyPhrase = "eat a sandwich and sit in Dolores Park"

// Tokens returns the words of s in order, lower-cased, everything that is not
// a letter or a digit being a separator (punctuation is stripped): the
// unigrams that ROUGE-1 counts, as the rouge_score package tokenizes (which
// keeps only ASCII letters and digits; here any Unicode letter or digit is
// kept, the same on ASCII text; and nothing is stemmed).
func Tokens(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
}

// Rouge1F1 is the ROUGE-1 F1 score of answer against reference: with c the
// number of unigrams (Tokens) the two share, each counted as often as it
// occurs in both (the smaller count), precision c/|answer| and recall
// c/|reference|, F1 = 2c/(|answer|+|reference|). 0..1; 0 when either has no
// words. This is how KVCache-Factory and kvpress score the needle
// (rouge_score's rouge1 fmeasure, which they also multiply by 10 and compute
// with Porter stemming: "sandwiches" matches "sandwich" there, not here).
func Rouge1F1(reference, answer string) float64 {
	ref, ans := Tokens(reference), Tokens(answer)
	if len(ref) == 0 || len(ans) == 0 {
		return 0
	}
	count := make(map[string]int, len(ref))
	for _, w := range ref {
		count[w]++
	}
	shared := 0
	for _, w := range ans {
		if count[w] > 0 {
			count[w]--
			shared++
		}
	}
	return 2 * float64(shared) / float64(len(ref)+len(ans))
}

// ContainsPhrase reports whether answer contains phrase as a run of whole
// words, both normalised as Tokens does (case and punctuation ignored): "...
// eat a sandwich, and sit in Dolores Park!" contains "eat a sandwich and sit
// in Dolores Park". A phrase without words is contained in nothing.
func ContainsPhrase(answer, phrase string) bool {
	want := Tokens(phrase)
	if len(want) == 0 {
		return false
	}
	return strings.Contains(" "+strings.Join(Tokens(answer), " ")+" ", " "+strings.Join(want, " ")+" ")
}

// NeedleInstance is one needle prompt fitted to a length.
type NeedleInstance struct {
	Prompt       string // context with the needle, then NeedleSuffix (wrapped in the chat template when chat is on)
	IDs          []int  // BOS (when the tokenizer has one, or as the chat template puts it) and the prompt's tokens
	Context      int    // bytes of context text, needle included
	ContextStart int    // byte offset of the context in the prompt (0 unless wrapped)
	InsertAt     int    // byte offset of the needle in the prompt
}

// NeedleAnswerPrefix ends NeedleSuffix; with a chat template it starts the
// assistant's reply, after the generation prompt.
const NeedleAnswerPrefix = "Answer:"

// BuildNeedle makes the prompt of one cell: the haystack's tokens hay,
// repeated (joined by a blank line) as often as needed and cut to fill
// length tokens with BOS, the needle and the question suffix, decoded to
// text; the needle inserted with InsertNeedle; then NeedleSuffix(question).
// The context is shortened until the whole prompt fits in length tokens
// (tokens can merge differently once the pieces are joined).
func BuildNeedle(tok tokenizer.Tokenizer, hay []int32, needle, question string, length int, depth float64) NeedleInstance {
	inst, _ := buildNeedle(prompter{tok: tok}, hay, needle, question, length, depth) // raw prompts cannot fail
	return inst
}

// buildNeedle is BuildNeedle through a prompter (raw or chat). Wrapped, the
// question (without " Answer:") ends the user message and "Answer:" follows
// the generation prompt; the template's tokens are counted in the length.
// Its error is the chat template's.
func buildNeedle(pr prompter, hay []int32, needle, question string, length int, depth float64) (NeedleInstance, error) {
	tok := pr.tok
	suffix := NeedleSuffix(question)
	fixed := len(withBOS(tok, nil)) + len(tok.Encode(needle+" ")) + len(tok.Encode(suffix))
	if pr.chat() {
		// The template's own tokens: the shortest prompt wrapped and raw.
		_, wrapped, err := pr.encode(needle+suffix, NeedleAnswerPrefix)
		if err != nil {
			return NeedleInstance{}, err
		}
		fixed += len(wrapped) - len(withBOS(tok, tok.Encode(needle+suffix)))
	}
	sep := tok.Encode("\n\n")
	budget := length - fixed
	var inst NeedleInstance
	for range 8 {
		budget = max(budget, 0)
		ctxIDs := make([]int, 0, budget)
		for i := 0; len(ctxIDs) < budget && len(hay) > 0; i++ {
			if i > 0 {
				ctxIDs = append(ctxIDs, sep...)
			}
			for _, id := range hay {
				if len(ctxIDs) == budget {
					break
				}
				ctxIDs = append(ctxIDs, int(id))
			}
		}
		ctxIDs = ctxIDs[:min(len(ctxIDs), budget)]
		text := tok.Decode(ctxIDs)
		withNeedle, at := InsertNeedle(text, needle, depth)
		prompt, ids, shift, err := pr.wrap(withNeedle+suffix, NeedleAnswerPrefix)
		if err != nil {
			return NeedleInstance{}, err
		}
		inst = NeedleInstance{Prompt: prompt, IDs: ids, Context: len(withNeedle), ContextStart: shift, InsertAt: at + shift}
		over := len(inst.IDs) - length
		if over <= 0 || budget == 0 {
			break
		}
		budget -= over
	}
	return inst, nil
}

// needle is needle in a haystack (TASKS.md). The prompt is BuildNeedle's:
//
//	<haystack text with the needle at depth>\n\n<question> Answer:
//
// Its last decode_tail tokens (the question among them) are fed one at a
// time, the rest prefilled; max_new tokens are generated greedily (stopping
// at EOS). The answer is scored as KVCache-Factory and kvpress score it:
// "score" is the ROUGE-1 F1 of the answer against the needle (Rouge1F1), and
// "exact_match" is 1 when the answer contains the key phrase
// (ContainsPhrase), else 0.
//
// With chat on (chatParamDoc), the prompt up to the question is the user
// message of the model's chat template and "Answer:" follows the generation
// prompt; the template's tokens count in the length, and the needle's
// offsets are those of the wrapped prompt.
//
// Version 2 (this scoring) replaced version 1's share of the needle's
// distinct words found in the answer, which an answer that only echoes the
// question scored almost as well as the right one.
type needle struct{}

type needleParams struct {
	haystack, needle, question string
	keyPhrase                  string
	length                     int
	depth                      float64
	maxNew, decodeTail         int
	chat                       string
}

func (needle) Name() string { return "needle" }
func (needle) Version() int { return 2 }

func (needle) Metrics() []Metric {
	return []Metric{
		{Name: "score", Unit: UnitFraction, Better: BetterHigher},       // ROUGE-1 F1 against the needle
		{Name: "exact_match", Unit: UnitFraction, Better: BetterHigher}, // the answer contains the key phrase
	}
}

func (needle) Params() []policies.ParamDoc {
	return []policies.ParamDoc{
		{Name: "haystack", Doc: "text file, or folder of .txt files concatenated in name order; repeated when shorter than the length"},
		{Name: "needle", Default: DefaultNeedle, Doc: "sentence hidden in the haystack"},
		{Name: "question", Default: DefaultNeedleQuestion, Doc: `question after the context; the prompt ends "\n\n<question> Answer:"`},
		{Name: "key_phrase", Default: NeedleKeyPhrase, Doc: "words of the needle an answer must contain (case and punctuation ignored) for exact_match; with another needle the default is the whole needle"},
		{Name: "lengths", Doc: "prompt length in tokens, BOS included (one cell per value)"},
		{Name: "depths", Default: "0.5", Doc: "needle position as a share of the context, 0..1, moved back to the previous sentence end (one cell per value; a suite turns an integer count N into NeedleDepths(N))"},
		{Name: "max_new", Default: "32", Doc: "tokens generated for the answer"},
		{Name: "decode_tail", Default: "64", Doc: "last prompt tokens fed one at a time (decode) instead of prefilled"},
		chatParamDoc,
	}
}

func (needle) Expand() []string { return []string{"lengths", "depths"} }

func readNeedle(p Params, cell bool) (needleParams, error) {
	r := newParamReader("needle", p, cell)
	if f, isNum := num.Parse(p["depths"]); isNum && f > 1 && f == math.Trunc(f) {
		r.fail("depths", "%v is a count, not a depth in [0, 1]: the suite expands a count N into NeedleDepths(N)", p["depths"])
	}
	c := needleParams{
		haystack:   r.Path("haystack"),
		needle:     r.String("needle", DefaultNeedle, false),
		question:   r.String("question", DefaultNeedleQuestion, false),
		keyPhrase:  r.String("key_phrase", "", false),
		length:     r.Int("lengths", 0, 1, math.MaxInt32, true),
		depth:      r.Float("depths", 0.5, 0, 1, false, true),
		maxNew:     r.Int("max_new", 32, 1, 1<<20, false),
		decodeTail: r.Int("decode_tail", 64, 0, math.MaxInt32, false),
		chat:       readChat(r),
	}
	if r.err == nil && len(Tokens(c.needle)) == 0 {
		r.fail("needle", "%q has no words to score", c.needle)
	}
	if r.err == nil {
		given := c.keyPhrase != ""
		if !given {
			c.keyPhrase = c.needle
			if c.needle == DefaultNeedle {
				c.keyPhrase = NeedleKeyPhrase
			}
		}
		switch {
		case given && len(Tokens(c.keyPhrase)) == 0:
			r.fail("key_phrase", "%q has no words to match", c.keyPhrase)
		case !ContainsPhrase(c.needle, c.keyPhrase):
			r.fail("key_phrase", "%q is not a run of the needle's words (%q): no answer repeating the needle would match it", c.keyPhrase, c.needle)
		}
	}
	if !cell && r.err == nil && c.haystack != "" {
		// Validation reads the start of the files; Run reads them whole.
		if err := SniffText(c.haystack); err != nil {
			r.fail("haystack", "%v", err)
		}
	}
	return c, r.done()
}

func (needle) Check(p Params) error {
	_, err := readNeedle(p, false)
	return err
}

func (needle) Run(ctx context.Context, m Model, p Params) (*Result, error) {
	c, err := readNeedle(p, true)
	if err != nil {
		return nil, err
	}
	pr, err := newPrompter("needle", m, c.chat)
	if err != nil {
		return nil, err
	}
	tok := m.Tokenizer()
	hay, err := tokenizedText(tok, c.haystack)
	if err != nil {
		return nil, fmt.Errorf("needle: %w", err)
	}
	if len(hay) == 0 {
		return nil, fmt.Errorf("needle: haystack %s gives no tokens", c.haystack)
	}
	inst, err := buildNeedle(pr, hay, c.needle, c.question, c.length, c.depth)
	if err != nil {
		return nil, fmt.Errorf("needle: %w", err)
	}
	if len(inst.IDs) > c.length {
		return nil, fmt.Errorf("task needle: parameter lengths: %d is too short: the shortest prompt (the needle and the question, with as little haystack as fits) takes %d tokens with this tokenizer; use lengths of at least %d", c.length, len(inst.IDs), len(inst.IDs))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var g generated
	if err := oneStream(ctx, m, inst.IDs, c.decodeTail, c.maxNew, tok.EOS(), make([]float32, m.Vocab()), &g); err != nil {
		return nil, fmt.Errorf("needle: length %d depth %v: %w", c.length, c.depth, err)
	}
	pre, gen := g.pre, g.gen
	answer := tok.Decode(gen)
	exact := 0.0
	if ContainsPhrase(answer, c.keyPhrase) {
		exact = 1
	}
	res := &Result{
		Metrics: map[string]float64{"score": Rouge1F1(c.needle, answer), "exact_match": exact},
		Tokens:  len(inst.IDs) + len(gen),
		Detail: map[string]any{
			"answer":        answer,
			"key_phrase":    c.keyPhrase,
			"insert_byte":   inst.InsertAt,
			"insert_token":  len(pr.ids(inst.Prompt[:inst.InsertAt])),
			"insert_depth":  float64(inst.InsertAt-inst.ContextStart) / float64(max(inst.Context, 1)),
			"prompt_tokens": len(inst.IDs),
			"prefilled":     pre,
			"chat":          pr.mode(),
		},
	}
	if pr.chat() {
		// The prompt without haystack, to show the wrapping.
		shape, _, err := pr.encode(c.needle+NeedleSuffix(c.question), NeedleAnswerPrefix)
		if err != nil {
			return nil, fmt.Errorf("needle: %w", err)
		}
		res.Detail["chat_template"] = pr.tmpl.Name
		res.Detail["chat_prompt"] = shape
	}
	if c.length > m.MaxSeq() {
		res.Detail["over_max_seq"] = true
		res.Detail["max_seq"] = m.MaxSeq()
	}
	return res, nil
}
