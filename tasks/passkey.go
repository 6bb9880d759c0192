package tasks

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime/tokenizer"
)

func init() { Register(passkey{}) }

// The fixed text of the passkey prompt (Landmark Attention's, used by Quest).
const (
	PasskeyIntro    = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about the important information there."
	PasskeyFiller   = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
	PasskeyQuestion = "What is the pass key? " + PasskeyAnswerPrefix
	// PasskeyAnswerPrefix ends the question; with a chat template it starts
	// the assistant's reply, after the generation prompt.
	PasskeyAnswerPrefix = "The pass key is"
	// PasskeyMax is the largest key; keys are uniform in 1..PasskeyMax.
	PasskeyMax = 50000
	// passkeyNew is how many tokens are generated for the answer.
	passkeyNew = 10
)

// PasskeyLine is the line that hides key.
func PasskeyLine(key int) string {
	k := strconv.Itoa(key)
	return "The pass key is " + k + ". Remember it. " + k + " is the pass key."
}

// PasskeyPrompt returns the prompt with before filler sentences ahead of the
// key line and after filler sentences behind it: the five lines intro,
// filler before, key line, filler after and question, joined by "\n" (an
// empty filler leaves an empty line). Filler sentences are joined by a space.
func PasskeyPrompt(key, before, after int) string {
	filler := func(n int) string {
		return strings.TrimSuffix(strings.Repeat(PasskeyFiller+" ", n), " ")
	}
	return strings.Join([]string{PasskeyIntro, filler(before), PasskeyLine(key), filler(after), PasskeyQuestion}, "\n")
}

// PasskeyKey returns the key of trial (0-based) under seed: uniform in
// 1..PasskeyMax from a PCG seeded by (seed, trial).
func PasskeyKey(seed uint64, trial int) int {
	return 1 + rand.New(rand.NewPCG(seed, uint64(trial))).IntN(PasskeyMax)
}

// PasskeyInstance is one passkey prompt fitted to a length.
type PasskeyInstance struct {
	Key    int
	Prompt string // the text fed to the model (wrapped in the chat template when chat is on)
	IDs    []int  // BOS (when the tokenizer has one, or as the chat template puts it) and the prompt's tokens
	Before int    // filler sentences before the key line
	After  int    // filler sentences after it
}

// BuildPasskey fits the prompt of key to length tokens (BOS included): the
// most filler sentences whose prompt still fits (found by binary search on
// token counts), of which round(depth*n) go before the key line. With no
// room for any filler the prompt is longer than length.
func BuildPasskey(tok tokenizer.Tokenizer, length int, depth float64, key int) PasskeyInstance {
	inst, _ := buildPasskey(prompter{tok: tok}, length, depth, key, -1) // raw prompts cannot fail
	return inst
}

// buildPasskey is BuildPasskey through a prompter (raw or chat), starting a
// local search from hint filler sentences (a hint < 0 searches from
// scratch). Its error is the chat template's.
func buildPasskey(pr prompter, length int, depth float64, key, hint int) (inst PasskeyInstance, err error) {
	build := func(n int) PasskeyInstance {
		before := int(math.Round(depth * float64(n)))
		before = min(max(before, 0), n)
		text, ids, e := pr.encode(PasskeyPrompt(key, before, n-before), PasskeyAnswerPrefix)
		if e != nil && err == nil {
			err = e
		}
		return PasskeyInstance{Key: key, Prompt: text, IDs: ids, Before: before, After: n - before}
	}
	fits := func(p PasskeyInstance) bool { return err == nil && len(p.IDs) <= length }
	best := build(0)
	if !fits(best) {
		return best, err
	}
	if hint < 0 {
		// Every filler sentence adds nearly the same number of tokens: the
		// growth over a few sentences places the answer within a sentence or
		// two, and the walk below settles it with a few encodings (a 32K
		// prompt took some 23 by bisection).
		const probe = 16
		if p := build(probe); fits(p) && len(p.IDs) > len(best.IDs) {
			per := float64(len(p.IDs)-len(best.IDs)) / probe
			hint = probe + int(float64(length-len(p.IDs))/per)
		}
	}
	if hint >= 0 {
		// Walk from the hint: down while too long, then up while the next fits.
		n := hint
		cur := build(n)
		for n > 0 && !fits(cur) && err == nil {
			n--
			cur = build(n)
		}
		for {
			next := build(n + 1)
			if !fits(next) {
				return cur, err
			}
			n, cur = n+1, next
		}
	}
	// Grow hi until it does not fit, then bisect: lo fits, hi does not.
	lo, hi := 0, 1
	for {
		p := build(hi)
		if !fits(p) {
			break
		}
		lo, best = hi, p
		hi *= 2
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if p := build(mid); fits(p) {
			lo, best = mid, p
		} else {
			hi = mid
		}
	}
	return best, err
}

// FirstDigits returns the first run of ASCII digits in s, or "".
func FirstDigits(s string) string {
	i := strings.IndexAny(s, "0123456789")
	if i < 0 {
		return ""
	}
	j := i
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	return s[i:j]
}

// PasskeyTrial is the record of one passkey trial.
type PasskeyTrial struct {
	Key       int    `json:"key"`
	Answer    string `json:"answer"`
	Correct   bool   `json:"correct"`
	Prefilled int    `json:"prefilled"` // prompt tokens fed with Prompt (from the start)
	Tokens    int    `json:"tokens"`    // prompt tokens, BOS included; the rest were decoded
	Generated int    `json:"generated"` // answer tokens generated (and fed)
}

