package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/kvbench/kvbench/runtime/gguf"
)

// SentencePieceSpec is everything a SentencePiece BPE model is made of: the
// pieces with their scores and types, the special ids, and the normalizer
// settings. It is what a .model file stores and what GGUF files carry for
// their "llama" tokenizers.
type SentencePieceSpec struct {
	Pieces []string
	Scores []float32 // nil: all zero
	// Types are the piece types of sentencepiece_model.proto (and of GGUF's
	// tokenizer.ggml.token_type): 1 normal, 2 unknown, 3 control, 4
	// user-defined, 5 unused, 6 byte; other values read as normal. nil: all
	// normal.
	Types                   []int32
	BOS, EOS                int // -1 when none
	ByteFallback            bool
	AddDummyPrefix          bool
	RemoveExtraWhitespaces  bool
	EscapeWhitespaces       bool
	TreatWhitespaceAsSuffix bool
}

// NewSentencePiece builds a SentencePiece tokenizer from its parts; name is
// used in errors. It encodes as LoadSentencePiece's tokenizer does for a
// .model file with the same pieces and settings.
func NewSentencePiece(name string, s SentencePieceSpec) (*SentencePiece, error) {
	n := len(s.Pieces)
	if s.Scores != nil && len(s.Scores) != n {
		return nil, fileError(name, "%d scores for %d pieces", len(s.Scores), n)
	}
	if s.Types != nil && len(s.Types) != n {
		return nil, fileError(name, "%d piece types for %d pieces", len(s.Types), n)
	}
	for _, id := range []struct {
		what string
		v    int
	}{{"BOS", s.BOS}, {"EOS", s.EOS}} {
		if id.v < -1 || id.v >= n {
			return nil, fileError(name, "%s id %d is outside the %d pieces", id.what, id.v, n)
		}
	}
	sp := &SentencePiece{unk: -1, bos: -1, eos: -1,
		pieces: append([]string(nil), s.Pieces...),
		scores: make([]float32, n),
		types:  make([]uint8, n),
	}
	copy(sp.scores, s.Scores)
	for i := range sp.types {
		sp.types[i] = pieceNormal
		if s.Types != nil && s.Types[i] >= pieceNormal && s.Types[i] <= pieceByte {
			sp.types[i] = uint8(s.Types[i])
		}
	}
	tr := spTrainer{modelType: 2, suffixSpace: s.TreatWhitespaceAsSuffix, byteFallback: s.ByteFallback,
		unk: -1, bos: int32(s.BOS), eos: int32(s.EOS), pad: -1}
	nm := spNormalizer{dummyPrefix: s.AddDummyPrefix, removeExtra: s.RemoveExtraWhitespaces, escWS: s.EscapeWhitespaces}
	if err := sp.setup(tr, nm); err != nil {
		return nil, fileError(name, "%v", err)
	}
	return sp, nil
}

// Spec returns the parts of the model, for writing it elsewhere (a GGUF
// file); NewSentencePiece(name, sp.Spec()) encodes as sp does.
func (sp *SentencePiece) Spec() SentencePieceSpec {
	s := SentencePieceSpec{
		Pieces:                  append([]string(nil), sp.pieces...),
		Scores:                  append([]float32(nil), sp.scores...),
		Types:                   make([]int32, len(sp.types)),
		BOS:                     sp.bos,
		EOS:                     sp.eos,
		ByteFallback:            sp.byteFallback,
		AddDummyPrefix:          sp.dummyPrefix,
		RemoveExtraWhitespaces:  sp.removeExtra,
		EscapeWhitespaces:       sp.escapeSpaces,
		TreatWhitespaceAsSuffix: sp.suffixSpace,
	}
	for i, t := range sp.types {
		s.Types[i] = int32(t)
	}
	return s
}

// ByteLevelBPESpec is a byte-level BPE vocabulary as GGUF files carry their
// "gpt2" tokenizers: token strings in the GPT-2 byte alphabet (Ġ for a
// space), token types, merges by rank, and the name of the pre-tokenizer.
type ByteLevelBPESpec struct {
	Tokens []string
	// Types as in SentencePieceSpec; control tokens (3) are special added
	// tokens and user-defined ones (4) plain added tokens, both matched
	// verbatim in the text before pre-tokenization and stored as their text;
	// unused ones (5) are left out of the vocabulary. nil: all normal.
	Types []int32
	// Merges are "left right" pairs, highest priority first.
	Merges []string
	// Pre names the pre-tokenizer as llama.cpp does (tokenizer.ggml.pre):
	// gpt-2 (GPT-2's ByteLevel regex), llama-bpe (Llama-3's Split regex,
	// whole words looked up before merging), qwen2 (Qwen2's regex), and
	// their aliases.
	Pre      string
	BOS, EOS int // -1 when none
}

