package runtime

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
)

// SyntheticVocab is the vocabulary of every synthetic model: the 256 byte
// values after three special tokens (0 unknown, 1 BOS, 2 EOS), so the byte
// tokenizer (tokenizer.Bytes) encodes any text for it.
const SyntheticVocab = 259

// syntheticConfigs are the built-in seeded models, by name.
var syntheticConfigs = map[string]Config{
	// tiny: GQA, rotate-half RoPE; for tests, the smoke suite and the demo.
	"tiny": {Arch: "synthetic", Dim: 64, Hidden: 176, Layers: 3, Heads: 4, KVHeads: 2, HeadDim: 16,
		MaxSeq: 4096, RopeTheta: 10000, Rope: RopeHalf, NormEps: 1e-5, TiedEmbeddings: true},
	// tiny-mha: as tiny with one KV head per query head.
	"tiny-mha": {Arch: "synthetic", Dim: 64, Hidden: 176, Layers: 3, Heads: 4, KVHeads: 4, HeadDim: 16,
		MaxSeq: 4096, RopeTheta: 10000, Rope: RopeHalf, NormEps: 1e-5, TiedEmbeddings: true},
	// tiny-interleaved: llama2.c RoPE and an untied head.
	"tiny-interleaved": {Arch: "synthetic", Dim: 64, Hidden: 176, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 16,
		MaxSeq: 4096, RopeTheta: 10000, Rope: RopeInterleaved, NormEps: 1e-5},
	// tiny-qwen: q/k/v biases as Qwen2 has them.
	"tiny-qwen": {Arch: "synthetic", Dim: 64, Hidden: 176, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 16,
		MaxSeq: 4096, RopeTheta: 1e6, Rope: RopeHalf, NormEps: 1e-6, QKVBias: true, TiedEmbeddings: true},
	// small: the shape class of gutenberg-llama-25m, for benchmarks without files.
	"small": {Arch: "synthetic", Dim: 384, Hidden: 1024, Layers: 8, Heads: 6, KVHeads: 2, HeadDim: 64,
		MaxSeq: 16384, RopeTheta: 1e5, Rope: RopeHalf, NormEps: 1e-5, TiedEmbeddings: true},
}

