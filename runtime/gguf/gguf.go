// Package gguf reads and writes GGUF files, the single-file model format of
// llama.cpp and ggml (format versions 2 and 3, little-endian).
//
// A GGUF file is a header (the magic "GGUF", the version, the tensor and
// metadata counts), typed metadata key/values, one info record per tensor
// (name, dimensions innermost first, element type, offset), padding to the
// file's alignment, and the tensor data. [Open] and [Parse] check every count,
// length, dimension and offset against the size of the file before
// allocating, so a corrupt or hostile file gives an error naming the byte
// offset and the key or tensor at fault, never a panic or an allocation much
// larger than the file.
//
// Tensor elements are stored in ggml's types: plain floats (F32, F16, BF16)
// or blocks of quantized values with their scales (Q4_0, Q4_1, Q5_0, Q5_1,
// Q8_0, Q4_K, Q5_K, Q6_K). [Dequantize] turns any of these into float32
// exactly as ggml's reference code does; [Quantize] and [Writer] make files,
// for tests and conversion.
package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"sort"
)

// Magic is the first four bytes of every GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the alignment of tensor data when general.alignment is
// absent.
const DefaultAlignment = 32

// MaxDims is the most dimensions a tensor may have (ggml's GGML_MAX_DIMS).
const MaxDims = 4

// maxDepth bounds the nesting of arrays of arrays.
const maxDepth = 4

// ValueType is the type of a metadata value.
type ValueType uint32

// The metadata value types of the GGUF specification.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
	"bool", "string", "array", "uint64", "int64", "float64"}

// String returns the specification's name of the type.
func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("type %d", uint32(t))
}

// size is the encoded size of a scalar of type t; 0 for strings and arrays.
func (t ValueType) size() int64 {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// Array is a metadata array: the element type and the elements as a Go
// slice ([]uint8, []int8, []uint16, []int16, []uint32, []int32, []float32,
// []bool, []string, []uint64, []int64, []float64, or []Array when the
// elements are arrays themselves).
type Array struct {
	Elem   ValueType
	Values any
}

// Len returns the number of elements.
func (a Array) Len() int {
	switch v := a.Values.(type) {
	case []uint8:
		return len(v)
	case []int8:
		return len(v)
	case []uint16:
		return len(v)
	case []int16:
		return len(v)
	case []uint32:
		return len(v)
	case []int32:
		return len(v)
	case []float32:
		return len(v)
	case []bool:
		return len(v)
	case []string:
		return len(v)
	case []uint64:
		return len(v)
	case []int64:
		return len(v)
	case []float64:
		return len(v)
	case []Array:
		return len(v)
	}
	return 0
}

// KV is one metadata key/value. Value holds the Go type of Type (uint8, int8,
// uint16, int16, uint32, int32, float32, bool, string, uint64, int64,
// float64) or an Array.
type KV struct {
	Key    string
	Type   ValueType
	Value  any
	Offset int64 // where the key starts in the file
}

// TensorInfo describes one tensor of a file.
type TensorInfo struct {
	Name       string
	Dims       []uint64 // ggml order: Dims[0] is the innermost (contiguous) dimension
	Type       GGMLType
	Offset     uint64 // of the data, relative to the start of the data section
	Size       int64  // bytes of data
	Elems      int64  // number of elements
	InfoOffset int64  // where the tensor's info record starts in the file
}

// Shape returns the dimensions outermost first (row-major order, as
// safetensors and PyTorch write them): the reverse of Dims.
func (t *TensorInfo) Shape() []int {
	s := make([]int, len(t.Dims))
	for i, d := range t.Dims {
		s[len(s)-1-i] = int(d)
	}
	return s
}

// File is a parsed GGUF file: its metadata and tensor infos, and the reader
// its tensor data comes from.
type File struct {
	Name       string // the path, or the name given to Parse; used in errors
	Version    uint32
	Alignment  int64
	KVs        []KV         // in file order
	Tensors    []TensorInfo // in file order
	DataOffset int64        // where the data section starts in the file
	Size       int64        // bytes in the file

	keys    map[string]int
	tensors map[string]int
	r       io.ReaderAt
	closer  io.Closer
}

// Open parses the GGUF file at path; its tensor data stays on disk until
// read. Close the file when done.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("gguf: %w", err)
	}
	if st.IsDir() {
		fh.Close()
		return nil, fmt.Errorf("gguf %s: is a directory", path)
	}
	f, err := NewFile(path, fh, st.Size())
	if err != nil {
		fh.Close()
		return nil, err
	}
	f.closer = fh
	return f, nil
}

