package runtime

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"unsafe"
)

// The safetensors format (https://huggingface.co/docs/safetensors): an 8-byte
// little-endian header length N, N bytes of JSON header
//
//	{"NAME": {"dtype": "BF16", "shape": [d0, d1], "data_offsets": [begin, end]}, ...,
//	 "__metadata__": {"format": "pt"}}
//
// then the data buffer, which the offsets index (relative to its start).
// Everything in the header is checked against the size of the file before
// anything is allocated, so a corrupt file gives an error, never a panic or
// an allocation larger than the file.

// maxSafetensorsHeader bounds the JSON header; real headers are kilobytes.
const maxSafetensorsHeader = 100 << 20

// stEntry is one tensor described by a safetensors header, offsets relative
// to the start of the data buffer.
type stEntry struct {
	name       string
	dtype      DType
	shape      []int
	begin, end int64
}

// ReadSafetensors reads every tensor of the safetensors file at path, keeping
// each in its stored type (BF16 and F16 as bit patterns in U16, F32 in F32).
// The file is mapped into memory (read-only) and each tensor's slice points
// into the mapping: nothing is copied, the kernel pages the data in as it is
// touched, and a backend that copies the weights to a device lets the pages
// go again (ReleaseHost). The tensors are read-only. Where the file cannot
// be mapped (another system, a file system without mmap, a big-endian
// machine), or a tensor's data is not aligned to its element size, the data
// is read into the tensors' slices instead; loading never holds a second
// copy of the file. Errors name the file.
func ReadSafetensors(path string) (map[string]*Tensor, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("safetensors %s: is a directory", path)
	}
	if readNative && useMmap && st.Size() >= 8 {
		if mp, err := mapFile(f, st.Size()); err == nil {
			return mappedSafetensors(path, mp)
		}
	}
	return readSafetensors(path, f, st.Size())
}

// useMmap, when false, makes ReadSafetensors read files instead of mapping
// them (tests cover both paths).
var useMmap = true

// mappedSafetensors decodes the safetensors file mapped by mp; name is used
// in errors. The tensors point into the mapping where their data is aligned.
func mappedSafetensors(name string, mp *mapping) (map[string]*Tensor, error) {
	entries, dataStart, err := safetensorsLayout(name, bytes.NewReader(mp.data), int64(len(mp.data)))
	if err != nil {
		return nil, err
	}
	out := make(map[string]*Tensor, len(entries))
	for _, e := range entries {
		t := &Tensor{Name: e.name, DType: e.dtype, Shape: e.shape}
		count := int((e.end - e.begin) / int64(e.dtype.Size()))
		off := dataStart + e.begin
		if e.dtype == F32 {
			t.F32 = mappedSlice[float32](mp, off, count, t)
		} else {
			t.U16 = mappedSlice[uint16](mp, off, count, t)
		}
		out[e.name] = t
	}
	return out, nil
}

// mappedSlice returns the count elements at byte off of the mapping: a
// slice of the mapping itself when off is aligned to the element size (t
// then holds the mapping), else a copy on the heap. The host is little-endian
// (mapping is only used then), as the file is.
func mappedSlice[T float32 | uint16](mp *mapping, off int64, count int, t *Tensor) []T {
	if count == 0 {
		return make([]T, 0)
	}
	var z T
	size := int64(unsafe.Sizeof(z))
	src := mp.data[off : off+int64(count)*size]
	if off%size == 0 {
		t.mem = mp
		return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(src))), count)
	}
	dst := make([]T, count)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(dst))), len(src)), src)
	return dst
}

// parseSafetensors decodes a whole safetensors file held in data; name is
// used in errors. It runs the same code as ReadSafetensors.
func parseSafetensors(name string, data []byte) (map[string]*Tensor, error) {
	return readSafetensors(name, bytes.NewReader(data), int64(len(data)))
}

// readSafetensors decodes the safetensors file of the given size that r
// reads.
func readSafetensors(name string, r io.ReaderAt, size int64) (map[string]*Tensor, error) {
	entries, dataStart, err := safetensorsLayout(name, r, size)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*Tensor, len(entries))
	for _, e := range entries {
		t := &Tensor{Name: e.name, DType: e.dtype, Shape: e.shape}
		count := int((e.end - e.begin) / int64(e.dtype.Size()))
		off := dataStart + e.begin
		if e.dtype == F32 {
			t.F32 = make([]float32, count)
			err = readF32At(r, off, t.F32)
		} else {
			t.U16 = make([]uint16, count)
			err = readU16At(r, off, t.U16)
		}
		if err != nil {
			return nil, fmt.Errorf("safetensors %s: tensor %q: reading data: %w", name, e.name, err)
		}
		out[e.name] = t
	}
	return out, nil
}

