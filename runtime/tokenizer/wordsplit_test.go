package tokenizer

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSentencePieceWordSplit checks Encode's word-by-word merging with its
// reuse of repeated words (wordSplit) against merging the whole text at
// once, on the Llama-2 and kvbench-ref-13m tokenizers (both qualify: no
// piece has a space symbol after another character): random texts with
// runs of spaces, tabs, newlines and the space symbol itself, a book's
// pages, and a text of one sentence repeated (every word after the first
// pass from the cache). A piece with a space after a letter turns it off.
func TestSentencePieceWordSplit(t *testing.T) {
	for _, path := range []string{"tokenizers/llama2/tokenizer.model", "models/kvbench-ref-13m/tokenizer.model"} {
		sp, err := LoadSentencePiece(sharedFile(t, path))
		require.NoError(t, err)
		require.True(t, sp.wordSplit, "%s: expected to merge word by word", path)
		whole := *sp
		whole.wordSplit = false
		rng := rand.New(rand.NewPCG(7, 3))
		texts := []string{bookText(t, 20000), strings.Repeat("The grass is green. The sky is blue.  The sun is yellow.\n", 200),
			"  leading and trailing  ", "a\u2581b \u2581\u2581c", "\u2581", " ", ""}
		for range 300 {
			texts = append(texts, randomText(rng, rng.IntN(400)))
		}
		for _, text := range texts {
			require.Equal(t, whole.Encode(text), sp.Encode(text), "%s: text %q", path, text[:min(len(text), 200)])
		}
	}
	require.True(t, spaceAfterOther("a\u2581b"))
	require.True(t, spaceAfterOther("\u2581a\u2581"))
	require.False(t, spaceAfterOther("\u2581\u2581ab"))
	require.False(t, spaceAfterOther("ab"))
}
