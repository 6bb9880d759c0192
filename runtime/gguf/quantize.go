package gguf

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// Quantize encodes x in type t: F32, F16, BF16 (rounded to nearest even) or
// one of the block types, whose scales are chosen from each block's range
// (round-to-nearest quantization, as ggml's reference quantizers do for the
// 32-element types; the K types use a plain min/max fit rather than ggml's
// search, so they are a little less accurate than llama.cpp's files but
// decode the same way). len(x) must be a whole number of blocks and every
// value finite.
func Quantize(t GGMLType, x []float32) ([]byte, error) {
	n, err := t.RowSize(len(x))
	if err != nil {
		return nil, err
	}
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("quantize %s: value %d is %v", t, i, v)
		}
	}
	out := make([]byte, n)
	le := binary.LittleEndian
	switch t {
	case F32:
		for i, v := range x {
			le.PutUint32(out[4*i:], math.Float32bits(v))
		}
		return out, nil
	case F16:
		for i, v := range x {
			le.PutUint16(out[2*i:], float16.Fromfloat32(v).Bits())
		}
		return out, nil
	case BF16:
		for i, v := range x {
			le.PutUint16(out[2*i:], bf16Bits(v))
		}
		return out, nil
	}
	var enc func(x []float32, b []byte) error
	switch t {
	case Q4_0:
		enc = quantQ4_0
	case Q4_1:
		enc = func(x []float32, b []byte) error { return quantMinMax(x, b, 15, false) }
	case Q5_0:
		enc = quantQ5_0
	case Q5_1:
		enc = func(x []float32, b []byte) error { return quantMinMax(x, b, 31, true) }
	case Q8_0:
		enc = quantQ8_0
	case Q4_K:
		enc = func(x []float32, b []byte) error { return quantK(x, b, 15) }
	case Q5_K:
		enc = func(x []float32, b []byte) error { return quantK(x, b, 31) }
	case Q6_K:
		enc = quantQ6_K
	default:
		return nil, fmt.Errorf("quantize: type %s is not supported (supported: %s)", t, SupportedTypes())
	}
	bl, bs := t.BlockSize(), t.TypeSize()
	for i := range len(x) / bl {
		if err := enc(x[i*bl:(i+1)*bl], out[i*bs:(i+1)*bs]); err != nil {
			return nil, fmt.Errorf("quantize %s: block %d: %w", t, i, err)
		}
	}
	return out, nil
}

