package runtime

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// hfArchs maps the architectures entry of a Hugging Face config.json to the
// model_type this loader supports.
var hfArchs = map[string]string{
	"LlamaForCausalLM":   "llama",
	"MistralForCausalLM": "mistral",
	"Qwen2ForCausalLM":   "qwen2",
}

// hfDefaultMaxSeq is max_position_embeddings when config.json leaves it out
// (the transformers defaults of each model type).
var hfDefaultMaxSeq = map[string]int{"llama": 2048, "mistral": 4096 * 32, "qwen2": 32768}

// hfConfig is a parsed config.json: the Config, and whether the output head
// is tied when the file says so (nil when it does not).
type hfConfig struct {
	Config
	tie *bool
}

// LoadHF loads a model in Hugging Face layout from dir: config.json and
// either model.safetensors or a sharded model.safetensors.index.json. It
// supports the llama, mistral and qwen2 model types; weights stay in the type
// they are stored in. Configurations it cannot run faithfully (RoPE scaling,
// sliding windows, biases other than Qwen2's) are errors, not ignored.
func LoadHF(dir string) (*Model, error) {
	cfgPath := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("hf model %s: %w", dir, err)
	}
	hc, err := parseHFConfig(cfgPath, data)
	if err != nil {
		return nil, err
	}
	if hc.BOS < 0 || hc.EOS < 0 {
		// Some checkpoints keep the special tokens only here.
		genPath := filepath.Join(dir, "generation_config.json")
		if gen, err := os.ReadFile(genPath); err == nil {
			if err := hfGenerationTokens(genPath, gen, &hc.Config); err != nil {
				return nil, err
			}
		}
	}
	tensors, files, where, err := readHFTensors(dir)
	if err != nil {
		return nil, err
	}
	m, err := hfModel(hc, tensors, files, where)
	if err != nil {
		return nil, fmt.Errorf("hf model %s: %w", dir, err)
	}
	m.Source = dir
	return m, nil
}

// readHFTensors reads the safetensors of dir, sharded or not. files maps each
// tensor to its file; where is the file a missing tensor should have been in.
func readHFTensors(dir string) (tensors map[string]*Tensor, files map[string]string, where string, err error) {
	index := filepath.Join(dir, "model.safetensors.index.json")
	if _, err := os.Stat(index); err == nil {
		tensors, files, err = readSafetensorsIndex(index)
		return tensors, files, index, err
	}
	single := filepath.Join(dir, "model.safetensors")
	if _, err := os.Stat(single); err != nil {
		return nil, nil, "", fmt.Errorf("hf model %s: neither model.safetensors nor model.safetensors.index.json found", dir)
	}
	tensors, err = ReadSafetensors(single)
	if err != nil {
		return nil, nil, "", err
	}
	files = make(map[string]string, len(tensors))
	for name := range tensors {
		files[name] = single
	}
	return tensors, files, single, nil
}

// hfModel assembles the weights named by the transformers Llama layout,
// checking each tensor's shape and that no tensor is left unexplained.
func hfModel(hc hfConfig, tensors map[string]*Tensor, files map[string]string, where string) (*Model, error) {
	c := hc.Config
	var firstErr error
	take := func(name string, shape ...int) *Tensor {
		t, ok := tensors[name]
		if !ok {
			if firstErr == nil {
				firstErr = fmt.Errorf("tensor %s missing from %s", name, where)
			}
			return nil
		}
		delete(tensors, name)
		if err := t.CheckShape(shape...); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("tensor %s in %s has shape %v, config.json implies %v", name, files[name], t.Shape, shape)
		}
		return t
	}
	w := Weights{Layers: make([]LayerWeights, c.Layers)}
	w.Embed = take("model.embed_tokens.weight", c.Vocab, c.Dim)
	for i := range w.Layers {
		p := "model.layers." + strconv.Itoa(i) + "."
		l := &w.Layers[i]
		l.AttnNorm = take(p+"input_layernorm.weight", c.Dim)
		l.Wq = take(p+"self_attn.q_proj.weight", c.QDim(), c.Dim)
		l.Wk = take(p+"self_attn.k_proj.weight", c.KVDim(), c.Dim)
		l.Wv = take(p+"self_attn.v_proj.weight", c.KVDim(), c.Dim)
		l.Wo = take(p+"self_attn.o_proj.weight", c.Dim, c.QDim())
		if c.QKVBias {
			l.Bq = take(p+"self_attn.q_proj.bias", c.QDim())
			l.Bk = take(p+"self_attn.k_proj.bias", c.KVDim())
			l.Bv = take(p+"self_attn.v_proj.bias", c.KVDim())
		}
		l.MLPNorm = take(p+"post_attention_layernorm.weight", c.Dim)
		l.Gate = take(p+"mlp.gate_proj.weight", c.Hidden, c.Dim)
		l.Up = take(p+"mlp.up_proj.weight", c.Hidden, c.Dim)
		l.Down = take(p+"mlp.down_proj.weight", c.Dim, c.Hidden)
	}
	w.Norm = take("model.norm.weight", c.Dim)
	tie := tensors["lm_head.weight"] == nil
	if hc.tie != nil {
		tie = *hc.tie
	}
	c.TiedEmbeddings = tie
	if tie {
		// transformers ignores a stored head when the embeddings are tied.
		delete(tensors, "lm_head.weight")
		w.Output = w.Embed
	} else {
		w.Output = take("lm_head.weight", c.Vocab, c.Dim)
	}
	if firstErr != nil {
		return nil, firstErr
	}
	var extra []string
	for name := range tensors {
		if !strings.HasSuffix(name, ".rotary_emb.inv_freq") { // a buffer older exports saved
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		more := ""
		if len(extra) > 5 {
			more = fmt.Sprintf(" and %d more", len(extra)-5)
			extra = extra[:5]
		}
		return nil, fmt.Errorf("%s holds tensors config.json does not account for: %s%s", files[extra[0]], strings.Join(extra, ", "), more)
	}
	return &Model{Config: c, Weights: w}, nil
}

