package tokenizer

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvbench/kvbench/runtime/gguf"
)

// ggufBytes writes a GGUF file holding only metadata.
func ggufBytes(tb testing.TB, kv map[string]any) []byte {
	tb.Helper()
	w := &gguf.Writer{}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	for _, k := range keys {
		require.NoError(tb, w.Set(k, kv[k]))
	}
	var buf bytes.Buffer
	_, err := w.WriteTo(&buf)
	require.NoError(tb, err)
	return buf.Bytes()
}

// spGGUF is the metadata a GGUF converter writes for a SentencePiece model.
func spGGUF(sp *SentencePiece) map[string]any {
	s := sp.Spec()
	return map[string]any{
		"tokenizer.ggml.model":                    "llama",
		"tokenizer.ggml.pre":                      "default",
		"tokenizer.ggml.tokens":                   s.Pieces,
		"tokenizer.ggml.scores":                   s.Scores,
		"tokenizer.ggml.token_type":               s.Types,
		"tokenizer.ggml.bos_token_id":             uint32(s.BOS),
		"tokenizer.ggml.eos_token_id":             uint32(s.EOS),
		"tokenizer.ggml.add_space_prefix":         s.AddDummyPrefix,
		"tokenizer.ggml.remove_extra_whitespaces": s.RemoveExtraWhitespaces,
	}
}

// sameEncoding checks that two tokenizers give the same ids and text.
func sameEncoding(t *testing.T, want, got Tokenizer, texts []string) {
	t.Helper()
	assert.Equal(t, want.VocabSize(), got.VocabSize())
	assert.Equal(t, want.BOS(), got.BOS())
	assert.Equal(t, want.EOS(), got.EOS())
	for _, text := range texts {
		ids := want.Encode(text)
		if !assert.Equal(t, ids, got.Encode(text), "text %q", text) {
			continue
		}
		assert.Equal(t, want.Decode(ids), got.Decode(ids), "decode %q", text)
		for i, id := range ids {
			prev := want.BOS()
			if i > 0 {
				prev = ids[i-1]
			}
			assert.Equal(t, want.Piece(prev, id), got.Piece(prev, id), "piece %d of %q", i, text)
		}
	}
}

func tinyTexts() []string {
	rng := rand.New(rand.NewPCG(3, 9))
	texts := []string{"", "ab", " ab c", "abc abc", "a<sep>b", "x\ny", "  two  spaces ", "日本"}
	for range 50 {
		texts = append(texts, randomText(rng, 40))
	}
	return texts
}

func TestNewSentencePieceSpecRoundTrip(t *testing.T) {
	for _, removeExtra := range []bool{false, true} {
		sp, err := parseSentencePiece("tiny.model", tinyModel(true, removeExtra))
		require.NoError(t, err)
		again, err := NewSentencePiece("tiny", sp.Spec())
		require.NoError(t, err)
		sameEncoding(t, sp, again, tinyTexts())
	}
}

func TestGGUFSentencePieceTiny(t *testing.T) {
	sp, err := parseSentencePiece("tiny.model", tinyModel(true, false))
	require.NoError(t, err)
	data := ggufBytes(t, spGGUF(sp))
	for _, name := range []string{"tok.gguf", "no-extension"} {
		tok, err := Load(writeTemp(t, name, data)) // by extension, then by magic
		require.NoError(t, err, name)
		_, isSP := tok.(*SentencePiece)
		require.True(t, isSP, "%s: %T", name, tok)
		sameEncoding(t, sp, tok, tinyTexts())
	}
}

// TestGGUFSentencePieceLlama2 carries the Llama-2 tokenizer into a GGUF file
// as llama.cpp's converter does and checks the golden ids and a book
// excerpt against the .model file.
func TestGGUFSentencePieceLlama2(t *testing.T) {
	sp := loadLlama2(t)
	tok, err := LoadGGUF(writeTemp(t, "llama2.gguf", ggufBytes(t, spGGUF(sp))))
	require.NoError(t, err)
	data, err := os.ReadFile(sharedFile(t, "tokenizers/llama2/golden_ids.json"))
	require.NoError(t, err)
	var g struct {
		Cases []goldenCase `json:"cases"`
	}
	require.NoError(t, json.Unmarshal(data, &g))
	texts := []string{}
	for _, c := range g.Cases {
		texts = append(texts, c.Text)
		assert.Equal(t, c.IDs, tok.Encode(c.Text), "golden %q", c.Text)
	}
	rng := rand.New(rand.NewPCG(5, 5))
	for range 20 {
		texts = append(texts, randomText(rng, 200))
	}
	sameEncoding(t, sp, tok, texts)
}

