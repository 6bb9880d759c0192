package cuda_test

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// TestAttendSplitKernels compares Attend on the split-KV kernels of
// attention_rt.cu (attn_rt_*) with the CPU on caches built through
// runtime.KVCache, and checks which kernel ran: float32 and bf16 pages,
// head dims 64 and 128, GQA groups 1, 2, 4, 8 and 3 (6 query heads over 2:
// split rows of one head), one and several query rows (rows share a split
// row), page sizes 16 and 7, eviction (positions out of order), a
// selection per head with accumulation, re-positioned keys (the _sh
// kernels), the sliding window, and chunks chosen per call, of 32 tokens
// (many partials: the fused merge's two levels for rows of one head, the
// combine kernel otherwise) or of 1024 (one a row: the block writes the
// outputs). Lean calls over bf16 pages of 16 (one row that sees every
// token, no selection or accumulation) run the tensor-core kernels
// (attention_tc.cu; KVBENCH_ATTN_TC=on: whatever the chunk and group). Calls whose ints are few go to the kernel by value (RtBox),
// the others are uploaded: both must occur, accumulation among the first
// (attn_rt_acc reads what the kernel wrote of them).
func TestAttendSplitKernels(t *testing.T) {
	t.Setenv("KVBENCH_ATTN_TC", "on")     // every lean call it serves, whatever the chunk and group
	t.Setenv("KVBENCH_ATTN_CLUSTER", "0") // rows in one cluster: TestAttendTCKernels
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(23, 5))
	if err := g.SetAttnChunk(33); err == nil {
		t.Error("SetAttnChunk(33) accepted a chunk that is not a multiple of 32")
	}
	defer g.SetAttnChunk(0)
	byValue := map[string]int{} // calls by whether their ints went by value, and the accumulating ones
	defer func() {
		if byValue["box"] == 0 || byValue["upload"] == 0 || byValue["box acc"] == 0 {
			t.Errorf("calls by value and uploaded: %v, want some of each and some accumulating by value", byValue)
		}
	}()
	for _, typ := range []runtime.DType{runtime.F32, runtime.BF16} {
		for _, hd := range []int{64, 128} {
			for _, hk := range [][2]int{{8, 8}, {8, 4}, {8, 2}, {8, 1}, {6, 2}} {
				for _, rows := range []int{1, 3, 19} {
					for _, opt := range []string{"plain", "sel+acc", "acc", "shift", "window"} {
						for _, ps := range []int{16, 7} {
							for _, chunk := range []int{0, 32, 1024} { // 1024: one chunk a row, no combine
								evict := (rows+ps+chunk/32)%2 == 1 // half the cases hold positions out of order
								name := fmt.Sprintf("%v/hd%d/%dx%d/rows%d/%s/ps%d/chunk%d/evict%v", typ, hd, hk[0], hk[1], rows, opt, ps, chunk, evict)
								t.Run(name, func(t *testing.T) {
									if err := g.SetAttnChunk(chunk); err != nil {
										t.Fatal(err)
									}
									cfg := runtime.Config{Heads: hk[0], KVHeads: hk[1], HeadDim: hd}
									cp := newCachePair(t, c, g, cfg, ps, typ, false)
									cp.append(rng, 600)
									if evict {
										cp.evict(rng, 0.25)
									}
									qpos := cp.queryRows(rng, rows)
									ac := attnCase{heads: hk[0], rows: rows, qpos: qpos, opt: opt, tol: 2e-5}
									if opt == "window" {
										ac.opt, ac.window = "plain", 50
									}
									compareAttend(t, c, g, cp, rng, ac)
									group := hk[0] / hk[1]
									gh := 1
									for _, x := range []int{8, 4, 2} {
										if opt != "sel+acc" && group%x == 0 {
											gh = x
											break
										}
									}
									if pad := 1 << bits.Len(uint(group-1)); rows == 1 && opt != "sel+acc" && pad != group {
										gh = pad // a decode row of 3, 5, 6 or 7 heads padded (sharedHeads)
									}
									rt := 1
									if rows > 1 {
										rt = min(8/gh, 1<<bits.Len(uint(rows-1)))
									}
									kt, sh := "f32", ""
									if typ == runtime.BF16 {
										kt = "bf16"
									}
									if opt == "shift" {
										sh = "_sh"
									}
									want := fmt.Sprintf("attn_rt_d%d_g%d_%s%s", hd, gh*rt, kt, sh)
									p := g.AttnPlan()
									switch {
									case typ == runtime.BF16 && rows == 1 && (opt == "plain" || opt == "acc") && ps == 16:
										want += "_tc" // a lean call (every token visible, no selection; H2O's accumulation too)
									case typ == runtime.BF16 && sh == "" && gh*rt >= 2 && gh*rt <= 4 && p.Chunk <= 256:
										want += "_short" // a chunk of a few steps of loads
									}
									switch {
									case p.ByValue && opt == "acc":
										byValue["box acc"]++
									case p.ByValue:
										byValue["box"]++
									default:
										byValue["upload"]++
									}
									if p.Kernel != want {
										t.Errorf("kernel %s, want %s (plan %+v)", p.Kernel, want, p)
									} else if chunk != 0 && p.Chunk != chunk {
										t.Errorf("chunk %d, asked for %d", p.Chunk, chunk)
									}
								})
							}
						}
					}
				}
			}
		}
	}
}

