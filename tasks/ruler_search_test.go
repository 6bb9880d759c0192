package tasks

import (
	"math/rand/v2"
	"testing"
)

// rulerSearch finds the largest fitting size of a monotone count, from any
// hint, with few evaluations.
func TestRulerSearch(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		base, per := r.IntN(500), 1+r.IntN(40)
		jitter := r.IntN(3)
		count := func(n int) int { return base + n*per + (n*7919)%(jitter+1) }
		budget := r.IntN(200_000)
		hint := r.IntN(10000) - 10
		calls := 0
		counted := func(n int) int { calls++; return count(n) }
		n, ok := rulerSearch(counted, budget, 0, 1<<30, hint)
		if base > budget {
			if ok {
				t.Fatalf("base %d over budget %d: found %d", base, budget, n)
			}
			continue
		}
		if !ok || count(n) > budget || count(n+1) <= budget {
			t.Fatalf("base %d per %d jitter %d budget %d hint %d: n %d (count %d, next %d)", base, per, jitter, budget, hint, n, count(n), count(n+1))
		}
		if calls > 40 {
			t.Errorf("budget %d per %d: %d evaluations", budget, per, calls)
		}
	}
	// A limit caps the size even when more would fit.
	if n, ok := rulerSearch(func(n int) int { return n }, 1000, 0, 50, -1); !ok || n != 50 {
		t.Errorf("limit 50: %d, %v", n, ok)
	}
	// A flat count fits up to the limit.
	if n, ok := rulerSearch(func(int) int { return 10 }, 1000, 3, 1<<20, -1); !ok || n != 1<<20 {
		t.Errorf("flat count: %d, %v", n, ok)
	}
	// A hint at the answer costs a handful of evaluations.
	calls := 0
	n, _ := rulerSearch(func(n int) int { calls++; return 100 + 25*n }, 100_000, 0, 1<<30, 3996)
	if n != 3996 || calls > 5 {
		t.Errorf("hint at the answer: %d after %d evaluations", n, calls)
	}
}

// The word stream gives distinct words, the vocabulary first, and the same
// prefix however far it is taken.
func TestRulerWordStream(t *testing.T) {
	v := rulerVocab()
	if len(v.adjectives) < 200 || len(v.nouns) < 300 || len(v.words) < 800 {
		t.Fatalf("vocabulary: %d adjectives, %d nouns, %d words", len(v.adjectives), len(v.nouns), len(v.words))
	}
	a := newRulerWordStream(rand.New(rand.NewPCG(3, 4)))
	a.avoid = a.take(cweCommon)
	long := append([]string(nil), a.take(5000)...)
	b := newRulerWordStream(rand.New(rand.NewPCG(3, 4)))
	b.avoid = b.take(cweCommon)
	short := b.take(900)
	seen := map[string]bool{}
	for i, w := range long {
		if seen[w] {
			t.Fatalf("word %q twice", w)
		}
		seen[w] = true
		if i < len(short) && short[i] != w {
			t.Fatalf("prefix differs at %d: %q, %q", i, short[i], w)
		}
		if i >= len(v.words) {
			for _, c := range long[:cweCommon] {
				if len(w) > len(c) && containsWord(w, c) {
					t.Errorf("compound %q holds the common word %q", w, c)
				}
			}
		}
	}
	inVocab := 0
	for _, w := range long[:len(v.words)] {
		for _, x := range v.words {
			if x == w {
				inVocab++
				break
			}
		}
	}
	if inVocab != len(v.words) {
		t.Errorf("%d of the first %d words are the vocabulary's", inVocab, len(v.words))
	}
	if rulerMaxWords() < 50_000 {
		t.Errorf("at most %d words", rulerMaxWords())
	}
}

func containsWord(w, part string) bool {
	for i := 0; i+len(part) <= len(w); i++ {
		if w[i:i+len(part)] == part {
			return true
		}
	}
	return false
}
