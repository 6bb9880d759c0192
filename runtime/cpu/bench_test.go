package cpu_test

import (
	"path/filepath"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// benchDecode measures one decode step at a context of ctx tokens, reporting
// tokens/s. The cache is refilled whenever it reaches ctx+1024 tokens.
func benchDecode(b *testing.B, m *runtime.Model, ctx int) {
	be := cpu.New(0)
	defer be.Close()
	r, err := runtime.NewRunner(m, be, 64)
	if err != nil {
		b.Fatal(err)
	}
	r.Cache.Reserve(ctx + 1100)
	logits := make([]float32, m.Config.Vocab)
	prompt := make([]int, ctx)
	for i := range prompt {
		prompt[i] = (i*7 + 3) % m.Config.Vocab
	}
	fill := func() {
		r.Reset()
		if ctx > 0 {
			if err := r.Forward(prompt, logits); err != nil {
				b.Fatal(err)
			}
		}
	}
	fill()
	tok := []int{5}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r.Pos() >= ctx+1024 {
			b.StopTimer()
			fill()
			b.StartTimer()
		}
		if err := r.Forward(tok, logits); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}

func BenchmarkDecodeSyntheticSmall(b *testing.B) {
	m, err := runtime.Synthetic("small")
	if err != nil {
		b.Fatal(err)
	}
	benchDecode(b, m, 0)
}

func BenchmarkDecodeStories260K(b *testing.B) {
	m, err := runtime.Load(fixtures.Path(b, "models/stories260K/stories260K.bin"))
	if err != nil {
		b.Fatal(err)
	}
	benchDecode(b, m, 0)
}

func BenchmarkDecodeGutenberg25M(b *testing.B) {
	m, err := runtime.Load(fixtures.Path(b, "models/gutenberg-llama-25m"))
	if err != nil {
		b.Fatal(err)
	}
	benchDecode(b, m, 0)
}

func BenchmarkDecodeGutenberg25MCtx4K(b *testing.B) {
	m, err := runtime.Load(filepath.Join(fixtures.Path(b, "models/gutenberg-llama-25m")))
	if err != nil {
		b.Fatal(err)
	}
	benchDecode(b, m, 4096)
}

func BenchmarkPrefillGutenberg25M(b *testing.B) {
	m, err := runtime.Load(fixtures.Path(b, "models/gutenberg-llama-25m"))
	if err != nil {
		b.Fatal(err)
	}
	be := cpu.New(0)
	defer be.Close()
	r, err := runtime.NewRunner(m, be, 128)
	if err != nil {
		b.Fatal(err)
	}
	prompt := make([]int, 512)
	for i := range prompt {
		prompt[i] = (i*7 + 3) % m.Config.Vocab
	}
	logits := make([]float32, m.Config.Vocab)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.Reset()
		if err := r.Forward(prompt, logits); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(prompt))/b.Elapsed().Seconds(), "tokens/s")
}
