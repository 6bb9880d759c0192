package tokenizer

import (
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"
)

// Piece types of sentencepiece_model.proto.
const (
	pieceNormal      = 1
	pieceUnknown     = 2
	pieceControl     = 3
	pieceUserDefined = 4
	pieceUnused      = 5
	pieceByte        = 6
)

// maxSegment bounds the bytes merged as one unit; longer runs without a
// boundary character are cut (symbol offsets are int32).
const maxSegment = 1 << 30

// SentencePiece is a SentencePiece BPE model read from a .model file, such as
// the Llama-2 tokenizer. It encodes exactly as the sentencepiece library does
// for BPE models with the identity normalizer.
type SentencePiece struct {
	pieces  []string  // id → piece as stored (with ▁ for spaces)
	surface []string  // id → text of a normal piece (▁ replaced by a space)
	scores  []float32 // id → merge score
	types   []uint8   // id → piece type

	normal   map[string]int32 // NORMAL, USER_DEFINED, UNUSED: what merges may form
	reserved map[string]int32 // CONTROL, UNKNOWN, BYTE
	shadowed bool             // some string is in both maps (reserved wins)
	byteID   [256]int32       // <0xHH> piece of each byte, -1 if none

	userByFirst map[byte][]string // user-defined pieces by first byte, longest first

	asciiInPiece [128]bool     // ASCII bytes that occur in some normal piece
	runeInPiece  map[rune]bool // other characters that occur in some normal piece
	unk          int           // id of the UNKNOWN piece, -1 if none
	bos, eos     int           // -1 if none
	byteFallback bool          // unknown symbols become byte pieces
	dummyPrefix  bool          // add_dummy_prefix
	removeExtra  bool          // remove_extra_whitespaces
	escapeSpaces bool          // escape_whitespaces
	suffixSpace  bool          // treat_whitespace_as_suffix
	userDefined  []string      // user-defined pieces
	// wordSplit: no normal piece holds the space symbol right after another
	// character (the trainer's split_by_whitespace), so no merge joins a
	// character to the space run after it: Encode merges word by word (a
	// word: a run of spaces and what follows up to the next run) and reuses
	// a repeated word's ids.
	wordSplit bool
}

// LoadSentencePiece reads a SentencePiece .model file (a serialized
// ModelProto). Only the BPE model type with the identity normalizer is
// supported.
func LoadSentencePiece(path string) (*SentencePiece, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	return parseSentencePiece(path, data)
}

type spTrainer struct {
	modelType    int
	suffixSpace  bool
	byteFallback bool
	unk, bos     int32
	eos, pad     int32
}

type spNormalizer struct {
	name                            string
	charsmap                        int
	dummyPrefix, removeExtra, escWS bool
}

// parseSentencePiece decodes a ModelProto; name is used in errors.
func parseSentencePiece(name string, data []byte) (*SentencePiece, error) {
	if len(data) == 0 {
		return nil, fileError(name, "empty file")
	}
	sp := &SentencePiece{unk: -1, bos: -1, eos: -1}
	tr := spTrainer{modelType: 1, unk: 0, bos: 1, eos: 2, pad: -1}
	nm := spNormalizer{dummyPrefix: true, removeExtra: true, escWS: true}
	r := &pbReader{buf: data}
	for !r.done() {
		field, wire, err := r.key()
		if err != nil {
			return nil, fileError(name, "%v", err)
		}
		switch field {
		case 1:
			if err := sp.parsePiece(r, wire); err != nil {
				return nil, fileError(name, "piece %d: %v", len(sp.pieces), err)
			}
		case 2:
			if err := parseTrainer(r, wire, &tr); err != nil {
				return nil, fileError(name, "trainer_spec: %v", err)
			}
		case 3:
			if err := parseNormalizer(r, wire, &nm); err != nil {
				return nil, fileError(name, "normalizer_spec: %v", err)
			}
		default:
			if err := r.skip(wire); err != nil {
				return nil, fileError(name, "field %d: %v", field, err)
			}
		}
	}
	if err := sp.setup(tr, nm); err != nil {
		return nil, fileError(name, "%v", err)
	}
	return sp, nil
}

