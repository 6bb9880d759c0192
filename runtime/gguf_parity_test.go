package runtime_test

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/runtime/gguf"
	"github.com/kvbench/kvbench/runtime/tokenizer"
)

// These tests convert models to GGUF the way llama.cpp's converter does and
// load them back: the logits must be those of the model the file was made
// from, exactly (bit for bit) once the weights are rounded to the stored
// type, and within a stated tolerance of the original weights.

// ggufAllTypes are the element types the loader reads.
var ggufAllTypes = []gguf.GGMLType{gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0, gguf.Q4_0, gguf.Q4_1,
	gguf.Q5_0, gguf.Q5_1, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K}

// ggufFallback is the type llama.cpp's quantizer uses for a matrix whose
// rows are not whole 256-element blocks.
var ggufFallback = map[gguf.GGMLType]gguf.GGMLType{gguf.Q4_K: gguf.Q5_0, gguf.Q5_K: gguf.Q5_1, gguf.Q6_K: gguf.Q8_0}

// convPlan is how a conversion stores tensors: vectors in F32, as
// llama.cpp's converter keeps them; matrices in typ, or its fallback when
// their rows are not whole blocks of it. With mix, the output head (the
// embedding when tied) is stored in Q6_K for types of fewer than 8 bits, as
// llama.cpp's quantizer does.
type convPlan struct {
	typ gguf.GGMLType
	mix bool
}

// storedType is the type of a tensor of shape; head says it is the output
// head.
func (p convPlan) storedType(shape []int, head bool) gguf.GGMLType {
	if len(shape) == 1 {
		return gguf.F32
	}
	typ := p.typ
	if head && p.mix && typ != gguf.F32 && typ != gguf.F16 && typ != gguf.BF16 && typ != gguf.Q8_0 {
		typ = gguf.Q6_K
	}
	if shape[len(shape)-1]%typ.BlockSize() != 0 {
		return ggufFallback[typ]
	}
	return typ
}

// ggufArchOf names the llama.cpp architecture of a config.
func ggufArchOf(c runtime.Config) string {
	switch {
	case c.QKNorm:
		return "qwen3"
	case c.QKVBias:
		return "qwen2"
	}
	return "llama"
}

// permuteForLlamaCpp is the converter's reordering of query and key rows:
// rows viewed as [heads, 2, d/2], the last two axes swapped.
func permuteForLlamaCpp(v []float32, rows, heads int) []float32 {
	cols := len(v) / rows
	d := rows / heads
	out := make([]float32, len(v))
	for h := range heads {
		for j := range 2 {
			for i := range d / 2 {
				copy(out[(h*d+2*i+j)*cols:][:cols], v[(h*d+j*d/2+i)*cols:][:cols])
			}
		}
	}
	return out
}