// TestAttendKernelChoice checks which attention kernel Attend launches for
// each kind of call: the general kernel for head dims the split-KV kernels
// are not built for and for recall, the tensor-core prefill for prompt
// chunks at bf16 precision, the split-KV kernels otherwise.
func TestAttendKernelChoice(t *testing.T) {
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(2, 29))
	for _, tc := range []struct {
		prec       string
		hd, rows   int
		opt        string
		want       string
		flashTol   bool
		heads, kvh int
	}{
		{"f32", 16, 1, "plain", "be_attend", false, 4, 2},
		{"f32", 64, 1, "recall", "be_attend", false, 4, 2},
		{"f32", 64, 1, "plain", "attn_rt_d64_g2_f32", false, 4, 2},
		{"f32", 128, 20, "plain", "attn_rt_d128_g8_f32", false, 4, 1},
		{"bf16", 128, 20, "plain", "flash_prefill_d128_w4_m2_n64", true, 4, 1},
		{"bf16", 128, 20, "sel+acc", "attn_rt_d128_g8_f32", false, 4, 1},
		{"bf16", 64, 1, "plain", "attn_rt_d64_g2_f32", false, 4, 2},
		{"f32", 128, 1, "plain", "attn_rt_d128_g8_f32", false, 28, 4}, // a group of 7 padded to 8
		{"f32", 64, 1, "plain", "attn_rt_d64_g4_f32", false, 6, 2},    // 3 padded to 4
		{"f32", 64, 1, "acc", "attn_rt_d64_g4_f32", false, 6, 2},
		{"f32", 64, 1, "shift", "attn_rt_d64_g4_f32_sh", false, 6, 2},
		{"f32", 128, 1, "sel+acc", "attn_rt_d128_g1_f32", false, 28, 4}, // a selection per head: not padded
		{"f32", 64, 3, "plain", "attn_rt_d64_g4_f32", false, 6, 2},      // rows: not padded, 4 rows of one head
	} {
		name := fmt.Sprintf("%s/hd%d/rows%d/%s/%dx%d", tc.prec, tc.hd, tc.rows, tc.opt, tc.heads, tc.kvh)
		t.Run(name, func(t *testing.T) {
			g := newGPUPrec(t, tc.prec)
			cfg := runtime.Config{Heads: tc.heads, KVHeads: tc.kvh, HeadDim: tc.hd}
			cp := newCachePair(t, c, g, cfg, 16, runtime.F32, tc.opt == "recall")
			cp.append(rng, 300)
			cp.append(rng, tc.rows)
			qpos := make([]int, tc.rows)
			for r := range qpos {
				qpos[r] = cp.next - tc.rows + r
			}
			tol := 2e-5
			if tc.flashTol {
				tol = flashTol
			}
			compareAttend(t, c, g, cp, rng, attnCase{heads: tc.heads, rows: tc.rows, qpos: qpos, opt: tc.opt, tol: tol})
			if p := g.AttnPlan(); p.Kernel != tc.want {
				t.Errorf("kernel %s, want %s", p.Kernel, tc.want)
			}
		})
	}
}

