package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

// byteLevelMerges are the merges of the test byte-level vocabulary, in rank
// order; their results get ids 256, 257, ... (bytes have ids 0..255).
var byteLevelMerges = [][2]string{
	{"Ġ", "t"},    // 256 Ġt
	{"h", "e"},    // 257 he
	{"Ġt", "he"},  // 258 Ġthe
	{"'", "s"},    // 259 's
	{"1", "2"},    // 260 12
	{"Ã", "©"},    // 261 Ã© (é)
	{"c", "a"},    // 262 ca
	{"ca", "f"},   // 263 caf
	{"caf", "Ã©"}, // 264 café
	{"Ġ", "caf"},  // 265 Ġcaf: ranks below caf+é
}

// byteLevelJSON builds a byte-level tokenizer.json: GPT-2 style (ByteLevel
// with its regex) or Llama-3 style (Split with the Llama-3 regex, then
// ByteLevel without regex, merges as pairs, ignore_merges).
func byteLevelJSON(tb testing.TB, llama3 bool) []byte {
	tb.Helper()
	vocab := map[string]int{}
	for b := 0; b < 256; b++ {
		vocab[byteRuneStr[b]] = b
	}
	var strs []string
	var pairs [][2]string
	for i, m := range byteLevelMerges {
		vocab[m[0]+m[1]] = 256 + i
		strs = append(strs, m[0]+" "+m[1])
		pairs = append(pairs, m)
	}
	model := map[string]any{"type": "BPE", "vocab": vocab, "merges": strs, "unk_token": nil,
		"fuse_unk": false, "byte_fallback": false, "dropout": nil}
	pre := map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
	if llama3 {
		model["merges"] = pairs
		model["ignore_merges"] = true
		pre = map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": llama3Pattern}, "behavior": "Isolated", "invert": false},
			map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
		}}
	}
	added := []map[string]any{
		{"id": 300, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
		{"id": 301, "content": "<|im_start|>", "special": true},
		{"id": 302, "content": "<|im_end|>", "special": true},
		{"id": 303, "content": "<tool>", "special": false},
	}
	doc := map[string]any{"version": "1.0", "added_tokens": added, "normalizer": nil, "pre_tokenizer": pre,
		"post_processor": map[string]any{"type": "ByteLevel"},
		"decoder":        map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		"model":          model}
	data, err := json.Marshal(doc)
	require.NoError(tb, err)
	return data
}

func TestHFByteLevelGPT2(t *testing.T) {
	tok, err := LoadHFJSON(writeTemp(t, "tokenizer.json", byteLevelJSON(t, false)))
	require.NoError(t, err)
	assert.Equal(t, 304, tok.VocabSize())
	assert.Equal(t, -1, tok.BOS())
	assert.Equal(t, 300, tok.EOS())
	cases := []struct {
		text string
		ids  []int
	}{
		{"", []int{}},
		{"the", []int{'t', 257}},
		{" the", []int{258}},            // Ġ t h e → Ġt he → Ġthe
		{"The", []int{'T', 257}},        // no merge for T
		{"cat's", []int{262, 't', 259}}, // "cat" "'s": the contraction is its own piece
		{"cat'S", []int{262, 't', '\'', 'S'}},
		{" café", []int{' ', 264}},          // caf+é (rank 8) beats Ġ+caf (rank 9)
		{"1212", []int{260, 260}},           // GPT-2 keeps digit runs whole
		{"a  b", []int{'a', ' ', ' ', 'b'}}, // "a" " " " b": \s+(?!\S) leaves one space
		{"日", []int{0xE6, 0x97, 0xA5}},      // bytes outside ASCII map to their own ids
		{"x\ny", []int{'x', '\n', 'y'}},     // newline is Ċ, id 10
		{"<|im_start|>user\nhi<|im_end|>", []int{301, 'u', 's', 'e', 'r', '\n', 'h', 'i', 302}},
		{"a<|endoftext|><|endoftext|>", []int{'a', 300, 300}},
		{"<|im_start", []int{'<', '|', 'i', 'm', '_', 's', 't', 'a', 'r', 't'}},
		{"run<tool>", []int{'r', 'u', 'n', 303}},
	}
	for _, c := range cases {
		ids := tok.Encode(c.text)
		assert.Equal(t, c.ids, ids, "text %q", c.text)
		want := strings.NewReplacer("<|im_start|>", "", "<|im_end|>", "", "<|endoftext|>", "").Replace(c.text)
		assert.Equal(t, want, tok.Decode(ids), "decode %q", c.text)
	}
	assert.Equal(t, "Ġthe", tok.IDToToken(258))
	assert.Equal(t, " the", tok.Piece(0, 258))
	assert.Equal(t, "", tok.Piece(0, 301), "special tokens stream as nothing")
	assert.Equal(t, "\xe6", tok.Piece(0, 0xE6), "partial UTF-8")
	assert.Equal(t, "<tool>", tok.Piece(0, 303))
	assert.Equal(t, "", tok.Piece(0, 304))
	assert.Equal(t, "\uFFFD", tok.Decode([]int{0xE6}), "a lone lead byte")
}

