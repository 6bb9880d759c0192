package gguf

// A parsed File's accessors: metadata by key and type (integers widened,
// floats, strings, lists) and tensors by name (raw bytes, float32).

import (
	"errors"
	"fmt"
	"io"
	"math"
)

// KV returns the metadata entry of key, or nil.
func (f *File) KV(key string) *KV {
	if i, ok := f.keys[key]; ok {
		return &f.KVs[i]
	}
	return nil
}

// Tensor returns the info of the named tensor, or nil.
func (f *File) Tensor(name string) *TensorInfo {
	if i, ok := f.tensors[name]; ok {
		return &f.Tensors[i]
	}
	return nil
}

// typeError reports a value of the wrong type.
func (f *File) typeError(kv *KV, want string) error {
	got := kv.Type.String()
	if a, ok := kv.Value.(Array); ok {
		got = "array of " + a.Elem.String()
	}
	return fmt.Errorf("gguf %s: offset %d: key %q: want %s, got %s", f.Name, kv.Offset, kv.Key, want, got)
}

// uintOf reads an integer value that must not be negative.
func (f *File) uintOf(kv *KV) (uint64, error) {
	var v int64
	switch x := kv.Value.(type) {
	case uint8:
		return uint64(x), nil
	case uint16:
		return uint64(x), nil
	case uint32:
		return uint64(x), nil
	case uint64:
		return x, nil
	case int8:
		v = int64(x)
	case int16:
		v = int64(x)
	case int32:
		v = int64(x)
	case int64:
		v = x
	default:
		return 0, f.typeError(kv, "an unsigned integer")
	}
	if v < 0 {
		return 0, fmt.Errorf("gguf %s: offset %d: key %q is %d, want a non-negative integer", f.Name, kv.Offset, kv.Key, v)
	}
	return uint64(v), nil
}

// GetUint returns the value of key, which must be an integer of any width
// and not negative; ok is false when the key is absent.
func (f *File) GetUint(key string) (v uint64, ok bool, err error) {
	kv := f.KV(key)
	if kv == nil {
		return 0, false, nil
	}
	v, err = f.uintOf(kv)
	return v, err == nil, err
}

// GetFloat returns the value of key, a float32 or float64; ok is false when
// the key is absent.
func (f *File) GetFloat(key string) (v float64, ok bool, err error) {
	kv := f.KV(key)
	if kv == nil {
		return 0, false, nil
	}
	switch x := kv.Value.(type) {
	case float32:
		return float64(x), true, nil
	case float64:
		return x, true, nil
	}
	return 0, false, f.typeError(kv, "a float")
}

// GetString returns the value of key, a string; ok is false when the key is
// absent.
func (f *File) GetString(key string) (v string, ok bool, err error) {
	kv := f.KV(key)
	if kv == nil {
		return "", false, nil
	}
	if s, is := kv.Value.(string); is {
		return s, true, nil
	}
	return "", false, f.typeError(kv, "a string")
}

// GetBool returns the value of key, a bool; ok is false when the key is
// absent.
func (f *File) GetBool(key string) (v bool, ok bool, err error) {
	kv := f.KV(key)
	if kv == nil {
		return false, false, nil
	}
	if b, is := kv.Value.(bool); is {
		return b, true, nil
	}
	return false, false, f.typeError(kv, "a bool")
}

// GetStrings returns the value of key, an array of strings; ok is false
// when the key is absent.
func (f *File) GetStrings(key string) (v []string, ok bool, err error) {
	kv := f.KV(key)
	if kv == nil {
		return nil, false, nil
	}
	if a, is := kv.Value.(Array); is {
		if s, is := a.Values.([]string); is {
			return s, true, nil
		}
	}
	return nil, false, f.typeError(kv, "an array of strings")
}

// GetFloat32s returns the value of key, an array of float32 (float64
// elements are narrowed); ok is false when the key is absent.
func (f *File) GetFloat32s(key string) (v []float32, ok bool, err error) {
	kv := f.KV(key)
	if kv == nil {
		return nil, false, nil
	}
	if a, is := kv.Value.(Array); is {
		switch x := a.Values.(type) {
		case []float32:
			return x, true, nil
		case []float64:
			v = make([]float32, len(x))
			for i, e := range x {
				v[i] = float32(e)
			}
			return v, true, nil
		}
	}
	return nil, false, f.typeError(kv, "an array of floats")
}

// GetInt32s returns the value of key, an array of integers of any width
// whose values fit an int32; ok is false when the key is absent.
func (f *File) GetInt32s(key string) (v []int32, ok bool, err error) {
	kv := f.KV(key)
	if kv == nil {
		return nil, false, nil
	}
	a, is := kv.Value.(Array)
	if !is {
		return nil, false, f.typeError(kv, "an array of integers")
	}
	if x, is := a.Values.([]int32); is {
		return x, true, nil
	}
	n := a.Len()
	v = make([]int32, n)
	for i := range n {
		var e int64
		switch x := a.Values.(type) {
		case []uint8:
			e = int64(x[i])
		case []int8:
			e = int64(x[i])
		case []uint16:
			e = int64(x[i])
		case []int16:
			e = int64(x[i])
		case []uint32:
			e = int64(x[i])
		case []uint64:
			if x[i] > math.MaxInt32 {
				e = math.MaxInt64
			} else {
				e = int64(x[i])
			}
		case []int64:
			e = x[i]
		default:
			return nil, false, f.typeError(kv, "an array of integers")
		}
		if e < math.MinInt32 || e > math.MaxInt32 {
			return nil, false, fmt.Errorf("gguf %s: offset %d: key %q: element %d does not fit an int32", f.Name, kv.Offset, kv.Key, i)
		}
		v[i] = int32(e)
	}
	return v, true, nil
}

// Raw returns the stored bytes of tensor t.
func (f *File) Raw(t *TensorInfo) ([]byte, error) {
	b := make([]byte, t.Size)
	if err := f.ReadTensorAt(t, b, 0); err != nil {
		return nil, err
	}
	return b, nil
}

// ReadTensorAt fills b with the stored bytes of tensor t from byte off of
// its data.
func (f *File) ReadTensorAt(t *TensorInfo, b []byte, off int64) error {
	if off < 0 || off > t.Size || int64(len(b)) > t.Size-off {
		return fmt.Errorf("gguf %s: tensor %q: read of %d bytes at %d is outside its %d bytes", f.Name, t.Name, len(b), off, t.Size)
	}
	if f.r == nil {
		return fmt.Errorf("gguf %s: tensor %q: the file is closed", f.Name, t.Name)
	}
	at := f.DataOffset + int64(t.Offset) + off
	n, err := f.r.ReadAt(b, at)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("gguf %s: tensor %q: reading %d bytes at offset %d: %w", f.Name, t.Name, len(b), at, err)
}

// FileOffset returns where tensor t's data starts in the file.
func (f *File) FileOffset(t *TensorInfo) int64 { return f.DataOffset + int64(t.Offset) }

// Float32 reads tensor t and converts it to float32 (dequantizing blocks).
func (f *File) Float32(t *TensorInfo) ([]float32, error) {
	if !t.Type.Dequantizable() {
		return nil, fmt.Errorf("gguf %s: tensor %q has type %s, which cannot be dequantized (supported: %s)", f.Name, t.Name, t.Type, SupportedTypes())
	}
	raw, err := f.Raw(t)
	if err != nil {
		return nil, err
	}
	out := make([]float32, t.Elems)
	if err := Dequantize(t.Type, raw, out); err != nil {
		return nil, fmt.Errorf("gguf %s: tensor %q: %w", f.Name, t.Name, err)
	}
	return out, nil
}
