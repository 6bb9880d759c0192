package runtime

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hfTestConfig is the config.json of a tiny Llama: 2 layers, 4 query heads
// of 4 channels, 2 KV heads.
func hfTestConfig() map[string]any {
	return map[string]any{
		"architectures":           []string{"LlamaForCausalLM"},
		"model_type":              "llama",
		"hidden_size":             16,
		"intermediate_size":       24,
		"num_hidden_layers":       2,
		"num_attention_heads":     4,
		"num_key_value_heads":     2,
		"vocab_size":              32,
		"max_position_embeddings": 128,
		"rms_norm_eps":            1e-5,
		"rope_theta":              500000.0,
		"hidden_act":              "silu",
		"attention_bias":          false,
		"tie_word_embeddings":     true,
		"bos_token_id":            1,
		"eos_token_id":            2,
	}
}

// hfTestShape is what the tensors of a test checkpoint are built for.
type hfTestShape struct {
	dim, hidden, layers, qdim, kvdim, vocab int
	bias, head                              bool
	dtype                                   string // "F32" or "BF16"
}

var hfTiny = hfTestShape{dim: 16, hidden: 24, layers: 2, qdim: 16, kvdim: 8, vocab: 32, dtype: "F32"}

// hfTestTensors builds every tensor of a checkpoint, each element distinct
// (element k of the whole checkpoint is k/1024, exact in bf16 for small k
// only, which is all the tests compare).
func hfTestTensors(s hfTestShape) []stTestTensor {
	var out []stTestTensor
	k := 0
	add := func(name string, shape ...int) {
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(k%4096) / 1024
			k++
		}
		if s.dtype == "BF16" {
			u := make([]uint16, n)
			for i, x := range v {
				u[i] = F32ToBF16(x)
			}
			out = append(out, stU16(name, "BF16", u, shape...))
			return
		}
		out = append(out, stF32(name, v, shape...))
	}
	add("model.embed_tokens.weight", s.vocab, s.dim)
	for l := range s.layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		add(p+"input_layernorm.weight", s.dim)
		add(p+"self_attn.q_proj.weight", s.qdim, s.dim)
		add(p+"self_attn.k_proj.weight", s.kvdim, s.dim)
		add(p+"self_attn.v_proj.weight", s.kvdim, s.dim)
		add(p+"self_attn.o_proj.weight", s.dim, s.qdim)
		if s.bias {
			add(p+"self_attn.q_proj.bias", s.qdim)
			add(p+"self_attn.k_proj.bias", s.kvdim)
			add(p+"self_attn.v_proj.bias", s.kvdim)
		}
		add(p+"post_attention_layernorm.weight", s.dim)
		add(p+"mlp.gate_proj.weight", s.hidden, s.dim)
		add(p+"mlp.up_proj.weight", s.hidden, s.dim)
		add(p+"mlp.down_proj.weight", s.dim, s.hidden)
	}
	add("model.norm.weight", s.dim)
	if s.head {
		add("lm_head.weight", s.vocab, s.dim)
	}
	return out
}

// hfWriteDir writes config.json and model.safetensors into a new folder.
func hfWriteDir(t *testing.T, cfg map[string]any, ts []stTestTensor) string {
	t.Helper()
	dir := t.TempDir()
	hfWriteConfig(t, dir, cfg)
	stWrite(t, dir, "model.safetensors", stEncode(ts...))
	return dir
}

func hfWriteConfig(t *testing.T, dir string, cfg map[string]any) {
	t.Helper()
	b, err := json.MarshalIndent(cfg, "", "  ")
	require.NoError(t, err)
	stWrite(t, dir, "config.json", b)
}

// hfWithout returns ts less the named tensors.
func hfWithout(ts []stTestTensor, names ...string) []stTestTensor {
	var out []stTestTensor
next:
	for _, x := range ts {
		for _, n := range names {
			if x.name == n {
				continue next
			}
		}
		out = append(out, x)
	}
	return out
}

// hfTensorF32 decodes test tensor name of ts as float32 values.
func hfTensorF32(t *testing.T, ts []stTestTensor, name string) []float32 {
	t.Helper()
	for _, x := range ts {
		if x.name == name {
			tt, err := parseSafetensors("one", stEncode(x))
			require.NoError(t, err)
			v := make([]float32, tt[name].Len())
			tt[name].ToF32(v, 0)
			return v
		}
	}
	t.Fatalf("no test tensor %s", name)
	return nil
}

