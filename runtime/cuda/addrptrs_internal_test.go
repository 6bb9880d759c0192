package cuda

import (
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestAddrPtrs (fake device): a sequence's page pointers taken from its page
// addresses (addrPtrs, Extend's) are the ones its buffers give (pagePtrs),
// with the same page type, for f32 and bf16 pages; and a sequence without
// whole addresses gives none (Extend takes the buffers then).
func TestAddrPtrs(t *testing.T) {
	for _, typ := range []string{"f32", "bf16"} {
		t.Run(typ, func(t *testing.T) {
			b := fakeOf(t, typ)
			kt := runtime.BF16
			if typ == "f32" {
				kt = runtime.F32
			}
			seqs := filledSeqsOf(t, b, runtime.Config{Arch: "llama", Dim: 256, Hidden: 512, Layers: 1, Heads: 4, KVHeads: 2, HeadDim: 64,
				Vocab: 100, MaxSeq: 4096, RopeTheta: 1e4, NormEps: 1e-5}, 300, kt)
			for _, s := range seqs {
				a := s.PageAddrs()
				if a == nil {
					t.Fatal("a sequence of the cache has no page addresses")
				}
				for _, r := range [][2]int{{0, len(s.K)}, {3, 4}, {len(s.K) - 1, len(s.K)}} {
					b.hPtrs, b.kvt = b.hPtrs[:0], -1
					b.pagePtrs(s.K[r[0]:r[1]])
					want, wantT := slices.Clone(b.hPtrs), b.kvt
					b.hPtrs, b.kvt = b.hPtrs[:0], -1
					off := b.addrPtrs(a, r[0], r[1])
					if off != 0 || !slices.Equal(b.hPtrs, want) || b.kvt != wantT {
						t.Errorf("pages %v: addrPtrs gave %x (type %d, offset %d), pagePtrs %x (type %d)", r, b.hPtrs, b.kvt, off, want, wantT)
					}
				}
				s.K = append(s.K[:len(s.K):len(s.K)], s.K[0]) // one page more than addresses
				if s.PageAddrs() != nil {
					t.Error("a sequence with more pages than addresses gave its addresses")
				}
			}
		})
	}
}
