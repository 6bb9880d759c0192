package cuda

import (
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestAllVisible checks when Attend may leave a sequence's positions
// behind (no GPU needed): only when every token is at or before every row
// and, under a sliding window, known to lie inside the window of the
// newest row.
func TestAllVisible(t *testing.T) {
	asc := runtime.KVSeq{N: 4, Pos: []int32{10, 11, 12, 13}, Bounded: true, MaxPos: 13, Ascending: true}
	shuffled := runtime.KVSeq{N: 4, Pos: []int32{13, 11, 12, 10}, Bounded: true, MaxPos: 13}
	unbounded := runtime.KVSeq{N: 4, Pos: []int32{10, 11, 12, 13}, Ascending: true}
	for _, c := range []struct {
		name            string
		s               runtime.KVSeq
		minQ, maxQ, win int
		want            bool
	}{
		{"no window, decode at the newest", asc, 13, 13, 0, true},
		{"no window, rows past the keys", asc, 14, 20, 0, true},
		{"a row before the newest key", asc, 12, 13, 0, false},
		{"bound unknown", unbounded, 13, 13, 0, false},
		{"window covering every key", asc, 13, 13, 4, true},
		{"window hiding the oldest key", asc, 13, 13, 3, false},
		{"window of the newest row hides it", asc, 13, 16, 6, false},
		{"window, rows further on, still covering", asc, 13, 16, 7, true},
		{"window over keys out of order", shuffled, 13, 13, 100, false},
		{"no window over keys out of order", shuffled, 13, 13, 0, true},
		{"empty sequence, window", runtime.KVSeq{Bounded: true}, 5, 5, 2, true},
	} {
		if got := allVisible(&c.s, c.minQ, c.maxQ, c.win); got != c.want {
			t.Errorf("%s: allVisible(minQ %d, maxQ %d, window %d) = %v, want %v", c.name, c.minQ, c.maxQ, c.win, got, c.want)
		}
	}
}
