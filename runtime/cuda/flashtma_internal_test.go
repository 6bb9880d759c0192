package cuda

import (
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestTMAMap: the tensor map of the TMA-fed prefill spans every KV page
// AllocKV has made (base the lowest, rows to the end of the highest), is
// re-encoded when the range grows, and is refused where the kernel could
// not use it (pages under 8 tokens, an odd page address, a range past a
// signed 32-bit row); on the fake device.
func TestTMAMap(t *testing.T) {
	b, err := NewFakeBackend("bf16")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, _, _, ok := b.tmaMap(128, 16, 64); ok {
		t.Fatal("a map before any KV page")
	}
	var lo, hi uint64
	for range 5 {
		x := b.dev(b.AllocKV(16*128, runtime.BF16))
		if lo == 0 || uint64(x.p) < lo {
			lo = uint64(x.p)
		}
		hi = max(hi, uint64(x.p)+uint64(x.bytes))
	}
	m, base, rows, ok := b.tmaMap(128, 16, 64)
	if !ok || m == nil || uint64(base) != lo || rows != int64((hi-lo+255)/256) {
		t.Fatalf("map %v base %#x rows %d; want base %#x rows %d", ok, uint64(base), rows, lo, (hi-lo+255)/256)
	}
	if m2, _, _, _ := b.tmaMap(128, 16, 64); m2 != m {
		t.Error("the same range encoded again")
	}
	b.AllocKV(16*128, runtime.BF16)
	if m3, _, rows3, _ := b.tmaMap(128, 16, 64); m3 == m && rows3 == rows {
		t.Error("a grown range kept the old map")
	}
	if _, _, r64, ok := b.tmaMap(64, 16, 64); !ok || r64 < 2*rows {
		t.Errorf("head dim 64: %v, %d rows (128-byte rows: twice head dim 128's)", ok, r64)
	}
	if _, _, _, ok := b.tmaMap(128, 4, 64); ok {
		t.Error("4-token pages took the TMA (boxes of 8 rows at least)")
	}
	if err := b.tmaErr(128, 16); err != nil {
		t.Error(err)
	}
	b.tma.grow(Ptr(lo-128), 256)
	if _, _, _, ok := b.tmaMap(128, 16, 64); ok {
		t.Error("a page off a 256-byte boundary took the TMA")
	}
	b.tma.odd = false
	b.tma.grow(Ptr(lo+uint64(tmaMaxRows)*256), 256)
	if _, _, _, ok := b.tmaMap(128, 16, 64); ok {
		t.Error("a range past 2^31 rows took the TMA")
	}
	if flashShapes[flashFallback(128)].tma != 0 || flashShapes[flashFallback(64)].tma != 0 {
		t.Error("a TMA variant falls back to a TMA variant")
	}
}
