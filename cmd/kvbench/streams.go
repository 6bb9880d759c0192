package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	"github.com/kvbench/kvbench/bench"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
)

func init() {
	register("streams", "time N streams decoding as one batch under a policy: tokens/min, and what each step reads", cmdStreams)
}

// cmdStreams times the perplexity task's inner loop at scale: --streams
// streams of the model under one policy, each first fed a prompt of
// --prompt tokens (so that an evicting policy holds its budget), then
// stepped together --tokens times through the engine's batch (tasks.Batch:
// one step feeds every stream's next token and scores it where the logits
// are), on seeded random token ids (the speed does not depend on the text).
// It reports the batched decode rate in tokens per second and per minute,
// what one batch step reads (the weights once, every stream's attended KV)
// and at what rate, and with --alone the rate of the same streams stepped
// one after another, as unbatched streams run.
func cmdStreams(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("streams", "streams --model PATH [--backend cuda] [--streams 64] [--policy streamingllm] [--budget 1024] [--param key=value ...] [--tokens 256]", stderr)
	model := fs.String("model", "", "model: Hugging Face directory, hf:ORG/NAME[@REV] from the Hub, GGUF file, llama2.c .bin, or synthetic:NAME")
	tokPath := fs.String("tokenizer", "", "tokenizer file (default: the one beside the model; not needed)")
	nStreams := fs.Int("streams", 64, "streams stepped together")
	policy := fs.String("policy", "streamingllm", "cache policy (kvbench list shows them)")
	budget := fs.Int("budget", 1024, "the policy's budget in tokens (0: its default; ignored by full)")
	var params paramFlags
	fs.Var(&params, "param", "more policy parameters, key=value (repeatable; e.g. sinks=4)")
	tokens := fs.Int("tokens", 256, "timed batch steps (each scores one token of every stream)")
	warmup := fs.Int("warmup", 8, "untimed batch steps first")
	prompt := fs.Int("prompt", 1024, "prompt tokens fed to each stream first, alone (0: none)")
	alone := fs.Int("alone", 0, "also time this many steps of the streams stepped one after another (0: skip)")
	backend := fs.String("backend", "auto", "backend: cpu, cuda or auto")
	threads := fs.Int("threads", 0, "CPU threads (0: one per core)")
	kvType := fs.String("kv-dtype", "bf16", "KV page type: f32, or bf16 (cuda)")
	precision := fs.String("precision", "", "compute precision: bf16 or f32 (default: the backend's; cuda bf16)")
	seed := fs.Uint64("seed", 1, "seed of the random token ids")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *nStreams < 1 || *tokens < 1 || *warmup < 0 || *prompt < 0 || *alone < 0 || *budget < 0 {
		return fmt.Errorf("streams: --streams and --tokens must be >= 1, --warmup, --prompt, --alone and --budget >= 0")
	}
	pp := params.p
	if pp == nil {
		pp = policies.Params{}
	}
	if *budget > 0 && *policy != "full" {
		if _, set := pp["budget"]; !set {
			pp["budget"] = *budget
		}
	}
	m, tok, err := bench.OpenModel(*model, *tokPath)
	if err != nil {
		return err
	}
	name, reason, err := bench.SelectBackend(*backend)
	if err != nil {
		return err
	}
	if reason != "" && *backend != "auto" {
		fmt.Fprintln(stderr, "kvbench:", reason)
	}
	kt, err := bench.ParseKVType(*kvType)
	if err != nil {
		return fmt.Errorf("streams: --kv-dtype: %w", err)
	}
	if name == "cpu" {
		kt = runtime.F32
	}
	e, err := bench.NewEngine(m, tok, *policy, pp)
	if err != nil {
		return fmt.Errorf("streams: %w", err)
	}
	e.Backend, e.Threads, e.KVType, e.Precision = name, *threads, kt, *precision
	defer e.Close()

	c := m.Config
	S := *nStreams
	rng := rand.New(rand.NewPCG(*seed, 7))
	id := func() int { return 3 + rng.IntN(c.Vocab-3) }
	t0 := time.Now()
	b, err := e.NewBatch(S)
	if err != nil {
		return fmt.Errorf("streams: %w", err)
	}
	defer b.Close()
	_, dev := e.Device()
	fmt.Fprintf(stdout, "model %s (%d layers, dim %d, %d/%d heads of %d, vocab %d) on %s, KV %s\n",
		m.Source, c.Layers, c.Dim, c.Heads, c.KVHeads, c.HeadDim, c.Vocab, dev, kt)
	fmt.Fprintf(stdout, "%d streams under %s %v, %d-token prompts\n", S, *policy, pp, *prompt)
	fmt.Fprintf(stdout, "| measure | streams | tokens | seconds | tokens/s | tokens/min | note |\n|---|---:|---:|---:|---:|---:|---|\n")
	if *prompt > 0 {
		logits := make([]float32, c.Vocab)
		ids := make([]int, *prompt)
		for i := range S {
			for j := range ids {
				ids[j] = id()
			}
			if err := b.Stream(i).Prompt(ids, logits); err != nil {
				return fmt.Errorf("streams: prompt of stream %d: %w", i, err)
			}
		}
		el := time.Since(t0).Seconds()
		row(stdout, "prompts (each alone)", S, S**prompt, el, "setup included")
	}
	all := make([]int, S)
	in, targets := make([]int, S), make([]int, S)
	out := make([]float64, S)
	for i := range all {
		all[i] = i
	}
	step := func() error {
		for i := range S {
			in[i], targets[i] = id(), id()
		}
		return b.LogProbs(all, in, targets, out)
	}
	for range *warmup {
		if err := step(); err != nil {
			return fmt.Errorf("streams: warm-up: %w", err)
		}
	}
	// KVBENCH_PROFILE_STEP=k: decode step k (from 0) alone inside a
	// profiler's range (ncu --profile-from-start off).
	profStep := -1
	if v := os.Getenv("KVBENCH_PROFILE_STEP"); v != "" {
		if profStep, err = strconv.Atoi(v); err != nil || profStep < 0 || profStep >= *tokens {
			return fmt.Errorf("streams: KVBENCH_PROFILE_STEP=%q is not a step in [0, %d)", v, *tokens)
		}
	}
	runtime.WritePhases(io.Discard) // the prompts' and warm-up's passes (KVBENCH_PHASES)
	t0 = time.Now()
	for k := range *tokens {
		if k == profStep {
			if err := e.ProfilerRange(true); err != nil {
				return fmt.Errorf("streams: %w", err)
			}
		}
		if err := step(); err != nil {
			return fmt.Errorf("streams: %w", err)
		}
		if k == profStep {
			if err := e.ProfilerRange(false); err != nil {
				return fmt.Errorf("streams: %w", err)
			}
		}
	}
	el := time.Since(t0).Seconds()
	row(stdout, "decode, one batch", S, S**tokens, el, fmt.Sprintf("%.2f ms a step", 1e3*el/float64(*tokens)))
	stepSec := el / float64(*tokens)
	runtime.WritePhases(stdout) // with KVBENCH_PHASES: the host's wall time a step, part by part
	var kvRead int64
	for i := range S {
		kvRead += b.Stream(i).Stats().BytesRead
	}
	if *alone > 0 {
		logits := make([]float32, c.Vocab)
		t0 = time.Now()
		for range *alone {
			for i := range S {
				if err := b.Stream(i).Step(id(), logits); err != nil {
					return fmt.Errorf("streams: stream %d alone: %w", i, err)
				}
			}
		}
		ela := time.Since(t0).Seconds()
		row(stdout, "decode, streams one after another", S, S**alone, ela, fmt.Sprintf("batched is %.1fx", (ela/float64(*alone))/stepSec))
	}
	b.Close()
	if err := e.Close(); err != nil {
		return fmt.Errorf("streams: %w", err)
	}
	mem := e.Memory()
	if mem == nil {
		fmt.Fprintf(stdout, "a batch step reads every stream's attended KV: %s (the last step), %.0f GB/s\n", gb(kvRead), float64(kvRead)/stepSec/1e9)
		return nil
	}
	fmt.Fprintf(stdout, "device memory: weights %s, KV %s, scratch %s at the most; peak %s\n",
		gb(mem.Weights), gb(mem.KV), gb(mem.Scratch), gb(mem.Peak))
	fmt.Fprintf(stdout, "a batch step reads the weights once (%s) and every stream's attended KV (%s, the last step): %s in %.2f ms, %.0f GB/s\n",
		gb(mem.Weights), gb(kvRead), gb(mem.Weights+kvRead), 1e3*stepSec, float64(mem.Weights+kvRead)/stepSec/1e9)
	return nil
}

// row prints one line of the streams table.
func row(w io.Writer, what string, streams, tokens int, sec float64, note string) {
	fmt.Fprintf(w, "| %s | %d | %d | %.3f | %.0f | %.0f | %s |\n", what, streams, tokens, sec, float64(tokens)/sec, 60*float64(tokens)/sec, note)
}

// gb formats a byte count in GB.
func gb(n int64) string { return fmt.Sprintf("%.3f GB", float64(n)/1e9) }
