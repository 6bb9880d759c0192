package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/x448/float16"
)

// GGMLType is the element type of a tensor (ggml's enum ggml_type).
type GGMLType uint32

// The ggml element types this package reads and writes, with their ids in
// the file. Other ids are named in errors (see [GGMLType.String]).
const (
	F32  GGMLType = 0
	F16  GGMLType = 1
	Q4_0 GGMLType = 2
	Q4_1 GGMLType = 3
	Q5_0 GGMLType = 6
	Q5_1 GGMLType = 7
	Q8_0 GGMLType = 8
	Q8_1 GGMLType = 9
	Q2_K GGMLType = 10
	Q3_K GGMLType = 11
	Q4_K GGMLType = 12
	Q5_K GGMLType = 13
	Q6_K GGMLType = 14
	Q8_K GGMLType = 15
	I8   GGMLType = 24
	I16  GGMLType = 25
	I32  GGMLType = 26
	I64  GGMLType = 27
	F64  GGMLType = 28
	BF16 GGMLType = 30
)

// ggmlNames names every id of the specification's enum.
var ggmlNames = map[GGMLType]string{
	0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "Q4_2 (removed)", 5: "Q4_3 (removed)", 6: "Q5_0", 7: "Q5_1",
	8: "Q8_0", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
	16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
	23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
	31: "Q4_0_4_4 (removed)", 32: "Q4_0_4_8 (removed)", 33: "Q4_0_8_8 (removed)", 34: "TQ1_0", 35: "TQ2_0",
	39: "MXFP4",
}

// String returns ggml's name of the type, or its number.
func (t GGMLType) String() string {
	if n, ok := ggmlNames[t]; ok {
		return n
	}
	return fmt.Sprintf("unknown(%d)", uint32(t))
}

// QK is the block length of the 32-element quantized types; QKK that of the
// 256-element "K" types.
const (
	QK  = 32
	QKK = 256
)

// layout is the block length in elements and the block size in bytes.
type layout struct{ block, bytes int }

// layouts are the types whose storage size this package knows (ggml's
// block structs): their tensors can be located, and some dequantized.
var layouts = map[GGMLType]layout{
	F32: {1, 4}, F16: {1, 2}, BF16: {1, 2},
	Q4_0: {QK, 2 + QK/2},                // d, 4-bit quants
	Q4_1: {QK, 2 + 2 + QK/2},            // d, m, 4-bit quants
	Q5_0: {QK, 2 + 4 + QK/2},            // d, high bits, low nibbles
	Q5_1: {QK, 2 + 2 + 4 + QK/2},        // d, m, high bits, low nibbles
	Q8_0: {QK, 2 + QK},                  // d, int8 quants
	Q8_1: {QK, 2 + 2 + QK},              // d, s, int8 quants
	Q2_K: {QKK, QKK/16 + QKK/4 + 2 + 2}, // scales, quants, d, dmin
	Q3_K: {QKK, QKK/8 + QKK/4 + 12 + 2}, // hmask, quants, scales, d
	Q4_K: {QKK, 2 + 2 + 12 + QKK/2},     // d, dmin, scales, quants
	Q5_K: {QKK, 2 + 2 + 12 + QKK/8 + QKK/2},
	Q6_K: {QKK, QKK/2 + QKK/4 + QKK/16 + 2}, // low 4 bits, high 2 bits, scales, d
	Q8_K: {QKK, 4 + QKK + QKK/16*2},         // float d, quants, block sums
	I8:   {1, 1}, I16: {1, 2}, I32: {1, 4}, I64: {1, 8}, F64: {1, 8},
}

// dequantizers are the types Dequantize converts.
var dequantizers = map[GGMLType]func(src []byte, dst []float32){
	F32: deqF32, F16: deqF16, BF16: deqBF16,
	Q4_0: deqQ4_0, Q4_1: deqQ4_1, Q5_0: deqQ5_0, Q5_1: deqQ5_1, Q8_0: deqQ8_0,
	Q4_K: deqQ4_K, Q5_K: deqQ5_K, Q6_K: deqQ6_K,
}

// supportedOrder lists the dequantizable types for messages.
var supportedOrder = []GGMLType{F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K}

// SupportedTypes lists the types Dequantize converts, for messages.
func SupportedTypes() string {
	names := make([]string, len(supportedOrder))
	for i, t := range supportedOrder {
		names[i] = t.String()
	}
	return strings.Join(names, ", ")
}

// BlockSize is the number of elements of one block of t; 0 when the type's
// layout is unknown.
func (t GGMLType) BlockSize() int { return layouts[t].block }

// TypeSize is the number of bytes of one block of t; 0 when the type's
// layout is unknown.
func (t GGMLType) TypeSize() int { return layouts[t].bytes }

// Dequantizable reports whether Dequantize converts t.
func (t GGMLType) Dequantizable() bool { return dequantizers[t] != nil }

