package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestFakeBatchTC: a batch step's lean calls (full attention, window's
// evictions, H2O's and TOVA's with accumulated probabilities) attend on the
// batched tensor-core kernel, attn_rtb_*_tc; H2O's stay on attn_rtb with
// KVBENCH_ATTN_TC_ACC=off, and everything with KVBENCH_ATTN_TC=off; fake
// device.
func TestFakeBatchTC(t *testing.T) {
	for _, tc := range []struct {
		policy, tcMode, tcAcc string
		params                policies.Params
		want                  bool
	}{
		{"full", "", "", nil, true},
		{"window", "", "", policies.Params{"budget": 24}, true},
		{"h2o", "", "", policies.Params{"budget": 24}, true},
		{"tova", "", "", policies.Params{"budget": 24}, true},
		{"h2o", "", "off", policies.Params{"budget": 24}, false},
		{"full", "off", "", nil, false},
	} {
		t.Run(tc.policy+"/"+tc.tcMode+"/"+tc.tcAcc, func(t *testing.T) {
			t.Setenv("KVBENCH_ATTN_TC", tc.tcMode)
			t.Setenv("KVBENCH_ATTN_TC_ACC", tc.tcAcc)
			be := fakeBackend(t)
			c := runtime.Config{Arch: "llama", Dim: 512, Hidden: 256, Layers: 2, Heads: 8, KVHeads: 2, HeadDim: 64, Vocab: 300,
				MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5} // groups of 4: the tensor cores at every length
			const streams = 8
			batch := promptedBatch(t, be, runtime.ZeroModel(c), tc.policy, tc.params, streams, 16, func(i int) int { return 30 + 3*i })
			sids, toks, targets, out := make([]int, streams), make([]int, streams), make([]int, streams), make([]float64, streams)
			for i := range sids {
				sids[i], toks[i], targets[i] = i, 3+i, 4+i
			}
			k0 := cuda.FakeKernels()
			for range 4 {
				if err := batch.LogProbs(sids, toks, targets, out); err != nil {
					t.Fatal(err)
				}
			}
			tcs, plain := int64(0), int64(0)
			for name, n := range cuda.FakeKernels() {
				if !strings.HasPrefix(name, "attn_rtb_d") {
					continue
				}
				if strings.HasSuffix(name, "_tc") {
					tcs += n - k0[name]
				} else {
					plain += n - k0[name]
				}
			}
			if tc.want && (tcs == 0 || plain != 0) || !tc.want && (tcs != 0 || plain == 0) {
				t.Errorf("batched launches on the tensor cores %d, on attn_rtb %d; want the tensor cores %v", tcs, plain, tc.want)
			}
		})
	}
}

