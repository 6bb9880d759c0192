package cuda_test

import (
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	goruntime "runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// BenchmarkFakeBatchStep times the host's share of a batched decode step of
// the CUDA backend, on the fake device (no kernels run, no GPU needed:
// fake.go): 64 streams holding 1,024 tokens each, for the shapes of
// kvbench-ref-13m, the 1B and the 8B Llama (bench/e2e.py), under the
// policies that batch. With a CPU profile it shows where the time goes:
//
//	go test ./runtime/cuda -run '^$' -bench FakeBatchStep/8b -cpuprofile cpu.out
//	go tool pprof -top -cum -focus 'Batch..LogProbs' cpu.out
//
// With KVBENCH_PHASES=1 it logs each case's step part by part (the pass's
// parts and the lanes' and AttendBatch's finer ones, runtime/phases.go);
// KVBENCH_STEP_PPROF=FILE profiles the timed steps alone (stepProfile).
//
// It reports ms/step and the launches, copies, reads and waits a step asks
// of the driver (a real driver spends a few µs of host time on each, which
// the fake does not; a wait costs what the device needs to catch up).
func BenchmarkFakeBatchStep(b *testing.B) {
	be := fakeBackend(b)
	shapes := []struct {
		name string
		c    runtime.Config
	}{
		{"13m", runtime.Config{Arch: "llama", Dim: 256, Hidden: 768, Layers: 6, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 32000, MaxSeq: 1 << 20, RopeTheta: 1e4, NormEps: 1e-5}},
		{"1b", runtime.Config{Arch: "llama", Dim: 2048, Hidden: 8192, Layers: 16, Heads: 32, KVHeads: 8, HeadDim: 64, Vocab: 32000, MaxSeq: 1 << 20, RopeTheta: 5e5, NormEps: 1e-5}},
		{"8b", runtime.Config{Arch: "llama", Dim: 4096, Hidden: 14336, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128, Vocab: 32000, MaxSeq: 1 << 20, RopeTheta: 5e5, NormEps: 1e-5}},
	}
	pols := []struct {
		name   string
		params policies.Params
	}{{"full", nil}, {"window", policies.Params{"budget": 1024}}, {"streamingllm", policies.Params{"sinks": 4, "budget": 1024}},
		{"h2o", policies.Params{"budget": 1024}}, {"tova", policies.Params{"budget": 1024}},
		{"random", policies.Params{"budget": 1024}}, {"quest", policies.Params{"budget": 1024, "page": 16}}}
	for _, sh := range shapes {
		m := runtime.ZeroModel(sh.c)
		var dw *runtime.DeviceWeights // uploaded at the shape's first run, freed after its last
		for _, pc := range pols {
			b.Run(sh.name+"/"+pc.name, func(b *testing.B) {
				const streams, prompt = 64, 1100
				if dw == nil {
					var err error
					if dw, err = runtime.UploadWeights(m, be); err != nil {
						b.Fatal(err)
					}
				}
				batch := promptedWith(b, be, m, dw, func(int) (string, policies.Params) { return pc.name, pc.params }, streams, 256,
					func(int) int { return prompt })
				sids, toks := make([]int, streams), make([]int, streams)
				targets, out := make([]int, streams), make([]float64, streams)
				for i := range sids {
					sids[i], toks[i], targets[i] = i, 3+i, 4+i
				}
				step := func() {
					if err := batch.LogProbs(sids, toks, targets, out); err != nil {
						b.Fatal(err)
					}
				}
				for range 8 {
					step()
				}
				l0, c0, r0, w0 := cuda.FakeCounts()
				k0 := cuda.FakeKernels()
				runtime.WritePhases(io.Discard) // the prompts' and warm-up's (KVBENCH_PHASES)
				stopProfile := stepProfile(b)
				b.ResetTimer()
				t0 := time.Now()
				for range b.N {
					step()
				}
				ms := float64(time.Since(t0).Microseconds()) / 1e3 / float64(b.N)
				b.StopTimer()
				stopProfile()
				l1, c1, r1, w1 := cuda.FakeCounts()
				n := float64(b.N)
				b.ReportMetric(ms, "ms/step")
				b.ReportMetric(float64(streams)*60e3/ms, "tokens/min")
				b.ReportMetric(float64(l1-l0)/n, "launches/step")
				b.ReportMetric(float64(c1-c0)/n, "copies/step")
				b.ReportMetric(float64(r1-r0)/n, "reads/step")
				b.ReportMetric(float64(w1-w0)/n, "waits/step")
				var phases strings.Builder // with KVBENCH_PHASES: the step part by part
				runtime.WritePhases(&phases)
				if phases.Len() > 0 && b.N > 1 { // printed: a benchmark's log keeps 10 lines
					fmt.Printf("%s: the timed steps part by part\n%s", b.Name(), phases.String())
				}
				if testing.Verbose() { // the launches a step by kernel
					k1, line := cuda.FakeKernels(), ""
					for _, k := range slices.Sorted(maps.Keys(k1)) {
						if d := k1[k] - k0[k]; d > 0 {
							line += fmt.Sprintf(" %s %.1f", k, float64(d)/n)
						}
					}
					b.Logf("launches a step by kernel:%s", line)
				}
				for i := range batch.Len() {
					batch.Runner(i).Cache.Free() // its pages back to the device: a run is 9 GB of the 8B's
				}
			})
		}
		if dw != nil {
			dw.Free()
		}
	}
}

// fakeBackend opens the CUDA backend on the fake device.
func fakeBackend(b testing.TB) *cuda.Backend {
	b.Helper()
	be, err := cuda.NewFakeBackend("bf16")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close() })
	return be
}