func TestHFByteLevelLlama3(t *testing.T) {
	tok, err := parseHFJSON("tokenizer.json", byteLevelJSON(t, true), nil)
	require.NoError(t, err)
	cases := []struct {
		text string
		ids  []int
	}{
		{"1212", []int{260, '1', '2'}},        // \p{N}{1,3}: "121" "2"
		{"cat'S", []int{262, 't', '\'', 'S'}}, // "'S" is one piece, with no merge
		{" the", []int{258}},
		{"the cat's", []int{'t', 257, ' ', 262, 't', 259}},
		{"x\n\ny", []int{'x', '\n', '\n', 'y'}},
	}
	for _, c := range cases {
		ids := tok.Encode(c.text)
		assert.Equal(t, c.ids, ids, "text %q", c.text)
		assert.Equal(t, c.text, tok.Decode(ids), "decode %q", c.text)
	}
}

// spStyleJSON is a SentencePiece-style tokenizer.json (Llama-2 converted):
// ▁ normalizer, byte fallback, and the Replace/ByteFallback/Fuse/Strip decoder.
func spStyleJSON(tb testing.TB, metaspace bool) []byte {
	tb.Helper()
	vocab := map[string]int{"<unk>": 0, "<s>": 1, "</s>": 2}
	for b := 0; b < 256; b++ {
		vocab[bytePieceName(byte(b))] = 3 + b
	}
	for i, p := range []string{"▁", "a", "b", "▁a", "ab", "▁ab"} {
		vocab[p] = 259 + i
	}
	doc := map[string]any{
		"added_tokens": []map[string]any{
			{"id": 0, "content": "<unk>", "special": true},
			{"id": 1, "content": "<s>", "special": true},
			{"id": 2, "content": "</s>", "special": true},
		},
		"normalizer": map[string]any{"type": "Sequence", "normalizers": []any{
			map[string]any{"type": "Prepend", "prepend": "▁"},
			map[string]any{"type": "Replace", "pattern": map[string]any{"String": " "}, "content": "▁"},
		}},
		"pre_tokenizer": nil,
		"decoder": map[string]any{"type": "Sequence", "decoders": []any{
			map[string]any{"type": "Replace", "pattern": map[string]any{"String": "▁"}, "content": " "},
			map[string]any{"type": "ByteFallback"},
			map[string]any{"type": "Fuse"},
			map[string]any{"type": "Strip", "content": " ", "start": 1, "stop": 0},
		}},
		"model": map[string]any{"type": "BPE", "vocab": vocab, "merges": []string{"a b", "▁ a", "▁ ab"},
			"unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true},
	}
	if metaspace {
		doc["normalizer"] = nil
		doc["pre_tokenizer"] = map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}
		doc["decoder"] = map[string]any{"type": "Sequence", "decoders": []any{
			map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
			map[string]any{"type": "ByteFallback"},
			map[string]any{"type": "Fuse"},
		}}
	}
	data, err := json.Marshal(doc)
	require.NoError(tb, err)
	return data
}

func TestHFSentencePieceStyle(t *testing.T) {
	for _, metaspace := range []bool{false, true} {
		tok, err := parseHFJSON("tokenizer.json", spStyleJSON(t, metaspace), nil)
		require.NoError(t, err)
		assert.Equal(t, 1, tok.BOS())
		assert.Equal(t, 2, tok.EOS())
		assert.Equal(t, 265, tok.VocabSize())
		cases := []struct {
			text string
			ids  []int
		}{
			{"ab", []int{264}}, // ▁ a b → ▁ ab → ▁ab
			{"ab ab", []int{264, 264}},
			{"x", []int{259, 3 + 'x'}}, // byte fallback
			{"aé", []int{262, 3 + 0xC3, 3 + 0xA9}},
		}
		for _, c := range cases {
			ids := tok.Encode(c.text)
			assert.Equal(t, c.ids, ids, "metaspace %v text %q", metaspace, c.text)
			assert.Equal(t, c.text, tok.Decode(ids), "metaspace %v decode %q", metaspace, c.text)
		}
		assert.Equal(t, "ab", tok.Piece(1, 264), "leading space stripped after BOS")
		assert.Equal(t, " ab", tok.Piece(264, 264))
		assert.Equal(t, "x", tok.Piece(264, 3+'x'))
		assert.Equal(t, "ab", tok.Decode([]int{1, 264, 2}))
	}
	// The Prepend normalizer applies to every segment between added tokens,
	// as in Hugging Face; Metaspace "first" only to the start of the text.
	tok, err := parseHFJSON("tokenizer.json", spStyleJSON(t, false), nil)
	require.NoError(t, err)
	assert.Equal(t, []int{1, 264}, tok.Encode("<s>ab"))
	tok, err = parseHFJSON("tokenizer.json", spStyleJSON(t, true), nil)
	require.NoError(t, err)
	assert.Equal(t, []int{1, 263}, tok.Encode("<s>ab"))
}