// hfF32 returns the values of a loaded tensor as float32.
func hfF32(tt *Tensor) []float32 {
	v := make([]float32, tt.Len())
	tt.ToF32(v, 0)
	return v
}

func TestHFGutenberg(t *testing.T) {
	dir := sharedFile(t, "models/gutenberg-llama-25m")
	m, err := LoadHF(dir)
	require.NoError(t, err)
	require.NoError(t, m.Check())
	c := m.Config
	assert.Equal(t, Config{
		Arch: "llama", Dim: 384, Hidden: 1024, Layers: 8, Heads: 6, KVHeads: 2, HeadDim: 64,
		Vocab: 32000, MaxSeq: 16384, RopeTheta: 100000, Rope: RopeHalf, NormEps: 1e-5,
		TiedEmbeddings: true, BOS: 1, EOS: 2,
	}, c)
	assert.Equal(t, dir, m.Source)
	assert.Same(t, m.Weights.Embed, m.Weights.Output)
	assert.Equal(t, BF16, m.Weights.Embed.DType)
	assert.Equal(t, BF16, m.Weights.Layers[7].Down.DType)
	assert.Equal(t, int64(24877440), m.ParamCount())
	assert.InDelta(t, 24.9e6, float64(m.ParamCount()), 0.05e6)

	viaLoad, err := Load(dir)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "tokenizer.model"), viaLoad.Tokenizer)
}

func TestHFTiny(t *testing.T) {
	for _, dtype := range []string{"F32", "BF16"} {
		t.Run(dtype, func(t *testing.T) {
			s := hfTiny
			s.dtype = dtype
			ts := hfTestTensors(s)
			dir := hfWriteDir(t, hfTestConfig(), ts)
			m, err := Load(dir)
			require.NoError(t, err)
			assert.Equal(t, Config{
				Arch: "llama", Dim: 16, Hidden: 24, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 4,
				Vocab: 32, MaxSeq: 128, RopeTheta: 500000, Rope: RopeHalf, NormEps: 1e-5,
				TiedEmbeddings: true, BOS: 1, EOS: 2,
			}, m.Config)
			assert.Equal(t, dir, m.Source)
			assert.Equal(t, "", m.Tokenizer)
			w := m.Weights
			assert.Same(t, w.Embed, w.Output)
			for name, got := range map[string]*Tensor{
				"model.embed_tokens.weight":                      w.Embed,
				"model.norm.weight":                              w.Norm,
				"model.layers.1.self_attn.k_proj.weight":         w.Layers[1].Wk,
				"model.layers.0.self_attn.o_proj.weight":         w.Layers[0].Wo,
				"model.layers.1.mlp.down_proj.weight":            w.Layers[1].Down,
				"model.layers.0.mlp.gate_proj.weight":            w.Layers[0].Gate,
				"model.layers.1.mlp.up_proj.weight":              w.Layers[1].Up,
				"model.layers.1.post_attention_layernorm.weight": w.Layers[1].MLPNorm,
			} {
				assert.Equal(t, name, got.Name)
				assert.Equal(t, dtype, got.DType.String(), name)
				assert.Equal(t, hfTensorF32(t, ts, name), hfF32(got), name)
			}
			assert.Nil(t, w.Layers[0].Bq)
		})
	}
}

