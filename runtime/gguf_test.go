package runtime

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime/gguf"
)

// ggufTest is a GGUF file under construction: metadata and tensors given in
// Hugging Face terms (row-major shapes, unpermuted rows), written as
// llama.cpp's converter lays them out.
type ggufTest struct {
	arch    string
	kv      map[string]any
	tensors map[string]ggufTestTensor
}

type ggufTestTensor struct {
	typ   gguf.GGMLType
	shape []int // row-major
	vals  []float32
	heads int // > 0: rows are a query/key projection to permute over this many heads
}

// ggufTinyShape: 2 layers, 4 query heads of 16 channels, 2 KV heads; every
// width a multiple of 32 so that the 32-element block types apply.
const (
	gtDim, gtHidden, gtLayers, gtHeads, gtKV, gtHD, gtVocab = 64, 96, 2, 4, 2, 16, 40
)

// newGGUFTest builds a tiny model of arch with distinct values in every
// tensor (element k of the file's tensors is a function of k).
func newGGUFTest(arch string) *ggufTest {
	g := &ggufTest{arch: arch, kv: map[string]any{}, tensors: map[string]ggufTestTensor{}}
	g.kv["general.architecture"] = arch
	for k, v := range map[string]any{
		"context_length": uint32(2048), "embedding_length": uint32(gtDim), "block_count": uint32(gtLayers),
		"feed_forward_length": uint32(gtHidden), "attention.head_count": uint32(gtHeads),
		"attention.head_count_kv": uint32(gtKV), "rope.freq_base": float32(50000),
		"attention.layer_norm_rms_epsilon": float32(1e-5), "rope.dimension_count": uint32(gtHD),
	} {
		g.kv[arch+"."+k] = v
	}
	tokens := make([]string, gtVocab)
	for i := range tokens {
		tokens[i] = "t" + strconv.Itoa(i)
	}
	g.kv["tokenizer.ggml.model"] = "llama"
	g.kv["tokenizer.ggml.tokens"] = tokens
	g.kv["tokenizer.ggml.bos_token_id"] = uint32(3)
	g.kv["tokenizer.ggml.eos_token_id"] = uint32(4)
	seed := 0
	add := func(name string, heads int, shape ...int) {
		n := 1
		for _, s := range shape {
			n *= s
		}
		v := make([]float32, n)
		for i := range v {
			seed++
			v[i] = float32(math.Sin(float64(seed)*0.731)) * 0.25
		}
		g.tensors[name] = ggufTestTensor{typ: gguf.F32, shape: shape, vals: v, heads: heads}
	}
	add("token_embd.weight", 0, gtVocab, gtDim)
	for i := range gtLayers {
		p := "blk." + strconv.Itoa(i) + "."
		add(p+"attn_norm.weight", 0, gtDim)
		qh, kh := gtHeads, gtKV
		if arch != "llama" {
			qh, kh = 0, 0
		}
		add(p+"attn_q.weight", qh, gtHeads*gtHD, gtDim)
		add(p+"attn_k.weight", kh, gtKV*gtHD, gtDim)
		add(p+"attn_v.weight", 0, gtKV*gtHD, gtDim)
		add(p+"attn_output.weight", 0, gtDim, gtHeads*gtHD)
		if arch == "qwen2" {
			add(p+"attn_q.bias", 0, gtHeads*gtHD)
			add(p+"attn_k.bias", 0, gtKV*gtHD)
			add(p+"attn_v.bias", 0, gtKV*gtHD)
		}
		if arch == "qwen3" {
			add(p+"attn_q_norm.weight", 0, gtHD)
			add(p+"attn_k_norm.weight", 0, gtHD)
		}
		add(p+"ffn_norm.weight", 0, gtDim)
		add(p+"ffn_gate.weight", 0, gtHidden, gtDim)
		add(p+"ffn_up.weight", 0, gtHidden, gtDim)
		add(p+"ffn_down.weight", 0, gtDim, gtHidden)
	}
	add("output_norm.weight", 0, gtDim)
	return g
}