// hfFields is a config.json object by key, with helpers that name the file
// and the field in their errors. A null value counts as absent.
type hfFields struct {
	name   string // the file
	prefix string // "" at the top level, "KEY." inside object KEY
	m      map[string]json.RawMessage
}

func (f hfFields) errorf(key, format string, args ...any) error {
	return fmt.Errorf("%s: field %s%s: %s", f.name, f.prefix, key, fmt.Sprintf(format, args...))
}

// raw returns the value of key, or nil when it is absent or null.
func (f hfFields) raw(key string) json.RawMessage {
	r := f.m[key]
	if len(r) == 0 || string(r) == "null" {
		return nil
	}
	return r
}

// int reads an integer field; ok is false when it is absent.
func (f hfFields) int(key string) (v int, ok bool, err error) {
	r := f.raw(key)
	if r == nil {
		return 0, false, nil
	}
	v, err = hfInt(r)
	if err != nil {
		return 0, false, f.errorf(key, "%v", err)
	}
	return v, true, nil
}

// intOr reads an integer field with a default.
func (f hfFields) intOr(key string, def int) (int, error) {
	v, ok, err := f.int(key)
	if !ok {
		return def, err
	}
	return v, nil
}

// required reads an integer field that must be present.
func (f hfFields) required(key string) (int, error) {
	v, ok, err := f.int(key)
	if err == nil && !ok {
		err = f.errorf(key, "missing")
	}
	return v, err
}

// float reads a number field; ok is false when it is absent.
func (f hfFields) float(key string) (v float64, ok bool, err error) {
	r := f.raw(key)
	if r == nil {
		return 0, false, nil
	}
	if err := json.Unmarshal(r, &v); err != nil {
		return 0, false, f.errorf(key, "want a number, got %s", hfShort(r))
	}
	return v, true, nil
}

// bool reads a boolean field; ok is false when it is absent.
func (f hfFields) bool(key string) (v bool, ok bool, err error) {
	r := f.raw(key)
	if r == nil {
		return false, false, nil
	}
	if err := json.Unmarshal(r, &v); err != nil {
		return false, false, f.errorf(key, "want true or false, got %s", hfShort(r))
	}
	return v, true, nil
}

// string reads a string field; "" when it is absent.
func (f hfFields) string(key string) (string, error) {
	r := f.raw(key)
	if r == nil {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(r, &s); err != nil {
		return "", f.errorf(key, "want a string, got %s", hfShort(r))
	}
	return s, nil
}

// object reads a nested object field; nil fields when it is absent.
func (f hfFields) object(key string) (*hfFields, error) {
	r := f.raw(key)
	if r == nil {
		return nil, nil
	}
	sub := hfFields{name: f.name, prefix: f.prefix + key + "."}
	if err := json.Unmarshal(r, &sub.m); err != nil {
		return nil, f.errorf(key, "want an object, got %s", hfShort(r))
	}
	return &sub, nil
}

// token reads a special-token id: an integer, a list of them (the first
// counts) or null; -1 when there is none.
func (f hfFields) token(key string) (int, error) {
	r := f.raw(key)
	if r == nil {
		return -1, nil
	}
	if bytes.HasPrefix(bytes.TrimSpace(r), []byte("[")) {
		var list []json.RawMessage
		if err := json.Unmarshal(r, &list); err != nil {
			return 0, f.errorf(key, "want an integer or a list of them, got %s", hfShort(r))
		}
		if len(list) == 0 {
			return -1, nil
		}
		r = list[0]
	}
	v, err := hfInt(r)
	if err != nil {
		return 0, f.errorf(key, "%v", err)
	}
	if v < 0 {
		return 0, f.errorf(key, "negative token id %d", v)
	}
	return v, nil
}

// hfInt decodes an integer JSON value.
func hfInt(r json.RawMessage) (int, error) {
	var n json.Number
	if r = bytes.TrimSpace(r); len(r) == 0 || r[0] == '"' { // json.Number would take "16"
		return 0, fmt.Errorf("want an integer, got %s", hfShort(r))
	}
	if err := json.Unmarshal(r, &n); err != nil {
		return 0, fmt.Errorf("want an integer, got %s", hfShort(r))
	}
	v, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("want an integer, got %s", hfShort(r))
	}
	if v > math.MaxInt32 || v < math.MinInt32 {
		return 0, fmt.Errorf("%d is out of range", v)
	}
	return int(v), nil
}