// RowSize returns the bytes that n elements of type t take, or an error when
// n is not a whole number of blocks.
func (t GGMLType) RowSize(n int) (int, error) {
	l, ok := layouts[t]
	if !ok {
		return 0, fmt.Errorf("type %s has no known layout", t)
	}
	if n < 0 || n%l.block != 0 {
		return 0, fmt.Errorf("%d elements are not a whole number of %s blocks of %d", n, t, l.block)
	}
	return n / l.block * l.bytes, nil
}

// Dequantize converts the stored bytes src of type t into dst, whose length
// must be a whole number of blocks that src holds exactly. The arithmetic is
// that of ggml's reference dequantization, in float32 and unfused, so the
// values are bit for bit those llama.cpp computes on the CPU.
func Dequantize(t GGMLType, src []byte, dst []float32) error {
	fn := dequantizers[t]
	if fn == nil {
		return fmt.Errorf("type %s cannot be dequantized (supported: %s)", t, SupportedTypes())
	}
	n, err := t.RowSize(len(dst))
	if err != nil {
		return err
	}
	if n != len(src) {
		return fmt.Errorf("%d elements of %s take %d bytes, have %d", len(dst), t, n, len(src))
	}
	fn(src, dst)
	return nil
}

// f16 reads a little-endian IEEE half.
func f16(b []byte) float32 { return float16.Frombits(binary.LittleEndian.Uint16(b)).Float32() }

func deqF32(src []byte, dst []float32) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func deqF16(src []byte, dst []float32) {
	for i := range dst {
		dst[i] = f16(src[2*i:])
	}
}

func deqBF16(src []byte, dst []float32) {
	for i := range dst {
		dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
	}
}

// Q4_0: d (f16), then 16 bytes: the low nibble of byte j is element j, the
// high nibble element j+16; x = (q-8)*d.
func deqQ4_0(src []byte, dst []float32) {
	const bs = 2 + QK/2
	for i := range len(dst) / QK {
		b := src[i*bs : (i+1)*bs]
		d := f16(b)
		y := dst[i*QK : (i+1)*QK]
		for j := range QK / 2 {
			y[j] = float32(int(b[2+j]&0xF)-8) * d
			y[j+QK/2] = float32(int(b[2+j]>>4)-8) * d
		}
	}
}

// Q4_1: d and m (f16), then nibbles as Q4_0; x = q*d + m.
func deqQ4_1(src []byte, dst []float32) {
	const bs = 4 + QK/2
	for i := range len(dst) / QK {
		b := src[i*bs : (i+1)*bs]
		d, m := f16(b), f16(b[2:])
		y := dst[i*QK : (i+1)*QK]
		for j := range QK / 2 {
			y[j] = float32(float32(b[4+j]&0xF)*d) + m
			y[j+QK/2] = float32(float32(b[4+j]>>4)*d) + m
		}
	}
}

// Q5_0: d (f16), a little-endian uint32 whose bit j is the fifth bit of
// element j, then nibbles as Q4_0; x = (q-16)*d.
func deqQ5_0(src []byte, dst []float32) {
	const bs = 2 + 4 + QK/2
	for i := range len(dst) / QK {
		b := src[i*bs : (i+1)*bs]
		d := f16(b)
		qh := binary.LittleEndian.Uint32(b[2:])
		qs := b[6:]
		y := dst[i*QK : (i+1)*QK]
		for j := range QK / 2 {
			h0 := int((qh>>j)&1) << 4
			h1 := int((qh>>(j+16))&1) << 4
			y[j] = float32((int(qs[j]&0xF)|h0)-16) * d
			y[j+QK/2] = float32((int(qs[j]>>4)|h1)-16) * d
		}
	}
}

// Q5_1: d and m (f16), the high bits and nibbles as Q5_0; x = q*d + m.
func deqQ5_1(src []byte, dst []float32) {
	const bs = 4 + 4 + QK/2
	for i := range len(dst) / QK {
		b := src[i*bs : (i+1)*bs]
		d, m := f16(b), f16(b[2:])
		qh := binary.LittleEndian.Uint32(b[4:])
		qs := b[8:]
		y := dst[i*QK : (i+1)*QK]
		for j := range QK / 2 {
			h0 := int((qh>>j)&1) << 4
			h1 := int((qh>>(j+16))&1) << 4
			y[j] = float32(float32(int(qs[j]&0xF)|h0)*d) + m
			y[j+QK/2] = float32(float32(int(qs[j]>>4)|h1)*d) + m
		}
	}
}

// Q8_0: d (f16), then 32 int8 quants; x = q*d.
func deqQ8_0(src []byte, dst []float32) {
	const bs = 2 + QK
	for i := range len(dst) / QK {
		b := src[i*bs : (i+1)*bs]
		d := f16(b)
		y := dst[i*QK : (i+1)*QK]
		for j := range QK {
			y[j] = float32(int8(b[2+j])) * d
		}
	}
}

