package tokenizer

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// storyText is the golden greedy output of stories260K (FIXTURES.md).
const storyText = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n" +
	"Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. She said, \"I want to play with your ball, but I can't find it.\"\n" +
	"Lily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what to do.\" Lily didn't want to help her mom, so she said, \"I'm sorry, mom. I didn't know what to do.\" Her mom said, \"Don't worry, Lily. We can help you."

func loadTok512(tb testing.TB) *Llama2C {
	tb.Helper()
	tok, err := LoadLlama2C(sharedFile(tb, "models/stories260K/tok512.bin"), 0)
	require.NoError(tb, err)
	return tok
}

func TestLlama2CTok512(t *testing.T) {
	tok := loadTok512(t)
	assert.Equal(t, 512, tok.VocabSize())
	assert.Equal(t, 1, tok.BOS())
	assert.Equal(t, 2, tok.EOS())
	assert.Equal(t, 7, tok.MaxTokenLength())

	ids := tok.Encode(storyText)
	require.Equal(t, naiveLlama2C(tok, storyText), ids)
	assert.Less(t, len(ids), len(storyText)/2, "merges happened")
	assert.Equal(t, storyText, tok.Decode(ids))

	// Streaming after BOS, as llama2.c prints generated tokens.
	var b strings.Builder
	prev := tok.BOS()
	for _, id := range ids {
		b.WriteString(tok.Piece(prev, id))
		prev = id
	}
	assert.Equal(t, " "+storyText, " "+strings.TrimPrefix(b.String(), " "))
	assert.Equal(t, "\n", tok.Piece(5, 3+'\n'), "<0x0A> gives the raw byte")
	assert.Equal(t, "\n<s>\n", tok.Piece(0, 1), "llama2.c prints the vocabulary string")
	assert.Equal(t, "", tok.Piece(0, 512))
	assert.Equal(t, "", tok.Piece(0, -1))

	assert.Equal(t, []int{}, tok.Encode(""))
	assert.Equal(t, "", tok.Decode(nil))

	sized, err := LoadLlama2C(sharedFile(t, "models/stories260K/tok512.bin"), 300)
	require.NoError(t, err)
	assert.Equal(t, 300, sized.VocabSize())
}

func TestLlama2CMatchesNaive(t *testing.T) {
	tok := loadTok512(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 200; i++ {
		text := randomText(rng, rng.IntN(200))
		ids := tok.Encode(text)
		require.Equal(t, naiveLlama2C(tok, text), ids, "text %q", text)
		if !strings.Contains(text, "\x00") {
			require.Equal(t, validUTF8(text), tok.Decode(ids), "text %q", text)
		}
	}
}

func TestLlama2CTiny(t *testing.T) {
	pieces := []string{"<unk>", "\n<s>\n", "\n</s>\n"}
	scores := []float32{0, 0, 0}
	for b := 0; b < 256; b++ {
		pieces = append(pieces, bytePieceName(byte(b)))
		scores = append(scores, 0)
	}
	// 259 " ", 260 "a", 261 "b", 262 " a", 263 "ab", 264 " ab", 265 "ba"
	pieces = append(pieces, " ", "a", "b", " a", "ab", " ab", "ba")
	scores = append(scores, -100, -100, -100, -1, -2, -3, -1)
	tok, err := parseLlama2C("tiny.bin", llama2cFile(3, pieces, scores), 0)
	require.NoError(t, err)
	cases := []struct {
		text string
		ids  []int
	}{
		{"a", []int{262}},                     // " " "a" → " a"
		{"ab", []int{264}},                    // " a" (-1) beats "ab" (-2), then " a"+"b" = " ab"
		{"abb", []int{264, 261}},              // nothing merges with the last "b"
		{"bab", []int{259, 265, 261}},         // "ba" (-1) wins over "ab" (-2), leftmost
		{"c", []int{259, 3 + 'c'}},            // byte fallback
		{"é", []int{259, 3 + 0xC3, 3 + 0xA9}}, // multi-byte fallback
	}
	for _, c := range cases {
		assert.Equal(t, c.ids, tok.Encode(c.text), "text %q", c.text)
		assert.Equal(t, naiveLlama2C(tok, c.text), tok.Encode(c.text), "naive %q", c.text)
	}
	assert.Equal(t, "ab", tok.Decode([]int{262, 261}))
	assert.Equal(t, "ab", tok.Decode([]int{1, 264, 2}), "BOS and EOS are left out")
}
