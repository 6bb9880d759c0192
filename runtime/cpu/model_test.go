package cpu_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

func newRunner(t testing.TB, m *runtime.Model, be runtime.Backend, maxRows int) *runtime.Runner {
	t.Helper()
	r, err := runtime.NewRunner(m, be, maxRows)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func randomTokens(rng *rand.Rand, n, vocab int) []int {
	toks := make([]int, n)
	for i := range toks {
		toks[i] = rng.IntN(vocab)
	}
	return toks
}

// maxRelDiff is max |a-b| / max(max|a|, 1e-6) over two equal-length slices.
func maxRelDiff(a, b []float32) float64 {
	var d, scale float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
		scale = math.Max(scale, math.Abs(float64(a[i])))
	}
	return d / math.Max(scale, 1e-6)
}

// TestPrefillEqualsDecode checks that feeding a prompt at once (in chunks of
// several sizes) gives the logits of feeding it one token at a time.
func TestPrefillEqualsDecode(t *testing.T) {
	be := cpu.New(0)
	defer be.Close()
	for _, name := range []string{"tiny", "tiny-mha", "tiny-interleaved", "tiny-qwen"} {
		t.Run(name, func(t *testing.T) {
			m, err := runtime.Synthetic(name)
			if err != nil {
				t.Fatal(err)
			}
			c := m.Config
			rng := rand.New(rand.NewPCG(7, 7))
			toks := randomTokens(rng, 37, c.Vocab)

			dec := newRunner(t, m, be, 1)
			want := make([]float32, len(toks)*c.Vocab)
			for i, tok := range toks {
				if err := dec.Forward([]int{tok}, want[i*c.Vocab:(i+1)*c.Vocab]); err != nil {
					t.Fatal(err)
				}
			}
			for _, chunk := range []int{37, 8, 5} {
				pre := newRunner(t, m, be, chunk)
				got := make([]float32, len(toks)*c.Vocab)
				if err := pre.ForwardAll(toks, got); err != nil {
					t.Fatal(err)
				}
				if d := maxRelDiff(want, got); d > 1e-5 {
					t.Errorf("chunk %d: prefill logits differ from decode by %.3g relative", chunk, d)
				}
				// Forward (last logits only) equals the last row.
				pre.Reset()
				last := make([]float32, c.Vocab)
				if err := pre.Forward(toks, last); err != nil {
					t.Fatal(err)
				}
				if d := maxRelDiff(want[(len(toks)-1)*c.Vocab:], last); d > 1e-5 {
					t.Errorf("chunk %d: last-token logits differ by %.3g", chunk, d)
				}
			}
		})
	}
}

// TestGQAEqualsRepeatedMHA builds an MHA model whose KV heads repeat the GQA
// model's heads group by group; both must give the same logits.
func TestGQAEqualsRepeatedMHA(t *testing.T) {
	be := cpu.New(0)
	defer be.Close()
	g, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	c := g.Config
	group := c.Heads / c.KVHeads
	if group < 2 {
		t.Fatalf("tiny must be GQA, has group %d", group)
	}
	mc := c
	mc.KVHeads = c.Heads
	mha := &runtime.Model{Config: mc, Weights: g.Weights}
	mha.Weights.Layers = make([]runtime.LayerWeights, c.Layers)
	repeat := func(src *runtime.Tensor) *runtime.Tensor {
		in := src.Shape[1]
		d := make([]float32, 0, c.Heads*c.HeadDim*in)
		for h := 0; h < c.Heads; h++ {
			kv := h / group
			d = append(d, src.F32[kv*c.HeadDim*in:(kv+1)*c.HeadDim*in]...)
		}
		return runtime.NewF32Tensor(src.Name+".rep", d, c.Heads*c.HeadDim, in)
	}
	for i, l := range g.Weights.Layers {
		l.Wk, l.Wv = repeat(l.Wk), repeat(l.Wv)
		mha.Weights.Layers[i] = l
	}
	if err := mha.Check(); err != nil {
		t.Fatal(err)
	}
	toks := randomTokens(rand.New(rand.NewPCG(3, 3)), 20, c.Vocab)
	a := make([]float32, len(toks)*c.Vocab)
	b := make([]float32, len(toks)*c.Vocab)
	if err := newRunner(t, g, be, 8).ForwardAll(toks, a); err != nil {
		t.Fatal(err)
	}
	if err := newRunner(t, mha, be, 8).ForwardAll(toks, b); err != nil {
		t.Fatal(err)
	}
	if d := maxRelDiff(a, b); d > 1e-6 {
		t.Errorf("GQA and repeated-head MHA differ by %.3g relative", d)
	}
}

// TestDecodeAllocatesNothing checks the steady-state decode step.
func TestDecodeAllocatesNothing(t *testing.T) {
	be := cpu.New(0)
	defer be.Close()
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, m, be, 1)
	r.Cache.Reserve(400)
	logits := make([]float32, m.Config.Vocab)
	tok := []int{5}
	for i := 0; i < 8; i++ { // warm up scratch buffers
		if err := r.Forward(tok, logits); err != nil {
			t.Fatal(err)
		}
	}
	allocs := testing.AllocsPerRun(200, func() {
		if err := r.Forward(tok, logits); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("decode step allocates %.1f times per token, want 0", allocs)
	}
}
