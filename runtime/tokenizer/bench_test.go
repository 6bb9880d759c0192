package tokenizer

import (
	"testing"
	"time"
)

// reportCharsPerSec adds a chars/s metric (characters are bytes here, for
// mostly-ASCII books).
func reportCharsPerSec(b *testing.B, n int) {
	b.SetBytes(int64(n))
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "chars/s")
}

func BenchmarkEncodeSentencePiece(b *testing.B) {
	sp := loadLlama2(b)
	text := bookText(b, 1<<20)
	b.ResetTimer()
	for b.Loop() {
		sp.Encode(text)
	}
	reportCharsPerSec(b, len(text))
}

func BenchmarkEncodeSentencePieceOneLine(b *testing.B) {
	sp := loadLlama2(b)
	text := []byte(bookText(b, 200_000))
	for i, c := range text {
		if c == '\n' {
			text[i] = ' ' // one segment: the worst case for the merge queue
		}
	}
	s := string(text)
	for b.Loop() {
		sp.Encode(s)
	}
	reportCharsPerSec(b, len(s))
}

func BenchmarkEncodeLlama2C(b *testing.B) {
	tok := loadTok512(b)
	text := bookText(b, 200_000)
	for b.Loop() {
		tok.Encode(text)
	}
	reportCharsPerSec(b, len(text))
}

func BenchmarkEncodeHFByteLevel(b *testing.B) {
	tok, err := parseHFJSON("tokenizer.json", byteLevelJSON(b, true), nil)
	if err != nil {
		b.Fatal(err)
	}
	text := bookText(b, 200_000)
	for b.Loop() {
		tok.Encode(text)
	}
	reportCharsPerSec(b, len(text))
}

// TestEncodeSpeed checks that a long text encodes at a reasonable rate (far
// below what the O(n log n) encoder does, far above a quadratic one).
func TestEncodeSpeed(t *testing.T) {
	if testing.Short() {
		t.Skip("speed check skipped in -short mode")
	}
	sp := loadLlama2(t)
	text := bookText(t, 500_000)
	start := time.Now()
	ids := sp.Encode(text)
	rate := float64(len(text)) / time.Since(start).Seconds()
	t.Logf("encoded %d chars into %d ids at %.2g chars/s", len(text), len(ids), rate)
	if rate < 2e5 {
		t.Errorf("encoding at %.2g chars/s, want at least 2e5", rate)
	}
	if got := sp.Decode(ids); got != text {
		t.Errorf("Decode(Encode(book)) differs from the book")
	}
}