// TestFakeBackendSteps runs the CUDA backend's host code on the fake device
// (no GPU needed, so it runs in CI): prompts and batched decode steps of
// 12 streams under policies that batch, evict, shift and score, with lanes.
// Nothing is computed; the test checks that the host side runs to the end
// without a panic and asks the driver for launches and copies, and that a
// step waits for the device once a layer at most (H2O's and TOVA's reads of
// their streams' probabilities included: their calls batch, one read a
// layer) and once for the logits, but for a few waits of scratch growing
// while the caches fill; H2O's and TOVA's calls attend in the batch's grid
// and sum their probabilities in one attn_rtb_acc a layer, and Quest's
// choices go as one be_quest_choose_batch a layer (questbatch.go).
func TestFakeBackendSteps(t *testing.T) {
	t.Setenv("KVBENCH_LANES", "4")
	for _, pc := range fakePolicies {
		t.Run(pc.name, func(t *testing.T) {
			be := fakeBackend(t)
			const steps, layers, growth = 60, 2, 8
			var l0, c0, w0 int64
			var k0 map[string]int64
			fakeStepsAfterPrompt(t, be, pc.name, pc.params, 12, steps, func() { l0, c0, _, w0 = cuda.FakeCounts(); k0 = cuda.FakeKernels() })
			l1, c1, _, w1 := cuda.FakeCounts()
			k1 := cuda.FakeKernels()
			if l1 == l0 || c1 == c0 {
				t.Errorf("%d batch steps made %d launches and %d copies on the fake device", steps, l1-l0, c1-c0)
			}
			if pc.name == "quest" {
				if n := k1["be_quest_choose_batch"] - k0["be_quest_choose_batch"]; n == 0 || n > steps*layers {
					t.Errorf("%d batch steps: %d batched Quest choices, want 1 to %d (a layer's)", steps, n, steps*layers)
				}
			}
			if pc.name == "h2o" || pc.name == "tova" {
				if n, one := k1["attn_rtb_acc"]-k0["attn_rtb_acc"], k1["attn_rt_acc"]-k0["attn_rt_acc"]; n != steps*layers || one != 0 {
					t.Errorf("%d batch steps: %d batched and %d one-call sums of probabilities, want %d and 0", steps, n, one, steps*layers)
				}
			}
			if w := w1 - w0; w > steps*(layers+1)+growth {
				t.Errorf("%d batch steps waited for the device %d times, want at most %d (a layer's and the logits', and %d as scratch grows)", steps, w, steps*(layers+1)+growth, growth)
			}
		})
	}
}

// appendMeta appends a batch step's ints to all, a device selection's
// address (Quest's choice, RH_SEL) and the base of the page offsets
// (RH_PBASE) in each call's header masked to 1 where set: those addresses
// are each backend's own, so runs compare them as present or not (the
// offsets past the base are compared as they are). bases holds each
// call's (ints base, header offset).
func appendMeta(all, ints, bases []int32) []int32 {
	n0 := len(all)
	all = append(all, ints...)
	for k := 0; k+1 < len(bases); k += 2 {
		for _, w := range []int{cuda.HeaderSelWord, cuda.HeaderPBaseWord} {
			if at := n0 + int(bases[k]+bases[k+1]) + w; all[at] != 0 || all[at+1] != 0 {
				all[at], all[at+1] = 1, 1
			}
		}
	}
	return all
}

// TestBatchMetaParts: the metadata AttendBatch builds on several goroutines
// (batchMeta's parts) is the metadata it builds on one, call for call, for
// policies that batch (shifted keys, evictions, growing caches), on the fake
// device.
func TestBatchMetaParts(t *testing.T) {
	defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(4))
	for _, pc := range fakePolicies[:4] {
		t.Run(pc.name, func(t *testing.T) {
			record := func(perPart int) (all, bases []int32, maxParts int) {
				defer cuda.SetMetaCallsPerPart(perPart)()
				be := fakeBackend(t)
				be.OnBatchMeta(func(ints, b []int32, parts int) {
					all, bases = appendMeta(all, ints, b), append(bases, b...)
					maxParts = max(maxParts, parts)
				})
				fakeSteps(t, be, pc.name, pc.params, 12, 40)
				return all, bases, maxParts
			}
			one, b1, p1 := record(1 << 20)
			many, bn, pn := record(1)
			if p1 != 1 || pn < 2 {
				t.Fatalf("parts: %d and %d, want 1 and several", p1, pn)
			}
			if len(one) == 0 || !slices.Equal(one, many) {
				t.Errorf("metadata differs: %d ints on one goroutine, %d in %d parts", len(one), len(many), pn)
			}
			if !slices.Equal(b1, bn) {
				t.Errorf("the calls' offsets in the metadata differ: %v on one goroutine, %v in parts", b1[:min(len(b1), 24)], bn[:min(len(bn), 24)])
			}
		})
	}
}

// fakePolicies are the policies the fake-device tests run (those that
// AttendBatch takes first).
var fakePolicies = []struct {
	name   string
	params policies.Params
}{{"full", nil}, {"window", policies.Params{"budget": 40}}, {"streamingllm", policies.Params{"sinks": 4, "budget": 40}},
	{"random", policies.Params{"budget": 40}}, {"h2o", policies.Params{"budget": 40}}, {"tova", policies.Params{"budget": 40}},
	{"quest", policies.Params{"budget": 32, "page": 8, "dense_layers": 1}}}

// fakeSteps feeds streams streams of a small zero model on be prompts of
// different lengths under the policy, then steps them as one batch steps
// times (past every budget: evictions every step).
func fakeSteps(t *testing.T, be *cuda.Backend, policy string, params policies.Params, streams, steps int) {
	t.Helper()
	fakeStepsAfterPrompt(t, be, policy, params, streams, steps, func() {})
}