// bf16Bits rounds v to the nearest bfloat16, ties to even.
func bf16Bits(v float32) uint16 {
	b := math.Float32bits(v)
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// putF16 stores v as a half at b and returns the stored value; an error when
// it does not fit.
func putF16(b []byte, v float32) (float32, error) {
	h := float16.Fromfloat32(v)
	r := h.Float32()
	if math.IsInf(float64(r), 0) {
		return 0, fmt.Errorf("scale %g does not fit a half", v)
	}
	binary.LittleEndian.PutUint16(b, h.Bits())
	return r, nil
}

// signedMax returns the value of largest magnitude, with its sign.
func signedMax(x []float32) float32 {
	var amax, m float32
	for _, v := range x {
		if a := float32(math.Abs(float64(v))); a > amax {
			amax, m = a, v
		}
	}
	return m
}

func inv(d float32) float32 {
	if d == 0 {
		return 0
	}
	return 1 / d
}

func quantQ4_0(x []float32, b []byte) error {
	d := signedMax(x) / -8
	if _, err := putF16(b, d); err != nil {
		return err
	}
	id := inv(d)
	for j := range QK / 2 {
		q0 := max(0, min(15, int(x[j]*id+8.5)))
		q1 := max(0, min(15, int(x[j+QK/2]*id+8.5)))
		b[2+j] = byte(q0) | byte(q1)<<4
	}
	return nil
}

func quantQ5_0(x []float32, b []byte) error {
	d := signedMax(x) / -16
	if _, err := putF16(b, d); err != nil {
		return err
	}
	id := inv(d)
	var qh uint32
	for j := range QK / 2 {
		q0 := max(0, min(31, int(x[j]*id+16.5)))
		q1 := max(0, min(31, int(x[j+QK/2]*id+16.5)))
		b[6+j] = byte(q0&0xF) | byte(q1&0xF)<<4
		qh |= uint32(q0>>4) << j
		qh |= uint32(q1>>4) << (j + QK/2)
	}
	binary.LittleEndian.PutUint32(b[2:], qh)
	return nil
}

// quantMinMax encodes Q4_1 (nmax 15) or Q5_1 (nmax 31, high bits).
func quantMinMax(x []float32, b []byte, nmax int, high bool) error {
	lo, hi := x[0], x[0]
	for _, v := range x {
		lo, hi = min(lo, v), max(hi, v)
	}
	d := (hi - lo) / float32(nmax)
	if _, err := putF16(b, d); err != nil {
		return err
	}
	if _, err := putF16(b[2:], lo); err != nil {
		return err
	}
	id := inv(d)
	qs := b[4:]
	var qh uint32
	if high {
		qs = b[8:]
	}
	for j := range QK / 2 {
		q0 := max(0, min(nmax, int((x[j]-lo)*id+0.5)))
		q1 := max(0, min(nmax, int((x[j+QK/2]-lo)*id+0.5)))
		qs[j] = byte(q0&0xF) | byte(q1&0xF)<<4
		qh |= uint32(q0>>4) << j
		qh |= uint32(q1>>4) << (j + QK/2)
	}
	if high {
		binary.LittleEndian.PutUint32(b[4:], qh)
	}
	return nil
}

func quantQ8_0(x []float32, b []byte) error {
	var amax float32
	for _, v := range x {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	d := amax / 127
	if _, err := putF16(b, d); err != nil {
		return err
	}
	id := inv(d)
	for j, v := range x {
		b[2+j] = byte(int8(math.Round(float64(v * id))))
	}
	return nil
}

// clampRound rounds v to the nearest integer in [lo, hi].
func clampRound(v float32, lo, hi int) int {
	r := math.RoundToEven(float64(v))
	return int(max(float64(lo), min(float64(hi), r)))
}

// quantK encodes a Q4_K (nmax 15) or Q5_K (nmax 31) block: each sub-block
// of 32 gets scale (max-min)/nmax and min -min (min clipped to <= 0), both
// quantized to 6 bits against the block's d and dmin.
func quantK(x []float32, b []byte, nmax int) error {
	var scale, minv [8]float32
	var maxScale, maxMin float32
	for j := range 8 {
		sub := x[32*j : 32*j+32]
		lo, hi := float32(0), sub[0]
		for _, v := range sub {
			lo, hi = min(lo, v), max(hi, v)
		}
		scale[j], minv[j] = (hi-lo)/float32(nmax), -lo
		maxScale, maxMin = max(maxScale, scale[j]), max(maxMin, minv[j])
	}
	d, err := putF16(b, maxScale/63)
	if err != nil {
		return err
	}
	dmin, err := putF16(b[2:], maxMin/63)
	if err != nil {
		return err
	}
	var sc, mn [8]uint8
	var q [QKK]uint8
	for j := range 8 {
		if d > 0 {
			sc[j] = uint8(clampRound(scale[j]/d, 0, 63))
		}
		if dmin > 0 {
			mn[j] = uint8(clampRound(minv[j]/dmin, 0, 63))
		}
		D, M := d*float32(sc[j]), dmin*float32(mn[j])
		for l := range 32 {
			if D > 0 {
				q[32*j+l] = uint8(clampRound((x[32*j+l]+M)/D, 0, nmax))
			}
		}
	}
	s := b[4:16]
	for j := range 4 {
		s[j] = sc[j]&63 | sc[j+4]>>4<<6
		s[j+4] = mn[j]&63 | mn[j+4]>>4<<6
		s[j+8] = sc[j+4]&0xF | mn[j+4]&0xF<<4
	}
	qs := b[16:]
	if nmax == 31 {
		qh := b[16:48]
		qs = b[48:]
		for i := range qh {
			qh[i] = 0
		}
		for g := range 4 {
			for l := range 32 {
				qh[l] |= q[64*g+l]>>4<<(2*g) | q[64*g+32+l]>>4<<(2*g+1)
			}
		}
	}
	for g := range 4 {
		for l := range 32 {
			qs[32*g+l] = q[64*g+l]&0xF | q[64*g+32+l]&0xF<<4
		}
	}
	return nil
}

// quantQ6_K encodes a Q6_K block: each sub-block of 16 gets the scale that
// maps its value of largest magnitude to -32, and the scales are quantized
// to int8 against the block's d.
func quantQ6_K(x []float32, b []byte) error {
	var s [16]float32
	var maxScale float32
	for j := range 16 {
		s[j] = signedMax(x[16*j:16*j+16]) / -32
		if math.Abs(float64(s[j])) > math.Abs(float64(maxScale)) {
			maxScale = s[j]
		}
	}
	var iscale float32
	if maxScale != 0 {
		iscale = -128 / maxScale
	}
	d, err := putF16(b[208:], inv(iscale))
	if err != nil {
		return err
	}
	ql, qh, sc := b[0:128], b[128:192], b[192:208]
	for i := range 64 {
		qh[i] = 0
	}
	for j := range 16 {
		v := clampRound(iscale*s[j], -128, 127)
		sc[j] = byte(int8(v))
		D := d * float32(v)
		for l := range 16 {
			e := 16*j + l
			q := 32
			if D != 0 {
				q = clampRound(x[e]/D, -32, 31) + 32
			}
			n, r := e/128, e%128
			grp, k := r/32, r%32
			lo, hi := byte(q&0xF), byte(q>>4)
			switch grp {
			case 0:
				ql[64*n+k] = ql[64*n+k]&0xF0 | lo
			case 1:
				ql[64*n+32+k] = ql[64*n+32+k]&0xF0 | lo
			case 2:
				ql[64*n+k] = ql[64*n+k]&0x0F | lo<<4
			case 3:
				ql[64*n+32+k] = ql[64*n+32+k]&0x0F | lo<<4
			}
			qh[32*n+k] |= hi << (2 * grp)
		}
	}
	return nil
}