// safetensorsLayout reads and checks the header of the safetensors file of
// the given size that r reads: its tensors, ordered by offset, and the
// offset of the data buffer in the file.
func safetensorsLayout(name string, r io.ReaderAt, size int64) ([]stEntry, int64, error) {
	if size < 8 {
		return nil, 0, fmt.Errorf("safetensors %s: file has %d bytes, too short for the 8-byte header length", name, size)
	}
	var lenBuf [8]byte
	if err := readAtFull(r, lenBuf[:], 0); err != nil {
		return nil, 0, fmt.Errorf("safetensors %s: reading header length: %w", name, err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > uint64(size-8) {
		return nil, 0, fmt.Errorf("safetensors %s: header length %d exceeds the %d bytes after it (file has %d bytes)", name, n, size-8, size)
	}
	if n > maxSafetensorsHeader {
		return nil, 0, fmt.Errorf("safetensors %s: header length %d is implausibly large (limit %d)", name, n, maxSafetensorsHeader)
	}
	header := make([]byte, n)
	if err := readAtFull(r, header, 8); err != nil {
		return nil, 0, fmt.Errorf("safetensors %s: reading header: %w", name, err)
	}
	dataStart := 8 + int64(n)
	entries, err := parseSafetensorsHeader(header, size-dataStart)
	if err != nil {
		return nil, 0, fmt.Errorf("safetensors %s: %w", name, err)
	}
	return entries, dataStart, nil
}

// stHeaderEntry is the JSON form of one tensor in a header; pointers tell an
// absent field from a zero one.
type stHeaderEntry struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

// parseSafetensorsHeader decodes and checks a JSON header against a data
// buffer of dataLen bytes. The entries come back ordered by offset.
func parseSafetensorsHeader(header []byte, dataLen int64) ([]stEntry, error) {
	dec := json.NewDecoder(bytes.NewReader(header))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("header is not valid JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("header is not a JSON object (starts with %v)", tok)
	}
	var entries []stEntry
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("header is not valid JSON: %w", err)
		}
		key, _ := tok.(string) // object keys are always strings
		if seen[key] {
			return nil, fmt.Errorf("header names %q twice", key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("header is not valid JSON (at %q): %w", key, err)
		}
		if key == "__metadata__" {
			var meta map[string]json.RawMessage
			if err := json.Unmarshal(raw, &meta); err != nil {
				return nil, fmt.Errorf("__metadata__ is not a JSON object: %w", err)
			}
			continue
		}
		e, err := parseSTEntry(key, raw, dataLen)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, fmt.Errorf("header is not valid JSON: %w", err)
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return nil, fmt.Errorf("header has trailing bytes after the JSON object: %w", err)
		}
		return nil, fmt.Errorf("header has trailing data after the JSON object: %v", tok)
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].begin != entries[j].begin {
			return entries[i].begin < entries[j].begin
		}
		return entries[i].end < entries[j].end
	})
	for i := 1; i < len(entries); i++ {
		a, b := entries[i-1], entries[i]
		if b.begin < a.end {
			return nil, fmt.Errorf("tensors %q [%d, %d) and %q [%d, %d) overlap", a.name, a.begin, a.end, b.name, b.begin, b.end)
		}
	}
	return entries, nil
}

// parseSTEntry checks one tensor's header entry.
func parseSTEntry(key string, raw json.RawMessage, dataLen int64) (stEntry, error) {
	e := stEntry{name: key}
	if key == "" {
		return e, errors.New("header has a tensor with an empty name")
	}
	var h stHeaderEntry
	if err := json.Unmarshal(raw, &h); err != nil {
		return e, fmt.Errorf("tensor %q: bad header entry: %w", key, err)
	}
	if h.DType == nil || h.Shape == nil || h.DataOffsets == nil {
		return e, fmt.Errorf("tensor %q: header entry needs dtype, shape and data_offsets", key)
	}
	switch *h.DType {
	case "F32":
		e.dtype = F32
	case "BF16":
		e.dtype = BF16
	case "F16":
		e.dtype = F16
	default:
		return e, fmt.Errorf("tensor %q has dtype %q, not supported (want BF16, F16 or F32)", key, *h.DType)
	}
	count := int64(1)
	e.shape = make([]int, len(*h.Shape))
	for i, d := range *h.Shape {
		if d < 0 {
			return e, fmt.Errorf("tensor %q: negative dimension in shape %v", key, *h.Shape)
		}
		if d > 0 && count > math.MaxInt64/d || d > math.MaxInt {
			return e, fmt.Errorf("tensor %q: shape %v overflows", key, *h.Shape)
		}
		count *= d
		e.shape[i] = int(d)
	}
	if count > math.MaxInt64/int64(e.dtype.Size()) {
		return e, fmt.Errorf("tensor %q: shape %v overflows", key, *h.Shape)
	}
	nbytes := count * int64(e.dtype.Size())
	off := *h.DataOffsets
	if len(off) != 2 {
		return e, fmt.Errorf("tensor %q: data_offsets %v must have two elements", key, off)
	}
	e.begin, e.end = off[0], off[1]
	switch {
	case e.begin < 0 || e.end < 0:
		return e, fmt.Errorf("tensor %q: negative data_offsets %v", key, off)
	case e.begin > e.end:
		return e, fmt.Errorf("tensor %q: data_offsets %v: begin after end", key, off)
	case e.end > dataLen:
		return e, fmt.Errorf("tensor %q: data_offsets %v out of range: the data buffer has %d bytes", key, off, dataLen)
	case e.end-e.begin != nbytes:
		return e, fmt.Errorf("tensor %q: data_offsets %v span %d bytes, but %s shape %v needs %d", key, off, e.end-e.begin, e.dtype, *h.Shape, nbytes)
	}
	return e, nil
}

