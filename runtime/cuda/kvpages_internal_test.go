package cuda

import (
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestAllocKVPages takes pages in bulk across a slab's end and checks them
// against AllocKV's: distinct blocks of the page's class, counted as KV
// memory, each queued for its clear, in the TMA's range; freed, the counts
// return to what they were.
func TestAllocKVPages(t *testing.T) {
	b := fakeOf(t, "bf16")
	const n = 16 * 128 // a page: 16 tokens of head dim 128, 4 KiB in bf16
	one := b.AllocKV(n, runtime.BF16)
	before := b.Memory()
	zeros := len(b.zeros)
	pages := make([]runtime.Buffer, slabBytes/4096+100) // past the first slab's end
	b.AllocKVPages(n, runtime.BF16, pages)
	got := b.Memory()
	if got.KV-before.KV != int64(len(pages))*4096 || got.KVBuffers-before.KVBuffers != len(pages) {
		t.Fatalf("KV %d bytes in %d buffers after %d pages, want %d more bytes and buffers than %+v", got.KV, got.KVBuffers, len(pages), int64(len(pages))*4096, before)
	}
	if len(b.zeros)-zeros != 2*len(pages) {
		t.Fatalf("%d clears queued for %d pages", (len(b.zeros)-zeros)/2, len(pages))
	}
	seen := map[Ptr]bool{b.dev(one).p: true}
	for i, x := range pages {
		d := b.dev(x)
		if d.n != n || d.dtype != runtime.BF16 || d.block != 4096 || d.kind != runtime.MemKV || uint64(d.p)%4096 != 0 {
			t.Fatalf("page %d: %+v", i, *d)
		}
		if seen[d.p] {
			t.Fatalf("page %d: block %#x handed out twice", i, uint64(d.p))
		}
		seen[d.p] = true
		if uint64(d.p) < b.tma.lo || uint64(d.p)+4096 > b.tma.hi {
			t.Fatalf("page %d at %#x outside the TMA's range [%#x, %#x)", i, uint64(d.p), b.tma.lo, b.tma.hi)
		}
	}
	for _, x := range pages {
		b.Free(x)
	}
	if m := b.Memory(); m.KV != before.KV || m.KVBuffers != before.KVBuffers {
		t.Fatalf("after freeing the pages: KV %d bytes in %d buffers, want %+v", m.KV, m.KVBuffers, before)
	}
	// Refused allocations go page by page, through the hook.
	b.FailAllocs(func(kind runtime.MemKind, bytes int64) error { return nil })
	two := make([]runtime.Buffer, 2)
	b.AllocKVPages(n, runtime.BF16, two)
	if two[0] == nil || two[1] == nil || two[0] == two[1] {
		t.Fatalf("pages through the failure hook: %v", two)
	}
}

// TestAllocKVPagesRuns: a bulk request of pages (a sequence's run,
// runtime.KVCache.Hold) lies in one slab, its blocks side by side in
// address order, even where the free blocks on top would straddle a slab's
// end or a gap (single pages taken between the runs); a run of more than a
// quarter of a slab that the blocks on top cannot serve gets a slab of its
// own size. The blocks a run skipped serve later requests, so no more
// slabs are taken than one per run beyond what the blocks fill; freed,
// every slab goes back to the driver (trim).
func TestAllocKVPagesRuns(t *testing.T) {
	b := fakeOf(t, "bf16")
	const n = 16 * 128 // 4 KiB pages
	perSlab := int(slabBytes / 4096)
	slabs0, mem0 := len(b.slab.slabs), b.Memory()
	blocks, own := 0, 0
	var all []runtime.Buffer
	for i := range 40 {
		pages := 1000 + 97*i%900 // 2,000-3,800 blocks: a slab holds 4 to 8
		if i%7 == 3 {
			pages = 2600 + 300*(i%3) // 5,200-5,800 blocks: a slab of its own
			own++
		}
		run := make([]runtime.Buffer, 2*pages)
		b.AllocKVPages(n, runtime.BF16, run)
		blocks += len(run)
		for j := 1; j < len(run); j++ {
			if b.dev(run[j]).p != b.dev(run[j-1]).p.Add(4096) {
				t.Fatalf("run %d: block %d of %d at %#x, block %d at %#x: not side by side", i, j, len(run), uint64(b.dev(run[j]).p), j-1, uint64(b.dev(run[j-1]).p))
			}
		}
		all = append(all, run...)
		for range 1 + i%5 { // single pages between the runs
			all = append(all, b.AllocKV(n, runtime.BF16))
			blocks++
		}
		b.Alloc(1 << 20) // a buffer of its own between the slabs: the next slab is not the last one's neighbour
	}
	if got, most := len(b.slab.slabs)-slabs0, (blocks+perSlab-1)/perSlab+40; got > most {
		t.Fatalf("%d slabs for %d blocks in 40 runs, want at most %d", got, blocks, most)
	}
	if len(b.slab.sizes) == 0 || len(b.slab.sizes) > own { // where the blocks on top could not serve them
		t.Fatalf("%d slabs of their own size for %d runs over a quarter of a slab", len(b.slab.sizes), own)
	}
	for _, x := range all {
		b.Free(x)
	}
	b.slab.trim()
	if m := b.Memory(); len(b.slab.slabs) != slabs0 || len(b.slab.sizes) != 0 || m.KV != mem0.KV {
		t.Fatalf("after freeing every page and trim: %d slabs (%d of their own size), KV %d bytes; want %d slabs, KV %d", len(b.slab.slabs), len(b.slab.sizes), m.KV, slabs0, mem0.KV)
	}
}

// TestTableMovesOncePerPrompt: a prompt appended in chunks to a cache that
// took room for it (KVCache.Room) has its device page table sized for the
// whole prompt at the first chunk: the table moves once, where without the
// room it moves again as the chunks come, and a table's size stays within
// four times what its lists hold.
func TestTableMovesOncePerPrompt(t *testing.T) {
	const chunk, chunks, kvHeads, hd = 1024, 4, 2, 64
	for _, room := range []bool{true, false} {
		b := fakeOf(t, "bf16")
		c, err := runtime.NewKVCacheOf(b, runtime.Config{Layers: 1, KVHeads: kvHeads, HeadDim: hd}, 16, runtime.BF16)
		if err != nil {
			t.Fatal(err)
		}
		if room {
			c.Room(chunk * chunks)
		}
		k, v := b.Alloc(chunk*kvHeads*hd), b.Alloc(chunk*kvHeads*hd)
		pos := make([]int, chunk)
		var sizes []int64
		for i := range chunks {
			for r := range pos {
				pos[r] = i*chunk + r
			}
			c.Append(0, k, v, chunk, pos)
			seqs := c.Seqs(0)
			if !b.refreshSeqs(seqs, nil) {
				t.Fatal("the tables were not refreshed")
			}
			tb := b.table(&seqs[0])
			if pages := int64(len(seqs[0].K)); tb.size < pages || tb.size > 4*max(pages, minTablePages) {
				t.Fatalf("room %v, chunk %d: a table of %d pages for %d", room, i, tb.size, pages)
			}
			sizes = append(sizes, tb.size)
		}
		moves := 0
		for i := 1; i < len(sizes); i++ {
			if sizes[i] != sizes[i-1] {
				moves++
			}
		}
		if (moves == 0) != room {
			t.Errorf("room %v: table sizes %v by chunk, %d moves after the first", room, sizes, moves)
		}
	}
}

// TestMoveKVsAt: an eviction's copies given by page addresses queue the
// same be_kv_ops words as given by page buffers, f32 and bf16 pages, and a
// second eviction of the sequence launches the first either way.
func TestMoveKVsAt(t *testing.T) {
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		b := fakeOf(t, "bf16")
		const ps, hd, pages = 16, 64, 20
		k, v := make([]runtime.Buffer, pages), make([]runtime.Buffer, pages)
		var addr []uint64
		for i := range pages {
			k[i], v[i] = b.AllocKV(ps*hd, dt), b.AllocKV(ps*hd, dt)
			addr = append(addr, b.KVPageAddr(k[i]), b.KVPageAddr(v[i]))
		}
		var moves [][2]int32
		for i := range 50 {
			moves = append(moves, [2]int32{int32(i * 3), int32(pages*ps - 1 - i)})
		}
		b.flushKV()
		b.MoveKVs(k, v, moves, ps, hd)
		want := slices.Clone(b.kv.ops)
		b.flushKV()
		b.MoveKVsAt(addr, moves, ps, hd)
		got := slices.Clone(b.kv.ops)
		if !slices.Equal(got, want) || len(got) != 5*len(moves) {
			t.Fatalf("%v: %d words by address, %d by buffer, or they differ", dt, len(got), len(want))
		}
		l0 := fakeLaunches()
		b.MoveKVsAt(addr, moves[:1], ps, hd) // the same sequence again: the first launches
		if fakeLaunches() != l0+1 || len(b.kv.ops) != 5 {
			t.Fatalf("%v: a second eviction of the sequence did not launch the first (%d words queued)", dt, len(b.kv.ops))
		}
		b.flushKV()
	}
}

// fakeLaunches is the fake device's launches so far.
func fakeLaunches() int64 { l, _, _, _ := FakeCounts(); return l }
