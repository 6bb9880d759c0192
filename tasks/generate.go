package tasks

// Helpers the tasks share: greedy decoding, typed parameter reading, and the
// cache of tokenized texts.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"

	"github.com/kvbench/kvbench/internal/num"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/tokenizer"
)

// Argmax returns the index of the largest value of v (the first on ties), or
// -1 when v is empty. NaN values are never chosen (runtime.Argmax).
func Argmax(v []float32) int { return runtime.Argmax(v) }

// Greedy generates up to n tokens: starting from logits (those of the last
// token fed to s), it takes the argmax, feeds it with s.Step (which writes the
// next logits into logits) and repeats. It stops before n tokens when it
// generates eos (eos < 0: never); eos is not returned. Every returned token
// has been fed to the stream. ctx is checked between steps.
func Greedy(ctx context.Context, s Stream, logits []float32, n, eos int) ([]int, error) {
	out := make([]int, 0, n)
	for len(out) < n {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		id := Argmax(logits)
		if id < 0 {
			return out, fmt.Errorf("greedy: no finite logit")
		}
		if eos >= 0 && id == eos {
			break
		}
		out = append(out, id)
		if err := s.Step(id, logits); err != nil {
			return out, fmt.Errorf("greedy: step %d: %w", len(out), err)
		}
	}
	return out, nil
}

// withBOS returns ids with tok's BOS in front, when it has one.
func withBOS(tok tokenizer.Tokenizer, ids []int) []int {
	if tok.BOS() < 0 {
		return ids
	}
	return append([]int{tok.BOS()}, ids...)
}

// feedPrompt feeds ids to s: the first len(ids)-tail at once with Prompt
// (prefill, at least one token), the rest one at a time with Step. It returns
// how many were prefilled; logits hold those of the last token.
func feedPrompt(ctx context.Context, s Stream, ids []int, tail int, logits []float32) (int, error) {
	pre := max(1, len(ids)-tail)
	if err := s.Prompt(ids[:pre], logits); err != nil {
		return 0, fmt.Errorf("prefill of %d tokens: %w", pre, err)
	}
	for i := pre; i < len(ids); i++ {
		if err := ctx.Err(); err != nil {
			return pre, err
		}
		if err := s.Step(ids[i], logits); err != nil {
			return pre, fmt.Errorf("decode of prompt token %d: %w", i, err)
		}
	}
	return pre, nil
}

// paramReader reads a task's parameters with types and ranges, remembers
// which names were read so unknown ones can be reported, and keeps the first
// error. With cell set, parameters that the suite expands (lists) must
// already be scalars; without it (Check), a list is validated element-wise.
type paramReader struct {
	task string
	p    Params
	cell bool
	used map[string]bool
	err  error
}

func newParamReader(task string, p Params, cell bool) *paramReader {
	return &paramReader{task: task, p: p, cell: cell, used: map[string]bool{}}
}

func (r *paramReader) fail(name, format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("task %s: parameter %s: %s", r.task, name, fmt.Sprintf(format, args...))
	}
}

// values returns the parameter's values: one for a scalar, every element for
// a list (allowed only for expanded parameters outside a cell).
func (r *paramReader) values(name string, expanded bool) ([]any, bool) {
	r.used[name] = true
	v, ok := r.p[name]
	if !ok || v == nil {
		return nil, false
	}
	rv := reflect.ValueOf(v)
	if k := rv.Kind(); k == reflect.Slice || k == reflect.Array {
		if _, isBytes := v.([]byte); !isBytes {
			if !expanded {
				r.fail(name, "%v is a list; want one value", v)
				return nil, false
			}
			if r.cell {
				r.fail(name, "%v is a list; the suite expands it into one cell per value", v)
				return nil, false
			}
			if rv.Len() == 0 {
				r.fail(name, "is an empty list")
				return nil, false
			}
			out := make([]any, rv.Len())
			for i := range out {
				out[i] = rv.Index(i).Interface()
			}
			return out, true
		}
	}
	return []any{v}, true
}

