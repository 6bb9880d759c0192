package cuda

import (
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/kvbench/kvbench/runtime"
)

// TestLateRoom: the deferred reads of a pass get disjoint spans of pinned
// chunks, each inside its chunk, a read larger than a chunk a chunk of its
// own; FlushAcc hands every call views of its span (a slice its KV head's
// or query head's N long, in place), and the next pass starts over at the
// start of a chunk.
func TestLateRoom(t *testing.T) {
	b := fakeOf(t, "bf16")
	rng := rand.New(rand.NewPCG(5, 6))
	if !b.DeferAcc(true) {
		t.Fatal("DeferAcc(true) declined")
	}
	type span struct {
		p      *Pinned
		lo, hi int64
	}
	for pass := range 2 {
		var spans []span
		var calls []*runtime.AttnArgs
		for range 24 {
			heads, kv := 32, 8
			seqs := make([]runtime.KVSeq, kv)
			longest := 0
			for g := range seqs {
				seqs[g].N = 1 + rng.IntN(3000)
				longest = max(longest, seqs[g].N)
			}
			if rng.IntN(10) == 0 { // larger than a chunk
				seqs[0].N = lateChunk/4/8 + 1
				longest = seqs[0].N
			}
			a := &runtime.AttnArgs{Heads: heads, KVHeads: kv, Seqs: seqs, AccZero: true, AccView: true, AccGroup: rng.IntN(2) == 0}
			a.Acc = make([][]float32, accSlices(a))
			b.lateRead(a, b.st.dev, longest)
			it := b.late.items[len(b.late.items)-1]
			n := int64(accSlices(a)*longest) * 4
			if it.off < 0 || it.off+n > it.pin.bytes {
				t.Fatalf("pass %d: a read of %d bytes at %d in a chunk of %d", pass, n, it.off, it.pin.bytes)
			}
			for _, s := range spans {
				if s.p == it.pin && it.off < s.hi && s.lo < it.off+n {
					t.Fatalf("pass %d: reads overlap: [%d, %d) and [%d, %d)", pass, s.lo, s.hi, it.off, it.off+n)
				}
			}
			spans = append(spans, span{it.pin, it.off, it.off + n})
			calls = append(calls, a)
		}
		if spans[0].lo != 0 {
			t.Fatalf("pass %d started at %d in a chunk, not at its start", pass, spans[0].lo)
		}
		b.FlushAcc()
		for k, a := range calls {
			s := spans[k]
			astride := int((s.hi - s.lo) / 4 / int64(accSlices(a)))
			for i := range accSlices(a) {
				want := unsafe.Add(s.p.p, s.lo+int64(i*astride)*4)
				if len(a.Acc[i]) != accLen(a, i) || unsafe.Pointer(unsafe.SliceData(a.Acc[i])) != want {
					t.Fatalf("pass %d call %d slice %d: a view of %d values at %p, want %d at %p", pass, k, i, len(a.Acc[i]),
						unsafe.SliceData(a.Acc[i]), accLen(a, i), want)
				}
			}
		}
		if len(b.late.items) != 0 {
			t.Fatalf("%d reads left after FlushAcc", len(b.late.items))
		}
	}
	b.DeferAcc(false)
}
