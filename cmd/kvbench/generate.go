package main

import (
	"bufio"
	"fmt"
	"io"
	"time"

	"github.com/kvbench/kvbench/bench"
	"github.com/kvbench/kvbench/runtime"
)

func init() {
	register("generate", "greedy text generation from a prompt", cmdGenerate)
}

func cmdGenerate(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("generate", "generate --model PATH|synthetic:NAME [--tokenizer PATH] [--prompt TEXT] [--steps N]", stderr)
	model := fs.String("model", "", "model: Hugging Face directory, hf:ORG/NAME[@REV] from the Hub, GGUF file, llama2.c .bin, or synthetic:NAME")
	tokPath := fs.String("tokenizer", "", "tokenizer file (default: the one beside the model)")
	prompt := fs.String("prompt", "", "text to continue (generation starts from BOS when empty)")
	steps := fs.Int("steps", 256, "new tokens to generate (stops early at end of sequence)")
	threads := fs.Int("threads", 0, "CPU threads (0: one per core)")
	backend := fs.String("backend", "cpu", "backend: cpu, cuda or auto (CUDA when usable, else the CPU)")
	kvType := fs.String("kv-dtype", "f32", "KV page type: f32, or bf16 (cuda)")
	pageSize := fs.Int("page-size", runtime.DefaultPageSize, "KV page slots")
	stats := fs.Bool("stats", false, "print timing to stderr")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *steps < 0 {
		return fmt.Errorf("generate: --steps must be >= 0, got %d", *steps)
	}
	m, tok, err := bench.OpenModel(*model, *tokPath)
	if err != nil {
		return err
	}
	ids := tok.Encode(*prompt)
	if tok.BOS() >= 0 {
		ids = append([]int{tok.BOS()}, ids...)
	}
	if len(ids) == 0 {
		return fmt.Errorf("generate: empty prompt and the tokenizer has no BOS token")
	}
	be, release, err := openBackend(*backend, *threads, stderr)
	if err != nil {
		return err
	}
	defer release()
	kt, err := bench.ParseKVType(*kvType)
	if err != nil {
		return fmt.Errorf("generate: --kv-dtype: %w", err)
	}
	if *pageSize < 1 {
		return fmt.Errorf("generate: --page-size %d: must be at least 1", *pageSize)
	}
	r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: 64, PageSize: *pageSize, KVType: kt})
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	out := bufio.NewWriter(stdout)
	defer out.Flush()

	logits := make([]float32, m.Config.Vocab)
	t0 := time.Now()
	// The pages in one run a sequence, so a GPU's decode finds them by
	// arithmetic; no more than the model's context, since EOS may stop it early.
	r.Cache.Hold(min(len(ids)+*steps, max(m.Config.MaxSeq, len(ids))))
	if err := r.Forward(ids, logits); err != nil {
		return err
	}
	tPrefill := time.Since(t0)
	t1 := time.Now()
	gen, err := greedyTokens(r, runtime.Argmax(logits), *steps, logits, func(t int) bool { return t == tok.EOS() || t == tok.BOS() })
	if err != nil {
		return err
	}
	prev, n := ids[len(ids)-1], len(gen)
	for _, next := range gen {
		fmt.Fprint(out, tok.Piece(prev, next))
		prev = next
	}
	fmt.Fprintln(out)
	if *stats {
		dec := time.Since(t1)
		fmt.Fprintf(stderr, "prompt %d tokens in %v; generated %d tokens in %v (%.1f tokens/s) on %s\n",
			len(ids), tPrefill.Round(time.Microsecond), n, dec.Round(time.Microsecond),
			float64(n)/dec.Seconds(), be.Device())
	}
	return nil
}

// greedyChunk is the most tokens greedyTokens asks of one Runner.Greedy.
const greedyChunk = 16

// greedyTokens generates up to steps tokens by greedy decoding from first
// (the argmax of the logits of the last token fed to r), stopping before a
// token stop accepts; every token returned but the last has been fed to r.
// It runs Runner.Greedy in chunks (on a GPU the argmax stays on the device
// within a chunk), so up to a chunk of tokens past a stop may be fed.
func greedyTokens(r *runtime.Runner, first, steps int, logits []float32, stop func(int) bool) ([]int, error) {
	var gen []int
	buf := make([]int, greedyChunk)
	t := first
	for len(gen) < steps && !stop(t) {
		gen = append(gen, t)
		k := min(greedyChunk, steps-len(gen))
		if k == 0 {
			break
		}
		if err := r.Greedy(t, k, buf[:k], logits); err != nil {
			return gen, err
		}
		for _, c := range buf[:k-1] {
			if stop(c) {
				return gen, nil
			}
			gen = append(gen, c)
		}
		t = buf[k-1]
	}
	return gen, nil
}
