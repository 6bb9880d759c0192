package tasks_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kvbench/kvbench/bench"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/tokenizer"
	"github.com/kvbench/kvbench/tasks"
)

// BenchmarkPasskeyHost32K is the host's share of a passkey cell at 32K
// tokens (two trials, one batch) of the 8B shape (32 layers, 4096, 32/8
// heads of 128, vocab 32000: zero weights) on the CUDA backend's fake device
// (KVBENCH_CUDA_FAKE: nothing computed): the prompt's tokenizing, the KV
// pages allocated and appended, the policies' hooks and the attention
// calls' metadata, which a GPU run adds to its device time where the host
// falls behind. The cells share one backend, as the cells of a run do.
// The evicting policies (budget 1,024) meet pseudo-random attention sums
// (KVBENCH_FAKE_SUMS=random): zeros would all tie, and their choices run
// fast on ties. It needs the Llama-2 tokenizer of the shared fixtures
// ($KVBENCH_SHARED/tokenizers/llama2).
func BenchmarkPasskeyHost32K(b *testing.B) {
	dir := os.Getenv("KVBENCH_SHARED")
	if dir == "" {
		dir = filepath.Join("..", "..", "shared")
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizers", "llama2", "tokenizer.model"))
	if err != nil {
		b.Skipf("the Llama-2 tokenizer of the shared fixtures: %v", err)
	}
	b.Setenv("KVBENCH_CUDA_FAKE", "1")
	b.Setenv("KVBENCH_FAKE_SUMS", "random")
	c := runtime.Config{Arch: "llama", Dim: 4096, Hidden: 14336, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128, Vocab: 32000,
		MaxSeq: 1 << 17, RopeTheta: 5e5, NormEps: 1e-5, BOS: 1, EOS: 2}
	m := runtime.ZeroModel(c)
	// One backend and weight upload for every cell, as in a run (bench.Run
	// shares its Devices among the cells); the first cell uploads.
	ds := bench.NewDevices()
	defer ds.Close()
	for _, pol := range []string{"full", "streamingllm", "snapkv", "tova", "h2o"} {
		var params policies.Params
		if pol != "full" && pol != "streamingllm" {
			params = policies.Params{"budget": 1024}
		}
		b.Run(pol, func(b *testing.B) {
			for range b.N {
				e, err := bench.NewEngine(m, tok, pol, params)
				if err != nil {
					b.Fatal(err)
				}
				e.Backend, e.KVType, e.Devices = "cuda", runtime.BF16, ds
				run(b, e, "passkey", tasks.Params{"lengths": 32768, "depths": 0.5, "trials": 2})
				if err := e.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
