package gguf

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// raw builds GGUF bytes field by field, for files the Writer would refuse
// to make.
type raw []byte

func (r raw) u32(v uint32) raw    { return binary.LittleEndian.AppendUint32(r, v) }
func (r raw) u64(v uint64) raw    { return binary.LittleEndian.AppendUint64(r, v) }
func (r raw) str(s string) raw    { return append(r.u64(uint64(len(s))), s...) }
func (r raw) bytes(b ...byte) raw { return append(r, b...) }

// header starts a version-3 file.
func header(nTensors, nKV uint64) raw {
	return raw(Magic).u32(3).u64(nTensors).u64(nKV)
}

// sampleFile writes a file with every metadata type and tensors of several
// element types; it returns the bytes and the values of the tensors.
func sampleFile(t testing.TB, align int) ([]byte, map[string][]float32) {
	t.Helper()
	w := &Writer{Alignment: align}
	set := func(k string, v any) {
		if err := w.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	set("general.architecture", "llama")
	set("u8", uint8(200))
	set("i8", int8(-100))
	set("u16", uint16(60000))
	set("i16", int16(-30000))
	set("u32", uint32(4000000000))
	set("i32", int32(-2000000000))
	set("f32", float32(0.25))
	set("yes", true)
	set("u64", uint64(1)<<40)
	set("i64", int64(-1)<<40)
	set("f64", 1e-300)
	set("strs", []string{"a", "", "ñ"})
	set("f32s", []float32{1, -2})
	set("i32s", []int32{1, 3, 6})
	set("u8s", []uint8{1, 2})
	set("bools", []bool{true, false})
	set("nested", []Array{{Elem: TypeUint16, Values: []uint16{7}}, {Elem: TypeString, Values: []string{"x"}}})
	vals := map[string][]float32{}
	add := func(name string, typ GGMLType, dims ...uint64) {
		n := uint64(1)
		for _, d := range dims {
			n *= d
		}
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(math.Sin(float64(i)*0.37)) * 0.5
		}
		b, err := Quantize(typ, x)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.AddTensor(name, typ, dims, b); err != nil {
			t.Fatal(err)
		}
		y := make([]float32, n)
		if err := Dequantize(typ, b, y); err != nil {
			t.Fatal(err)
		}
		vals[name] = y
	}
	add("norm", F32, 3)
	add("emb", F16, 32, 2)
	add("bf", BF16, 5, 1, 2)
	add("q8", Q8_0, 64, 2)
	add("q4k", Q4_K, 256, 1)
	add("q6k", Q6_K, 256, 2)
	add("q51", Q5_1, 32, 3)
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), vals
}

func TestWriteParseRoundTrip(t *testing.T) {
	for _, align := range []int{0, 64} {
		data, vals := sampleFile(t, align)
		f, err := Parse("sample", data)
		if err != nil {
			t.Fatal(err)
		}
		wantAlign := int64(align)
		if align == 0 {
			wantAlign = DefaultAlignment
		}
		if f.Version != 3 || f.Alignment != wantAlign || f.DataOffset%wantAlign != 0 {
			t.Fatalf("version %d alignment %d data at %d", f.Version, f.Alignment, f.DataOffset)
		}
		want := map[string]any{
			"u8": uint8(200), "i8": int8(-100), "u16": uint16(60000), "i16": int16(-30000),
			"u32": uint32(4000000000), "i32": int32(-2000000000), "f32": float32(0.25), "yes": true,
			"u64": uint64(1) << 40, "i64": int64(-1) << 40, "f64": 1e-300, "general.architecture": "llama",
			"strs":   Array{TypeString, []string{"a", "", "ñ"}},
			"f32s":   Array{TypeFloat32, []float32{1, -2}},
			"i32s":   Array{TypeInt32, []int32{1, 3, 6}},
			"u8s":    Array{TypeUint8, []uint8{1, 2}},
			"bools":  Array{TypeBool, []bool{true, false}},
			"nested": Array{TypeArray, []Array{{TypeUint16, []uint16{7}}, {TypeString, []string{"x"}}}},
		}
		for k, v := range want {
			kv := f.KV(k)
			if kv == nil {
				t.Fatalf("key %s missing", k)
			}
			if !reflect.DeepEqual(kv.Value, v) {
				t.Errorf("key %s: %#v, want %#v", k, kv.Value, v)
			}
		}
		if len(f.Tensors) != len(vals) {
			t.Fatalf("%d tensors, want %d", len(f.Tensors), len(vals))
		}
		for name, v := range vals {
			ti := f.Tensor(name)
			if ti == nil {
				t.Fatalf("tensor %s missing", name)
			}
			if int64(ti.Offset)%wantAlign != 0 {
				t.Errorf("tensor %s at %d, not aligned", name, ti.Offset)
			}
			got, err := f.Float32(ti)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, v) {
				t.Errorf("tensor %s: values differ", name)
			}
		}
		if s := f.Tensor("bf").Shape(); !reflect.DeepEqual(s, []int{2, 1, 5}) {
			t.Errorf("shape %v, want [2 1 5]", s)
		}
	}
}

