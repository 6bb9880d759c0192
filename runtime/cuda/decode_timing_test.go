package cuda_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// decodeLengths are the cache lengths TestDecodeAttendTiming times.
var decodeLengths = []int{4096, 16384, 32768, 65536, 131072}

// TestDecodeAttendTiming times one decode step's full attention through the
// runtime (Backend.Attend: one query row of 32 heads over a bf16 paged cache
// of 8 KV heads of 128, pages of 16, built through runtime.KVCache, as
// `kvbench kernels` builds it) at 4K to 128K tokens, and logs the device
// time of one call behind a spin (the upload of Attend's metadata
// included, as `kvbench kernels` times it) and per call of 20 calls in a
// row, with its plan; and Attend alone over caches of one KV head each
// (each head's pages together in memory). All rotate over copies of their
// cache so that the L2 cache holds none between two reads.
// It checks what does not depend on speed: the runtime launches
// attn_rt_d128_g4_bf16 in one wave of resident blocks and its output is
// finite. GPU only; skipped in -short mode (up to 1.1 GB of device memory).
func TestDecodeAttendTiming(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: decode attention timing (GPU, up to 1.1 GB)")
	}
	g := newGPUPrec(t, "bf16")
	k, err := cuda.LoadKernels(g.D)
	if err != nil {
		t.Fatal(err)
	}
	const heads, kvHeads, hd, ps = 32, 8, 128, 16
	t.Logf("%s, %d SMs, L2 %d MiB", g.D.Name, g.D.SMs, g.D.L2Bytes>>20)
	t.Logf("| tokens | Attend alone (us) | Attend in a row (us) | Attend, pages by head, alone (us) |")
	// Longest first, and each length's caches of one KV head built first
	// and freed last: they take the pages the last ones gave back (the
	// backend's free list returns the last freed first), so that each
	// head's pages stay together; the interleaved cache gets fresh slabs
	// at 128K and the interleaved cache's pages after.
	for _, n := range slices.Backward(decodeLengths) {
		tokens := n + 1 // the decode step's own token is cached before it attends
		kvBytes := int64(2 * kvHeads * tokens * hd * 2)
		copies := int(min(16, max(1, (3*int64(g.D.L2Bytes)+kvBytes-1)/kvBytes)))

		// The runtime over caches of one KV head each, filled one after
		// the other: each head's pages lie together in the slabs, to tell
		// the layout's share of the time. One layer per copy.
		one := runtime.Config{Layers: copies, Heads: heads / kvHeads, KVHeads: 1, HeadDim: hd}
		var byHead []*runtime.KVCache
		for range kvHeads {
			c, err := runtime.NewKVCacheOf(g, one, ps, runtime.BF16)
			if err != nil {
				t.Fatal(err)
			}
			fillCache(g, c, one, n)
			byHead = append(byHead, c)
		}
		// The runtime as `kvbench kernels` builds it: one cache of every
		// head, whose pages interleave the heads token group by token group.
		cfg := runtime.Config{Layers: copies, Heads: heads, KVHeads: kvHeads, HeadDim: hd}
		cache, err := runtime.NewKVCacheOf(g, cfg, ps, runtime.BF16)
		if err != nil {
			t.Fatal(err)
		}
		fillCache(g, cache, cfg, n)
		q, out := g.Alloc(heads*hd), g.Alloc(heads*hd)
		g.Write(q, 0, randVec(rand.New(rand.NewPCG(5, uint64(n))), heads*hd, 1))
		args := make([]runtime.AttnArgs, copies)
		for l := range args {
			args[l] = runtime.AttnArgs{Out: out, Q: q, Rows: 1, QPos: []int{n}, Heads: heads, KVHeads: kvHeads, HeadDim: hd,
				Scale: float32(1 / math.Sqrt(hd)), Seqs: cache.Seqs(l)}
		}
		attend := func(i int) { g.Attend(&args[i%copies]) }
		rtAlone := timeAlone(t, g, k, copies, attend)
		plan := g.AttnPlan()
		rtRow := timeInRow(t, g, k, attend)
		res := make([]float32, heads*hd)
		g.Read(res, out, 0)
		for i, v := range res {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("%d tokens: Attend output %d is %v", n, i, v)
			}
		}
		if want := "attn_rt_d128_g4_bf16"; !slices.Contains([]string{want, want + "_short", want + "_tc", want + "_tcc"}, plan.Kernel) {
			t.Errorf("%d tokens: Attend launched %s, want %s", n, plan.Kernel, want)
		}
		if slots := g.D.SMs * plan.Resident; plan.Blocks > slots {
			t.Errorf("%d tokens: Attend's grid of %d blocks takes more than one wave of %d resident blocks (%+v)", n, plan.Blocks, slots, plan)
		}
		for l := range args {
			args[l].Seqs = nil
			for _, c := range byHead {
				args[l].Seqs = append(args[l].Seqs, c.Seqs(l)[0])
			}
		}
		hdAlone := timeAlone(t, g, k, copies, attend)
		cache.Free()
		for _, c := range byHead {
			c.Free()
		}
		g.Free(q)
		g.Free(out)
		t.Logf("| %dK | %.1f | %.1f | %.1f |", n>>10, rtAlone, rtRow, hdAlone)
		t.Logf("  Attend %+v; %d copies", plan, copies)
	}
}