// TestFakeBatchMetaByValue: a batch step's launch takes its table and ints
// by value (RtbBox) where they fit and nothing after it reads them: two or
// four streams of 32/8 heads under full attention in a box of 960 words
// (parameters under 4 KB), eight (1,608 words) in one of 2,048 (CUDA
// 12.1's larger parameters), not twelve, which go in the larger box
// (RtbXBox) where there is one; not H2O's (its sums' kernel reads
// the ints), not with KVBENCH_RT_BOX=off. Quest's go by value, in a batch
// and alone: its selections are read where its kernel left them (RH_SEL),
// not copied into the ints. What a batch does not send by value is
// carried by attn_rtb_put launches, a box each (putCarried), with no copy
// of its own: by default up to 4 of them, with KVBENCH_RTB_PUT=1 one (4
// streams in boxes of 960 words and 12 streams then upload), with KVBENCH_RTB_PUT=0 none (every layer's
// metadata uploaded). One stream's call uploads where it is not by value.
// Quest's scores and choice carry theirs the same way, at least a launch
// a layer.
func TestFakeBatchMetaByValue(t *testing.T) {
	c := runtime.Config{Arch: "llama", Dim: 2048, Hidden: 256, Layers: 2, Heads: 32, KVHeads: 8, HeadDim: 64, Vocab: 300,
		MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
	L := int64(c.Layers)
	type got struct {
		plan         cuda.Plan
		copies, puts int64
	}
	step := func(t *testing.T, box, words, xwords, put, policy string, streams int) got {
		t.Setenv("KVBENCH_RT_BOX", box)
		t.Setenv("KVBENCH_RTB_BOX_WORDS", words)
		t.Setenv("KVBENCH_RTB_XBOX_WORDS", xwords)
		t.Setenv("KVBENCH_RTB_PUT", put)
		be := fakeBackend(t)
		var params policies.Params
		switch policy {
		case "h2o":
			params = policies.Params{"budget": 256}
		case "quest": // every layer selecting
			params = policies.Params{"budget": 256, "dense_layers": 0}
		case "streamingllm": // keys re-positioned: attn_rtb_*_sh
			params = policies.Params{"sinks": 4, "budget": 256}
		}
		batch := promptedBatch(t, be, runtime.ZeroModel(c), policy, params, streams, 16, func(i int) int { return 600 + 3*i })
		sids, toks, targets, out := make([]int, streams), make([]int, streams), make([]int, streams), make([]float64, streams)
		for i := range sids {
			sids[i], toks[i], targets[i] = i, 3+i, 4+i
		}
		for range 2 {
			if err := batch.LogProbs(sids, toks, targets, out); err != nil {
				t.Fatal(err)
			}
		}
		_, c0, _, _ := cuda.FakeCounts()
		k0 := cuda.FakeKernels()["attn_rtb_put"]
		if err := batch.LogProbs(sids, toks, targets, out); err != nil {
			t.Fatal(err)
		}
		_, c1, _, _ := cuda.FakeCounts()
		return got{be.AttnPlan(), c1 - c0, cuda.FakeKernels()["attn_rtb_put"] - k0}
	}
	// The larger box (KVBENCH_RTB_XBOX_WORDS, "0": none) holds 12 and 24
	// streams' metadata (about 2,440 and 4,870 words) where it is 8,000
	// words, not 24 streams' where it is 4,096, for the tensor-core launches
	// and the others (Quest's and StreamingLLM's calls: attn_rtb_*_xb).
	for _, tc := range []struct {
		policy, words, xwords string
		streams               int
		want, xb              bool // by value; in the larger box (a kernel named _xb)
	}{{"full", "960", "0", 2, true, false}, {"full", "960", "0", 4, true, false}, {"full", "960", "0", 8, false, false},
		{"full", "2048", "0", 8, true, false}, {"full", "2048", "8000", 8, true, false}, {"full", "2048", "0", 12, false, false},
		{"full", "2048", "8000", 12, true, true}, {"full", "2048", "2048", 12, false, false}, {"full", "2048", "8000", 24, true, true},
		{"full", "2048", "4096", 24, false, false},
		{"h2o", "2048", "8000", 2, false, false}, {"quest", "2048", "0", 2, true, false}, {"quest", "2048", "8000", 12, true, true},
		{"streamingllm", "2048", "8000", 12, true, true},
		{"quest", "960", "0", 1, true, false}} {
		t.Run(fmt.Sprintf("%s/%s/%s/%d", tc.policy, tc.words, tc.xwords, tc.streams), func(t *testing.T) {
			def := step(t, "", tc.words, tc.xwords, "", tc.policy, tc.streams)
			kernel := "attn_rtb_" // one stream: Attend's kernel
			if tc.streams == 1 {
				kernel = "attn_rt_"
			}
			if tc.policy == "streamingllm" && !strings.Contains(def.plan.Kernel, "_sh") {
				t.Fatalf("plan %+v: want the re-positioned keys' kernel (_sh)", def.plan)
			}
			if !strings.HasPrefix(def.plan.Kernel, kernel) || def.plan.ByValue != tc.want || strings.HasSuffix(def.plan.Kernel, "_xb") != tc.xb {
				t.Fatalf("plan %+v: want %s*, by value %v, the larger box %v", def.plan, kernel, tc.want, tc.xb)
			}
			// Quest's scores and choice carry their own metadata
			// (flushQuest): at least an attn_rtb_put a layer, unless
			// KVBENCH_RTB_PUT=0; where the attention goes by value, all
			// of the step's.
			qp := int64(0)
			if tc.policy == "quest" {
				if qp = def.puts; !tc.want || qp < L {
					t.Fatalf("quest: %d attn_rtb_put a step by default (the attention by value %v), want Quest's own, at least one a layer (%d)", qp, tc.want, L)
				}
			}
			if tc.streams == 1 {
				up := step(t, "off", tc.words, tc.xwords, "", tc.policy, tc.streams)
				if up.plan.ByValue || up.puts != qp || up.copies < def.copies+L {
					t.Errorf("one stream, KVBENCH_RT_BOX=off: plan %+v, %d attn_rtb_put, %d copies against %d by value", up.plan, up.puts, up.copies, def.copies)
				}
				return
			}
			carried := step(t, "off", tc.words, tc.xwords, "", tc.policy, tc.streams)
			up := step(t, "off", tc.words, tc.xwords, "0", tc.policy, tc.streams)
			one := step(t, "off", tc.words, tc.xwords, "1", tc.policy, tc.streams)
			if carried.plan.ByValue || up.plan.ByValue {
				t.Errorf("KVBENCH_RT_BOX=off: plans %+v, %+v by value", carried.plan, up.plan)
			}
			if tc.want != (def.puts == qp) || carried.puts < L+qp || up.puts != 0 {
				t.Errorf("attn_rtb_put launches a step: %d by default, %d with the box off, %d with KVBENCH_RTB_PUT=0 (%d layers)",
					def.puts, carried.puts, up.puts, L)
			}
			if def.copies != carried.copies || up.copies < carried.copies+L {
				t.Errorf("copies to the device a step: %d by default, %d carried, %d uploading (%d layers)", def.copies, carried.copies, up.copies, L)
			}
			// One box of 960 words carries two streams' (not four since
			// the descriptors took three more words a KV head for
			// pageArith) and one of 2,048 words eight streams'.
			if wantOne := tc.streams < 4 || tc.words == "2048" && tc.streams == 8; (one.copies == carried.copies) != wantOne {
				t.Errorf("KVBENCH_RTB_PUT=1: %d copies a step against %d carried (%d attn_rtb_put), want as carried %v",
					one.copies, carried.copies, one.puts, wantOne)
			}
		})
	}
}

// TestAttendBatchTCGPU: a batch of lean calls (8 streams of different
// lengths, heads of 64 and 128, groups of 4 and 8, pages of 16 and 64)
// attends on the batched tensor-core kernel as each call alone does on
// attn_rt's (their outputs equal to float32 rounding of the tensor cores'
// hi/lo split products) and as the CPU does (within bf16 pages' tolerance).
func TestAttendBatchTCGPU(t *testing.T) {
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(17, 5))
	for _, hd := range []int{64, 128} {
		for _, hk := range [][2]int{{32, 8}, {16, 2}, {32, 16}, {28, 4}} { // 32/16: 128 rows of two heads, fused where they have at most 4 chunks (fusedFew); 28/4: 32 rows of seven, fused over at most 16 chunks (fusedRows8)
			for _, ps := range []int{16, 64} {
				t.Run(fmt.Sprintf("hd%d/%dx%d/page%d", hd, hk[0], hk[1], ps), func(t *testing.T) {
					batchTCCase(t, c, g, rng, hd, hk[0], hk[1], ps)
				})
			}
		}
	}
}

