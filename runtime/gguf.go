package runtime

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/kvbench/kvbench/runtime/gguf"
)

// ggufArch is how llama.cpp stores an architecture this loader reads.
type ggufArch struct {
	// permuted: the converter reordered the rows of each query and key head
	// from Hugging Face's rotate-half pairing (i, i+d/2) to llama.cpp's
	// adjacent pairing (2i, 2i+1); the loader puts them back.
	permuted bool
	bias     bool // q/k/v biases (Qwen2)
	qkNorm   bool // per-head RMSNorm of queries and keys (Qwen3)
}

// ggufArchs are the supported values of general.architecture.
var ggufArchs = map[string]ggufArch{
	"llama": {permuted: true},
	"qwen2": {bias: true},
	"qwen3": {qkNorm: true},
}

// LoadGGUF loads a model from a llama.cpp GGUF file (version 2 or 3): the
// llama (Llama 1-3, Mistral as llama.cpp converts it), qwen2 and qwen3
// architectures, with tensors in F32, F16, BF16 (kept as stored) or Q8_0,
// Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K (dequantized to float32 on load,
// exactly as ggml computes them). The query and key rows llama.cpp's
// converter permutes for the llama architecture are put back in Hugging
// Face order, so the model runs with rotate-half RoPE and gives the logits
// of the safetensors it was converted from. When the file embeds a
// tokenizer, Model.Tokenizer is the file itself (tokenizer.Load reads it).
// Errors name the file and the key, tensor or byte offset at fault.
func LoadGGUF(path string) (*Model, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ggufModel(f, true)
}

// inspectGGUF checks a GGUF file as LoadGGUF does without reading the
// weights, and returns the tokenizer Load would use.
func inspectGGUF(path string) (string, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	m, err := ggufModel(f, false)
	if err != nil {
		return "", err
	}
	if m.Tokenizer == "" {
		return findTokenizer(path, false), nil
	}
	return m.Tokenizer, nil
}

// isGGUFFile reports whether path names a GGUF file: by its .gguf
// extension or its first four bytes.
func isGGUFFile(path string) bool {
	if strings.EqualFold(filepath.Ext(path), ".gguf") {
		return true
	}
	fh, err := os.Open(path)
	if err != nil {
		return false
	}
	defer fh.Close()
	var magic [4]byte
	n, _ := fh.Read(magic[:])
	return n == 4 && string(magic[:]) == gguf.Magic
}

// ggufModel builds the model of a parsed file; without read it checks the
// tensors' names, shapes and types but reads no data.
func ggufModel(f *gguf.File, read bool) (*Model, error) {
	c, spec, err := ggufConfig(f)
	if err != nil {
		return nil, err
	}
	w, err := ggufWeights(f, &c, spec, read)
	if err != nil {
		return nil, err
	}
	m := &Model{Config: c, Weights: w, Source: f.Name}
	if f.KV("tokenizer.ggml.model") != nil {
		m.Tokenizer = f.Name
	}
	return m, nil
}

// ggufKeys reads the metadata of one architecture, naming the file and key
// in errors.
type ggufKeys struct {
	f    *gguf.File
	arch string
}

func (k ggufKeys) errorf(key, format string, args ...any) error {
	at := ""
	if kv := k.f.KV(key); kv != nil {
		at = fmt.Sprintf("offset %d: ", kv.Offset)
	}
	return fmt.Errorf("gguf %s: %skey %q: %s", k.f.Name, at, key, fmt.Sprintf(format, args...))
}

// count reads ARCH.key, a positive integer; def when absent (0: required).
func (k ggufKeys) count(key string, def int) (int, error) {
	full := k.arch + "." + key
	v, ok, err := k.f.GetUint(full)
	if err != nil {
		return 0, err
	}
	if !ok {
		if def == 0 {
			return 0, fmt.Errorf("gguf %s: key %q missing", k.f.Name, full)
		}
		return def, nil
	}
	if v == 0 || v > 1<<30 {
		return 0, k.errorf(full, "%d is out of range", v)
	}
	return int(v), nil
}