// writeGGUF converts m to a GGUF file at path, stored as plan says, with the
// SentencePiece tokenizer sp when not nil.
func writeGGUF(t testing.TB, m *runtime.Model, plan convPlan, sp *tokenizer.SentencePiece, path string) {
	t.Helper()
	c := m.Config
	arch := ggufArchOf(c)
	w := &gguf.Writer{}
	set := func(k string, v any) {
		if err := w.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	set("general.architecture", arch)
	set("general.name", "kvbench test conversion")
	set(arch+".context_length", uint32(c.MaxSeq))
	set(arch+".embedding_length", uint32(c.Dim))
	set(arch+".block_count", uint32(c.Layers))
	set(arch+".feed_forward_length", uint32(c.Hidden))
	set(arch+".attention.head_count", uint32(c.Heads))
	set(arch+".attention.head_count_kv", uint32(c.KVHeads))
	set(arch+".rope.freq_base", float32(c.RopeTheta))
	set(arch+".rope.dimension_count", uint32(c.HeadDim))
	set(arch+".attention.layer_norm_rms_epsilon", c.NormEps)
	if c.HeadDim*c.Heads != c.Dim {
		set(arch+".attention.key_length", uint32(c.HeadDim))
		set(arch+".attention.value_length", uint32(c.HeadDim))
	}
	if sp != nil {
		s := sp.Spec()
		set("tokenizer.ggml.model", "llama")
		set("tokenizer.ggml.pre", "default")
		set("tokenizer.ggml.tokens", s.Pieces)
		set("tokenizer.ggml.scores", s.Scores)
		set("tokenizer.ggml.token_type", s.Types)
		set("tokenizer.ggml.bos_token_id", uint32(s.BOS))
		set("tokenizer.ggml.eos_token_id", uint32(s.EOS))
		set("tokenizer.ggml.add_space_prefix", s.AddDummyPrefix)
		set("tokenizer.ggml.remove_extra_whitespaces", s.RemoveExtraWhitespaces)
	} else {
		set(arch+".vocab_size", uint32(c.Vocab))
	}
	add := func(name string, tt *runtime.Tensor, heads int) {
		v := make([]float32, tt.Len())
		tt.ToF32(v, 0)
		if heads > 0 && arch == "llama" {
			v = permuteForLlamaCpp(v, tt.Shape[0], heads)
		}
		head := name == "output.weight" || name == "token_embd.weight" && c.TiedEmbeddings
		st := plan.storedType(tt.Shape, head)
		data, err := gguf.Quantize(st, v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		dims := make([]uint64, len(tt.Shape))
		for i, s := range tt.Shape {
			dims[len(dims)-1-i] = uint64(s)
		}
		if err := w.AddTensor(name, st, dims, data); err != nil {
			t.Fatal(err)
		}
	}
	ws := &m.Weights
	add("token_embd.weight", ws.Embed, 0)
	for i := range ws.Layers {
		l := &ws.Layers[i]
		p := "blk." + strconv.Itoa(i) + "."
		add(p+"attn_norm.weight", l.AttnNorm, 0)
		add(p+"attn_q.weight", l.Wq, c.Heads)
		add(p+"attn_k.weight", l.Wk, c.KVHeads)
		add(p+"attn_v.weight", l.Wv, 0)
		add(p+"attn_output.weight", l.Wo, 0)
		if c.QKVBias {
			add(p+"attn_q.bias", l.Bq, c.Heads)
			add(p+"attn_k.bias", l.Bk, c.KVHeads)
			add(p+"attn_v.bias", l.Bv, 0)
		}
		if c.QKNorm {
			add(p+"attn_q_norm.weight", l.QNorm, 0)
			add(p+"attn_k_norm.weight", l.KNorm, 0)
		}
		add(p+"ffn_norm.weight", l.MLPNorm, 0)
		add(p+"ffn_gate.weight", l.Gate, 0)
		add(p+"ffn_up.weight", l.Up, 0)
		add(p+"ffn_down.weight", l.Down, 0)
	}
	add("output_norm.weight", ws.Norm, 0)
	if !c.TiedEmbeddings {
		add("output.weight", ws.Output, 0)
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// roundedModel is m with every tensor as writeGGUF with plan stores it:
// vectors in float32, matrices in F16/BF16 or dequantized to float32.
func roundedModel(t testing.TB, m *runtime.Model, plan convPlan) *runtime.Model {
	t.Helper()
	convHead := func(tt *runtime.Tensor, head bool) *runtime.Tensor {
		if tt == nil {
			return nil
		}
		v := make([]float32, tt.Len())
		tt.ToF32(v, 0)
		st := plan.storedType(tt.Shape, head)
		data, err := gguf.Quantize(st, v)
		if err != nil {
			t.Fatal(err)
		}
		out := &runtime.Tensor{Name: tt.Name, Shape: tt.Shape}
		switch st {
		case gguf.F16, gguf.BF16:
			out.DType, out.U16 = runtime.F16, make([]uint16, len(v))
			if st == gguf.BF16 {
				out.DType = runtime.BF16
			}
			for i := range out.U16 {
				out.U16[i] = uint16(data[2*i]) | uint16(data[2*i+1])<<8
			}
		default:
			out.DType, out.F32 = runtime.F32, make([]float32, len(v))
			if err := gguf.Dequantize(st, data, out.F32); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	conv := func(tt *runtime.Tensor) *runtime.Tensor { return convHead(tt, false) }
	r := &runtime.Model{Config: m.Config, Source: m.Source}
	ws, rw := &m.Weights, &r.Weights
	rw.Embed, rw.Norm = convHead(ws.Embed, m.Config.TiedEmbeddings), conv(ws.Norm)
	rw.Output = rw.Embed
	if !m.Config.TiedEmbeddings {
		rw.Output = convHead(ws.Output, true)
	}
	rw.Layers = make([]runtime.LayerWeights, len(ws.Layers))
	for i := range ws.Layers {
		l, o := &ws.Layers[i], &rw.Layers[i]
		*o = runtime.LayerWeights{AttnNorm: conv(l.AttnNorm), Wq: conv(l.Wq), Wk: conv(l.Wk), Wv: conv(l.Wv), Wo: conv(l.Wo),
			Bq: conv(l.Bq), Bk: conv(l.Bk), Bv: conv(l.Bv), QNorm: conv(l.QNorm), KNorm: conv(l.KNorm),
			MLPNorm: conv(l.MLPNorm), Gate: conv(l.Gate), Up: conv(l.Up), Down: conv(l.Down)}
	}
	return r
}

// allLogits runs tokens through m on the CPU and returns every position's
// logits.
func allLogits(t testing.TB, m *runtime.Model, tokens []int) []float32 {
	t.Helper()
	be := cpu.New(2)
	defer be.Close()
	r, err := runtime.NewRunner(m, be, 16)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(tokens)*m.Config.Vocab)
	if err := r.ForwardAll(tokens, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// logitDiff compares logits per position: the largest difference relative
// to the position's largest logit magnitude, the share of positions whose
// argmax agrees, and the mean KL divergence of got's distribution from
// want's, in nats.
func logitDiff(got, want []float32, vocab int) (maxRel, top1, kl float64) {
	agree := 0
	n := len(want) / vocab
	for p := range n {
		g, w := got[p*vocab:(p+1)*vocab], want[p*vocab:(p+1)*vocab]
		var d, scale float64
		ga, wa := 0, 0
		for j := range w {
			d = max(d, math.Abs(float64(g[j]-w[j])))
			scale = max(scale, math.Abs(float64(w[j])))
			if g[j] > g[ga] {
				ga = j
			}
			if w[j] > w[wa] {
				wa = j
			}
		}
		maxRel = max(maxRel, d/max(scale, 1e-6))
		if ga == wa {
			agree++
		}
		lw, lg := logSoftmax(w), logSoftmax(g)
		for j := range lw {
			kl += math.Exp(lw[j]) * (lw[j] - lg[j])
		}
	}
	return maxRel, float64(agree) / float64(n), kl / float64(n)
}

func logSoftmax(x []float32) []float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = max(m, float64(v))
	}
	var sum float64
	for _, v := range x {
		sum += math.Exp(float64(v) - m)
	}
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v) - m - math.Log(sum)
	}
	return out
}

// sameBits reports the first position where two logit slices differ in any
// bit, or -1.
func sameBits(a, b []float32) int {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// ggufTolerance bounds the logits of a converted model against the original
// weights: the largest difference at a position relative to that position's
// largest logit, per type, for the random test model and for
// gutenberg-llama-25m (48 positions of a novel). These measure the formats
// (and the plain round-to-nearest quantizers of package gguf), not the
// loader, which the bit-for-bit comparisons check. Measured on an x86-64 CPU
// (random, gutenberg; the mean KL divergence in nats in brackets):
//
//	F32   0 (0), 0 (0)                  F16   7.2e-4, 1.2e-6 (2e-12)
//	BF16  5.8e-3, 0 (0)                 Q8_0  0.021, 0.035 (0.0024)
//	Q6_K  0.066, 0.066 (0.0075)         Q5_K  0.14, 0.20 (0.067)
//	Q5_1  0.11, 0.19 (0.063)            Q5_0  0.15, 0.23 (0.078)
//	Q4_K  0.22, 0.26 (0.12)             Q4_1  0.23, 0.33 (0.34)
//	Q4_0  0.30, 0.38 (0.36)
//
// The bounds leave a margin of about 1.5 to 2 (the gutenberg model's output
// head, its tied embedding, is stored in Q8_0 for the types below 8 bits,
// as llama.cpp's quantizer stores it in Q6_K and falls back to Q8_0 for rows
// of 384).
var ggufTolerance = map[gguf.GGMLType][2]float64{
	gguf.F32: {0, 1e-5}, gguf.F16: {2e-3, 1e-5}, gguf.BF16: {1.5e-2, 0},
	gguf.Q8_0: {0.05, 0.07}, gguf.Q6_K: {0.15, 0.13}, gguf.Q5_K: {0.3, 0.4}, gguf.Q5_1: {0.25, 0.35},
	gguf.Q5_0: {0.3, 0.45}, gguf.Q4_K: {0.45, 0.5}, gguf.Q4_1: {0.45, 0.6}, gguf.Q4_0: {0.6, 0.7},
}

func ggufTestTokens(n, vocab int) []int {
	toks := make([]int, n)
	for i := range toks {
		toks[i] = (i*7919 + 13) % vocab
	}
	return toks
}

// TestGGUFParityRandom converts random models (every matrix a whole number
// of 256-element blocks, so every type applies everywhere) to each type.
func TestGGUFParityRandom(t *testing.T) {
	base := runtime.Config{Arch: "llama", Dim: 256, Hidden: 512, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 64,
		Vocab: 300, MaxSeq: 4096, RopeTheta: 10000, Rope: runtime.RopeHalf, NormEps: 1e-5, BOS: -1, EOS: -1}
	tokens := ggufTestTokens(24, base.Vocab)
	dir := t.TempDir()
	for _, variant := range []struct {
		name  string
		edit  func(c *runtime.Config)
		types []gguf.GGMLType
	}{
		{"llama", func(c *runtime.Config) {}, ggufAllTypes},
		{"llama-tied", func(c *runtime.Config) { c.TiedEmbeddings = true }, []gguf.GGMLType{gguf.BF16, gguf.Q4_K}},
		{"qwen2", func(c *runtime.Config) { c.Arch, c.QKVBias = "qwen2", true }, []gguf.GGMLType{gguf.F16, gguf.Q6_K}},
		{"qwen3", func(c *runtime.Config) { c.Arch, c.QKNorm, c.HeadDim = "qwen3", true, 128 }, []gguf.GGMLType{gguf.Q8_0, gguf.Q5_K}},
	} {
		c := base
		variant.edit(&c)
		m := runtime.NewRandomModel(c, 42)
		if err := m.Check(); err != nil {
			t.Fatal(err)
		}
		orig := allLogits(t, m, tokens)
		for _, typ := range variant.types {
			t.Run(variant.name+"/"+typ.String(), func(t *testing.T) {
				path := filepath.Join(dir, variant.name+"-"+typ.String()+".gguf")
				writeGGUF(t, m, convPlan{typ: typ}, nil, path)
				g, err := runtime.Load(path)
				if err != nil {
					t.Fatal(err)
				}
				want := c
				if !reflect.DeepEqual(g.Config, want) {
					t.Fatalf("config\n%+v, want\n%+v", g.Config, want)
				}
				got := allLogits(t, g, tokens)
				ref := allLogits(t, roundedModel(t, m, convPlan{typ: typ}), tokens)
				if i := sameBits(got, ref); i >= 0 {
					t.Fatalf("logit %d: %v from the GGUF file, %v from the weights rounded in memory", i, got[i], ref[i])
				}
				rel, top1, kl := logitDiff(got, orig, c.Vocab)
				t.Logf("%s %s: logits within %.3g of the original weights' (relative), argmax agrees at %.0f%% of positions, mean KL %.3g nats", variant.name, typ, rel, 100*top1, kl)
				if tol := ggufTolerance[typ][0]; rel > tol {
					t.Errorf("logits differ from the original weights' by %.3g relative, tolerance %.3g", rel, tol)
				}
			})
		}
	}
}

// TestGGUFParityGutenberg converts the fixture model (bf16 safetensors,
// Llama-2 SentencePiece) as llama.cpp would, to every type, and loads it
// back through Load, with the tokenizer the file embeds.
func TestGGUFParityGutenberg(t *testing.T) {
	dir := fixtures.Path(t, "models/gutenberg-llama-25m")
	m, err := runtime.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := tokenizer.LoadSentencePiece(filepath.Join(dir, "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	text := gutenbergText(t, 4000)
	tokens := append([]int{sp.BOS()}, sp.Encode(text)...)[:48]
	orig := allLogits(t, m, tokens)
	types := ggufAllTypes
	if testing.Short() {
		types = []gguf.GGMLType{gguf.BF16, gguf.Q8_0, gguf.Q4_K}
	}
	out := t.TempDir()
	for _, typ := range types {
		t.Run(typ.String(), func(t *testing.T) {
			path := filepath.Join(out, "gutenberg-"+typ.String()+".gguf")
			plan := convPlan{typ: typ, mix: true}
			writeGGUF(t, m, plan, sp, path)
			g, err := runtime.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g.Config, m.Config) {
				t.Fatalf("config\n%+v, want\n%+v", g.Config, m.Config)
			}
			got := allLogits(t, g, tokens)
			if typ == gguf.BF16 {
				// The weights are the safetensors' own: the logits are too.
				if i := sameBits(got, orig); i >= 0 {
					t.Fatalf("logit %d: %v from the GGUF file, %v from the safetensors", i, got[i], orig[i])
				}
			} else {
				ref := allLogits(t, roundedModel(t, m, plan), tokens)
				if i := sameBits(got, ref); i >= 0 {
					t.Fatalf("logit %d: %v from the GGUF file, %v from the weights rounded in memory", i, got[i], ref[i])
				}
			}
			rel, top1, kl := logitDiff(got, orig, m.Config.Vocab)
			t.Logf("gutenberg %s: logits within %.3g of the safetensors' (relative), argmax agrees at %.0f%% of positions, mean KL %.3g nats", typ, rel, 100*top1, kl)
			if tol := ggufTolerance[typ][1]; rel > tol {
				t.Errorf("logits differ from the safetensors' by %.3g relative, tolerance %.3g", rel, tol)
			}
			if typ != gguf.BF16 {
				return
			}
			// The embedded tokenizer, through the path bench.OpenModel takes.
			if g.Tokenizer != path {
				t.Fatalf("tokenizer %q, want the GGUF file", g.Tokenizer)
			}
			tok, err := tokenizer.Load(g.Tokenizer)
			if err != nil {
				t.Fatal(err)
			}
			ids := tok.Encode(text)
			if want := sp.Encode(text); !reflect.DeepEqual(ids, want) {
				t.Fatalf("the embedded tokenizer gives %d ids, tokenizer.model %d; first difference at %d", len(ids), len(want), firstDiff(ids, want))
			}
			if tok.Decode(ids) != sp.Decode(ids) || tok.BOS() != sp.BOS() || tok.EOS() != sp.EOS() {
				t.Error("the embedded tokenizer decodes differently or has other special tokens")
			}
			if len(ids) < 500 {
				t.Fatalf("only %d ids from the text", len(ids))
			}
		})
	}
}

func firstDiff(a, b []int) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// gutenbergText returns about n bytes of a held-out novel, licence header
// skipped, or skips the test.
func gutenbergText(t *testing.T, n int) string {
	t.Helper()
	dir := fixtures.Path(t, "data/gutenberg")
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		t.Skipf("no texts in %s: %v", dir, err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".txt") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		s := string(data)
		if i := strings.Index(s, "*** START OF"); i >= 0 {
			s = s[i:]
			if j := strings.IndexByte(s, '\n'); j >= 0 {
				s = s[j+1:]
			}
		}
		if len(s) > n+20000 {
			return s[20000 : 20000+n]
		}
	}
	t.Skip(fmt.Sprintf("no text of %d bytes in %s", n, dir))
	return ""
}
