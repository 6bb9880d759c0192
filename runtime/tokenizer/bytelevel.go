package tokenizer

import "strings"

// byteRune maps each byte to the printable character GPT-2's byte-level BPE
// uses for it: printable Latin-1 bytes map to themselves, the others to
// U+0100 onwards in byte order.
var byteRune [256]rune

// runeByte is the inverse of byteRune.
var runeByte = make(map[rune]byte, 256)

// byteRuneStr caches string(byteRune[b]).
var byteRuneStr [256]string

func init() {
	next := rune(256)
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			byteRune[b] = rune(b)
		} else {
			byteRune[b] = next
			next++
		}
		runeByte[byteRune[b]] = byte(b)
		byteRuneStr[b] = string(byteRune[b])
	}
}

// byteLevelEncode maps every byte of s to its byte-level character.
func byteLevelEncode(s string) string {
	var b strings.Builder
	b.Grow(len(s) * 2)
	for i := 0; i < len(s); i++ {
		b.WriteString(byteRuneStr[s[i]])
	}
	return b.String()
}

// byteLevelDecode maps the characters of a byte-level token back to bytes.
// A token with a character outside the mapping is returned unchanged, as the
// Hugging Face ByteLevel decoder does.
func byteLevelDecode(tok string) string {
	out := make([]byte, 0, len(tok))
	for _, r := range tok {
		b, ok := runeByte[r]
		if !ok {
			return tok
		}
		out = append(out, b)
	}
	return string(out)
}
