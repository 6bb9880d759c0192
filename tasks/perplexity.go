package tasks

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
)

func init() { Register(perplexity{}) }

// perplexity is streaming perplexity (StreamingLLM's protocol, TASKS.md):
// the text is fed one token at a time through the cell's policy and the
// negative log-likelihood of every next token is recorded.
//
// The text (a file, a folder of .txt files concatenated in name order, or a
// list of files and folders, read by ReadText) is tokenized once per process
// and tokenizer. Stream i of S
// starts at token offset i*N/S of the N text tokens, so the streams read
// different parts of the text (different books of a folder when there are
// enough); a stream that runs past the end wraps around to the start, which
// Detail records as "wrapped". Each stream feeds BOS first (when the
// tokenizer has one), so it scores exactly `tokens` text tokens with
// `tokens` decode steps. Where the model is a Batcher the streams decode
// as one batch (each step feeds every stream's next token at once, and the
// log-probabilities are computed where the logits are); otherwise they run
// concurrently, one goroutine and one model stream each. Memory per stream
// is one logits vector and one sum per bucket: no per-token arrays are kept.
type perplexity struct{}

type perplexityParams struct {
	text                    []string
	tokens, streams, bucket int
}

func (perplexity) Name() string { return "perplexity" }
func (perplexity) Version() int { return 1 }

func (perplexity) Metrics() []Metric {
	return []Metric{
		{Name: "ppl", Unit: "", Better: BetterLower},
		{Name: "nll", Unit: "nats", Better: BetterLower},
	}
}

func (perplexity) Params() []policies.ParamDoc {
	return []policies.ParamDoc{
		{Name: "text", Doc: "text file, or folder of .txt files concatenated in name order, or a list of files and folders concatenated in the list's order (Gutenberg header and footer stripped)"},
		{Name: "tokens", Doc: "tokens to score per stream, one decode step each"},
		{Name: "streams", Default: "1", Doc: "independent streams run concurrently; stream i starts at token i*N/streams of the N text tokens (wrapping at the end)"},
		{Name: "bucket", Default: "4096", Doc: "tokens per point of the nll and ppl curves"},
	}
}

func (perplexity) Expand() []string { return nil }

func readPerplexity(p Params, cell bool) (perplexityParams, error) {
	r := newParamReader("perplexity", p, cell)
	c := perplexityParams{
		text:    r.Paths("text"),
		tokens:  r.Int("tokens", 0, 1, math.MaxInt32, false),
		streams: r.Int("streams", 1, 1, 4096, false),
		bucket:  r.Int("bucket", 4096, 1, math.MaxInt32, false),
	}
	if !cell && r.err == nil && len(c.text) > 0 {
		// Validation reads the start of the files; Run reads them whole.
		if err := SniffText(c.text...); err != nil {
			r.fail("text", "%v", err)
		}
	}
	return c, r.done()
}

func (perplexity) Check(p Params) error {
	_, err := readPerplexity(p, false)
	return err
}

func (perplexity) Run(ctx context.Context, m Model, p Params) (*Result, error) {
	c, err := readPerplexity(p, true)
	if err != nil {
		return nil, err
	}
	tok := m.Tokenizer()
	ids, err := tokenizedText(tok, c.text...)
	if err != nil {
		return nil, fmt.Errorf("perplexity: %w", err)
	}
	n := len(ids)
	bos := tok.BOS()
	// shift: without BOS a stream feeds its first text token unscored.
	shift := 0
	if bos < 0 {
		shift = 1
	}
	if n < 1+shift {
		return nil, fmt.Errorf("perplexity: text %s gives %d tokens, need at least %d", strings.Join(c.text, ", "), n, 1+shift)
	}
	for _, id := range ids {
		if int(id) >= m.Vocab() || id < 0 {
			return nil, fmt.Errorf("perplexity: text %s: token id %d is outside the model's vocabulary of %d", strings.Join(c.text, ", "), id, m.Vocab())
		}
	}

	nb := (c.tokens + c.bucket - 1) / c.bucket
	offsets := make([]int, c.streams)
	wrapped := false
	for i := range offsets {
		offsets[i] = int(int64(i) * int64(n) / int64(c.streams))
		if offsets[i]+c.tokens+shift > n {
			wrapped = true
		}
	}
	var sums [][]float64 // per stream, NLL sum per bucket
	bm, batched := m.(Batcher)
	if batched {
		sums, err = safeRun(func() ([][]float64, error) {
			return perplexityBatch(ctx, bm, ids, offsets, shift, bos, c.tokens, c.bucket, nb)
		})
		if err != nil {
			return nil, fmt.Errorf("perplexity: batch of %d streams: %w", c.streams, err)
		}
	} else if sums, err = perplexityConcurrent(ctx, m, ids, offsets, shift, bos, c.tokens, c.bucket, nb); err != nil {
		return nil, err
	}

	res := &Result{
		Metrics: map[string]float64{},
		Curves:  map[string][]Point{"nll": make([]Point, nb), "ppl": make([]Point, nb)},
		Tokens:  c.streams * c.tokens,
	}
	var total float64
	streamNLL := make([]float64, c.streams)
	for b := range nb {
		count := min(c.bucket, c.tokens-b*c.bucket)
		var s float64
		for i := range sums {
			s += sums[i][b]
		}
		total += s
		mean := s / float64(count*c.streams)
		end := float64(b*c.bucket + count)
		res.Curves["nll"][b] = Point{X: end, Y: mean}
		res.Curves["ppl"][b] = Point{X: end, Y: math.Exp(mean)}
	}
	for i := range sums {
		var s float64
		for _, v := range sums[i] {
			s += v
		}
		streamNLL[i] = s / float64(c.tokens)
	}
	nll := total / float64(c.tokens*c.streams)
	res.Metrics["nll"] = nll
	res.Metrics["ppl"] = math.Exp(nll)
	res.Detail = map[string]any{
		"text_tokens": n,
		"offsets":     offsets,
		"stream_nll":  streamNLL,
		"wrapped":     wrapped,
		"bos":         bos >= 0,
		"batched":     batched,
	}
	return res, nil
}