func TestHFRope(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(c map[string]any)
		theta float64
		err   string
	}{
		{"top level", func(c map[string]any) {}, 500000, ""},
		{"rope_parameters", func(c map[string]any) {
			delete(c, "rope_theta")
			c["rope_parameters"] = map[string]any{"rope_theta": 100000.0, "rope_type": "default"}
		}, 100000, ""},
		{"both agree", func(c map[string]any) {
			c["rope_parameters"] = map[string]any{"rope_theta": 500000, "rope_type": "default"}
		}, 500000, ""},
		{"neither", func(c map[string]any) { delete(c, "rope_theta") }, 10000, ""},
		{"null scaling", func(c map[string]any) { c["rope_scaling"] = nil }, 500000, ""},
		{"default scaling", func(c map[string]any) { c["rope_scaling"] = map[string]any{"rope_type": "default"} }, 500000, ""},
		{"both disagree", func(c map[string]any) {
			c["rope_parameters"] = map[string]any{"rope_theta": 100000.0}
		}, 0, "rope_parameters.rope_theta"},
		{"llama3 parameters", func(c map[string]any) {
			c["rope_parameters"] = map[string]any{"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0,
				"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
		}, 500000, ""},
		{"linear scaling", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"type": "linear", "factor": 2.0}
		}, 500000, ""},
		{"unknown scaling", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"type": "ntk-by-parts", "factor": 2.0}
		}, 0, "field rope_scaling.rope_type: rope_type ntk-by-parts not supported"},
		{"untyped factor", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"factor": 2.0}
		}, 0, "field rope_scaling.factor: not supported with rope_type default"},
		{"theta string", func(c map[string]any) { c["rope_theta"] = "1e4" }, 0, "field rope_theta: want a number"},
		{"theta negative", func(c map[string]any) { c["rope_theta"] = -1 }, 0, "field rope_theta: must be positive"},
		{"parameters not an object", func(c map[string]any) { c["rope_parameters"] = 3 }, 0, "field rope_parameters: want an object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := hfTestConfig()
			c.edit(cfg)
			dir := hfWriteDir(t, cfg, hfTestTensors(hfTiny))
			m, err := LoadHF(dir)
			if c.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), filepath.Join(dir, "config.json"))
				assert.Contains(t, err.Error(), c.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.theta, m.Config.RopeTheta)
		})
	}
}

func TestHFTie(t *testing.T) {
	withHead := hfTiny
	withHead.head = true
	cases := []struct {
		name string
		tie  any // nil: unspecified
		head bool
		tied bool
		err  string
	}{
		{"unspecified with head", nil, true, false, ""},
		{"unspecified without head", nil, false, true, ""},
		{"false with head", false, true, false, ""},
		{"true with head", true, true, true, ""},
		{"false without head", false, false, false, "lm_head.weight missing from"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := hfTestConfig()
			delete(cfg, "tie_word_embeddings")
			if c.tie != nil {
				cfg["tie_word_embeddings"] = c.tie
			}
			s := hfTiny
			s.head = c.head
			ts := hfTestTensors(s)
			dir := hfWriteDir(t, cfg, ts)
			m, err := LoadHF(dir)
			if c.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), c.err)
				assert.Contains(t, err.Error(), filepath.Join(dir, "model.safetensors"))
				return
			}
			require.NoError(t, err)
			require.NoError(t, m.Check())
			assert.Equal(t, c.tied, m.Config.TiedEmbeddings)
			if c.tied {
				assert.Same(t, m.Weights.Embed, m.Weights.Output)
				return
			}
			assert.NotSame(t, m.Weights.Embed, m.Weights.Output)
			assert.Equal(t, "lm_head.weight", m.Weights.Output.Name)
			assert.Equal(t, hfTensorF32(t, ts, "lm_head.weight"), hfF32(m.Weights.Output))
			assert.Equal(t, int64(2*32*16), m.ParamCount()-hfTiedParams(m))
		})
	}
}

// hfTiedParams is the parameter count without the output head.
func hfTiedParams(m *Model) int64 {
	c := *m
	c.Weights.Output = c.Weights.Embed
	return c.ParamCount() - int64(m.Weights.Embed.Len())
}

func TestHFQwen2(t *testing.T) {
	cfg := hfTestConfig()
	cfg["model_type"] = "qwen2"
	cfg["architectures"] = []string{"Qwen2ForCausalLM"}
	delete(cfg, "attention_bias") // Qwen2 configs have no such flag
	cfg["use_sliding_window"] = false
	cfg["sliding_window"] = 64 // ignored while use_sliding_window is false
	cfg["max_window_layers"] = 2
	s := hfTiny
	s.bias = true
	ts := hfTestTensors(s)
	dir := hfWriteDir(t, cfg, ts)
	m, err := Load(dir)
	require.NoError(t, err)
	assert.Equal(t, "qwen2", m.Config.Arch)
	assert.True(t, m.Config.QKVBias)
	l := m.Weights.Layers[1]
	require.NotNil(t, l.Bq)
	assert.Equal(t, []int{16}, l.Bq.Shape)
	assert.Equal(t, []int{8}, l.Bk.Shape)
	assert.Equal(t, hfTensorF32(t, ts, "model.layers.1.self_attn.v_proj.bias"), l.Bv.F32)

	t.Run("missing bias", func(t *testing.T) {
		dir := hfWriteDir(t, cfg, hfWithout(ts, "model.layers.0.self_attn.k_proj.bias"))
		_, err := LoadHF(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "model.layers.0.self_attn.k_proj.bias missing from "+filepath.Join(dir, "model.safetensors"))
	})
	t.Run("sliding window on", func(t *testing.T) {
		c := hfTestConfig()
		c["model_type"] = "qwen2"
		c["use_sliding_window"] = true
		c["sliding_window"] = 64
		dir := hfWriteDir(t, c, ts)
		_, err := LoadHF(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "field sliding_window")
	})
	t.Run("biases in a llama", func(t *testing.T) {
		dir := hfWriteDir(t, hfTestConfig(), ts)
		_, err := LoadHF(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "does not account for: model.layers.0.self_attn.k_proj.bias")
	})
}

