package tasks_test

import (
	"math"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/runtime/tokenizer"
	"github.com/kvbench/kvbench/tasks"
)

// TestBuildPasskeyMost checks that the fitted prompt holds the most filler
// sentences that fit: one sentence more is longer than the length asked,
// with the byte tokenizer and (when the fixtures are present) Llama-2's
// SentencePiece, at lengths up to 32K.
func TestBuildPasskeyMost(t *testing.T) {
	toks := map[string]tokenizer.Tokenizer{"bytes": tokenizer.Bytes{}}
	if testing.Short() {
		t.Log("short: the byte tokenizer only")
	} else if tok, err := tokenizer.Load(fixtures.Path(t, "tokenizers/llama2/tokenizer.model")); err == nil {
		toks["llama2"] = tok
	} else {
		t.Fatal(err)
	}
	for name, tok := range toks {
		for _, length := range []int{300, 1000, 4097, 32768} {
			for _, depth := range []float64{0, 0.37, 1} {
				p := tasks.BuildPasskey(tok, length, depth, 4242)
				if len(p.IDs) > length {
					t.Errorf("%s length %d depth %v: %d tokens", name, length, depth, len(p.IDs))
					continue
				}
				n := p.Before + p.After + 1
				before := int(math.Round(depth * float64(n)))
				ids := tok.Encode(tasks.PasskeyPrompt(4242, before, n-before))
				if tok.BOS() >= 0 {
					ids = append([]int{tok.BOS()}, ids...)
				}
				if len(ids) <= length {
					t.Errorf("%s length %d depth %v: %d filler sentences, but %d fit (%d tokens)", name, length, depth, n-1, n, len(ids))
				}
			}
		}
	}
}