// TestPoliciesSplitKernelsGPU runs every policy on the small synthetic model
// (head dim 64, 6 query heads over 2 KV heads: the split-KV kernels, a
// decode step's rows of the group's 3 heads padded to 4, or of one head
// where each head selects its own tokens) on both backends: a 50-token prompt, then
// 60 decode steps; the logits, the tokens each KV head keeps and the mean
// recall agree. Where TestBackendPolicies (head dim 16) runs the general
// kernel, this runs every policy option through attn_rt_*: selections
// (Quest's on the device, the oracle's), accumulation (H2O, TOVA, SnapKV,
// PyramidKV), re-positioned keys (StreamingLLM).
func TestPoliciesSplitKernelsGPU(t *testing.T) {
	g := newGPU(t)
	m, err := runtime.Synthetic("small")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(8, 13))
	toks := make([]int, 110)
	for i := range toks {
		toks[i] = 3 + rng.IntN(256)
	}
	const prompt = 50
	names := policies.Names()
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			c := cpu.New(0)
			defer c.Close()
			params := policyParams[name]
			rc, rg := newPolRun(t, c, m, name, params), newPolRun(t, g, m, name, params)
			worst := 0.0
			kernels := map[string]bool{}
			step := func(in []int) {
				if err := rc.r.Forward(in, rc.logits); err != nil {
					t.Fatal(err)
				}
				if err := rg.r.Forward(in, rg.logits); err != nil {
					t.Fatal(err)
				}
				kernels[g.AttnPlan().Kernel] = true
				worst = max(worst, relDiff(rg.logits, rc.logits))
				for l := range m.Config.Layers {
					sc, sg := rc.r.Cache.Seqs(l), rg.r.Cache.Seqs(l)
					for h := range sc {
						if pc, pg := sortedPos(sc[h]), sortedPos(sg[h]); !slices.Equal(pc, pg) {
							t.Fatalf("position %d layer %d kv head %d: kept cpu %v gpu %v", rc.r.Pos()-1, l, h, pc, pg)
						}
					}
				}
			}
			rc.p.Prompt(prompt)
			rg.p.Prompt(prompt)
			step(toks[:prompt])
			for i := prompt; i < len(toks); i++ {
				step(toks[i : i+1])
			}
			sc, sg := rc.p.Stats(), rg.p.Stats()
			t.Logf("%s: logits max relative difference %.3g; mean recall cpu %.6f gpu %.6f; kernels %v", name, worst, sc.MeanRecall(), sg.MeanRecall(), kernels)
			if worst > 1e-3 {
				t.Errorf("logits differ by %.3g relative", worst)
			}
			if math.Abs(sc.MeanRecall()-sg.MeanRecall()) > 1e-4 {
				t.Errorf("mean recall cpu %.6f gpu %.6f", sc.MeanRecall(), sg.MeanRecall())
			}
			if !kernels["attn_rt_d64_g4_f32"] && !kernels["attn_rt_d64_g4_f32_sh"] && !kernels["attn_rt_d64_g1_f32"] {
				t.Errorf("the decode steps did not run the split-KV kernels (ran %v)", kernels)
			}
		})
	}
}

// TestAttendSplitManyRows checks a call with more split rows than a grid's
// y dimension holds (70000 query rows of one GQA group of 8: 70000 split
// rows, spread over grid y and z) against the CPU, through the combine
// kernel's own spread.
func TestAttendSplitManyRows(t *testing.T) {
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(31, 7))
	cfg := runtime.Config{Heads: 8, KVHeads: 1, HeadDim: 64}
	cp := newCachePair(t, c, g, cfg, 16, runtime.F32, false)
	cp.append(rng, 40)
	const rows = 70000
	qpos := make([]int, rows)
	for r := range qpos {
		qpos[r] = 20 + r%40 // rows see different prefixes of the cache
	}
	compareAttend(t, c, g, cp, rng, attnCase{heads: 8, rows: rows, qpos: qpos, opt: "plain", tol: 2e-5})
	if p := g.AttnPlan(); p.Kernel != "attn_rt_d64_g8_f32" {
		t.Errorf("kernel %s, want attn_rt_d64_g8_f32", p.Kernel)
	}
}

