package cuda

import (
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestKVAddrOps: StoreKVAt and MoveKVAt on the addresses KVPageAddr gives
// queue the copies of the slots asked for (the pages' device pointers plus
// the slot's bytes, the rows' pointers plus the head's floats), for float32
// and bf16 pages (the type in the address's low bit, the mode: store 0/1,
// move 2/3), on the fake device; StoreKV and MoveKV on the pages queue the
// same.
func TestKVAddrOps(t *testing.T) {
	b, err := NewFakeBackend("bf16")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const ps, hd, kvDim = 16, 128, 8 * 128
	k, v := b.Alloc(3*kvDim), b.Alloc(3*kvDim)
	type op struct {
		dk, dv, sk, sv Ptr
		mode, hd       int
	}
	for _, c := range []struct {
		dt       runtime.DType
		es, kind int // bytes an element, page type
	}{{runtime.F32, 4, kvF32}, {runtime.BF16, 2, kvBF16}} {
		var pages [4]runtime.Buffer
		for i := range pages {
			pages[i] = b.AllocKV(ps*hd, c.dt)
		}
		addr := func(i int) uint64 { return b.KVPageAddr(pages[i]) }
		at := func(i, slot int) Ptr { return b.dev(pages[i]).p.Add(int64(slot * hd * c.es)) }
		if at(0, 0) == 0 || at(0, 0) == at(1, 0) {
			t.Fatalf("pages at %#x and %#x: want distinct device pointers", uint64(at(0, 0)), uint64(at(1, 0)))
		}
		for _, s := range []struct{ slot, row, head int }{{0, 0, 0}, {15, 2, 7}, {7, 1, 3}} {
			src := int64(s.row*kvDim+s.head*hd) * 4
			want := op{at(0, s.slot), at(1, s.slot), b.f32(k).Add(src), b.f32(v).Add(src), c.kind, hd}
			var got, plain op
			got.dk, got.dv, got.sk, got.sv, got.mode, got.hd = b.storeOpAt(addr(0), addr(1), s.slot, k, v, s.row, s.head, hd, kvDim)
			plain.dk, plain.dv, plain.sk, plain.sv, plain.mode, plain.hd = b.storeOp(pages[0], pages[1], s.slot, k, v, s.row, s.head, hd, kvDim)
			if got != want || plain != want {
				t.Errorf("%v store %+v: %+v at addresses, %+v on the pages, want %+v", c.dt, s, got, plain, want)
			}
			want = op{at(2, s.slot), at(3, s.slot), at(0, 15-s.slot), at(1, 15-s.slot), 2 * c.kind, hd}
			got.dk, got.dv, got.sk, got.sv, got.mode, got.hd = b.moveOpAt(addr(2), addr(3), s.slot, addr(0), addr(1), 15-s.slot, hd)
			plain.dk, plain.dv, plain.sk, plain.sv, plain.mode, plain.hd = b.moveOp(pages[2], pages[3], s.slot, pages[0], pages[1], 15-s.slot, hd)
			if got != want || plain != want {
				t.Errorf("%v move %+v: %+v at addresses, %+v on the pages, want %+v", c.dt, s, got, plain, want)
			}
		}
	}
}
