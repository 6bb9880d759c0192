package tokenizer

// Bytes is the tokenizer of kvbench's synthetic models: id 0 is unknown, 1
// BOS, 2 EOS, and byte b is id 3+b, so every text encodes losslessly.
type Bytes struct{}

// BytesVocab is the vocabulary size of Bytes.
const BytesVocab = 259

// Encode returns one id per byte of text.
func (Bytes) Encode(text string) []int {
	ids := make([]int, len(text))
	for i := 0; i < len(text); i++ {
		ids[i] = 3 + int(text[i])
	}
	return ids
}

// Decode returns the bytes of ids, skipping the special tokens.
func (b Bytes) Decode(ids []int) string {
	out := make([]byte, 0, len(ids))
	for _, id := range ids {
		if id >= 3 && id < BytesVocab {
			out = append(out, byte(id-3))
		}
	}
	return string(out)
}

// Piece returns the byte of id, or "" for a special token.
func (Bytes) Piece(prev, id int) string {
	if id >= 3 && id < BytesVocab {
		return string([]byte{byte(id - 3)})
	}
	return ""
}

// BOS returns 1.
func (Bytes) BOS() int { return 1 }

// EOS returns 2.
func (Bytes) EOS() int { return 2 }

// VocabSize returns BytesVocab.
func (Bytes) VocabSize() int { return BytesVocab }
