package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// roundBF16 rounds a float32 to the nearest bf16 (ties to even), as a float32.
func roundBF16(f float32) float32 {
	x := math.Float32bits(f)
	x = (x + 0x7fff + (x>>16)&1) &^ 0xffff
	return math.Float32frombits(x)
}

// buildSeq stores n tokens of random keys and values for one KV head through
// StoreKV on both backends: float32 pages on the CPU (holding the values as
// the GPU's pages hold them, rounded to bf16 when t is BF16) and pages of
// type t on the GPU.
func buildSeq(t *testing.T, c *cpu.Backend, g *cuda.Backend, rng *rand.Rand, n, ps, hd int, typ runtime.DType) kvPair {
	t.Helper()
	var kv kvPair
	kv.c.N, kv.c.PageSize, kv.g.N, kv.g.PageSize = n, ps, n, ps
	k, v := randVec(rng, n*hd, 1), randVec(rng, n*hd, 1)
	kg, vg := g.Alloc(n*hd), g.Alloc(n*hd)
	g.Write(kg, 0, k)
	g.Write(vg, 0, v)
	if typ == runtime.BF16 {
		for i := range k {
			k[i], v[i] = roundBF16(k[i]), roundBF16(v[i])
		}
	}
	for p := 0; p*ps < n; p++ {
		kc, vc := c.Alloc(ps*hd), c.Alloc(ps*hd)
		hi := min(n, (p+1)*ps)
		c.Write(kc, 0, k[p*ps*hd:hi*hd])
		c.Write(vc, 0, v[p*ps*hd:hi*hd])
		kv.c.K, kv.c.V = append(kv.c.K, kc), append(kv.c.V, vc)
		kp, vp := g.AllocKV(ps*hd, typ), g.AllocKV(ps*hd, typ)
		kv.g.K, kv.g.V = append(kv.g.K, kp), append(kv.g.V, vp)
	}
	// Store in a shuffled order so that the batched copies are not in order.
	for _, tok := range rng.Perm(n) {
		g.StoreKV(kv.g.K[tok/ps], kv.g.V[tok/ps], tok%ps, kg, vg, tok, 0, hd, hd)
	}
	pos := make([]int32, n)
	for i := range pos {
		pos[i] = int32(2 * i)
	}
	kv.c.Pos, kv.g.Pos = pos, pos
	g.Free(kg)
	g.Free(vg)
	return kv
}

// TestBackendAttendSplit checks Attend's split-KV path (and its merge and
// on-device accumulation) against the CPU backend on random inputs: decode
// and prefill rows, contexts from 1 token to several chunks, GQA, selections,
// accumulation onto non-zero values, re-positioned keys (shifts), float32
// and bf16 pages.
func TestBackendAttendSplit(t *testing.T) {
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(3, 9))
	worst := 0.0
	for _, typ := range []runtime.DType{runtime.F32, runtime.BF16} {
		for _, hd := range []int{64, 128} {
			for _, n := range []int{1, 37, 700, 5000} {
				for _, rows := range []int{1, 3, 19} {
					if n > 700 && rows > 3 && hd == 128 {
						continue
					}
					name := fmt.Sprintf("%v/hd%d/n%d/rows%d", typ, hd, n, rows)
					heads, kvHeads := 8, 2
					var seqs []kvPair
					for range kvHeads {
						seqs = append(seqs, buildSeq(t, c, g, rng, n, 16, hd, typ))
					}
					qpos := make([]int, rows)
					for r := range qpos {
						// The last rows see everything; earlier ones part (masked tokens).
						qpos[r] = 2*n - 1 - 3*(rows-1-r)
					}
					q := newPair(c, g, randVec(rng, rows*heads*hd, 2))
					shifts := make([][]int32, kvHeads)
					for i := range shifts {
						for range n {
							shifts[i] = append(shifts[i], int32(rng.IntN(5)))
						}
					}
					qshift := make([]int, rows)
					for r := range qshift {
						qshift[r] = rng.IntN(3) - 1
					}
					for _, opt := range []string{"plain", "sel+acc", "shift"} {
						out := newPair(c, g, make([]float32, rows*heads*hd))
						init := randVec(rng, heads*n, 1)
						mk := func(gpu bool) *runtime.AttnArgs {
							a := &runtime.AttnArgs{Rows: rows, QPos: qpos, Heads: heads, KVHeads: kvHeads, HeadDim: hd,
								Scale: float32(1 / math.Sqrt(float64(hd)))}
							a.Q, a.Out = q.c, out.c
							if gpu {
								a.Q, a.Out = q.g, out.g
							}
							for i := range seqs {
								sq := seqs[i].c
								if gpu {
									sq = seqs[i].g
								}
								if opt == "shift" {
									sq.Shift = shifts[i]
								}
								a.Seqs = append(a.Seqs, sq)
							}
							if opt == "shift" {
								a.QShift, a.Rope, a.Theta = qshift, runtime.RopeHalf, 1e4
								if hd == 128 {
									a.Rope = runtime.RopeInterleaved
								}
							}
							if opt == "sel+acc" {
								r := rand.New(rand.NewPCG(uint64(n), uint64(rows)))
								a.Sel = make([][]int32, heads)
								a.Sel[1] = []int32{int32(n - 1)}
								a.Sel[2] = []int32{}
								for _, x := range r.Perm(n)[:n/2+1] {
									a.Sel[5] = append(a.Sel[5], int32(x))
								}
								a.Acc = make([][]float32, heads)
								for h := range a.Acc {
									a.Acc[h] = slices.Clone(init[h*n : (h+1)*n])
								}
								a.AccFrom = qpos[rows/2]
							}
							return a
						}
						ac, ag := mk(false), mk(true)
						c.Attend(ac)
						g.Attend(ag)
						oc, og := read(c, out.c), read(g, out.g)
						d := relDiff(og, oc)
						worst = max(worst, d)
						if d > 2e-5 {
							t.Errorf("%s %s: output relative difference %.3g", name, opt, d)
						}
						for h := range ac.Acc {
							if d := relDiff(ag.Acc[h], ac.Acc[h]); d > 2e-5 {
								t.Errorf("%s %s: Acc[%d] relative difference %.3g", name, opt, h, d)
							}
						}
					}
				}
			}
			// Page contents: bf16 pages hold the values rounded to nearest even.
			seq := buildSeq(t, c, g, rng, 40, 16, hd, typ)
			lc, hc, lg, hg := make([]float32, hd), make([]float32, hd), make([]float32, hd), make([]float32, hd)
			c.KeyBounds(&seq.c, 3, 40, lc, hc)
			g.KeyBounds(&seq.g, 3, 40, lg, hg)
			if !slices.Equal(lc, lg) || !slices.Equal(hc, hg) {
				t.Errorf("%v hd %d: key bounds of the stored pages differ from the rounded values", typ, hd)
			}
		}
	}
	t.Logf("split attention: worst relative difference to the CPU %.3g", worst)
}

