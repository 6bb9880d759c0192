package cuda

import (
	"fmt"
	"unsafe"

	"github.com/ebitengine/purego"
)

// TensorMap is a CUtensorMap, the tensor memory accelerator's description
// of a tensor in global memory: 128 bytes that the driver encodes
// (EncodeTensorMap2D) and a kernel takes by value (a __grid_constant__
// parameter, prefill_tma.cu's TmaMap), 64-byte aligned.
type TensorMap struct {
	raw [24]uint64 // 128 bytes at a 64-byte boundary inside
}

// bytes returns the aligned 128 bytes of m (Go does not move heap objects).
func (m *TensorMap) bytes() unsafe.Pointer {
	p := uintptr(unsafe.Pointer(&m.raw[0]))
	return unsafe.Add(unsafe.Pointer(&m.raw[0]), (64-p%64)%64)
}

// The CUtensorMap enumerations EncodeTensorMap2D uses (cuda.h).
const (
	tmaBF16       = 9 // CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
	tmaSwizzle128 = 3 // CU_TENSOR_MAP_SWIZZLE_128B
	tmaL2Promo128 = 2 // CU_TENSOR_MAP_L2_PROMOTION_L2_128B
)

// HasTMA reports whether the driver encodes tensor maps
// (cuTensorMapEncodeTiled, CUDA 12 and later). The fake device does.
func (d *Device) HasTMA() bool { return d.api.fake != nil || d.api.rawTensorMapEncode != 0 }

// EncodeTensorMap2D describes a bf16 matrix of rows rows of cols elements,
// rowBytes apart, at base, read in boxes of boxRows rows by boxCols
// elements with the 128-byte swizzle (boxCols*2 must be 128 at most), no
// fill past the bounds. The fake device returns a zero map.
func (d *Device) EncodeTensorMap2D(base Ptr, cols, rows, rowBytes uint64, boxCols, boxRows uint32) (*TensorMap, error) {
	m := &TensorMap{}
	if !d.HasTMA() {
		return nil, fmt.Errorf("cuda: the driver has no cuTensorMapEncodeTiled")
	}
	if d.api.fake != nil {
		return m, nil
	}
	dims := [2]uint64{cols, rows}
	strides := [1]uint64{rowBytes}
	box := [2]uint32{boxCols, boxRows}
	elem := [2]uint32{1, 1}
	r, _, _ := purego.SyscallN(d.api.rawTensorMapEncode, uintptr(m.bytes()), tmaBF16, 2, uintptr(base),
		uintptr(unsafe.Pointer(&dims[0])), uintptr(unsafe.Pointer(&strides[0])), uintptr(unsafe.Pointer(&box[0])),
		uintptr(unsafe.Pointer(&elem[0])), 0, tmaSwizzle128, tmaL2Promo128, 0)
	if err := d.api.check("cuTensorMapEncodeTiled", int32(r)); err != nil {
		return nil, fmt.Errorf("%w (base %#x, %d x %d, row %d bytes, box %d x %d)", err, uint64(base), rows, cols, rowBytes, boxRows, boxCols)
	}
	return m, nil
}