func TestOpenFile(t *testing.T) {
	data, vals := sampleFile(t, 0)
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.Float32(f.Tensor("q4k"))
	if err != nil || !reflect.DeepEqual(got, vals["q4k"]) {
		t.Fatalf("q4k: %v", err)
	}
	raw, err := f.Raw(f.Tensor("q8"))
	if err != nil || int64(len(raw)) != f.Tensor("q8").Size {
		t.Fatalf("raw q8: %d bytes, %v", len(raw), err)
	}
	if !bytes.Equal(raw, data[f.FileOffset(f.Tensor("q8")):][:len(raw)]) {
		t.Error("raw bytes differ from the file")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Raw(f.Tensor("q8")); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("read after close: %v", err)
	}
	if _, err := Open(filepath.Dir(path)); err == nil {
		t.Error("a directory opened")
	}
	if _, err := Open(path + ".missing"); err == nil {
		t.Error("a missing file opened")
	}
}

func TestGetters(t *testing.T) {
	data, _ := sampleFile(t, 0)
	f, err := Parse("sample", data)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok, err := f.GetUint("u16"); v != 60000 || !ok || err != nil {
		t.Errorf("GetUint u16: %d %v %v", v, ok, err)
	}
	if v, ok, err := f.GetUint("missing"); v != 0 || ok || err != nil {
		t.Errorf("GetUint missing: %d %v %v", v, ok, err)
	}
	if _, _, err := f.GetUint("i8"); err == nil || !strings.Contains(err.Error(), `key "i8" is -100`) {
		t.Errorf("GetUint of a negative value: %v", err)
	}
	if _, _, err := f.GetUint("general.architecture"); err == nil ||
		!strings.Contains(err.Error(), `key "general.architecture": want an unsigned integer, got string`) ||
		!strings.Contains(err.Error(), "offset 24") {
		t.Errorf("GetUint of a string: %v", err)
	}
	if v, _, err := f.GetFloat("f64"); v != 1e-300 || err != nil {
		t.Errorf("GetFloat f64: %v %v", v, err)
	}
	if _, _, err := f.GetFloat("u8"); err == nil {
		t.Error("GetFloat of an integer")
	}
	if v, _, err := f.GetBool("yes"); !v || err != nil {
		t.Errorf("GetBool: %v %v", v, err)
	}
	if v, _, err := f.GetStrings("strs"); len(v) != 3 || err != nil {
		t.Errorf("GetStrings: %v %v", v, err)
	}
	if _, _, err := f.GetStrings("f32s"); err == nil || !strings.Contains(err.Error(), "array of float32") {
		t.Errorf("GetStrings of floats: %v", err)
	}
	if v, _, err := f.GetInt32s("u8s"); !reflect.DeepEqual(v, []int32{1, 2}) || err != nil {
		t.Errorf("GetInt32s of bytes: %v %v", v, err)
	}
	if v, _, err := f.GetFloat32s("f32s"); !reflect.DeepEqual(v, []float32{1, -2}) || err != nil {
		t.Errorf("GetFloat32s: %v %v", v, err)
	}
	if _, _, err := f.GetInt32s("strs"); err == nil {
		t.Error("GetInt32s of strings")
	}
}