func TestHFMistralDefaults(t *testing.T) {
	cfg := map[string]any{
		"architectures":       []string{"MistralForCausalLM"},
		"hidden_size":         16,
		"intermediate_size":   24,
		"num_hidden_layers":   2,
		"num_attention_heads": 4,
		"vocab_size":          32,
		"sliding_window":      nil,
		"bos_token_id":        []int{3, 4},
		"eos_token_id":        nil,
	}
	s := hfTiny
	s.kvdim = 16 // num_key_value_heads defaults to the heads
	dir := hfWriteDir(t, cfg, hfTestTensors(s))
	stWrite(t, dir, "generation_config.json", []byte(`{"bos_token_id": 9, "eos_token_id": [5, 6]}`))
	m, err := Load(dir)
	require.NoError(t, err)
	assert.Equal(t, Config{
		Arch: "mistral", Dim: 16, Hidden: 24, Layers: 2, Heads: 4, KVHeads: 4, HeadDim: 4,
		Vocab: 32, MaxSeq: 131072, RopeTheta: 10000, Rope: RopeHalf, NormEps: 1e-6,
		TiedEmbeddings: true, BOS: 3, EOS: 5,
	}, m.Config)
}

func TestHFSharded(t *testing.T) {
	s := hfTiny
	s.head = true
	ts := hfTestTensors(s)
	dir := t.TempDir()
	cfg := hfTestConfig()
	cfg["tie_word_embeddings"] = false
	hfWriteConfig(t, dir, cfg)
	half := len(ts) / 2
	stWrite(t, dir, "model-00001-of-00002.safetensors", stEncode(ts[:half]...))
	stWrite(t, dir, "model-00002-of-00002.safetensors", stEncode(ts[half:]...))
	wm := map[string]string{}
	for i, x := range ts {
		wm[x.name] = "model-00001-of-00002.safetensors"
		if i >= half {
			wm[x.name] = "model-00002-of-00002.safetensors"
		}
	}
	writeIndex := func(wm map[string]string) {
		b, err := json.Marshal(map[string]any{"weight_map": wm})
		require.NoError(t, err)
		stWrite(t, dir, "model.safetensors.index.json", b)
	}
	writeIndex(wm)
	m, err := Load(dir)
	require.NoError(t, err)
	assert.False(t, m.Config.TiedEmbeddings)
	assert.Equal(t, hfTensorF32(t, ts, "lm_head.weight"), hfF32(m.Weights.Output))
	assert.Equal(t, hfTensorF32(t, ts, "model.embed_tokens.weight"), hfF32(m.Weights.Embed))

	delete(wm, "model.layers.1.mlp.up_proj.weight")
	writeIndex(wm)
	_, err = LoadHF(dir)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "model.layers.1.mlp.up_proj.weight missing from "+filepath.Join(dir, "model.safetensors.index.json"))
}

