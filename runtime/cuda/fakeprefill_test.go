package cuda_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestFakePrefillMLP checks that a prompt's chunk takes the fused MLP on
// the bf16 GEMM path (FusedMLP: one be_swiglu_bf16 a layer, no float32
// SwiGLU) with its norms in bf16 (NormedProducts), and a decode step the
// one-row kernels (be_mv_swiglu).
func TestFakePrefillMLP(t *testing.T) {
	be := fakeBackend(t)
	c := runtime.Config{Arch: "llama", Dim: 256, Hidden: 768, Layers: 3, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 512,
		MaxSeq: 4096, RopeTheta: 1e4, NormEps: 1e-5}
	m := runtime.ZeroModel(c)
	r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: 64, KVType: runtime.BF16})
	if err != nil {
		t.Fatal(err)
	}
	logits := make([]float32, c.Vocab)
	count := func(f func()) map[string]int64 {
		k0 := cuda.FakeKernels()
		f()
		k1 := cuda.FakeKernels()
		for k := range k1 {
			k1[k] -= k0[k]
		}
		return k1
	}
	k := count(func() {
		if err := r.Forward(make([]int, 64), logits); err != nil {
			t.Fatal(err)
		}
	})
	if k["be_swiglu_bf16"] != int64(c.Layers) || k["be_swiglu"] != 0 || k["be_mv_swiglu"] != 0 {
		t.Fatalf("a 64-token chunk: be_swiglu_bf16 %d, be_swiglu %d, be_mv_swiglu %d launches; want %d, 0, 0", k["be_swiglu_bf16"], k["be_swiglu"], k["be_mv_swiglu"], c.Layers)
	}
	// The layers' two norms write the GEMMs' bf16 input (NormedProducts);
	// only the attention output is narrowed for its GEMM, and the head's
	// one row takes the float32 norm.
	if n, l := k["be_rmsnorm_narrow"], int64(c.Layers); n != 2*l || k["be_narrow"] != l || k["be_rmsnorm"] != 1 {
		t.Fatalf("a 64-token chunk: be_rmsnorm_narrow %d, be_narrow %d, be_rmsnorm %d launches; want %d, %d, 1", n, k["be_narrow"], k["be_rmsnorm"], 2*l, l)
	}
	k = count(func() {
		if err := r.Forward([]int{5}, logits); err != nil {
			t.Fatal(err)
		}
	})
	if k["be_swiglu_bf16"] != 0 || k["be_swiglu"] != 0 || k["be_rmsnorm_narrow"] != 0 {
		t.Fatalf("a decode step: be_swiglu_bf16 %d, be_swiglu %d, be_rmsnorm_narrow %d launches; want none", k["be_swiglu_bf16"], k["be_swiglu"], k["be_rmsnorm_narrow"])
	}
}

// TestFakeScaledRoPEPaired checks that a model with a scaled RoPE (Llama
// 3.1's llama3 scaling) turns a layer's queries and keys in one be_rope
// launch (runtime.ScaledRoPEPairer), in a prompt's chunk and in a decode
// step alike (there be_mv_qkv_rope, with the step's products and KV stores).
func TestFakeScaledRoPEPaired(t *testing.T) {
	be := fakeBackend(t)
	c := runtime.Config{Arch: "llama", Dim: 256, Hidden: 768, Layers: 3, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 512,
		MaxSeq: 4096, RopeTheta: 5e5, NormEps: 1e-5,
		RopeScaling: runtime.RopeScaling{Type: runtime.RopeLlama3, Factor: 8, OriginalMaxSeq: 1024, LowFreqFactor: 1, HighFreqFactor: 4}}
	m := runtime.ZeroModel(c)
	r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: 64, KVType: runtime.BF16})
	if err != nil {
		t.Fatal(err)
	}
	logits := make([]float32, c.Vocab)
	for _, n := range []int{64, 1} {
		k0 := cuda.FakeKernels()
		if err := r.Forward(make([]int, n), logits); err != nil {
			t.Fatal(err)
		}
		k1 := cuda.FakeKernels()
		got := int64(0)
		for _, name := range []string{"be_rope", "be_rope_kv", "be_mv_qkv_rope"} {
			got += k1[name] - k0[name]
		}
		if got != int64(c.Layers) {
			t.Errorf("a pass of %d rows: %d be_rope, be_rope_kv and be_mv_qkv_rope launches, want one a layer (%d)", n, got, c.Layers)
		}
	}
}