// byteLevelGGUF turns the test tokenizer.json of hfjson_test.go into the
// metadata llama.cpp's converter writes: a dense token list (the ids the
// JSON leaves unused become [PADn] tokens of type unused), token types
// (control for special added tokens, user-defined for the others) and
// merges as "a b" strings.
func byteLevelGGUF(t *testing.T, llama3 bool) map[string]any {
	var doc struct {
		AddedTokens []addedToken `json:"added_tokens"`
		Model       struct {
			Vocab map[string]int `json:"vocab"`
		} `json:"model"`
	}
	require.NoError(t, json.Unmarshal(byteLevelJSON(t, llama3), &doc))
	n := 0
	for _, id := range doc.Model.Vocab {
		n = max(n, id+1)
	}
	for _, a := range doc.AddedTokens {
		n = max(n, a.ID+1)
	}
	tokens, types := make([]string, n), make([]int32, n)
	for i := range tokens {
		tokens[i], types[i] = "[PAD"+string(rune('0'+i%10))+strings.Repeat("x", i/10)+"]", pieceUnused
	}
	for tok, id := range doc.Model.Vocab {
		tokens[id], types[id] = tok, pieceNormal
	}
	for _, a := range doc.AddedTokens {
		tokens[a.ID], types[a.ID] = a.Content, pieceUserDefined
		if a.Special {
			types[a.ID] = pieceControl
		}
	}
	merges := make([]string, len(byteLevelMerges))
	for i, m := range byteLevelMerges {
		merges[i] = m[0] + " " + m[1]
	}
	pre := "gpt-2"
	if llama3 {
		pre = "llama-bpe"
	}
	return map[string]any{
		"tokenizer.ggml.model":        "gpt2",
		"tokenizer.ggml.pre":          pre,
		"tokenizer.ggml.tokens":       tokens,
		"tokenizer.ggml.token_type":   types,
		"tokenizer.ggml.merges":       merges,
		"tokenizer.ggml.eos_token_id": uint32(300),
	}
}

func TestGGUFByteLevel(t *testing.T) {
	texts := []string{"", "the", " the", "The", "cat's", "cat'S", " café", "1212", "12345", "a  b", "日",
		"x\ny", "x\n\ny", "<|im_start|>user\nhi<|im_end|>", "a<|endoftext|><|endoftext|>", "<|im_start",
		"run<tool>", "the cat's café 1234567 \n\n  end  ", "[PAD1x]"}
	rng := rand.New(rand.NewPCG(8, 8))
	for range 50 {
		texts = append(texts, randomText(rng, 60))
	}
	for _, llama3 := range []bool{false, true} {
		want, err := parseHFJSON("tokenizer.json", byteLevelJSON(t, llama3), nil)
		require.NoError(t, err)
		tok, err := LoadGGUF(writeTemp(t, "bpe.gguf", ggufBytes(t, byteLevelGGUF(t, llama3))))
		require.NoError(t, err)
		sameEncoding(t, want, tok, texts)
		assert.Equal(t, "", tok.Decode([]int{280}), "an unused id decodes to nothing")
	}
}

func TestGGUFQwen2Digits(t *testing.T) {
	kv := byteLevelGGUF(t, false)
	kv["tokenizer.ggml.pre"] = "qwen2"
	tok, err := LoadGGUF(writeTemp(t, "qwen.gguf", ggufBytes(t, kv)))
	require.NoError(t, err)
	// Qwen2 splits numbers into single digits, so "12" never merges.
	assert.Equal(t, []int{'1', '2', '1', '2'}, tok.Encode("1212"))
	kv["tokenizer.ggml.pre"] = "llama-bpe"
	tok, err = LoadGGUF(writeTemp(t, "llama3.gguf", ggufBytes(t, kv)))
	require.NoError(t, err)
	assert.Equal(t, []int{260, '1', '2'}, tok.Encode("1212"))
}

