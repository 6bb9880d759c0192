package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// Writer builds a GGUF file (version 3): metadata set with Set, tensors
// added with AddTensor, then WriteTo. Tensor data is laid out in the order
// added, each aligned to Alignment.
type Writer struct {
	// Alignment of tensor data; 0 means DefaultAlignment. Any other value is
	// written as general.alignment.
	Alignment int

	kvs     []KV
	keys    map[string]bool
	tensors []writerTensor
	names   map[string]bool
}

type writerTensor struct {
	name string
	typ  GGMLType
	dims []uint64
	data []byte
}

// Set adds a metadata key with a Go value: uint8, int8, uint16, int16,
// uint32, int32, float32, bool, string, uint64, int64, float64, a slice of
// one of these, or an Array. Keys may be set once.
func (w *Writer) Set(key string, value any) error {
	if key == "" {
		return fmt.Errorf("gguf writer: empty key")
	}
	if w.keys[key] {
		return fmt.Errorf("gguf writer: key %q set twice", key)
	}
	t, v, err := typeOf(value)
	if err != nil {
		return fmt.Errorf("gguf writer: key %q: %w", key, err)
	}
	if w.keys == nil {
		w.keys = map[string]bool{}
	}
	w.keys[key] = true
	w.kvs = append(w.kvs, KV{Key: key, Type: t, Value: v})
	return nil
}

// typeOf returns the GGUF type of a Go value, with slices wrapped in Array.
func typeOf(value any) (ValueType, any, error) {
	switch v := value.(type) {
	case uint8:
		return TypeUint8, v, nil
	case int8:
		return TypeInt8, v, nil
	case uint16:
		return TypeUint16, v, nil
	case int16:
		return TypeInt16, v, nil
	case uint32:
		return TypeUint32, v, nil
	case int32:
		return TypeInt32, v, nil
	case float32:
		return TypeFloat32, v, nil
	case bool:
		return TypeBool, v, nil
	case string:
		return TypeString, v, nil
	case uint64:
		return TypeUint64, v, nil
	case int64:
		return TypeInt64, v, nil
	case float64:
		return TypeFloat64, v, nil
	case Array:
		if err := checkArray(v); err != nil {
			return 0, nil, err
		}
		return TypeArray, v, nil
	case []uint8:
		return TypeArray, Array{TypeUint8, v}, nil
	case []int8:
		return TypeArray, Array{TypeInt8, v}, nil
	case []uint16:
		return TypeArray, Array{TypeUint16, v}, nil
	case []int16:
		return TypeArray, Array{TypeInt16, v}, nil
	case []uint32:
		return TypeArray, Array{TypeUint32, v}, nil
	case []int32:
		return TypeArray, Array{TypeInt32, v}, nil
	case []float32:
		return TypeArray, Array{TypeFloat32, v}, nil
	case []bool:
		return TypeArray, Array{TypeBool, v}, nil
	case []string:
		return TypeArray, Array{TypeString, v}, nil
	case []uint64:
		return TypeArray, Array{TypeUint64, v}, nil
	case []int64:
		return TypeArray, Array{TypeInt64, v}, nil
	case []float64:
		return TypeArray, Array{TypeFloat64, v}, nil
	case []Array:
		return TypeArray, Array{TypeArray, v}, nil
	}
	return 0, nil, fmt.Errorf("no GGUF type for a Go %T", value)
}

// checkArray checks that an Array's element type matches its Go slice.
func checkArray(a Array) error {
	if items, ok := a.Values.([]Array); ok {
		if a.Elem != TypeArray {
			return fmt.Errorf("array of arrays with element type %s", a.Elem)
		}
		for _, it := range items {
			if err := checkArray(it); err != nil {
				return err
			}
		}
		return nil
	}
	t, _, err := typeOf(a.Values)
	if err != nil {
		return err
	}
	if t != TypeArray {
		return fmt.Errorf("array values are a Go %T, not a slice", a.Values)
	}
	_, wrapped, _ := typeOf(a.Values)
	if e := wrapped.(Array).Elem; e != a.Elem {
		return fmt.Errorf("array element type %s holds %s values", a.Elem, e)
	}
	return nil
}

// AddTensor adds a tensor of type typ with dimensions dims in ggml order
// (innermost first: a [rows, cols] matrix is dims {cols, rows}) and its
// stored bytes, which must be exactly the size the type and dims imply.
func (w *Writer) AddTensor(name string, typ GGMLType, dims []uint64, data []byte) error {
	if name == "" {
		return fmt.Errorf("gguf writer: empty tensor name")
	}
	if w.names[name] {
		return fmt.Errorf("gguf writer: tensor %q added twice", name)
	}
	if len(dims) > MaxDims {
		return fmt.Errorf("gguf writer: tensor %q has %d dimensions, at most %d", name, len(dims), MaxDims)
	}
	n := uint64(1)
	for _, d := range dims {
		if d != 0 && n > math.MaxInt64/d {
			return fmt.Errorf("gguf writer: tensor %q: dims %v too large", name, dims)
		}
		n *= d
	}
	if len(dims) > 0 && typ.BlockSize() > 0 && dims[0]%uint64(typ.BlockSize()) != 0 {
		return fmt.Errorf("gguf writer: tensor %q: row length %d is not a multiple of %s's block of %d", name, dims[0], typ, typ.BlockSize())
	}
	size, err := typ.RowSize(int(n))
	if err != nil {
		return fmt.Errorf("gguf writer: tensor %q: %w", name, err)
	}
	if size != len(data) {
		return fmt.Errorf("gguf writer: tensor %q: %s dims %v take %d bytes, have %d", name, typ, dims, size, len(data))
	}
	if w.names == nil {
		w.names = map[string]bool{}
	}
	w.names[name] = true
	w.tensors = append(w.tensors, writerTensor{name: name, typ: typ, dims: append([]uint64(nil), dims...), data: data})
	return nil
}

