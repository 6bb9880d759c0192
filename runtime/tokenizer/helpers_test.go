package tokenizer

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// pbw builds protobuf wire format for test models.
type pbw []byte

func (w pbw) varint(v uint64) pbw {
	return binary.AppendUvarint(w, v)
}

func (w pbw) key(field, wire int) pbw { return w.varint(uint64(field)<<3 | uint64(wire)) }

func (w pbw) bytesField(field int, b []byte) pbw {
	return append(w.key(field, wireBytes).varint(uint64(len(b))), b...)
}

func (w pbw) varintField(field int, v uint64) pbw { return w.key(field, wireVarint).varint(v) }

func (w pbw) floatField(field int, f float32) pbw {
	return binary.LittleEndian.AppendUint32(w.key(field, wireFixed32), math.Float32bits(f))
}

type testPiece struct {
	piece string
	score float32
	typ   int
}

func spPieceMsg(p testPiece) []byte {
	return pbw(nil).bytesField(1, []byte(p.piece)).floatField(2, p.score).varintField(3, uint64(p.typ))
}

// spTrainerMsg is a TrainerSpec: model type, byte fallback, unk 0, bos 1, eos 2.
func spTrainerMsg(modelType int, byteFallback bool) []byte {
	w := pbw(nil).varintField(3, uint64(modelType))
	if byteFallback {
		w = w.varintField(35, 1)
	}
	return w.varintField(40, 0).varintField(41, 1).varintField(42, 2)
}

func spNormalizerMsg(dummy, removeExtra, escape bool) []byte {
	b := func(v bool) uint64 {
		if v {
			return 1
		}
		return 0
	}
	return pbw(nil).bytesField(1, []byte("identity")).varintField(3, b(dummy)).varintField(4, b(removeExtra)).varintField(5, b(escape))
}

func spModel(pieces []testPiece, trainer, normalizer []byte) []byte {
	var w pbw
	for _, p := range pieces {
		w = w.bytesField(1, spPieceMsg(p))
	}
	if trainer != nil {
		w = w.bytesField(2, trainer)
	}
	if normalizer != nil {
		w = w.bytesField(3, normalizer)
	}
	return w
}

// tinyPieces is a small SentencePiece vocabulary: <unk>, <s>, </s>, the 256
// byte pieces (ids 3..258), then normal pieces from id 259.
func tinyPieces() []testPiece {
	p := []testPiece{{"<unk>", 0, pieceUnknown}, {"<s>", 0, pieceControl}, {"</s>", 0, pieceControl}}
	for b := 0; b < 256; b++ {
		p = append(p, testPiece{bytePieceName(byte(b)), 0, pieceByte})
	}
	return append(p,
		testPiece{"▁", -1, pieceNormal},         // 259
		testPiece{"a", -2, pieceNormal},         // 260
		testPiece{"b", -3, pieceNormal},         // 261
		testPiece{"c", -4, pieceNormal},         // 262
		testPiece{"ab", -5, pieceNormal},        // 263
		testPiece{"▁a", -6, pieceNormal},        // 264
		testPiece{"▁ab", -7, pieceNormal},       // 265
		testPiece{"bc", -8, pieceNormal},        // 266
		testPiece{"<sep>", 0, pieceUserDefined}, // 267
		testPiece{"abc", -4.5, pieceUnused},     // 268
	)
}

func tinyModel(byteFallback, removeExtra bool) []byte {
	return spModel(tinyPieces(), spTrainerMsg(2, byteFallback), spNormalizerMsg(true, removeExtra, true))
}

// writeTemp writes data to a file named name in a fresh temporary folder.
func writeTemp(tb testing.TB, name string, data []byte) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), name)
	require.NoError(tb, os.WriteFile(p, data, 0o644))
	return p
}

// llama2cFile builds a tokenizer.bin from pieces and scores.
func llama2cFile(maxLen int32, pieces []string, scores []float32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(maxLen))
	for i, p := range pieces {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(scores[i]))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return b
}

// naiveSentencePiece encodes as sentencepiece's BPE with an O(n²) scan per
// merge, for checking the priority-queue encoder (no UNUSED pieces).
func naiveSentencePiece(sp *SentencePiece, text string) []int {
	norm := sp.normalize(text)
	type sym struct {
		s      string
		frozen bool
	}
	var syms []sym
	for i := 0; i < len(norm); {
		if n := sp.userPrefix(norm[i:]); n > 0 {
			syms = append(syms, sym{norm[i : i+n], true})
			i += n
			continue
		}
		_, n := utf8.DecodeRuneInString(norm[i:])
		syms = append(syms, sym{norm[i : i+n], false})
		i += n
	}
	for {
		best, bestScore := -1, float32(0)
		for i := 0; i+1 < len(syms); i++ {
			if syms[i].frozen || syms[i+1].frozen {
				continue
			}
			id, ok := sp.normal[syms[i].s+syms[i+1].s]
			if ok && (best < 0 || sp.scores[id] > bestScore) {
				best, bestScore = i, sp.scores[id]
			}
		}
		if best < 0 {
			break
		}
		syms[best].s += syms[best+1].s
		syms = append(syms[:best+1], syms[best+2:]...)
	}
	out := []int{}
	for _, s := range syms {
		id := sp.pieceID(s.s)
		if id < 0 || sp.types[id] == pieceUnknown {
			if sp.byteFallback {
				for j := 0; j < len(s.s); j++ {
					out = append(out, int(sp.byteID[s.s[j]]))
				}
				continue
			}
			id = sp.unk
		}
		out = append(out, id)
	}
	return out
}

// naiveLlama2C is llama2.c's encode loop written out directly.
func naiveLlama2C(t *Llama2C, text string) []int {
	if text == "" {
		return []int{}
	}
	lookup := func(s string) int {
		for i, v := range t.vocab {
			if v == s {
				return i
			}
		}
		return -1
	}
	tokens := []int{lookup(" ")}
	var buf []byte
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c&0xC0 != 0x80 {
			buf = buf[:0]
		}
		buf = append(buf, c)
		if i+1 < len(text) && text[i+1]&0xC0 == 0x80 && len(buf) < 4 {
			continue
		}
		if id := lookup(string(buf)); id >= 0 {
			tokens = append(tokens, id)
		} else {
			for _, b := range buf {
				tokens = append(tokens, int(b)+3)
			}
		}
		buf = buf[:0]
	}
	for {
		bestScore, bestID, bestIdx := float32(-1e10), -1, -1
		for i := 0; i+1 < len(tokens); i++ {
			id := lookup(t.vocab[tokens[i]] + t.vocab[tokens[i+1]])
			if id >= 0 && t.scores[id] > bestScore {
				bestScore, bestID, bestIdx = t.scores[id], id, i
			}
		}
		if bestIdx < 0 {
			break
		}
		tokens[bestIdx] = bestID
		tokens = append(tokens[:bestIdx+1], tokens[bestIdx+2:]...)
	}
	return tokens
}
