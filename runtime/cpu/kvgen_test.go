package cpu_test

import (
	"math/rand/v2"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestKVSeqGen checks the promise KVSeq.ID and KVSeq.Gen make to a backend
// that keeps a copy of the page lists: every sequence of a cache (and of its
// recall reference) has its own nonzero ID, and while a sequence's Gen stays
// the same its lists only grow (every page seen before is still at its
// index). Random prompt chunks, single steps, evictions of few and many
// tokens (pages freed, then taken again from the free list) and resets.
func TestKVSeqGen(t *testing.T) {
	cache, c, k, v := tinyCache(t, 4, 32)
	cache.RecordAll()
	rng := rand.New(rand.NewPCG(6, 1))

	type seen struct {
		gen  uint64
		k, v []runtime.Buffer
	}
	last := map[uint64]seen{}
	// all lists every sequence of the cache and of its reference.
	all := func() []runtime.KVSeq {
		var out []runtime.KVSeq
		for l := range c.Layers {
			out = append(out, cache.Seqs(l)...)
			out = append(out, cache.Reference(l)...)
		}
		return out
	}
	ids := map[uint64]bool{}
	for _, s := range all() {
		if s.ID == 0 || ids[s.ID] {
			t.Fatalf("sequence ID %d: zero or repeated", s.ID)
		}
		ids[s.ID] = true
	}
	changed := 0 // generation changes seen
	check := func(what string) {
		t.Helper()
		for _, s := range all() {
			if !ids[s.ID] {
				t.Fatalf("%s: sequence ID %d was not one of the cache's", what, s.ID)
			}
			p, ok := last[s.ID]
			if ok && p.gen == s.Gen {
				if len(s.K) < len(p.k) {
					t.Fatalf("%s: sequence %d shrank from %d to %d pages, generation %d kept", what, s.ID, len(p.k), len(s.K), s.Gen)
				}
				for i := range p.k {
					if s.K[i] != p.k[i] || s.V[i] != p.v[i] {
						t.Fatalf("%s: sequence %d page %d replaced, generation %d kept", what, s.ID, i, s.Gen)
					}
				}
			} else if ok {
				changed++
			}
			last[s.ID] = seen{s.Gen, append([]runtime.Buffer(nil), s.K...), append([]runtime.Buffer(nil), s.V...)}
		}
	}
	next := 0
	appendRows := func(rows int) {
		pos := make([]int, rows)
		for i := range pos {
			pos[i] = next
			next++
		}
		for l := range c.Layers {
			cache.Append(l, k, v, rows, pos)
		}
	}
	for round := range 3 {
		appendRows(1 + rng.IntN(30))
		check("prompt")
		for step := range 60 {
			switch rng.IntN(4) {
			case 0: // evict many: pages go back to the free list
				l, h := rng.IntN(c.Layers), rng.IntN(c.KVHeads)
				n := cache.Len(l, h)
				var drop []int32
				for _, i := range rng.Perm(n)[:n/2] {
					drop = append(drop, int32(i))
				}
				if len(drop) > 0 {
					cache.Evict(l, h, drop)
				}
			case 1: // evict one
				l, h := rng.IntN(c.Layers), rng.IntN(c.KVHeads)
				if n := cache.Len(l, h); n > 0 {
					cache.Evict(l, h, []int32{int32(rng.IntN(n))})
				}
			}
			appendRows(1)
			if step%3 == 0 { // evictions and appends between two looks
				check("steps")
			}
		}
		check("steps")
		if round < 2 {
			cache.Reset()
			next = 0
			check("reset")
		}
	}
	if changed == 0 {
		t.Fatal("no generation changed: evictions and resets went unseen")
	}
	t.Logf("%d sequences, %d generation changes", len(ids), changed)
}