// fillCache appends n+1 tokens of random keys and values at positions 0..n
// (the last: the decode step's own token) to every layer of cache.
func fillCache(g *cuda.Backend, cache *runtime.KVCache, cfg runtime.Config, n int) {
	const chunk = 2048
	rng := rand.New(rand.NewPCG(3, uint64(n)))
	kvDim := cfg.KVDim()
	k, v := g.Alloc(chunk*kvDim), g.Alloc(chunk*kvDim)
	defer g.Free(k)
	defer g.Free(v)
	g.Write(k, 0, randVec(rng, chunk*kvDim, 1))
	g.Write(v, 0, randVec(rng, chunk*kvDim, 1))
	pos := make([]int, chunk)
	for start := 0; start <= n; start += chunk {
		m := min(chunk, n+1-start)
		for i := range m {
			pos[i] = start + i
		}
		for l := range cfg.Layers {
			cache.Append(l, k, v, m, pos[:m])
		}
	}
}

// timeAlone returns the median device time, in microseconds, of one run
// (run(i) on copy i) between two events behind a spin kernel long enough to
// cover the host's share of a run, the device idle before each (as `kvbench
// kernels` times a step).
func timeAlone(t *testing.T, g *cuda.Backend, k *cuda.Kernels, copies int, run func(i int)) float64 {
	host := time.Duration(math.MaxInt64)
	for i := range max(5, copies) {
		t0 := time.Now()
		run(i)
		host = min(host, time.Since(t0))
	}
	sync := g.Alloc(1)
	defer g.Free(sync)
	tmp := make([]float32, 1)
	spin := max(200*time.Microsecond, 3*host)
	var us []float64
	for i := range 30 {
		g.Read(tmp, sync, 0)
		if err := k.Spin(spin.Nanoseconds()); err != nil {
			t.Fatal(err)
		}
		m0 := g.Mark()
		run(i)
		m1 := g.Mark()
		us = append(us, float64(g.Elapsed(m0, m1).Nanoseconds())/1e3)
		g.ClearMarks()
	}
	slices.Sort(us)
	return us[len(us)/2]
}

// timeInRow returns the device time per run, in microseconds, of 20 runs
// queued one after another (rotating over the copies) behind a spin kernel
// that covers the host's share of queuing them: the best of 5.
func timeInRow(t *testing.T, g *cuda.Backend, k *cuda.Kernels, run func(i int)) float64 {
	const n = 20
	sync := g.Alloc(1)
	defer g.Free(sync)
	tmp := make([]float32, 1)
	host := time.Duration(math.MaxInt64)
	for range 3 {
		g.Read(tmp, sync, 0)
		t0 := time.Now()
		for i := range n {
			run(i)
		}
		host = min(host, time.Since(t0))
	}
	spin := max(500*time.Microsecond, 3*host)
	best := math.Inf(1)
	for range 5 {
		g.Read(tmp, sync, 0)
		if err := k.Spin(spin.Nanoseconds()); err != nil {
			t.Fatal(err)
		}
		m0 := g.Mark()
		for i := range n {
			run(i)
		}
		m1 := g.Mark()
		best = min(best, float64(g.Elapsed(m0, m1).Nanoseconds())/1e3/n)
		g.ClearMarks()
	}
	return best
}
