package runtime

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strconv"
)

// The legacy llama2.c checkpoint (run.c, export.py legacy_export): a header
// of 7 little-endian int32 — dim, hidden_dim, n_layers, n_heads, n_kv_heads,
// vocab_size, seq_len; a negative vocab_size means the classifier is not
// shared with the embedding — then float32 arrays, each kind for all layers
// in turn:
//
//	token_embedding [vocab, dim]
//	rms_att [layers, dim]
//	wq [layers, dim, dim], wk [layers, kv_dim, dim], wv [layers, kv_dim, dim], wo [layers, dim, dim]
//	rms_ffn [layers, dim]
//	w1 [layers, hidden, dim], w2 [layers, dim, hidden], w3 [layers, hidden, dim]
//	rms_final [dim]
//	freq_cis_real, freq_cis_imag [seq_len * head_size / 2] each (not used: RoPE is computed)
//	wcls [vocab, dim], only when the classifier is not shared

const (
	// llama2cHeaderBytes is the size of the legacy header.
	llama2cHeaderBytes = 7 * 4
	// llama2cMagic opens the versioned llama2.c exports ("ak42"), which this
	// loader does not read.
	llama2cMagic = 0x616b3432
)

// LoadLlama2C loads a legacy llama2.c checkpoint (float32 weights, shared or
// separate classifier). The file's size must be exactly what its header
// implies. The weights are slices of one float32 buffer.
func LoadLlama2C(path string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("llama2.c: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("llama2.c: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("llama2.c %s: is a directory", path)
	}
	m, err := readLlama2C(path, f, st.Size())
	if err != nil {
		return nil, err
	}
	m.Source = path
	return m, nil
}

// parseLlama2C decodes a whole llama2.c checkpoint held in data; name is used
// in errors. It runs the same code as LoadLlama2C.
func parseLlama2C(name string, data []byte) (*Model, error) {
	return readLlama2C(name, bytes.NewReader(data), int64(len(data)))
}

// readLlama2CHeader reads and checks the header of the llama2.c checkpoint of
// the given size that r reads, and that the size is what the header implies;
// it reads nothing else.
func readLlama2CHeader(name string, r io.ReaderAt, size int64) (llama2cLayout, error) {
	if size < llama2cHeaderBytes {
		return llama2cLayout{}, fmt.Errorf("llama2.c %s: file has %d bytes, too short for the %d-byte header", name, size, llama2cHeaderBytes)
	}
	var hb [llama2cHeaderBytes]byte
	if err := readAtFull(r, hb[:], 0); err != nil {
		return llama2cLayout{}, fmt.Errorf("llama2.c %s: reading header: %w", name, err)
	}
	var h [7]int64
	for i := range h {
		h[i] = int64(int32(binary.LittleEndian.Uint32(hb[4*i:])))
	}
	if uint32(h[0]) == llama2cMagic {
		return llama2cLayout{}, fmt.Errorf("llama2.c %s: a versioned llama2.c export (magic \"ak42\", version %d); only the legacy format is supported", name, h[1])
	}
	dim, hidden, layers, heads, kvHeads, vocab, seqLen := h[0], h[1], h[2], h[3], h[4], h[5], h[6]
	shared := vocab > 0
	if vocab < 0 {
		vocab = -vocab
	}
	for _, p := range []struct {
		name   string
		v, max int64
	}{
		{"dim", dim, 1 << 16},
		{"hidden_dim", hidden, 1 << 18},
		{"n_layers", layers, 1 << 12},
		{"n_heads", heads, 1 << 12},
		{"n_kv_heads", kvHeads, 1 << 12},
		{"vocab_size", vocab, 1 << 24},
		{"seq_len", seqLen, 1 << 24},
	} {
		if p.v <= 0 || p.v > p.max {
			return llama2cLayout{}, fmt.Errorf("llama2.c %s: header %s = %d out of range [1, %d] (header %v)", name, p.name, p.v, p.max, h)
		}
	}
	if dim%heads != 0 {
		return llama2cLayout{}, fmt.Errorf("llama2.c %s: header n_heads = %d does not divide dim = %d", name, heads, dim)
	}
	if heads%kvHeads != 0 {
		return llama2cLayout{}, fmt.Errorf("llama2.c %s: header n_kv_heads = %d does not divide n_heads = %d", name, kvHeads, heads)
	}
	headSize := dim / heads
	if headSize%2 != 0 {
		return llama2cLayout{}, fmt.Errorf("llama2.c %s: head size dim/n_heads = %d is odd; RoPE needs it even", name, headSize)
	}
	kvDim := headSize * kvHeads

	// Float counts; the bounds above keep every product far below 2^63.
	perLayer := dim + dim*dim + 2*kvDim*dim + dim*dim + dim + 3*hidden*dim
	body := vocab*dim + layers*perLayer + dim
	freq := seqLen * headSize // real and imaginary halves
	cls := int64(0)
	if !shared {
		cls = vocab * dim
	}
	want := llama2cHeaderBytes + 4*(body+freq+cls)
	if size != want {
		return llama2cLayout{}, fmt.Errorf("llama2.c %s: file has %d bytes, header implies %d (dim %d, hidden %d, layers %d, heads %d, kv heads %d, vocab %d, seq_len %d, shared classifier %v)",
			name, size, want, dim, hidden, layers, heads, kvHeads, vocab, seqLen, shared)
	}
	return llama2cLayout{dim: dim, hidden: hidden, layers: layers, heads: heads, kvHeads: kvHeads, vocab: vocab, seqLen: seqLen,
		headSize: headSize, shared: shared, body: body, freq: freq, cls: cls}, nil
}

