package tokenizer

import (
	"fmt"
	"math"
)

// Protobuf wire types.
const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

// pbReader reads protobuf wire format from a byte slice. Offsets in its
// errors are absolute positions in the file (base is the offset of buf).
type pbReader struct {
	buf  []byte
	pos  int
	base int
}

func (r *pbReader) done() bool { return r.pos >= len(r.buf) }

func (r *pbReader) errorf(format string, args ...any) error {
	return fmt.Errorf("offset %d: %s", r.base+r.pos, fmt.Sprintf(format, args...))
}

// varint reads a base-128 varint of at most 10 bytes.
func (r *pbReader) varint() (uint64, error) {
	var v uint64
	for i := 0; i < 10; i++ {
		if r.pos >= len(r.buf) {
			return 0, r.errorf("truncated varint")
		}
		b := r.buf[r.pos]
		r.pos++
		if i == 9 && b > 1 {
			return 0, r.errorf("varint overflows 64 bits")
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return v, nil
		}
	}
	return 0, r.errorf("varint longer than 10 bytes")
}

// key reads a field key and returns the field number and wire type.
func (r *pbReader) key() (field int, wire int, err error) {
	v, err := r.varint()
	if err != nil {
		return 0, 0, err
	}
	field, wire = int(v>>3), int(v&7)
	if v>>3 == 0 || v>>3 > math.MaxInt32 {
		return 0, 0, r.errorf("invalid field number %d", v>>3)
	}
	return field, wire, nil
}

// bytes reads a length-delimited field and returns a reader over it.
func (r *pbReader) bytes() (*pbReader, error) {
	n, err := r.varint()
	if err != nil {
		return nil, err
	}
	if n > uint64(len(r.buf)-r.pos) {
		return nil, r.errorf("length %d exceeds remaining %d bytes", n, len(r.buf)-r.pos)
	}
	sub := &pbReader{buf: r.buf[r.pos : r.pos+int(n)], base: r.base + r.pos}
	r.pos += int(n)
	return sub, nil
}

func (r *pbReader) fixed32() (uint32, error) {
	if len(r.buf)-r.pos < 4 {
		return 0, r.errorf("truncated fixed32")
	}
	b := r.buf[r.pos:]
	r.pos += 4
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24, nil
}

func (r *pbReader) fixed64() (uint64, error) {
	if len(r.buf)-r.pos < 8 {
		return 0, r.errorf("truncated fixed64")
	}
	lo, _ := r.fixed32()
	hi, _ := r.fixed32()
	return uint64(lo) | uint64(hi)<<32, nil
}

// skip skips a field of the given wire type. Groups (types 3 and 4) are
// deprecated and not supported.
func (r *pbReader) skip(wire int) error {
	var err error
	switch wire {
	case wireVarint:
		_, err = r.varint()
	case wireFixed64:
		_, err = r.fixed64()
	case wireBytes:
		_, err = r.bytes()
	case wireFixed32:
		_, err = r.fixed32()
	default:
		err = r.errorf("unsupported wire type %d", wire)
	}
	return err
}

// expect checks that a known field has the wire type its schema gives.
func (r *pbReader) expect(what string, wire, want int) error {
	if wire != want {
		return r.errorf("%s has wire type %d, want %d", what, wire, want)
	}
	return nil
}

// bool reads a varint as a bool.
func (r *pbReader) bool() (bool, error) {
	v, err := r.varint()
	return v != 0, err
}

// int32 reads a varint as an int32 (negative values are sign-extended to 64
// bits on the wire).
func (r *pbReader) int32() (int32, error) {
	v, err := r.varint()
	return int32(v), err
}
