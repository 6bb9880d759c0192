package cuda

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestPageArith checks pageArith against a walk of the lists: on the fake
// device, sequences take pages in one bulk allocation (one stride), one
// at a time, in reverse, or lose pages from their end or start (a new
// generation), and after every refresh the address and stride pageArith
// gives must name every page of both lists where it gives a stride, and
// must give one wherever the lists are one stride apart.
func TestPageArith(t *testing.T) {
	b := fakeOf(t, "bf16")
	rng := rand.New(rand.NewPCG(4, 2))
	const n = 16 * 64
	bulk := func(count int) (k, v []runtime.Buffer) {
		bufs := make([]runtime.Buffer, 2*count)
		b.AllocKVPages(n, runtime.BF16, bufs)
		for i := range count {
			k, v = append(k, bufs[2*i]), append(v, bufs[2*i+1])
		}
		return k, v
	}
	addr := func(x runtime.Buffer) uint64 { p, _ := b.kvPage(x); return uint64(p) }
	seqs := make([]runtime.KVSeq, 6)
	for i := range seqs {
		seqs[i] = runtime.KVSeq{PageSize: 16, ID: uint64(500 + i)}
	}
	found := 0
	for step := range 600 {
		s := &seqs[rng.IntN(len(seqs))]
		switch rng.IntN(7) {
		case 0, 1: // a prompt's chunk: pages in one call
			k, v := bulk(1 + rng.IntN(40))
			s.K, s.V = append(s.K, k...), append(s.V, v...)
		case 2: // a decode step's page
			s.K, s.V = append(s.K, b.AllocKV(n, runtime.BF16)), append(s.V, b.AllocKV(n, runtime.BF16))
		case 3: // pages in one call, the lists reversed (negative stride)
			k, v := bulk(2 + rng.IntN(10))
			slices.Reverse(k)
			slices.Reverse(v)
			s.K, s.V, s.Gen = k, v, s.Gen+1
		case 4: // the last pages dropped
			m := rng.IntN(len(s.K) + 1)
			s.K, s.V, s.Gen = s.K[:m], s.V[:m], s.Gen+1
		case 5: // the first page dropped (a window's eviction)
			if len(s.K) > 0 {
				s.K, s.V, s.Gen = slices.Clone(s.K[1:]), slices.Clone(s.V[1:]), s.Gen+1
			}
		case 6: // a fresh sequence
			k, v := bulk(1 + rng.IntN(30))
			s.K, s.V, s.Gen = k, v, s.Gen+1
		}
		s.N = 16 * len(s.K)
		b.pt.clock++
		b.refresh(s)
		b.pt.runs, b.pt.host = b.pt.runs[:0], b.pt.host[:0]
		kb, vb, st := b.pageArith(b.table(s))
		want := len(s.K) > 0 // one stride through both lists
		var d int64
		if len(s.K) > 1 {
			d = int64(addr(s.K[1]) - addr(s.K[0]))
		}
		for i := range s.K {
			want = want && addr(s.K[i]) == addr(s.K[0])+uint64(d*int64(i)) && addr(s.V[i]) == addr(s.V[0])+uint64(d*int64(i))
		}
		if st == 0 {
			if want {
				t.Fatalf("step %d: %d pages one stride (%d) apart, no stride given", step, len(s.K), d)
			}
			continue
		}
		found++
		for i := range s.K {
			if k, v := kb+uint64(int64(st)*int64(i)), vb+uint64(int64(st)*int64(i)); k != addr(s.K[i]) || v != addr(s.V[i]) {
				t.Fatalf("step %d: page %d of %d at %#x and %#x, pageArith says %#x and %#x", step, i, len(s.K), addr(s.K[i]), addr(s.V[i]), k, v)
			}
		}
	}
	if found < 100 {
		t.Fatalf("only %d of 600 steps had lists one stride apart: the test saw too few", found)
	}
	b.split.noArith = true // KVBENCH_ATTN_ARITH=off
	for i := range seqs {
		if _, _, st := b.pageArith(b.table(&seqs[i])); st != 0 {
			t.Fatalf("sequence %d: stride %d with the arithmetic off", i, st)
		}
	}
}
