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

// TestFakeLateAcc: a decode step of H2O or TOVA, one stream and a batch of
// eight, waits for the device twice (the deferred sums, the
// log-probabilities) where it waited once a layer and once for the
// log-probabilities with KVBENCH_ACC_DEFER=off; full attention waits once
// either way. Paced (the default), a step whose layers' reads land in
// three rounds (two event queries answered "not ready") waits twice more,
// and asks each later layer's event whether it has landed; with
// KVBENCH_ACC_PACE=off it asks none.
func TestFakeLateAcc(t *testing.T) {
	c := runtime.Config{Arch: "llama", Dim: 512, Hidden: 1024, Layers: 6, Heads: 8, KVHeads: 2, HeadDim: 64, Vocab: 1000,
		MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
	m := runtime.ZeroModel(c)
	for _, pc := range []struct {
		name   string
		params policies.Params
	}{{"h2o", policies.Params{"budget": 64}}, {"tova", policies.Params{"budget": 64}}, {"full", nil}} {
		for _, set := range [][3]string{{"", "", ""}, {"", "busy", ""}, {"", "off", ""}, {"off", "", ""}, {"", "", "on"}, {"", "off", "on"}} {
			deferAcc, pace, side := set[0], set[1], set[2]
			for _, streams := range []int{1, 8} {
				t.Run(fmt.Sprintf("%s/defer %q/pace %q/side %q/%d streams", pc.name, deferAcc, pace, side, streams), func(t *testing.T) {
					t.Setenv("KVBENCH_ACC_DEFER", deferAcc)
					t.Setenv("KVBENCH_ACC_STREAM", side)
					if pace == "off" {
						t.Setenv("KVBENCH_ACC_PACE", "off")
					}
					be := fakeBackend(t)
					dw, err := runtime.UploadWeights(m, be)
					if err != nil {
						t.Fatal(err)
					}
					batch := promptedWith(t, be, m, dw, func(int) (string, policies.Params) { return pc.name, pc.params }, streams, 64,
						func(int) int { return 200 })
					sids, toks, targets, out := make([]int, streams), make([]int, streams), make([]int, streams), make([]float64, streams)
					for i := range sids {
						sids[i], toks[i], targets[i] = i, 3+i, 4+i
					}
					step := func() { // log-probabilities: one read for every stream
						if pace == "busy" {
							cuda.SetFakeBusy(2)
						}
						if err := batch.LogProbs(sids, toks, targets, out); err != nil {
							t.Fatal(err)
						}
					}
					step()
					_, _, _, w0 := cuda.FakeCounts()
					q0 := cuda.FakeEventQueries()
					s0, sw0 := cuda.FakeSide()
					for range 3 {
						step()
					}
					cuda.SetFakeBusy(0)
					_, _, _, w1 := cuda.FakeCounts()
					queries := (cuda.FakeEventQueries() - q0) / 3
					s1, sw1 := cuda.FakeSide()
					sideCopies, streamWaits := (s1-s0)/3, (sw1-sw0)/3
					want, wantQ := int64(2), int64(c.Layers-1)
					switch {
					case pc.name == "full":
						want, wantQ = 1, 0
					case deferAcc == "off":
						want, wantQ = int64(c.Layers)+1, 0
					case pace == "off":
						wantQ = 0
					case pace == "busy": // rounds: layer 0; 1; 2 to the last
						want = 4
					}
					// On the side stream (KVBENCH_ACC_STREAM=on) each
					// layer's sums are one copy that the stream does not
					// wait for but the side stream does (one event wait
					// each); the batch's accWork is waited for before it is
					// written again (the layers after the first; one
					// stream's sums are in the staging arena); a wait for
					// the stream waits for the side stream too (one more).
					wantSide, wantSW := int64(0), int64(0)
					if side == "on" && pc.name != "full" && deferAcc == "" {
						wantSide, wantSW, want = int64(c.Layers), int64(c.Layers), want+1
						if streams > 1 {
							wantSW += int64(c.Layers - 1)
						}
					}
					if got := (w1 - w0) / 3; got != want {
						t.Errorf("%d waits for the device a step, want %d", got, want)
					}
					if queries != wantQ {
						t.Errorf("%d event queries a step, want %d", queries, wantQ)
					}
					if sideCopies != wantSide || streamWaits != wantSW {
						t.Errorf("%d side copies and %d stream waits a step, want %d and %d", sideCopies, streamWaits, wantSide, wantSW)
					}
				})
			}
		}
	}
}

// TestFakeLatePrompt: H2O's dense prompt of four chunks of 128 rows (the
// tensor-core prefill and acc_cols: every row adds to the sums) waits for
// the device once a chunk before the last (the deferred sums, the pass's
// end) where it waited once a layer with KVBENCH_LATE_PROMPT=off; the last
// chunk, which compresses each layer after its attention, waits once a
// layer either way, and so does TOVA's, whose earlier chunks keep no sums.
// Each chunk's acc_cols runs once a layer in both.
func TestFakeLatePrompt(t *testing.T) {
	c := runtime.Config{Arch: "llama", Dim: 512, Hidden: 1024, Layers: 6, Heads: 8, KVHeads: 2, HeadDim: 64, Vocab: 1000,
		MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
	m := runtime.ZeroModel(c)
	const rows, chunks = 128, 4
	for _, pc := range []struct {
		name   string
		params policies.Params
	}{{"h2o", policies.Params{"budget": 64}}, {"tova", policies.Params{"budget": 64}}} {
		for _, off := range []string{"", "off"} {
			t.Run(fmt.Sprintf("%s/late prompt %q", pc.name, off), func(t *testing.T) {
				t.Setenv("KVBENCH_LATE_PROMPT", off)
				r, p := policyRunner(t, fakeBackend(t), m, rows, pc.name, pc.params)
				toks := make([]int, rows*chunks)
				for i := range toks {
					toks[i] = 3 + i%900
				}
				p.Prompt(len(toks))
				logits := make([]float32, c.Vocab)
				k0 := cuda.FakeKernels()
				_, _, _, w0 := cuda.FakeCounts()
				if err := r.Forward(toks, logits); err != nil { // in chunks of rows
					t.Fatal(err)
				}
				_, _, _, w1 := cuda.FakeCounts()
				cols := cuda.FakeKernels()["acc_cols_d64"] - k0["acc_cols_d64"]
				// The last chunk: each layer's sums, then the logits.
				want := int64(c.Layers) + 1
				switch {
				case pc.name == "h2o" && off == "off":
					want += (chunks - 1) * int64(c.Layers)
				case pc.name == "h2o":
					want += chunks - 1
				}
				if w1-w0 != want {
					t.Errorf("%d waits for the device, want %d", w1-w0, want)
				}
				if wantCols := int64(chunks * c.Layers); pc.name == "h2o" && cols != wantCols {
					t.Errorf("%d acc_cols launches, want %d", cols, wantCols)
				}
			})
		}
	}
}

// TestFakeSums: on the fake device H2O's scores after a prompt are all zero
// (its reads give zeros), and with KVBENCH_FAKE_SUMS=random they are the
// pseudo-random sums, positive and not all equal.
func TestFakeSums(t *testing.T) {
	c := runtime.Config{Arch: "llama", Dim: 256, Hidden: 256, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 300,
		MaxSeq: 1 << 12, RopeTheta: 1e4, NormEps: 1e-5}
	for _, random := range []bool{false, true} {
		t.Run(fmt.Sprintf("random %v", random), func(t *testing.T) {
			defer cuda.SetFakeSums(random)()
			r, p := policyRunner(t, fakeBackend(t), runtime.ZeroModel(c), 128, "h2o", policies.Params{"budget": 1000})
			toks := make([]int, 300)
			for i := range toks {
				toks[i] = 3 + i%290
			}
			p.Prompt(len(toks))
			if err := r.Forward(toks, make([]float32, c.Vocab)); err != nil {
				t.Fatal(err)
			}
			sc := p.(interface{ Scores(l, h int) []float64 }).Scores(1, 1)
			lo, hi := slices.Min(sc), slices.Max(sc)
			if len(sc) != len(toks) || (random && !(lo > 0 && hi > lo)) || (!random && (lo != 0 || hi != 0)) {
				t.Errorf("%d scores from %g to %g", len(sc), lo, hi)
			}
		})
	}
}

// lagProbe wraps a policy's hook and notes, at each AfterAttend of a
// prompt's last chunk, how many be_swiglu_bf16 launches (a layer's MLP) the
// pass has made so far.
type lagProbe struct {
	runtime.Hook
	mlps  []int64 // at each AfterAttend, the pass's MLP launches so far
	start int64
}

func (h *lagProbe) BeforeAttend(l int, a *runtime.AttnArgs) {
	if l == 0 {
		h.start, h.mlps = cuda.FakeKernels()["be_swiglu_bf16"], h.mlps[:0]
	}
	h.Hook.BeforeAttend(l, a)
}

func (h *lagProbe) AfterAttend(l int, a *runtime.AttnArgs) {
	h.mlps = append(h.mlps, cuda.FakeKernels()["be_swiglu_bf16"]-h.start)
	h.Hook.AfterAttend(l, a)
}

func (h *lagProbe) AfterAttendLag() bool {
	lh, ok := h.Hook.(runtime.LagHook)
	return ok && lh.AfterAttendLag()
}

func (h *lagProbe) AfterAttendLate() bool {
	lh, ok := h.Hook.(runtime.LateHook)
	return ok && lh.AfterAttendLate()
}

// TestFakeLagHooks: the prompt's last chunk of TOVA, H2O and SnapKV (each
// layer compressed after its attention) runs each layer's hooks once the layer's
// MLP is queued, so the host waits for that layer's sums alone (an event)
// while the device runs the MLP; with KVBENCH_LAG_HOOKS=off the hooks run
// before it, the device drained. Either way one wait a layer, then one for
// the logits, and the same evictions (the fake's sums are zeros: the same
// positions kept).
func TestFakeLagHooks(t *testing.T) {
	c := runtime.Config{Arch: "llama", Dim: 512, Hidden: 1024, Layers: 4, Heads: 8, KVHeads: 2, HeadDim: 64, Vocab: 1000,
		MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
	m := runtime.ZeroModel(c)
	const rows = 128
	for _, pc := range []struct {
		name   string
		params policies.Params
	}{{"h2o", policies.Params{"budget": 64}}, {"tova", policies.Params{"budget": 64}}, {"snapkv", policies.Params{"budget": 64}}} {
		held := map[string]string{}
		for _, off := range []string{"", "off"} {
			t.Run(fmt.Sprintf("%s/lag %q", pc.name, off), func(t *testing.T) {
				t.Setenv("KVBENCH_LAG_HOOKS", off)
				r, p := policyRunner(t, fakeBackend(t), m, rows, pc.name, pc.params)
				probe := &lagProbe{Hook: r.Hook}
				r.Hook = probe
				toks := make([]int, 2*rows)
				for i := range toks {
					toks[i] = 3 + i%900
				}
				p.Prompt(len(toks))
				logits := make([]float32, c.Vocab)
				if err := r.Forward(toks[:rows], logits); err != nil {
					t.Fatal(err)
				}
				_, _, _, w0 := cuda.FakeCounts()
				if err := r.Forward(toks[rows:], logits); err != nil { // the last chunk: each layer compressed
					t.Fatal(err)
				}
				_, _, _, w1 := cuda.FakeCounts()
				want := make([]int64, c.Layers)
				for l := range want {
					want[l] = int64(l)
					if off == "" {
						want[l]++ // its own MLP queued before its hooks
					}
				}
				if !slices.Equal(probe.mlps, want) {
					t.Errorf("MLPs launched at each layer's hooks %v, want %v", probe.mlps, want)
				}
				if w := int64(c.Layers) + 1; w1-w0 != w {
					t.Errorf("%d waits for the device in the last chunk, want %d", w1-w0, w)
				}
				var b strings.Builder
				for l := range c.Layers {
					for _, s := range r.Cache.Seqs(l) {
						fmt.Fprint(&b, s.Pos[:s.N], ";")
					}
				}
				held[off] = b.String()
				if s := r.Cache.Seqs(0)[0]; s.N != 64 {
					t.Errorf("layer 0 holds %d tokens after the prompt, want the budget's 64", s.N)
				}
			})
		}
		if held[""] != held["off"] {
			t.Errorf("%s: the positions kept differ with the hooks lagging", pc.name)
		}
	}
}

// policyRunner is a runner of m on be, prompt chunks of rows, under a fresh
// policy name with params.
func policyRunner(t *testing.T, be *cuda.Backend, m *runtime.Model, rows int, name string, params policies.Params) (*runtime.Runner, policies.Policy) {
	t.Helper()
	r, err := runtime.NewRunner(m, be, rows)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policies.New(name, params)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(r); err != nil {
		t.Fatal(err)
	}
	return r, p
}
