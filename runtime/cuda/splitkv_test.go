package cuda

import (
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestTokenRange checks the token range the split-KV kernels read (no GPU
// needed): positions known to ascend narrow it to what the rows can see,
// causally and through a sliding window; otherwise it is every token.
func TestTokenRange(t *testing.T) {
	asc := runtime.KVSeq{N: 6, Pos: []int32{2, 4, 6, 8, 10, 12}, Ascending: true}
	shuffled := runtime.KVSeq{N: 6, Pos: []int32{12, 4, 6, 8, 10, 2}}
	for _, c := range []struct {
		name            string
		s               runtime.KVSeq
		minQ, maxQ, win int
		lo, hi          int
	}{
		{"decode past every key", asc, 20, 20, 0, 0, 6},
		{"decode among the keys", asc, 7, 7, 0, 0, 3},
		{"rows before every key", asc, 0, 1, 0, 0, 0},
		{"window", asc, 12, 12, 5, 3, 6},                 // positions > 7
		{"window of the first row", asc, 9, 12, 5, 2, 6}, // positions > 4, <= 12
		{"window past every key", asc, 40, 40, 5, 6, 6},
		{"window wider than the context", asc, 12, 12, 100, 0, 6},
		{"order unknown", shuffled, 7, 7, 3, 0, 6},
		{"empty", runtime.KVSeq{Ascending: true}, 5, 5, 2, 0, 0},
	} {
		lo, hi := tokenRange(&c.s, c.minQ, c.maxQ, c.win)
		if lo != c.lo || hi != c.hi {
			t.Errorf("%s: tokenRange(minQ %d, maxQ %d, window %d) = [%d, %d), want [%d, %d)", c.name, c.minQ, c.maxQ, c.win, lo, hi, c.lo, c.hi)
		}
	}
}

// TestSharedHeads checks how many query heads of a GQA group share a split
// row: the largest power of two dividing the group whose heads all read the
// same list, or, for a decode call, a whole group of 3, 5, 6 or 7 such
// heads padded to 4 or 8 virtual heads (no GPU needed).
func TestSharedHeads(t *testing.T) {
	none := func(heads int) []int32 {
		var v []int32
		for range heads {
			v = append(v, 0, -1)
		}
		return v
	}
	perHead := func(heads int) []int32 {
		var v []int32
		for h := range heads {
			v = append(v, int32(100+10*h), 5)
		}
		return v
	}
	for _, c := range []struct {
		name         string
		heads        []int32
		group, rows  int
		wantR, wantV int
	}{
		{"no selection, group 4", none(8), 4, 1, 4, 4},
		{"no selection, group 8", none(8), 8, 1, 8, 8},
		{"no selection, MHA", none(8), 1, 1, 1, 1},
		{"no selection, group 3, one row: padded to 4", none(6), 3, 1, 3, 4},
		{"no selection, group 3, two rows", none(6), 3, 2, 1, 1},
		{"no selection, group 6, one row: padded to 8", none(12), 6, 1, 6, 8},
		{"no selection, group 6, prompt rows", none(12), 6, 16, 2, 2},
		{"no selection, group 7, one row: padded to 8", none(28), 7, 1, 7, 8},
		{"no selection, group 5, one row: padded to 8", none(10), 5, 1, 5, 8},
		{"no selection, group 16", none(32), 16, 1, 8, 8},
		{"a selection per head", perHead(8), 4, 1, 1, 1},
		{"a selection per head, group 7", perHead(14), 7, 1, 1, 1},
		{"pairs share a list", []int32{7, 3, 7, 3, 9, 2, 9, 2}, 4, 1, 2, 2},
		{"one group selects", append(none(4), perHead(4)...), 4, 1, 1, 1},
		{"one group of 3 selects", append(none(3), perHead(3)...), 3, 1, 1, 1},
	} {
		if r, v := sharedHeads(c.heads, c.group, c.rows); r != c.wantR || v != c.wantV {
			t.Errorf("%s: sharedHeads = %d of %d, want %d of %d", c.name, r, v, c.wantR, c.wantV)
		}
	}
}
