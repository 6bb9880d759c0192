package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// flashTol is the relative error allowed to the tensor-core prefill
// attention against the float32 CPU: queries, keys, values and
// probabilities are rounded to bf16 (relative 2^-9 each), accumulation is
// float32. Measured errors are near 4e-3; a wrong mask or a lost tile gives
// errors of order 1.
const flashTol = 2e-2

// TestFlashPrefill compares the tensor-core prefill attention (bf16
// precision, 16+ rows, no policy option) with the CPU's float32 attention on
// random inputs: head dims 64 and 128, GQA groups 1, 4 and 8, page sizes 16
// and 7, row counts that do not fill a tile, positions with gaps, queries
// at and past the cached tokens, and keys out of position order.
//
// Cases marked bounded carry KVSeq.Bounded with every row at or past the
// keys' largest position, so no positions are uploaded.
func TestFlashPrefill(t *testing.T) {
	for _, variant := range []string{"", "w4m2n64", "g2n128kw"} {
		t.Run("flash="+variant, func(t *testing.T) { testFlashPrefill(t, variant) })
	}
}

// newGPUFlash is newGPUPrec at bf16 with KVBENCH_FLASH=variant ("" the
// device's default); it skips a wgmma variant on a device without wgmma.
func newGPUFlash(t *testing.T, variant string) *cuda.Backend {
	t.Helper()
	t.Setenv("KVBENCH_FLASH", variant)
	if ok, why := cuda.Available(); ok {
		if b, err := cuda.NewBackend(0); err != nil && strings.Contains(err.Error(), "needs a Hopper GPU") {
			t.Skip(err)
		} else if err == nil {
			_ = b.Close()
		} else {
			t.Fatal(err)
		}
	} else {
		t.Skip("no CUDA device: " + why)
	}
	return newGPUPrec(t, "bf16")
}

func testFlashPrefill(t *testing.T, variant string) {
	g := newGPUFlash(t, variant)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(11, 12))
	for _, tc := range []struct {
		hd, heads, kvHeads, rows, n, ps int
		shuffle, bounded                bool // bounded: every row past every key, positions not uploaded
	}{
		{64, 4, 4, 16, 16, 16, false, false},
		{64, 8, 2, 70, 200, 16, false, false},
		{128, 8, 2, 33, 129, 16, false, false},
		{128, 32, 4, 130, 300, 7, false, false},
		{128, 16, 2, 64, 64, 16, false, false},
		{64, 4, 1, 40, 90, 16, true, false},
		{128, 4, 2, 200, 1000, 16, false, false},
		{128, 8, 2, 48, 300, 16, false, true},
		{64, 8, 8, 1, 100, 16, false, true}, // one row: the split-KV kernel without positions
		{64, 8, 2, 600, 2000, 16, false, false},
		{128, 4, 1, 150, 400, 4, false, false},
		{128, 8, 4, 300, 520, 8, true, false},
	} {
		name := fmt.Sprintf("hd%d_%dx%d_rows%d_n%d_ps%d_shuffle%v_bounded%v", tc.hd, tc.heads, tc.kvHeads, tc.rows, tc.n, tc.ps, tc.shuffle, tc.bounded)
		t.Run(name, func(t *testing.T) {
			var seqs []kvPair
			for range tc.kvHeads {
				kv := newKV(c, g, rng, tc.n, tc.ps, tc.hd, false)
				if tc.shuffle {
					p := slices.Clone(kv.c.Pos)
					rng.Shuffle(len(p), func(i, j int) { p[i], p[j] = p[j], p[i] })
					kv.c.Pos, kv.g.Pos = p, p
				}
				seqs = append(seqs, kv)
			}
			// The rows are the last cached tokens (a prompt chunk) and,
			// past them, queries that see everything.
			last := 0
			for _, kv := range seqs {
				last = max(last, int(slices.Max(kv.c.Pos)))
			}
			qpos := make([]int, tc.rows)
			for r := range qpos {
				qpos[r] = last - tc.rows/2 + r
				if tc.bounded {
					qpos[r] = last + r
				}
			}
			if tc.bounded {
				for i := range seqs {
					seqs[i].g.Bounded, seqs[i].g.MaxPos = true, int32(last)
				}
			}
			q := newPair(c, g, randVec(rng, tc.rows*tc.heads*tc.hd, 1))
			out := newPair(c, g, make([]float32, tc.rows*tc.heads*tc.hd))
			g.Write(out.g, 0, slices.Repeat([]float32{float32(math.NaN())}, tc.rows*tc.heads*tc.hd))
			mk := func(gpu bool) *runtime.AttnArgs {
				a := &runtime.AttnArgs{Rows: tc.rows, QPos: qpos, Heads: tc.heads, KVHeads: tc.kvHeads, HeadDim: tc.hd,
					Scale: float32(1 / math.Sqrt(float64(tc.hd))), Rope: runtime.RopeHalf, Theta: 1e4, Q: q.c, Out: out.c}
				if gpu {
					a.Q, a.Out = q.g, out.g
				}
				for _, s := range seqs {
					if gpu {
						a.Seqs = append(a.Seqs, s.g)
					} else {
						a.Seqs = append(a.Seqs, s.c)
					}
				}
				return a
			}
			c.Attend(mk(false))
			g.Attend(mk(true))
			out.cmp(t, c, g, name, flashTol)
			if k := g.AttnPlan().Kernel; tc.rows >= 16 && tc.ps&(tc.ps-1) == 0 && !strings.HasPrefix(k, "flash_prefill_") {
				t.Errorf("float32 pages ran %s, want flash_prefill (wgmma reads bf16 pages only)", k)
			}
		})
	}
}

