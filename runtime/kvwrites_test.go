package runtime_test

import (
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// TestKVSeqWrites: KVCache counts every write into a sequence's slots, a
// token appended or moved one, and never lowers the count: appends one by
// one and as rows, an eviction that moves the last token into the hole
// (one), one of the last token (none), a batch eviction (its copies), and
// a reset.
func TestKVSeqWrites(t *testing.T) {
	be := cpu.New(0)
	c := runtime.Config{Arch: "llama", Dim: 64, Hidden: 128, Layers: 1, Heads: 2, KVHeads: 2, HeadDim: 32, Vocab: 100, MaxSeq: 4096,
		RopeTheta: 1e4, NormEps: 1e-5}
	kc := runtime.NewKVCache(be, c, 16)
	k, v := be.Alloc(40*c.KVDim()), be.Alloc(40*c.KVDim())
	pos := 0
	add := func(rows int) {
		p := make([]int, rows)
		for i := range p {
			p[i] = pos
			pos++
		}
		kc.Append(0, k, v, rows, p)
	}
	check := func(what string, writes uint64, n int) {
		t.Helper()
		s := kc.Seqs(0)[1]
		if s.Writes != writes || s.N != n {
			t.Fatalf("after %s: Writes %d, N %d; want %d, %d", what, s.Writes, s.N, writes, n)
		}
	}
	add(1)
	check("one token", 1, 1)
	add(30)
	check("30 rows", 31, 31)
	kc.Evict(0, 1, []int32{5})
	check("an eviction that moves the last token", 32, 30)
	kc.Evict(0, 1, []int32{29})
	check("the eviction of the last token", 32, 29)
	kc.Evict(0, 1, []int32{0, 1, 2, 27, 28})
	check("a batch eviction (three moves into the first slots)", 35, 24)
	kc.Reset()
	check("a reset", 35, 0)
	add(2)
	check("two more", 37, 2)
}
