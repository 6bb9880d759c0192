package cpu_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// moveRecorder is the CPU backend, recording MoveKV's (destination,
// source) slots per page pair.
type moveRecorder struct {
	*cpu.Backend
	moves [][2]slotRef
}

type slotRef struct {
	page runtime.Buffer
	slot int
}

func (m *moveRecorder) MoveKV(dstK, dstV runtime.Buffer, dstSlot int, srcK, srcV runtime.Buffer, srcSlot, headDim int) {
	m.moves = append(m.moves, [2]slotRef{{dstK, dstSlot}, {srcK, srcSlot}})
	m.Backend.MoveKV(dstK, dstV, dstSlot, srcK, srcV, srcSlot, headDim)
}

// TestEvictFinalCopies evicts random sets and runs (one token, a few, most
// of the cache) and checks that every token left holds its own key and value (the
// key stores the position), that the positions are those of the tokens
// kept, in the layout one swap-remove after another gives, and that no
// copy of an Evict reads a slot another of its copies writes (the backend
// may run them together).
func TestEvictFinalCopies(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cb := cpu.New(1)
	defer cb.Close()
	be := &moveRecorder{Backend: cb}
	c := m.Config
	rng := rand.New(rand.NewPCG(9, 9))
	for _, n := range []int{1, 3, 17, 60, 200} {
		for trial := range 20 {
			cache, err := runtime.NewKVCacheOf(be, c, 8, runtime.F32)
			if err != nil {
				t.Fatal(err)
			}
			const tokens = 300
			kd := make([]float32, tokens*c.KVDim())
			pos := make([]int, tokens)
			for i := range pos {
				pos[i] = 1000 + i
				for j := range c.KVDim() {
					kd[i*c.KVDim()+j] = float32(pos[i])
				}
			}
			k, v := be.Alloc(len(kd)), be.Alloc(len(kd))
			be.Write(k, 0, kd)
			be.Write(v, 0, kd)
			cache.Append(0, k, v, tokens, pos)
			drop := rng.Perm(tokens)[:n]
			if trial%5 == 4 { // a run of tokens, as a sink and window policy cuts one
				lo := rng.IntN(tokens - n + 1)
				for i := range drop {
					drop[i] = lo + i
				}
			}
			d32 := make([]int32, n)
			for i, d := range drop {
				d32[i] = int32(d)
			}
			// The layout of one swap-remove after another.
			want := slices.Clone(pos)
			sorted := slices.Clone(drop)
			slices.Sort(sorted)
			for i := len(sorted) - 1; i >= 0; i-- {
				want[sorted[i]] = want[len(want)-1]
				want = want[:len(want)-1]
			}
			be.moves = be.moves[:0]
			cache.Evict(0, 0, d32)
			s := cache.Seqs(0)[0]
			got := make([]int, s.N)
			for i, p := range s.Pos[:s.N] {
				got[i] = int(p)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%d drops, trial %d: positions %v, want %v", n, trial, got, want)
			}
			row := make([]float32, c.HeadDim)
			for i := range s.N {
				for _, page := range []runtime.Buffer{s.K[i/8], s.V[i/8]} {
					be.Read(row, page, (i%8)*c.HeadDim)
					if row[0] != float32(s.Pos[i]) || row[c.HeadDim-1] != float32(s.Pos[i]) {
						t.Fatalf("%d drops, trial %d: slot %d holds %v, its position is %d", n, trial, i, row[0], s.Pos[i])
					}
				}
			}
			written := map[slotRef]bool{}
			for _, mv := range be.moves {
				written[mv[0]] = true
			}
			for _, mv := range be.moves {
				if written[mv[1]] {
					t.Fatalf("%d drops, trial %d: a copy reads slot %d, which another copy writes", n, trial, mv[1].slot)
				}
			}
			cache.Free()
		}
	}
}
