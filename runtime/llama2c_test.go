package runtime

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// l2cTinyHeader: dim 8, hidden 12, 2 layers, 2 heads (head size 4), 1 KV
// head, vocab 10, seq_len 6; negate the vocab for an unshared classifier.
var l2cTinyHeader = [7]int32{8, 12, 2, 2, 1, 10, 6}

// l2cEncode writes a llama2.c checkpoint of the given header whose float k
// (counting from the first after the header) is k, followed by floats more
// floats; a file of the right size when floats is what the header implies.
func l2cEncode(h [7]int32, floats int) []byte {
	b := make([]byte, 0, 28+4*floats)
	for _, v := range h {
		b = binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	for k := range floats {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(k)))
	}
	return b
}

// l2cFloats counts the floats a header implies, computed here separately
// from the loader.
func l2cFloats(h [7]int32) int {
	dim, hidden, layers, heads, kv, vocab, seq := int(h[0]), int(h[1]), int(h[2]), int(h[3]), int(h[4]), int(h[5]), int(h[6])
	head := dim / heads
	n := 0
	if vocab < 0 {
		vocab = -vocab
		n += vocab * dim // wcls
	}
	n += vocab * dim                  // embedding
	n += layers * dim * 2             // rms_att, rms_ffn
	n += layers * dim * dim * 2       // wq, wo
	n += layers * kv * head * dim * 2 // wk, wv
	n += layers * hidden * dim * 3    // w1, w2, w3
	n += dim                          // rms_final
	n += seq * head                   // freq_cis real and imaginary
	return n
}

func TestLlama2CTiny(t *testing.T) {
	for _, native := range []bool{true, false} {
		for _, shared := range []bool{true, false} {
			t.Run(fmt.Sprintf("native=%v/shared=%v", native, shared), func(t *testing.T) {
				stSetNative(t, native)
				h := l2cTinyHeader
				if !shared {
					h[5] = -h[5]
				}
				file := l2cEncode(h, l2cFloats(h))
				path := stWrite(t, t.TempDir(), "tiny.bin", file)
				m, err := Load(path)
				require.NoError(t, err)
				assert.Equal(t, Config{
					Arch: "llama2c", Dim: 8, Hidden: 12, Layers: 2, Heads: 2, KVHeads: 1, HeadDim: 4,
					Vocab: 10, MaxSeq: 6, RopeTheta: 10000, Rope: RopeInterleaved, NormEps: 1e-5,
					TiedEmbeddings: shared, BOS: 1, EOS: 2,
				}, m.Config)
				assert.Equal(t, path, m.Source)
				w := m.Weights
				// The first element of each tensor is its offset in floats,
				// worked out by hand from the layout.
				for _, c := range []struct {
					t     *Tensor
					first float32
					shape []int
				}{
					{w.Embed, 0, []int{10, 8}},
					{w.Layers[0].AttnNorm, 80, []int{8}},
					{w.Layers[1].AttnNorm, 88, []int{8}},
					{w.Layers[0].Wq, 96, []int{8, 8}},
					{w.Layers[1].Wq, 160, []int{8, 8}},
					{w.Layers[1].Wk, 256, []int{4, 8}},
					{w.Layers[0].Wv, 288, []int{4, 8}},
					{w.Layers[1].Wo, 416, []int{8, 8}},
					{w.Layers[1].MLPNorm, 488, []int{8}},
					{w.Layers[1].Gate, 592, []int{12, 8}},
					{w.Layers[1].Down, 784, []int{8, 12}},
					{w.Layers[1].Up, 976, []int{12, 8}},
					{w.Norm, 1072, []int{8}},
				} {
					assert.Equal(t, c.shape, c.t.Shape, c.t.Name)
					assert.Equal(t, c.first, c.t.F32[0], c.t.Name)
					assert.Equal(t, c.first+float32(c.t.Len()-1), c.t.F32[c.t.Len()-1], c.t.Name)
					assert.Equal(t, c.t.Len(), cap(c.t.F32), "%s: capacity reaches into the next tensor", c.t.Name)
				}
				if shared {
					assert.Same(t, w.Embed, w.Output)
					return
				}
				assert.NotSame(t, w.Embed, w.Output)
				assert.Equal(t, []int{10, 8}, w.Output.Shape)
				assert.Equal(t, float32(1080+24), w.Output.F32[0], "the classifier follows freq_cis")
				assert.Equal(t, float32(1104+79), w.Output.F32[79])
			})
		}
	}
}

func TestLlama2CStories(t *testing.T) {
	path := sharedFile(t, "models/stories260K/stories260K.bin")
	m, err := LoadLlama2C(path)
	require.NoError(t, err)
	require.NoError(t, m.Check())
	assert.Equal(t, Config{
		Arch: "llama2c", Dim: 64, Hidden: 172, Layers: 5, Heads: 8, KVHeads: 4, HeadDim: 8,
		Vocab: 512, MaxSeq: 512, RopeTheta: 10000, Rope: RopeInterleaved, NormEps: 1e-5,
		TiedEmbeddings: true, BOS: 1, EOS: 2,
	}, m.Config)
	assert.Same(t, m.Weights.Embed, m.Weights.Output)
	assert.Equal(t, int64(260032), m.ParamCount())

	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	first := math.Float32frombits(binary.LittleEndian.Uint32(raw[28:]))
	assert.Equal(t, first, m.Weights.Embed.F32[0])
	normOff := 28 + 4*(l2cFloats([7]int32{64, 172, 5, 8, 4, 512, 512})-512*8-64)
	assert.Equal(t, math.Float32frombits(binary.LittleEndian.Uint32(raw[normOff:])), m.Weights.Norm.F32[0])

	viaLoad, err := Load(path)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(filepath.Dir(path), "tok512.bin"), viaLoad.Tokenizer)
}