// ggufConfig maps the metadata to a Config.
func ggufConfig(f *gguf.File) (Config, ggufArch, error) {
	var c Config
	arch, ok, err := f.GetString("general.architecture")
	if err != nil {
		return c, ggufArch{}, err
	}
	if !ok {
		return c, ggufArch{}, fmt.Errorf("gguf %s: key \"general.architecture\" missing", f.Name)
	}
	spec, known := ggufArchs[arch]
	if !known {
		return c, spec, fmt.Errorf("gguf %s: general.architecture %q not supported (want llama, qwen2 or qwen3)", f.Name, arch)
	}
	k := ggufKeys{f: f, arch: arch}
	c.Arch, c.Rope, c.QKNorm = arch, RopeHalf, spec.qkNorm
	for _, p := range []struct {
		key string
		dst *int
		def int
	}{
		{"embedding_length", &c.Dim, 0},
		{"feed_forward_length", &c.Hidden, 0},
		{"block_count", &c.Layers, 0},
		{"attention.head_count", &c.Heads, 0},
		{"context_length", &c.MaxSeq, 0},
	} {
		if *p.dst, err = k.count(p.key, p.def); err != nil {
			return c, spec, err
		}
	}
	if c.KVHeads, err = k.count("attention.head_count_kv", c.Heads); err != nil {
		return c, spec, err
	}
	if c.Heads%c.KVHeads != 0 {
		return c, spec, k.errorf(arch+".attention.head_count_kv", "%d does not divide attention.head_count %d", c.KVHeads, c.Heads)
	}
	hd := c.Dim / c.Heads
	if f.KV(arch+".attention.key_length") == nil && c.Dim%c.Heads != 0 {
		return c, spec, fmt.Errorf("gguf %s: %s.embedding_length %d is not a multiple of attention.head_count %d, and attention.key_length is absent", f.Name, arch, c.Dim, c.Heads)
	}
	if c.HeadDim, err = k.count("attention.key_length", hd); err != nil {
		return c, spec, err
	}
	if v, err := k.count("attention.value_length", c.HeadDim); err != nil {
		return c, spec, err
	} else if v != c.HeadDim {
		return c, spec, k.errorf(arch+".attention.value_length", "%d differs from the key length %d (not supported)", v, c.HeadDim)
	}
	if c.HeadDim%2 != 0 {
		return c, spec, fmt.Errorf("gguf %s: head size %d is odd; RoPE needs it even", f.Name, c.HeadDim)
	}
	if rd, err := k.count("rope.dimension_count", c.HeadDim); err != nil {
		return c, spec, err
	} else if rd != c.HeadDim {
		return c, spec, k.errorf(arch+".rope.dimension_count", "RoPE on %d of the head's %d channels (partial rotary) not supported", rd, c.HeadDim)
	}
	c.RopeTheta = 10000 // llama.cpp's default
	if v, ok, err := f.GetFloat(arch + ".rope.freq_base"); err != nil {
		return c, spec, err
	} else if ok {
		if !(v > 0) || math.IsInf(v, 0) {
			return c, spec, k.errorf(arch+".rope.freq_base", "must be positive, got %v", v)
		}
		c.RopeTheta = v
	}
	eps, ok, err := f.GetFloat(arch + ".attention.layer_norm_rms_epsilon")
	if err != nil {
		return c, spec, err
	}
	if !ok {
		return c, spec, fmt.Errorf("gguf %s: key %q missing (an RMSNorm model)", f.Name, arch+".attention.layer_norm_rms_epsilon")
	}
	if !(eps > 0 && eps <= 1) {
		return c, spec, k.errorf(arch+".attention.layer_norm_rms_epsilon", "must be in (0, 1], got %v", eps)
	}
	c.NormEps = float32(eps)
	if n, ok, err := f.GetUint(arch + ".expert_count"); err != nil {
		return c, spec, err
	} else if ok && n > 0 {
		return c, spec, k.errorf(arch+".expert_count", "mixture of %d experts not supported", n)
	}
	if w, ok, err := f.GetUint(arch + ".attention.sliding_window"); err != nil {
		return c, spec, err
	} else if ok && w > 0 && w < uint64(c.MaxSeq) {
		c.SlidingWindow = int(w)
	}
	if c.RopeScaling, err = ggufRopeScaling(k, c); err != nil {
		return c, spec, err
	}
	if err := ggufVocab(f, arch, &c); err != nil {
		return c, spec, err
	}
	c.QKVBias = spec.bias || f.Tensor("blk.0.attn_q.bias") != nil
	c.TiedEmbeddings = f.Tensor("output.weight") == nil
	if err := c.Validate(); err != nil {
		return c, spec, fmt.Errorf("gguf %s: %w", f.Name, err)
	}
	return c, spec, nil
}

