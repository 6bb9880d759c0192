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

// Words returns the distinct words of s, lowercased, with everything that
// is not a letter or a digit treated as a separator, in order of first use.
func Words(s string) []string {
	f := strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
	seen := map[string]bool{}
	out := f[:0]
	for _, w := range f {
		if !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	return out
}

// WordRecall is the share of the needle's distinct words (Words) that occur
// among the answer's words: 0..1, 0 for a needle without words.
func WordRecall(needle, answer string) float64 {
	want := Words(needle)
	if len(want) == 0 {
		return 0
	}
	have := map[string]bool{}
	for _, w := range Words(answer) {
		have[w] = true
	}
	n := 0
	for _, w := range want {
		if have[w] {
			n++
		}
	}
	return float64(n) / float64(len(want))
}

// NeedleInstance is one needle prompt fitted to a length.
type NeedleInstance struct {
	Prompt   string // context with the needle, then NeedleSuffix
	IDs      []int  // BOS (when the tokenizer has one) and the prompt's tokens
	Context  int    // bytes of context text, needle included
	InsertAt int    // byte offset of the needle in the prompt
}

// BuildNeedle makes the prompt of one cell: the haystack's tokens hay,
// repeated (joined by a blank line) as often as needed and cut to fill
// length tokens with BOS, the needle and the question suffix, decoded to
// text; the needle inserted with InsertNeedle; then NeedleSuffix(question).
// The context is shortened until the whole prompt fits in length tokens
// (tokens can merge differently once the pieces are joined).
func BuildNeedle(tok tokenizer.Tokenizer, hay []int32, needle, question string, length int, depth float64) NeedleInstance {
	suffix := NeedleSuffix(question)
	fixed := len(withBOS(tok, nil)) + len(tok.Encode(needle+" ")) + len(tok.Encode(suffix))
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
		prompt := withNeedle + suffix
		inst = NeedleInstance{Prompt: prompt, IDs: withBOS(tok, tok.Encode(prompt)), Context: len(withNeedle), InsertAt: at}
		over := len(inst.IDs) - length
		if over <= 0 || budget == 0 {
			break
		}
		budget -= over
	}
	return inst
}

// needle is needle in a haystack (TASKS.md). The prompt is BuildNeedle's:
//
//	<haystack text with the needle at depth>\n\n<question> Answer:
//
// Its last decode_tail tokens (the question among them) are fed one at a
// time, the rest prefilled; max_new tokens are generated greedily (stopping
// at EOS) and scored by WordRecall of the needle in the answer.
type needle struct{}

type needleParams struct {
	haystack, needle, question string
	length                     int
	depth                      float64
	maxNew, decodeTail         int
}

func (needle) Name() string { return "needle" }
func (needle) Version() int { return 1 }

func (needle) Metrics() []Metric {
	return []Metric{{Name: "score", Unit: UnitFraction, Better: BetterHigher}}
}

func (needle) Params() []policies.ParamDoc {
	return []policies.ParamDoc{
		{Name: "haystack", Doc: "text file, or folder of .txt files concatenated in name order; repeated when shorter than the length"},
		{Name: "needle", Default: DefaultNeedle, Doc: "sentence hidden in the haystack"},
		{Name: "question", Default: DefaultNeedleQuestion, Doc: `question after the context; the prompt ends "\n\n<question> Answer:"`},
		{Name: "lengths", Doc: "prompt length in tokens, BOS included (one cell per value)"},
		{Name: "depths", Default: "0.5", Doc: "needle position as a share of the context, 0..1, moved back to the previous sentence end (one cell per value; a suite turns an integer count N into NeedleDepths(N))"},
		{Name: "max_new", Default: "32", Doc: "tokens generated for the answer"},
		{Name: "decode_tail", Default: "64", Doc: "last prompt tokens fed one at a time (decode) instead of prefilled"},
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
		length:     r.Int("lengths", 0, 1, math.MaxInt32, true),
		depth:      r.Float("depths", 0.5, 0, 1, false, true),
		maxNew:     r.Int("max_new", 32, 1, 1<<20, false),
		decodeTail: r.Int("decode_tail", 64, 0, math.MaxInt32, false),
	}
	if r.err == nil && len(Words(c.needle)) == 0 {
		r.fail("needle", "%q has no words to score", c.needle)
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
	tok := m.Tokenizer()
	hay, err := tokenizedText(c.haystack, tok)
	if err != nil {
		return nil, fmt.Errorf("needle: %w", err)
	}
	if len(hay) == 0 {
		return nil, fmt.Errorf("needle: haystack %s gives no tokens", c.haystack)
	}
	inst := BuildNeedle(tok, hay, c.needle, c.question, c.length, c.depth)
	if len(inst.IDs) > c.length {
		return nil, fmt.Errorf("task needle: parameter lengths: %d is too short: the shortest prompt (the needle and the question, with as little haystack as fits) takes %d tokens with this tokenizer; use lengths of at least %d", c.length, len(inst.IDs), len(inst.IDs))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s, err := m.NewStream()
	if err != nil {
		return nil, fmt.Errorf("needle: %w", err)
	}
	defer s.Close()
	logits := make([]float32, m.Vocab())
	pre, err := feedPrompt(ctx, s, inst.IDs, c.decodeTail, logits)
	if err != nil {
		return nil, fmt.Errorf("needle: length %d depth %v: %w", c.length, c.depth, err)
	}
	gen, err := Greedy(ctx, s, logits, c.maxNew, tok.EOS())
	if err != nil {
		return nil, fmt.Errorf("needle: length %d depth %v: %w", c.length, c.depth, err)
	}
	answer := tok.Decode(gen)
	res := &Result{
		Metrics: map[string]float64{"score": WordRecall(c.needle, answer)},
		Tokens:  len(inst.IDs) + len(gen),
		Detail: map[string]any{
			"answer":        answer,
			"insert_byte":   inst.InsertAt,
			"insert_token":  len(withBOS(tok, tok.Encode(inst.Prompt[:inst.InsertAt]))),
			"insert_depth":  float64(inst.InsertAt) / float64(max(inst.Context, 1)),
			"prompt_tokens": len(inst.IDs),
			"prefilled":     pre,
		},
	}
	if c.length > m.MaxSeq() {
		res.Detail["over_max_seq"] = true
		res.Detail["max_seq"] = m.MaxSeq()
	}
	return res, nil
}
