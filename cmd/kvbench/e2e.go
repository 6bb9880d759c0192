package main

import (
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/kvbench/kvbench/bench"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

func init() {
	register("e2e", "time a model end to end: prefill, a full-logit NLL pass, token-by-token decode, peak memory", cmdE2E)
}

// cmdE2E times the model's forward pass as users run it, on seeded random
// token ids (the speed does not depend on the text): a prefill of each
// length that keeps the last logits, a full-logit pass that scores every
// next token (NLL), and greedy decoding one token at a time after a short
// prompt. Each figure is the wall-clock time of one run after a warm-up;
// the GPU's work is complete when Forward returns (the logits are read).
func cmdE2E(stdout, stderr io.Writer, args []string) error {
	fs := newFlags("e2e", "e2e --model PATH [--backend cuda] [--lengths 4096,16384] [--decode 128]", stderr)
	model := fs.String("model", "", "model: Hugging Face directory, hf:ORG/NAME[@REV] from the Hub, GGUF file, llama2.c .bin, or synthetic:NAME")
	tokPath := fs.String("tokenizer", "", "tokenizer file (default: the one beside the model)")
	lengths := fs.String("lengths", "4096,16384", "prompt lengths in tokens, comma-separated")
	nll := fs.Bool("nll", true, "also time a full-logit NLL pass at each length")
	decode := fs.Int("decode", 128, "tokens to decode one at a time after a prompt of --decode-prompt tokens (0: skip)")
	decodePrompt := fs.Int("decode-prompt", 512, "prompt length before the timed decode")
	chunk := fs.Int("chunk", 8192, "tokens per forward pass (prefill chunk; the suites' default on a GPU, which moves it by up to a sixteenth to fill its multiprocessors unless it is given)")
	backend := fs.String("backend", "auto", "backend: cpu, cuda or auto")
	threads := fs.Int("threads", 0, "CPU threads (0: one per core)")
	kvType := fs.String("kv-dtype", "bf16", "KV page type: f32, or bf16 (cuda)")
	precision := fs.String("precision", "", "compute precision: bf16 or f32 (default: the backend's; cuda bf16)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	lens, err := parseInts(*lengths)
	if err != nil {
		return fmt.Errorf("e2e: --lengths: %w", err)
	}
	if *chunk < 1 || *decode < 0 || *decodePrompt < 1 {
		return fmt.Errorf("e2e: --chunk and --decode-prompt must be >= 1 and --decode >= 0")
	}
	m, _, err := bench.OpenModel(*model, *tokPath)
	if err != nil {
		return err
	}
	be, release, err := openBackendAt(*backend, *threads, *precision, stderr)
	if err != nil {
		return err
	}
	defer release()
	kt, err := bench.ParseKVType(*kvType)
	if err != nil {
		return fmt.Errorf("e2e: --kv-dtype: %w", err)
	}
	if be.Name() == "cpu" && kt != runtime.F32 {
		kt = runtime.F32
	}
	t0 := time.Now()
	dw, err := runtime.UploadWeights(m, be)
	if err != nil {
		return fmt.Errorf("e2e: %w", err)
	}
	upload := time.Since(t0).Seconds()
	chunkSet := false
	fs.Visit(func(f *flag.Flag) { chunkSet = chunkSet || f.Name == "chunk" })
	r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: *chunk, FitRows: !chunkSet, KVType: kt, Weights: dw})
	if err != nil {
		return fmt.Errorf("e2e: %w", err)
	}
	hostAfterUpload := hostMemoryLine("after the upload")
	c := m.Config
	rng := rand.New(rand.NewPCG(1, 2))
	ids := func(n int) []int {
		v := make([]int, n)
		for i := range v {
			v[i] = 3 + rng.IntN(c.Vocab-3)
		}
		return v
	}
	logits := make([]float32, c.Vocab)
	// KVBENCH_PROFILE_PASS=prefill: the first length's prefill alone inside
	// a profiler's range (ncu --profile-from-start off); =decode: the timed
	// decode's first three steps.
	profPass := os.Getenv("KVBENCH_PROFILE_PASS")
	if profPass != "" && profPass != "prefill" && profPass != "decode" {
		return fmt.Errorf("e2e: KVBENCH_PROFILE_PASS=%q is neither prefill nor decode", profPass)
	}
	profile := func(on bool) error {
		pr, ok := be.(interface{ ProfilerRange(on bool) error })
		if !ok {
			return fmt.Errorf("e2e: KVBENCH_PROFILE_PASS: backend %s has no profiler range", be.Name())
		}
		return pr.ProfilerRange(on)
	}
	fmt.Fprintf(stdout, "model %s (%d layers, dim %d, %d/%d heads of %d, vocab %d) on %s, chunk %d, KV %s\n",
		m.Source, c.Layers, c.Dim, c.Heads, c.KVHeads, c.HeadDim, c.Vocab, be.Device(), r.MaxRows(), kt)
	fmt.Fprintf(stdout, "weights: %.2f GB uploaded in %.2f s (%.1f GB/s)\n", float64(dw.Bytes())/1e9, upload, float64(dw.Bytes())/1e9/max(upload, 1e-9))
	// Warm-up: kernels compiled and loaded, GEMM handles and scratch made.
	r.Reset()
	if err := r.Forward(ids(min(r.MaxRows(), 256)), logits); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "| measure | tokens | seconds | tokens/s | note |\n|---|---:|---:|---:|---|\n")
	// KVBENCH_KERNEL_TIMES=1 (cuda): each prefill's and NLL pass's device
	// time by kernel, printed after the table (clocked runs are slower).
	var clocks strings.Builder
	clk, _ := be.(kernelClock)
	clockReset := func() error {
		if clk == nil {
			return nil
		}
		_, err := clk.KernelTimes(true)
		return err
	}
	for i, n := range lens {
		prompt := ids(n)
		r.Reset()
		prof := i == 0 && profPass == "prefill"
		if prof {
			if err := profile(true); err != nil {
				return err
			}
		}
		if err := clockReset(); err != nil {
			return err
		}
		t0 := time.Now()
		if err := r.Forward(prompt, logits); err != nil {
			return err
		}
		el := time.Since(t0).Seconds()
		if prof {
			if err := profile(false); err != nil {
				return err
			}
		}
		fmt.Fprintf(stdout, "| prefill (last logits) | %d | %.3f | %.0f | |\n", n, el, float64(n)/el)
		if err := clockTable(&clocks, clk, fmt.Sprintf("prefill of %d tokens", n), el); err != nil {
			return err
		}
		if !*nll {
			continue
		}
		// Every next token's log-probability (full logits, chunk by chunk,
		// reduced where they are).
		r.Reset()
		lp := make([]float64, n-1)
		if err := clockReset(); err != nil {
			return err
		}
		t0 = time.Now()
		if err := r.LogProbs(prompt[:n-1], prompt[1:], lp); err != nil {
			return err
		}
		var sum float64
		for _, v := range lp {
			sum -= v
		}
		el = time.Since(t0).Seconds()
		fmt.Fprintf(stdout, "| NLL pass (all logits) | %d | %.3f | %.0f | mean NLL %.3f |\n", n, el, float64(n)/el, sum/float64(n-1))
		if err := clockTable(&clocks, clk, fmt.Sprintf("NLL pass of %d tokens", n), el); err != nil {
			return err
		}
	}
	if *decode > 0 {
		// Greedy decoding as transformers' loop does it: each step's argmax
		// stays on the device for the next step's embedding (Runner.Greedy;
		// the host reads the tokens once). Where the backend has that, the
		// same decode with the logits read back and the argmax taken on the
		// host every step follows, for comparison.
		first, err := decodePrompted(r, ids(*decodePrompt), *decode, logits)
		if err != nil {
			return err
		}
		toks := make([]int, *decode)
		t0 := time.Now()
		if profPass == "decode" { // the first three steps
			k := min(3, *decode)
			if err := profile(true); err != nil {
				return err
			}
			if err := r.Greedy(first, k, toks, logits); err != nil {
				return err
			}
			if err := profile(false); err != nil {
				return err
			}
			if k < *decode {
				if err := r.Greedy(toks[k-1], *decode-k, toks[k:], logits); err != nil {
					return err
				}
			}
		} else if err := r.Greedy(first, *decode, toks, logits); err != nil {
			return err
		}
		el := time.Since(t0).Seconds()
		fmt.Fprintf(stdout, "| decode (one token a step) | %d | %.3f | %.1f | after a %d-token prompt |\n", *decode, el, float64(*decode)/el, *decodePrompt)
		if _, ok := be.(runtime.DeviceArgmax); ok {
			if first, err = decodePrompted(r, ids(*decodePrompt), *decode, logits); err != nil {
				return err
			}
			one := []int{first}
			t0 := time.Now()
			for range *decode {
				if err := r.Forward(one, logits); err != nil {
					return err
				}
				one[0] = runtime.Argmax(logits)
			}
			el := time.Since(t0).Seconds()
			fmt.Fprintf(stdout, "| stepwise decode (logits read each step) | %d | %.3f | %.1f | the same, the argmax on the host |\n", *decode, el, float64(*decode)/el)
		}
	}
	if mr, ok := be.(runtime.MemoryReporter); ok {
		mem := mr.Memory()
		fmt.Fprintf(stdout, "%s memory: %.2f GB now (weights %.2f GB, KV %.2f GB, scratch %.2f GB), %.2f GB peak\n", be.Name(),
			float64(mem.Total())/1e9, float64(mem.Weights)/1e9, float64(mem.KV)/1e9, float64(mem.Scratch)/1e9, float64(mem.Peak)/1e9)
	}
	fmt.Fprintln(stdout, hostAfterUpload)
	fmt.Fprintln(stdout, hostMemoryLine("at the end"))
	fmt.Fprint(stdout, clocks.String())
	return nil
}