// Int reads an integer in [lo, hi]; def is used when absent, and the
// parameter is required when def < lo. For an expanded parameter outside a
// cell it returns the first element of the list.
func (r *paramReader) Int(name string, def, lo, hi int, expanded bool) int {
	vs, ok := r.values(name, expanded)
	if !ok {
		if def < lo {
			r.fail(name, "is required")
		}
		return def
	}
	out := def
	for i, v := range vs {
		f, ok := num.Parse(v)
		switch {
		case !ok:
			r.fail(name, "%v (%T) is not a number", v, v)
			return def
		case f != math.Trunc(f) || math.IsInf(f, 0):
			r.fail(name, "%v is not an integer", v)
			return def
		case f < float64(lo) || f > float64(hi):
			r.fail(name, "%v is out of range [%d, %d]", v, lo, hi)
			return def
		}
		if i == 0 {
			out = int(f)
		}
	}
	return out
}

// Float reads a number in [lo, hi]; def is used when absent (required when
// required is set).
func (r *paramReader) Float(name string, def, lo, hi float64, required, expanded bool) float64 {
	vs, ok := r.values(name, expanded)
	if !ok {
		if required {
			r.fail(name, "is required")
		}
		return def
	}
	out := def
	for i, v := range vs {
		f, ok := num.Parse(v)
		switch {
		case !ok:
			r.fail(name, "%v (%T) is not a number", v, v)
			return def
		case f != f || f < lo || f > hi:
			r.fail(name, "%v is out of range [%v, %v]", v, lo, hi)
			return def
		}
		if i == 0 {
			out = f
		}
	}
	return out
}

// String reads a string; def is used when absent (required when required is
// set). An empty string is an error.
func (r *paramReader) String(name, def string, required bool) string {
	vs, ok := r.values(name, false)
	if !ok {
		if required {
			r.fail(name, "is required")
		}
		return def
	}
	s, isStr := vs[0].(string)
	if !isStr {
		r.fail(name, "%v (%T) is not a string", vs[0], vs[0])
		return def
	}
	if strings.TrimSpace(s) == "" {
		r.fail(name, "is empty")
		return def
	}
	return s
}

// Path reads a required path to a file or folder that must exist.
func (r *paramReader) Path(name string) string {
	p := r.String(name, "", true)
	if p == "" {
		return ""
	}
	if _, err := os.Stat(p); err != nil {
		r.fail(name, "%v", err)
	}
	return p
}

// Paths reads a required path, or a list of paths, each to a file or folder
// that must exist.
func (r *paramReader) Paths(name string) []string {
	r.used[name] = true
	v, ok := r.p[name]
	if !ok || v == nil {
		r.fail(name, "is required")
		return nil
	}
	var out []string
	switch x := v.(type) {
	case string:
		out = []string{x}
	case []string:
		out = x
	case []any:
		for i, e := range x {
			s, isStr := e.(string)
			if !isStr {
				r.fail(name, "element %d: %v (%T) is not a path", i+1, e, e)
				return nil
			}
			out = append(out, s)
		}
	default:
		r.fail(name, "%v (%T) is not a path or a list of paths", v, v)
		return nil
	}
	if len(out) == 0 {
		r.fail(name, "is an empty list")
		return nil
	}
	for i, p := range out {
		if strings.TrimSpace(p) == "" {
			r.fail(name, "element %d is empty", i+1)
			return nil
		}
		if _, err := os.Stat(p); err != nil {
			r.fail(name, "%v", err)
			return nil
		}
	}
	return out
}

