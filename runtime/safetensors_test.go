package runtime

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/x448/float16"
)

// stTestTensor is a tensor for the test encoder, its data already in bytes.
type stTestTensor struct {
	name  string
	dtype string
	shape []int
	data  []byte
}

// stF32 makes an F32 test tensor.
func stF32(name string, v []float32, shape ...int) stTestTensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return stTestTensor{name, "F32", shape, b}
}

// stU16 makes a BF16 or F16 test tensor from bit patterns.
func stU16(name, dtype string, v []uint16, shape ...int) stTestTensor {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	return stTestTensor{name, dtype, shape, b}
}

// stEncode writes a safetensors file as the reference writer does: header
// padded with spaces to a multiple of 8, tensors back to back.
func stEncode(ts ...stTestTensor) []byte {
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var data []byte
	for _, t := range ts {
		shape := t.shape
		if shape == nil {
			shape = []int{}
		}
		header[t.name] = map[string]any{"dtype": t.dtype, "shape": shape,
			"data_offsets": []int{len(data), len(data) + len(t.data)}}
		data = append(data, t.data...)
	}
	h, err := json.Marshal(header)
	if err != nil {
		panic(err)
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	return stRaw(string(h), data)
}

// stRaw assembles a file from a header text and a data buffer.
func stRaw(header string, data []byte) []byte {
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	out = append(out, header...)
	return append(out, data...)
}

// stWrite writes data to dir/name and returns the path.
func stWrite(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, data, 0o644))
	return p
}

// stSetNative sets readNative for the rest of the test.
func stSetNative(t *testing.T, native bool) {
	old := readNative
	readNative = native && hostLittleEndian
	t.Cleanup(func() { readNative = old })
}

func TestSafetensorsRoundTrip(t *testing.T) {
	f32 := []float32{1, -2.5, 3.25, 0, float32(math.Inf(1)), 1e-30}
	halves := []float32{0.5, -1, 256, -0.0078125} // exact in f16 and bf16
	f16 := make([]uint16, len(halves))
	bf16 := make([]uint16, len(halves))
	for i, x := range halves {
		f16[i] = float16.Fromfloat32(x).Bits()
		bf16[i] = F32ToBF16(x)
	}
	big := make([]float32, decodeChunk/4*2+3) // crosses the decode buffer twice
	for i := range big {
		big[i] = float32(i) * 0.5
	}
	file := stEncode(
		stF32("a.f32", f32, 2, 3),
		stU16("b.f16", "F16", f16, 4),
		stU16("c.bf16", "BF16", bf16, 2, 2),
		stF32("scalar", []float32{7}),
		stU16("empty", "BF16", nil, 0, 5),
		stF32("big", big, len(big)),
	)
	for _, native := range []bool{true, false} {
		t.Run(fmt.Sprintf("native=%v", native), func(t *testing.T) {
			stSetNative(t, native)
			path := stWrite(t, t.TempDir(), "m.safetensors", file)
			ts, err := ReadSafetensors(path)
			require.NoError(t, err)
			require.Len(t, ts, 6)

			a := ts["a.f32"]
			assert.Equal(t, "a.f32", a.Name)
			assert.Equal(t, F32, a.DType)
			assert.Equal(t, []int{2, 3}, a.Shape)
			assert.Equal(t, f32, a.F32)
			assert.Nil(t, a.U16)

			b := ts["b.f16"]
			assert.Equal(t, F16, b.DType)
			assert.Equal(t, f16, b.U16)
			c := ts["c.bf16"]
			assert.Equal(t, BF16, c.DType)
			assert.Equal(t, []int{2, 2}, c.Shape)
			for i, x := range halves {
				assert.Equal(t, x, b.At(i), "f16 %d", i)
				assert.Equal(t, x, c.At(i), "bf16 %d", i)
			}

			s := ts["scalar"]
			assert.Equal(t, []int{}, s.Shape)
			assert.Equal(t, 1, s.Len())
			assert.Equal(t, []float32{7}, s.F32)
			e := ts["empty"]
			assert.Equal(t, []int{0, 5}, e.Shape)
			assert.Empty(t, e.U16)
			assert.Equal(t, big, ts["big"].F32)

			again, err := parseSafetensors("bytes", file)
			require.NoError(t, err)
			stSame(t, again, ts)
			if native && mapped {
				assert.NotNil(t, ts["big"].mem, "an aligned tensor of a mapped file points into the mapping")
			}
		})
	}
}

// stCorruptCase is a broken file and a fragment its error must contain.
type stCorruptCase struct {
	name string
	data []byte
	want string
}