// scaleMinK4 unpacks the 6-bit scale and min of sub-block j (0..7) from the
// 12 scale bytes of a Q4_K or Q5_K block: bytes 0-3 hold the scales of
// sub-blocks 0-3 in their low 6 bits, bytes 4-7 their mins; sub-blocks 4-7
// keep their low 4 bits in the nibbles of bytes 8-11 (scale low, min high)
// and their top 2 bits in the top bits of bytes 0-3 (scales) and 4-7 (mins).
func scaleMinK4(j int, q []byte) (sc, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&0xF | q[j-4]>>6<<4, q[j+4]>>4 | q[j]>>6<<4
}

// Q4_K: d and dmin (f16), 12 scale bytes, 128 bytes of nibbles. A block is
// 8 sub-blocks of 32 with a 6-bit scale sc and min m each: x = d*sc*q -
// dmin*m. Each group of 32 bytes holds two sub-blocks, the first in the low
// nibbles, the second in the high ones.
func deqQ4_K(src []byte, dst []float32) {
	const bs = 4 + 12 + QKK/2
	for i := range len(dst) / QKK {
		b := src[i*bs : (i+1)*bs]
		d, dmin := f16(b), f16(b[2:])
		scales, q := b[4:16], b[16:]
		y := dst[i*QKK : (i+1)*QKK]
		for g := range 4 {
			sc, m := scaleMinK4(2*g, scales)
			d1, m1 := d*float32(sc), dmin*float32(m)
			sc, m = scaleMinK4(2*g+1, scales)
			d2, m2 := d*float32(sc), dmin*float32(m)
			qs := q[32*g : 32*g+32]
			out := y[64*g : 64*g+64]
			for l := range 32 {
				out[l] = float32(d1*float32(qs[l]&0xF)) - m1
				out[32+l] = float32(d2*float32(qs[l]>>4)) - m2
			}
		}
	}
}

// Q5_K: as Q4_K with a fifth bit per element: 32 bytes qh follow the scales,
// and bit 2g (2g+1) of qh[l] is the high bit of element l of the first
// (second) sub-block of group g.
func deqQ5_K(src []byte, dst []float32) {
	const bs = 4 + 12 + QKK/8 + QKK/2
	for i := range len(dst) / QKK {
		b := src[i*bs : (i+1)*bs]
		d, dmin := f16(b), f16(b[2:])
		scales, qh, q := b[4:16], b[16:48], b[48:]
		y := dst[i*QKK : (i+1)*QKK]
		for g := range 4 {
			sc, m := scaleMinK4(2*g, scales)
			d1, m1 := d*float32(sc), dmin*float32(m)
			sc, m = scaleMinK4(2*g+1, scales)
			d2, m2 := d*float32(sc), dmin*float32(m)
			qs := q[32*g : 32*g+32]
			out := y[64*g : 64*g+64]
			u1, u2 := byte(1)<<(2*g), byte(2)<<(2*g)
			for l := range 32 {
				q1, q2 := qs[l]&0xF, qs[l]>>4
				if qh[l]&u1 != 0 {
					q1 += 16
				}
				if qh[l]&u2 != 0 {
					q2 += 16
				}
				out[l] = float32(d1*float32(q1)) - m1
				out[32+l] = float32(d2*float32(q2)) - m2
			}
		}
	}
}

// Q6_K: 128 bytes of low nibbles (ql), 64 bytes of high 2-bit pairs (qh), 16
// int8 scales, d (f16). Element e uses scale e/16: x = d*scale*(q-32). In
// each half of 128 elements, element l (l < 32) takes the low nibble of
// ql[l] and bits 0-1 of qh[l]; l+32 the low nibble of ql[l+32] and bits 2-3;
// l+64 the high nibble of ql[l] and bits 4-5; l+96 the high nibble of
// ql[l+32] and bits 6-7.
func deqQ6_K(src []byte, dst []float32) {
	const bs = QKK/2 + QKK/4 + QKK/16 + 2
	for i := range len(dst) / QKK {
		b := src[i*bs : (i+1)*bs]
		d := f16(b[208:])
		y := dst[i*QKK : (i+1)*QKK]
		for n := range 2 {
			ql, qh, sc := b[64*n:], b[128+32*n:], b[192+8*n:]
			out := y[128*n:]
			for l := range 32 {
				is := l / 16
				q1 := int(ql[l]&0xF|(qh[l]>>0&3)<<4) - 32
				q2 := int(ql[l+32]&0xF|(qh[l]>>2&3)<<4) - 32
				q3 := int(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
				q4 := int(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
				out[l] = float32(d*float32(int8(sc[is]))) * float32(q1)
				out[l+32] = float32(d*float32(int8(sc[is+2]))) * float32(q2)
				out[l+64] = float32(d*float32(int8(sc[is+4]))) * float32(q3)
				out[l+96] = float32(d*float32(int8(sc[is+6]))) * float32(q4)
			}
		}
	}
}