// perplexityConcurrent runs the streams that start at offsets concurrently,
// one goroutine and one model stream each, and returns each stream's NLL
// sum per bucket.
func perplexityConcurrent(ctx context.Context, m Model, ids []int32, offsets []int, shift, bos, tokens, bucket, nb int) ([][]float64, error) {
	sums := make([][]float64, len(offsets))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for i := range offsets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := safeRun(func() ([]float64, error) {
				return perplexityStream(ctx, m, ids, offsets[i], shift, bos, tokens, bucket, nb)
			})
			sums[i] = s
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("perplexity: stream %d: %w", i, err)
				}
				mu.Unlock()
				cancel()
			}
		}()
	}
	wg.Wait()
	return sums, firstErr
}

// safeRun runs one stream's (or one batch's) work, turning a panic (a
// device error, an allocation that failed) into its error: the cell fails
// with the reason and the run goes on, where an unrecovered panic in a
// goroutine would end the process.
func safeRun[T any](run func() (T, error)) (res T, err error) {
	defer func() {
		if p := recover(); p != nil {
			var zero T
			res, err = zero, fmt.Errorf("panic: %v", p)
		}
	}()
	return run()
}

// perplexityBatch scores tokens text tokens for each stream i from offset
// offsets[i] (wrapping), every stream of a new batch fed its next token in
// the same step, and returns each stream's NLL sum per bucket: the sums
// perplexityStream gives each stream alone.
func perplexityBatch(ctx context.Context, bm Batcher, ids []int32, offsets []int, shift, bos, tokens, bucket, nb int) ([][]float64, error) {
	S := len(offsets)
	b, err := bm.NewBatch(S)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	n := len(ids)
	at := func(i, j int) int { return int(ids[(offsets[i]+j)%n]) }
	streams := make([]int, S)
	in := make([]int, S)
	targets := make([]int, S)
	out := make([]float64, S)
	sums := make([][]float64, S)
	for i := range S {
		streams[i] = i
		sums[i] = make([]float64, nb)
	}
	for t := range tokens {
		if err := ctx.Err(); err != nil {
			return sums, err
		}
		for i := range S {
			switch {
			case t > 0:
				in[i] = at(i, t-1+shift)
			case shift == 1:
				in[i] = at(i, 0)
			default:
				in[i] = bos
			}
			targets[i] = at(i, t+shift)
		}
		if err := b.LogProbs(streams, in, targets, out); err != nil {
			return sums, fmt.Errorf("token %d: %w", t, err)
		}
		for i, lp := range out {
			sums[i][t/bucket] -= lp
		}
	}
	return sums, nil
}

// perplexityStream scores tokens text tokens from offset off (wrapping) on a
// new stream and returns the NLL sum of each bucket.
func perplexityStream(ctx context.Context, m Model, ids []int32, off, shift, bos, tokens, bucket, nb int) ([]float64, error) {
	s, err := m.NewStream()
	if err != nil {
		return nil, err
	}
	defer s.Close()
	n := len(ids)
	at := func(j int) int { return int(ids[(off+j)%n]) }
	logits := make([]float32, m.Vocab())
	sums := make([]float64, nb)
	in := bos
	if shift == 1 {
		in = at(0)
	}
	for t := range tokens {
		if err := ctx.Err(); err != nil {
			return sums, err
		}
		if t > 0 {
			in = at(t - 1 + shift)
		}
		if err := s.Step(in, logits); err != nil {
			return sums, fmt.Errorf("token %d: %w", t, err)
		}
		sums[t/bucket] -= runtime.LogProb(logits, at(t+shift))
	}
	return sums, nil
}