func (sp *SentencePiece) parsePiece(r *pbReader, wire int) error {
	if err := r.expect("piece", wire, wireBytes); err != nil {
		return err
	}
	m, err := r.bytes()
	if err != nil {
		return err
	}
	var piece string
	score, typ := float32(0), uint8(pieceNormal)
	for !m.done() {
		f, w, err := m.key()
		if err != nil {
			return err
		}
		switch f {
		case 1:
			if err := m.expect("piece string", w, wireBytes); err != nil {
				return err
			}
			s, err := m.bytes()
			if err != nil {
				return err
			}
			piece = string(s.buf)
		case 2:
			if err := m.expect("score", w, wireFixed32); err != nil {
				return err
			}
			v, err := m.fixed32()
			if err != nil {
				return err
			}
			score = math.Float32frombits(v)
		case 3:
			if err := m.expect("type", w, wireVarint); err != nil {
				return err
			}
			v, err := m.varint()
			if err != nil {
				return err
			}
			if v >= pieceNormal && v <= pieceByte {
				typ = uint8(v)
			} // unknown enum values read as the default, NORMAL
		default:
			if err := m.skip(w); err != nil {
				return err
			}
		}
	}
	sp.pieces = append(sp.pieces, piece)
	sp.scores = append(sp.scores, score)
	sp.types = append(sp.types, typ)
	return nil
}

func parseTrainer(r *pbReader, wire int, t *spTrainer) error {
	if err := r.expect("trainer_spec", wire, wireBytes); err != nil {
		return err
	}
	m, err := r.bytes()
	if err != nil {
		return err
	}
	for !m.done() {
		f, w, err := m.key()
		if err != nil {
			return err
		}
		var v int32
		var b bool
		switch f {
		case 3, 40, 41, 42, 43:
			if err := m.expect(fmt.Sprintf("field %d", f), w, wireVarint); err != nil {
				return err
			}
			v, err = m.int32()
		case 24, 35:
			if err := m.expect(fmt.Sprintf("field %d", f), w, wireVarint); err != nil {
				return err
			}
			b, err = m.bool()
		default:
			err = m.skip(w)
		}
		if err != nil {
			return err
		}
		switch f {
		case 3:
			t.modelType = int(v)
		case 24:
			t.suffixSpace = b
		case 35:
			t.byteFallback = b
		case 40:
			t.unk = v
		case 41:
			t.bos = v
		case 42:
			t.eos = v
		case 43:
			t.pad = v
		}
	}
	return nil
}

func parseNormalizer(r *pbReader, wire int, n *spNormalizer) error {
	if err := r.expect("normalizer_spec", wire, wireBytes); err != nil {
		return err
	}
	m, err := r.bytes()
	if err != nil {
		return err
	}
	for !m.done() {
		f, w, err := m.key()
		if err != nil {
			return err
		}
		switch f {
		case 1, 2:
			if err := m.expect(fmt.Sprintf("field %d", f), w, wireBytes); err != nil {
				return err
			}
			s, err := m.bytes()
			if err != nil {
				return err
			}
			if f == 1 {
				n.name = string(s.buf)
			} else {
				n.charsmap = len(s.buf)
			}
		case 3, 4, 5:
			if err := m.expect(fmt.Sprintf("field %d", f), w, wireVarint); err != nil {
				return err
			}
			b, err := m.bool()
			if err != nil {
				return err
			}
			switch f {
			case 3:
				n.dummyPrefix = b
			case 4:
				n.removeExtra = b
			case 5:
				n.escWS = b
			}
		default:
			if err := m.skip(w); err != nil {
				return err
			}
		}
	}
	return nil
}

var spModelTypes = map[int]string{1: "UNIGRAM", 2: "BPE", 3: "WORD", 4: "CHAR"}