// ggufVocab sets the vocabulary size (the embedded token list's length,
// else ARCH.vocab_size, else the embedding's rows) and the special tokens.
func ggufVocab(f *gguf.File, arch string, c *Config) error {
	c.BOS, c.EOS = -1, -1
	tokens, hasTokens, err := f.GetStrings("tokenizer.ggml.tokens")
	if err != nil {
		return err
	}
	switch {
	case hasTokens:
		c.Vocab = len(tokens)
	default:
		if v, ok, err := f.GetUint(arch + ".vocab_size"); err != nil {
			return err
		} else if ok {
			c.Vocab = int(min(v, 1<<31))
		} else if t := f.Tensor("token_embd.weight"); t != nil && len(t.Dims) == 2 {
			c.Vocab = int(t.Dims[1])
		}
	}
	model, _, err := f.GetString("tokenizer.ggml.model")
	if err != nil {
		return err
	}
	if model == "llama" { // llama.cpp's defaults for SentencePiece vocabularies
		c.BOS, c.EOS = 1, 2
	}
	for _, p := range []struct {
		key string
		dst *int
	}{{"tokenizer.ggml.bos_token_id", &c.BOS}, {"tokenizer.ggml.eos_token_id", &c.EOS}} {
		v, ok, err := f.GetUint(p.key)
		if err != nil {
			return err
		}
		if ok {
			if v >= uint64(c.Vocab) {
				return ggufKeys{f: f}.errorf(p.key, "%d is outside the vocabulary of %d", v, c.Vocab)
			}
			*p.dst = int(v)
		}
	}
	if c.BOS >= c.Vocab {
		c.BOS = -1
	}
	if c.EOS >= c.Vocab {
		c.EOS = -1
	}
	return nil
}

// ggufRopeScaling reads RoPE scaling: linear from ARCH.rope.scaling.type
// (or the older ARCH.rope.scale_linear), llama3 from the frequency factors
// of the rope_freqs.weight tensor. Other types are refused.
func ggufRopeScaling(k ggufKeys, c Config) (RopeScaling, error) {
	f, arch := k.f, k.arch
	typ, _, err := f.GetString(arch + ".rope.scaling.type")
	if err != nil {
		return RopeScaling{}, err
	}
	factor, hasFactor, err := f.GetFloat(arch + ".rope.scaling.factor")
	if err != nil {
		return RopeScaling{}, err
	}
	factorKey := arch + ".rope.scaling.factor"
	if !hasFactor {
		if factor, hasFactor, err = f.GetFloat(arch + ".rope.scale_linear"); err != nil {
			return RopeScaling{}, err
		}
		factorKey = arch + ".rope.scale_linear"
		if hasFactor && typ == "" {
			typ = "linear"
		}
	}
	var s RopeScaling
	switch typ {
	case "", "none":
	case "linear":
		if !hasFactor {
			return s, fmt.Errorf("gguf %s: key %q is linear but %q is missing", f.Name, arch+".rope.scaling.type", arch+".rope.scaling.factor")
		}
		if !(factor > 0) || math.IsInf(factor, 0) {
			return s, k.errorf(factorKey, "must be positive, got %v", factor)
		}
		if factor != 1 {
			s = RopeScaling{Type: RopeLinear, Factor: factor}
		}
	default:
		return s, k.errorf(arch+".rope.scaling.type", "RoPE scaling %q from GGUF metadata not supported (linear, and llama3 through rope_freqs.weight, are)", typ)
	}
	t := f.Tensor("rope_freqs.weight")
	if t == nil {
		return s, nil
	}
	if s.Type != "" {
		return s, fmt.Errorf("gguf %s: both %s scaling and a rope_freqs.weight tensor; not supported", f.Name, s.Type)
	}
	return ggufLlama3(f, t, c)
}

