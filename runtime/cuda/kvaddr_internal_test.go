package cuda

import (
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestKVAddrOps: StoreKVAt and MoveKVAt on the addresses KVPageAddr gives
// queue exactly the copies StoreKV and MoveKV queue on the pages, for
// float32 and bf16 pages (the type in the address's low bit), on the fake
// device.
func TestKVAddrOps(t *testing.T) {
	b, err := NewFakeBackend("bf16")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const ps, hd, kvDim = 16, 128, 8 * 128
	k, v := b.Alloc(3*kvDim), b.Alloc(3*kvDim)
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		var pages [4]runtime.Buffer
		for i := range pages {
			pages[i] = b.AllocKV(ps*hd, dt)
		}
		addr := func(i int) uint64 { return b.KVPageAddr(pages[i]) }
		if got := addr(0) & 1; (got == 1) != (dt == runtime.BF16) {
			t.Fatalf("%v page: type bit %d", dt, got)
		}
		type op struct {
			dk, dv, sk, sv Ptr
			mode, hd       int
		}
		for _, c := range []struct{ slot, row, head int }{{0, 0, 0}, {15, 2, 7}, {7, 1, 3}} {
			var want, got op
			want.dk, want.dv, want.sk, want.sv, want.mode, want.hd = b.storeOp(pages[0], pages[1], c.slot, k, v, c.row, c.head, hd, kvDim)
			got.dk, got.dv, got.sk, got.sv, got.mode, got.hd = b.storeOpAt(addr(0), addr(1), c.slot, k, v, c.row, c.head, hd, kvDim)
			if got != want {
				t.Errorf("%v store %+v: %+v at addresses, %+v on the pages", dt, c, got, want)
			}
			want.dk, want.dv, want.sk, want.sv, want.mode, want.hd = b.moveOp(pages[2], pages[3], c.slot, pages[0], pages[1], 15-c.slot, hd)
			got.dk, got.dv, got.sk, got.sv, got.mode, got.hd = b.moveOpAt(addr(2), addr(3), c.slot, addr(0), addr(1), 15-c.slot, hd)
			if got != want {
				t.Errorf("%v move %+v: %+v at addresses, %+v on the pages", dt, c, got, want)
			}
		}
	}
}