// llamaCppPermute is llama.cpp's converter on a query or key projection:
// rows reshaped [heads, 2, d/2], the last two axes swapped, reshaped back;
// so stored row h*d + 2i + j holds row h*d + j*d/2 + i.
func llamaCppPermute(vals []float32, rows, heads int) []float32 {
	cols := len(vals) / rows
	d := rows / heads
	out := make([]float32, len(vals))
	for h := range heads {
		for i := range d / 2 {
			for j := range 2 {
				copy(out[(h*d+2*i+j)*cols:][:cols], vals[(h*d+j*d/2+i)*cols:][:cols])
			}
		}
	}
	return out
}

// bytes writes the file.
func (g *ggufTest) bytes(t testing.TB) []byte {
	t.Helper()
	w := &gguf.Writer{}
	keys := make([]string, 0, len(g.kv))
	for k := range g.kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := w.Set(k, g.kv[k]); err != nil {
			t.Fatal(err)
		}
	}
	names := make([]string, 0, len(g.tensors))
	for n := range g.tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		tt := g.tensors[n]
		vals := tt.vals
		if tt.heads > 0 {
			vals = llamaCppPermute(vals, tt.shape[0], tt.heads)
		}
		var data []byte
		if vals == nil { // zero blocks, for types Quantize does not write
			n := 1
			for _, d := range tt.shape {
				n *= d
			}
			size, err := tt.typ.RowSize(n)
			if err != nil {
				t.Fatalf("%s: %v", tt.typ, err)
			}
			data = make([]byte, size)
		} else {
			var err error
			if data, err = gguf.Quantize(tt.typ, vals); err != nil {
				t.Fatalf("%s: %v", n, err)
			}
		}
		dims := make([]uint64, len(tt.shape))
		for i, s := range tt.shape {
			dims[len(dims)-1-i] = uint64(s)
		}
		if err := w.AddTensor(n, tt.typ, dims, data); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (g *ggufTest) write(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, g.bytes(t), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// want returns the values tensor name must load as: its values after the
// round trip through its stored type.
func (g *ggufTest) want(t *testing.T, name string) []float32 {
	tt := g.tensors[name]
	data, err := gguf.Quantize(tt.typ, tt.vals)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(tt.vals))
	if err := gguf.Dequantize(tt.typ, data, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func tensorValues(tt *Tensor) []float32 {
	out := make([]float32, tt.Len())
	tt.ToF32(out, 0)
	return out
}

func TestGGUFLlama(t *testing.T) {
	g := newGGUFTest("llama")
	// Mixed storage, as llama.cpp's files have it.
	set := func(name string, typ gguf.GGMLType) {
		tt := g.tensors[name]
		tt.typ = typ
		g.tensors[name] = tt
	}
	set("token_embd.weight", gguf.F16)
	set("blk.0.attn_q.weight", gguf.Q8_0)
	set("blk.0.attn_k.weight", gguf.BF16)
	set("blk.1.attn_q.weight", gguf.Q5_0)
	set("blk.1.attn_k.weight", gguf.Q4_1)
	set("blk.1.ffn_down.weight", gguf.Q5_1)
	set("blk.1.attn_v.weight", gguf.Q4_0)
	m, err := Load(g.write(t, "tiny.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Arch: "llama", Dim: gtDim, Hidden: gtHidden, Layers: gtLayers, Heads: gtHeads, KVHeads: gtKV,
		HeadDim: gtHD, Vocab: gtVocab, MaxSeq: 2048, RopeTheta: 50000, Rope: RopeHalf, NormEps: 1e-5,
		TiedEmbeddings: true, BOS: 3, EOS: 4}
	if !reflect.DeepEqual(m.Config, want) {
		t.Fatalf("config\n%+v, want\n%+v", m.Config, want)
	}
	if m.Tokenizer != m.Source {
		t.Errorf("tokenizer %q, want the file itself", m.Tokenizer)
	}
	if m.Weights.Output != m.Weights.Embed {
		t.Error("untied output head without output.weight")
	}
	types := map[string]DType{"token_embd.weight": F16, "blk.0.attn_q.weight": F32, "blk.0.attn_k.weight": BF16, "blk.0.attn_norm.weight": F32}
	for i := range m.Weights.Layers {
		l := &m.Weights.Layers[i]
		p := "blk." + strconv.Itoa(i) + "."
		for name, tt := range map[string]*Tensor{"attn_norm.weight": l.AttnNorm, "attn_q.weight": l.Wq, "attn_k.weight": l.Wk,
			"attn_v.weight": l.Wv, "attn_output.weight": l.Wo, "ffn_norm.weight": l.MLPNorm, "ffn_gate.weight": l.Gate,
			"ffn_up.weight": l.Up, "ffn_down.weight": l.Down} {
			// Quantized blocks lie within rows and the permutation moves whole
			// rows, so the loaded rows are the HF rows' own round trip.
			if !reflect.DeepEqual(tensorValues(tt), g.want(t, p+name)) {
				t.Errorf("%s%s: values differ from the Hugging Face layout", p, name)
			}
			if dt, ok := types[p+name]; ok && tt.DType != dt {
				t.Errorf("%s%s: type %v, want %v", p, name, tt.DType, dt)
			}
		}
	}
	if !reflect.DeepEqual(tensorValues(m.Weights.Embed), g.want(t, "token_embd.weight")) || m.Weights.Embed.DType != F16 {
		t.Error("embedding differs")
	}
	// With an output head, and the special tokens from llama.cpp's defaults.
	g.tensors["output.weight"] = g.tensors["token_embd.weight"]
	delete(g.kv, "tokenizer.ggml.bos_token_id")
	delete(g.kv, "tokenizer.ggml.eos_token_id")
	m, err = LoadGGUF(g.write(t, "untied.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.TiedEmbeddings || m.Weights.Output == m.Weights.Embed || m.Config.BOS != 1 || m.Config.EOS != 2 {
		t.Errorf("untied %v, BOS %d EOS %d", !m.Config.TiedEmbeddings, m.Config.BOS, m.Config.EOS)
	}
}

func TestGGUFUnpermute(t *testing.T) {
	// One head of 8 rows: llama.cpp stores HF rows 0 4 1 5 2 6 3 7.
	stored := NewF32Tensor("q", []float32{0, 40, 10, 50, 20, 60, 30, 70}, 8, 1)
	unpermuteHeads(stored, 1)
	if want := []float32{0, 10, 20, 30, 40, 50, 60, 70}; !reflect.DeepEqual(stored.F32, want) {
		t.Fatalf("unpermuted %v, want %v", stored.F32, want)
	}
	// Two heads of 4 rows of 2 columns, in bf16.
	hf := []float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	p := llamaCppPermute(hf, 8, 2)
	if want := []float32{0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15}; !reflect.DeepEqual(p, want) {
		t.Fatalf("the test's permutation %v, want %v", p, want)
	}
	b := &Tensor{Name: "k", DType: BF16, Shape: []int{8, 2}, U16: make([]uint16, 16)}
	for i, v := range p {
		b.U16[i] = F32ToBF16(v)
	}
	unpermuteHeads(b, 2)
	if got := tensorValues(b); !reflect.DeepEqual(got, hf) {
		t.Fatalf("bf16 unpermuted %v, want %v", got, hf)
	}
}

func TestGGUFQwen(t *testing.T) {
	g := newGGUFTest("qwen2")
	g.kv["qwen2.rope.freq_base"] = float32(1e6)
	m, err := LoadGGUF(g.write(t, "qwen2.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	if !m.Config.QKVBias || m.Config.Arch != "qwen2" || m.Config.RopeTheta != 1e6 {
		t.Fatalf("config %+v", m.Config)
	}
	l := &m.Weights.Layers[1]
	if !reflect.DeepEqual(tensorValues(l.Wq), g.want(t, "blk.1.attn_q.weight")) ||
		!reflect.DeepEqual(tensorValues(l.Bk), g.want(t, "blk.1.attn_k.bias")) {
		t.Error("qwen2 projections are not stored permuted, and must load as stored")
	}
	g = newGGUFTest("qwen3")
	g.kv["qwen3.attention.key_length"] = uint32(gtHD)
	g.kv["qwen3.attention.value_length"] = uint32(gtHD)
	m, err = LoadGGUF(g.write(t, "qwen3.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	if !m.Config.QKNorm || m.Config.QKVBias {
		t.Fatalf("config %+v", m.Config)
	}
	if !reflect.DeepEqual(tensorValues(m.Weights.Layers[0].KNorm), g.want(t, "blk.0.attn_k_norm.weight")) {
		t.Error("k norm differs")
	}
}

// llamaCppRopeFactors is llama.cpp's converter for llama3 RoPE scaling:
// the factor each pair's frequency is divided by.
func llamaCppRopeFactors(theta float64, d int, factor, low, high float64, orig int) []float32 {
	lowWave, highWave := float64(orig)/low, float64(orig)/high
	var out []float32
	for i := 0; i < d; i += 2 {
		freq := float64(float32(1 / math.Pow(theta, float64(i)/float64(d))))
		wave := 2 * math.Pi / freq
		switch {
		case wave < highWave:
			out = append(out, 1)
		case wave > lowWave:
			out = append(out, float32(factor))
		default:
			smooth := (float64(orig)/wave - low) / (high - low)
			out = append(out, float32(1/((1-smooth)/factor+smooth)))
		}
	}
	return out
}

// ropeFreqsFile is a GGUF holding only a rope_freqs.weight tensor.
func ropeFreqsFile(t *testing.T, ff []float32) (*gguf.File, *gguf.TensorInfo) {
	t.Helper()
	w := &gguf.Writer{}
	data, err := gguf.Quantize(gguf.F32, ff)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddTensor("rope_freqs.weight", gguf.F32, []uint64{uint64(len(ff))}, data); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Parse("freqs.gguf", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return f, f.Tensor("rope_freqs.weight")
}

func TestGGUFRopeFreqsLlama3(t *testing.T) {
	for _, c := range []struct {
		theta  float64
		d      int
		factor float64
		orig   int
	}{
		{500000, 128, 8, 8192},  // Llama 3.1
		{500000, 64, 32, 8192},  // Llama 3.2 1B
		{500000, 128, 32, 8192}, // Llama 3.2 3B
		{10000, 128, 4, 4096},
	} {
		ff := llamaCppRopeFactors(c.theta, c.d, c.factor, 1, 4, c.orig)
		f, ti := ropeFreqsFile(t, ff)
		cfg := Config{HeadDim: c.d, RopeTheta: c.theta}
		s, err := ggufLlama3(f, ti, cfg)
		if err != nil {
			t.Fatal(err)
		}
		want := RopeScaling{Type: RopeLlama3, Factor: c.factor, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxSeq: c.orig}
		if !reflect.DeepEqual(s, want) {
			t.Errorf("%+v: recovered %+v", c, s)
		}
	}
	// All ones: no scaling.
	ones := make([]float32, 64)
	for i := range ones {
		ones[i] = 1
	}
	f, ti := ropeFreqsFile(t, ones)
	if s, err := ggufLlama3(f, ti, Config{HeadDim: 128, RopeTheta: 500000}); err != nil || s.Type != "" {
		t.Errorf("ones: %+v, %v", s, err)
	}
	// Factors llama3 cannot give are refused, naming the tensor.
	odd := llamaCppRopeFactors(500000, 128, 8, 1, 4, 8192)
	odd[31] *= 1.01
	f, ti = ropeFreqsFile(t, odd)
	if _, err := ggufLlama3(f, ti, Config{HeadDim: 128, RopeTheta: 500000}); err == nil || !strings.Contains(err.Error(), `tensor "rope_freqs.weight"`) {
		t.Errorf("perturbed factors: %v", err)
	}
	f, ti = ropeFreqsFile(t, ones[:10])
	if _, err := ggufLlama3(f, ti, Config{HeadDim: 128, RopeTheta: 500000}); err == nil || !strings.Contains(err.Error(), "want [64]") {
		t.Errorf("short tensor: %v", err)
	}
	// In a model: the tensor is consumed, not an unexplained extra.
	// (Head size 16 and base 10000 leave two pairs between the bands of an
	// original context of 250.)
	g := newGGUFTest("llama")
	g.kv["llama.rope.freq_base"] = float32(10000)
	g.tensors["rope_freqs.weight"] = ggufTestTensor{typ: gguf.F32, shape: []int{gtHD / 2},
		vals: llamaCppRopeFactors(10000, gtHD, 2, 1, 4, 250)}
	m, err := LoadGGUF(g.write(t, "freqs.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.RopeScaling.Type != RopeLlama3 || m.Config.RopeScaling.OriginalMaxSeq != 250 {
		t.Errorf("scaling %+v", m.Config.RopeScaling)
	}
}

func TestGGUFRopeScalingKeys(t *testing.T) {
	g := newGGUFTest("llama")
	g.kv["llama.rope.scaling.type"] = "linear"
	g.kv["llama.rope.scaling.factor"] = float32(4)
	m, err := LoadGGUF(g.write(t, "linear.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.Config.RopeScaling, RopeScaling{Type: RopeLinear, Factor: 4}) {
		t.Errorf("scaling %+v", m.Config.RopeScaling)
	}
	g = newGGUFTest("llama")
	g.kv["llama.rope.scale_linear"] = float32(2)
	if m, err = LoadGGUF(g.write(t, "old.gguf")); err != nil || m.Config.RopeScaling.Factor != 2 {
		t.Errorf("rope.scale_linear: %v %+v", err, m)
	}
	g = newGGUFTest("llama")
	g.kv["llama.rope.scaling.type"] = "none"
	if m, err = LoadGGUF(g.write(t, "none.gguf")); err != nil || m.Config.RopeScaling.Type != "" {
		t.Errorf("none: %v", err)
	}
}

func TestGGUFErrors(t *testing.T) {
	cases := []struct {
		name string
		edit func(g *ggufTest)
		want string
	}{
		{"no arch", func(g *ggufTest) { delete(g.kv, "general.architecture") }, `key "general.architecture" missing`},
		{"arch", func(g *ggufTest) { g.kv["general.architecture"] = "gemma" }, `general.architecture "gemma" not supported`},
		{"no layers", func(g *ggufTest) { delete(g.kv, "llama.block_count") }, `key "llama.block_count" missing`},
		{"layers type", func(g *ggufTest) { g.kv["llama.block_count"] = "2" }, `key "llama.block_count": want an unsigned integer, got string`},
		{"zero dim", func(g *ggufTest) { g.kv["llama.embedding_length"] = uint32(0) }, `key "llama.embedding_length": 0 is out of range`},
		{"kv heads", func(g *ggufTest) { g.kv["llama.attention.head_count_kv"] = uint32(3) }, `"llama.attention.head_count_kv": 3 does not divide`},
		{"per-layer kv heads", func(g *ggufTest) { g.kv["llama.attention.head_count_kv"] = []int32{2, 2} }, "want an unsigned integer, got array of int32"},
		{"partial rotary", func(g *ggufTest) { g.kv["llama.rope.dimension_count"] = uint32(8) }, "partial rotary"},
		{"value length", func(g *ggufTest) { g.kv["llama.attention.value_length"] = uint32(8) }, `"llama.attention.value_length": 8 differs`},
		{"no eps", func(g *ggufTest) { delete(g.kv, "llama.attention.layer_norm_rms_epsilon") }, "layer_norm_rms_epsilon\" missing"},
		{"eps", func(g *ggufTest) { g.kv["llama.attention.layer_norm_rms_epsilon"] = float32(-1) }, "must be in (0, 1]"},
		{"theta", func(g *ggufTest) { g.kv["llama.rope.freq_base"] = float32(0) }, `"llama.rope.freq_base": must be positive`},
		{"moe", func(g *ggufTest) { g.kv["llama.expert_count"] = uint32(8) }, "mixture of 8 experts"},
		{"yarn", func(g *ggufTest) { g.kv["llama.rope.scaling.type"] = "yarn" }, `key "llama.rope.scaling.type": RoPE scaling "yarn"`},
		{"linear without factor", func(g *ggufTest) { g.kv["llama.rope.scaling.type"] = "linear" }, `"llama.rope.scaling.factor" is missing`},
		{"bos", func(g *ggufTest) { g.kv["tokenizer.ggml.bos_token_id"] = uint32(40) }, `"tokenizer.ggml.bos_token_id": 40 is outside the vocabulary of 40`},
		{"missing tensor", func(g *ggufTest) { delete(g.tensors, "blk.1.ffn_up.weight") }, `tensor "blk.1.ffn_up.weight" missing`},
		{"shape", func(g *ggufTest) {
			tt := g.tensors["blk.0.attn_v.weight"]
			tt.shape = []int{gtDim, gtKV * gtHD}
			g.tensors["blk.0.attn_v.weight"] = tt
		}, `tensor "blk.0.attn_v.weight" has shape [64 32] (ggml dims [32 64]), the metadata implies [32 64]`},
		{"vocab", func(g *ggufTest) {
			g.kv["tokenizer.ggml.tokens"] = []string{"a", "b", "c", "d", "e"}
		}, `tensor "token_embd.weight" has shape [40 64] (ggml dims [64 40]), the metadata implies [5 64]`},
		{"tensor type", nil, `tensor "blk.0.ffn_down.weight" has type Q2_K, not supported`},
		{"extra", func(g *ggufTest) {
			g.tensors["blk.0.attn_sinks.weight"] = ggufTestTensor{typ: gguf.F32, shape: []int{4}, vals: make([]float32, 4)}
		}, "does not account for: blk.0.attn_sinks.weight"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := newGGUFTest("llama")
			if c.edit == nil { // Q2_K needs rows of 256
				g = ggufWithQ2K(t)
			} else {
				c.edit(g)
			}
			path := g.write(t, "bad.gguf")
			_, err := Load(path)
			if err == nil {
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "bad.gguf") {
				t.Fatalf("error %q, want it to contain %q and the file", err, c.want)
			}
			if _, ierr := InspectModel(path); ierr == nil || ierr.Error() != err.Error() {
				t.Errorf("InspectModel: %v, Load: %v", ierr, err)
			}
		})
	}
}

// ggufWithQ2K is the tiny model with one tensor stored in Q2_K, a type this
// loader does not dequantize (written as raw zero blocks).
func ggufWithQ2K(t *testing.T) *ggufTest {
	g := newGGUFTest("llama")
	g.kv["llama.feed_forward_length"] = uint32(256)
	for i := range gtLayers {
		p := "blk." + strconv.Itoa(i) + "."
		for _, n := range []string{"ffn_gate.weight", "ffn_up.weight"} {
			g.tensors[p+n] = ggufTestTensor{typ: gguf.F32, shape: []int{256, gtDim}, vals: make([]float32, 256*gtDim)}
		}
		g.tensors[p+"ffn_down.weight"] = ggufTestTensor{typ: gguf.F32, shape: []int{gtDim, 256}, vals: make([]float32, 256*gtDim)}
	}
	g.tensors["blk.0.ffn_down.weight"] = ggufTestTensor{typ: gguf.Q2_K, shape: []int{gtDim, 256}}
	return g
}

func TestInspectGGUF(t *testing.T) {
	g := newGGUFTest("llama")
	path := g.write(t, "m.gguf")
	tok, err := InspectModel(path)
	if err != nil || tok != path {
		t.Fatalf("InspectModel: %q, %v", tok, err)
	}
	delete(g.kv, "tokenizer.ggml.model")
	path = g.write(t, "plain")
	dir := filepath.Dir(path)
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.model"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if tok, err := InspectModel(path); err != nil || tok != filepath.Join(dir, "tokenizer.model") {
		t.Fatalf("InspectModel without an embedded tokenizer: %q, %v", tok, err)
	}
	m, err := Load(path) // no extension: recognised by the magic
	if err != nil {
		t.Fatal(err)
	}
	if m.Tokenizer != filepath.Join(dir, "tokenizer.model") {
		t.Errorf("tokenizer %q", m.Tokenizer)
	}
	if os.WriteFile(path, g.bytes(t)[:200], 0o644) != nil {
		t.Fatal("write")
	}
	if _, err := InspectModel(path); err == nil || !strings.Contains(err.Error(), "offset") {
		t.Errorf("truncated: %v", err)
	}
}

// FuzzGGUFModel feeds arbitrary bytes through the whole loader: parse,
// metadata, tensors, permutation. It must return a model or an error.
func FuzzGGUFModel(f *testing.F) {
	f.Add(newGGUFTest("llama").bytes(f))
	f.Add(newGGUFTest("qwen2").bytes(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := gguf.Parse("fuzz", b)
		if err != nil {
			return
		}
		m, err := ggufModel(g, true)
		if err != nil {
			return
		}
		if err := m.Check(); err != nil {
			t.Fatalf("a loaded model fails its check: %v", err)
		}
	})
}