func stCorruptCases() []stCorruptCase {
	okData := make([]byte, 8)
	entry := func(dtype, shape, offs string) string {
		return `{"t": {"dtype": "` + dtype + `", "shape": ` + shape + `, "data_offsets": ` + offs + `}}`
	}
	valid := stEncode(stF32("w", []float32{1, 2}, 2))
	hugeLen := binary.LittleEndian.AppendUint64(nil, 1<<40)
	return []stCorruptCase{
		{"empty", nil, "too short"},
		{"short length", []byte{1, 2, 3, 4, 5}, "too short"},
		{"truncated header", valid[:20], "exceeds"},
		{"header longer than file", append(hugeLen, "{}"...), "exceeds"},
		{"bad json", stRaw(`{"t": {"dtype": "F32",`, okData), "not valid JSON"},
		{"not an object", stRaw(`[1, 2]`, okData), "not a JSON object"},
		{"trailing data", stRaw(entry("F32", "[2]", "[0, 8]")+` {}`, okData), "trailing"},
		{"entry not an object", stRaw(`{"t": 5}`, okData), `tensor "t"`},
		{"missing offsets", stRaw(`{"t": {"dtype": "F32", "shape": [2]}}`, okData), "needs dtype, shape and data_offsets"},
		{"three offsets", stRaw(entry("F32", "[2]", "[0, 4, 8]"), okData), "two elements"},
		{"offsets out of range", stRaw(entry("F32", "[4]", "[0, 16]"), okData), "out of range"},
		{"offsets past data", stRaw(entry("F32", "[2]", "[8, 16]"), okData), "out of range"},
		{"begin after end", stRaw(entry("F32", "[0]", "[8, 0]"), okData), "begin after end"},
		{"negative offset", stRaw(entry("F32", "[2]", "[-8, 0]"), okData), "negative data_offsets"},
		{"size mismatch", stRaw(entry("F32", "[3]", "[0, 8]"), okData), "needs 12"},
		{"unknown dtype", stRaw(entry("I64", "[1]", "[0, 8]"), okData), `tensor "t" has dtype "I64"`},
		{"negative shape", stRaw(entry("F32", "[-2]", "[0, 8]"), okData), "negative dimension"},
		{"fractional shape", stRaw(entry("F32", "[2.5]", "[0, 8]"), okData), `tensor "t"`},
		{"shape overflow", stRaw(entry("F32", "[4294967296, 4294967296, 0]", "[0, 0]"), okData), "overflows"},
		{"bytes overflow", stRaw(entry("F32", "[4611686018427387904]", "[0, 8]"), okData), "overflows"},
		{"empty name", stRaw(`{"": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}`, okData), "empty name"},
		{"duplicate name", stRaw(`{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}`, okData), "twice"},
		{"overlap", stRaw(`{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}`, okData), "overlap"},
		{"metadata not an object", stRaw(`{"__metadata__": 3}`, nil), "__metadata__"},
	}
}

func TestSafetensorsCorrupt(t *testing.T) {
	dir := t.TempDir()
	for i, c := range stCorruptCases() {
		t.Run(c.name, func(t *testing.T) {
			path := stWrite(t, dir, fmt.Sprintf("case%02d.safetensors", i), c.data)
			ts, err := ReadSafetensors(path)
			require.Error(t, err)
			assert.Nil(t, ts)
			assert.Contains(t, err.Error(), path)
			assert.Contains(t, err.Error(), c.want)
		})
	}
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(dir, "absent.safetensors")
		_, err := ReadSafetensors(path)
		require.Error(t, err)
		assert.Contains(t, err.Error(), path)
	})
}

// TestSafetensorsHeaderLimit covers a header length that fits the file but
// is beyond any real header: it is refused before anything is allocated.
func TestSafetensorsHeaderLimit(t *testing.T) {
	lenOnly := binary.LittleEndian.AppendUint64(nil, maxSafetensorsHeader+1)
	_, err := readSafetensors("huge", strings.NewReader(string(lenOnly)), 1<<40)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "huge")
	assert.Contains(t, err.Error(), "implausibly large")
}

// TestSafetensorsShortRead covers a file that shrinks between the size check
// and the read: the error is a clean unexpected EOF.
func TestSafetensorsShortRead(t *testing.T) {
	file := stEncode(stF32("w", []float32{1, 2, 3, 4}, 4))
	for _, native := range []bool{true, false} {
		stSetNative(t, native)
		_, err := readSafetensors("shrunk", strings.NewReader(string(file[:len(file)-4])), int64(len(file)))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "shrunk")
		assert.Contains(t, err.Error(), "unexpected EOF")
	}
}

