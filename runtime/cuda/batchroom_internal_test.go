package cuda

import (
	"math/rand/v2"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestSelRoom checks selRoom's arithmetic on random batches: every call
// with a device selection gets room of its selection's bytes past the
// batch's ints (at span alignment of their upload), rooms do not overlap,
// and each head table entry of a selecting head now points, from the
// call's own ints, at its head's part of the room (h * cap ints in), while
// heads attending every token and calls without a selection are untouched.
func TestSelRoom(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 8))
	var b Backend
	for range 50 {
		bt := &batchAttn{}
		for range 1 + rng.IntN(12) {
			heads := 1 + rng.IntN(8)
			capTokens := 1 + rng.IntN(300)
			base := int32(len(bt.ints))
			// The call's ints: some descriptors, its head table, more ints;
			// a selection's offsets as describe leaves them: right after.
			pre := rng.IntN(40)
			headOff := int32(pre)
			n := pre + 2*heads + rng.IntN(30)
			ints := make([]int32, n)
			for j := range ints {
				ints[j] = rng.Int32N(1000)
			}
			c := batchCall{a: &runtime.AttnArgs{Heads: heads}, base: base, headOff: headOff}
			on := rng.IntN(3) > 0
			if on {
				c.sel = chosenCall{on: true, src: Ptr(0x1000 + rng.IntN(1<<20)*4), bytes: int64(heads*capTokens) * 4, base: int32(n)}
			}
			counts := make([]int32, heads)
			for h := range heads {
				counts[h] = -1
				if on && rng.IntN(4) > 0 {
					counts[h] = rng.Int32N(int32(capTokens)) + 1
				}
				ints[pre+2*h+1] = counts[h]
				if counts[h] >= 0 {
					ints[pre+2*h] = c.sel.base + int32(h*capTokens)
				}
			}
			bt.ints = append(bt.ints, ints...)
			bt.calls = append(bt.calls, c)
		}
		before := append([]int32(nil), bt.ints...)
		room := b.selRoom(bt)
		end := int32(span(int64(len(bt.ints))*4) / 4)
		var used int64
		nsel := 0
		for i := range bt.calls {
			c := &bt.calls[i]
			h := bt.ints[c.base:]
			hb := before[c.base:]
			if !c.sel.on {
				for j := range 2 * c.a.Heads {
					if h[int(c.headOff)+j] != hb[int(c.headOff)+j] {
						t.Fatalf("call %d without a selection: head table changed", i)
					}
				}
				continue
			}
			if c.selAt < end || int64(c.selAt)*4 < int64(end)*4+used || int64(c.selAt-end)*4+c.sel.bytes > room {
				t.Fatalf("call %d: room at %d (ints end at %d, %d bytes placed before, %d in all)", i, c.selAt, end, used, room)
			}
			used = int64(c.selAt-end)*4 + span(c.sel.bytes)
			if k := 3 * nsel; len(bt.selt) < k+3 || bt.selt[k] != uint64(c.selAt) || bt.selt[k+1] != uint64(c.sel.src) || bt.selt[k+2] != uint64(c.sel.bytes/4) {
				t.Fatalf("call %d: copy entry %d of %v, want (%d, %#x, %d)", i, nsel, bt.selt, c.selAt, c.sel.src, c.sel.bytes/4)
			}
			nsel++
			capTokens := int32(c.sel.bytes / 4 / int64(c.a.Heads))
			for hh := range c.a.Heads {
				off, cnt := h[int(c.headOff)+2*hh], h[int(c.headOff)+2*hh+1]
				if cnt < 0 {
					if off != hb[int(c.headOff)+2*hh] {
						t.Fatalf("call %d head %d attends every token, yet its offset moved", i, hh)
					}
					continue
				}
				if got, want := c.base+off, c.selAt+int32(hh)*capTokens; got != want {
					t.Fatalf("call %d head %d: selection at %d of the batch's ints, want %d", i, hh, got, want)
				}
			}
		}
		if len(bt.selt) != 3*nsel {
			t.Fatalf("%d copy entries for %d selections", len(bt.selt)/3, nsel)
		}
	}
}

