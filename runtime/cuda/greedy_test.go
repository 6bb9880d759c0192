package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestFakeGreedy: Runner.Greedy of 8 tokens on the 8B shape reads from the
// device twice (the slots, then the last step's logits), where 8 Forward
// calls read 8 times; its first 7 steps embed from a slot and write their
// argmax to the next (be_embed_slot, be_argmax), the last embeds its token
// as Forward does.
func TestFakeGreedy(t *testing.T) {
	c := runtime.Config{Arch: "llama", Dim: 4096, Hidden: 14336, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128, Vocab: 32000,
		MaxSeq: 4096, RopeTheta: 5e5, NormEps: 1e-5, BOS: 1, EOS: 2}
	r, logits := fakePrompted(t, fakeBackend(t), c)
	const n = 8
	_, _, r0, _ := cuda.FakeCounts()
	k0 := cuda.FakeKernels()
	out := make([]int, n)
	if err := r.Greedy(5, n, out, logits); err != nil {
		t.Fatal(err)
	}
	_, _, r1, _ := cuda.FakeCounts()
	k1 := cuda.FakeKernels()
	if reads := r1 - r0; reads != 2 {
		t.Errorf("%d reads from the device in Greedy of %d tokens, want 2", reads, n)
	}
	for name, want := range map[string]int64{"be_argmax": n - 1, "be_embed_slot": n - 1, "be_embed": 1} {
		if got := k1[name] - k0[name]; got != want {
			t.Errorf("%d launches of %s, want %d", got, name, want)
		}
	}
	if r.Pos() != 512+n {
		t.Errorf("position %d after Greedy, want %d", r.Pos(), 512+n)
	}
	for range n {
		if err := r.Forward([]int{5}, logits); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, r2, _ := cuda.FakeCounts(); r2-r1 != n {
		t.Errorf("%d reads in %d Forward steps, want one each", r2-r1, n)
	}
}

// argmaxRef is be_argmax's contract on the host: the first largest finite
// value's index (-1: none), the count of non-finite values, the first one's
// index and its bits (0, 0 when none).
func argmaxRef(v []float32) [4]int32 {
	out := [4]int32{-1, 0, 0, 0}
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			if out[1] == 0 {
				out[2], out[3] = int32(i), int32(math.Float32bits(x))
			}
			out[1]++
			continue
		}
		if out[0] < 0 || x > v[out[0]] {
			out[0] = int32(i)
		}
	}
	return out
}

// TestArgmaxGPU checks be_argmax (Backend.Argmax) against argmaxRef on
// random logits of several lengths: ties of the largest value placed at
// random (and at the first and last index), NaN and infinities among them,
// and rows of none finite.
func TestArgmaxGPU(t *testing.T) {
	g := newGPU(t)
	rng := rand.New(rand.NewPCG(7, 1))
	const slotsN = 4
	slots := g.Alloc(slotsN * runtime.GreedySlot)
	for _, n := range []int{1, 31, 1000, 1025, 32000, 151936} {
		for _, kind := range []string{"plain", "ties", "nan", "inf", "none"} {
			v := make([]float32, n)
			for i := range v {
				v[i] = rng.Float32()*8 - 4
			}
			switch kind {
			case "ties":
				for _, i := range []int{n - 1, rng.IntN(n), 0} {
					v[i] = 9
				}
			case "nan":
				for range 3 {
					v[rng.IntN(n)] = float32(math.NaN())
				}
			case "inf":
				v[rng.IntN(n)] = float32(math.Inf(1))
				v[rng.IntN(n)] = float32(math.Inf(-1))
			case "none":
				for i := range v {
					v[i] = float32(math.NaN())
				}
			}
			lg := g.Alloc(n)
			g.Write(lg, 0, v)
			i := rng.IntN(slotsN)
			g.Argmax(slots, i, lg, n)
			got := make([]float32, runtime.GreedySlot)
			g.Read(got, slots, i*runtime.GreedySlot)
			var words [4]int32
			for k := range words {
				words[k] = int32(math.Float32bits(got[k]))
			}
			if want := argmaxRef(v); words != want {
				t.Errorf("%d logits, %s: slot %v, want %v", n, kind, words, want)
			}
			g.Free(lg)
		}
	}
}

// TestGreedyGPU: Runner.Greedy on the device chooses the tokens that
// Forward and the host's argmax choose one step at a time, with the same
// last logits, on kvbench-ref-13m at both computes and both page types (the
// same kernels run: identical values).
func TestGreedyGPU(t *testing.T) {
	m, err := runtime.Load(fixtures.Path(t, "models/kvbench-ref-13m"))
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.Vocab
	prompt := spreadTokens(300, V)
	const n = 24
	for _, prec := range []string{"bf16", "f32"} {
		for _, kt := range []runtime.DType{runtime.F32, runtime.BF16} {
			t.Run(fmt.Sprintf("%s/%v", prec, kt), func(t *testing.T) {
				g := newGPUPrec(t, prec)
				r, err := runtime.NewRunnerWith(m, g, runtime.RunnerOptions{MaxRows: 128, KVType: kt})
				if err != nil {
					t.Fatal(err)
				}
				logits := make([]float32, V)
				run := func(device bool) ([]int, []float32) {
					r.Reset()
					if err := r.Forward(prompt, logits); err != nil {
						t.Fatal(err)
					}
					toks := make([]int, n)
					first := runtime.Argmax(logits)
					if device {
						if err := r.Greedy(first, n, toks, logits); err != nil {
							t.Fatal(err)
						}
						return toks, slices.Clone(logits)
					}
					for k := range n {
						if err := r.Forward([]int{first}, logits); err != nil {
							t.Fatal(err)
						}
						first = runtime.Argmax(logits)
						toks[k] = first
					}
					return toks, slices.Clone(logits)
				}
				wantT, wantL := run(false)
				gotT, gotL := run(true)
				if !slices.Equal(gotT, wantT) {
					t.Errorf("tokens %v on the device, %v through Forward", gotT, wantT)
				}
				if !slices.Equal(gotL, wantL) {
					t.Errorf("last logits differ by %.3g (relative)", relDiff(gotL, wantL))
				}
			})
		}
	}
}

// BenchmarkFakeGreedy times 32 decode steps of the 8B shape on the fake
// device (host time: no kernels run) as Runner.Greedy queues them and as a
// loop of Forward and the host's argmax does (the logits read back, checked
// and scanned every step); with the fake device's time model
// (KVBENCH_FAKE_US, where the fake has one) the device's share too.
func BenchmarkFakeGreedy(b *testing.B) {
	c := runtime.Config{Arch: "llama", Dim: 4096, Hidden: 14336, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128, Vocab: 32000,
		MaxSeq: 4096, RopeTheta: 5e5, NormEps: 1e-5, BOS: 1, EOS: 2}
	const n = 32
	for _, loop := range []string{"greedy", "stepwise"} {
		b.Run(loop, func(b *testing.B) {
			r, logits := fakePrompted(b, fakeBackend(b), c)
			out := make([]int, n)
			b.ResetTimer()
			for range b.N {
				if loop == "greedy" {
					if err := r.Greedy(5, n, out, logits); err != nil {
						b.Fatal(err)
					}
				} else {
					tok := 5
					for range n {
						if err := r.Forward([]int{tok}, logits); err != nil {
							b.Fatal(err)
						}
						tok = runtime.Argmax(logits)
					}
				}
				b.StopTimer()
				r.Reset() // a short stream: the cache's pages stay few
				if err := r.Forward(out[:1], logits); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "us/token")
		})
	}
}