func TestHFConfigSpecialTokens(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokenizer.json")
	require.NoError(t, os.WriteFile(path, byteLevelJSON(t, false), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"),
		[]byte(`{"bos_token": {"content": "<|endoftext|>", "special": true}, "eos_token": "<|im_end|>"}`), 0o644))
	tok, err := LoadHFJSON(path)
	require.NoError(t, err)
	assert.Equal(t, 300, tok.BOS())
	assert.Equal(t, 302, tok.EOS())

	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(`{"bos_token": null}`), 0o644))
	tok, err = LoadHFJSON(path)
	require.NoError(t, err)
	assert.Equal(t, -1, tok.BOS())
	assert.Equal(t, 300, tok.EOS())

	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(`{"eos_token": "<nope>"}`), 0o644))
	_, err = LoadHFJSON(path)
	require.ErrorContains(t, err, "tokenizer_config.json")
	require.ErrorContains(t, err, path)
}

func TestHFUnsupported(t *testing.T) {
	cases := []struct{ name, doc, want string }{
		{"unigram", `{"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}`, `unsupported tokenizer.json: model type "Unigram"`},
		{"wordpiece decoder", `{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "decoder": {"type": "WordPiece"}}`, `unsupported tokenizer.json: decoder: decoder type "WordPiece"`},
		{"bert pre", `{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "BertPreTokenizer"}}`, `pre-tokenizer type "BertPreTokenizer"`},
		{"nfkc", `{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "normalizer": {"type": "NFKC"}}`, `normalizer type "NFKC"`},
		{"bad regex", `{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated"}}`, `regex "("`},
		{"bad merge", `{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}`, `merge 0 ("a" "b"): token "b" is not in the vocabulary`},
		{"merge no space", `{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["ab"]}}`, `merge 0 "ab"`},
		{"negative id", `{"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}}`, `id -1, out of range`},
		{"huge id", `{"model": {"type": "BPE", "vocab": {"a": 99999999}, "merges": []}}`, `out of range`},
		{"no model", `{}`, `no model`},
		{"not json", `{"model": `, `invalid JSON`},
		{"empty vocab", `{"model": {"type": "BPE", "vocab": {}, "merges": []}}`, `empty vocabulary`},
		{"unk missing", `{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "<unk>"}}`, `unk_token "<unk>"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeTemp(t, "bad-tokenizer.json", []byte(c.doc))
			_, err := LoadHFJSON(path)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "bad-tokenizer.json")
			assert.Contains(t, err.Error(), c.want)
		})
	}
}

func TestSplitBehaviors(t *testing.T) {
	s := "a--b-c"
	m := (&matcher{literal: "-"}).find(s)
	cases := map[string][]string{
		"Removed":            {"a", "b", "c"},
		"Isolated":           {"a", "-", "-", "b", "-", "c"},
		"MergedWithPrevious": {"a-", "-", "b-", "c"},
		"MergedWithNext":     {"a", "-", "-b", "-c"},
		"Contiguous":         {"a", "--", "b", "-", "c"},
	}
	for behavior, want := range cases {
		assert.Equal(t, want, splitMatches(s, m, behavior, false), behavior)
	}
	assert.Equal(t, []string{"-", "-", "-"}, splitMatches(s, m, "Removed", true), "inverted")
}

func TestHFPreTokenizerVariants(t *testing.T) {
	base := func(pre string) []byte {
		return []byte(`{"model": {"type": "BPE", "vocab": {"a": 0, "1": 1, "2": 2, "12": 3, "b": 4}, "merges": ["1 2"]}, "pre_tokenizer": ` + pre + `}`)
	}
	cases := []struct {
		pre  string
		text string
		ids  []int
	}{
		{`{"type": "Digits", "individual_digits": true}`, "a12", []int{0, 1, 2}},
		{`{"type": "Digits", "individual_digits": false}`, "a12", []int{0, 3}},
		{`{"type": "WhitespaceSplit"}`, "a b", []int{0, 4}},
	}
	for _, c := range cases {
		tok, err := parseHFJSON("t.json", base(c.pre), nil)
		require.NoError(t, err, c.pre)
		assert.Equal(t, c.ids, tok.Encode(c.text), c.pre)
	}
	tok, err := parseHFJSON("t.json", base(`{"type": "Whitespace"}`), nil)
	require.NoError(t, err)
	assert.Equal(t, []int{0, 4, 3}, tok.Encode("a b12"), `\w+ keeps "b12" whole`)
}

func TestHFConcurrentEncode(t *testing.T) {
	tok, err := parseHFJSON("tokenizer.json", byteLevelJSON(t, false), nil)
	require.NoError(t, err)
	text := strings.Repeat("the cat's café 1212 <|im_end|> ", 50)
	want := tok.Encode(text)
	done := make(chan []int)
	for i := 0; i < 8; i++ {
		go func() { done <- tok.Encode(text) }()
	}
	for i := 0; i < 8; i++ {
		assert.Equal(t, want, <-done)
	}
}
