package main

import (
	"fmt"
	"io"
	"math"
	"time"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/tasks"
)

func init() {
	register("score", "perplexity of a text under full attention", cmdScore)
}

func cmdScore(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("score", "score --model PATH|synthetic:NAME --text FILE|DIR [--tokens N]", stderr)
	model := fs.String("model", "", "model: Hugging Face directory, llama2.c .bin, or synthetic:NAME")
	tokPath := fs.String("tokenizer", "", "tokenizer file (default: the one beside the model)")
	text := fs.String("text", "", "text file, or folder of .txt files concatenated in name order")
	tokens := fs.Int("tokens", 1024, "tokens to score (0: the whole text)")
	chunk := fs.Int("chunk", 128, "tokens per forward pass")
	threads := fs.Int("threads", 0, "CPU threads (0: one per core)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *text == "" {
		return fmt.Errorf("score: --text is required")
	}
	if *tokens < 0 || *chunk <= 0 {
		return fmt.Errorf("score: --tokens must be >= 0 and --chunk > 0")
	}
	m, tok, err := openModel(*model, *tokPath)
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
	be := cpu.New(*threads)
	defer be.Close()
	r, err := runtime.NewRunner(m, be, *chunk)
	if err != nil {
		return err
	}
	V := m.Config.Vocab
	logits := make([]float32, *chunk*V)
	var nll float64
	t0 := time.Now()
	// Position i predicts ids[i+1]; the last id is only a target.
	for start := 0; start < len(ids)-1; start += *chunk {
		part := ids[start:min(start+*chunk, len(ids)-1)]
		if err := r.ForwardAll(part, logits[:len(part)*V]); err != nil {
			return err
		}
		for i := range part {
			nll -= runtime.LogProb(logits[i*V:(i+1)*V], ids[start+i+1])
		}
	}
	el := time.Since(t0)
	n := len(ids) - 1
	fmt.Fprintf(stdout, "model       %s\ntext        %s\ntokens      %d\nnll_sum     %.6f\nmean_nll    %.6f\nperplexity  %.4f\n",
		m.Source, *text, n, nll, nll/float64(n), math.Exp(nll/float64(n)))
	fmt.Fprintf(stdout, "kv_bytes    %d\ntime        %v (%.1f tokens/s, %s)\n",
		r.Cache.ResidentBytes(), el.Round(time.Millisecond), float64(n)/el.Seconds(), be.Device())
	return nil
}