// TestAccPlan checks accPlan's layout on the fake device: each call with
// Acc gets raw scores of rows*heads x its longest list, maxima and sums of
// rows*heads pairs and sums of heads x its longest sequence, in disjoint
// parts of accWork; the others get none; the attn_rtb_acc table names each
// call's parts, ints, header, stride and AccFrom.
func TestAccPlan(t *testing.T) {
	b := fakeOf(t, "bf16")
	rng := rand.New(rand.NewPCG(9, 4))
	for range 30 {
		bt := &batchAttn{}
		for i := range 1 + rng.IntN(10) {
			heads, kv := 4*(1+rng.IntN(4)), 1+rng.IntN(2)
			seqs := make([]runtime.KVSeq, kv)
			for g := range seqs {
				seqs[g].N = 1 + rng.IntN(2000)
			}
			a := &runtime.AttnArgs{Rows: 1 + rng.IntN(3), Heads: heads, KVHeads: kv, Seqs: seqs, AccFrom: rng.IntN(100)}
			if rng.IntN(3) > 0 {
				a.Acc, a.AccZero = make([][]float32, heads), true
				if rng.IntN(2) == 0 { // a KV head's group summed: a slice a KV head
					a.Acc, a.AccGroup = make([][]float32, kv), true
				}
			}
			bt.calls = append(bt.calls, batchCall{a: a, base: int32(100 * i), hdr: int32(7 * i), longest: rng.IntN(2000)})
		}
		n := b.accPlan(bt)
		type span2 struct{ lo, hi uint64 }
		var parts []span2
		k := 0
		for i := range bt.calls {
			c := &bt.calls[i]
			if c.a.Acc == nil {
				if c.raw != 0 || c.ml != 0 {
					t.Fatalf("call %d without Acc got raw %#x, ml %#x", i, c.raw, c.ml)
				}
				continue
			}
			items := uint64(c.a.Rows * c.a.Heads)
			if c.astride != accStride(c.a) {
				t.Fatalf("call %d: astride %d, want %d", i, c.astride, accStride(c.a))
			}
			acc := uint64(bt.accDev) + uint64(c.accOff)
			parts = append(parts, span2{uint64(c.raw), uint64(c.raw) + items*uint64(max(c.longest, 1))*4},
				span2{uint64(c.ml), uint64(c.ml) + items*8}, span2{acc, acc + uint64(accSlices(c.a)*c.astride)*4})
			e := bt.acct[k*accTabWords : (k+1)*accTabWords]
			grp := uint64(0)
			if c.a.AccGroup {
				grp = 1
			}
			if e[0] != acc || e[1] != uint64(c.raw) || e[2] != uint64(c.ml) || e[3] != uint64(uint32(c.base))|uint64(uint32(c.hdr))<<32 ||
				e[4] != uint64(uint32(c.astride))|uint64(uint32(int32(c.a.AccFrom)))<<32 || e[5] != grp {
				t.Fatalf("call %d: table entry %#x", i, e)
			}
			k++
		}
		if n != k || len(bt.acct) != k*accTabWords {
			t.Fatalf("accPlan counted %d calls, %d table words; want %d", n, len(bt.acct), k)
		}
		for i, p := range parts {
			if p.lo < uint64(b.accWork.p) || p.hi > uint64(b.accWork.p)+uint64(b.accWork.bytes) {
				t.Fatalf("part %d [%#x, %#x) outside accWork", i, p.lo, p.hi)
			}
			for j := range i {
				if q := parts[j]; p.lo < q.hi && q.lo < p.hi {
					t.Fatalf("parts %d and %d overlap", j, i)
				}
			}
		}
		if acc := uint64(bt.accDev); n > 0 && (acc < uint64(b.accWork.p) || acc+uint64(bt.accBytes) > uint64(b.accWork.p)+uint64(b.accWork.bytes)) {
			t.Fatalf("the sums' read [%#x, +%d) outside accWork", acc, bt.accBytes)
		}
	}
}

// TestQueueExtend checks that queued Extends' descriptors are rebased onto
// the queue's pointers: each KV head with tokens to fold names, through its
// page and bounds offsets, the same pointers in the queue as in its own
// call's list; heads with nothing to fold are left as they were.
func TestQueueExtend(t *testing.T) {
	t.Setenv(batchAttnEnv, "") // queued, not launched at once
	b := fakeOf(t, "bf16")
	rng := rand.New(rand.NewPCG(2, 6))
	type head struct {
		fold       bool
		pages      []uint64
		bounds     uint64
		n0, n1, ps int32
	}
	var calls [][]head
	for range 6 {
		var hs []head
		b.hInts, b.hPtrs = b.hInts[:0], b.hPtrs[:0]
		for range 1 + rng.IntN(4) {
			h := head{fold: rng.IntN(4) > 0, n0: rng.Int32N(100), ps: 16}
			kOff, bOff := int32(0), int32(0)
			h.n1 = h.n0
			if h.fold {
				h.n1 = h.n0 + 1 + rng.Int32N(40)
				kOff = int32(len(b.hPtrs))
				for range 1 + rng.IntN(3) {
					p := rng.Uint64()
					h.pages = append(h.pages, p)
					b.hPtrs = append(b.hPtrs, p)
				}
				bOff, h.bounds = int32(len(b.hPtrs)), rng.Uint64()
				b.hPtrs = append(b.hPtrs, h.bounds)
			}
			b.hInts = append(b.hInts, h.n0, h.n1, kOff, h.ps, bOff)
			hs = append(hs, h)
		}
		b.queueExtend(1+rng.IntN(5), 16, 64, kvBF16)
		calls = append(calls, hs)
	}
	q := &b.qq
	i := 0
	for c, hs := range calls {
		for g, h := range hs {
			d := q.xInts[i*qxWords : (i+1)*qxWords]
			i++
			if d[0] != h.n0 || d[1] != h.n1 || d[3] != h.ps {
				t.Fatalf("call %d head %d: descriptor %v", c, g, d)
			}
			if !h.fold {
				continue
			}
			for j, p := range h.pages {
				if q.xPtrs[int(d[2])+j] != p {
					t.Fatalf("call %d head %d: page %d is %#x in the queue, want %#x", c, g, j, q.xPtrs[int(d[2])+j], p)
				}
			}
			if q.xPtrs[d[4]] != h.bounds {
				t.Fatalf("call %d head %d: bounds %#x in the queue, want %#x", c, g, q.xPtrs[d[4]], h.bounds)
			}
		}
	}
	if i*qxWords != len(q.xInts) {
		t.Fatalf("%d descriptors queued, want %d", len(q.xInts)/qxWords, i)
	}
	b.flushQuest()
	if len(q.xInts) != 0 || len(q.xPtrs) != 0 {
		t.Fatal("the queue is not empty after its flush")
	}
}
