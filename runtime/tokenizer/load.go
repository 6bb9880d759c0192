package tokenizer

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/kvbench/kvbench/runtime/gguf"
)

// Load reads a tokenizer file, choosing the format by extension: .model is a
// SentencePiece model, .json a Hugging Face tokenizer.json, .bin a llama2.c
// tokenizer, .gguf the tokenizer a GGUF model embeds. Other names are
// recognised by content: the GGUF magic, a JSON object, a protobuf whose
// first field is a SentencePiece piece, else llama2.c.
func Load(path string) (Tokenizer, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".model":
		return LoadSentencePiece(path)
	case ".json":
		return LoadHFJSON(path)
	case ".bin":
		return LoadLlama2C(path, 0)
	case ".gguf":
		return LoadGGUF(path)
	}
	if isGGUF(path) {
		return LoadGGUF(path) // without reading the weights
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	switch sniff(data) {
	case formatHFJSON:
		return LoadHFJSON(path)
	case formatSentencePiece:
		return parseSentencePiece(path, data)
	}
	return parseLlama2C(path, data, 0)
}

// isGGUF reports whether the file at path starts with the GGUF magic.
func isGGUF(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [4]byte
	_, err = io.ReadFull(f, magic[:])
	return err == nil && string(magic[:]) == gguf.Magic
}

type format int

const (
	formatLlama2C format = iota
	formatSentencePiece
	formatHFJSON
)

// sniff guesses the format of a tokenizer file from its first bytes.
func sniff(data []byte) format {
	trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff")
	if len(trimmed) > 0 && trimmed[0] == '{' {
		return formatHFJSON
	}
	// A ModelProto starts with field 1 (pieces), wire type 2: key 0x0a, then
	// a length and a SentencePiece message starting with its field 1, 0x0a.
	if len(data) >= 3 && data[0] == 0x0a {
		r := &pbReader{buf: data[1:]}
		if n, err := r.varint(); err == nil && n > 0 && n <= uint64(len(data)) && r.pos < len(r.buf) && r.buf[r.pos] == 0x0a {
			return formatSentencePiece
		}
	}
	return formatLlama2C
}
