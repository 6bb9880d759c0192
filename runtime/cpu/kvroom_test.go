package cpu_test

import (
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestKVCacheRoom: Room(n) leaves every sequence as it was (tokens,
// positions, pages, resident bytes) and gives its lists room for n more
// tokens, so that appending them in chunks moves no list (the prompt of
// Runner.forward, grown once), with shifts tracked.
func TestKVCacheRoom(t *testing.T) {
	cache, c, k, v := tinyCache(t, 8, 50)
	cache.TrackShifts()
	next := 0
	appendRows := func(rows int) {
		pos := make([]int, rows)
		for i := range pos {
			pos[i], next = next, next+1
		}
		for l := range c.Layers {
			cache.Append(l, k, v, rows, pos)
		}
	}
	appendRows(13)
	type view struct {
		n          int
		pos        []int32
		k, v       []runtime.Buffer
		pk, pp, ps *int32
	}
	snap := func() []view {
		var out []view
		for l := range c.Layers {
			for _, s := range cache.Seqs(l) {
				out = append(out, view{n: s.N, pos: slices.Clone(s.Pos), k: slices.Clone(s.K), v: slices.Clone(s.V),
					pp: &s.Pos[:1][0], ps: &s.Shift[:1][0]})
			}
		}
		return out
	}
	before, bytes := snap(), cache.ResidentBytes()
	cache.Room(200)
	after := snap()
	for i := range before {
		b, a := before[i], after[i]
		if a.n != b.n || !slices.Equal(a.pos, b.pos) || !slices.Equal(a.k, b.k) || !slices.Equal(a.v, b.v) {
			t.Fatalf("sequence %d changed by Room", i)
		}
	}
	if cache.ResidentBytes() != bytes {
		t.Fatalf("Room changed the resident bytes: %d -> %d", bytes, cache.ResidentBytes())
	}
	for range 4 {
		appendRows(50)
	}
	moved := snap()
	for i := range after {
		if moved[i].pp != after[i].pp || moved[i].ps != after[i].ps {
			t.Fatalf("sequence %d: positions or shifts moved while appending the 200 tokens Room made room for", i)
		}
	}
	for l := range c.Layers {
		for _, s := range cache.Seqs(l) {
			if s.N != 213 || cap(s.K) < 27 || len(s.K) != 27 {
				t.Fatalf("after 213 tokens: %d held, %d pages of room %d", s.N, len(s.K), cap(s.K))
			}
		}
	}
}