// done reports the first unknown parameter (with the closest known name),
// else the first error.
func (r *paramReader) done() error {
	var unknown []string
	for name := range r.p {
		if !r.used[name] {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		known := make([]string, 0, len(r.used))
		for n := range r.used {
			known = append(known, n)
		}
		sort.Strings(known)
		msg := fmt.Sprintf("task %s: unknown parameter %s (known: %s)", r.task, unknown[0], strings.Join(known, ", "))
		if c := policies.Closest(unknown[0], known); c != "" {
			msg += fmt.Sprintf("; did you mean %s?", c)
		}
		return fmt.Errorf("%s", msg)
	}
	return r.err
}

// Tokenized texts are cached per (paths, tokenizer): the cells of a suite
// read the same books and haystacks many times. Ids are stored as int32 to
// halve the memory of multi-million-token texts. A tokenizer whose dynamic
// type is not comparable is not cached.
type textKey struct {
	paths string // the absolute paths, joined by NUL
	tok   tokenizer.Tokenizer
}

type textEntry struct {
	once sync.Once
	ids  []int32
	err  error
}

var textCache = struct {
	sync.Mutex
	m map[textKey]*textEntry
}{m: map[textKey]*textEntry{}}

// tokenizedText returns the ids (without BOS) of ReadText(paths...) under
// tok, tokenizing each (paths, tokenizer) once per process.
func tokenizedText(tok tokenizer.Tokenizer, paths ...string) ([]int32, error) {
	load := func() ([]int32, error) {
		s, err := ReadText(paths...)
		if err != nil {
			return nil, err
		}
		ids := tok.Encode(s)
		out := make([]int32, len(ids))
		for i, id := range ids {
			out[i] = int32(id)
		}
		return out, nil
	}
	if t := reflect.TypeOf(tok); t == nil || !t.Comparable() {
		return load()
	}
	abs := make([]string, len(paths))
	for i, p := range paths {
		a, err := filepath.Abs(p)
		if err != nil {
			a = p
		}
		abs[i] = a
	}
	key := textKey{strings.Join(abs, "\x00"), tok}
	textCache.Lock()
	e := textCache.m[key]
	if e == nil {
		e = &textEntry{}
		textCache.m[key] = e
	}
	textCache.Unlock()
	e.once.Do(func() { e.ids, e.err = load() })
	if e.err != nil {
		textCache.Lock()
		if textCache.m[key] == e {
			delete(textCache.m, key) // retry next time
		}
		textCache.Unlock()
	}
	return e.ids, e.err
}

// generated is one prompt's run by generateAll: the tokens prefilled and
// the answer's tokens.
type generated struct {
	pre int
	gen []int
}

// generateAll runs every prompt as feedPrompt then Greedy do on a fresh
// stream each (tails[i] tokens of prompt i decoded, up to n answer tokens,
// eos stopping one). With batch > 1 and a model that is a Batcher, up to
// batch prompts run at once: each prefilled alone, then their decoded tails
// and answers fed as batch steps of every stream with a token to feed, the
// matrix products of a step shared; the streams' caches are held together.
// Otherwise the prompts run one after another. err names the prompt (from 0)
// that failed.
func generateAll(ctx context.Context, m Model, prompts [][]int, tails []int, n, eos, batch int) ([]generated, error) {
	out := make([]generated, len(prompts))
	bm, ok := m.(Batcher)
	if !ok || batch < 2 || len(prompts) < 2 {
		logits := make([]float32, m.Vocab())
		for i, ids := range prompts {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if err := oneStream(ctx, m, ids, tails[i], n, eos, logits, &out[i]); err != nil {
				return nil, fmt.Errorf("prompt %d: %w", i, err)
			}
		}
		return out, nil
	}
	for lo := 0; lo < len(prompts); lo += batch {
		hi := min(len(prompts), lo+batch)
		if err := generateBatch(ctx, bm, m.Vocab(), prompts[lo:hi], tails[lo:hi], n, eos, out[lo:hi]); err != nil {
			var pe promptError
			if errors.As(err, &pe) {
				return nil, fmt.Errorf("prompt %d: %w", lo+pe.i, pe.err)
			}
			return nil, err
		}
	}
	return out, nil
}

// oneStream runs one prompt on a fresh stream of m into g.
func oneStream(ctx context.Context, m Model, ids []int, tail, n, eos int, logits []float32, g *generated) error {
	s, err := m.NewStream()
	if err != nil {
		return err
	}
	defer s.Close()
	if g.pre, err = feedPrompt(ctx, s, ids, tail, logits); err != nil {
		return err
	}
	g.gen, err = Greedy(ctx, s, logits, n, eos)
	return err
}

// promptError is the failure of prompt i of a batch.
type promptError struct {
	i   int
	err error
}

func (e promptError) Error() string { return fmt.Sprintf("prompt %d: %v", e.i, e.err) }
func (e promptError) Unwrap() error { return e.err }

// generateBatch is generateAll's batch of prompts on one Batch.
func generateBatch(ctx context.Context, bm Batcher, vocab int, prompts [][]int, tails []int, n, eos int, out []generated) error {
	b, err := bm.NewBatch(len(prompts))
	if err != nil {
		return err
	}
	defer b.Close()
	logits := make([]float32, len(prompts)*vocab)
	next := make([]int, len(prompts)) // the next prompt token to feed (decoded), or len: answering
	done := make([]bool, len(prompts))
	for i, ids := range prompts {
		if err := ctx.Err(); err != nil {
			return err
		}
		pre := max(1, len(ids)-tails[i])
		if err := b.Stream(i).Prompt(ids[:pre], logits[i*vocab:(i+1)*vocab]); err != nil {
			return promptError{i, fmt.Errorf("prefill of %d tokens: %w", pre, err)}
		}
		out[i].pre, next[i] = pre, pre
	}
	streams, ids := make([]int, 0, len(prompts)), make([]int, 0, len(prompts))
	step := make([]float32, len(prompts)*vocab)
	for {
		streams, ids = streams[:0], ids[:0]
		for i, p := range prompts {
			switch {
			case done[i]:
			case next[i] < len(p): // a prompt token of the decoded tail
				streams, ids = append(streams, i), append(ids, p[next[i]])
				next[i]++
			case len(out[i].gen) < n: // an answer token, from the last logits
				id := Argmax(logits[i*vocab : (i+1)*vocab])
				switch {
				case id < 0:
					return promptError{i, fmt.Errorf("greedy: no finite logit")}
				case eos >= 0 && id == eos:
					done[i] = true
					continue
				}
				out[i].gen = append(out[i].gen, id)
				if len(out[i].gen) == n {
					done[i] = true // its last token is fed, as Greedy feeds it
				}
				streams, ids = append(streams, i), append(ids, id)
			default:
				done[i] = true
			}
		}
		if len(streams) == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := b.Step(streams, ids, step[:len(streams)*vocab]); err != nil {
			return fmt.Errorf("batch step of %d streams: %w", len(streams), err)
		}
		for j, i := range streams {
			copy(logits[i*vocab:(i+1)*vocab], step[j*vocab:(j+1)*vocab])
		}
	}
}

// batchParamDoc documents the batch parameter of the tasks with trials.
var batchParamDoc = policies.ParamDoc{Name: "batch", Default: "auto",
	Doc: "trials run together where the model batches streams (each prompt prefilled alone, then the decoded tails and the answers as batch steps, the same answers as one after another); their KV caches are held at once: auto takes as many as half the device's free memory holds (at most 16), N at most N, 1 one after another"}

// autoBatchMax is the most trials batch: auto runs together.
const autoBatchMax = 16

// readBatch reads the batch parameter: a count of trials (1 or more), or
// auto (0).
func readBatch(r *paramReader) int {
	switch v, ok := r.p["batch"]; {
	case !ok || v == nil || v == "auto":
		r.used["batch"] = true
		return 0
	}
	return r.Int("batch", 1, 1, 4096, false)
}

// trialBatch is how many of trials prompts of tokens tokens run together:
// batch when given (> 0), else as many as the model says fit (BatchSizer),
// at most autoBatchMax; 1 for a model that does not batch.
func trialBatch(m Model, trials, tokens, batch int) int {
	if _, ok := m.(Batcher); !ok {
		return 1
	}
	if batch > 0 {
		return min(batch, trials)
	}
	bs, ok := m.(BatchSizer)
	if !ok {
		return 1
	}
	return max(1, min(trials, autoBatchMax, bs.BatchRoom(tokens)))
}