// kernelClock is a backend that times its kernels (the cuda backend under
// KVBENCH_KERNEL_TIMES=1; nil sums otherwise).
type kernelClock interface {
	KernelTimes(reset bool) ([]cuda.KernelTime, error)
}

// clockTable writes the device time by kernel of the pass just timed (wall
// seconds) into w: the 15 longest, then the rest and the sum against the
// wall time (the difference: copies, waits and the device idle). Nothing
// where the backend clocks nothing.
func clockTable(w *strings.Builder, clk kernelClock, what string, wall float64) error {
	if clk == nil {
		return nil
	}
	kt, err := clk.KernelTimes(true)
	if err != nil || len(kt) == 0 {
		return err
	}
	var sum float64
	for _, k := range kt {
		sum += k.Ms
	}
	fmt.Fprintf(w, "\nkernel times, %s (KVBENCH_KERNEL_TIMES: every launch between events, slower than unclocked):\n", what)
	fmt.Fprintf(w, "| kernel | launches | device ms | share of the kernels |\n|---|---:|---:|---:|\n")
	const listed = 15
	for _, k := range kt[:min(listed, len(kt))] {
		fmt.Fprintf(w, "| %s | %d | %.2f | %.1f %% |\n", k.Name, k.Launches, k.Ms, 100*k.Ms/max(sum, 1e-9))
	}
	if len(kt) > listed {
		launches, ms := 0, 0.0
		for _, k := range kt[listed:] {
			launches, ms = launches+k.Launches, ms+k.Ms
		}
		fmt.Fprintf(w, "| %d others | %d | %.2f | %.1f %% |\n", len(kt)-listed, launches, ms, 100*ms/max(sum, 1e-9))
	}
	fmt.Fprintf(w, "kernels %.1f ms of %.1f ms of wall time (%.1f %%)\n", sum, 1e3*wall, 100*sum/max(1e3*wall, 1e-9))
	return nil
}

// hostMemoryLine describes the process's resident memory on the host now
// and at its peak so far (VmRSS, VmHWM): the model's weights are mapped
// from their files and, on a GPU, dropped from the host once uploaded.
func hostMemoryLine(when string) string {
	rss, peak, err := runtime.HostMemory()
	if err != nil {
		return fmt.Sprintf("host memory %s: not known (%v)", when, err)
	}
	return fmt.Sprintf("host memory %s: %.2f GB resident, %.2f GB peak (VmRSS, VmHWM)", when, float64(rss)/1e9, float64(peak)/1e9)
}

// decodePrompted starts r over with prompt and returns the argmax of its
// last logits: the first token a timed decode of steps tokens feeds. The
// cache holds the prompt and the steps first (KVCache.Hold), as a policy's
// Prompt has it do, so that a GPU backend's decode finds the pages past the
// prompt by arithmetic, as in the suites.
func decodePrompted(r *runtime.Runner, prompt []int, steps int, logits []float32) (int, error) {
	r.Reset()
	r.Cache.Hold(len(prompt) + steps)
	if err := r.Forward(prompt, logits); err != nil {
		return 0, err
	}
	return runtime.Argmax(logits), nil
}