// TestBackendKVBatch checks that queued StoreKV/MoveKV copies that depend on
// each other (a cache's eviction chain after an append) run in order.
func TestBackendKVBatch(t *testing.T) {
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(4, 4))
	for _, typ := range []runtime.DType{runtime.F32, runtime.BF16} {
		hd := 16
		seq := buildSeq(t, c, g, rng, 48, 8, hd, typ)
		src := newPair(c, g, randVec(rng, 2*hd, 1))
		if typ == runtime.BF16 {
			v := randVec(rng, 2*hd, 1)
			for i := range v {
				v[i] = roundBF16(v[i])
			}
			src = newPair(c, g, v)
		}
		ops := func(be runtime.Backend, s runtime.KVSeq, k runtime.Buffer) {
			// Append into slot 47, then evict 46 and 45 as the cache does
			// (the last token moves into each freed slot), then a move whose
			// source was just written.
			be.StoreKV(s.K[5], s.V[5], 7, k, k, 1, 0, hd, hd)
			be.MoveKV(s.K[5], s.V[5], 6, s.K[5], s.V[5], 7, hd)
			be.MoveKV(s.K[5], s.V[5], 5, s.K[5], s.V[5], 6, hd)
			be.MoveKV(s.K[0], s.V[0], 0, s.K[5], s.V[5], 5, hd)
			be.StoreKV(s.K[5], s.V[5], 5, k, k, 0, 0, hd, hd)
		}
		ops(c, seq.c, src.c)
		ops(g, seq.g, src.g)
		// Slots 6 and 7 of page 5 were the sources of moves: they hold
		// nothing after them (MoveKV's contract), and the GPU skips the
		// store into 7 that only the move read.
		emptied := func(p, slot int) bool { return p == 5 && slot >= 6 }
		for p := range seq.c.K {
			if typ == runtime.BF16 {
				// read returns float32 words: compare through key bounds instead.
				lo, hi, wlo, whi := make([]float32, hd), make([]float32, hd), make([]float32, hd), make([]float32, hd)
				for slot := 0; slot < 8; slot++ {
					if emptied(p, slot) {
						continue
					}
					c.KeyBounds(&seq.c, p*8+slot, p*8+slot+1, wlo, whi)
					g.KeyBounds(&seq.g, p*8+slot, p*8+slot+1, lo, hi)
					if !slices.Equal(lo, wlo) {
						t.Fatalf("bf16 page %d slot %d: %v, want %v", p, slot, lo, wlo)
					}
				}
				continue
			}
			got, want := read(g, seq.g.K[p]), read(c, seq.c.K[p])
			for slot := 0; slot < 8; slot++ {
				if gs, ws := got[slot*hd:(slot+1)*hd], want[slot*hd:(slot+1)*hd]; !emptied(p, slot) && !slices.Equal(gs, ws) {
					t.Fatalf("%v page %d slot %d: %v, want %v", typ, p, slot, gs, ws)
				}
			}
		}
	}
}

