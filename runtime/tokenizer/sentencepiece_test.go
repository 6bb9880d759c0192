package tokenizer

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type goldenCase struct {
	Text   string   `json:"text"`
	IDs    []int    `json:"ids"`
	Pieces []string `json:"pieces"`
}

func loadLlama2(tb testing.TB) *SentencePiece {
	tb.Helper()
	sp, err := LoadSentencePiece(sharedFile(tb, "tokenizers/llama2/tokenizer.model"))
	require.NoError(tb, err)
	return sp
}

func TestSentencePieceGolden(t *testing.T) {
	sp := loadLlama2(t)
	data, err := os.ReadFile(sharedFile(t, "tokenizers/llama2/golden_ids.json"))
	require.NoError(t, err)
	var g struct {
		Cases []goldenCase `json:"cases"`
	}
	require.NoError(t, json.Unmarshal(data, &g))
	require.NotEmpty(t, g.Cases)
	assert.Equal(t, 32000, sp.VocabSize())
	assert.Equal(t, 1, sp.BOS())
	assert.Equal(t, 2, sp.EOS())
	for _, c := range g.Cases {
		ids := sp.Encode(c.Text)
		if !assert.Equal(t, c.IDs, ids, "text %q", c.Text) {
			continue
		}
		pieces := make([]string, len(ids))
		for i, id := range ids {
			pieces[i] = sp.IDToPiece(id)
		}
		assert.Equal(t, c.Pieces, pieces, "text %q", c.Text)
		assert.Equal(t, c.Text, sp.Decode(ids), "round trip")
	}
}

// randomText returns n characters drawn from a mix that exercises merges,
// spaces, newlines, tabs, non-ASCII and byte fallback.
func randomText(rng *rand.Rand, n int) string {
	alphabet := []string{"a", "e", "t", "h", "n", "s", "o", "r", "i", " ", " ", " ", "  ", "\n", "\t",
		"the", "ing", "and", "Th", "é", "ü", "—", "“", "”", "日", "本", "🙂", "1", "2", "0", ".", ",", "'", "▁", "\x00", "\xff"}
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(alphabet[rng.IntN(len(alphabet))])
	}
	return b.String()
}

func TestSentencePieceMatchesNaive(t *testing.T) {
	sp := loadLlama2(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		text := randomText(rng, rng.IntN(300))
		require.Equal(t, naiveSentencePiece(sp, text), sp.Encode(text), "text %q", text)
	}
}

func TestSentencePieceBookExcerpt(t *testing.T) {
	sp := loadLlama2(t)
	text := bookText(t, 3000)
	ids := sp.Encode(text)
	require.Equal(t, naiveSentencePiece(sp, text), ids)
	require.Equal(t, text, sp.Decode(ids))
}

func TestSentencePiecePieceStreaming(t *testing.T) {
	sp := loadLlama2(t)
	for _, text := range []string{"Hello world", "  two\n\nlines\t🙂 日本", "x"} {
		ids := sp.Encode(text)
		var b strings.Builder
		prev := sp.BOS()
		for _, id := range ids {
			b.WriteString(sp.Piece(prev, id))
			prev = id
		}
		assert.Equal(t, text, b.String())
	}
	assert.Equal(t, "\n", sp.Piece(5, 13), "<0x0A>")
	assert.Equal(t, " Hello", sp.Piece(5, 15043))
	assert.Equal(t, "Hello", sp.Piece(1, 15043))
	assert.Equal(t, "", sp.Piece(0, 1), "control")
	assert.Equal(t, " ⁇ ", sp.Piece(0, 0), "unknown")
	assert.Equal(t, "", sp.Piece(0, -1))
	assert.Equal(t, "", sp.Piece(0, 32000))
	assert.Equal(t, "Hello world", sp.Decode([]int{1, 15043, 3186, 2, -5, 99999}))
}

func TestSentencePieceTinyModel(t *testing.T) {
	sp, err := parseSentencePiece("tiny.model", tinyModel(true, false))
	require.NoError(t, err)
	assert.Equal(t, 269, sp.VocabSize())
	cases := []struct {
		text string
		ids  []int
	}{
		{"", []int{}},
		{"ab", []int{265}},                    // ▁ a b → ▁ ab → ▁ab
		{"abc", []int{259, 263, 262}},         // ▁ abc; abc is UNUSED so it splits back into ab c
		{"a<sep>b", []int{264, 267, 261}},     // user-defined pieces are never merged
		{"x", []int{259, 3 + 'x'}},            // byte fallback
		{"ab  a", []int{265, 259, 264}},       // extra spaces kept
		{"é", []int{259, 3 + 0xC3, 3 + 0xA9}}, // multi-byte fallback
	}
	for _, c := range cases {
		ids := sp.Encode(c.text)
		assert.Equal(t, c.ids, ids, "text %q", c.text)
		assert.Equal(t, c.text, sp.Decode(ids), "text %q", c.text)
		assert.Equal(t, naiveOrUnused(sp, c.text), ids, "naive %q", c.text)
	}

	noFallback, err := parseSentencePiece("tiny.model", tinyModel(false, true))
	require.NoError(t, err)
	assert.Equal(t, []int{259, 0}, noFallback.Encode("x"))
	assert.Equal(t, " ⁇ ", noFallback.Decode([]int{259, 0}))
	assert.Equal(t, []int{264, 259, 261}, noFallback.Encode("  a   b  "), "remove_extra_whitespaces")
	assert.Equal(t, []int{}, noFallback.Encode("    "))
}

// naiveOrUnused returns the naive encoding, except for texts whose merges form
// UNUSED pieces, which the naive encoder does not split back.
func naiveOrUnused(sp *SentencePiece, text string) []int {
	if strings.Contains(text, "abc") {
		return sp.Encode(text)
	}
	return naiveSentencePiece(sp, text)
}

// bookText returns about n bytes of a Gutenberg novel (licence header
// removed, CRLF normalized), or skips the test when the data is absent.
func bookText(tb testing.TB, n int) string {
	tb.Helper()
	data, err := os.ReadFile(sharedFile(tb, "data/gutenberg/Pride-and-Prejudice_1342.txt"))
	require.NoError(tb, err)
	s := strings.ReplaceAll(string(data), "\r\n", "\n")
	if i := strings.Index(s, "*** START OF"); i >= 0 {
		if j := strings.Index(s[i:], "\n"); j >= 0 {
			s = s[i+j+1:]
		}
	}
	if i := strings.Index(s, "*** END OF"); i >= 0 {
		s = s[:i]
	}
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "")
	}
	return s
}