// Parse parses a GGUF file held in memory; name is used in errors.
func Parse(name string, data []byte) (*File, error) {
	return NewFile(name, bytesReaderAt(data), int64(len(data)))
}

// bytesReaderAt reads from a byte slice.
type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Close closes the file Open opened; it does nothing for Parse and NewFile.
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	err := f.closer.Close()
	f.closer = nil
	return err
}

// NewFile parses the GGUF file of the given size that r reads; name is used
// in errors.
func NewFile(name string, r io.ReaderAt, size int64) (*File, error) {
	p := &parser{name: name, br: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 1<<16), size: size}
	f := &File{Name: name, Size: size, r: r, keys: map[string]int{}, tensors: map[string]int{}}
	if err := p.header(f); err != nil {
		return nil, err
	}
	return f, nil
}

// parser reads a GGUF header sequentially, keeping the offset for errors.
type parser struct {
	name    string
	br      *bufio.Reader
	pos     int64
	size    int64
	scratch [8]byte
}

func (p *parser) errorf(at int64, format string, args ...any) error {
	return fmt.Errorf("gguf %s: offset %d: %s", p.name, at, fmt.Sprintf(format, args...))
}

// need checks that n more bytes are in the file.
func (p *parser) need(n int64, what string) error {
	if n < 0 || n > p.size-p.pos {
		return p.errorf(p.pos, "%s needs %d bytes, but the file ends %d bytes later (truncated?)", what, n, p.size-p.pos)
	}
	return nil
}

// fixed reads n (at most 8) bytes into the scratch buffer.
func (p *parser) fixed(n int, what string) ([]byte, error) {
	if err := p.need(int64(n), what); err != nil {
		return nil, err
	}
	b := p.scratch[:n]
	if _, err := io.ReadFull(p.br, b); err != nil {
		return nil, p.errorf(p.pos, "reading %s: %v", what, err)
	}
	p.pos += int64(n)
	return b, nil
}

// bytes reads n bytes into a new slice.
func (p *parser) bytes(n int64, what string) ([]byte, error) {
	if err := p.need(n, what); err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(p.br, b); err != nil {
		return nil, p.errorf(p.pos, "reading %s: %v", what, err)
	}
	p.pos += n
	return b, nil
}