// ReadSafetensorsIndex reads a sharded checkpoint from its index file (as
// model.safetensors.index.json, {"weight_map": {"tensor": "shard file"}}):
// each shard, relative to the index's folder, is read once, and every tensor
// the map names must be in the shard it names. Tensors a shard holds that the
// map does not name are dropped.
func ReadSafetensorsIndex(indexPath string) (map[string]*Tensor, error) {
	t, _, err := readSafetensorsIndex(indexPath)
	return t, err
}

// readSafetensorsIndex is ReadSafetensorsIndex that also returns which file
// holds each tensor.
func readSafetensorsIndex(indexPath string) (map[string]*Tensor, map[string]string, error) {
	data, err := os.ReadFile(indexPath)
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors index: %w", err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, nil, fmt.Errorf("safetensors index %s: %w", indexPath, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, nil, fmt.Errorf("safetensors index %s: weight_map is missing or empty", indexPath)
	}
	byShard := map[string][]string{}
	for name, shard := range idx.WeightMap {
		if shard == "" || !filepath.IsLocal(shard) {
			return nil, nil, fmt.Errorf("safetensors index %s: tensor %q maps to %q, not a file in the index's folder", indexPath, name, shard)
		}
		byShard[shard] = append(byShard[shard], name)
	}
	shards := make([]string, 0, len(byShard))
	for s := range byShard {
		shards = append(shards, s)
	}
	sort.Strings(shards)
	dir := filepath.Dir(indexPath)
	out := make(map[string]*Tensor, len(idx.WeightMap))
	files := make(map[string]string, len(idx.WeightMap))
	for _, shard := range shards {
		path := filepath.Join(dir, shard)
		ts, err := ReadSafetensors(path)
		if err != nil {
			return nil, nil, fmt.Errorf("safetensors index %s: %w", indexPath, err)
		}
		names := byShard[shard]
		sort.Strings(names)
		for _, name := range names {
			t, ok := ts[name]
			if !ok {
				return nil, nil, fmt.Errorf("safetensors index %s: maps tensor %q to %s, which has no such tensor", indexPath, name, path)
			}
			out[name] = t
			files[name] = path
		}
	}
	return out, files, nil
}

// hostLittleEndian reports whether this machine stores numbers little-endian,
// as checkpoints do.
var hostLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// readNative, when true, reads little-endian data straight into the memory
// of typed slices; otherwise it is decoded through a small buffer. Tests turn
// it off to cover the path big-endian machines take.
var readNative = hostLittleEndian

// decodeChunk is the buffer size of the decoding read path.
const decodeChunk = 1 << 20

// readAtFull fills b from r at off; a short read is io.ErrUnexpectedEOF.
func readAtFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// readF32At fills dst with little-endian float32 values read from r at off.
func readF32At(r io.ReaderAt, off int64, dst []float32) error {
	if len(dst) == 0 {
		return nil
	}
	if readNative {
		return readAtFull(r, unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(dst))), 4*len(dst)), off)
	}
	buf := make([]byte, min(4*len(dst), decodeChunk))
	for i := 0; i < len(dst); {
		n := min(len(dst)-i, len(buf)/4)
		if err := readAtFull(r, buf[:4*n], off+4*int64(i)); err != nil {
			return err
		}
		for j := range n {
			dst[i+j] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*j:]))
		}
		i += n
	}
	return nil
}

// readU16At fills dst with little-endian uint16 values read from r at off.
func readU16At(r io.ReaderAt, off int64, dst []uint16) error {
	if len(dst) == 0 {
		return nil
	}
	if readNative {
		return readAtFull(r, unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(dst))), 2*len(dst)), off)
	}
	buf := make([]byte, min(2*len(dst), decodeChunk))
	for i := 0; i < len(dst); {
		n := min(len(dst)-i, len(buf)/2)
		if err := readAtFull(r, buf[:2*n], off+2*int64(i)); err != nil {
			return err
		}
		for j := range n {
			dst[i+j] = binary.LittleEndian.Uint16(buf[2*j:])
		}
		i += n
	}
	return nil
}