// passkey is passkey retrieval (TASKS.md). Per trial, the prompt is fitted to
// the cell's length; all but its last decode_tail tokens are prefilled, the
// tail (which holds the question) is fed one token at a time, then 10 tokens
// are generated greedily. The answer's first run of digits must equal the
// key exactly.
type passkey struct{}

type passkeyParams struct {
	length             int
	depth              float64
	trials, decodeTail int
	batch              int
	seed               uint64
	chat               string
}

func (passkey) Name() string { return "passkey" }
func (passkey) Version() int { return 1 }

func (passkey) Metrics() []Metric {
	return []Metric{{Name: "accuracy", Unit: UnitFraction, Better: BetterHigher}}
}

func (passkey) Params() []policies.ParamDoc {
	return []policies.ParamDoc{
		{Name: "lengths", Doc: "prompt length in tokens, BOS included (one cell per value)"},
		{Name: "depths", Default: "0.5", Doc: "where the key line sits in the filler, 0 (after the intro) to 1 (before the question); one cell per value"},
		{Name: "trials", Default: "10", Doc: "prompts per cell, each with its own key"},
		{Name: "seed", Default: "1", Doc: "keys are drawn from a PCG seeded by (seed, trial)"},
		{Name: "decode_tail", Default: "100", Doc: "last prompt tokens fed one at a time (decode) instead of prefilled, so the question is never prefilled (Quest's variant)"},
		batchParamDoc,
		chatParamDoc,
	}
}

func (passkey) Expand() []string { return []string{"lengths", "depths"} }

func readPasskey(p Params, cell bool) (passkeyParams, error) {
	r := newParamReader("passkey", p, cell)
	c := passkeyParams{
		length:     r.Int("lengths", 0, 1, math.MaxInt32, true),
		depth:      r.Float("depths", 0.5, 0, 1, false, true),
		trials:     r.Int("trials", 10, 1, 1<<20, false),
		seed:       uint64(r.Int("seed", 1, 0, math.MaxInt, false)),
		decodeTail: r.Int("decode_tail", 100, 0, math.MaxInt32, false),
		batch:      readBatch(r),
		chat:       readChat(r),
	}
	return c, r.done()
}

func (passkey) Check(p Params) error {
	_, err := readPasskey(p, false)
	return err
}

func (passkey) Run(ctx context.Context, m Model, p Params) (*Result, error) {
	c, err := readPasskey(p, true)
	if err != nil {
		return nil, err
	}
	pr, err := newPrompter("passkey", m, c.chat)
	if err != nil {
		return nil, err
	}
	// Fit the filler once with the widest key; each trial then adjusts locally.
	fit, err := buildPasskey(pr, c.length, c.depth, PasskeyMax, -1)
	if err != nil {
		return nil, fmt.Errorf("passkey: %w", err)
	}
	if len(fit.IDs) > c.length {
		return nil, passkeyTooLong(c.length, len(fit.IDs))
	}
	res := &Result{Metrics: map[string]float64{}}
	insts := make([]PasskeyInstance, c.trials)
	prompts, tails := make([][]int, c.trials), make([]int, c.trials)
	for t := range insts {
		key := PasskeyKey(c.seed, t)
		inst, err := buildPasskey(pr, c.length, c.depth, key, fit.Before+fit.After)
		if err != nil {
			return nil, fmt.Errorf("passkey: %w", err)
		}
		if len(inst.IDs) > c.length {
			return nil, passkeyTooLong(c.length, len(inst.IDs))
		}
		insts[t], prompts[t], tails[t] = inst, inst.IDs, c.decodeTail
	}
	tok := m.Tokenizer()
	batch := trialBatch(m, c.trials, c.length, c.batch)
	runs, err := generateAll(ctx, m, prompts, tails, passkeyNew, tok.EOS(), batch)
	if err != nil {
		return nil, fmt.Errorf("passkey: length %d depth %v: %w", c.length, c.depth, err)
	}
	trials := make([]PasskeyTrial, c.trials)
	correct := 0
	for t, g := range runs {
		answer := tok.Decode(g.gen)
		trials[t] = PasskeyTrial{Key: insts[t].Key, Answer: answer, Correct: FirstDigits(answer) == strconv.Itoa(insts[t].Key),
			Prefilled: g.pre, Tokens: len(insts[t].IDs), Generated: len(g.gen)}
		if trials[t].Correct {
			correct++
		}
		res.Tokens += trials[t].Tokens + trials[t].Generated
	}
	inst := insts[len(insts)-1]
	res.Metrics["accuracy"] = float64(correct) / float64(c.trials)
	res.Detail = map[string]any{
		"trials":        trials,
		"filler_before": fit.Before,
		"filler_after":  fit.After,
		"decode_tail":   c.decodeTail,
		"batch":         batch,
		"chat":          pr.mode(),
	}
	if pr.chat() {
		// The last trial's prompt without its filler, to show the wrapping.
		shape, _, err := pr.encode(PasskeyPrompt(inst.Key, 0, 0), PasskeyAnswerPrefix)
		if err != nil {
			return nil, fmt.Errorf("passkey: %w", err)
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

// passkeyTooLong is the error of a length that cannot hold the prompt even
// without filler.
func passkeyTooLong(length, need int) error {
	return fmt.Errorf("task passkey: parameter lengths: %d is too short: the prompt without filler (intro, key line and question) takes %d tokens with this tokenizer; use lengths of at least %d", length, need, need)
}