// setup validates the parsed model and builds the lookup tables.
func (sp *SentencePiece) setup(tr spTrainer, nm spNormalizer) error {
	if tr.modelType != 2 {
		t := spModelTypes[tr.modelType]
		if t == "" {
			t = fmt.Sprint(tr.modelType)
		}
		return fmt.Errorf("model type %s is not supported (only BPE)", t)
	}
	if nm.charsmap > 0 {
		return fmt.Errorf("normalizer %q has a %d-byte precompiled_charsmap; only the identity normalizer is supported", nm.name, nm.charsmap)
	}
	n := len(sp.pieces)
	if n == 0 {
		return fmt.Errorf("no pieces")
	}
	sp.byteFallback = tr.byteFallback
	sp.suffixSpace = tr.suffixSpace
	sp.dummyPrefix, sp.removeExtra, sp.escapeSpaces = nm.dummyPrefix, nm.removeExtra, nm.escWS
	sp.wordSplit = !sp.suffixSpace // until a piece says otherwise (below)
	sp.normal = make(map[string]int32, n)
	sp.reserved = make(map[string]int32)
	sp.runeInPiece = make(map[rune]bool)
	sp.surface = make([]string, n)
	for i := range sp.byteID {
		sp.byteID[i] = -1
	}
	for i, p := range sp.pieces {
		if p == "" {
			return fmt.Errorf("piece %d is empty", i)
		}
		typ := sp.types[i]
		m := sp.reserved
		if typ == pieceNormal || typ == pieceUserDefined || typ == pieceUnused {
			m = sp.normal
			for _, r := range p {
				if r < utf8.RuneSelf {
					sp.asciiInPiece[r] = true
				} else {
					sp.runeInPiece[r] = true
				}
			}
			sp.surface[i] = strings.ReplaceAll(p, spaceSymbol, " ")
			if spaceAfterOther(p) { // a merge may join a word to the spaces after it
				sp.wordSplit = false
			}
		}
		if _, dup := m[p]; dup {
			return fmt.Errorf("piece %d %q is already defined", i, p)
		}
		m[p] = int32(i)
		switch typ {
		case pieceUnknown:
			if sp.unk < 0 {
				sp.unk = i
			}
		case pieceUserDefined:
			sp.userDefined = append(sp.userDefined, p)
		case pieceByte:
			b, ok := parseBytePiece(p)
			if !ok {
				return fmt.Errorf("piece %d %q has type BYTE but is not of the form <0xHH>", i, p)
			}
			sp.byteID[b] = int32(i)
		}
	}
	for p := range sp.reserved {
		if _, ok := sp.normal[p]; ok {
			sp.shadowed = true
		}
	}
	if len(sp.userDefined) > 0 {
		sp.userByFirst = make(map[byte][]string)
		for _, u := range sp.userDefined {
			sp.userByFirst[u[0]] = append(sp.userByFirst[u[0]], u)
		}
		for _, l := range sp.userByFirst {
			sort.SliceStable(l, func(a, b int) bool { return len(l[a]) > len(l[b]) })
		}
	}
	inRange := func(id int32) int {
		if id >= 0 && int(id) < n {
			return int(id)
		}
		return -1
	}
	sp.bos, sp.eos = inRange(tr.bos), inRange(tr.eos)
	return nil
}

// BOS returns the beginning-of-sequence id (TrainerSpec.bos_id), or -1.
func (sp *SentencePiece) BOS() int { return sp.bos }

// EOS returns the end-of-sequence id (TrainerSpec.eos_id), or -1.
func (sp *SentencePiece) EOS() int { return sp.eos }

// VocabSize returns the number of pieces.
func (sp *SentencePiece) VocabSize() int { return len(sp.pieces) }

// IDToPiece returns the piece string of id as stored in the model (with ▁ for
// spaces, <0xHH> for bytes), or "" when id is out of range.
func (sp *SentencePiece) IDToPiece(id int) string {
	if id < 0 || id >= len(sp.pieces) {
		return ""
	}
	return sp.pieces[id]
}

// userPrefix returns the length of the longest user-defined piece that s
// starts with, or 0.
func (sp *SentencePiece) userPrefix(s string) int {
	if sp.userByFirst == nil || s == "" {
		return 0
	}
	for _, u := range sp.userByFirst[s[0]] {
		if strings.HasPrefix(s, u) {
			return len(u)
		}
	}
	return 0
}