// ggufLlama3 recovers llama3 RoPE scaling from rope_freqs.weight, the
// factor each pair's frequency is divided by (llama.cpp's converter writes
// 1 above the high-frequency band, the scaling factor below the
// low-frequency band, and 1/((1-s)/factor + s) between, s rising linearly in
// 1/wavelength). The band edges depend on the original context and the two
// band factors only through that line, so low_freq_factor is taken as 1 and
// the others fitted; the frequencies this gives must then match the file's
// to float32 precision, or the file is refused.
func ggufLlama3(f *gguf.File, t *gguf.TensorInfo, c Config) (RopeScaling, error) {
	fail := func(format string, args ...any) (RopeScaling, error) {
		return RopeScaling{}, fmt.Errorf("gguf %s: tensor \"rope_freqs.weight\": %s", f.Name, fmt.Sprintf(format, args...))
	}
	if t.Elems != int64(c.HeadDim/2) || len(t.Dims) != 1 {
		return fail("shape %v, want [%d] (head_dim/2)", t.Shape(), c.HeadDim/2)
	}
	ff, err := f.Float32(t)
	if err != nil {
		return RopeScaling{}, err
	}
	d := float64(c.HeadDim)
	base := make([]float64, len(ff)) // the unscaled inverse frequencies
	var factor float64
	for i, v := range ff {
		if !(v > 0) || math.IsInf(float64(v), 0) {
			return fail("factor %d is %v", i, v)
		}
		base[i] = float64(float32(1 / math.Pow(c.RopeTheta, float64(2*i)/d)))
		factor = max(factor, float64(v))
	}
	near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-5*math.Abs(b) }
	if near(factor, 1) {
		for i, v := range ff {
			if !near(float64(v), 1) {
				return fail("factor %d is %v, below 1", i, v)
			}
		}
		return RopeScaling{}, nil // no scaling
	}
	// Fit s = a/wavelength - b over the pairs between the bands.
	var xs, ys []float64
	for i, v := range ff {
		if near(float64(v), 1) || near(float64(v), factor) {
			continue
		}
		xs = append(xs, base[i]/(2*math.Pi))
		ys = append(ys, (1/float64(v)-1/factor)/(1-1/factor))
	}
	if len(xs) < 2 {
		return fail("fewer than two pairs between llama3's bands; cannot recover its parameters")
	}
	var mx, my, sxx, sxy float64
	for i := range xs {
		mx, my = mx+xs[i], my+ys[i]
	}
	mx, my = mx/float64(len(xs)), my/float64(len(xs))
	for i := range xs {
		sxx += (xs[i] - mx) * (xs[i] - mx)
		sxy += (xs[i] - mx) * (ys[i] - my)
	}
	a := sxy / sxx
	b := a*mx - my
	if !(a > 0) || !(b > 0) || math.IsInf(a, 0) || math.IsInf(b, 0) {
		return fail("the factors do not follow llama3 scaling's ramp")
	}
	// snap rounds a fitted value to 4 significant digits when that is
	// within the fit's precision.
	snap := func(v float64) float64 {
		p := math.Pow(10, 3-math.Floor(math.Log10(v)))
		if r := math.Round(v*p) / p; math.Abs(r-v) <= 1e-4*v {
			return r
		}
		return v
	}
	s := RopeScaling{Type: RopeLlama3, Factor: snap(factor), LowFreqFactor: 1, HighFreqFactor: snap(1 + 1/b),
		OriginalMaxSeq: int(math.Round(a / b))}
	check := c
	check.RopeScaling = s
	if err := s.validate(check); err != nil {
		return fail("recovered %v: %v", s, err)
	}
	inv := check.RopeInvFreq(0)
	for i := range inv {
		want := base[i] / float64(ff[i])
		if math.Abs(float64(inv[i])-want) > 2e-6*want {
			return fail("pair %d: llama3 scaling (%v) gives frequency %g, the file %g; not llama3 scaling", i, s, inv[i], want)
		}
	}
	return s, nil
}

