package gguf

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/x448/float16"
)

// The tests of this file build blocks by hand from ggml's block structs
// (ggml-common.h) and the formulas of its reference dequantization: choose
// the integer quants, scales and mins, pack them into bytes the way the
// structs lay them out, and compute the value each element must decode to.
// The packers here are written apart from quantize.go, so an error in the
// layout shows up as a mismatch rather than cancelling out.

// half returns the bits of a float16 that must represent v exactly.
func half(t *testing.T, v float64) uint16 {
	t.Helper()
	h := float16.Fromfloat32(float32(v))
	if float64(h.Float32()) != v {
		t.Fatalf("test value %v is not a half", v)
	}
	return h.Bits()
}

// exact converts an expected value to float32, failing if it would round
// (the test's values are chosen so that ggml's float32 arithmetic is exact).
func exact(t *testing.T, v float64) float32 {
	t.Helper()
	if float64(float32(v)) != v {
		t.Fatalf("expected value %v is not exact in float32", v)
	}
	return float32(v)
}

// randHalf draws k/2^e with a k of at most bits bits, a value every format
// stores exactly.
func randHalf(rng *rand.Rand, bits, e int) float64 {
	return float64(rng.IntN(1<<bits-1)+1) / math.Exp2(float64(e))
}

func checkDecode(t *testing.T, typ GGMLType, block []byte, want []float32) {
	t.Helper()
	got := make([]float32, len(want))
	if err := Dequantize(typ, block, got); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s element %d: got %v, want %v", typ, i, got[i], want[i])
		}
	}
}

func TestDequantizeLiteralBlocks(t *testing.T) {
	// Q4_0 with d = 1 (0x3C00) and every byte 0x98: low nibbles 8 give
	// elements 0-15 the value 8-8 = 0, high nibbles 9 give 16-31 the value 1.
	q40 := []byte{0x00, 0x3C}
	for range 16 {
		q40 = append(q40, 0x98)
	}
	want := make([]float32, 32)
	for i := 16; i < 32; i++ {
		want[i] = 1
	}
	checkDecode(t, Q4_0, q40, want)

	// Q8_0 with d = 0.5 (0x3800): quants 0, -1, 2, -3, ... decode to q/2.
	q80 := []byte{0x00, 0x38}
	want = make([]float32, 32)
	for i := range 32 {
		q := i
		if i%2 == 1 {
			q = -i
		}
		q80 = append(q80, byte(int8(q)))
		want[i] = float32(q) / 2
	}
	checkDecode(t, Q8_0, q80, want)

	// Q4_K with d = 1 (0x3C00), dmin = 0.5 (0x3800). Scale bytes: 1 2 3 4
	// are the scales of sub-blocks 0-3, 0 1 2 3 their mins; 0x05 0x16 0x27
	// 0x38 give sub-blocks 4-7 scales 5 6 7 8 (low nibbles) and mins 0 1 2 3
	// (high nibbles). Quant bytes 0x21: the first sub-block of each 64 reads
	// q = 1, the second q = 2. x = d*sc*q - dmin*m per sub-block:
	// 1, 3.5, 2, 6.5, 5, 11.5, 6, 14.5.
	q4k := []byte{0x00, 0x3C, 0x00, 0x38, 1, 2, 3, 4, 0, 1, 2, 3, 0x05, 0x16, 0x27, 0x38}
	for range 128 {
		q4k = append(q4k, 0x21)
	}
	sub := []float32{1, 3.5, 2, 6.5, 5, 11.5, 6, 14.5}
	want = make([]float32, 256)
	for i := range want {
		want[i] = sub[i/32]
	}
	checkDecode(t, Q4_K, q4k, want)

	// Q6_K with d = 0.25 (0x3400), scales 1..16, and every quant 33
	// (low nibble 1 in every ql byte, high bits 10 in every 2-bit field of
	// qh: 0xAA): x = 0.25 * scale * (33-32) = scale/4, scale = element/16+1.
	q6k := make([]byte, 210)
	for i := range 128 {
		q6k[i] = 0x11
	}
	for i := 128; i < 192; i++ {
		q6k[i] = 0xAA
	}
	for j := range 16 {
		q6k[192+j] = byte(j + 1)
	}
	q6k[208], q6k[209] = 0x00, 0x34
	want = make([]float32, 256)
	for i := range want {
		want[i] = float32(i/16+1) / 4
	}
	checkDecode(t, Q6_K, q6k, want)
}

// The 32-element types: x = (q - offset)*d, or q*d + m.

