package cuda_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestFakeEarlyReads: a lean tensor-core decode call reads its settled
// tokens before waiting for the kernel ahead (Plan.Early, RH_EARLY) only
// when, since the last such call over each of its sequences, the sequence
// took one appended token and nothing else and the stream was serialised
// (here: the read of a result, a wait). Every other history reads after
// the wait: the first call, a call with no wait since the last, two tokens
// appended, a move beside the append (KVSeq.Writes; a real eviction's move
// takes the call off the tensor cores: its positions are out of order), a
// prompt's rows, and KVBENCH_ATTN_EARLY=off.
func TestFakeEarlyReads(t *testing.T) {
	c := runtime.Config{Arch: "llama", Dim: 2048, Hidden: 1024, Layers: 1, Heads: 32, KVHeads: 8, HeadDim: 64, Vocab: 100,
		MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
	run := func(t *testing.T) ([]bool, []string) {
		be := fakeBackend(t)
		const n = 1000
		kc, k := fakeFilledCache(t, be, c, n)
		v := be.Alloc(4 * c.KVDim())
		q, out := be.Alloc(4*c.Heads*c.HeadDim), be.Alloc(4*c.Heads*c.HeadDim)
		host := make([]float32, 1)
		var got []bool
		var kernels []string
		attend := func(rows int, moved uint64) {
			seqs := kc.Seqs(0)
			if moved > 0 { // copies of the sequences as if a move had kept them lean
				seqs = append([]runtime.KVSeq(nil), seqs...)
				for i := range seqs {
					seqs[i].Writes += moved
				}
			}
			qpos := make([]int, rows)
			for i := range qpos {
				qpos[i] = seqs[0].N - rows + i
			}
			be.Attend(&runtime.AttnArgs{Rows: rows, QPos: qpos, Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim,
				Scale: 0.125, Seqs: seqs, Rope: runtime.RopeHalf, Theta: c.RopeTheta, Q: q, Out: out})
			got = append(got, be.AttnPlan().Early)
			kernels = append(kernels, be.AttnPlan().Kernel)
		}
		pos := seqsN(kc)
		appendRows := func(rows int) {
			p := make([]int, rows)
			for i := range p {
				p[i] = pos
				pos++
			}
			kc.Append(0, k, v, rows, p)
		}
		wait := func() { be.Read(host, out, 0) }
		attend(1, 0) // 0: the first call over the sequences
		wait()
		appendRows(1)
		attend(1, 0) // 1: one token appended, a wait: early
		wait()
		appendRows(1)
		attend(1, 0) // 2: again
		appendRows(1)
		attend(1, 0) // 3: no wait since the last call
		wait()
		appendRows(1)
		appendRows(1)
		wait()
		attend(1, 0) // 4: two tokens appended
		wait()
		appendRows(1)
		wait()
		attend(1, 1) // 5: a move beside the append (Writes two more, N one)
		wait()
		appendRows(1)
		wait()
		attend(1, 1) // 6: early again (the same count of moves as the last call saw)
		wait()
		appendRows(4)
		wait()
		attend(4, 1) // 7: a prompt's rows (not on the tensor cores)
		wait()
		appendRows(1)
		attend(1, 1) // 8: five writes since the last call on the tensor cores (6)
		wait()
		appendRows(1)
		attend(1, 1) // 9: early again
		wait()
		for h := range c.KVHeads {
			kc.Evict(0, h, []int32{3}) // the last token moves into slot 3
		}
		appendRows(1)
		wait()
		attend(1, 1) // 10: a real eviction: positions out of order, not a lean call
		return got, kernels
	}
	got, kernels := run(t)
	want := []bool{false, true, true, false, false, false, true, false, false, true, false}
	if len(got) != len(want) {
		t.Fatalf("%d calls, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("call %d: early %v, want %v (all: %v)", i, got[i], want[i], got)
		}
		if tc := strings.HasSuffix(kernels[i], "_tc"); tc != (i != 7 && i != 10) {
			t.Errorf("call %d ran %s", i, kernels[i])
		}
	}
	t.Run("off", func(t *testing.T) {
		t.Setenv("KVBENCH_ATTN_EARLY", "off")
		got, _ := run(t)
		for i, e := range got {
			if e {
				t.Errorf("call %d read early with KVBENCH_ATTN_EARLY=off", i)
			}
		}
	})
}

func seqsN(kc *runtime.KVCache) int { return kc.Seqs(0)[0].N }

// TestFakeEarlyDecode: in a decode pass of full attention every layer's
// call reads early from the second step on (the logits' read serialises
// the stream between steps); under window, whose evictions move tokens,
// none does.
func TestFakeEarlyDecode(t *testing.T) {
	c := runtime.Config{Arch: "llama", Dim: 512, Hidden: 1024, Layers: 3, Heads: 8, KVHeads: 2, HeadDim: 64, Vocab: 1000,
		MaxSeq: 4096, RopeTheta: 1e4, NormEps: 1e-5}
	m := runtime.ZeroModel(c)
	for _, pc := range []struct {
		name   string
		params policies.Params
		early  bool
	}{{"full", nil, true}, {"window", policies.Params{"budget": 64}, false}} {
		t.Run(pc.name, func(t *testing.T) {
			be := fakeBackend(t)
			r, logits := fakePolicyPrompted(t, be, m, pc.name, pc.params)
			for step := range 4 {
				if err := r.Forward([]int{5}, logits); err != nil {
					t.Fatal(err)
				}
				want := pc.early && step > 0
				if plan := be.AttnPlan(); plan.Early != want {
					t.Errorf("step %d: the last layer's call (%s) read early %v, want %v", step, plan.Kernel, plan.Early, want)
				}
			}
		})
	}
}

// TestFakeEarlyGreedy: Runner.Greedy's steps on the device, which read
// nothing back between them, still read early in every layer from the
// second step on, as Forward's steps do: the stream still serialises
// between steps without the read (the step's uploads, its embedding's
// plain launch).
func TestFakeEarlyGreedy(t *testing.T) {
	c := runtime.Config{Arch: "llama", Dim: 512, Hidden: 1024, Layers: 3, Heads: 8, KVHeads: 2, HeadDim: 64, Vocab: 1000,
		MaxSeq: 4096, RopeTheta: 1e4, NormEps: 1e-5}
	m := runtime.ZeroModel(c)
	be := fakeBackend(t)
	r, logits := fakePolicyPrompted(t, be, m, "full", nil)
	if err := r.Forward([]int{5}, logits); err != nil { // a step: the next ones may read early
		t.Fatal(err)
	}
	const n = 6
	e0 := be.EarlyCalls()
	if err := r.Greedy(5, n, make([]int, n), logits); err != nil {
		t.Fatal(err)
	}
	if got, want := be.EarlyCalls()-e0, int64(n*c.Layers); got != want {
		t.Errorf("%d of Greedy's attention calls read early, want %d (every layer of its %d steps)", got, want, n)
	}
}

// TestEarlyReadsGPU: decoding with the settled tokens read before the wait
// (the default) gives the logits of KVBENCH_ATTN_EARLY=off bit for bit (the
// same kernel, the same sums; only when the loads are asked for moves),
// for heads of 64 and 128 in groups of 4 and, on the tensor cores by
// KVBENCH_ATTN_TC=on, groups of 2, after prompts of one chunk and of many;
// and the default run did read early.
func TestEarlyReadsGPU(t *testing.T) {
	if ok, why := cuda.Available(); !ok {
		t.Skip("no CUDA device: " + why)
	}
	for _, sh := range []struct{ heads, kv, hd int }{{8, 2, 64}, {16, 4, 128}, {4, 2, 64}} {
		c := runtime.Config{Arch: "llama", Dim: sh.heads * sh.hd, Hidden: 512, Layers: 2, Heads: sh.heads, KVHeads: sh.kv,
			HeadDim: sh.hd, Vocab: 500, MaxSeq: 8192, RopeTheta: 1e4, NormEps: 1e-5}
		m := runtime.NewRandomModel(c, 7)
		for _, n := range []int{200, 3000} {
			t.Run(fmt.Sprintf("%d-%d-d%d/%d", sh.heads, sh.kv, sh.hd, n), func(t *testing.T) {
				t.Setenv("KVBENCH_ATTN_TC", "on")
				run := func(early string) ([]float32, int) {
					t.Setenv("KVBENCH_ATTN_EARLY", early)
					return decodeAfterPrompt(t, m, n, 24, func(p cuda.Plan) int {
						if p.Early {
							return 1
						}
						return 0
					})
				}
				got, reads := run("")
				want, off := run("off")
				if reads == 0 || off != 0 {
					t.Fatalf("steps that read early: %d by default, %d with KVBENCH_ATTN_EARLY=off", reads, off)
				}
				if !slices.Equal(got, want) {
					t.Errorf("logits reading early differ from KVBENCH_ATTN_EARLY=off's by %.3g (relative)", relDiff(got, want))
				}
			})
		}
	}
}
