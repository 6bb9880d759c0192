package cuda

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestDescribePositions checks the positions describe lays out for a
// prompt chunk's call (not every token visible to every row): each KV
// head's descriptor points at its own positions, and heads holding the
// same positions (as a prompt's do) share one copy, while heads whose
// positions differ (an eviction moved a token) get their own.
func TestDescribePositions(t *testing.T) {
	b := fakeOf(t, "bf16")
	rng := rand.New(rand.NewPCG(6, 1))
	const heads, kvHeads, hd, ps = 8, 4, 64, 16
	for trial := range 40 {
		n := 20 + rng.IntN(300)
		rows := 2 + rng.IntN(8) // more than one row: the later tokens are hidden from the first
		base := make([]int32, n)
		for i := range base {
			base[i] = int32(i)
		}
		seqs := make([]runtime.KVSeq, kvHeads)
		same := make([]bool, kvHeads) // head g holds the positions of head g-1
		for g := range seqs {
			pos := slices.Clone(base)
			if g > 0 && rng.IntN(3) == 0 { // an eviction moved the last token into a hole
				i := rng.IntN(n - 1)
				pos[i] = pos[n-1]
				pos[n-1] = int32(n + g)
			}
			same[g] = g > 0 && slices.Equal(pos, seqs[g-1].Pos)
			s := runtime.KVSeq{N: n, PageSize: ps, Pos: pos, Bounded: true, MaxPos: slices.Max(pos)}
			addPages(b, &s, hd)
			seqs[g] = s
		}
		qpos := make([]int, rows)
		for r := range qpos {
			qpos[r] = n - rows + r
		}
		a := &runtime.AttnArgs{Q: b.Alloc(rows * heads * hd), Out: b.Alloc(rows * heads * hd), Rows: rows, QPos: qpos,
			Heads: heads, KVHeads: kvHeads, HeadDim: hd, Scale: 0.125, Seqs: seqs}
		var h []int32
		b.hPtrs, b.kvt = b.hPtrs[:0], -1 // as callPages leaves them for a call without tables
		b.describe(&h, a, false)
		for g, s := range seqs {
			off := h[g*sdWords+4]
			if off < 0 {
				t.Fatalf("trial %d head %d: no positions for a call whose rows do not see every token", trial, g)
			}
			if got := h[off : off+int32(n)]; !slices.Equal(got, s.Pos[:n]) {
				t.Fatalf("trial %d head %d: positions at %d are not the head's", trial, g, off)
			}
			if g > 0 && same[g] != (off == h[(g-1)*sdWords+4]) {
				t.Fatalf("trial %d head %d: same positions as head %d %v, shared copy %v", trial, g, g-1, same[g], off == h[(g-1)*sdWords+4])
			}
		}
		b.Free(a.Q)
		b.Free(a.Out)
	}
}

// TestDescribeShifts checks the shifts describe lays out for a re-positioned
// call (QShift): each KV head's descriptor points at its own shifts, the
// first ShiftSpan of them (all of them without a span); a run marked equal
// (ShiftEqual: StreamingLLM's sinks) holds ShiftAll, written without
// reading Shift (whose values the test then spoils), and heads with the
// same run share one copy.
func TestDescribeShifts(t *testing.T) {
	b := fakeOf(t, "bf16")
	rng := rand.New(rand.NewPCG(7, 2))
	const heads, kvHeads, hd, ps = 8, 4, 64, 16
	for trial := range 60 {
		n := 20 + rng.IntN(200)
		seqs := make([]runtime.KVSeq, kvHeads)
		want := make([][]int32, kvHeads)
		for g := range seqs {
			s := runtime.KVSeq{N: n, PageSize: ps, Pos: make([]int32, n), Shift: make([]int32, n), Bounded: true, MaxPos: int32(n + 50)}
			for i := range s.Pos {
				s.Pos[i] = int32(i)
			}
			switch rng.IntN(3) {
			case 0: // equal sinks: one value for the span
				s.ShiftSpan, s.ShiftEqual, s.ShiftAll = 1+rng.IntN(6), true, -int32(rng.IntN(3))
				for i := range s.ShiftSpan {
					s.Shift[i] = s.ShiftAll
				}
			case 1: // a span of unequal shifts
				s.ShiftSpan = 1 + rng.IntN(6)
				for i := range s.ShiftSpan {
					s.Shift[i] = -int32(rng.IntN(9))
				}
			default: // no span: every shift is sent
				for i := range s.Shift {
					s.Shift[i] = -int32(rng.IntN(9))
				}
			}
			m := n
			if s.ShiftSpan > 0 {
				m = s.ShiftSpan
			}
			want[g] = slices.Clone(s.Shift[:m])
			if s.ShiftEqual {
				for i := range m {
					s.Shift[i] = 99 // the run must come from ShiftAll
				}
			}
			addPages(b, &s, hd)
			seqs[g] = s
		}
		a := &runtime.AttnArgs{Q: b.Alloc(heads * hd), Out: b.Alloc(heads * hd), Rows: 1, QPos: []int{n + 50}, QShift: []int{-1},
			Heads: heads, KVHeads: kvHeads, HeadDim: hd, Scale: 0.125, Seqs: seqs, Theta: 1e4}
		var h []int32
		b.hPtrs, b.kvt = b.hPtrs[:0], -1
		b.describe(&h, a, false)
		for g, s := range seqs {
			off, cnt := h[g*sdWords+5], h[g*sdWords+12]
			if int(cnt) != len(want[g]) || off < 0 {
				t.Fatalf("trial %d head %d: %d shifts at %d, want %d", trial, g, cnt, off, len(want[g]))
			}
			if got := h[off : off+cnt]; !slices.Equal(got, want[g]) {
				t.Fatalf("trial %d head %d (equal %v): shifts %v, want %v", trial, g, s.ShiftEqual, got, want[g])
			}
			if g > 0 {
				p := seqs[g-1]
				shared := off == h[(g-1)*sdWords+5]
				if sameRun := s.ShiftEqual && p.ShiftEqual && s.ShiftSpan == p.ShiftSpan && s.ShiftAll == p.ShiftAll; shared != sameRun && (sameRun || cnt > 0) {
					t.Fatalf("trial %d head %d: shares head %d's shifts %v, same equal run %v", trial, g, g-1, shared, sameRun)
				}
			}
		}
		b.Free(a.Q)
		b.Free(a.Out)
	}
}

// addPages gives s the bf16 key and value pages its N tokens need.
func addPages(b *Backend, s *runtime.KVSeq, hd int) {
	for range (s.N + s.PageSize - 1) / s.PageSize {
		s.K = append(s.K, b.AllocKV(s.PageSize*hd, runtime.BF16))
		s.V = append(s.V, b.AllocKV(s.PageSize*hd, runtime.BF16))
	}
}