func TestHFWeightErrors(t *testing.T) {
	ts := hfTestTensors(hfTiny)
	t.Run("missing tensor", func(t *testing.T) {
		dir := hfWriteDir(t, hfTestConfig(), hfWithout(ts, "model.layers.1.self_attn.q_proj.weight"))
		_, err := LoadHF(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "tensor model.layers.1.self_attn.q_proj.weight missing from "+filepath.Join(dir, "model.safetensors"))
	})
	t.Run("wrong shape", func(t *testing.T) {
		bad := append(hfWithout(ts, "model.norm.weight"), stF32("model.norm.weight", make([]float32, 8), 8))
		dir := hfWriteDir(t, hfTestConfig(), bad)
		_, err := LoadHF(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "tensor model.norm.weight in "+filepath.Join(dir, "model.safetensors")+" has shape [8], config.json implies [16]")
	})
	t.Run("config with fewer layers", func(t *testing.T) {
		cfg := hfTestConfig()
		cfg["num_hidden_layers"] = 1
		dir := hfWriteDir(t, cfg, ts)
		_, err := LoadHF(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "does not account for: model.layers.1.")
		assert.Contains(t, err.Error(), "and 4 more")
	})
	t.Run("inv_freq buffers are ignored", func(t *testing.T) {
		extra := append(ts, stF32("model.layers.0.self_attn.rotary_emb.inv_freq", make([]float32, 2), 2))
		dir := hfWriteDir(t, hfTestConfig(), extra)
		_, err := Load(dir)
		require.NoError(t, err)
	})
	t.Run("no weights", func(t *testing.T) {
		dir := t.TempDir()
		hfWriteConfig(t, dir, hfTestConfig())
		_, err := LoadHF(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), dir)
		assert.Contains(t, err.Error(), "neither model.safetensors nor model.safetensors.index.json")
	})
	t.Run("no config", func(t *testing.T) {
		dir := t.TempDir()
		_, err := LoadHF(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), filepath.Join(dir, "config.json"))
	})
	t.Run("corrupt weights", func(t *testing.T) {
		dir := t.TempDir()
		hfWriteConfig(t, dir, hfTestConfig())
		stWrite(t, dir, "model.safetensors", []byte("\x10\x00\x00\x00\x00\x00\x00\x00{not json}      "))
		_, err := LoadHF(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), filepath.Join(dir, "model.safetensors"))
	})
	t.Run("bad generation config", func(t *testing.T) {
		cfg := hfTestConfig()
		delete(cfg, "bos_token_id")
		dir := hfWriteDir(t, cfg, ts)
		stWrite(t, dir, "generation_config.json", []byte(`{"bos_token_id": "one"}`))
		_, err := LoadHF(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), filepath.Join(dir, "generation_config.json")+": field bos_token_id")
	})
}

// hfConfigCase is a config.json edit and a fragment its error must contain
// (besides the file's name).
type hfConfigCase struct {
	name string
	edit func(c map[string]any)
	want string
}

func hfConfigErrorCases() []hfConfigCase {
	set := func(k string, v any) func(map[string]any) { return func(c map[string]any) { c[k] = v } }
	del := func(k string) func(map[string]any) { return func(c map[string]any) { delete(c, k) } }
	return []hfConfigCase{
		{"missing hidden_size", del("hidden_size"), "field hidden_size: missing"},
		{"hidden_size string", set("hidden_size", "16"), "field hidden_size: want an integer"},
		{"hidden_size fraction", set("hidden_size", 16.5), "field hidden_size: want an integer"},
		{"hidden_size exponent", set("hidden_size", json.Number("1.6e1")), "field hidden_size: want an integer"},
		{"hidden_size huge", set("hidden_size", 1e12), "field hidden_size: 1000000000000 is out of range"},
		{"hidden_size int overflow", set("hidden_size", int64(1)<<40), "field hidden_size: 1099511627776 is out of range"},
		{"negative layers", set("num_hidden_layers", -1), "field num_hidden_layers: must be positive"},
		{"zero vocab", set("vocab_size", 0), "field vocab_size: must be positive"},
		{"kv heads do not divide", set("num_key_value_heads", 3), "field num_key_value_heads"},
		{"zero kv heads", set("num_key_value_heads", 0), "field num_key_value_heads"},
		{"odd head_dim", set("head_dim", 5), "field head_dim: must be positive and even"},
		{"heads do not divide hidden", func(c map[string]any) {
			c["num_attention_heads"], c["num_key_value_heads"] = 5, 5
		}, "field head_dim: absent"},
		{"zero eps", set("rms_norm_eps", 0), "field rms_norm_eps"},
		{"unknown model_type", set("model_type", "gpt2"), `field model_type: "gpt2" not supported`},
		{"model_type number", set("model_type", 3), "field model_type: want a string"},
		{"unknown architecture", func(c map[string]any) {
			delete(c, "model_type")
			c["architectures"] = []string{"GPT2LMHeadModel"}
		}, `field architectures: "GPT2LMHeadModel" not supported`},
		{"no type at all", func(c map[string]any) {
			delete(c, "model_type")
			delete(c, "architectures")
		}, "neither model_type nor architectures"},
		{"attention_bias", set("attention_bias", true), "field attention_bias: true not supported yet"},
		{"mlp_bias", set("mlp_bias", true), "field mlp_bias: true not supported yet"},
		{"gelu", set("hidden_act", "gelu"), `field hidden_act: "gelu" not supported`},
		{"quantized", set("quantization_config", map[string]any{"quant_method": "gptq"}), "field quantization_config: quantized checkpoints not supported"},
		{"sliding window", set("sliding_window", 64), "field sliding_window: window 64 shorter"},
		{"tie string", set("tie_word_embeddings", "yes"), "field tie_word_embeddings: want true or false"},
		{"bos outside vocab", set("bos_token_id", 32), "field bos_token_id: 32 is outside the vocabulary"},
		{"eos negative", set("eos_token_id", []int{-1}), "field eos_token_id: negative token id"},
		{"eos object", set("eos_token_id", map[string]int{"a": 1}), "field eos_token_id: want an integer"},
		{"max_position zero", set("max_position_embeddings", 0), "field max_position_embeddings: must be positive"},
		{"llama3 scaling", set("rope_scaling", map[string]any{"rope_type": "llama3", "factor": 8.0}), "field rope_scaling.low_freq_factor: missing (rope_type llama3 needs it)"},
		{"qwen3 sliding window", func(c map[string]any) {
			c["model_type"] = "qwen3"
			c["use_sliding_window"] = true
			c["sliding_window"] = 32
		}, "field sliding_window: window 32 shorter than max_position_embeddings 128 not supported for qwen3"},
		{"mistral zero window", func(c map[string]any) {
			c["model_type"] = "mistral"
			c["sliding_window"] = 0
		}, "field sliding_window: must be positive or null"},
	}
}