// BenchmarkFakePrefill times the host's share of a prompt's prefill on the
// CUDA backend, on the fake device (no kernels run): one chunk of 4,096
// tokens through the layers of the 8B shape (four of its 32 layers: the
// share is per layer), into a runner's fresh cache ("fresh": every KV page
// allocated) or into the pages a Reset left ("reused"). A real prefill
// overlaps this host time with the device's work only while the host runs
// ahead, so a host share near the device's (about 3.5 ms a layer for this
// chunk on an H200) leaves the device idle:
//
//	go test ./runtime/cuda -run '^$' -bench FakePrefill -cpuprofile cpu.out
func BenchmarkFakePrefill(b *testing.B) {
	be := fakeBackend(b)
	c := runtime.Config{Arch: "llama", Dim: 4096, Hidden: 14336, Layers: 4, Heads: 32, KVHeads: 8, HeadDim: 128, Vocab: 32000,
		MaxSeq: 1 << 20, RopeTheta: 5e5, NormEps: 1e-5}
	m := runtime.ZeroModel(c)
	const rows = 4096
	prompt := make([]int, rows)
	for i := range prompt {
		prompt[i] = 3 + i%1000
	}
	logits := make([]float32, c.Vocab)
	w, err := runtime.UploadWeights(m, be)
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"fresh", "reused"} {
		b.Run(mode, func(b *testing.B) {
			newRunner := func() *runtime.Runner {
				r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: rows, KVType: runtime.BF16, Weights: w})
				if err != nil {
					b.Fatal(err)
				}
				return r
			}
			r := newRunner()
			if err := r.Forward(prompt, logits); err != nil { // warm: scratch made
				b.Fatal(err)
			}
			l0, c0, r0, w0 := cuda.FakeCounts()
			runtime.WritePhases(nil)
			var el time.Duration
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				if mode == "fresh" {
					r.Cache.Free()
					r = newRunner()
				} else {
					r.Reset()
				}
				b.StartTimer()
				t0 := time.Now()
				if err := r.Forward(prompt, logits); err != nil {
					b.Fatal(err)
				}
				el += time.Since(t0)
			}
			b.StopTimer()
			l1, c1, r1, w1 := cuda.FakeCounts()
			n := float64(b.N)
			b.ReportMetric(float64(el.Microseconds())/1e3/n/float64(c.Layers), "ms/layer")
			b.ReportMetric(float64(l1-l0)/n, "launches")
			b.ReportMetric(float64(c1-c0)/n, "copies")
			b.ReportMetric(float64(r1-r0)/n, "reads")
			b.ReportMetric(float64(w1-w0)/n, "waits")
			var phases strings.Builder // with KVBENCH_PHASES: the pass part by part
			runtime.WritePhases(&phases)
			if phases.Len() > 0 {
				fmt.Printf("%s: part by part\n%s", b.Name(), phases.String())
			}
			r.Cache.Free()
		})
	}
}

// TestFakeRunnerFitRows checks that a runner's prefill chunk moves to the
// backend's FitRows only when its options ask (RunnerOptions.FitRows).
func TestFakeRunnerFitRows(t *testing.T) {
	be := fakeBackend(t)
	c := runtime.Config{Arch: "llama", Dim: 256, Hidden: 768, Layers: 1, Heads: 32, KVHeads: 8, HeadDim: 128, Vocab: 512,
		MaxSeq: 32768, RopeTheta: 1e4, NormEps: 1e-5}
	m := runtime.ZeroModel(c)
	for _, fit := range []bool{false, true} {
		r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: 8192, FitRows: fit, KVType: runtime.BF16})
		if err != nil {
			t.Fatal(err)
		}
		want := 8192
		if fit {
			want = be.FitRows(8192, c.Heads, c.HeadDim)
		}
		if r.MaxRows() != want {
			t.Errorf("FitRows %v: the runner's chunk is %d, want %d", fit, r.MaxRows(), want)
		}
		s, err := r.Sibling()
		if err != nil {
			t.Fatal(err)
		}
		if s.MaxRows() != r.MaxRows() {
			t.Errorf("FitRows %v: a sibling's chunk is %d, its runner's %d", fit, s.MaxRows(), r.MaxRows())
		}
	}
}