// ggufWeights assembles the weights from the tensors llama.cpp names,
// checking each tensor's shape and type and that none is left unexplained;
// with read, it loads them.
func ggufWeights(f *gguf.File, c *Config, spec ggufArch, read bool) (Weights, error) {
	used := map[string]bool{"rope_freqs.weight": true}
	var firstErr error
	take := func(name string, shape ...int) *Tensor {
		if firstErr != nil {
			return nil
		}
		ti := f.Tensor(name)
		if ti == nil {
			firstErr = fmt.Errorf("gguf %s: tensor %q missing", f.Name, name)
			return nil
		}
		used[name] = true
		t, err := ggufTensor(f, ti, shape, read)
		if err != nil {
			firstErr = err
		}
		return t
	}
	w := Weights{Layers: make([]LayerWeights, c.Layers)}
	w.Embed = take("token_embd.weight", c.Vocab, c.Dim)
	for i := range w.Layers {
		p := "blk." + strconv.Itoa(i) + "."
		l := &w.Layers[i]
		l.AttnNorm = take(p+"attn_norm.weight", c.Dim)
		l.Wq = take(p+"attn_q.weight", c.QDim(), c.Dim)
		l.Wk = take(p+"attn_k.weight", c.KVDim(), c.Dim)
		l.Wv = take(p+"attn_v.weight", c.KVDim(), c.Dim)
		l.Wo = take(p+"attn_output.weight", c.Dim, c.QDim())
		if c.QKVBias {
			l.Bq = take(p+"attn_q.bias", c.QDim())
			l.Bk = take(p+"attn_k.bias", c.KVDim())
			l.Bv = take(p+"attn_v.bias", c.KVDim())
		}
		if c.QKNorm {
			l.QNorm = take(p+"attn_q_norm.weight", c.HeadDim)
			l.KNorm = take(p+"attn_k_norm.weight", c.HeadDim)
		}
		l.MLPNorm = take(p+"ffn_norm.weight", c.Dim)
		l.Gate = take(p+"ffn_gate.weight", c.Hidden, c.Dim)
		l.Up = take(p+"ffn_up.weight", c.Hidden, c.Dim)
		l.Down = take(p+"ffn_down.weight", c.Dim, c.Hidden)
		if read && spec.permuted && firstErr == nil {
			for _, t := range []struct {
				t     *Tensor
				heads int
			}{{l.Wq, c.Heads}, {l.Wk, c.KVHeads}, {l.Bq, c.Heads}, {l.Bk, c.KVHeads}} {
				if t.t != nil {
					unpermuteHeads(t.t, t.heads)
				}
			}
		}
	}
	w.Norm = take("output_norm.weight", c.Dim)
	if c.TiedEmbeddings {
		w.Output = w.Embed
	} else {
		w.Output = take("output.weight", c.Vocab, c.Dim)
	}
	if firstErr != nil {
		return w, firstErr
	}
	var extra []string
	for i := range f.Tensors {
		if n := f.Tensors[i].Name; !used[n] {
			extra = append(extra, n)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		more := ""
		if len(extra) > 5 {
			more = fmt.Sprintf(" and %d more", len(extra)-5)
			extra = extra[:5]
		}
		return w, fmt.Errorf("gguf %s: holds tensors the %s architecture does not account for: %s%s", f.Name, c.Arch, strings.Join(extra, ", "), more)
	}
	return w, nil
}

// ggufTensor checks one tensor's shape and type and, with read, loads it:
// F32, F16 and BF16 as stored, the block types dequantized to float32.
func ggufTensor(f *gguf.File, ti *gguf.TensorInfo, shape []int, read bool) (*Tensor, error) {
	got := ti.Shape()
	same := len(got) == len(shape)
	for i := 0; same && i < len(shape); i++ {
		same = got[i] == shape[i]
	}
	if !same {
		return nil, fmt.Errorf("gguf %s: offset %d: tensor %q has shape %v (ggml dims %v), the metadata implies %v", f.Name, ti.InfoOffset, ti.Name, got, ti.Dims, shape)
	}
	if !ti.Type.Dequantizable() {
		return nil, fmt.Errorf("gguf %s: offset %d: tensor %q has type %s, not supported (supported: %s)", f.Name, ti.InfoOffset, ti.Name, ti.Type, gguf.SupportedTypes())
	}
	t := &Tensor{Name: ti.Name, Shape: shape}
	if !read {
		return t, nil
	}
	r := ggufTensorReader{f, ti}
	var err error
	switch ti.Type {
	case gguf.F32:
		t.DType, t.F32 = F32, make([]float32, ti.Elems)
		err = readF32At(r, 0, t.F32)
	case gguf.F16, gguf.BF16:
		t.DType, t.U16 = F16, make([]uint16, ti.Elems)
		if ti.Type == gguf.BF16 {
			t.DType = BF16
		}
		err = readU16At(r, 0, t.U16)
	default:
		t.DType, t.F32 = F32, make([]float32, ti.Elems)
		err = dequantizeRows(f, ti, t.F32)
	}
	if err != nil {
		return nil, err
	}
	return t, nil
}

// ggufTensorReader reads one tensor's data as an io.ReaderAt.
type ggufTensorReader struct {
	f *gguf.File
	t *gguf.TensorInfo
}

func (r ggufTensorReader) ReadAt(p []byte, off int64) (int, error) {
	if err := r.f.ReadTensorAt(r.t, p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

// dequantizeRows reads a block-quantized tensor a few megabytes at a time
// (whole rows) and dequantizes it into dst.
func dequantizeRows(f *gguf.File, ti *gguf.TensorInfo, dst []float32) error {
	if len(ti.Dims) == 0 || ti.Elems == 0 {
		return nil
	}
	rowLen := int(ti.Dims[0])
	rowBytes, err := ti.Type.RowSize(rowLen)
	if err != nil {
		return fmt.Errorf("gguf %s: tensor %q: %w", f.Name, ti.Name, err)
	}
	rows := int(ti.Elems) / rowLen
	chunk := max(1, (4<<20)/rowBytes)
	buf := make([]byte, min(rows, chunk)*rowBytes)
	for r := 0; r < rows; r += chunk {
		n := min(chunk, rows-r)
		b := buf[:n*rowBytes]
		if err := f.ReadTensorAt(ti, b, int64(r)*int64(rowBytes)); err != nil {
			return err
		}
		if err := gguf.Dequantize(ti.Type, b, dst[r*rowLen:(r+n)*rowLen]); err != nil {
			return fmt.Errorf("gguf %s: tensor %q: %w", f.Name, ti.Name, err)
		}
	}
	return nil
}

// unpermuteHeads undoes llama.cpp's converter on the rows of a query or key
// projection (or bias) of heads heads: within each head of d rows it stored
// row j*d/2+i (i < d/2, j < 2) of the Hugging Face layout at row 2i+j, so
// that adjacent rows form RoPE's pairs. Row 2i+j goes back to j*d/2+i.
func unpermuteHeads(t *Tensor, heads int) {
	rows := t.Shape[0]
	cols := t.Len() / rows
	d := rows / heads
	src := func(r int) int { // the stored row that holds HF row r
		h, k := r/d, r%d
		return h*d + 2*(k%(d/2)) + k/(d/2)
	}
	if t.DType == F32 {
		t.F32 = permuteRows(t.F32, rows, cols, src)
	} else {
		t.U16 = permuteRows(t.U16, rows, cols, src)
	}
}

// permuteRows returns data with row r taken from row src(r).
func permuteRows[T any](data []T, rows, cols int, src func(int) int) []T {
	out := make([]T, len(data))
	for r := range rows {
		s := src(r)
		copy(out[r*cols:(r+1)*cols], data[s*cols:(s+1)*cols])
	}
	return out
}
