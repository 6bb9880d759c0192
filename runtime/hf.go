package runtime

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
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
	"Qwen3ForCausalLM":   "qwen3",
	"Phi3ForCausalLM":    "phi3",
}

// hfDefaultMaxSeq is max_position_embeddings when config.json leaves it out
// (the transformers defaults of each model type).
var hfDefaultMaxSeq = map[string]int{"llama": 2048, "mistral": 4096 * 32, "qwen2": 32768, "qwen3": 32768, "phi3": 4096}

// hfTypes lists the supported model types for error messages.
const hfTypes = "llama, mistral, qwen2, qwen3 or phi3"

// hfConfig is a parsed config.json: the Config, and whether the output head
// is tied when the file says so (nil when it does not).
type hfConfig struct {
	Config
	tie *bool
}

// LoadHF loads a model in Hugging Face layout from dir: config.json and
// either model.safetensors or a sharded model.safetensors.index.json. It
// supports the llama, mistral, qwen2, qwen3 and phi3 model types (Phi-3's
// fused projections are split at load); weights stay in the type they are
// stored in. RoPE scaling (linear, dynamic, llama3, yarn, longrope) and the
// sliding windows of Mistral and Phi-3 are read; configurations it cannot
// run faithfully (Qwen's per-layer windows, biases other than Qwen2's,
// partial rotary embeddings) are errors naming the field, not ignored.
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
		if c.Arch == "phi3" {
			// Phi-3 fuses q, k, v into one projection and gate, up into
			// another: rows [q | k | v] and [gate | up].
			qkv := take(p+"self_attn.qkv_proj.weight", c.QDim()+2*c.KVDim(), c.Dim)
			gateUp := take(p+"mlp.gate_up_proj.weight", 2*c.Hidden, c.Dim)
			if firstErr == nil {
				split := func(t *Tensor, part string, from, to int) *Tensor {
					s, err := rowSlice(t, part, from, to)
					if err != nil && firstErr == nil {
						firstErr = fmt.Errorf("%s: %w", files[t.Name], err)
					}
					return s
				}
				q, kv := c.QDim(), c.KVDim()
				l.Wq, l.Wk, l.Wv = split(qkv, "q", 0, q), split(qkv, "k", q, q+kv), split(qkv, "v", q+kv, q+2*kv)
				l.Gate, l.Up = split(gateUp, "gate", 0, c.Hidden), split(gateUp, "up", c.Hidden, 2*c.Hidden)
			}
		} else {
			l.Wq = take(p+"self_attn.q_proj.weight", c.QDim(), c.Dim)
			l.Wk = take(p+"self_attn.k_proj.weight", c.KVDim(), c.Dim)
			l.Wv = take(p+"self_attn.v_proj.weight", c.KVDim(), c.Dim)
			l.Gate = take(p+"mlp.gate_proj.weight", c.Hidden, c.Dim)
			l.Up = take(p+"mlp.up_proj.weight", c.Hidden, c.Dim)
		}
		l.Wo = take(p+"self_attn.o_proj.weight", c.Dim, c.QDim())
		if c.QKVBias {
			l.Bq = take(p+"self_attn.q_proj.bias", c.QDim())
			l.Bk = take(p+"self_attn.k_proj.bias", c.KVDim())
			l.Bv = take(p+"self_attn.v_proj.bias", c.KVDim())
		}
		if c.QKNorm {
			l.QNorm = take(p+"self_attn.q_norm.weight", c.HeadDim)
			l.KNorm = take(p+"self_attn.k_norm.weight", c.HeadDim)
		}
		l.MLPNorm = take(p+"post_attention_layernorm.weight", c.Dim)
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
			return hc, f.errorf("architectures", "%q not supported (want LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM or Phi3ForCausalLM)", archs[0])
		}
	}
	if _, ok := hfDefaultMaxSeq[mt]; !ok {
		return hc, f.errorf("model_type", "%q not supported (want %s)", mt, hfTypes)
	}
	c.Arch = mt
	c.Rope = RopeHalf
	c.QKVBias = mt == "qwen2" // Qwen2 has q/k/v biases and no flag for them
	c.QKNorm = mt == "qwen3"  // Qwen3 normalises each head's query and key

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
		eps = 1e-6 // the transformers default of every type but phi3
		if mt == "phi3" {
			eps = 1e-5
		}
	}
	if !(eps > 0 && eps <= 1) {
		return hc, f.errorf("rms_norm_eps", "must be in (0, 1], got %v", eps)
	}
	c.NormEps = float32(eps)
	if err := hfRope(f, c); err != nil {
		return hc, err
	}
	if err := hfUnsupported(f, mt, c.MaxSeq); err != nil {
		return hc, err
	}
	if c.SlidingWindow, err = hfWindow(f, mt, c.MaxSeq); err != nil {
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

// hfRopeUses lists, for each RoPE type, the keys of rope_scaling or
// rope_parameters it reads besides rope_type, type, rope_theta and
// partial_rotary_factor (the transformers 5 key set of each type).
var hfRopeUses = map[string][]string{
	"default":    nil,
	RopeLinear:   {"factor"},
	RopeDynamic:  {"factor", "original_max_position_embeddings"},
	RopeLlama3:   {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"},
	RopeYarn:     {"factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"},
	RopeLongrope: {"short_factor", "long_factor", "factor", "original_max_position_embeddings", "attention_factor"},
}

// hfRope reads RoPE: the base, rope_theta, at the top level (transformers 4)
// or in rope_parameters (transformers 5), 10000 when neither has it; and the
// scaling of rope_scaling or rope_parameters (both may be present; a key in
// both must agree), with transformers' defaults. A key the RoPE type does
// not use, or a type it does not know, is an error naming the field.
func hfRope(f hfFields, c *Config) error {
	theta, topOK, err := f.float("rope_theta")
	if err != nil {
		return err
	}
	if err := hfFullRotary(f); err != nil {
		return err
	}
	owner := map[string]*hfFields{} // each key, and the object it is read from
	typ, typOwner := "", (*hfFields)(nil)
	for _, key := range []string{"rope_scaling", "rope_parameters"} {
		sub, err := f.object(key)
		if err != nil {
			return err
		}
		if sub == nil {
			continue
		}
		t, err := sub.string("rope_type")
		if err != nil {
			return err
		}
		if t == "" {
			if t, err = sub.string("type"); err != nil { // the older spelling
				return err
			}
		}
		if t != "" {
			if typ != "" && t != typ {
				return sub.errorf("rope_type", "%s disagrees with %srope_type %s", t, typOwner.prefix, typ)
			}
			typ, typOwner = t, sub
		}
		keys := make([]string, 0, len(sub.m))
		for k := range sub.m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if k == "rope_type" || k == "type" || sub.raw(k) == nil {
				continue
			}
			if prev := owner[k]; prev != nil && !hfSameJSON(prev.raw(k), sub.raw(k)) {
				return sub.errorf(k, "%s disagrees with %s%s %s", hfShort(sub.raw(k)), prev.prefix, k, hfShort(prev.raw(k)))
			}
			owner[k] = sub
		}
		if err := hfFullRotary(*sub); err != nil {
			return err
		}
	}
	if typ == "su" { // Phi-3's first name for longrope
		typ = RopeLongrope
	}
	if typ == "" {
		typ = "default"
	}
	uses, known := hfRopeUses[typ]
	if !known {
		return typOwner.errorf("rope_type", "rope_type %s not supported (want default, linear, dynamic, llama3, yarn or longrope)", typ)
	}
	keys := make([]string, 0, len(owner))
	for k := range owner {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k != "rope_theta" && k != "partial_rotary_factor" && !slices.Contains(uses, k) {
			return owner[k].errorf(k, "not supported with rope_type %s", typ)
		}
	}
	if o := owner["rope_theta"]; o != nil {
		t, _, err := o.float("rope_theta")
		if err != nil {
			return err
		}
		if topOK && t != theta {
			return o.errorf("rope_theta", "%v disagrees with rope_theta %v", t, theta)
		}
		theta, topOK = t, true
	}
	if !topOK {
		theta = 10000
	}
	if !(theta > 0) || math.IsInf(theta, 0) {
		return f.errorf("rope_theta", "must be positive, got %v", theta)
	}
	c.RopeTheta = theta
	if typ == "default" {
		return nil
	}
	return hfRopeScaling(f, *typOwner, owner, typ, c)
}

// hfRopeScaling reads the parameters of a scaled RoPE of type typ (named in
// the object at) from the keys of owner into c.RopeScaling, resolving
// transformers' defaults.
func hfRopeScaling(f, at hfFields, owner map[string]*hfFields, typ string, c *Config) error {
	num := func(key string) (float64, bool, error) {
		if o := owner[key]; o != nil {
			return o.float(key)
		}
		return 0, false, nil
	}
	where := func(key string) hfFields {
		if o := owner[key]; o != nil {
			return *o
		}
		return f
	}
	s := RopeScaling{Type: typ}
	factor, hasFactor, err := num("factor")
	if err != nil {
		return err
	}
	if !hasFactor && typ != RopeYarn && typ != RopeLongrope {
		return at.errorf("factor", "missing (rope_type %s needs it)", typ)
	}
	s.Factor = factor
	// The pre-training context: rope_scaling's, or the top-level one Phi-3
	// keeps (which transformers prefers), or max_position_embeddings.
	orig, hasOrig, err := 0, false, error(nil)
	if o := owner["original_max_position_embeddings"]; o != nil {
		if orig, hasOrig, err = o.int("original_max_position_embeddings"); err != nil {
			return err
		}
	}
	if top, ok, err := f.int("original_max_position_embeddings"); err != nil {
		return err
	} else if ok {
		if hasOrig && top != orig {
			return f.errorf("original_max_position_embeddings", "%d disagrees with %soriginal_max_position_embeddings %d", top, owner["original_max_position_embeddings"].prefix, orig)
		}
		orig, hasOrig = top, true
	}
	if !hasOrig {
		orig = c.MaxSeq
	}
	if orig <= 0 {
		return where("original_max_position_embeddings").errorf("original_max_position_embeddings", "must be positive, got %d", orig)
	}
	s.OriginalMaxSeq = orig
	switch typ {
	case RopeLinear:
		s.OriginalMaxSeq = 0
	case RopeDynamic:
		// transformers grows the base from max_position_embeddings and
		// ignores this key: refuse one that says otherwise.
		if hasOrig && orig != c.MaxSeq {
			return where("original_max_position_embeddings").errorf("original_max_position_embeddings", "%d differs from max_position_embeddings %d, which dynamic scaling grows from", orig, c.MaxSeq)
		}
		s.OriginalMaxSeq = c.MaxSeq
	case RopeLlama3:
		for _, p := range []struct {
			key string
			dst *float64
		}{{"low_freq_factor", &s.LowFreqFactor}, {"high_freq_factor", &s.HighFreqFactor}} {
			v, ok, err := num(p.key)
			if err != nil {
				return err
			}
			if !ok {
				return at.errorf(p.key, "missing (rope_type llama3 needs it)")
			}
			*p.dst = v
		}
	case RopeYarn:
		if !hasFactor { // transformers: the ratio of the two contexts
			s.Factor = float64(c.MaxSeq) / float64(orig)
		}
		var vals [5]float64
		for i, key := range []string{"beta_fast", "beta_slow", "mscale", "mscale_all_dim", "attention_factor"} {
			if vals[i], _, err = num(key); err != nil {
				return err
			}
		}
		// transformers reads "beta_fast or 32": a zero is the default too.
		s.BetaFast, s.BetaSlow = cmp.Or(vals[0], 32), cmp.Or(vals[1], 1)
		s.AttnFactor = vals[4]
		if _, ok := owner["attention_factor"]; !ok {
			s.AttnFactor = YarnAttnFactor(s.Factor, vals[2], vals[3])
		}
		if o := owner["truncate"]; o != nil {
			tr, _, err := o.bool("truncate")
			if err != nil {
				return err
			}
			s.NoTruncate = !tr
		}
	case RopeLongrope:
		for _, p := range []struct {
			key string
			dst *[]float64
		}{{"short_factor", &s.ShortFactor}, {"long_factor", &s.LongFactor}} {
			o := owner[p.key]
			if o == nil {
				return at.errorf(p.key, "missing (rope_type longrope needs it)")
			}
			if err := json.Unmarshal(o.raw(p.key), p.dst); err != nil {
				return o.errorf(p.key, "want a list of numbers, got %s", hfShort(o.raw(p.key)))
			}
			if len(*p.dst) != c.HeadDim/2 {
				return o.errorf(p.key, "has %d entries, want head_dim/2 = %d", len(*p.dst), c.HeadDim/2)
			}
		}
		if !hasFactor {
			s.Factor = float64(c.MaxSeq) / float64(orig)
		}
		af, ok, err := num("attention_factor")
		if err != nil {
			return err
		}
		if !ok {
			af = LongropeAttnFactor(s.Factor, orig)
		}
		s.AttnFactor = af
	}
	c.RopeScaling = s
	if err := s.validate(*c); err != nil {
		return fmt.Errorf("%s: %w", f.name, err)
	}
	return nil
}

// hfFullRotary refuses a partial_rotary_factor other than 1 (RoPE on part
// of each head), which the forward pass does not implement.
func hfFullRotary(f hfFields) error {
	p, ok, err := f.float("partial_rotary_factor")
	if err != nil {
		return err
	}
	if ok && p != 1 {
		return f.errorf("partial_rotary_factor", "%v not supported (RoPE on every channel only)", p)
	}
	return nil
}

// hfSameJSON reports whether two JSON values are equal as values.
func hfSameJSON(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
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
	return nil
}

// hfWindow reads the model's own sliding window (0: none). Mistral and
// Phi-3 apply sliding_window in every layer (Mistral's default is 4096, as
// transformers has it; null turns it off). Qwen2 and Qwen3 apply theirs only
// with use_sliding_window, and then only from layer max_window_layers on,
// which is refused. Llama has no window: a sliding_window shorter than the
// context is refused rather than ignored.
func hfWindow(f hfFields, mt string, maxSeq int) (int, error) {
	switch mt {
	case "mistral", "phi3":
		if _, present := f.m["sliding_window"]; !present {
			if mt == "mistral" {
				return 4096, nil
			}
			return 0, nil
		}
		w, ok, err := f.int("sliding_window")
		if err != nil || !ok {
			return 0, err
		}
		if w <= 0 {
			return 0, f.errorf("sliding_window", "must be positive or null, got %d", w)
		}
		return w, nil
	case "qwen2", "qwen3":
		use, _, err := f.bool("use_sliding_window")
		if err != nil || !use {
			return 0, err
		}
	}
	if w, ok, err := f.int("sliding_window"); err != nil {
		return 0, err
	} else if ok && w < maxSeq {
		return 0, f.errorf("sliding_window", "window %d shorter than max_position_embeddings %d not supported for %s", w, maxSeq, mt)
	}
	return 0, nil
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