func TestDequantizeQ4_0(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 40))
	for range 50 {
		d := randHalf(rng, 10, 14) * float64(1-2*rng.IntN(2))
		b := binary.LittleEndian.AppendUint16(nil, half(t, d))
		var q [32]int
		for j := range q {
			q[j] = rng.IntN(16)
		}
		want := make([]float32, 32)
		for j := range 16 {
			b = append(b, byte(q[j])|byte(q[j+16])<<4) // qs[j]: element j low, j+16 high
		}
		for j := range q {
			want[j] = exact(t, float64(q[j]-8)*d)
		}
		checkDecode(t, Q4_0, b, want)
	}
}

func TestDequantizeQ4_1(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 41))
	for range 50 {
		d, m := randHalf(rng, 10, 14), -randHalf(rng, 10, 12)
		b := binary.LittleEndian.AppendUint16(nil, half(t, d))
		b = binary.LittleEndian.AppendUint16(b, half(t, m))
		var q [32]int
		for j := range q {
			q[j] = rng.IntN(16)
		}
		for j := range 16 {
			b = append(b, byte(q[j])|byte(q[j+16])<<4)
		}
		want := make([]float32, 32)
		for j := range q {
			want[j] = exact(t, float64(q[j])*d+m)
		}
		checkDecode(t, Q4_1, b, want)
	}
}

// pack5 packs 5-bit quants as block_q5_0/1 do: qh is a little-endian
// uint32 whose bit j is the fifth bit of element j; qs[j] holds the low
// nibbles of elements j and j+16.
func pack5(q [32]int) (qh [4]byte, qs [16]byte) {
	var h uint32
	for j := range 32 {
		h |= uint32(q[j]>>4&1) << j
	}
	binary.LittleEndian.PutUint32(qh[:], h)
	for j := range 16 {
		qs[j] = byte(q[j]&0xF) | byte(q[j+16]&0xF)<<4
	}
	return qh, qs
}

func TestDequantizeQ5_0(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 50))
	for range 50 {
		d := randHalf(rng, 10, 14) * float64(1-2*rng.IntN(2))
		var q [32]int
		for j := range q {
			q[j] = rng.IntN(32)
		}
		qh, qs := pack5(q)
		b := binary.LittleEndian.AppendUint16(nil, half(t, d))
		b = append(append(b, qh[:]...), qs[:]...)
		want := make([]float32, 32)
		for j := range q {
			want[j] = exact(t, float64(q[j]-16)*d)
		}
		checkDecode(t, Q5_0, b, want)
	}
}

func TestDequantizeQ5_1(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 51))
	for range 50 {
		d, m := randHalf(rng, 10, 14), -randHalf(rng, 10, 12)
		var q [32]int
		for j := range q {
			q[j] = rng.IntN(32)
		}
		qh, qs := pack5(q)
		b := binary.LittleEndian.AppendUint16(nil, half(t, d))
		b = binary.LittleEndian.AppendUint16(b, half(t, m))
		b = append(append(b, qh[:]...), qs[:]...)
		want := make([]float32, 32)
		for j := range q {
			want[j] = exact(t, float64(q[j])*d+m)
		}
		checkDecode(t, Q5_1, b, want)
	}
}

func TestDequantizeQ8_0(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 80))
	for range 50 {
		d := randHalf(rng, 10, 14)
		b := binary.LittleEndian.AppendUint16(nil, half(t, d))
		want := make([]float32, 32)
		for j := range 32 {
			q := rng.IntN(256) - 128
			b = append(b, byte(int8(q)))
			want[j] = exact(t, float64(q)*d)
		}
		checkDecode(t, Q8_0, b, want)
	}
}

// The K types: 256 elements, 8 sub-blocks of 32 (Q4_K, Q5_K) or 16 of 16
// (Q6_K) with their own scales.

// unpackScaleMin is ggml's get_scale_min_k4, transcribed.
func unpackScaleMin(j int, q []byte) (d, m int) {
	if j < 4 {
		return int(q[j] & 63), int(q[j+4] & 63)
	}
	return int(q[j+4]&0xF) | int(q[j-4]>>6)<<4, int(q[j+4]>>4) | int(q[j]>>6)<<4
}

// packScaleMin packs eight 6-bit scales and mins into the 12 bytes
// get_scale_min_k4 reads, and checks it reads them back.
func packScaleMin(t *testing.T, sc, m [8]int) []byte {
	var s [12]byte
	for j := range 4 {
		s[j] = byte(sc[j]) | byte(sc[j+4]>>4)<<6
		s[j+4] = byte(m[j]) | byte(m[j+4]>>4)<<6
		s[j+8] = byte(sc[j+4]&0xF) | byte(m[j+4]&0xF)<<4
	}
	for j := range 8 {
		if d, mm := unpackScaleMin(j, s[:]); d != sc[j] || mm != m[j] {
			t.Fatalf("test packer: sub-block %d reads (%d, %d), packed (%d, %d)", j, d, mm, sc[j], m[j])
		}
	}
	return s[:]
}