// BenchmarkFakeFirstPrompt times the host's share of a prompt whose KV pages
// are all new (a process's first prompt; a cell's after the last one freed
// its pages): 128K tokens of the 8B shape on the fake device, 4.2 M pages
// of 16 tokens. The pages go back to the backend between prompts, outside
// the timing.
func BenchmarkFakeFirstPrompt(b *testing.B) {
	be := fakeBackend(b)
	c := runtime.Config{Arch: "llama", Dim: 4096, Hidden: 14336, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128, Vocab: 32000,
		MaxSeq: 1 << 17, RopeTheta: 5e5, NormEps: 1e-5, BOS: 1, EOS: 2}
	m := runtime.ZeroModel(c)
	dw, err := runtime.UploadWeights(m, be)
	if err != nil {
		b.Fatal(err)
	}
	r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: 8192, FitRows: true, KVType: runtime.BF16, Weights: dw})
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]int, 131072)
	for i := range ids {
		ids[i] = 3 + i%30000
	}
	logits := make([]float32, c.Vocab)
	if err := r.Forward(ids[:256], logits); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		r.Cache.Free()
		b.StartTimer()
		if err := r.Forward(ids, logits); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFakeDecodeStep times the host's share of a single stream's
// decode step (Runner.Forward of one token after a 512-token prompt) on
// the fake device, for the 1B and 8B shapes' zero weights (what the host
// adds to a step whose kernels take 1.24 and 4.5 ms on the H200) and
// Qwen2.5-7B's shape (q/k/v biases, groups of 7), with the kernels it
// launches a step.
func BenchmarkFakeDecodeStep(b *testing.B) {
	for _, sh := range []struct {
		name string
		c    runtime.Config
	}{
		{"1B", runtime.Config{Arch: "llama", Dim: 2048, Hidden: 8192, Layers: 16, Heads: 32, KVHeads: 8, HeadDim: 64, Vocab: 32000,
			MaxSeq: 4096, RopeTheta: 5e5, NormEps: 1e-5, BOS: 1, EOS: 2}},
		{"8B", runtime.Config{Arch: "llama", Dim: 4096, Hidden: 14336, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128, Vocab: 32000,
			MaxSeq: 4096, RopeTheta: 5e5, NormEps: 1e-5, BOS: 1, EOS: 2}},
		// Qwen2.5-7B's shape: q/k/v biases, 28 heads over 4 (vocab as the others).
		{"Qwen7B", runtime.Config{Arch: "qwen2", Dim: 3584, Hidden: 18944, Layers: 28, Heads: 28, KVHeads: 4, HeadDim: 128, Vocab: 32000,
			MaxSeq: 4096, RopeTheta: 1e6, NormEps: 1e-6, BOS: 1, EOS: 2, QKVBias: true}},
	} {
		b.Run(sh.name, func(b *testing.B) {
			r, logits := fakePrompted(b, fakeBackend(b), sh.c)
			for range 5 { // the steps' graphs recorded
				if err := r.Forward([]int{5}, logits); err != nil {
					b.Fatal(err)
				}
			}
			l0, _, _, _ := cuda.FakeCounts()
			b.ResetTimer()
			for range b.N {
				if err := r.Forward([]int{5}, logits); err != nil {
					b.Fatal(err)
				}
			}
			l1, _, _, _ := cuda.FakeCounts()
			b.ReportMetric(float64(l1-l0)/float64(b.N), "launches/step")
		})
	}
}

// fakePrompted is a runner of c's zero weights (uploaded once, bf16 KV
// pages, chunks of 512 rows) on be after a 512-token prompt, and its logits.
func fakePrompted(tb testing.TB, be *cuda.Backend, c runtime.Config) (*runtime.Runner, []float32) {
	tb.Helper()
	m := runtime.ZeroModel(c)
	dw, err := runtime.UploadWeights(m, be)
	if err != nil {
		tb.Fatal(err)
	}
	r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: 512, KVType: runtime.BF16, Weights: dw})
	if err != nil {
		tb.Fatal(err)
	}
	ids := make([]int, 512)
	for i := range ids {
		ids[i] = 3 + i
	}
	logits := make([]float32, c.Vocab)
	if err := r.Forward(ids, logits); err != nil {
		tb.Fatal(err)
	}
	return r, logits
}
