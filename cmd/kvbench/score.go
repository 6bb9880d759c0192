package main

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/kvbench/kvbench/bench"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/tasks"
)

func init() {
	register("score", "perplexity of a text, under full attention or streamed through a cache policy", cmdScore)
}

// paramFlags collects repeated --param key=value flags.
type paramFlags struct{ p policies.Params }

func (f *paramFlags) String() string { return fmt.Sprint(f.p) }
func (f *paramFlags) Set(s string) error {
	if f.p == nil {
		f.p = policies.Params{}
	}
	return policies.ParseParam(f.p, s)
}

func cmdScore(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("score", "score --model PATH|synthetic:NAME --text FILE|DIR [--tokens N] [--policy NAME --param key=value ...]", stderr)
	model := fs.String("model", "", "model: Hugging Face directory, hf:ORG/NAME[@REV] from the Hub, GGUF file, llama2.c .bin, or synthetic:NAME")
	tokPath := fs.String("tokenizer", "", "tokenizer file (default: the one beside the model)")
	text := fs.String("text", "", "text file, or folder of .txt files concatenated in name order")
	tokens := fs.Int("tokens", 1024, "tokens to score (0: the whole text)")
	chunk := fs.Int("chunk", 128, "tokens per forward pass without --policy")
	policy := fs.String("policy", "", "stream the text one token at a time through this cache policy ("+strings.Join(policies.Names(), ", ")+")")
	var params paramFlags
	fs.Var(&params, "param", "policy parameter key=value (repeatable)")
	bucket := fs.Int("bucket", 0, "with --policy: also print perplexity per bucket of this many tokens")
	recallEvery := fs.Int("recall-every", 64, "with --policy: sample attention recall every N steps (0: never)")
	threads := fs.Int("threads", 0, "CPU threads (0: one per core)")
	backend := fs.String("backend", "cpu", "backend: cpu, cuda or auto (CUDA when usable, else the CPU)")
	kvType := fs.String("kv-dtype", "f32", "KV page type: f32, or bf16 (cuda)")
	pageSize := fs.Int("page-size", runtime.DefaultPageSize, "KV page slots")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *text == "" {
		return fmt.Errorf("score: --text is required")
	}
	if *tokens < 0 || *chunk <= 0 || *bucket < 0 || *recallEvery < 0 {
		return fmt.Errorf("score: --tokens, --bucket and --recall-every must be >= 0 and --chunk > 0")
	}
	if *policy == "" && params.p != nil {
		return fmt.Errorf("score: --param needs --policy")
	}
	var pol policies.Policy
	if *policy != "" {
		var err error
		if pol, err = policies.New(*policy, params.p); err != nil {
			return err
		}
	}
	m, tok, err := bench.OpenModel(*model, *tokPath)
	if err != nil {
		return err
	}
	s, err := tasks.ReadText(*text)
	if err != nil {
		return err
	}
	ids := tok.Encode(s)
	if tok.BOS() >= 0 {
		ids = append([]int{tok.BOS()}, ids...)
	}
	if *tokens > 0 && len(ids) > *tokens+1 {
		ids = ids[:*tokens+1]
	}
	if len(ids) < 2 {
		return fmt.Errorf("score: text %s gives %d tokens, need at least 2", *text, len(ids))
	}
	be, release, err := openBackend(*backend, *threads, stderr)
	if err != nil {
		return err
	}
	defer release()
	rows := *chunk
	if pol != nil {
		rows = 1
	}
	kt, err := bench.ParseKVType(*kvType)
	if err != nil {
		return fmt.Errorf("score: --kv-dtype: %w", err)
	}
	if *pageSize < 1 {
		return fmt.Errorf("score: --page-size %d: must be at least 1", *pageSize)
	}
	r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: rows, PageSize: *pageSize, KVType: kt})
	if err != nil {
		return fmt.Errorf("score: %w", err)
	}
	if pol != nil {
		pol.MeasureRecall(*recallEvery)
		if err := pol.Start(r); err != nil {
			return err
		}
	}
	V := m.Config.Vocab
	logits := make([]float32, rows*V)
	nlls := make([]float64, 0, len(ids)-1)
	t0 := time.Now()
	// Position i predicts ids[i+1]; the last id is only a target.
	for start := 0; start < len(ids)-1; start += rows {
		part := ids[start:min(start+rows, len(ids)-1)]
		if err := r.ForwardAll(part, logits[:len(part)*V]); err != nil {
			return err
		}
		for i := range part {
			nlls = append(nlls, -runtime.LogProb(logits[i*V:(i+1)*V], ids[start+i+1]))
		}
	}
	el := time.Since(t0)
	n := len(nlls)
	var nll float64
	for _, v := range nlls {
		nll += v
	}
	name := "full (prefill chunks)"
	if pol != nil {
		name = pol.Name() + " " + formatParams(pol.Params())
	}
	fmt.Fprintf(stdout, "model        %s\ntext         %s\npolicy       %s\ntokens       %d\nnll_sum      %.6f\nmean_nll     %.6f\nperplexity   %.4f\n",
		m.Source, *text, name, n, nll, nll/float64(n), math.Exp(nll/float64(n)))
	if pol != nil {
		st := pol.Stats()
		fmt.Fprintf(stdout, "kv_resident  %d bytes (max %d)\nkv_read      %.0f bytes per step (mean)\n", st.ResidentBytes, st.MaxResidentBytes, st.MeanBytesRead())
		if rc := st.MeanRecall(); rc >= 0 {
			fmt.Fprintf(stdout, "recall       %.4f (%d samples)\n", rc, st.RecallN)
		}
	} else {
		fmt.Fprintf(stdout, "kv_resident  %d bytes\n", r.Cache.ResidentBytes())
	}
	fmt.Fprintf(stdout, "time         %v (%.1f tokens/s, %s)\n", el.Round(time.Millisecond), float64(n)/el.Seconds(), be.Device())
	if *bucket > 0 {
		fmt.Fprintf(stdout, "\n%-16s %10s\n", "tokens", "perplexity")
		for b := 0; b < n; b += *bucket {
			e := min(b+*bucket, n)
			var s float64
			for _, v := range nlls[b:e] {
				s += v
			}
			fmt.Fprintf(stdout, "%7d-%-8d %10.3f\n", b, e, math.Exp(s/float64(e-b)))
		}
	}
	return nil
}

// formatParams prints parameters as k=v in name order.
func formatParams(p policies.Params) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%v", k, p[k])
	}
	return strings.Join(parts, " ")
}