// TestAttendTCKernels compares the tensor-core kernels of lean calls
// (attention_tc.cu: one row that sees every token, bf16 pages of a power of
// two tokens) with the CPU beyond TestAttendSplitKernels' cases: pages of 8
// (tiles span two pages: the copies' general path), 16 and 32, contexts of
// 1, 15, 300, 1,000 and 3,000 tokens (a last tile in part past the chunk;
// many tiles a warp: the stages' ring turns), and chunks chosen per call or
// of 32; the kernel (_tc) and, on sm_90a, its variant whose row's chunks
// are one cluster (_tcc, rows of up to KVBENCH_ATTN_CLUSTER tokens in at
// most 8 chunks).
func TestAttendTCKernels(t *testing.T) {
	for _, v := range []struct{ name, cluster string }{{"tc", "0"}, {"tcc", "1024"}} {
		t.Run(v.name, func(t *testing.T) {
			t.Setenv("KVBENCH_ATTN_CLUSTER", v.cluster)
			testAttendTCKernels(t, v.name)
		})
	}
}

func testAttendTCKernels(t *testing.T, variant string) {
	t.Setenv("KVBENCH_ATTN_TC", "on")
	g := newGPU(t)
	if variant != "tc" && g.D.Arch() != "sm_90a" {
		t.Skipf("the _%s kernel needs sm_90a, not %s", variant, g.D.Arch())
	}
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(41, 3))
	defer g.SetAttnChunk(0)
	for _, hd := range []int{64, 128} {
		for _, hk := range [][2]int{{8, 8}, {8, 4}, {8, 2}, {8, 1}} {
			for _, ps := range []int{8, 16, 32} {
				for _, n := range []int{1, 15, 300, 1000, 3000} {
					for _, chunk := range []int{0, 32} {
						t.Run(fmt.Sprintf("hd%d/%dx%d/ps%d/n%d/chunk%d", hd, hk[0], hk[1], ps, n, chunk), func(t *testing.T) {
							if err := g.SetAttnChunk(chunk); err != nil {
								t.Fatal(err)
							}
							cfg := runtime.Config{Heads: hk[0], KVHeads: hk[1], HeadDim: hd}
							cp := newCachePair(t, c, g, cfg, ps, runtime.BF16, false)
							cp.append(rng, n)
							compareAttend(t, c, g, cp, rng, attnCase{heads: hk[0], rows: 1, qpos: []int{cp.next - 1}, opt: "plain", tol: 2e-5})
							suffix := variant
							if variant == "tcc" && (n > 1024 || (chunk != 0 && (n+chunk-1)/chunk > 8)) {
								suffix = "tc"
							}
							want := fmt.Sprintf("attn_rt_d%d_g%d_bf16_%s", hd, hk[0]/hk[1], suffix)
							if p := g.AttnPlan(); p.Kernel != want {
								t.Errorf("kernel %s, want %s (plan %+v)", p.Kernel, want, p)
							}
						})
					}
				}
			}
		}
	}
}

// TestAttendTCLowHalvesGPU: with KVBENCH_ATTN_TC_LO=off the tensor-core
// decode kernels take the queries and the probabilities in bf16 alone (no
// low halves' products: SDPA's precision, to time what they cost). Their
// outputs stay within bf16's rounding of the CPU's.
func TestAttendTCLowHalvesGPU(t *testing.T) {
	t.Setenv("KVBENCH_ATTN_TC", "on")
	t.Setenv("KVBENCH_ATTN_CLUSTER", "0")
	t.Setenv("KVBENCH_ATTN_TC_LO", "off")
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(29, 3))
	for _, hd := range []int{64, 128} {
		for _, hk := range [][2]int{{8, 8}, {8, 2}, {8, 1}} {
			for _, chunk := range []int{0, 32} {
				t.Run(fmt.Sprintf("hd%d/%dx%d/chunk%d", hd, hk[0], hk[1], chunk), func(t *testing.T) {
					if err := g.SetAttnChunk(chunk); err != nil {
						t.Fatal(err)
					}
					defer g.SetAttnChunk(0)
					cfg := runtime.Config{Heads: hk[0], KVHeads: hk[1], HeadDim: hd}
					cp := newCachePair(t, c, g, cfg, 16, runtime.BF16, false)
					cp.append(rng, 700)
					ac := attnCase{heads: hk[0], rows: 1, qpos: []int{cp.next - 1}, opt: "plain", tol: 2e-2}
					compareAttend(t, c, g, cp, rng, ac)
					if p := g.AttnPlan(); !strings.HasSuffix(p.Kernel, "_tc") {
						t.Fatalf("kernel %s, want a tensor-core one", p.Kernel)
					}
				})
			}
		}
	}
}