func (p *parser) u32(what string) (uint32, error) {
	b, err := p.fixed(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (p *parser) u64(what string) (uint64, error) {
	b, err := p.fixed(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// str reads a string: a uint64 length and that many bytes.
func (p *parser) str(what string) (string, error) {
	at := p.pos
	n, err := p.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(p.size-p.pos) {
		return "", p.errorf(at, "%s has length %d, but the file ends %d bytes later", what, n, p.size-p.pos)
	}
	b, err := p.bytes(int64(n), what)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// count reads an element count and checks that count elements of at least
// minSize bytes each fit in the rest of the file.
func (p *parser) count(what string, minSize int64) (int, error) {
	at := p.pos
	n, err := p.u64(what)
	if err != nil {
		return 0, err
	}
	left := p.size - p.pos
	if n > uint64(left/minSize) {
		return 0, p.errorf(at, "%s is %d, but the %d bytes left in the file hold at most %d (truncated or corrupt file?)", what, n, left, left/minSize)
	}
	return int(n), nil
}

func (p *parser) header(f *File) error {
	if p.size < 4 {
		return p.errorf(0, "file has %d bytes, too short for a GGUF header", p.size)
	}
	magic, err := p.fixed(4, "magic")
	if err != nil {
		return err
	}
	if string(magic) != Magic {
		return p.errorf(0, "not a GGUF file (magic %q, want %q)", magic, Magic)
	}
	v, err := p.u32("version")
	if err != nil {
		return err
	}
	switch {
	case v == 2 || v == 3:
	case v == 1:
		return p.errorf(4, "GGUF version 1 is not supported (want 2 or 3; convert the file again)")
	case v&0xFFFF == 0:
		return p.errorf(4, "version %#x looks byte-swapped: big-endian GGUF files are not supported", v)
	default:
		return p.errorf(4, "GGUF version %d is not supported (want 2 or 3)", v)
	}
	f.Version = v
	// A tensor info takes at least 8 (name length) + 4 (dims) + 4 (type) +
	// 8 (offset) bytes; a key/value at least 8 (key length) + 4 (type) + 1.
	nTensors, err := p.count("tensor count", 24)
	if err != nil {
		return err
	}
	nKV, err := p.count("metadata count", 13)
	if err != nil {
		return err
	}
	f.KVs = make([]KV, 0, nKV)
	for i := range nKV {
		at := p.pos
		key, err := p.str(fmt.Sprintf("key of metadata entry %d", i))
		if err != nil {
			return err
		}
		if key == "" {
			return p.errorf(at, "metadata entry %d has an empty key", i)
		}
		if j, dup := f.keys[key]; dup {
			return p.errorf(at, "key %q appears twice (first at offset %d)", key, f.KVs[j].Offset)
		}
		t, err := p.u32(fmt.Sprintf("type of key %q", key))
		if err != nil {
			return err
		}
		val, err := p.value(ValueType(t), 0, fmt.Sprintf("key %q", key))
		if err != nil {
			return err
		}
		f.keys[key] = len(f.KVs)
		f.KVs = append(f.KVs, KV{Key: key, Type: ValueType(t), Value: val, Offset: at})
	}
	if err := f.setAlignment(); err != nil {
		return err
	}
	f.Tensors = make([]TensorInfo, 0, nTensors)
	for i := range nTensors {
		t, err := p.tensorInfo(i)
		if err != nil {
			return err
		}
		if j, dup := f.tensors[t.Name]; dup {
			return p.errorf(t.InfoOffset, "tensor %q appears twice (first at offset %d)", t.Name, f.Tensors[j].InfoOffset)
		}
		f.tensors[t.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, t)
	}
	f.DataOffset = p.pos
	if nTensors > 0 {
		f.DataOffset = alignUp(p.pos, f.Alignment)
	}
	return f.checkData()
}

// value reads a metadata value of type t; what names it in errors.
func (p *parser) value(t ValueType, depth int, what string) (any, error) {
	switch t {
	case TypeString:
		return p.str(what)
	case TypeArray:
		if depth >= maxDepth {
			return nil, p.errorf(p.pos, "%s: arrays nested more than %d deep", what, maxDepth)
		}
		at := p.pos
		et, err := p.u32(what + " element type")
		if err != nil {
			return nil, err
		}
		elem := ValueType(et)
		minSize := elem.size()
		switch elem {
		case TypeString:
			minSize = 8
		case TypeArray:
			minSize = 12
		default:
			if minSize == 0 {
				return nil, p.errorf(at, "%s: unknown array element type %d", what, et)
			}
		}
		n, err := p.count(what+" array length", minSize)
		if err != nil {
			return nil, err
		}
		return p.array(elem, n, depth, what)
	}
	sz := t.size()
	if sz == 0 {
		return nil, p.errorf(p.pos-4, "%s: unknown value type %d", what, uint32(t))
	}
	b, err := p.fixed(int(sz), what)
	if err != nil {
		return nil, err
	}
	return scalar(t, b, p, what)
}

// scalar decodes one scalar of type t from b.
func scalar(t ValueType, b []byte, p *parser, what string) (any, error) {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return b[0], nil
	case TypeInt8:
		return int8(b[0]), nil
	case TypeUint16:
		return le.Uint16(b), nil
	case TypeInt16:
		return int16(le.Uint16(b)), nil
	case TypeUint32:
		return le.Uint32(b), nil
	case TypeInt32:
		return int32(le.Uint32(b)), nil
	case TypeFloat32:
		return math.Float32frombits(le.Uint32(b)), nil
	case TypeBool:
		if b[0] > 1 {
			return nil, p.errorf(p.pos-1, "%s: bool byte is %d, want 0 or 1", what, b[0])
		}
		return b[0] == 1, nil
	case TypeUint64:
		return le.Uint64(b), nil
	case TypeInt64:
		return int64(le.Uint64(b)), nil
	case TypeFloat64:
		return math.Float64frombits(le.Uint64(b)), nil
	}
	return nil, p.errorf(p.pos, "%s: unknown value type %d", what, uint32(t))
}

// array reads n elements of type elem.
func (p *parser) array(elem ValueType, n, depth int, what string) (Array, error) {
	a := Array{Elem: elem}
	switch elem {
	case TypeString:
		s := make([]string, n)
		for i := range s {
			var err error
			if s[i], err = p.str(fmt.Sprintf("%s element %d", what, i)); err != nil {
				return a, err
			}
		}
		a.Values = s
		return a, nil
	case TypeArray:
		s := make([]Array, n)
		for i := range s {
			v, err := p.value(TypeArray, depth+1, fmt.Sprintf("%s element %d", what, i))
			if err != nil {
				return a, err
			}
			s[i] = v.(Array)
		}
		a.Values = s
		return a, nil
	}
	sz := elem.size()
	at := p.pos
	raw, err := p.bytes(int64(n)*sz, what+" elements")
	if err != nil {
		return a, err
	}
	le := binary.LittleEndian
	switch elem {
	case TypeUint8:
		a.Values = raw
	case TypeInt8:
		v := make([]int8, n)
		for i := range v {
			v[i] = int8(raw[i])
		}
		a.Values = v
	case TypeBool:
		v := make([]bool, n)
		for i := range v {
			if raw[i] > 1 {
				return a, p.errorf(at+int64(i), "%s element %d: bool byte is %d, want 0 or 1", what, i, raw[i])
			}
			v[i] = raw[i] == 1
		}
		a.Values = v
	case TypeUint16:
		v := make([]uint16, n)
		for i := range v {
			v[i] = le.Uint16(raw[2*i:])
		}
		a.Values = v
	case TypeInt16:
		v := make([]int16, n)
		for i := range v {
			v[i] = int16(le.Uint16(raw[2*i:]))
		}
		a.Values = v
	case TypeUint32:
		v := make([]uint32, n)
		for i := range v {
			v[i] = le.Uint32(raw[4*i:])
		}
		a.Values = v
	case TypeInt32:
		v := make([]int32, n)
		for i := range v {
			v[i] = int32(le.Uint32(raw[4*i:]))
		}
		a.Values = v
	case TypeFloat32:
		v := make([]float32, n)
		for i := range v {
			v[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		}
		a.Values = v
	case TypeUint64:
		v := make([]uint64, n)
		for i := range v {
			v[i] = le.Uint64(raw[8*i:])
		}
		a.Values = v
	case TypeInt64:
		v := make([]int64, n)
		for i := range v {
			v[i] = int64(le.Uint64(raw[8*i:]))
		}
		a.Values = v
	case TypeFloat64:
		v := make([]float64, n)
		for i := range v {
			v[i] = math.Float64frombits(le.Uint64(raw[8*i:]))
		}
		a.Values = v
	}
	return a, nil
}

// tensorInfo reads and checks the info record of tensor i.
func (p *parser) tensorInfo(i int) (TensorInfo, error) {
	t := TensorInfo{InfoOffset: p.pos}
	name, err := p.str(fmt.Sprintf("name of tensor %d", i))
	if err != nil {
		return t, err
	}
	if name == "" {
		return t, p.errorf(t.InfoOffset, "tensor %d has an empty name", i)
	}
	t.Name = name
	what := fmt.Sprintf("tensor %q", name)
	at := p.pos
	nd, err := p.u32(what + " dimension count")
	if err != nil {
		return t, err
	}
	if nd > MaxDims {
		return t, p.errorf(at, "%s has %d dimensions, at most %d are allowed", what, nd, MaxDims)
	}
	t.Dims = make([]uint64, nd)
	elems := uint64(1)
	for j := range t.Dims {
		at := p.pos
		d, err := p.u64(fmt.Sprintf("%s dimension %d", what, j))
		if err != nil {
			return t, err
		}
		hi, lo := bits.Mul64(elems, d)
		if d > math.MaxInt64 || hi != 0 || lo > math.MaxInt64 {
			return t, p.errorf(at, "%s: dimension %d is %d; the element count overflows", what, j, d)
		}
		t.Dims[j] = d
		elems = lo
	}
	t.Elems = int64(elems)
	at = p.pos
	typ, err := p.u32(what + " type")
	if err != nil {
		return t, err
	}
	t.Type = GGMLType(typ)
	bs, ts := t.Type.BlockSize(), t.Type.TypeSize()
	if bs == 0 {
		return t, p.errorf(at, "%s has element type %s (id %d), whose layout this reader does not know", what, t.Type, typ)
	}
	if len(t.Dims) > 0 && t.Dims[0]%uint64(bs) != 0 {
		return t, p.errorf(at, "%s: type %s packs blocks of %d, but the row length %d is not a multiple of it", what, t.Type, bs, t.Dims[0])
	}
	if len(t.Dims) == 0 && bs != 1 {
		return t, p.errorf(at, "%s: a scalar cannot have block type %s", what, t.Type)
	}
	blocks := elems / uint64(bs)
	if blocks > math.MaxInt64/uint64(ts) {
		return t, p.errorf(at, "%s: %d elements of %s overflow the data size", what, elems, t.Type)
	}
	t.Size = int64(blocks * uint64(ts))
	if t.Offset, err = p.u64(what + " data offset"); err != nil {
		return t, err
	}
	return t, nil
}

// setAlignment reads general.alignment.
func (f *File) setAlignment() error {
	f.Alignment = DefaultAlignment
	kv := f.KV("general.alignment")
	if kv == nil {
		return nil
	}
	a, err := f.uintOf(kv)
	if err != nil {
		return err
	}
	if a == 0 || a&(a-1) != 0 || a > 1<<30 {
		return fmt.Errorf("gguf %s: offset %d: key \"general.alignment\" is %d, want a power of two", f.Name, kv.Offset, a)
	}
	f.Alignment = int64(a)
	return nil
}

// checkData checks that every tensor's data is aligned, inside the file, and
// apart from the others.
func (f *File) checkData() error {
	if len(f.Tensors) == 0 {
		return nil
	}
	if f.DataOffset > f.Size {
		return fmt.Errorf("gguf %s: the data section would start at offset %d, past the end of the file (%d bytes)", f.Name, f.DataOffset, f.Size)
	}
	dataLen := uint64(f.Size - f.DataOffset)
	order := make([]int, len(f.Tensors))
	for i := range order {
		order[i] = i
		t := &f.Tensors[i]
		if t.Offset%uint64(f.Alignment) != 0 {
			return fmt.Errorf("gguf %s: offset %d: tensor %q: data offset %d is not a multiple of the alignment %d", f.Name, t.InfoOffset, t.Name, t.Offset, f.Alignment)
		}
		if t.Offset > dataLen || uint64(t.Size) > dataLen-t.Offset {
			return fmt.Errorf("gguf %s: offset %d: tensor %q: data [%d, %d) of the data section runs past its end (%d bytes from offset %d; truncated file?)",
				f.Name, t.InfoOffset, t.Name, t.Offset, t.Offset+uint64(t.Size), dataLen, f.DataOffset)
		}
	}
	sort.Slice(order, func(a, b int) bool { return f.Tensors[order[a]].Offset < f.Tensors[order[b]].Offset })
	for k := 1; k < len(order); k++ {
		a, b := &f.Tensors[order[k-1]], &f.Tensors[order[k]]
		if a.Size > 0 && b.Size > 0 && b.Offset < a.Offset+uint64(a.Size) {
			return fmt.Errorf("gguf %s: tensors %q [%d, %d) and %q [%d, %d) overlap", f.Name,
				a.Name, a.Offset, a.Offset+uint64(a.Size), b.Name, b.Offset, b.Offset+uint64(b.Size))
		}
	}
	return nil
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }
