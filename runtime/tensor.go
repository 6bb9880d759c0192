package runtime

import (
	"fmt"
	"math"

	"github.com/x448/float16"
)

// DType is the element type of a stored tensor.
type DType uint8

const (
	F32  DType = iota // IEEE float32
	BF16              // bfloat16: the top 16 bits of a float32
	F16               // IEEE half precision
)

// String returns the safetensors name of the type.
func (d DType) String() string {
	switch d {
	case F32:
		return "F32"
	case BF16:
		return "BF16"
	case F16:
		return "F16"
	}
	return fmt.Sprintf("DType(%d)", int(d))
}

// Size is the number of bytes of one element.
func (d DType) Size() int {
	if d == F32 {
		return 4
	}
	return 2
}

// Tensor is a weight as it is stored in the checkpoint: row-major, with the
// data in F32 (DType F32) or in U16 (BF16 and F16 bit patterns).
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	F32   []float32
	U16   []uint16
	// mem is what F32 or U16 point into when it is not the Go heap (a
	// mapped file, see ReadSafetensors): held so that it lives as long as
	// the tensor does.
	mem any
}

// Len is the number of elements, the product of Shape.
func (t *Tensor) Len() int {
	n := 1
	for _, s := range t.Shape {
		n *= s
	}
	return n
}

// Bytes is the size of the stored data.
func (t *Tensor) Bytes() int64 { return int64(t.Len()) * int64(t.DType.Size()) }

// At returns element i as float32.
func (t *Tensor) At(i int) float32 {
	switch t.DType {
	case BF16:
		return BF16ToF32(t.U16[i])
	case F16:
		return float16.Frombits(t.U16[i]).Float32()
	}
	return t.F32[i]
}

// ToF32 converts elements [off, off+len(dst)) into dst.
func (t *Tensor) ToF32(dst []float32, off int) {
	switch t.DType {
	case BF16:
		for i := range dst {
			dst[i] = BF16ToF32(t.U16[off+i])
		}
	case F16:
		for i := range dst {
			dst[i] = float16.Frombits(t.U16[off+i]).Float32()
		}
	default:
		copy(dst, t.F32[off:off+len(dst)])
	}
}

// CheckShape reports an error unless t has exactly the given shape.
func (t *Tensor) CheckShape(shape ...int) error {
	if t == nil {
		return fmt.Errorf("missing tensor (want shape %v)", shape)
	}
	if len(t.Shape) != len(shape) {
		return fmt.Errorf("tensor %s: shape %v, want %v", t.Name, t.Shape, shape)
	}
	for i := range shape {
		if t.Shape[i] != shape[i] {
			return fmt.Errorf("tensor %s: shape %v, want %v", t.Name, t.Shape, shape)
		}
	}
	return nil
}

// NewF32Tensor wraps data as a float32 tensor of the given shape.
func NewF32Tensor(name string, data []float32, shape ...int) *Tensor {
	return &Tensor{Name: name, DType: F32, Shape: shape, F32: data}
}

// BF16ToF32 widens a bfloat16 bit pattern.
func BF16ToF32(u uint16) float32 { return math.Float32frombits(uint32(u) << 16) }

// F32ToBF16 rounds a float32 to the nearest bfloat16 (ties to even; NaN kept NaN).
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}