// kBlock is the content of a Q4_K or Q5_K block.
type kBlock struct {
	d, dmin float64
	sc, m   [8]int
	q       [256]int
}

func randKBlock(rng *rand.Rand, nmax int) kBlock {
	k := kBlock{d: randHalf(rng, 8, 14), dmin: randHalf(rng, 8, 12)}
	for j := range 8 {
		k.sc[j], k.m[j] = rng.IntN(64), rng.IntN(64)
	}
	for i := range k.q {
		k.q[i] = rng.IntN(nmax + 1)
	}
	return k
}

// want is ggml's dequantization: float32(d*sc) * q - float32(dmin*m).
func (k kBlock) want(t *testing.T) []float32 {
	out := make([]float32, 256)
	for i := range out {
		j := i / 32
		out[i] = exact(t, k.d*float64(k.sc[j])*float64(k.q[i])-k.dmin*float64(k.m[j]))
	}
	return out
}

func TestDequantizeQ4_K(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 4))
	for range 30 {
		k := randKBlock(rng, 15)
		b := binary.LittleEndian.AppendUint16(nil, half(t, k.d))
		b = binary.LittleEndian.AppendUint16(b, half(t, k.dmin))
		b = append(b, packScaleMin(t, k.sc, k.m)...)
		// qs: each 32 bytes hold two sub-blocks of 32, the first in the low
		// nibbles.
		for g := range 4 {
			for l := range 32 {
				b = append(b, byte(k.q[64*g+l])|byte(k.q[64*g+32+l])<<4)
			}
		}
		checkDecode(t, Q4_K, b, k.want(t))
	}
}

func TestDequantizeQ5_K(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 5))
	for range 30 {
		k := randKBlock(rng, 31)
		b := binary.LittleEndian.AppendUint16(nil, half(t, k.d))
		b = binary.LittleEndian.AppendUint16(b, half(t, k.dmin))
		b = append(b, packScaleMin(t, k.sc, k.m)...)
		// qh[l]: bit 2g is the fifth bit of element 64g+l, bit 2g+1 that of
		// element 64g+32+l.
		var qh [32]byte
		for g := range 4 {
			for l := range 32 {
				qh[l] |= byte(k.q[64*g+l]>>4) << (2 * g)
				qh[l] |= byte(k.q[64*g+32+l]>>4) << (2*g + 1)
			}
		}
		b = append(b, qh[:]...)
		for g := range 4 {
			for l := range 32 {
				b = append(b, byte(k.q[64*g+l]&0xF)|byte(k.q[64*g+32+l]&0xF)<<4)
			}
		}
		checkDecode(t, Q5_K, b, k.want(t))
	}
}

func TestDequantizeQ6_K(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 6))
	for range 30 {
		d := randHalf(rng, 8, 16) * float64(1-2*rng.IntN(2))
		var sc [16]int
		for j := range sc {
			sc[j] = rng.IntN(256) - 128
		}
		var q [256]int
		for i := range q {
			q[i] = rng.IntN(64)
		}
		// block_q6_K: ql[128], qh[64], scales[16], d. Each half of 128
		// elements uses 64 ql bytes and 32 qh bytes: elements l, l+32,
		// l+64, l+96 (l < 32) share qh[l] (bits 0-1, 2-3, 4-5, 6-7) and take
		// the low nibble of ql[l], the low of ql[l+32], the high of ql[l],
		// the high of ql[l+32].
		ql, qh := make([]byte, 128), make([]byte, 64)
		for n := range 2 {
			for l := range 32 {
				e := q[128*n:]
				ql[64*n+l] = byte(e[l]&0xF) | byte(e[l+64]&0xF)<<4
				ql[64*n+32+l] = byte(e[l+32]&0xF) | byte(e[l+96]&0xF)<<4
				qh[32*n+l] = byte(e[l]>>4) | byte(e[l+32]>>4)<<2 | byte(e[l+64]>>4)<<4 | byte(e[l+96]>>4)<<6
			}
		}
		b := append(append([]byte{}, ql...), qh...)
		for _, s := range sc {
			b = append(b, byte(int8(s)))
		}
		b = binary.LittleEndian.AppendUint16(b, half(t, d))
		want := make([]float32, 256)
		for i := range want {
			want[i] = exact(t, d*float64(sc[i/16])*float64(q[i]-32))
		}
		checkDecode(t, Q6_K, b, want)
	}
}

