package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestFlashPrefillTiming times the runtime's prefill attention (one Attend
// of L rows over a paged bf16 cache of L tokens, causal, built through
// runtime.KVCache) at the shapes of bench/sdpa_prefill.py, and prints
// TFLOP/s (4 * L^2/2 * headDim * heads operations). It runs only with
// KVBENCH_FLASH_BENCH=lengths (e.g. 4096,16384,32768) on a GPU.
func TestFlashPrefillTiming(t *testing.T) {
	spec := os.Getenv("KVBENCH_FLASH_BENCH")
	if spec == "" {
		t.Skip("set KVBENCH_FLASH_BENCH=4096,16384 to time the prefill attention")
	}
	var lens []int
	for _, f := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 16 {
			t.Fatalf("KVBENCH_FLASH_BENCH: bad length %q", f)
		}
		lens = append(lens, n)
	}
	g := newGPUPrec(t, "bf16")
	rng := rand.New(rand.NewPCG(1, 1))
	fmt.Printf("| shape | L | ms | TFLOP/s |\n|---|---:|---:|---:|\n")
	for _, sh := range []struct {
		name               string
		heads, kvHeads, hd int
	}{{"1B 32/8 d64", 32, 8, 64}, {"8B 32/8 d128", 32, 8, 128}} {
		for _, L := range lens {
			c := &runtime.Config{Dim: sh.heads * sh.hd, Layers: 1, Heads: sh.heads, KVHeads: sh.kvHeads, HeadDim: sh.hd, Vocab: 16, Hidden: 16}
			cache, err := runtime.NewKVCacheOf(g, *c, 16, runtime.BF16)
			if err != nil {
				t.Fatal(err)
			}
			kvDim := sh.kvHeads * sh.hd
			k, v := g.Alloc(L*kvDim), g.Alloc(L*kvDim)
			g.Write(k, 0, randVec(rng, L*kvDim, 1))
			g.Write(v, 0, randVec(rng, L*kvDim, 1))
			pos := make([]int, L)
			for i := range pos {
				pos[i] = i
			}
			cache.Append(0, k, v, L, pos)
			q, out := g.Alloc(L*sh.heads*sh.hd), g.Alloc(L*sh.heads*sh.hd)
			g.Write(q, 0, randVec(rng, L*sh.heads*sh.hd, 1))
			a := &runtime.AttnArgs{Out: out, Q: q, Rows: L, QPos: pos, Heads: sh.heads, KVHeads: sh.kvHeads, HeadDim: sh.hd,
				Scale: float32(1 / math.Sqrt(float64(sh.hd))), Seqs: cache.Seqs(0)}
			var ms []float64
			for i := range 6 {
				m0 := g.Mark()
				g.Attend(a)
				m1 := g.Mark()
				d := g.Elapsed(m0, m1)
				g.ClearMarks()
				if i > 0 {
					ms = append(ms, float64(d.Microseconds())/1e3)
				}
			}
			sort.Float64s(ms)
			med := ms[len(ms)/2]
			flops := 4 * float64(L) * float64(L) / 2 * float64(sh.hd) * float64(sh.heads)
			fmt.Printf("| %s | %d | %.2f | %.0f |\n", sh.name, L, med, flops/med/1e9)
			cache.Reset()
			g.Free(k)
			g.Free(v)
			g.Free(q)
			g.Free(out)
		}
	}
}