// hfShort quotes a JSON value for an error message, shortened.
func hfShort(r json.RawMessage) string {
	s := string(bytes.TrimSpace(r))
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return s
}

// parseHFConfig parses the config.json data of a Hugging Face model; name
// (the file's path) is in every error, with the field at fault.
func parseHFConfig(name string, data []byte) (hfConfig, error) {
	var hc hfConfig
	f := hfFields{name: name}
	if err := json.Unmarshal(data, &f.m); err != nil {
		return hc, fmt.Errorf("%s: not a JSON object: %w", name, err)
	}
	c := &hc.Config
	mt, err := f.string("model_type")
	if err != nil {
		return hc, err
	}
	if mt == "" {
		var archs []string
		if r := f.raw("architectures"); r != nil {
			if err := json.Unmarshal(r, &archs); err != nil {
				return hc, f.errorf("architectures", "want a list of strings, got %s", hfShort(r))
			}
		}
		if len(archs) == 0 {
			return hc, fmt.Errorf("%s: neither model_type nor architectures says what the model is", name)
		}
		if mt = hfArchs[archs[0]]; mt == "" {
			return hc, f.errorf("architectures", "%q not supported (want LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM)", archs[0])
		}
	}
	if _, ok := hfDefaultMaxSeq[mt]; !ok {
		return hc, f.errorf("model_type", "%q not supported (want llama, mistral or qwen2)", mt)
	}
	c.Arch = mt
	c.Rope = RopeHalf
	c.QKVBias = mt == "qwen2" // Qwen2 has q/k/v biases and no flag for them

	for _, p := range []struct {
		key string
		dst *int
	}{
		{"hidden_size", &c.Dim},
		{"intermediate_size", &c.Hidden},
		{"num_hidden_layers", &c.Layers},
		{"num_attention_heads", &c.Heads},
		{"vocab_size", &c.Vocab},
	} {
		if *p.dst, err = f.required(p.key); err != nil {
			return hc, err
		}
		if *p.dst <= 0 {
			return hc, f.errorf(p.key, "must be positive, got %d", *p.dst)
		}
	}
	if c.KVHeads, err = f.intOr("num_key_value_heads", c.Heads); err != nil {
		return hc, err
	}
	if c.KVHeads <= 0 || c.Heads%c.KVHeads != 0 {
		return hc, f.errorf("num_key_value_heads", "%d must be positive and divide num_attention_heads %d", c.KVHeads, c.Heads)
	}
	hd, ok, err := f.int("head_dim")
	if err != nil {
		return hc, err
	}
	if !ok {
		if c.Dim%c.Heads != 0 {
			return hc, f.errorf("head_dim", "absent, and hidden_size %d is not a multiple of num_attention_heads %d", c.Dim, c.Heads)
		}
		hd = c.Dim / c.Heads
	}
	if hd <= 0 || hd%2 != 0 {
		return hc, f.errorf("head_dim", "must be positive and even, got %d", hd)
	}
	c.HeadDim = hd
	if c.MaxSeq, err = f.intOr("max_position_embeddings", hfDefaultMaxSeq[mt]); err != nil {
		return hc, err
	}
	if c.MaxSeq <= 0 {
		return hc, f.errorf("max_position_embeddings", "must be positive, got %d", c.MaxSeq)
	}
	eps, ok, err := f.float("rms_norm_eps")
	if err != nil {
		return hc, err
	}
	if !ok {
		eps = 1e-6 // the transformers default for all three types
	}
	if !(eps > 0 && eps <= 1) {
		return hc, f.errorf("rms_norm_eps", "must be in (0, 1], got %v", eps)
	}
	c.NormEps = float32(eps)
	if c.RopeTheta, err = hfRope(f); err != nil {
		return hc, err
	}
	if err := hfUnsupported(f, mt, c.MaxSeq); err != nil {
		return hc, err
	}
	if tie, ok, err := f.bool("tie_word_embeddings"); err != nil {
		return hc, err
	} else if ok {
		hc.tie = &tie
		c.TiedEmbeddings = tie
	}
	if c.BOS, err = f.token("bos_token_id"); err != nil {
		return hc, err
	}
	if c.EOS, err = f.token("eos_token_id"); err != nil {
		return hc, err
	}
	if err := c.Validate(); err != nil {
		return hc, fmt.Errorf("%s: %w", name, err)
	}
	if err := hfCheckTokens(f, c); err != nil {
		return hc, err
	}
	return hc, nil
}