// countingWriter counts the bytes written and keeps the first error.
type countingWriter struct {
	w   *bufio.Writer
	n   int64
	err error
}

func (c *countingWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	k, err := c.w.Write(b)
	c.n += int64(k)
	c.err = err
}

func (c *countingWriter) u32(v uint32) { c.write(binary.LittleEndian.AppendUint32(nil, v)) }
func (c *countingWriter) u64(v uint64) { c.write(binary.LittleEndian.AppendUint64(nil, v)) }
func (c *countingWriter) str(s string) {
	c.u64(uint64(len(s)))
	c.write([]byte(s))
}

// pad writes zeros up to a multiple of a.
func (c *countingWriter) pad(a int64) {
	if r := c.n % a; r != 0 {
		c.write(make([]byte, a-r))
	}
}

// WriteTo writes the file to out.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	align := int64(w.Alignment)
	if align == 0 {
		align = DefaultAlignment
	}
	if align < 0 || align&(align-1) != 0 {
		return 0, fmt.Errorf("gguf writer: alignment %d is not a power of two", align)
	}
	kvs := w.kvs
	if align != DefaultAlignment && !w.keys["general.alignment"] {
		kvs = append(append([]KV(nil), kvs...), KV{Key: "general.alignment", Type: TypeUint32, Value: uint32(align)})
	}
	c := &countingWriter{w: bufio.NewWriterSize(out, 1<<16)}
	c.write([]byte(Magic))
	c.u32(3)
	c.u64(uint64(len(w.tensors)))
	c.u64(uint64(len(kvs)))
	for _, kv := range kvs {
		c.str(kv.Key)
		c.u32(uint32(kv.Type))
		if err := writeValue(c, kv.Type, kv.Value); err != nil {
			return c.n, fmt.Errorf("gguf writer: key %q: %w", kv.Key, err)
		}
	}
	var off int64
	for _, t := range w.tensors {
		c.str(t.name)
		c.u32(uint32(len(t.dims)))
		for _, d := range t.dims {
			c.u64(d)
		}
		c.u32(uint32(t.typ))
		c.u64(uint64(off))
		off = alignUp(off+int64(len(t.data)), align)
	}
	if len(w.tensors) > 0 {
		c.pad(align)
	}
	start := c.n
	for _, t := range w.tensors {
		c.write(t.data)
		if c.err == nil {
			if r := (c.n - start) % align; r != 0 {
				c.write(make([]byte, align-r))
			}
		}
	}
	if c.err == nil {
		c.err = c.w.Flush()
	}
	return c.n, c.err
}

// writeValue encodes one value of type t.
func writeValue(c *countingWriter, t ValueType, v any) error {
	le := binary.LittleEndian
	switch x := v.(type) {
	case uint8:
		c.write([]byte{x})
	case int8:
		c.write([]byte{byte(x)})
	case uint16:
		c.write(le.AppendUint16(nil, x))
	case int16:
		c.write(le.AppendUint16(nil, uint16(x)))
	case uint32:
		c.u32(x)
	case int32:
		c.u32(uint32(x))
	case float32:
		c.u32(math.Float32bits(x))
	case bool:
		b := byte(0)
		if x {
			b = 1
		}
		c.write([]byte{b})
	case string:
		c.str(x)
	case uint64:
		c.u64(x)
	case int64:
		c.u64(uint64(x))
	case float64:
		c.u64(math.Float64bits(x))
	case Array:
		c.u32(uint32(x.Elem))
		c.u64(uint64(x.Len()))
		return writeArray(c, x)
	default:
		return fmt.Errorf("cannot encode a Go %T as %s", v, t)
	}
	return nil
}

// writeArray encodes the elements of a.
func writeArray(c *countingWriter, a Array) error {
	if items, ok := a.Values.([]Array); ok {
		for _, it := range items {
			if err := writeValue(c, TypeArray, it); err != nil {
				return err
			}
		}
		return nil
	}
	var err error
	each := func(n int, f func(i int) any) {
		for i := 0; i < n && err == nil; i++ {
			err = writeValue(c, a.Elem, f(i))
		}
	}
	switch v := a.Values.(type) {
	case []uint8:
		c.write(v)
	case []int8:
		each(len(v), func(i int) any { return v[i] })
	case []uint16:
		each(len(v), func(i int) any { return v[i] })
	case []int16:
		each(len(v), func(i int) any { return v[i] })
	case []uint32:
		each(len(v), func(i int) any { return v[i] })
	case []int32:
		each(len(v), func(i int) any { return v[i] })
	case []float32:
		each(len(v), func(i int) any { return v[i] })
	case []bool:
		each(len(v), func(i int) any { return v[i] })
	case []string:
		each(len(v), func(i int) any { return v[i] })
	case []uint64:
		each(len(v), func(i int) any { return v[i] })
	case []int64:
		each(len(v), func(i int) any { return v[i] })
	case []float64:
		each(len(v), func(i int) any { return v[i] })
	default:
		return fmt.Errorf("array of Go %T", a.Values)
	}
	return err
}