func TestHFConfigErrors(t *testing.T) {
	for _, c := range hfConfigErrorCases() {
		t.Run(c.name, func(t *testing.T) {
			cfg := hfTestConfig()
			c.edit(cfg)
			dir := hfWriteDir(t, cfg, hfTestTensors(hfTiny))
			_, err := LoadHF(dir)
			require.Error(t, err)
			assert.Contains(t, err.Error(), filepath.Join(dir, "config.json"))
			assert.Contains(t, err.Error(), c.want)
		})
	}
	for name, text := range map[string]string{
		"bad json":      `{"hidden_size": 16,`,
		"not an object": `[1]`,
		"empty":         ``,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			stWrite(t, dir, "config.json", []byte(text))
			_, err := LoadHF(dir)
			require.Error(t, err)
			assert.Contains(t, err.Error(), filepath.Join(dir, "config.json")+": not a JSON object")
		})
	}
}

func TestHFConfigTokens(t *testing.T) {
	for _, c := range []struct {
		bos, eos any
		wb, we   int
	}{
		{1, 2, 1, 2},
		{[]int{7, 8}, []int{2, 3}, 7, 2},
		{nil, []int{}, -1, -1},
	} {
		cfg := hfTestConfig()
		cfg["bos_token_id"], cfg["eos_token_id"] = c.bos, c.eos
		b, err := json.Marshal(cfg)
		require.NoError(t, err)
		hc, err := parseHFConfig("config.json", b)
		require.NoError(t, err)
		assert.Equal(t, c.wb, hc.BOS, "bos %v", c.bos)
		assert.Equal(t, c.we, hc.EOS, "eos %v", c.eos)
	}
}

func FuzzHFConfig(f *testing.F) {
	valid, err := json.Marshal(hfTestConfig())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	if dir, err := findSharedDir(); err == nil { // a real transformers 5 config, when at hand
		if gut, err := os.ReadFile(filepath.Join(dir, "models/gutenberg-llama-25m/config.json")); err == nil {
			f.Add(gut)
		}
	}
	f.Add([]byte(`{"model_type": "qwen2", "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1,
		"num_attention_heads": 2, "vocab_size": 4, "rope_parameters": {"rope_theta": 1e6, "rope_type": "default"},
		"eos_token_id": [3, 1], "bos_token_id": null}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"hidden_size": -9223372036854775808}`))
	for _, c := range hfConfigErrorCases() {
		cfg := hfTestConfig()
		c.edit(cfg)
		if b, err := json.Marshal(cfg); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		hc, err := parseHFConfig("fuzz/config.json", data)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz/config.json") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if err := hc.Validate(); err != nil {
			t.Fatalf("accepted a config that does not validate: %v", err)
		}
		if hc.BOS >= hc.Vocab || hc.EOS >= hc.Vocab || hc.BOS < -1 || hc.EOS < -1 {
			t.Fatalf("special tokens %d, %d outside vocab %d", hc.BOS, hc.EOS, hc.Vocab)
		}
	})
}