// TestFlashPrefillBF16Pages compares the prefill attention over bf16 pages
// (on Hopper the wgmma kernel, flash_wg) with the CPU's float32 attention
// on caches built through runtime.KVCache: head dims 64 and 128, GQA groups
// 1 to 8, page sizes 4 to 64, prompts that end inside a tile, row tiles
// and key tiles several deep, and eviction (positions out of order).
func TestFlashPrefillBF16Pages(t *testing.T) {
	for _, variant := range []string{"", "g2n128s", "g2n128w", "g2n128kw", "g2n64kw", "g3n64w", "g3n64kw", "w4m2n64", "t2n64", "t3n64", "t2n128", "p2n64", "p2n128"} {
		t.Run("flash="+variant, func(t *testing.T) {
			g := newGPUFlash(t, variant)
			c := cpu.New(0)
			defer c.Close()
			rng := rand.New(rand.NewPCG(21, 22))
			for _, tc := range []struct {
				hd, heads, kvHeads, ps, prompt, rows int
				evict                                bool
			}{
				{64, 4, 4, 16, 0, 16, false},
				{128, 8, 2, 16, 300, 129, false},
				{64, 32, 8, 16, 700, 300, false},
				{128, 32, 8, 64, 1000, 520, false},
				{128, 8, 1, 4, 90, 70, false},
				{64, 8, 2, 16, 500, 100, true},
				{128, 16, 2, 8, 333, 40, true},
			} {
				name := fmt.Sprintf("hd%d_%dx%d_ps%d_prompt%d_rows%d_evict%v", tc.hd, tc.heads, tc.kvHeads, tc.ps, tc.prompt, tc.rows, tc.evict)
				t.Run(name, func(t *testing.T) {
					cfg := runtime.Config{Heads: tc.heads, KVHeads: tc.kvHeads, HeadDim: tc.hd}
					cp := newCachePair(t, c, g, cfg, tc.ps, runtime.BF16, false)
					if tc.prompt > 0 {
						cp.append(rng, tc.prompt)
					}
					if tc.evict {
						cp.evict(rng, 0.3)
					}
					cp.append(rng, tc.rows)
					qpos := make([]int, tc.rows)
					for r := range qpos {
						qpos[r] = cp.next - tc.rows + r
					}
					compareAttend(t, c, g, cp, rng, attnCase{heads: tc.heads, rows: tc.rows, qpos: qpos, opt: "plain", tol: flashTol})
					k := g.AttnPlan().Kernel
					t.Logf("kernel %s", k)
					if strings.HasPrefix(variant, "g") && !strings.HasPrefix(k, "flash_wg_") {
						t.Errorf("KVBENCH_FLASH=%s ran %s", variant, k)
					}
					// The TMA-fed variants read boxes of at least 8 tokens:
					// smaller pages take the same tile without the TMA.
					if want := map[bool]string{true: "flash_tma_", false: "flash_wg_"}[tc.ps >= 8]; (strings.HasPrefix(variant, "t") || strings.HasPrefix(variant, "p")) && !strings.HasPrefix(k, want) {
						t.Errorf("KVBENCH_FLASH=%s with %d-token pages ran %s, want %s", variant, tc.ps, k, want)
					}
				})
			}
		})
	}
}

// TestBackendModelsBF16 runs the reference models at bf16 precision (bf16
// GEMMs, tensor-core prefill, bf16 KV pages) against the CPU's float32: the
// logits of a 300-token prompt within a stated tolerance, and the same
// greedy tokens.
func TestBackendModelsBF16(t *testing.T) {
	g := newGPUPrec(t, "bf16")
	for _, rel := range []string{"models/gutenberg-llama-25m", "models/kvbench-ref-13m"} {
		t.Run(rel, func(t *testing.T) {
			m, err := runtime.Load(fixtures.Path(t, rel))
			if err != nil {
				t.Fatal(err)
			}
			c := cpu.New(0)
			defer c.Close()
			rc, err := runtime.NewRunner(m, c, 128)
			if err != nil {
				t.Fatal(err)
			}
			rg, err := runtime.NewRunnerWith(m, g, runtime.RunnerOptions{MaxRows: 128, KVType: runtime.BF16})
			if err != nil {
				t.Fatal(err)
			}
			vocab := m.Config.Vocab
			rng := rand.New(rand.NewPCG(3, 4))
			prompt := make([]int, 300)
			for i := range prompt {
				prompt[i] = 3 + rng.IntN(min(vocab-3, 8000))
			}
			lc, lg := make([]float32, vocab), make([]float32, vocab)
			if err := rc.Forward(prompt, lc); err != nil {
				t.Fatal(err)
			}
			if err := rg.Forward(prompt, lg); err != nil {
				t.Fatal(err)
			}
			d := relDiff(lg, lc)
			t.Logf("%s: last-token logits after a 300-token prefill differ by %.3g relative (bf16 vs float32)", rel, d)
			if d > 5e-2 || math.IsNaN(d) {
				t.Errorf("%s: logits differ by %.3g relative (tolerance 5e-2)", rel, d)
			}
			var idc, idg []int
			for range 32 {
				tc, tg := runtime.Argmax(lc), runtime.Argmax(lg)
				idc, idg = append(idc, tc), append(idg, tg)
				if err := rc.Forward([]int{tc}, lc); err != nil {
					t.Fatal(err)
				}
				if err := rg.Forward([]int{tg}, lg); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.Equal(idc, idg) {
				t.Errorf("%s: greedy ids differ:\n cpu  %v\n bf16 %v", rel, idc, idg)
			}
		})
	}
}