// normalize applies the normalizer: optional removal of extra spaces, the
// dummy prefix, and the escaping of spaces as ▁. Invalid UTF-8 bytes become
// U+FFFD, one per byte, as in sentencepiece.
func (sp *SentencePiece) normalize(text string) string {
	in := text
	if sp.removeExtra {
		for in != "" && in[0] == ' ' && sp.userPrefix(in) == 0 {
			in = in[1:]
		}
	}
	if in == "" {
		return ""
	}
	ws := " "
	if sp.escapeSpaces {
		ws = spaceSymbol
	}
	out := make([]byte, 0, len(in)+len(in)/4+8)
	if sp.dummyPrefix && !sp.suffixSpace {
		out = append(out, ws...)
	}
	prevSpace := sp.removeExtra
	for in != "" {
		var piece string
		n := sp.userPrefix(in)
		if n > 0 {
			piece = in[:n]
		} else {
			r, size := utf8.DecodeRuneInString(in)
			n = size
			if r == utf8.RuneError && size == 1 {
				piece = "\uFFFD"
			} else {
				piece = in[:size]
			}
		}
		in = in[n:]
		if prevSpace {
			piece = strings.TrimLeft(piece, " ")
		}
		if piece != "" {
			for j := 0; j < len(piece); j++ {
				if piece[j] == ' ' && sp.escapeSpaces {
					out = append(out, spaceSymbol...)
				} else {
					out = append(out, piece[j])
				}
			}
			prevSpace = piece[len(piece)-1] == ' '
		}
		if !sp.removeExtra {
			prevSpace = false
		}
	}
	if sp.removeExtra {
		for strings.HasSuffix(string(out), ws) {
			out = out[:len(out)-len(ws)]
		}
	}
	if sp.dummyPrefix && sp.suffixSpace && len(out) > 0 {
		out = append(out, ws...)
	}
	return string(out)
}

// isBoundary reports whether the character c occurs in no mergeable piece:
// then no merge can involve it, and the text on either side of it is merged
// independently with the same result.
func (sp *SentencePiece) isBoundary(c string) bool {
	if len(c) == 1 && c[0] < utf8.RuneSelf {
		return !sp.asciiInPiece[c[0]]
	}
	r, _ := utf8.DecodeRuneInString(c)
	return !sp.runeInPiece[r]
}

// spaceAfterOther reports whether piece p holds the space symbol right
// after a character that is not one.
func spaceAfterOther(p string) bool {
	for j := 1; j < len(p); j++ {
		if strings.HasPrefix(p[j:], spaceSymbol) && !strings.HasSuffix(p[:j], spaceSymbol) {
			return true
		}
	}
	return false
}

// spEncoder holds the state of one Encode call.
type spEncoder struct {
	sp    *SentencePiece
	m     merger
	seg   string               // the text being merged
	rev   map[string][2]string // UNUSED pieces formed by merges, and their parts
	pair  pairFunc
	out   []int
	words map[string][]int // wordSplit: the ids of the words merged so far
}

// Encode returns the ids of text as sentencepiece's EncodeAsIds does (no BOS
// or EOS).
func (sp *SentencePiece) Encode(text string) []int {
	norm := sp.normalize(text)
	if norm == "" {
		return []int{}
	}
	e := &spEncoder{sp: sp, out: make([]int, 0, len(norm)/4+4)}
	e.pair = e.pairOf
	start := 0 // start of the current segment in norm
	for i := 0; i < len(norm); {
		n := sp.userPrefix(norm[i:])
		boundary := n > 0
		if !boundary {
			_, n = utf8.DecodeRuneInString(norm[i:])
			boundary = sp.isBoundary(norm[i : i+n])
		}
		if boundary || i+n-start > maxSegment ||
			sp.wordSplit && i > start && strings.HasPrefix(norm[i:], spaceSymbol) && !strings.HasSuffix(norm[start:i], spaceSymbol) {
			e.flush(norm[start:i])
			start = i
		}
		if boundary {
			e.emit(norm[i : i+n])
			start = i + n
		} else {
			e.m.add(int32(i-start), int32(i+n-start), -1)
		}
		i += n
	}
	e.flush(norm[start:])
	return e.out
}

// pairOf merges two symbols when their concatenation is a piece, with the
// piece's score as priority.
func (e *spEncoder) pairOf(l, r *symbol) (int32, float32, bool) {
	w := e.seg[l.start:r.end]
	id, ok := e.sp.normal[w]
	if !ok {
		return 0, 0, false
	}
	if e.sp.types[id] == pieceUnused {
		if e.rev == nil {
			e.rev = make(map[string][2]string)
		}
		e.rev[w] = [2]string{e.seg[l.start:l.end], e.seg[r.start:r.end]}
	}
	return id, e.sp.scores[id], true
}

