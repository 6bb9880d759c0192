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

// TestLateMarks: paced reads (runtime.AccPacer). FlushAccTo(m) fills the
// calls read before mark m and no later one, waiting only for a mark not
// known to have landed; FlushAcc after the last mark waits for nothing; a
// pass that failed before its flush leaves no mark behind; with
// KVBENCH_ACC_PACE=off, or outside a deferring pass, AccMark is -1.
func TestLateMarks(t *testing.T) {
	b := fakeOf(t, "bf16")
	read := func() *runtime.AttnArgs {
		a := &runtime.AttnArgs{Heads: 8, KVHeads: 2, Seqs: make([]runtime.KVSeq, 2), AccZero: true, AccView: true}
		a.Seqs[0].N, a.Seqs[1].N = 40, 33
		a.Acc = make([][]float32, accSlices(a))
		b.lateRead(a, b.st.dev, 40)
		return a
	}
	filled := func(a *runtime.AttnArgs) bool { return a.Acc[0] != nil }
	if m := b.AccMark(); m != -1 {
		t.Fatalf("AccMark outside a deferring pass: %d", m)
	}
	if !b.DeferAcc(true) {
		t.Fatal("DeferAcc(true) declined")
	}
	var calls [3][]*runtime.AttnArgs
	for l := range calls {
		for range 2 + l {
			calls[l] = append(calls[l], read())
		}
		if m := b.AccMark(); m != l {
			t.Fatalf("layer %d's mark %d", l, m)
		}
	}
	b.DeferAcc(false)
	_, _, _, w0 := FakeCounts()
	b.FlushAccTo(0)
	for l, cs := range calls {
		for _, a := range cs {
			if filled(a) != (l == 0) {
				t.Fatalf("after FlushAccTo(0): a call of layer %d filled %v", l, filled(a))
			}
		}
	}
	if !b.AccDone(2) { // the fake device's work is always done
		t.Fatal("AccDone(2) false on the fake device")
	}
	b.FlushAccTo(1)
	b.FlushAccTo(2)
	b.FlushAcc()
	if _, _, _, w1 := FakeCounts(); w1-w0 != 1 {
		t.Fatalf("%d waits for three marks, want 1 (the first; AccDone saw the last land)", w1-w0)
	}
	for l, cs := range calls {
		for _, a := range cs {
			if !filled(a) {
				t.Fatalf("a call of layer %d not filled", l)
			}
		}
	}
	if len(b.late.items) != 0 || len(b.late.marks) != 0 {
		t.Fatalf("%d reads and %d marks left after FlushAcc", len(b.late.items), len(b.late.marks))
	}
	// Passes that fail after their marks, before any flush (with reads, or
	// with none: layers that asked for no sums): the next starts afresh.
	b.DeferAcc(true)
	read()
	b.AccMark()
	b.DeferAcc(false)
	b.DeferAcc(true)
	b.AccMark()
	b.AccMark()
	b.DeferAcc(false)
	b.DeferAcc(true)
	if m := b.AccMark(); m != 0 || b.late.landed != 0 || len(b.late.items) != 0 {
		t.Fatalf("after a failed pass: mark %d, %d landed, %d reads", m, b.late.landed, len(b.late.items))
	}
	b.DeferAcc(false)
	b.FlushAcc()

	t.Setenv("KVBENCH_ACC_PACE", "off")
	off := fakeOf(t, "bf16")
	off.DeferAcc(true)
	if m := off.AccMark(); m != -1 {
		t.Fatalf("AccMark with KVBENCH_ACC_PACE=off: %d", m)
	}
	off.DeferAcc(false)
}