// fakeStepsAfterPrompt is fakeSteps calling prompted once the prompts are in.
func fakeStepsAfterPrompt(t *testing.T, be *cuda.Backend, policy string, params policies.Params, streams, steps int, prompted func()) {
	t.Helper()
	c := runtime.Config{Arch: "llama", Dim: 256, Hidden: 256, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 300, MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
	batch := promptedBatch(t, be, runtime.ZeroModel(c), policy, params, streams, 16, func(i int) int { return 30 + 3*i })
	sids, toks, targets, out := make([]int, streams), make([]int, streams), make([]int, streams), make([]float64, streams)
	for i := range sids {
		sids[i], toks[i], targets[i] = i, 3+i, 4+i
	}
	prompted()
	for range steps {
		if err := batch.LogProbs(sids, toks, targets, out); err != nil {
			t.Fatal(err)
		}
	}
	for i := range batch.Len() {
		batch.Runner(i).Reset()
	}
}

// promptedBatch starts streams runners of m on be (siblings: one upload),
// each under a fresh instance of the policy, feeds stream i a prompt of
// prompt(i) tokens (maxRows a chunk), and returns them as one batch.
func promptedBatch(tb testing.TB, be *cuda.Backend, m *runtime.Model, policy string, params policies.Params, streams, maxRows int, prompt func(i int) int) *runtime.Batch {
	tb.Helper()
	return promptedMixed(tb, be, m, func(int) (string, policies.Params) { return policy, params }, streams, maxRows, prompt)
}

// promptedMixed is promptedBatch with stream i under policy pick(i).
func promptedMixed(tb testing.TB, be *cuda.Backend, m *runtime.Model, pick func(i int) (string, policies.Params), streams, maxRows int, prompt func(i int) int) *runtime.Batch {
	tb.Helper()
	return promptedWith(tb, be, m, nil, pick, streams, maxRows, prompt)
}

// stepProfile starts a CPU profile of the timed steps alone where
// $KVBENCH_STEP_PPROF names a file (the benchmark's name is added to it),
// and returns what stops it.
func stepProfile(b *testing.B) func() {
	path := os.Getenv("KVBENCH_STEP_PPROF")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path + "." + strings.NewReplacer("/", "_").Replace(b.Name()))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// promptedWith is promptedMixed over the weights dw already uploaded (nil:
// an upload of its own, never freed: the fake device's memory runs out
// after a few 8B batches).
func promptedWith(tb testing.TB, be *cuda.Backend, m *runtime.Model, dw *runtime.DeviceWeights, pick func(i int) (string, policies.Params), streams, maxRows int, prompt func(i int) int) *runtime.Batch {
	tb.Helper()
	first, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: maxRows, KVType: runtime.BF16, Weights: dw})
	if err != nil {
		tb.Fatal(err)
	}
	rs := []*runtime.Runner{first}
	for len(rs) < streams {
		r, err := first.Sibling()
		if err != nil {
			tb.Fatal(err)
		}
		rs = append(rs, r)
	}
	logits := make([]float32, m.Config.Vocab)
	for i, r := range rs {
		p, err := policies.New(pick(i))
		if err != nil {
			tb.Fatal(err)
		}
		if err := p.Start(r); err != nil {
			tb.Fatal(err)
		}
		ids := make([]int, prompt(i))
		for j := range ids {
			ids[j] = 3 + j%50
		}
		p.Prompt(len(ids))
		if err := r.Forward(ids, logits); err != nil {
			tb.Fatal(err)
		}
	}
	batch, err := runtime.NewBatch(rs...)
	if err != nil {
		tb.Fatal(err)
	}
	return batch
}

// TestAccFillParts runs H2O's and TOVA's batch steps of 32 streams with 4
// threads, so that the copies of their sums back into the policies' slices
// go on several goroutines (accFinish's parts; run it with -race).
func TestAccFillParts(t *testing.T) {
	defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(4))
	for _, pc := range fakePolicies[4:6] {
		t.Run(pc.name, func(t *testing.T) {
			fakeSteps(t, fakeBackend(t), pc.name, pc.params, 32, 20)
		})
	}
}

// TestFakeMixedBatch steps one batch whose streams run every policy of
// fakePolicies side by side (their calls batched together: plain, shifted,
// with Acc, with a device selection) with 4 threads, on the fake device:
// the host side runs to the end, H2O's and TOVA's sums go as one
// attn_rtb_acc a layer and Quest's choices as one be_quest_choose_batch a
// layer, and a step waits once a layer at most (and for the logits).
func TestFakeMixedBatch(t *testing.T) {
	defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(4))
	be := fakeBackend(t)
	const streams, steps, layers, growth = 21, 30, 2, 8
	c := runtime.Config{Arch: "llama", Dim: 256, Hidden: 256, Layers: layers, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 300, MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
	pick := func(i int) (string, policies.Params) { p := fakePolicies[i%len(fakePolicies)]; return p.name, p.params }
	batch := promptedMixed(t, be, runtime.ZeroModel(c), pick, streams, 16, func(i int) int { return 30 + 3*i })
	sids, toks, targets, out := make([]int, streams), make([]int, streams), make([]int, streams), make([]float64, streams)
	for i := range sids {
		sids[i], toks[i], targets[i] = i, 3+i, 4+i
	}
	_, _, _, w0 := cuda.FakeCounts()
	k := kernelsDuring(func() {
		for range steps {
			if err := batch.LogProbs(sids, toks, targets, out); err != nil {
				t.Fatal(err)
			}
		}
	})
	_, _, _, w1 := cuda.FakeCounts()
	if k["attn_rtb_acc"] != steps*layers || k["attn_rt_acc"] != 0 {
		t.Errorf("%d steps: %d batched and %d one-call sums, want %d and 0", steps, k["attn_rtb_acc"], k["attn_rt_acc"], steps*layers)
	}
	if n := k["be_quest_choose_batch"]; n == 0 || n > steps*layers {
		t.Errorf("%d steps: %d batched Quest choices, want 1 to %d (a layer's)", steps, n, steps*layers)
	}
	if w := w1 - w0; w > steps*(layers+1)+growth {
		t.Errorf("%d steps waited %d times, want at most %d", steps, w, steps*(layers+1)+growth)
	}
	for i := range batch.Len() {
		batch.Runner(i).Reset()
	}
}

