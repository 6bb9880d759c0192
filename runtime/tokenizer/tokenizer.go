package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Tokenizer encodes text to token ids and back.
type Tokenizer interface {
	// Encode returns the ids of text, without BOS or EOS.
	Encode(text string) []int
	// Decode returns the text of ids. Control tokens (BOS, EOS, special
	// tokens) are left out, the leading space the encoder added is removed,
	// and the result is valid UTF-8 (invalid bytes become U+FFFD).
	Decode(ids []int) string
	// Piece returns the text of one token for streaming output given the
	// previous token id: a leading space is stripped when prev is BOS, byte
	// tokens such as <0x0A> give that raw byte, so the result may be partial
	// UTF-8. Ids out of range give "".
	Piece(prev, id int) string
	// BOS returns the beginning-of-sequence id, or -1 if there is none.
	BOS() int
	// EOS returns the end-of-sequence id, or -1 if there is none.
	EOS() int
	// VocabSize returns the number of token ids.
	VocabSize() int
}

// fileError returns an error that names the tokenizer file.
func fileError(name, format string, args ...any) error {
	return fmt.Errorf("tokenizer %s: %s", name, fmt.Sprintf(format, args...))
}

// spaceSymbol is SentencePiece's visible space, U+2581.
const spaceSymbol = "\u2581"

// unkSurface is what SentencePiece prints for an unknown token.
const unkSurface = " \u2047 "

// parseBytePiece reports whether s has the form <0xHH> and returns the byte.
func parseBytePiece(s string) (byte, bool) {
	if len(s) != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>' {
		return 0, false
	}
	hi, ok1 := hexDigit(s[3])
	lo, ok2 := hexDigit(s[4])
	if !ok1 || !ok2 {
		return 0, false
	}
	return hi<<4 | lo, true
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// bytePieceName returns the <0xHH> piece of b.
func bytePieceName(b byte) string {
	const hex = "0123456789ABCDEF"
	return string([]byte{'<', '0', 'x', hex[b>>4], hex[b&15], '>'})
}

// validUTF8 returns s with every byte that is not part of a valid UTF-8
// sequence replaced by U+FFFD, one replacement per byte.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// The tokenizers of this package.
var (
	_ Tokenizer = (*SentencePiece)(nil)
	_ Tokenizer = (*Llama2C)(nil)
	_ Tokenizer = (*BPE)(nil)
)
