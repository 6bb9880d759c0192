package cuda

import (
	"math/rand/v2"
	"testing"
)

// TestReadFloor checks that the floor kernel runs over sizes that are not a
// multiple of its unrolled step.
func TestReadFloor(t *testing.T) {
	k := gpu(t)
	d := k.D
	sink := devOut(t, d, 1)
	for _, bytes := range []int64{16, 16 * 1000, 64 << 20} {
		src, err := d.Alloc(bytes)
		if err != nil {
			t.Fatal(err)
		}
		if err := k.ReadFloor(src, bytes, sink); err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(); err != nil {
			t.Fatal(err)
		}
		_ = d.Free(src)
	}
	if err := k.ReadFloor(0, 15, sink); err == nil {
		t.Fatal("15 bytes accepted")
	}
}

// TestSplitFloor checks the split floor's merged partials against the
// host's (integers, so any order of summation gives them exactly) under
// both merges, twice in a row (the fused one leaves its counters at zero),
// the unmerged partials of FloorNone,
// on rows whose chunks are not a multiple of the unrolled step, and that
// rows of a size that is not a multiple of 16 bytes are refused.
func TestSplitFloor(t *testing.T) {
	k := gpu(t)
	d := k.D
	const rows, chunks, np, rowWords = 3, 7, 520, 9000
	words := make([]uint32, rows*rowWords*4)
	rng := rand.New(rand.NewPCG(5, 11))
	for i := range words {
		words[i] = rng.Uint32()
	}
	src, err := d.Alloc(int64(len(words)) * 4)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free(src)
	if err := Upload(d, src, words); err != nil {
		t.Fatal(err)
	}
	want, wantPart := make([]float32, rows*np), make([]float32, rows*chunks*np)
	for r := range rows {
		for c := range chunks {
			lo, hi := rowWords*c/chunks, rowWords*(c+1)/chunks
			for j := range np {
				x := uint32(0)
				for i := lo + j%floorThreads; i < hi; i += floorThreads {
					w := words[(r*rowWords+i)*4:]
					x ^= w[0] ^ w[1] ^ w[2] ^ w[3]
				}
				p := float32(x&255) + float32(j)
				wantPart[(r*chunks+c)*np+j] = p
				want[r*np+j] += p
			}
		}
	}
	f, err := k.NewSplitFloor(rows, chunks, np)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Free()
	for _, mode := range []int{FloorCombine, FloorFused, FloorFused, FloorNone, FloorCombine} {
		if err := d.PoisonF32(f.out, int64(rows*np)); err != nil {
			t.Fatal(err)
		}
		if err := d.PoisonF32(f.part, int64(rows*chunks*np)); err != nil {
			t.Fatal(err)
		}
		if err := f.Launch(src, rowWords*16, mode); err != nil {
			t.Fatal(err)
		}
		got, exp, what := f.Out, want, "out"
		if mode == FloorNone {
			got, exp, what = f.Parts, wantPart, "part"
		}
		vals, err := got()
		if err != nil {
			t.Fatal(err)
		}
		for i := range exp {
			if vals[i] != exp[i] {
				t.Fatalf("merge %d: %s[%d] = %v, want %v", mode, what, i, vals[i], exp[i])
			}
		}
	}
	if err := f.Launch(src, 24, FloorCombine); err == nil {
		t.Error("rows of 24 bytes accepted")
	}
	if err := f.Launch(src, rowWords*16, FloorNone+1); err == nil {
		t.Error("an unknown merge accepted")
	}
}