// TestBatchTableChecks: the metadata AttendBatch builds with its calls'
// page tables checked side by side (checkTables: most calls of a decode
// step need no refresh) is the metadata it builds with every call
// refreshed one after another, for the policies that batch, with prompts
// of different lengths and evictions every step (pages taken and freed);
// and the check does find current calls.
func TestBatchTableChecks(t *testing.T) {
	defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(4))
	defer cuda.SetMetaCallsPerPart(2)()
	for _, pc := range fakePolicies {
		t.Run(pc.name, func(t *testing.T) {
			// work: the device calls of the run (the page tables' uploads
			// among them: a table wrongly taken as current uploads less).
			record := func(on bool) (all, bases []int32, current int, work [3]int64) {
				defer cuda.SetTableChecks(on)()
				be := fakeBackend(t)
				be.OnBatchMeta(func(ints, b []int32, parts int) {
					all, bases = appendMeta(all, ints, b), append(bases, b...)
					current += be.CurrentCalls()
				})
				l0, c0, r0, _ := cuda.FakeCounts()
				fakeSteps(t, be, pc.name, pc.params, 12, 40)
				l1, c1, r1, _ := cuda.FakeCounts()
				return all, bases, current, [3]int64{l1 - l0, c1 - c0, r1 - r0}
			}
			off, boff, coff, woff := record(false)
			on, bon, con, won := record(true)

			if coff != 0 || con == 0 {
				t.Fatalf("calls found current: %d with the checks off, %d with them on (want 0 and some)", coff, con)
			}
			if len(off) == 0 || !slices.Equal(off, on) || !slices.Equal(boff, bon) {
				t.Errorf("metadata differs: %d ints refreshing every call, %d checking the tables (%d calls current)", len(off), len(on), con)
			}
			if woff != won {
				t.Errorf("launches, copies and reads: %v refreshing every call, %v checking the tables", woff, won)
			}
			t.Logf("%d of the batches' calls current", con)
		})
	}
}

// TestFakeDecodeMetaByValue: a decode call of the 8B shape's attention (32/8
// heads of 128, one row that sees every token) passes its ints to the
// split-KV kernel by value (RtBox): once the page tables are on the device,
// the call copies nothing to it. With KVBENCH_RT_BOX=off the same call
// uploads them. The call runs the tensor-core kernel of lean calls
// (attn_rt_*_tc), or with KVBENCH_ATTN_TC=off attn_rt's _short variant
// (600 tokens: chunks of a few steps). So does an MHA call (32/32 heads:
// 13 descriptor words a KV head, more than the 8B shape's 384-word box held
// before RT_BOX_WORDS was 960).
func TestFakeDecodeMetaByValue(t *testing.T) {
	for _, kv := range []int{8, 32} {
		for _, box := range []string{"on", "off"} {
			t.Run(fmt.Sprintf("32/%d/%s", kv, box), func(t *testing.T) {
				t.Setenv("KVBENCH_RT_BOX", box)
				t.Setenv("KVBENCH_ATTN_CLUSTER", "0") // TestFakeAttnCluster's
				tc := box == "on"                     // both kernels, each way
				if !tc {
					t.Setenv("KVBENCH_ATTN_TC", "off")
				}
				be := fakeBackend(t)
				c := runtime.Config{Arch: "llama", Dim: 4096, Hidden: 14336, Layers: 1, Heads: 32, KVHeads: kv, HeadDim: 128, Vocab: 32000,
					MaxSeq: 1 << 16, RopeTheta: 5e5, NormEps: 1e-5}
				const n = 600
				a := fakeDecodeArgs(t, be, c, n)
				be.Attend(a) // sends the page tables
				_, c0, _, _ := cuda.FakeCounts()
				be.Attend(a)
				_, c1, _, _ := cuda.FakeCounts()
				p := be.AttnPlan()
				want := "attn_rt_d128_g4_bf16_short"
				if kv == 32 {
					want = "attn_rt_d128_g1_bf16" // MHA: attn_rt (useTC: groups of 4+, or 8K tokens; no _short of one head)
				} else if tc {
					want = "attn_rt_d128_g4_bf16_tc"
				}
				if p.Kernel != want {
					t.Fatalf("kernel %s (plan %+v), want %s", p.Kernel, p, want)
				}
				if want := box == "on"; p.ByValue != want || (c1-c0 == 0) != want {
					t.Errorf("KVBENCH_RT_BOX=%s: ints by value %v, %d copies to the device, want by value %v", box, p.ByValue, c1-c0, want)
				}
			})
		}
	}
}

