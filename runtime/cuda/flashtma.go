package cuda

import (
	"fmt"
	"math"
	"sync"
)

// tmaPages follows the address range of the KV pages (AllocKV) for the
// TMA-fed prefill attention (prefill_tma.cu): one tensor map spans every
// page, rows of a token's K or V from the lowest page on, so that a page's
// row is its address less the base over the row's bytes. The maps are
// re-encoded when the range grows (a few microseconds on the host).
type tmaPages struct {
	mu     sync.Mutex
	lo, hi uint64 // [lo, hi): every KV page so far; lo 0: none
	odd    bool   // a page not on a 256-byte boundary: no map
	maps   map[tmaKey]tmaEntry
}

// tmaKey names a map: head dim and box rows.
type tmaKey struct{ hd, box int }

type tmaEntry struct {
	lo, hi uint64
	m      *TensorMap
	err    error
}

// grow takes a new page of n bytes at p into the range.
func (t *tmaPages) grow(p Ptr, n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := uint64(p)
	if a%256 != 0 {
		t.odd = true
	}
	if t.lo == 0 || a < t.lo {
		t.lo = a
	}
	t.hi = max(t.hi, a+uint64(n))
}

// tmaMaxRows is the most rows a map may have: the kernel's row coordinate
// is a signed 32-bit integer.
const tmaMaxRows = math.MaxInt32

// tmaMap returns the tensor map for bf16 pages of head dim hd and pageSize
// tokens read in boxes of min(pageSize, 64 or 128 keys) rows, its base and
// rows, or false where the TMA cannot serve (no driver support, pages under
// 8 tokens, an odd page address, a range past tmaMaxRows, an encoding the
// driver refused): the caller then takes a variant without it.
func (b *Backend) tmaMap(hd, pageSize, keys int) (*TensorMap, Ptr, int64, bool) {
	box := min(pageSize, keys)
	if !b.D.HasTMA() || box < 8 || pageSize&(pageSize-1) != 0 || (hd != 64 && hd != 128) {
		return nil, 0, 0, false
	}
	t := &b.tma
	t.mu.Lock()
	defer t.mu.Unlock()
	rowBytes := uint64(hd * 2)
	if t.lo == 0 || t.odd {
		return nil, 0, 0, false
	}
	rows := (t.hi - t.lo + rowBytes - 1) / rowBytes
	if rows > tmaMaxRows {
		return nil, 0, 0, false
	}
	k := tmaKey{hd, box}
	e, ok := t.maps[k]
	if !ok || e.lo != t.lo || e.hi != t.hi {
		m, err := b.D.EncodeTensorMap2D(Ptr(t.lo), uint64(hd), rows, rowBytes, 64, uint32(box))
		e = tmaEntry{lo: t.lo, hi: t.hi, m: m, err: err}
		if t.maps == nil {
			t.maps = map[tmaKey]tmaEntry{}
		}
		t.maps[k] = e
	}
	if e.err != nil {
		return nil, 0, 0, false
	}
	return e.m, Ptr(t.lo), int64(rows), true
}

// flashFallback is the variant a TMA-fed one gives way to where the TMA
// cannot serve (tmaMap): a cp.async variant for head dim hd.
func flashFallback(hd int) string {
	if hd == 64 {
		return flashCopy64
	}
	return flashCopy
}

// tmaErr reports the last encoding the driver refused for head dim hd and
// box rows box (tests).
func (b *Backend) tmaErr(hd, box int) error {
	b.tma.mu.Lock()
	defer b.tma.mu.Unlock()
	if e, ok := b.tma.maps[tmaKey{hd, box}]; ok && e.err != nil {
		return fmt.Errorf("cuda: tensor map for head dim %d, %d-row boxes: %w", hd, box, e.err)
	}
	return nil
}
