package tokenizer

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"strings"
)

// Llama2C is a tokenizer read from a llama2.c tokenizer.bin file. It encodes
// as llama2.c's run.c encode does: a dummy " " prefix, one token per UTF-8
// character (or its bytes as <0xHH> tokens at id byte+3), then merges of the
// best-scoring adjacent pair until none is in the vocabulary.
type Llama2C struct {
	vocab          []string
	scores         []float32
	ids            map[string]int32 // piece → lowest id with that piece
	maxTokenLength int
	bos, eos       int
}

// LoadLlama2C reads a llama2.c tokenizer.bin file: int32 max_token_length,
// then per token float32 score, int32 length and the bytes. vocabSize tokens
// are read; 0 reads until the end of the file. BOS is 1 and EOS 2, as in
// llama2.c.
func LoadLlama2C(path string, vocabSize int) (*Llama2C, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	return parseLlama2C(path, data, vocabSize)
}

// parseLlama2C decodes a tokenizer.bin; name is used in errors.
func parseLlama2C(name string, data []byte, vocabSize int) (*Llama2C, error) {
	if vocabSize < 0 {
		return nil, fileError(name, "negative vocabulary size %d", vocabSize)
	}
	if len(data) < 4 {
		return nil, fileError(name, "file is %d bytes, too short for the max_token_length header", len(data))
	}
	maxLen := int32(binary.LittleEndian.Uint32(data))
	if maxLen < 0 {
		return nil, fileError(name, "negative max_token_length %d", maxLen)
	}
	capacity := len(data) / 8
	if vocabSize > 0 && vocabSize < capacity {
		capacity = vocabSize
	}
	t := &Llama2C{
		vocab:          make([]string, 0, capacity),
		scores:         make([]float32, 0, capacity),
		maxTokenLength: int(maxLen),
	}
	pos := 4
	for i := 0; vocabSize == 0 || i < vocabSize; i++ {
		if pos == len(data) && vocabSize == 0 {
			break
		}
		if len(data)-pos < 8 {
			return nil, fileError(name, "token %d: %d bytes left at offset %d, need 8 for score and length", i, len(data)-pos, pos)
		}
		score := math.Float32frombits(binary.LittleEndian.Uint32(data[pos:]))
		n := int32(binary.LittleEndian.Uint32(data[pos+4:]))
		pos += 8
		if n < 0 {
			return nil, fileError(name, "token %d: negative length %d", i, n)
		}
		if int64(n) > int64(len(data)-pos) {
			return nil, fileError(name, "token %d: length %d exceeds remaining %d bytes", i, n, len(data)-pos)
		}
		t.vocab = append(t.vocab, string(data[pos:pos+int(n)]))
		t.scores = append(t.scores, score)
		pos += int(n)
	}
	if len(t.vocab) == 0 {
		return nil, fileError(name, "no tokens")
	}
	t.ids = make(map[string]int32, len(t.vocab))
	for i, s := range t.vocab {
		if _, ok := t.ids[s]; !ok {
			t.ids[s] = int32(i)
		}
	}
	t.bos, t.eos = -1, -1
	if len(t.vocab) > 1 {
		t.bos = 1
	}
	if len(t.vocab) > 2 {
		t.eos = 2
	}
	return t, nil
}

// BOS returns 1, llama2.c's beginning-of-sequence id (-1 for a vocabulary
// too small to hold it).
func (t *Llama2C) BOS() int { return t.bos }

// EOS returns 2, llama2.c's end-of-sequence id (-1 for a vocabulary too
// small to hold it).
func (t *Llama2C) EOS() int { return t.eos }

// VocabSize returns the number of tokens read.
func (t *Llama2C) VocabSize() int { return len(t.vocab) }

// MaxTokenLength returns the max_token_length header of the file.
func (t *Llama2C) MaxTokenLength() int { return t.maxTokenLength }

// byteToken returns llama2.c's byte-fallback id of b (b+3), or the unknown
// id 0 when the vocabulary is too small.
func (t *Llama2C) byteToken(b byte) int32 {
	if id := int(b) + 3; id < len(t.vocab) {
		return int32(id)
	}
	return 0
}

// l2cEncoder holds the state of one Encode call.
type l2cEncoder struct {
	t   *Llama2C
	buf []byte
}

// pairOf merges two tokens when the concatenation of their strings is in the
// vocabulary with a score above -1e10 (llama2.c's starting best score).
func (e *l2cEncoder) pairOf(l, r *symbol) (int32, float32, bool) {
	e.buf = append(append(e.buf[:0], e.t.vocab[l.id]...), e.t.vocab[r.id]...)
	id, ok := e.t.ids[string(e.buf)]
	if !ok {
		return 0, 0, false
	}
	score := e.t.scores[id]
	if !(score > -1e10) {
		return 0, 0, false
	}
	return id, score, true
}

// Encode returns the ids of text as llama2.c's encode(text, bos=0, eos=0)
// does. Unlike the C code, a NUL byte does not end the text.
func (t *Llama2C) Encode(text string) []int {
	if text == "" {
		return []int{}
	}
	e := &l2cEncoder{t: t}
	var m merger
	pos := int32(0)
	add := func(id int32) {
		m.add(pos, pos+1, id)
		pos++
	}
	if id, ok := t.ids[" "]; ok {
		add(id)
	} else {
		add(t.byteToken(' '))
	}
	var cp []byte
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c&0xC0 != 0x80 {
			cp = cp[:0]
		}
		cp = append(cp, c)
		if i+1 < len(text) && text[i+1]&0xC0 == 0x80 && len(cp) < 4 {
			continue
		}
		if id, ok := t.ids[string(cp)]; ok {
			add(id)
		} else {
			for _, b := range cp {
				add(t.byteToken(b))
			}
		}
		cp = cp[:0]
	}
	out := make([]int, 0, len(m.syms))
	for i := m.run(e.pairOf); i >= 0; i = m.syms[i].next {
		out = append(out, int(m.syms[i].id))
	}
	return out
}

// Piece returns the text of id after prev as llama2.c's decode does: the
// leading space is dropped after BOS, and a <0xHH> piece gives its raw byte.
// BOS and EOS give their vocabulary strings ("\n<s>\n", "\n</s>\n" in files
// exported by llama2.c).
func (t *Llama2C) Piece(prev, id int) string {
	if id < 0 || id >= len(t.vocab) {
		return ""
	}
	s := t.vocab[id]
	if prev == 1 && strings.HasPrefix(s, " ") {
		s = s[1:]
	}
	if b, ok := parseBytePiece(s); ok {
		return string([]byte{b})
	}
	return s
}

// Decode returns the text of ids: the pieces as Piece gives them, starting as
// if after BOS (so the dummy prefix space goes), with BOS and EOS left out and
// invalid UTF-8 replaced by U+FFFD.
func (t *Llama2C) Decode(ids []int) string {
	var b strings.Builder
	prev := 1
	for _, id := range ids {
		if id < 0 || id >= len(t.vocab) {
			continue
		}
		if id != t.bos && id != t.eos {
			b.WriteString(t.Piece(prev, id))
		}
		prev = id
	}
	return validUTF8(b.String())
}
