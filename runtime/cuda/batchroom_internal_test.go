package cuda

import (
	"math/rand/v2"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestSelAt checks selAt's header words on random selections: the address
// rt_sel forms from them for a head's offset (chosenHead's: the
// selection's base plus the head's place, h * cap ints in) is that head's
// part of the selection where Quest's kernel left it; a call without a
// device selection writes 0 (the selections are in its ints).
func TestSelAt(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 8))
	h := make([]int32, rhWords)
	for range 200 {
		cs := chosenCall{on: true, src: Ptr(0x7f00_0000_0000 + rng.Int64N(1<<36)*4), base: rng.Int32N(5000)}
		capTokens, heads := 1+rng.IntN(4096), 1+rng.IntN(64)
		selAt(h, cs)
		a := uint64(uint32(h[rhSel])) | uint64(uint32(h[rhSel+1]))<<32 // rt_sel's reading
		if a == 0 {
			t.Fatalf("selection at %#x: header reads none", cs.src)
		}
		for range 4 {
			hh := rng.IntN(heads)
			off := cs.base + int32(hh*capTokens)
			if got, want := a+4*uint64(uint32(off)), uint64(cs.src)+4*uint64(hh*capTokens); got != want {
				t.Fatalf("selection at %#x (base %d), head %d: rt_sel reads %#x, want %#x", cs.src, cs.base, hh, got, want)
			}
		}
		selAt(h, chosenCall{})
		if h[rhSel] != 0 || h[rhSel+1] != 0 {
			t.Fatalf("no selection: header words %d, %d", h[rhSel], h[rhSel+1])
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