func TestSafetensorsSharded(t *testing.T) {
	dir := t.TempDir()
	stWrite(t, dir, "s-1.safetensors", stEncode(stF32("a", []float32{1, 2}, 2), stF32("unmapped", []float32{9}, 1)))
	stWrite(t, dir, "s-2.safetensors", stEncode(stU16("b", "BF16", []uint16{F32ToBF16(3)}, 1), stF32("c", []float32{4}, 1)))
	writeIndex := func(name string, m map[string]string) string {
		b, err := json.Marshal(map[string]any{"metadata": map[string]int{"total_size": 14}, "weight_map": m})
		require.NoError(t, err)
		return stWrite(t, dir, name, b)
	}
	idx := writeIndex("model.safetensors.index.json", map[string]string{"a": "s-1.safetensors", "b": "s-2.safetensors", "c": "s-2.safetensors"})
	ts, err := ReadSafetensorsIndex(idx)
	require.NoError(t, err)
	require.Len(t, ts, 3)
	assert.Equal(t, []float32{1, 2}, ts["a"].F32)
	assert.Equal(t, float32(3), ts["b"].At(0))
	assert.Equal(t, []float32{4}, ts["c"].F32)

	for _, c := range []struct {
		name string
		m    map[string]string
		want string
	}{
		{"wrong shard", map[string]string{"a": "s-2.safetensors"}, `maps tensor "a"`},
		{"missing shard", map[string]string{"a": "s-3.safetensors"}, "s-3.safetensors"},
		{"escaping path", map[string]string{"a": "../s-1.safetensors"}, "not a file in the index's folder"},
		{"empty map", map[string]string{}, "weight_map is missing or empty"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := writeIndex("bad.index.json", c.m)
			_, err := ReadSafetensorsIndex(p)
			require.Error(t, err)
			assert.Contains(t, err.Error(), p)
			assert.Contains(t, err.Error(), c.want)
		})
	}
	t.Run("bad json", func(t *testing.T) {
		p := stWrite(t, dir, "broken.index.json", []byte(`{"weight_map": [`))
		_, err := ReadSafetensorsIndex(p)
		require.Error(t, err)
		assert.Contains(t, err.Error(), p)
	})
	t.Run("corrupt shard", func(t *testing.T) {
		stWrite(t, dir, "s-bad.safetensors", []byte{1, 2, 3})
		p := writeIndex("corrupt.index.json", map[string]string{"a": "s-bad.safetensors"})
		_, err := ReadSafetensorsIndex(p)
		require.Error(t, err)
		assert.Contains(t, err.Error(), p)
		assert.Contains(t, err.Error(), "s-bad.safetensors")
	})
}

func TestSafetensorsGutenberg(t *testing.T) {
	path := sharedFile(t, "models/gutenberg-llama-25m/model.safetensors")
	ts, err := ReadSafetensors(path)
	require.NoError(t, err)
	assert.Len(t, ts, 74)
	e := ts["model.embed_tokens.weight"]
	require.NotNil(t, e)
	assert.Equal(t, BF16, e.DType)
	assert.Equal(t, []int{32000, 384}, e.Shape)
	assert.Len(t, e.U16, 32000*384)
	for name, tt := range ts {
		assert.Equal(t, BF16, tt.DType, name)
		assert.Len(t, tt.U16, tt.Len(), name)
	}
	// Norm weights are trained from 1: they must decode near it, a check
	// that the bytes were not shifted or swapped.
	n := ts["model.norm.weight"]
	var sum float64
	for i := range n.Len() {
		sum += float64(n.At(i))
	}
	mean := sum / float64(n.Len())
	assert.True(t, mean > 0.05 && mean < 20, "final norm mean %v", mean)
}

func FuzzSafetensors(f *testing.F) {
	f.Add(stEncode(stF32("a", []float32{1, 2, 3}, 3), stU16("b", "BF16", []uint16{1, 2}, 2, 1)))
	f.Add(stEncode(stU16("h", "F16", []uint16{0x3c00}), stF32("z", nil, 0)))
	f.Add(stEncode())
	for _, c := range stCorruptCases() {
		if len(c.data) < 1<<16 {
			f.Add(c.data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ts, err := parseSafetensors("fuzz.safetensors", data)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.safetensors") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		var total int64
		for name, tt := range ts {
			if tt.Name != name {
				t.Fatalf("tensor %q named %q", name, tt.Name)
			}
			have := len(tt.F32)
			if tt.DType != F32 {
				have = len(tt.U16)
			}
			if have != tt.Len() {
				t.Fatalf("tensor %q: %d elements, shape %v", name, have, tt.Shape)
			}
			total += tt.Bytes()
		}
		if total > int64(len(data)) {
			t.Fatalf("tensors hold %d bytes, the file has %d", total, len(data))
		}
	})
}