// TestBackendBF16Model runs gutenberg-llama-25m with bf16 KV pages on the GPU
// against float32 pages on the CPU: the logits stay close (bf16 keeps 8 bits
// of mantissa) and the cache holds half the bytes.
func TestBackendBF16Model(t *testing.T) {
	g := newGPU(t)
	m, err := runtime.Load(fixtures.Path(t, "models/gutenberg-llama-25m"))
	if err != nil {
		t.Fatal(err)
	}
	c := cpu.New(0)
	defer c.Close()
	rc, err := runtime.NewRunner(m, c, 64)
	if err != nil {
		t.Fatal(err)
	}
	rg, err := runtime.NewRunnerWith(m, g, runtime.RunnerOptions{MaxRows: 64, KVType: runtime.BF16})
	if err != nil {
		t.Fatal(err)
	}
	var times []time.Duration
	rg.OnAttend = func(_, rows int, d time.Duration) {
		if rows == 1 {
			times = append(times, d)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	vocab := m.Config.Vocab
	prompt := make([]int, 300)
	for i := range prompt {
		prompt[i] = 3 + rng.IntN(vocab-3)
	}
	lc, lg := make([]float32, vocab), make([]float32, vocab)
	if err := rc.Forward(prompt, lc); err != nil {
		t.Fatal(err)
	}
	if err := rg.Forward(prompt, lg); err != nil {
		t.Fatal(err)
	}
	worst := relDiff(lg, lc)
	for i := range 50 {
		tok := []int{3 + (i*7919)%(vocab-3)}
		if err := rc.Forward(tok, lc); err != nil {
			t.Fatal(err)
		}
		if err := rg.Forward(tok, lg); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, relDiff(lg, lc))
	}
	t.Logf("bf16 KV pages: max relative logit difference to float32 pages %.3g over a 300-token prompt and 50 steps", worst)
	if worst > 3e-2 {
		t.Errorf("bf16 KV logits differ by %.3g relative", worst)
	}
	if got, want := rg.Cache.ResidentBytes()*2, rc.Cache.ResidentBytes(); got != want {
		t.Errorf("bf16 cache holds %d bytes, float32 %d: not half", got/2, want)
	}
	if len(times) != 50*m.Config.Layers {
		t.Fatalf("OnAttend reported %d decode times, want %d", len(times), 50*m.Config.Layers)
	}
	slices.Sort(times)
	t.Logf("attention per layer and decode step (device events): median %v, max %v", times[len(times)/2], times[len(times)-1])
	if times[0] <= 0 || times[len(times)-1] > time.Second {
		t.Errorf("device attention times out of range: %v .. %v", times[0], times[len(times)-1])
	}
	if _, err := runtime.NewRunnerWith(m, c, runtime.RunnerOptions{KVType: runtime.BF16}); err == nil {
		t.Error("the CPU backend accepted bf16 KV pages")
	}
}

// TestBackendReplay decodes with and without CUDA graph replay: the logits
// are identical; the decode rates (and the CPU's) are logged.
func TestBackendReplay(t *testing.T) {
	m, err := runtime.Load(fixtures.Path(t, "models/gutenberg-llama-25m"))
	if err != nil {
		t.Fatal(err)
	}
	vocab := m.Config.Vocab
	prompt := spreadTokens(1000, vocab)
	const steps = 200
	run := func(be runtime.Backend) ([]float32, time.Duration) {
		r, err := runtime.NewRunner(m, be, 256)
		if err != nil {
			t.Fatal(err)
		}
		logits := make([]float32, vocab)
		if err := r.Forward(prompt, logits); err != nil {
			t.Fatal(err)
		}
		var all []float32
		t0 := time.Now()
		for i := range steps {
			if err := r.Forward([]int{3 + i%100}, logits); err != nil {
				t.Fatal(err)
			}
			all = append(all, logits...)
		}
		return all, time.Since(t0)
	}
	t.Setenv("KVBENCH_GRAPHS", "on")
	on, ton := run(newGPU(t))
	t.Setenv("KVBENCH_GRAPHS", "off")
	off, toff := run(newGPU(t))
	if !slices.Equal(on, off) {
		t.Errorf("logits with graph replay differ from direct launches (relative %.3g)", relDiff(on, off))
	}
	c := cpu.New(0)
	defer c.Close()
	want, tc := run(c)
	t.Logf("decode at 1000-1200 tokens of context, %d steps: graphs %.0f tokens/s, direct launches %.0f tokens/s, CPU (%s) %.0f tokens/s; GPU vs CPU logits %.3g",
		steps, steps/ton.Seconds(), steps/toff.Seconds(), c.Device(), steps/tc.Seconds(), relDiff(on, want))
}