func TestGGUFTokenizerErrors(t *testing.T) {
	sp, err := parseSentencePiece("tiny.model", tinyModel(true, false))
	require.NoError(t, err)
	cases := []struct {
		name string
		edit func(kv map[string]any)
		want string
	}{
		{"no model", func(kv map[string]any) { delete(kv, "tokenizer.ggml.model") }, "no tokenizer.ggml.model key"},
		{"model", func(kv map[string]any) { kv["tokenizer.ggml.model"] = "bert" }, `tokenizer.ggml.model "bert" not supported`},
		{"no tokens", func(kv map[string]any) { delete(kv, "tokenizer.ggml.tokens") }, "tokenizer.ggml.tokens missing"},
		{"tokens type", func(kv map[string]any) { kv["tokenizer.ggml.tokens"] = []int32{1} }, `key "tokenizer.ggml.tokens": want an array of strings, got array of int32`},
		{"scores", func(kv map[string]any) { kv["tokenizer.ggml.scores"] = []float32{1} }, "tokenizer.ggml.scores has 1 entries"},
		{"types", func(kv map[string]any) { kv["tokenizer.ggml.token_type"] = []int32{1} }, "tokenizer.ggml.token_type has 1 entries"},
		{"bos", func(kv map[string]any) { kv["tokenizer.ggml.bos_token_id"] = uint32(5000) }, "tokenizer.ggml.bos_token_id 5000 is outside the 269 tokens"},
		{"eos type", func(kv map[string]any) { kv["tokenizer.ggml.eos_token_id"] = "2" }, `key "tokenizer.ggml.eos_token_id": want an unsigned integer`},
		{"charsmap", func(kv map[string]any) { kv["tokenizer.ggml.precompiled_charsmap"] = []uint8{1, 2} }, "only the identity normalizer"},
		{"prefix type", func(kv map[string]any) { kv["tokenizer.ggml.add_space_prefix"] = uint8(1) }, `key "tokenizer.ggml.add_space_prefix": want a bool`},
		{"dup piece", func(kv map[string]any) {
			p := append([]string(nil), kv["tokenizer.ggml.tokens"].([]string)...)
			p[262] = "a"
			kv["tokenizer.ggml.tokens"] = p
		}, `piece 262 "a" is already defined`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			kv := spGGUF(sp)
			c.edit(kv)
			_, err := LoadGGUF(writeTemp(t, "bad.gguf", ggufBytes(t, kv)))
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
			assert.Contains(t, err.Error(), "bad.gguf")
		})
	}
	bpeCases := []struct {
		name string
		edit func(kv map[string]any)
		want string
	}{
		{"pre", func(kv map[string]any) { kv["tokenizer.ggml.pre"] = "default" }, `tokenizer.ggml.pre "default" not supported`},
		{"no pre", func(kv map[string]any) { delete(kv, "tokenizer.ggml.pre") }, `tokenizer.ggml.pre "" not supported`},
		{"no merges", func(kv map[string]any) { delete(kv, "tokenizer.ggml.merges") }, "tokenizer.ggml.merges missing"},
		{"merge form", func(kv map[string]any) { kv["tokenizer.ggml.merges"] = []string{"Ġt"} }, `merge 0 "Ġt" is not two tokens`},
		{"merge token", func(kv map[string]any) { kv["tokenizer.ggml.merges"] = []string{"q z"} }, `token "qz" is not in the vocabulary`},
	}
	for _, c := range bpeCases {
		t.Run(c.name, func(t *testing.T) {
			kv := byteLevelGGUF(t, false)
			c.edit(kv)
			_, err := LoadGGUF(writeTemp(t, "bad.gguf", ggufBytes(t, kv)))
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
		})
	}
	_, err = LoadGGUF(writeTemp(t, "junk.gguf", []byte("GGUF\x03\x00\x00\x00")))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "junk.gguf")
}