// llama2cLayout is what a llama2.c header says: the shape and where the
// float32 arrays lie.
type llama2cLayout struct {
	dim, hidden, layers, heads, kvHeads, vocab, seqLen int64
	headSize                                           int64
	shared                                             bool
	body, freq, cls                                    int64 // floats of the weights, the RoPE tables, the classifier
}

// readLlama2C decodes the llama2.c checkpoint of the given size that r reads.
func readLlama2C(name string, r io.ReaderAt, size int64) (*Model, error) {
	lay, err := readLlama2CHeader(name, r, size)
	if err != nil {
		return nil, err
	}
	dim, hidden, layers, heads, kvHeads, vocab, seqLen := lay.dim, lay.hidden, lay.layers, lay.heads, lay.kvHeads, lay.vocab, lay.seqLen
	headSize, shared, body, freq, cls := lay.headSize, lay.shared, lay.body, lay.freq, lay.cls

	buf := make([]float32, body+cls)
	if err := readF32At(r, llama2cHeaderBytes, buf[:body]); err != nil {
		return nil, fmt.Errorf("llama2.c %s: reading weights: %w", name, err)
	}
	if err := readF32At(r, llama2cHeaderBytes+4*(body+freq), buf[body:]); err != nil {
		return nil, fmt.Errorf("llama2.c %s: reading classifier: %w", name, err)
	}

	c := Config{
		Arch: "llama2c", Dim: int(dim), Hidden: int(hidden), Layers: int(layers),
		Heads: int(heads), KVHeads: int(kvHeads), HeadDim: int(headSize), Vocab: int(vocab),
		MaxSeq: int(seqLen), RopeTheta: 10000, Rope: RopeInterleaved, NormEps: 1e-5,
		TiedEmbeddings: shared, BOS: 1, EOS: 2,
	}
	off := 0
	take := func(name string, shape ...int) *Tensor {
		n := 1
		for _, s := range shape {
			n *= s
		}
		t := NewF32Tensor(name, buf[off:off+n:off+n], shape...)
		off += n
		return t
	}
	L := make([]LayerWeights, c.Layers)
	lname := func(l int, s string) string { return "layers." + strconv.Itoa(l) + "." + s }
	w := Weights{Layers: L}
	w.Embed = take("tok_embeddings.weight", c.Vocab, c.Dim)
	for l := range L {
		L[l].AttnNorm = take(lname(l, "attention_norm.weight"), c.Dim)
	}
	for l := range L {
		L[l].Wq = take(lname(l, "attention.wq.weight"), c.QDim(), c.Dim)
	}
	for l := range L {
		L[l].Wk = take(lname(l, "attention.wk.weight"), c.KVDim(), c.Dim)
	}
	for l := range L {
		L[l].Wv = take(lname(l, "attention.wv.weight"), c.KVDim(), c.Dim)
	}
	for l := range L {
		L[l].Wo = take(lname(l, "attention.wo.weight"), c.Dim, c.QDim())
	}
	for l := range L {
		L[l].MLPNorm = take(lname(l, "ffn_norm.weight"), c.Dim)
	}
	for l := range L {
		L[l].Gate = take(lname(l, "feed_forward.w1.weight"), c.Hidden, c.Dim)
	}
	for l := range L {
		L[l].Down = take(lname(l, "feed_forward.w2.weight"), c.Dim, c.Hidden)
	}
	for l := range L {
		L[l].Up = take(lname(l, "feed_forward.w3.weight"), c.Hidden, c.Dim)
	}
	w.Norm = take("norm.weight", c.Dim)
	if shared {
		w.Output = w.Embed
	} else {
		w.Output = take("output.weight", c.Vocab, c.Dim)
	}
	if off != len(buf) {
		panic(fmt.Sprintf("llama2.c: sliced %d floats of %d", off, len(buf)))
	}
	return &Model{Config: c, Weights: w}, nil
}