// hfCheckTokens checks that known special tokens are inside the vocabulary.
func hfCheckTokens(f hfFields, c *Config) error {
	if c.BOS >= c.Vocab {
		return f.errorf("bos_token_id", "%d is outside the vocabulary of %d", c.BOS, c.Vocab)
	}
	if c.EOS >= c.Vocab {
		return f.errorf("eos_token_id", "%d is outside the vocabulary of %d", c.EOS, c.Vocab)
	}
	return nil
}

// hfRope reads the RoPE base: rope_theta at the top level (transformers 4) or
// in rope_parameters (transformers 5), 10000 when neither has it. Any RoPE
// scaling is an error: the forward pass implements plain RoPE only.
func hfRope(f hfFields) (float64, error) {
	theta, topOK, err := f.float("rope_theta")
	if err != nil {
		return 0, err
	}
	for _, key := range []string{"rope_scaling", "rope_parameters"} {
		sub, err := f.object(key)
		if err != nil {
			return 0, err
		}
		if sub == nil {
			continue
		}
		typ, err := sub.string("rope_type")
		if err != nil {
			return 0, err
		}
		if typ == "" {
			if typ, err = sub.string("type"); err != nil { // the older spelling
				return 0, err
			}
		}
		if typ != "" && typ != "default" {
			return 0, sub.errorf("rope_type", "rope_type %s not supported yet", typ)
		}
		keys := make([]string, 0, len(sub.m))
		for k := range sub.m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if k != "rope_type" && k != "type" && k != "rope_theta" && sub.raw(k) != nil {
				return 0, sub.errorf(k, "not supported yet")
			}
		}
		t, ok, err := sub.float("rope_theta")
		if err != nil {
			return 0, err
		}
		if ok {
			if topOK && t != theta {
				return 0, sub.errorf("rope_theta", "%v disagrees with rope_theta %v", t, theta)
			}
			theta, topOK = t, true
		}
	}
	if !topOK {
		theta = 10000
	}
	if !(theta > 0) || math.IsInf(theta, 0) {
		return 0, f.errorf("rope_theta", "must be positive, got %v", theta)
	}
	return theta, nil
}

// hfUnsupported rejects settings that change the computation in ways the
// forward pass does not implement.
func hfUnsupported(f hfFields, mt string, maxSeq int) error {
	if f.raw("quantization_config") != nil {
		return f.errorf("quantization_config", "quantized checkpoints not supported (want bf16, f16 or f32 weights)")
	}
	if act, err := f.string("hidden_act"); err != nil {
		return err
	} else if act != "" && act != "silu" {
		return f.errorf("hidden_act", "%q not supported (want silu)", act)
	}
	for _, key := range []string{"attention_bias", "mlp_bias"} {
		if mt == "qwen2" && key == "attention_bias" {
			continue // Qwen2's biases are fixed by the architecture
		}
		if b, _, err := f.bool(key); err != nil {
			return err
		} else if b {
			return f.errorf(key, "true not supported yet (biases only on q/k/v projections, as Qwen2 has)")
		}
	}
	if mt == "qwen2" {
		use, _, err := f.bool("use_sliding_window")
		if err != nil || !use {
			return err
		}
	}
	if w, ok, err := f.int("sliding_window"); err != nil {
		return err
	} else if ok && w < maxSeq {
		return f.errorf("sliding_window", "window %d shorter than max_position_embeddings %d not supported yet", w, maxSeq)
	}
	return nil
}

// hfGenerationTokens fills the BOS and EOS that config.json left unknown
// from generation_config.json.
func hfGenerationTokens(name string, data []byte, c *Config) error {
	f := hfFields{name: name}
	if err := json.Unmarshal(data, &f.m); err != nil {
		return fmt.Errorf("%s: not a JSON object: %w", name, err)
	}
	var err error
	if c.BOS < 0 {
		if c.BOS, err = f.token("bos_token_id"); err != nil {
			return err
		}
	}
	if c.EOS < 0 {
		if c.EOS, err = f.token("eos_token_id"); err != nil {
			return err
		}
	}
	return hfCheckTokens(f, c)
}
