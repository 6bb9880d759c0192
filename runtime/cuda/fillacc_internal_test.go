package cuda

import (
	"slices"
	"testing"
	"unsafe"

	"github.com/kvbench/kvbench/runtime"
)

// TestFillAccView checks fillAcc both ways: copied into the caller's Acc
// (its buffers keep their identity, each head's first N values set), and
// with AccView pointed at the values read back (no copy: each head's slice
// lies in the read buffer at its head's offset, N long and no longer).
func TestFillAccView(t *testing.T) {
	const heads, kvHeads, astride = 8, 2, 40
	vals := make([]float32, heads*astride)
	for i := range vals {
		vals[i] = float32(i)
	}
	seqs := []runtime.KVSeq{{N: 33}, {N: 17}}
	for _, view := range []bool{false, true} {
		own := make([][]float32, heads)
		acc := make([][]float32, heads)
		for h := range own {
			own[h] = make([]float32, 64)
			acc[h] = own[h]
		}
		a := &runtime.AttnArgs{Heads: heads, KVHeads: kvHeads, Seqs: seqs, Acc: acc, AccZero: true, AccView: view}
		fillAcc(a, vals, astride)
		for h := range heads {
			n := seqs[h/(heads/kvHeads)].N
			want := vals[h*astride : h*astride+n]
			got := a.Acc[h]
			if !slices.Equal(got[:n], want) {
				t.Fatalf("view %v head %d: values %v, want %v", view, h, got[:n], want)
			}
			inVals := unsafe.SliceData(got) == &vals[h*astride]
			if view && (!inVals || len(got) != n || cap(got) != n) {
				t.Fatalf("head %d: AccView gave a slice of %d (room %d) in the read buffer %v, want its %d values in place", h, len(got), cap(got), inVals, n)
			}
			if !view && (inVals || unsafe.SliceData(got) != unsafe.SliceData(own[h])) {
				t.Fatalf("head %d: without AccView the sums must land in the caller's buffer", h)
			}
		}
	}
}

// TestFillAccGroup: with AccGroup the values read back are a slice a KV
// head, each its KV head's N long, as views or copies.
func TestFillAccGroup(t *testing.T) {
	const heads, kvHeads, astride = 8, 2, 40
	vals := make([]float32, kvHeads*astride)
	for i := range vals {
		vals[i] = float32(i)
	}
	seqs := []runtime.KVSeq{{N: 33}, {N: 17}}
	for _, view := range []bool{false, true} {
		acc := [][]float32{make([]float32, 33), make([]float32, 17)}
		a := &runtime.AttnArgs{Heads: heads, KVHeads: kvHeads, Seqs: seqs, Acc: acc, AccZero: true, AccView: view, AccGroup: true}
		fillAcc(a, vals, astride)
		for g := range kvHeads {
			if want := vals[g*astride : g*astride+seqs[g].N]; !slices.Equal(a.Acc[g], want) {
				t.Fatalf("view %v, KV head %d: %v, want %v", view, g, a.Acc[g], want)
			}
		}
	}
}