// l2cCorruptCase is a broken checkpoint and a fragment its error must hold.
type l2cCorruptCase struct {
	name string
	data []byte
	want string
}

func l2cCorruptCases() []l2cCorruptCase {
	valid := l2cEncode(l2cTinyHeader, l2cFloats(l2cTinyHeader))
	with := func(i int, v int32) []byte {
		h := l2cTinyHeader
		h[i] = v
		return l2cEncode(h, l2cFloats(l2cTinyHeader))
	}
	unshared := l2cTinyHeader
	unshared[5] = -unshared[5]
	return []l2cCorruptCase{
		{"empty", nil, "too short"},
		{"short header", valid[:20], "too short"},
		{"header only", valid[:28], "file has 28 bytes, header implies 4444"},
		{"truncated", valid[:len(valid)-4], fmt.Sprintf("file has %d bytes, header implies %d", len(valid)-4, len(valid))},
		{"oversized", append(append([]byte{}, valid...), 0, 0, 0, 0), fmt.Sprintf("file has %d bytes, header implies %d", len(valid)+4, len(valid))},
		{"unshared header, shared size", l2cEncode(unshared, l2cFloats(l2cTinyHeader)), "shared classifier false"},
		{"negative dim", with(0, -8), "dim = -8 out of range"},
		{"huge dim", with(0, 1<<30), "dim = 1073741824 out of range"},
		{"zero hidden", with(1, 0), "hidden_dim = 0 out of range"},
		{"zero layers", with(2, 0), "n_layers = 0 out of range"},
		{"negative heads", with(3, -2), "n_heads = -2 out of range"},
		{"heads do not divide dim", with(3, 3), "n_heads = 3 does not divide dim = 8"},
		{"kv heads do not divide heads", with(4, 3), "n_kv_heads = 3 does not divide n_heads = 2"},
		{"more kv heads than heads", with(4, 4), "n_kv_heads = 4 does not divide n_heads = 2"},
		{"odd head size", with(3, 8), "head size dim/n_heads = 1 is odd"},
		{"zero vocab", with(5, 0), "vocab_size = 0 out of range"},
		{"min int vocab", with(5, math.MinInt32), "vocab_size = 2147483648 out of range"},
		{"negative seq_len", with(6, -1), "seq_len = -1 out of range"},
		{"versioned export", with(0, llama2cMagic), `magic "ak42"`},
	}
}

func TestLlama2CCorrupt(t *testing.T) {
	dir := t.TempDir()
	for i, c := range l2cCorruptCases() {
		t.Run(c.name, func(t *testing.T) {
			path := stWrite(t, dir, fmt.Sprintf("case%02d.bin", i), c.data)
			m, err := LoadLlama2C(path)
			require.Error(t, err)
			assert.Nil(t, m)
			assert.Contains(t, err.Error(), path)
			assert.Contains(t, err.Error(), c.want)
		})
	}
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(dir, "absent.bin")
		_, err := LoadLlama2C(path)
		require.Error(t, err)
		assert.Contains(t, err.Error(), path)
	})
	t.Run("directory", func(t *testing.T) {
		_, err := LoadLlama2C(dir)
		require.Error(t, err)
		assert.Contains(t, err.Error(), dir)
	})
}

// TestLlama2CShortRead covers a file that shrinks after its size was taken.
func TestLlama2CShortRead(t *testing.T) {
	file := l2cEncode(l2cTinyHeader, l2cFloats(l2cTinyHeader))
	for _, native := range []bool{true, false} {
		stSetNative(t, native)
		_, err := readLlama2C("shrunk.bin", strings.NewReader(string(file[:100])), int64(len(file)))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "shrunk.bin")
		assert.Contains(t, err.Error(), "unexpected EOF")
	}
}

func FuzzLlama2C(f *testing.F) {
	f.Add(l2cEncode(l2cTinyHeader, l2cFloats(l2cTinyHeader)))
	unshared := l2cTinyHeader
	unshared[5] = -unshared[5]
	f.Add(l2cEncode(unshared, l2cFloats(unshared)))
	mha := [7]int32{4, 4, 1, 1, 1, 2, 1}
	f.Add(l2cEncode(mha, l2cFloats(mha)))
	for _, c := range l2cCorruptCases() {
		f.Add(c.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseLlama2C("fuzz.bin", data)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.bin") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if err := m.Check(); err != nil {
			t.Fatalf("accepted a model that does not check: %v", err)
		}
		if got := 4 * m.ParamCount(); got > int64(len(data)) {
			t.Fatalf("%d bytes of parameters from a %d-byte file", got, len(data))
		}
	})
}