func batchTCCase(t *testing.T, c *cpu.Backend, g *cuda.Backend, rng *rand.Rand, hd, heads, kvHeads, ps int) {
	cfg := runtime.Config{Heads: heads, KVHeads: kvHeads, HeadDim: hd}
	const streams = 8
	var pairs []*cachePair
	var cpuArgs, gpuArgs []*runtime.AttnArgs
	var outs []pair
	for i := range streams {
		cp := newCachePair(t, c, g, cfg, ps, runtime.BF16, false)
		cp.append(rng, 100+137*i)
		pairs = append(pairs, cp)
		n := cp.next
		q := newPair(c, g, randVec(rng, heads*hd, 1))
		out := newPair(c, g, make([]float32, heads*hd))
		outs = append(outs, out)
		for side := range 2 {
			a := &runtime.AttnArgs{Rows: 1, QPos: []int{n - 1}, Heads: heads, KVHeads: kvHeads, HeadDim: hd,
				Scale: float32(1 / math.Sqrt(float64(hd))), Seqs: cp.seqs(side), Rope: runtime.RopeHalf, Theta: 1e4, Q: q.c, Out: out.c}
			if side == 1 {
				a.Q, a.Out = q.g, out.g
				gpuArgs = append(gpuArgs, a)
			} else {
				cpuArgs = append(cpuArgs, a)
			}
		}
	}
	for _, a := range cpuArgs {
		c.Attend(a)
	}
	g.AttendBatch(gpuArgs)
	// _tc_xb: the same kernel taking the larger box (KVBENCH_RTB_BOX_WORDS=64
	// sends every batch that fits it there).
	if p := g.AttnPlan(); !strings.HasSuffix(strings.TrimSuffix(p.Kernel, "_xb"), "_tc") || !strings.HasPrefix(p.Kernel, "attn_rtb_") {
		t.Fatalf("the batch ran %s, want the batched tensor-core kernel", p.Kernel)
	}
	batched := make([][]float32, streams)
	for i, o := range outs {
		batched[i] = make([]float32, heads*hd)
		g.Read(batched[i], o.g, 0)
		want := make([]float32, heads*hd)
		c.Read(want, o.c, 0)
		if d := relDiff(batched[i], want); d > 2e-3 {
			t.Errorf("stream %d (%d tokens): the batch's output differs from the CPU's by %.3g (relative)", i, pairs[i].next, d)
		}
	}
	for i, a := range gpuArgs { // each call alone (attendSplit's tensor-core kernel)
		g.Attend(a)
		alone := make([]float32, heads*hd)
		g.Read(alone, outs[i].g, 0)
		if d := relDiff(batched[i], alone); d > 1e-5 {
			t.Errorf("stream %d: the batch's output differs from the call's alone by %.3g (relative)", i, d)
		}
	}
}