// Llama-3's and Qwen2's pre-tokenizer patterns, as their tokenizer.json
// files give them: they differ only in how many digits a number piece takes.
const (
	llama3Regex = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2Regex  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// bpePre is the tokenizer.json pipeline of a llama.cpp pre-tokenizer name.
type bpePre struct {
	regex        string // Split pattern before a regex-free ByteLevel; "" for GPT-2's ByteLevel
	ignoreMerges bool
}

// bpePres maps tokenizer.ggml.pre values to their pipelines.
var bpePres = map[string]bpePre{
	"gpt-2":            {},
	"gpt2":             {},
	"phi-2":            {},
	"llama-bpe":        {regex: llama3Regex, ignoreMerges: true},
	"llama3":           {regex: llama3Regex, ignoreMerges: true},
	"llama-v3":         {regex: llama3Regex, ignoreMerges: true},
	"qwen2":            {regex: qwen2Regex},
	"deepseek-r1-qwen": {regex: qwen2Regex},
}

// NewByteLevelBPE builds a byte-level BPE tokenizer from its parts; name is
// used in errors. It runs the same pipeline as a Hugging Face tokenizer.json
// with the equivalent pre-tokenizer (LoadHFJSON).
func NewByteLevelBPE(name string, s ByteLevelBPESpec) (*BPE, error) {
	n := len(s.Tokens)
	if n == 0 {
		return nil, fileError(name, "empty vocabulary")
	}
	if s.Types != nil && len(s.Types) != n {
		return nil, fileError(name, "%d token types for %d tokens", len(s.Types), n)
	}
	pre, ok := bpePres[s.Pre]
	if !ok {
		return nil, fileError(name, "pre-tokenizer %q not supported (want gpt-2, llama-bpe or qwen2, or an alias: llama3, llama-v3, phi-2, deepseek-r1-qwen)", s.Pre)
	}
	for _, id := range []struct {
		what string
		v    int
	}{{"BOS", s.BOS}, {"EOS", s.EOS}} {
		if id.v < -1 || id.v >= n {
			return nil, fileError(name, "%s id %d is outside the %d tokens", id.what, id.v, n)
		}
	}
	vocab := make(map[string]int, n)
	var added []addedToken
	for i, tok := range s.Tokens {
		typ := int32(pieceNormal)
		if s.Types != nil {
			typ = s.Types[i]
		}
		switch typ {
		case pieceControl, pieceUserDefined:
			added = append(added, addedToken{ID: i, Content: tok, Special: typ == pieceControl})
			continue
		case pieceUnused:
			continue
		}
		if j, dup := vocab[tok]; dup {
			return nil, fileError(name, "tokens %d and %d are both %q", j, i, tok)
		}
		vocab[tok] = i
	}
	merges := make([][2]string, len(s.Merges))
	for i, m := range s.Merges {
		// The separator is the first space after the first byte, as
		// llama.cpp reads merges.
		k := -1
		if len(m) > 1 {
			k = strings.IndexByte(m[1:], ' ')
		}
		if k < 0 {
			return nil, fileError(name, "merge %d %q is not two tokens separated by a space", i, m)
		}
		merges[i] = [2]string{m[:k+1], m[k+2:]}
	}
	var preNode any = map[string]any{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}
	if pre.regex != "" {
		preNode = map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": pre.regex}, "behavior": "Isolated", "invert": false},
			map[string]any{"type": "ByteLevel", "add_prefix_space": false, "use_regex": false},
		}}
	}
	doc := map[string]any{
		"added_tokens":  added,
		"pre_tokenizer": preNode,
		"decoder":       map[string]any{"type": "ByteLevel"},
		"model": map[string]any{"type": "BPE", "vocab": vocab, "merges": merges,
			"ignore_merges": pre.ignoreMerges, "byte_fallback": false},
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return nil, fileError(name, "%v", err)
	}
	b, err := parseHFJSON(name, data, nil)
	if err != nil {
		return nil, err
	}
	// Ids without a vocabulary entry (unused) stay valid ids that decode to
	// nothing.
	for len(b.tokens) < n {
		b.tokens = append(b.tokens, "")
		b.special = append(b.special, false)
	}
	b.bos, b.eos = s.BOS, s.EOS
	return b, nil
}