// flush merges the symbols of seg and emits them.
func (e *spEncoder) flush(seg string) {
	if len(e.m.syms) == 0 {
		return
	}
	cache := e.sp.wordSplit && len(seg) <= cacheWordLen // a word (BPE's cache bound)
	if cache {
		if ids, ok := e.words[seg]; ok {
			e.out = append(e.out, ids...)
			e.m.reset()
			return
		}
	}
	from := len(e.out)
	e.seg = seg
	for i := e.m.run(e.pair); i >= 0; i = e.m.syms[i].next {
		s := &e.m.syms[i]
		if s.id >= 0 && !e.sp.shadowed && e.sp.types[s.id] != pieceUnused {
			e.out = append(e.out, int(s.id))
			continue
		}
		e.emit(seg[s.start:s.end])
	}
	e.m.reset()
	if cache {
		if e.words == nil {
			e.words = make(map[string][]int)
		}
		e.words[seg] = slices.Clone(e.out[from:])
	}
}

// emit appends the ids of the symbol w: its piece, the parts an UNUSED piece
// was merged from, or byte pieces (unknown) when byte fallback is on.
func (e *spEncoder) emit(w string) {
	sp := e.sp
	id := sp.pieceID(w)
	if id >= 0 && sp.types[id] == pieceUnused {
		if p, ok := e.rev[w]; ok && p[0] != "" && p[1] != "" {
			e.emit(p[0])
			e.emit(p[1])
			return
		}
	}
	if id < 0 || sp.types[id] == pieceUnknown {
		if sp.byteFallback {
			for j := 0; j < len(w); j++ {
				b := int(sp.byteID[w[j]])
				if b < 0 {
					b = sp.unk
				}
				if b >= 0 {
					e.out = append(e.out, b)
				}
			}
			return
		}
		id = sp.unk
	}
	if id >= 0 {
		e.out = append(e.out, id)
	}
}

// pieceID looks a piece up as sentencepiece's PieceToId does (reserved pieces
// first); -1 when absent.
func (sp *SentencePiece) pieceID(w string) int {
	if id, ok := sp.reserved[w]; ok {
		return int(id)
	}
	if id, ok := sp.normal[w]; ok {
		return int(id)
	}
	return -1
}

// Decode returns the text of ids as sentencepiece's DecodeIds does: control
// pieces vanish, unknown pieces read " ⁇ ", runs of byte pieces are decoded
// as UTF-8 (invalid bytes become U+FFFD), ▁ becomes a space, and the ▁ of the
// dummy prefix is removed from the first piece that has one (all leading ▁
// when remove_extra_whitespaces is set).
func (sp *SentencePiece) Decode(ids []int) string {
	var out, run []byte
	flush := func() {
		if len(run) > 0 {
			out = append(out, validUTF8(string(run))...)
			run = run[:0]
		}
	}
	strip := (sp.dummyPrefix || sp.removeExtra) && !sp.suffixSpace
	atStart, stripped := true, false // still at the start; the dummy ▁ was removed
	for _, id := range ids {
		if id < 0 || id >= len(sp.pieces) {
			continue
		}
		if sp.types[id] == pieceByte {
			b, _ := parseBytePiece(sp.pieces[id])
			run = append(run, b)
			continue
		}
		flush()
		if stripped || len(out) > 0 {
			atStart = false
		}
		switch sp.types[id] {
		case pieceControl:
		case pieceUnknown:
			out = append(out, unkSurface...)
		default:
			s := sp.surface[id]
			if atStart && strip && strings.HasPrefix(sp.pieces[id], spaceSymbol) {
				s = s[1:]
				stripped = !sp.removeExtra
			}
			out = append(out, s...)
		}
	}
	flush()
	if sp.suffixSpace && (sp.dummyPrefix || sp.removeExtra) && len(out) > 0 && out[len(out)-1] == ' ' {
		out = out[:len(out)-1]
	}
	return string(out)
}

// Piece returns the text of id for streaming output after prev: ▁ becomes a
// space, the leading space is dropped when prev is BOS, a byte piece gives
// its raw byte, control pieces give "" and the unknown piece " ⁇ ".
func (sp *SentencePiece) Piece(prev, id int) string {
	if id < 0 || id >= len(sp.pieces) {
		return ""
	}
	switch sp.types[id] {
	case pieceByte:
		b, _ := parseBytePiece(sp.pieces[id])
		return string([]byte{b})
	case pieceControl:
		return ""
	case pieceUnknown:
		return unkSurface
	}
	s := sp.surface[id]
	if prev == sp.bos && sp.bos >= 0 && strings.HasPrefix(s, " ") {
		s = s[1:]
	}
	return s
}