// TestRtbBoxWordsEnv: KVBENCH_RTB_BOX_WORDS outside [64, 8000] or not a
// number is refused with an error naming it; a size other than the 4 KB
// box is compiled in (-DRTB_BOX_WORDS, KernelOptions), the 4 KB box's is
// the kernels' own default.
func TestRtbBoxWordsEnv(t *testing.T) {
	for _, v := range []string{"32", "9000", "x", "-1"} {
		t.Run(v, func(t *testing.T) { refusesEnv(t, "KVBENCH_RTB_BOX_WORDS", v) })
	}
	for v, want := range map[string]string{"2048": "-DRTB_BOX_WORDS=2048", "8000": "-DRTB_BOX_WORDS=8000", "960": ""} {
		t.Setenv("KVBENCH_RTB_BOX_WORDS", v)
		if got := kernelOption("-DRTB_BOX_WORDS="); got != want {
			t.Errorf("KVBENCH_RTB_BOX_WORDS=%s: option %q, want %q", v, got, want)
		}
	}
}

// kernelOption is the last of cuda.KernelOptions starting with prefix ("": none).
func kernelOption(prefix string) string {
	got := ""
	for _, o := range cuda.KernelOptions() {
		if strings.HasPrefix(o, prefix) {
			got = o
		}
	}
	return got
}

// TestRtbXBoxWordsEnv: KVBENCH_RTB_XBOX_WORDS is refused outside 0 and
// [64, 8000], compiled in where it is larger than the small box, and none
// (no option) at or under it.
func TestRtbXBoxWordsEnv(t *testing.T) {
	for _, v := range []string{"32", "9000", "x", "-1"} {
		t.Run(v, func(t *testing.T) { refusesEnv(t, "KVBENCH_RTB_XBOX_WORDS", v) })
	}
	t.Setenv("KVBENCH_RTB_BOX_WORDS", "2048")
	for v, want := range map[string]string{"4096": "-DRTB_XBOX_WORDS=4096", "8000": "-DRTB_XBOX_WORDS=8000", "2048": "", "1000": "", "0": ""} {
		t.Setenv("KVBENCH_RTB_XBOX_WORDS", v)
		if got := kernelOption("-DRTB_XBOX_WORDS="); got != want {
			t.Errorf("KVBENCH_RTB_XBOX_WORDS=%s: option %q, want %q", v, got, want)
		}
	}
}

// TestFakeMixedBatchUploads: a batch whose calls take two kernels (full
// attention's tensor-core one and StreamingLLM's re-positioned keys',
// attn_rtb_*_sh) is two launches over one table, and uploads it: the box
// carries one launch's table (rtbBox).
func TestFakeMixedBatchUploads(t *testing.T) {
	c := runtime.Config{Arch: "llama", Dim: 2048, Hidden: 256, Layers: 2, Heads: 32, KVHeads: 8, HeadDim: 64, Vocab: 300,
		MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
	be := fakeBackend(t)
	const streams = 2
	pick := func(i int) (string, policies.Params) {
		if i%2 == 1 {
			return "streamingllm", policies.Params{"sinks": 4, "budget": 256}
		}
		return "full", nil
	}
	batch := promptedMixed(t, be, runtime.ZeroModel(c), pick, streams, 16, func(i int) int { return 600 + 3*i })
	sids, toks, targets, out := []int{0, 1}, []int{3, 4}, []int{4, 5}, make([]float64, streams)
	for range 2 {
		if err := batch.LogProbs(sids, toks, targets, out); err != nil {
			t.Fatal(err)
		}
	}
	k0 := cuda.FakeKernels()
	if err := batch.LogProbs(sids, toks, targets, out); err != nil {
		t.Fatal(err)
	}
	kernels := 0
	for name, n := range cuda.FakeKernels() {
		if strings.HasPrefix(name, "attn_rtb_d") && n > k0[name] {
			kernels++
		}
	}
	if p := be.AttnPlan(); kernels < 2 || p.ByValue {
		t.Errorf("%d batched kernels in a step, the last launch's plan %+v; want two or more, not by value", kernels, p)
	}
}