func TestDequantizeFloats(t *testing.T) {
	vals := []float32{0, 1, -2.5, 65504, 1e-3, float32(math.Inf(-1))}
	var f32, f16b, bf16 []byte
	for _, v := range vals {
		f32 = binary.LittleEndian.AppendUint32(f32, math.Float32bits(v))
		f16b = binary.LittleEndian.AppendUint16(f16b, float16.Fromfloat32(v).Bits())
		bf16 = binary.LittleEndian.AppendUint16(bf16, uint16(math.Float32bits(v)>>16))
	}
	checkDecode(t, F32, f32, vals)
	want := make([]float32, len(vals))
	for i, v := range vals {
		want[i] = float16.Fromfloat32(v).Float32()
	}
	checkDecode(t, F16, f16b, want)
	for i, v := range vals {
		want[i] = math.Float32frombits(math.Float32bits(v) &^ 0xFFFF)
	}
	checkDecode(t, BF16, bf16, want)
}

func TestDequantizeErrors(t *testing.T) {
	dst := make([]float32, 32)
	if err := Dequantize(Q8_0, make([]byte, 33), dst); err == nil {
		t.Error("short Q8_0 block accepted")
	}
	if err := Dequantize(Q4_K, make([]byte, 144), dst); err == nil {
		t.Error("32 elements of Q4_K accepted")
	}
	if err := Dequantize(Q2_K, make([]byte, 84), make([]float32, 256)); err == nil {
		t.Error("Q2_K accepted")
	}
	if err := Dequantize(GGMLType(99), nil, nil); err == nil {
		t.Error("unknown type accepted")
	}
}

// quantTol is the worst error Quantize may make, per type, relative to the
// block's largest magnitude: half a quantization step, or a whole one where
// the format's asymmetric range clips the side opposite the largest value
// (Q4_0, Q5_0, Q6_K map it to the most negative quant), plus the rounding of
// the scales to half precision and, for the K types, of the sub-block
// scales and mins to 6 or 8 bits.
var quantTol = map[GGMLType]float64{
	F32: 0, F16: 1e-3, BF16: 4e-3,
	Q8_0: 0.5/127 + 1e-3, Q4_0: 1.0/8 + 1e-3, Q5_0: 1.0/16 + 1e-3,
	Q4_1: 1.0/15 + 2e-3, Q5_1: 1.0/31 + 2e-3,
	Q4_K: 0.1, Q5_K: 0.06, Q6_K: 0.04,
}

func TestQuantizeRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for _, typ := range supportedOrder {
		n := 4 * QKK
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * 0.3)
		}
		x[5] = 0 // an exact zero, and a block of zeros
		for i := QKK; i < QKK+64; i++ {
			x[i] = 0
		}
		b, err := Quantize(typ, x)
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if want, _ := typ.RowSize(n); len(b) != want {
			t.Fatalf("%s: %d bytes, want %d", typ, len(b), want)
		}
		y := make([]float32, n)
		if err := Dequantize(typ, b, y); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		bl := typ.BlockSize()
		if bl == 1 {
			bl = 32
		}
		var worst float64
		for blk := 0; blk < n; blk += bl {
			var amax float64
			for _, v := range x[blk : blk+bl] {
				amax = max(amax, math.Abs(float64(v)))
			}
			for i := blk; i < blk+bl; i++ {
				if amax == 0 {
					if y[i] != 0 {
						t.Fatalf("%s: element %d of an all-zero block decodes to %v", typ, i, y[i])
					}
					continue
				}
				worst = max(worst, math.Abs(float64(y[i]-x[i]))/amax)
			}
		}
		if worst > quantTol[typ] {
			t.Errorf("%s: worst error %.4g of the block's range, tolerance %.4g", typ, worst, quantTol[typ])
		}
		t.Logf("%s: worst error %.4g of the block's largest magnitude", typ, worst)
	}
}

func TestQuantizeExactValues(t *testing.T) {
	// Values on a Q8_0 grid come back exactly: d = max/127 = 1/16 exactly
	// when the block's largest magnitude is 127/16.
	x := make([]float32, 32)
	for i := range x {
		x[i] = float32(i*8-127) / 16
	}
	x[0] = 127.0 / 16
	b, err := Quantize(Q8_0, x)
	if err != nil {
		t.Fatal(err)
	}
	checkDecode(t, Q8_0, b, x)
	if _, err := Quantize(Q8_0, append(x[:31:31], float32(math.NaN()))); err == nil {
		t.Error("NaN quantized")
	}
	if _, err := Quantize(Q4_K, x); err == nil {
		t.Error("32 values quantized as Q4_K")
	}
	big := make([]float32, 32)
	big[0] = 1e9
	if _, err := Quantize(Q8_0, big); err == nil {
		t.Error("a scale beyond half precision accepted")
	}
}