// TestTruncated cuts a valid file at every length short of the end of its
// last tensor (the padding after it is optional): each prefix is an error
// that names an offset, never a panic.
func TestTruncated(t *testing.T) {
	data, _ := sampleFile(t, 0)
	f, err := Parse("sample", data)
	if err != nil {
		t.Fatal(err)
	}
	var end int64
	for i := range f.Tensors {
		end = max(end, f.FileOffset(&f.Tensors[i])+f.Tensors[i].Size)
	}
	if end > int64(len(data)) || int64(len(data))-end >= f.Alignment {
		t.Fatalf("last tensor ends at %d of %d bytes", end, len(data))
	}
	if _, err := Parse("cut", data[:end]); err != nil {
		t.Fatalf("file without its final padding: %v", err)
	}
	for n := range int(end) {
		_, err := Parse("cut", data[:n])
		if err == nil {
			t.Fatalf("file cut to %d of %d bytes parsed", n, len(data))
		}
		if !strings.Contains(err.Error(), "offset") {
			t.Fatalf("cut to %d: error names no offset: %v", n, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tensor := func(r raw, name string, dims []uint64, typ uint32, off uint64) raw {
		r = r.str(name).u32(uint32(len(dims)))
		for _, d := range dims {
			r = r.u64(d)
		}
		return r.u32(typ).u64(off)
	}
	pad := func(r raw, n int) raw {
		for len(r)%32 != 0 {
			r = append(r, 0)
		}
		return append(r, make([]byte, n)...)
	}
	cases := []struct {
		name string
		data raw
		want string
	}{
		{"empty", nil, "too short"},
		{"magic", raw("GGML").u32(3).u64(0).u64(0), `not a GGUF file (magic "GGML"`},
		{"version 1", raw(Magic).u32(1).u64(0).u64(0), "offset 4: GGUF version 1 is not supported"},
		{"version 9", raw(Magic).u32(9).u64(0).u64(0), "GGUF version 9 is not supported"},
		{"big-endian", raw(Magic).u32(3 << 24).u64(0).u64(0), "big-endian"},
		{"tensor count", header(1<<40, 0), "offset 8: tensor count is 1099511627776"},
		{"kv count", header(0, 1<<40), "offset 16: metadata count is 1099511627776"},
		{"empty key", header(0, 1).str("").u32(uint32(TypeUint8)).bytes(1), "offset 24: metadata entry 0 has an empty key"},
		{"dup key", header(0, 2).str("a").u32(uint32(TypeUint8)).bytes(1).str("a").u32(uint32(TypeUint8)).bytes(2),
			`offset 38: key "a" appears twice (first at offset 24)`},
		{"value type", header(0, 1).str("k").u32(99).bytes(1), `key "k": unknown value type 99`},
		{"bool", header(0, 1).str("k").u32(uint32(TypeBool)).bytes(2), `key "k": bool byte is 2`},
		{"string length", header(0, 1).str("k").u32(uint32(TypeString)).u64(1 << 50), `key "k" has length 1125899906842624`},
		{"array length", header(0, 1).str("k").u32(uint32(TypeArray)).u32(uint32(TypeUint32)).u64(1 << 40),
			`key "k" array length is 1099511627776`},
		{"array type", header(0, 1).str("k").u32(uint32(TypeArray)).u32(77).u64(1), `key "k": unknown array element type 77`},
		{"deep arrays", func() raw {
			r := header(0, 1).str("k").u32(uint32(TypeArray))
			for range 6 {
				r = r.u32(uint32(TypeArray)).u64(1)
			}
			return r.u32(uint32(TypeUint8)).u64(0)
		}(), "nested more than 4 deep"},
		{"alignment type", header(0, 1).str("general.alignment").u32(uint32(TypeString)).str("32"),
			`key "general.alignment": want an unsigned integer, got string`},
		{"alignment value", header(0, 1).str("general.alignment").u32(uint32(TypeUint32)).u32(24), "is 24, want a power of two"},
		{"empty tensor name", tensor(header(1, 0), "", []uint64{1}, 0, 0), "tensor 0 has an empty name"},
		{"dims", tensor(header(1, 0), "t", []uint64{1, 1, 1, 1, 1}, 0, 0), `tensor "t" has 5 dimensions, at most 4`},
		{"overflow", tensor(header(1, 0), "t", []uint64{1 << 40, 1 << 40}, 0, 0), `tensor "t": dimension 1 is 1099511627776; the element count overflows`},
		{"type", tensor(header(1, 0), "t", []uint64{32}, 16, 0), `tensor "t" has element type IQ2_XXS (id 16), whose layout`},
		{"unknown type", tensor(header(1, 0), "t", []uint64{32}, 99, 0), `element type unknown(99) (id 99)`},
		{"block", tensor(header(1, 0), "t", []uint64{48}, uint32(Q8_0), 0), `tensor "t": type Q8_0 packs blocks of 32, but the row length 48`},
		{"dup tensor", pad(tensor(tensor(header(2, 0), "t", []uint64{8}, 0, 0), "t", []uint64{8}, 0, 32), 64), `tensor "t" appears twice`},
		{"unaligned", pad(tensor(header(1, 0), "t", []uint64{8}, 0, 4), 64), `tensor "t": data offset 4 is not a multiple of the alignment 32`},
		{"past end", pad(tensor(header(1, 0), "t", []uint64{8}, 0, 0), 31), `tensor "t": data [0, 32) of the data section runs past its end (31 bytes`},
		{"no data section", tensor(header(1, 0), "t", []uint64{8}, 0, 0), "past the end of the file"},
		{"overlap", pad(tensor(tensor(header(2, 0), "a", []uint64{16}, 0, 0), "b", []uint64{8}, 0, 32), 96), `tensors "a" [0, 64) and "b" [32, 64) overlap`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("bad.gguf", c.data)
			if err == nil {
				t.Fatalf("parsed")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "gguf bad.gguf: ") {
				t.Fatalf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestWriterErrors(t *testing.T) {
	w := &Writer{}
	if err := w.Set("k", 1); err == nil {
		t.Error("a Go int accepted")
	}
	if err := w.Set("k", uint32(1)); err != nil {
		t.Fatal(err)
	}
	if err := w.Set("k", uint32(2)); err == nil {
		t.Error("a key set twice")
	}
	if err := w.Set("a", Array{Elem: TypeInt32, Values: []uint8{1}}); err == nil {
		t.Error("an array whose element type disagrees with its values")
	}
	if err := w.AddTensor("t", Q8_0, []uint64{32}, make([]byte, 33)); err == nil {
		t.Error("a tensor of the wrong size")
	}
	if err := w.AddTensor("t", Q8_0, []uint64{16, 2}, make([]byte, 34)); err == nil {
		t.Error("a row that is not whole blocks")
	}
	if err := w.AddTensor("t", F32, []uint64{1}, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if err := w.AddTensor("t", F32, []uint64{1}, make([]byte, 4)); err == nil {
		t.Error("a tensor added twice")
	}
	w.Alignment = 24
	if _, err := w.WriteTo(&bytes.Buffer{}); err == nil {
		t.Error("alignment 24 written")
	}
}

// FuzzParse feeds arbitrary bytes to the parser: it must return an error or
// a file whose tensors all read back, never panic. The seeds are a valid file
// and corrupt variants of it.
func FuzzParse(f *testing.F) {
	data, _ := sampleFile(f, 0)
	f.Add(data)
	f.Add(data[:len(data)/2])
	for _, at := range []int{4, 8, 16, 24, 40, 100} {
		c := bytes.Clone(data)
		c[at] ^= 0x80
		f.Add(c)
	}
	small := header(1, 1).str("general.alignment").u32(uint32(TypeUint32)).u32(8).
		str("w").u32(1).u64(32).u32(uint32(Q8_0)).u64(0)
	for len(small)%8 != 0 {
		small = append(small, 0)
	}
	f.Add([]byte(append(small, make([]byte, 34)...)))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := Parse("fuzz", b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "gguf fuzz: ") {
				t.Fatalf("error without the file name: %v", err)
			}
			return
		}
		for i := range g.Tensors {
			ti := &g.Tensors[i]
			if ti.Elems > 1<<20 {
				continue
			}
			if _, err := g.Raw(ti); err != nil {
				t.Fatalf("tensor %q of a parsed file does not read: %v", ti.Name, err)
			}
			if ti.Type.Dequantizable() {
				if _, err := g.Float32(ti); err != nil {
					t.Fatalf("tensor %q: %v", ti.Name, err)
				}
			}
		}
	})
}