// LoadGGUF reads the tokenizer a GGUF model file embeds: tokenizer.ggml.model
// "llama" (SentencePiece BPE: tokens, scores, token types) or "gpt2"
// (byte-level BPE: tokens, token types, merges, tokenizer.ggml.pre).
func LoadGGUF(path string) (Tokenizer, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	defer f.Close()
	return FromGGUF(f)
}

// FromGGUF builds the tokenizer a parsed GGUF file embeds (see LoadGGUF).
// Errors name the file and the key at fault.
func FromGGUF(f *gguf.File) (Tokenizer, error) {
	name := f.Name
	model, ok, err := f.GetString("tokenizer.ggml.model")
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if !ok {
		return nil, fileError(name, "no tokenizer.ggml.model key: the file embeds no tokenizer (name one with --tokenizer)")
	}
	tokens, ok, err := f.GetStrings("tokenizer.ggml.tokens")
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if !ok {
		return nil, fileError(name, "tokenizer.ggml.tokens missing")
	}
	types, _, err := f.GetInt32s("tokenizer.ggml.token_type")
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if types != nil && len(types) != len(tokens) {
		return nil, fileError(name, "tokenizer.ggml.token_type has %d entries, tokenizer.ggml.tokens %d", len(types), len(tokens))
	}
	// Special ids: llama.cpp's defaults are 1 and 2 for SentencePiece
	// vocabularies; byte-level ones have none unless the file names them.
	bosDef, eosDef := -1, -1
	if model == "llama" {
		bosDef, eosDef = 1, 2
	}
	bos, err := ggufTokenID(f, "tokenizer.ggml.bos_token_id", bosDef, len(tokens))
	if err != nil {
		return nil, err
	}
	eos, err := ggufTokenID(f, "tokenizer.ggml.eos_token_id", eosDef, len(tokens))
	if err != nil {
		return nil, err
	}
	switch model {
	case "llama":
		scores, _, err := f.GetFloat32s("tokenizer.ggml.scores")
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
		if scores != nil && len(scores) != len(tokens) {
			return nil, fileError(name, "tokenizer.ggml.scores has %d entries, tokenizer.ggml.tokens %d", len(scores), len(tokens))
		}
		if kv := f.KV("tokenizer.ggml.precompiled_charsmap"); kv != nil {
			if a, isArr := kv.Value.(gguf.Array); !isArr || a.Len() > 0 {
				return nil, fileError(name, "tokenizer.ggml.precompiled_charsmap: only the identity normalizer is supported")
			}
		}
		prefix, ok, err := f.GetBool("tokenizer.ggml.add_space_prefix")
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
		if !ok {
			prefix = true // llama.cpp's default for SentencePiece vocabularies
		}
		removeExtra, _, err := f.GetBool("tokenizer.ggml.remove_extra_whitespaces")
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
		byteFallback := false
		for _, t := range types {
			byteFallback = byteFallback || t == pieceByte
		}
		return NewSentencePiece(name, SentencePieceSpec{Pieces: tokens, Scores: scores, Types: types,
			BOS: bos, EOS: eos, ByteFallback: byteFallback, AddDummyPrefix: prefix,
			RemoveExtraWhitespaces: removeExtra, EscapeWhitespaces: true})
	case "gpt2":
		merges, ok, err := f.GetStrings("tokenizer.ggml.merges")
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
		if !ok {
			return nil, fileError(name, "tokenizer.ggml.merges missing (a gpt2 tokenizer needs its merges)")
		}
		pre, _, err := f.GetString("tokenizer.ggml.pre")
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
		if _, known := bpePres[pre]; !known {
			return nil, fileError(name, "tokenizer.ggml.pre %q not supported (want gpt-2, llama-bpe or qwen2, or an alias: llama3, llama-v3, phi-2, deepseek-r1-qwen)", pre)
		}
		return NewByteLevelBPE(name, ByteLevelBPESpec{Tokens: tokens, Types: types, Merges: merges, Pre: pre, BOS: bos, EOS: eos})
	}
	return nil, fileError(name, "tokenizer.ggml.model %q not supported (want llama or gpt2)", model)
}

// ggufTokenID reads a special-token id key: def when absent, an error when
// outside the vocabulary of n tokens.
func ggufTokenID(f *gguf.File, key string, def, n int) (int, error) {
	v, ok, err := f.GetUint(key)
	if err != nil {
		return 0, fmt.Errorf("tokenizer: %w", err)
	}
	if !ok {
		if def >= n {
			return -1, nil
		}
		return def, nil
	}
	if v >= uint64(n) {
		return 0, fileError(f.Name, "%s %d is outside the %d tokens", key, v, n)
	}
	return int(v), nil
}