// TestFakeTCSharedMemory: a lean decode call runs the tensor-core kernel
// only where its stages fit a block's shared memory and, by default, two
// blocks fit a multiprocessor: on a device of 99 / 100 KB (a block, a
// multiprocessor: sm_86, sm_89) head dim 128 (64 KB of stages and the page
// pointers: one block a multiprocessor) runs attn_rt unless
// KVBENCH_ATTN_TC=on, and head dim 64 (32 KB: three) the tensor-core
// kernel; head dim 128 on an A100's 163 / 164 KB (two blocks) and on the
// H200's 227 / 228 KB the tensor-core kernel.
func TestFakeTCSharedMemory(t *testing.T) {
	for _, c := range []struct {
		optin, perSM int32
		hd           int
		env, want    string
	}{
		{99 << 10, 100 << 10, 128, "", "attn_rt_d128_g4_bf16_short"},
		{99 << 10, 100 << 10, 128, "on", "attn_rt_d128_g4_bf16_tc"},
		{99 << 10, 100 << 10, 64, "", "attn_rt_d64_g4_bf16_tc"},
		{99 << 10, 100 << 10, 64, "on", "attn_rt_d64_g4_bf16_tc"},
		{163 << 10, 164 << 10, 128, "", "attn_rt_d128_g4_bf16_tc"}, // two blocks of two stages (64 KB each) fit
		{163 << 10, 164 << 10, 128, "on", "attn_rt_d128_g4_bf16_tc"},
		{227 << 10, 228 << 10, 128, "", "attn_rt_d128_g4_bf16_tc"},
	} {
		t.Run(fmt.Sprintf("optin%dK/hd%d/%s", c.optin>>10, c.hd, c.env), func(t *testing.T) {
			defer cuda.SetFakeShared(c.optin, c.perSM)()
			t.Setenv("KVBENCH_ATTN_TC", c.env)
			t.Setenv("KVBENCH_ATTN_CLUSTER", "0") // TestFakeAttnCluster's
			be := fakeBackend(t)
			cfg := runtime.Config{Arch: "llama", Dim: 32 * c.hd, Hidden: 1024, Layers: 1, Heads: 32, KVHeads: 8, HeadDim: c.hd, Vocab: 100,
				MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
			const n = 600
			be.Attend(fakeDecodeArgs(t, be, cfg, n))
			if p := be.AttnPlan(); p.Kernel != c.want {
				t.Errorf("kernel %s, want %s (plan %+v)", p.Kernel, c.want, p)
			}
		})
	}
}

// TestFakeAttnCluster: with KVBENCH_ATTN_CLUSTER=1024 a lean decode call on
// the tensor cores whose rows hold at most 1,024 tokens runs its row's
// chunks as one cluster (_tcc, at most 8 chunks: 600 tokens in 8 of 96,
// rounded up to 32, ... 7 of them; 32 rows of 600 in 5 of tcLeast's 128)
// with no combine launched; longer rows,
// the default (0: none), an asked chunk that makes more than 8, and rows of
// one head under 8K (attn_rt) do not (and merge as the plan says: a
// combine launched where it says "combine", none where "fused"); an asked
// chunk that makes 8 or fewer is kept; a bad value is refused naming the
// variable.
func TestFakeAttnCluster(t *testing.T) {
	for _, c := range []struct {
		env, tcEnv     string
		kv, n, chunk   int
		want           string
		wantChunk, blk int
	}{
		{"1024", "", 8, 600, 0, "attn_rt_d128_g4_bf16_tcc", 96, 7 * 8},
		{"1024", "", 8, 1024, 0, "attn_rt_d128_g4_bf16_tcc", 128, 8 * 8},
		{"1024", "", 8, 1025, 0, "attn_rt_d128_g4_bf16_tc", 0, 0},
		{"", "", 8, 600, 0, "attn_rt_d128_g4_bf16_tc", 0, 0},
		{"0", "", 8, 600, 0, "attn_rt_d128_g4_bf16_tc", 0, 0},
		{"4096", "", 8, 2000, 0, "attn_rt_d128_g4_bf16_tcc", 256, 8 * 8},
		{"1024", "", 8, 600, 32, "attn_rt_d128_g4_bf16_tc", 32, 19 * 8},
		{"1024", "", 8, 600, 128, "attn_rt_d128_g4_bf16_tcc", 128, 5 * 8},
		{"1024", "", 32, 600, 0, "attn_rt_d128_g1_bf16", 0, 0},
		{"1024", "on", 32, 600, 0, "attn_rt_d128_g1_bf16_tcc", 128, 5 * 32}, // 32 rows: tcLeast's 128
		// 1,600,000 tokens in 8 chunks of 200,000: their page pointers (16
		// bytes a page of 16 tokens, 200 KB) and the stages (64 KB) would
		// not fit a block's 227 KB of shared memory.
		{"2000000", "", 8, 1600000, 0, "attn_rt_d128_g4_bf16_tc", 0, 0},
	} {
		t.Run(fmt.Sprintf("%s/%s/32x%d/n%d/chunk%d", c.env, c.tcEnv, c.kv, c.n, c.chunk), func(t *testing.T) {
			t.Setenv("KVBENCH_ATTN_CLUSTER", c.env)
			t.Setenv("KVBENCH_ATTN_TC", c.tcEnv)
			be := fakeBackend(t)
			if err := be.SetAttnChunk(c.chunk); err != nil {
				t.Fatal(err)
			}
			cfg := runtime.Config{Arch: "llama", Dim: 4096, Hidden: 1024, Layers: 1, Heads: 32, KVHeads: c.kv, HeadDim: 128, Vocab: 100,
				MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
			a := fakeDecodeArgs(t, be, cfg, c.n)
			be.Attend(a)
			stop := cuda.FakeTrace()
			be.Attend(a)
			launched := stop()
			p := be.AttnPlan()
			if p.Kernel != c.want {
				t.Fatalf("kernel %s, want %s (plan %+v)", p.Kernel, c.want, p)
			}
			if c.wantChunk != 0 && (p.Chunk != c.wantChunk || p.Blocks != c.blk) {
				t.Errorf("chunk %d, %d blocks; want %d, %d (plan %+v)", p.Chunk, p.Blocks, c.wantChunk, c.blk, p)
			}
			combine := slices.ContainsFunc(launched, func(s string) bool { return strings.Contains(s, "combine") })
			switch {
			case strings.HasSuffix(p.Kernel, "_tcc") && combine:
				t.Errorf("%s: a combine launched (launches %v)", p.Kernel, launched)
			case strings.HasSuffix(p.Kernel, "_tc") && p.Merge == "combine" && !combine:
				t.Errorf("%s over %d blocks: no combine launched (launches %v)", p.Kernel, p.Blocks, launched)
			case p.Merge == "fused" && combine:
				t.Errorf("%s merged fused: a combine launched (launches %v)", p.Kernel, launched)
			case strings.HasSuffix(p.Kernel, "_tc") && p.Blocks > cfg.KVHeads && p.Merge == "":
				t.Errorf("%s over %d blocks: no merge (plan %+v)", p.Kernel, p.Blocks, p)
			}
		})
	}
	refusesEnv(t, "KVBENCH_ATTN_CLUSTER", "-5")
}

// refusesEnv checks that a backend is not made with name=value and that the
// error names the variable.
func refusesEnv(t *testing.T, name, value string) {
	t.Helper()
	t.Setenv(name, value)
	be, err := cuda.NewFakeBackend("bf16")
	if err == nil {
		be.Close()
		t.Fatalf("%s=%s: backend made, want an error", name, value)
	}
	if !strings.Contains(err.Error(), name) {
		t.Errorf("error %q does not name %s", err, name)
	}
}

// TestFakeTCSlots: the tensor-core kernel's chosen chunk fills two
// resident blocks a multiprocessor by default (KVBENCH_ATTN_TC_SLOTS), all
// that fit with 0 (heads of 64 fit six on the fake device's 228 KB), and
// a bad value is refused naming the variable.
func TestFakeTCSlots(t *testing.T) {
	chunk := func(t *testing.T, slots string) cuda.Plan {
		t.Setenv("KVBENCH_ATTN_TC_SLOTS", slots)
		be := fakeBackend(t)
		cfg := runtime.Config{Arch: "llama", Dim: 2048, Hidden: 1024, Layers: 1, Heads: 32, KVHeads: 8, HeadDim: 64, Vocab: 100,
			MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
		const n = 16384
		be.Attend(fakeDecodeArgs(t, be, cfg, n))
		return be.AttnPlan()
	}
	two, all := chunk(t, ""), chunk(t, "0")
	if two.Kernel != "attn_rt_d64_g4_bf16_tc" || all.Kernel != two.Kernel {
		t.Fatalf("kernels %s, %s; want attn_rt_d64_g4_bf16_tc", two.Kernel, all.Kernel)
	}
	if all.Resident < 4 {
		t.Fatalf("%d resident blocks a multiprocessor with heads of 64, want 4 or more (plan %+v)", all.Resident, all)
	}
	// 8 split rows over 132 multiprocessors: 2 slots a multiprocessor are
	// 33 blocks a row (16,384 / 33 -> 512 tokens), 6 (two stages of heads
	// of 64: 32 KB a block) are 99 (-> 192).
	if two.Chunk != 512 || all.Resident != 6 || all.Chunk != 192 {
		t.Errorf("chunks %d (default) and %d (KVBENCH_ATTN_TC_SLOTS=0, %d resident), want 512 and 192 (6)", two.Chunk, all.Chunk, all.Resident)
	}
	refusesEnv(t, "KVBENCH_ATTN_TC_SLOTS", "-1")
}

// fakeTCBackend makes a fake backend on an H100's memory figures (h100) or
// the H200's, the tensor-core kernel asked for every call it serves
// (KVBENCH_ATTN_TC=on), no clusters, and $name set to value.
func fakeTCBackend(t *testing.T, h100 bool, name, value string) *cuda.Backend {
	t.Helper()
	if h100 {
		t.Cleanup(cuda.SetFakeMemory(2619000, 5120))
	}
	t.Setenv(name, value)
	t.Setenv("KVBENCH_ATTN_CLUSTER", "0")
	t.Setenv("KVBENCH_ATTN_TC", "on")
	return fakeBackend(t)
}

// TestFakeTCSlotsByMemory: heads of 128 (two blocks fit a multiprocessor)
// fill one block a multiprocessor on a device whose memory is slow (an
// H100's figures), in chunks of 16,384 / 16 = 1,024 tokens over 128 blocks
// whose rows of 4 heads merge fused (16 chunks), and two on the H200's (33
// blocks a row -> chunks of 512, merged by the combine);
// KVBENCH_ATTN_TC_SLOTS=2 gives the H100 the H200's plan. MHA rows on the
// tensor cores (KVBENCH_ATTN_TC=on) keep two there: 32 rows of 8 chunks of
// 2,048, merged polled (the grid resident at once).
func TestFakeTCSlotsByMemory(t *testing.T) {
	for _, c := range []struct {
		h100   bool
		kv     int
		env    string
		kernel string
		chunk  int
		blocks int
		merge  string
	}{
		{false, 8, "", "attn_rt_d128_g4_bf16_tc", 512, 256, "combine"},
		{true, 8, "", "attn_rt_d128_g4_bf16_tc", 1024, 128, "fused"},
		{true, 8, "2", "attn_rt_d128_g4_bf16_tc", 512, 256, "combine"},
		{true, 32, "", "attn_rt_d128_g1_bf16_tc", 2048, 256, "polled"},
	} {
		t.Run(fmt.Sprintf("h100=%v/%d/slots%s", c.h100, c.kv, c.env), func(t *testing.T) {
			be := fakeTCBackend(t, c.h100, "KVBENCH_ATTN_TC_SLOTS", c.env)
			cfg := runtime.Config{Arch: "llama", Dim: 4096, Hidden: 1024, Layers: 1, Heads: 32, KVHeads: c.kv, HeadDim: 128, Vocab: 100,
				MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
			be.Attend(fakeDecodeArgs(t, be, cfg, 16384))
			p := be.AttnPlan()
			if p.Kernel != c.kernel || p.Chunk != c.chunk || p.Blocks != c.blocks || p.Merge != c.merge {
				t.Errorf("plan %+v, want %s in %d blocks of %d tokens, merge %s", p, c.kernel, c.blocks, c.chunk, c.merge)
			}
		})
	}
}

// TestFakeGrowthNoWait: an Attend whose page tables outgrow their pool (a
// pool of 16 words to start with) and whose uploads outgrow the staging
// arena grows both without waiting for the device (the old ones are freed
// at the next wait); the next download waits once.
func TestFakeGrowthNoWait(t *testing.T) {
	defer cuda.SetTablePoolMin(16)()
	be := fakeBackend(t)
	c := runtime.Config{Arch: "llama", Dim: 512, Hidden: 1024, Layers: 1, Heads: 8, KVHeads: 8, HeadDim: 64, Vocab: 100,
		MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
	const n = 20000 // 1,250 pages a list: the pool grows from 16 words several times
	kc, _ := fakeFilledCache(t, be, c, n)
	q, out := be.Alloc(c.Heads*c.HeadDim), be.Alloc(c.Heads*c.HeadDim)
	_, _, _, w0 := cuda.FakeCounts()
	be.Attend(&runtime.AttnArgs{Rows: 1, QPos: []int{n - 1}, Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim,
		Scale: 0.125, Seqs: kc.Seqs(0), Rope: runtime.RopeHalf, Theta: c.RopeTheta, Q: q, Out: out})
	size, _, _, _ := be.TableWords()
	_, _, _, w1 := cuda.FakeCounts()
	if size < int64(2*n/16*c.KVHeads) || w1 != w0 {
		t.Errorf("a pool of %d words, %d waits for the device; want at least %d words and no wait", size, w1-w0, 2*n/16*c.KVHeads)
	}
	be.Read(make([]float32, 1), out, 0)
	if _, _, _, w2 := cuda.FakeCounts(); w2 != w1+1 {
		t.Errorf("the download waited %d times, want once", w2-w1)
	}
}

// TestEnvSwitches: the backend's on/off switches refuse other values, naming
// the variable.
func TestEnvSwitches(t *testing.T) {
	for _, name := range []string{"KVBENCH_GRAPHS", "KVBENCH_RT_BOX", "KVBENCH_KV_BOX", "KVBENCH_ROPE_KV", "KVBENCH_MV_ROPE", "KVBENCH_ACC_DEFER",
		"KVBENCH_ACC_GROUP", "KVBENCH_PAGE_TABLES", "KVBENCH_ATTN_TC", "KVBENCH_ATTN_EARLY", "KVBENCH_ATTN_TC_ACC"} {
		t.Run(name, func(t *testing.T) { refusesEnv(t, name, "maybe") })
	}
}

// TestFakeDecodeStepUploads: a decode step of one stream (the 8B shape at
// 512 tokens) uploads nothing a layer: its KV stores go by value with the
// q/k/v products and RoPE (be_mv_qkv_rope, one a layer; be_rope_kv with
// KVBENCH_MV_ROPE=off; with KVBENCH_ROPE_KV=off in a be_kv_box launch of
// their own), the attention's ints too (RtBox); the step's copies are its
// own (the token, the positions and frequencies of RoPE), fewer than its
// layers. With KVBENCH_KV_BOX=off each layer's store uploads its copies
// (be_kv_ops). The step's products run directly, not from CUDA graphs,
// unless KVBENCH_GRAPHS=on (graphsFor; a graph ends with the q/k/v
// products, so RoPE is be_rope_kv).
func TestFakeDecodeStepUploads(t *testing.T) {
	for _, cs := range []struct{ box, ropeKV, mvRope, graphs string }{{"", "", "", ""}, {"", "", "off", ""}, {"", "off", "", ""},
		{"off", "", "", ""}, {"", "", "", "on"}, {"", "", "", "off"}} {
		t.Run(fmt.Sprintf("kvbox %q, rope kv %q, mv rope %q, graphs %q", cs.box, cs.ropeKV, cs.mvRope, cs.graphs), func(t *testing.T) {
			t.Setenv("KVBENCH_KV_BOX", cs.box)
			t.Setenv("KVBENCH_ROPE_KV", cs.ropeKV)
			t.Setenv("KVBENCH_MV_ROPE", cs.mvRope)
			t.Setenv("KVBENCH_GRAPHS", cs.graphs)
			c := runtime.Config{Arch: "llama", Dim: 4096, Hidden: 14336, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128, Vocab: 32000,
				MaxSeq: 4096, RopeTheta: 5e5, NormEps: 1e-5, BOS: 1, EOS: 2}
			r, logits := fakePrompted(t, fakeBackend(t), c)
			for range 3 { // steps until the graphs replay
				if err := r.Forward([]int{5}, logits); err != nil {
					t.Fatal(err)
				}
			}
			_, c0, _, _ := cuda.FakeCounts()
			k0 := cuda.FakeKernels()
			if err := r.Forward([]int{5}, logits); err != nil {
				t.Fatal(err)
			}
			_, c1, _, _ := cuda.FakeCounts()
			k1 := cuda.FakeKernels()
			L := int64(c.Layers)
			got := [5]int64{}
			for i, name := range []string{"be_mv_qkv_rope", "be_rope_kv", "be_rope", "be_kv_box", "be_kv_ops"} {
				got[i] = k1[name] - k0[name]
			}
			want := [5]int64{L, 0, 0, 0, 0}
			switch {
			case cs.box == "off":
				want = [5]int64{0, 0, L, 0, L}
			case cs.ropeKV == "off":
				want = [5]int64{0, 0, L, L, 0}
			case cs.mvRope == "off", cs.graphs == "on": // a replayed graph ends with the products
				want = [5]int64{0, L, 0, 0, 0}
			}
			if got != want {
				t.Errorf("launches of be_mv_qkv_rope, be_rope_kv, be_rope, be_kv_box, be_kv_ops: %v, want %v", got, want)
			}
			if copies := c1 - c0; (cs.box == "off") != (copies >= L) {
				t.Errorf("%d copies to the device in a step of %d layers", copies, L)
			}
			if g, want := k1["graph"]-k0["graph"], map[string]int64{"on": 2 * L}[cs.graphs]; g != want {
				t.Errorf("KVBENCH_GRAPHS=%q: %d graph launches in a step, want %d", cs.graphs, g, want)
			}
		})
	}
}

// TestFakeReleaseDropsPendingRoPE: a decode step's RoPE left pending
// (ropeCall), and its q/k/v products (qkvCall) with it or alone, when the
// work is released after a failure are dropped, not launched later over the
// freed queries and keys.
func TestFakeReleaseDropsPendingRoPE(t *testing.T) {
	t.Setenv("KVBENCH_ROPE_KV", "") // the switches under which a decode RoPE waits
	t.Setenv("KVBENCH_KV_BOX", "")
	t.Setenv("KVBENCH_MV_ROPE", "")
	for _, withRope := range []bool{false, true} {
		be := fakeBackend(t)
		x, q, k, v := be.Alloc(256), be.Alloc(4*64), be.Alloc(2*64), be.Alloc(2*64)
		wq, err := be.Upload(&runtime.Tensor{Name: "wq", DType: runtime.BF16, Shape: []int{4 * 64, 256}, U16: make([]uint16, 4*64*256)})
		if err != nil {
			t.Fatal(err)
		}
		wk, err := be.Upload(&runtime.Tensor{Name: "wk", DType: runtime.BF16, Shape: []int{2 * 64, 256}, U16: make([]uint16, 2*64*256)})
		if err != nil {
			t.Fatal(err)
		}
		k0 := cuda.FakeKernels()
		be.MatMul3(x, 1, 256, runtime.MatOut{Dst: q, W: wq, Out: 4 * 64}, runtime.MatOut{Dst: k, W: wk, Out: 2 * 64},
			runtime.MatOut{Dst: v, W: wk, Out: 2 * 64})
		if withRope { // interleaved pairs: the RoPE takes the products
			be.RoPE2(q, k, 1, 4, 2, 64, []int{7}, 1e4, runtime.RopeInterleaved)
		}
		if err := be.ReleaseWork(); err != nil {
			t.Fatal(err)
		}
		y := be.Alloc(8)
		be.Write(y, 0, make([]float32, 8)) // flushes what is queued
		k1 := cuda.FakeKernels()
		n := int64(0)
		for _, name := range []string{"be_rope", "be_rope_kv", "be_mv_qkv_rope", "be_mv_r8", "be_mv_r4"} {
			n += k1[name] - k0[name]
		}
		if n != 0 {
			t.Errorf("with RoPE %v: %d launches of the products or RoPE after ReleaseWork, want none", withRope, n)
		}
	}
}

// TestNormThreadsEnv: KVBENCH_NORM_THREADS takes a multiple of 32 from 32
// to 1024 and refuses anything else, naming the variable.
func TestNormThreadsEnv(t *testing.T) {
	for _, v := range []string{"256", "1024", "32"} {
		t.Setenv("KVBENCH_NORM_THREADS", v)
		be, err := cuda.NewFakeBackend("bf16")
		if err != nil {
			t.Fatalf("KVBENCH_NORM_THREADS=%s: %v", v, err)
		}
		be.Close()
	}
	for _, v := range []string{"100", "2048", "0", "abc"} {
		t.Run(v, func(t *testing.T) { refusesEnv(t, "KVBENCH_NORM_THREADS", v) })
	}
}

// TestFakeMemRateChoice: rows of one head (32/32, MHA) of 600 tokens take
// attn_rt on a device whose memory gives 16 bytes a multiprocessor cycle or
// more (the fake device's H200 figures: 18.8) and the tensor-core kernel on
// an H100's (2,619 MHz over 5,120 bits: 12.8: slowTC); of 1,200 attn_rt on
// both, of 9,000 the tensor cores on both; groups of 4 (32/8) take them on
// both.
func TestFakeMemRateChoice(t *testing.T) {
	const rt, tc, tc4 = "attn_rt_d128_g1_bf16", "attn_rt_d128_g1_bf16_tc", "attn_rt_d128_g4_bf16_tc"
	for _, c := range []struct {
		clock, bus int32
		kv, n      int
		rate       float64
		want       string
	}{
		{3201000, 6144, 32, 600, 18.8, rt},
		{3201000, 6144, 32, 1200, 18.8, rt},
		{3201000, 6144, 32, 9000, 18.8, tc},
		{2619000, 5120, 32, 600, 12.8, tc},
		{2619000, 5120, 32, 1200, 12.8, rt},
		{2619000, 5120, 32, 9000, 12.8, tc},
		{2619000, 5120, 8, 600, 12.8, tc4},
		{0, 0, 32, 600, 0, rt}, // unknown: the H200's choice
	} {
		t.Run(fmt.Sprintf("%d/%d/32x%d/%d", c.clock, c.bus, c.kv, c.n), func(t *testing.T) {
			defer cuda.SetFakeMemory(c.clock, c.bus)()
			t.Setenv("KVBENCH_ATTN_TC", "")
			t.Setenv("KVBENCH_ATTN_CLUSTER", "0")
			be := fakeBackend(t)
			if got := be.D.MemBytesPerSMCycle(); math.Abs(got-c.rate) > 0.05 {
				t.Errorf("bytes a multiprocessor cycle %.2f, want %.1f", got, c.rate)
			}
			cfg := runtime.Config{Arch: "llama", Dim: 4096, Hidden: 1024, Layers: 1, Heads: 32, KVHeads: c.kv, HeadDim: 128, Vocab: 100,
				MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
			be.Attend(fakeDecodeArgs(t, be, cfg, c.n))
			if p := be.AttnPlan(); p.Kernel != c.want {
				t.Errorf("kernel %s, want %s (plan %+v)", p.Kernel, c.want, p)
			}
		})
	}
}

// TestFakeTCStages: the tensor-core decode kernels' stages a warp are 2,
// KVBENCH_ATTN_TC_ST=N (2-4) where set, on the H200's memory figures and
// on an H100's alike; a value other than 2 is compiled in (-DTC_ST=N among
// the NVRTC options) and the blocks' shared memory is sized by it (64 KB of
// stages at head dim 128 for 2, 96 for 3); a value outside [2, 4] is
// refused naming the variable.
func TestFakeTCStages(t *testing.T) {
	for _, c := range []struct {
		h100   bool
		env    string
		stages int
	}{{false, "", 2}, {false, "3", 3}, {false, "4", 4}, {true, "", 2}, {true, "3", 3}} {
		t.Run(fmt.Sprintf("h100=%v/st%s", c.h100, c.env), func(t *testing.T) {
			be := fakeTCBackend(t, c.h100, "KVBENCH_ATTN_TC_ST", c.env)
			opt := fmt.Sprintf("-DTC_ST=%d", c.stages)
			if got, want := slices.Contains(cuda.KernelOptions(), opt), c.stages != 2; got != want {
				t.Errorf("options %v: %s among them %v, want %v", cuda.KernelOptions(), opt, got, want)
			}
			cfg := runtime.Config{Arch: "llama", Dim: 4096, Hidden: 1024, Layers: 1, Heads: 32, KVHeads: 8, HeadDim: 128, Vocab: 100,
				MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
			be.Attend(fakeDecodeArgs(t, be, cfg, 600))
			p := be.AttnPlan()
			if want := 4*c.stages*2*16*256 + 16*(p.Chunk/16+2); p.Kernel != "attn_rt_d128_g4_bf16_tc" || p.SharedMem != want {
				t.Errorf("kernel %s, shared memory %d; want the _tc kernel, %d (plan %+v)", p.Kernel, p.SharedMem, want, p)
			}
		})
	}
	t.Setenv("KVBENCH_ATTN_TC_ST", "5")
	if _, err := cuda.NewFakeBackend("bf16"); err == nil || !strings.Contains(err.Error(), "KVBENCH_ATTN_TC_ST") {
		t.Errorf("KVBENCH_ATTN_TC_ST=5: %v, want an error naming it", err)
	}
}