// SyntheticNames lists the built-in synthetic models.
func SyntheticNames() []string {
	names := make([]string, 0, len(syntheticConfigs))
	for n := range syntheticConfigs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Synthetic returns the built-in model name with weights drawn from a fixed
// seed (the same on every machine), in float32. A name may end in "@SEED" to
// draw other weights.
func Synthetic(name string) (*Model, error) {
	base, seedText, hasSeed := strings.Cut(name, "@")
	c, ok := syntheticConfigs[base]
	if !ok {
		return nil, fmt.Errorf("unknown synthetic model %q (have %s)", name, strings.Join(SyntheticNames(), ", "))
	}
	seed := uint64(1)
	if hasSeed {
		if _, err := fmt.Sscan(seedText, &seed); err != nil {
			return nil, fmt.Errorf("synthetic model %q: bad seed %q", name, seedText)
		}
	}
	c.Vocab = SyntheticVocab
	c.BOS, c.EOS = 1, 2
	m := NewRandomModel(c, seed)
	m.Source = "synthetic:" + name
	return m, nil
}

// NewRandomModel returns a model of shape c with float32 weights drawn from a
// normal distribution seeded by seed, scaled so activations stay of order one.
func NewRandomModel(c Config, seed uint64) *Model {
	rng := rand.New(rand.NewPCG(seed, 0x6b7662656e6368))
	mat := func(name string, rows, cols int) *Tensor {
		d := make([]float32, rows*cols)
		s := 1 / math.Sqrt(float64(cols))
		for i := range d {
			d[i] = float32(rng.NormFloat64() * s)
		}
		return NewF32Tensor(name, d, rows, cols)
	}
	vec := func(name string, n int, mean, sd float64) *Tensor {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(mean + sd*rng.NormFloat64())
		}
		return NewF32Tensor(name, d, n)
	}
	m := &Model{Config: c}
	w := &m.Weights
	w.Embed = mat("embed", c.Vocab, c.Dim)
	// Scale the embedding up so rows are unit-RMS, as trained models' are.
	for i := range w.Embed.F32 {
		w.Embed.F32[i] *= float32(math.Sqrt(float64(c.Dim)))
	}
	w.Layers = make([]LayerWeights, c.Layers)
	for i := range w.Layers {
		l := &w.Layers[i]
		p := fmt.Sprintf("layers.%d.", i)
		l.AttnNorm = vec(p+"attn_norm", c.Dim, 1, 0.1)
		l.Wq = mat(p+"wq", c.QDim(), c.Dim)
		l.Wk = mat(p+"wk", c.KVDim(), c.Dim)
		l.Wv = mat(p+"wv", c.KVDim(), c.Dim)
		l.Wo = mat(p+"wo", c.Dim, c.QDim())
		if c.QKVBias {
			l.Bq = vec(p+"bq", c.QDim(), 0, 0.5)
			l.Bk = vec(p+"bk", c.KVDim(), 0, 0.5)
			l.Bv = vec(p+"bv", c.KVDim(), 0, 0.5)
		}
		if c.QKNorm {
			l.QNorm = vec(p+"q_norm", c.HeadDim, 1, 0.3)
			l.KNorm = vec(p+"k_norm", c.HeadDim, 1, 0.3)
		}
		l.MLPNorm = vec(p+"mlp_norm", c.Dim, 1, 0.1)
		l.Gate = mat(p+"gate", c.Hidden, c.Dim)
		l.Up = mat(p+"up", c.Hidden, c.Dim)
		l.Down = mat(p+"down", c.Dim, c.Hidden)
	}
	// A final norm of 1/4 keeps the logits of the tied head (unit-RMS rows)
	// at a spread of about 2, like a trained model's.
	w.Norm = vec("norm", c.Dim, 0.25, 0.02)
	if c.TiedEmbeddings {
		w.Output = w.Embed
	} else {
		w.Output = mat("output", c.Vocab, c.Dim)
	}
	return m
}

// ZeroModel returns a Llama-layout model of shape c (with the biases and
// head norms it asks for) whose bf16 tensors are zeros, all views of one slice as long as the largest: untouched pages of
// it cost no memory, so the shape of an 8B model fits anywhere. It is for
// timing the host's share of a run on a backend that computes nothing (a
// null backend, the CUDA backend's fake device); its outputs mean nothing.
func ZeroModel(c Config) *Model {
	m := &Model{Config: c}
	zeros := make([]uint16, max(c.Vocab*c.Dim, c.Hidden*c.Dim, c.QDim()*c.Dim))
	t := func(shape ...int) *Tensor {
		n := 1
		for _, s := range shape {
			n *= s
		}
		return &Tensor{Name: fmt.Sprint(shape), DType: BF16, Shape: shape, U16: zeros[:n]}
	}
	w := &m.Weights
	w.Embed, w.Norm, w.Output = t(c.Vocab, c.Dim), t(c.Dim), t(c.Vocab, c.Dim)
	w.Layers = make([]LayerWeights, c.Layers)
	for i := range w.Layers {
		l := &w.Layers[i]
		l.AttnNorm, l.MLPNorm = t(c.Dim), t(c.Dim)
		l.Wq, l.Wk, l.Wv, l.Wo = t(c.QDim(), c.Dim), t(c.KVDim(), c.Dim), t(c.KVDim(), c.Dim), t(c.Dim, c.QDim())
		l.Gate, l.Up, l.Down = t(c.Hidden, c.Dim), t(c.Hidden, c.Dim), t(c.Dim, c.Hidden)
		if c.QKVBias {
			l.Bq, l.Bk, l.Bv = t(c.QDim()), t(c.KVDim()), t(c.KVDim())
		}
		if c.QKNorm {
			l.QNorm, l.KNorm = t(c.HeadDim), t(c.HeadDim)
		}
	}
	return m
}
