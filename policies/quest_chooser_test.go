package policies_test

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// chooserBackend is the CPU backend whose page bounds are a
// runtime.PageChooser, the way a GPU's are: Choose scores on the host and
// makes the brute-force choice (questExpected), leaving it in a hostChosen
// that its Attend turns back into Sel. It runs Quest's device-choice path
// (a.Chosen, and the accounting of its counts after the step) on a CPU.
type chooserBackend struct {
	*cpu.Backend
	inStep  *bool // set while a forward runs
	step    *int  // counts the forwards
	covered *int  // Covered calls of a selection made in the forward still running
}

func (b chooserBackend) NewPageBounds(kvHeads, headDim, page int) runtime.PageBounds {
	return &chooserBounds{PageBounds: b.Backend.NewPageBounds(kvHeads, headDim, page), be: b, page: page}
}

func (b chooserBackend) Attend(a *runtime.AttnArgs) {
	if a.Chosen == nil {
		b.Backend.Attend(a)
		return
	}
	if a.Sel != nil {
		panic("Attend with Chosen and Sel")
	}
	c := *a
	c.Sel, c.Chosen = make([][]int32, a.Heads), nil
	for h := range a.Heads {
		c.Sel[h] = a.Chosen.Tokens(h)
	}
	b.Backend.Attend(&c)
}

type chooserBounds struct {
	runtime.PageBounds
	be   chooserBackend
	page int
	last *hostChosen
}

func (cb *chooserBounds) Choose(a *runtime.AttnArgs, k int) {
	group := a.Heads / a.KVHeads
	ch := &hostChosen{be: cb.be, tokens: make([][]int32, a.Heads), covered: make([]int, a.KVHeads), made: *cb.be.step}
	out := make([][]float64, a.Heads)
	some := false
	for h := range a.Heads {
		if pages := (a.Seqs[h/group].N + cb.page - 1) / cb.page; pages > k {
			out[h] = make([]float64, pages)
			some = true
		}
	}
	a.Sel, a.Chosen = nil, nil
	if cb.last != nil {
		cb.last.stale = true // valid until the next Choose
	}
	if !some {
		return
	}
	cb.PageBounds.Score(a, out)
	for g := range a.KVHeads {
		n := a.Seqs[g].N
		union := map[int32]bool{}
		for h := g * group; h < (g+1)*group; h++ {
			if out[h] == nil {
				for t := range n {
					union[int32(t)] = true
				}
				continue
			}
			ch.tokens[h] = questExpected(out[h], k, cb.page, n)
			for _, t := range ch.tokens[h] {
				union[t] = true
			}
		}
		ch.covered[g] = len(union)
	}
	cb.last, a.Chosen = ch, ch
}

// hostChosen is a runtime.Chosen held on the host.
type hostChosen struct {
	be      chooserBackend
	tokens  [][]int32
	covered []int
	stale   bool
	made    int // the forward that made it
}

func (c *hostChosen) Count(h int) int {
	if c.tokens[h] == nil {
		return -1
	}
	return len(c.tokens[h])
}

func (c *hostChosen) Covered(g int) int {
	if c.stale {
		panic("Covered of a selection after the next Choose on its bounds")
	}
	if *c.be.inStep && *c.be.step == c.made {
		*c.be.covered++
	}
	return c.covered[g]
}

func (c *hostChosen) Tokens(h int) []int32 { return slices.Clone(c.tokens[h]) }

// selRecorder records each layer's selection of the last step, from Sel or
// from a device selection.
type selRecorder struct {
	inner runtime.Hook
	sel   map[int][][]int32
}

func (x *selRecorder) BeforeAttend(l int, a *runtime.AttnArgs) {
	x.inner.BeforeAttend(l, a)
	var s [][]int32
	switch {
	case a.Chosen != nil:
		for h := range a.Heads {
			s = append(s, a.Chosen.Tokens(h))
		}
	case a.Sel != nil:
		for _, v := range a.Sel {
			s = append(s, slices.Clone(v))
		}
	}
	x.sel[l] = s
}

func (x *selRecorder) AfterAttend(l int, a *runtime.AttnArgs) { x.inner.AfterAttend(l, a) }

// TestQuestChooser runs quest on a backend whose page bounds choose
// (runtime.PageChooser, as on the GPU) beside the same stream on the plain
// CPU backend (the host's choice): every step's selections, logits and
// accounting (bytes read per step and in all, tokens attended, recall) are
// the same, and the distinct tokens of a step's device selections are read
// only after the step (by Stats, or by the next step's first layer), never
// while it runs. GQA and MHA models, several budgets, recall sampled.
func TestQuestChooser(t *testing.T) {
	for _, model := range []string{"tiny", "tiny-mha"} {
		for _, params := range []policies.Params{
			{"budget": 32, "page": 8, "dense_layers": 1},
			{"budget": 8, "page": 8, "dense_layers": 0},
			{"budget": 50, "page": 5, "dense_layers": 1},
		} {
			t.Run(fmt.Sprintf("%s/%v", model, params), func(t *testing.T) {
				m, err := runtime.Synthetic(model)
				if err != nil {
					t.Fatal(err)
				}
				var inStep bool
				var step, covered int
				cb := chooserBackend{Backend: cpu.New(0), inStep: &inStep, step: &step, covered: &covered}
				defer cb.Close()
				run := func(be runtime.Backend) (*runtime.Runner, policies.Policy, *selRecorder) {
					r, err := runtime.NewRunner(m, be, 16)
					if err != nil {
						t.Fatal(err)
					}
					p, err := policies.New("quest", params)
					if err != nil {
						t.Fatal(err)
					}
					p.MeasureRecall(7)
					if err := p.Start(r); err != nil {
						t.Fatal(err)
					}
					rec := &selRecorder{inner: r.Hook, sel: map[int][][]int32{}}
					r.Hook = rec
					return r, p, rec
				}
				plain := cpu.New(0)
				defer plain.Close()
				rh, ph, sh := run(plain)
				rd, pd, sd := run(cb)
				toks := streamTokens(260, 4)
				lh, ld := make([]float32, m.Config.Vocab), make([]float32, m.Config.Vocab)
				const prompt = 40
				ph.Prompt(prompt)
				pd.Prompt(prompt)
				chosen := 0
				for i := prompt; i <= len(toks); i++ {
					in := toks[i-1 : i]
					if i == prompt {
						in = toks[:prompt]
					}
					if err := rh.Forward(in, lh); err != nil {
						t.Fatal(err)
					}
					inStep, step = true, step+1
					if err := rd.Forward(in, ld); err != nil {
						t.Fatal(err)
					}
					inStep = false
					for l := range m.Config.Layers {
						if !equalSel(sh.sel[l], sd.sel[l]) {
							t.Fatalf("step %d layer %d: host chose %v, chooser %v", i, l, sh.sel[l], sd.sel[l])
						}
						if sd.sel[l] != nil {
							chosen++
						}
					}
					for j := range lh {
						if math.Float32bits(lh[j]) != math.Float32bits(ld[j]) {
							t.Fatalf("step %d: logit %d host %v, chooser %v", i, j, lh[j], ld[j])
						}
					}
					if i%3 == 0 { // Stats between steps settle the last step
						h, d := ph.Stats(), pd.Stats()
						if h.BytesRead != d.BytesRead || h.TotalBytesRead != d.TotalBytesRead || h.MaxAttended != d.MaxAttended ||
							!slices.EqualFunc(h.Attended, d.Attended, slices.Equal[[]int]) {
							t.Fatalf("step %d: accounting host %d/%d bytes, %d most, %v; chooser %d/%d bytes, %d most, %v", i,
								h.BytesRead, h.TotalBytesRead, h.MaxAttended, h.Attended, d.BytesRead, d.TotalBytesRead, d.MaxAttended, d.Attended)
						}
					}
				}
				h, d := ph.Stats(), pd.Stats()
				if h.TotalBytesRead != d.TotalBytesRead || h.RecallN != d.RecallN || h.RecallSum != d.RecallSum {
					t.Errorf("at the end: bytes read host %d, chooser %d; recall host %v/%d, chooser %v/%d",
						h.TotalBytesRead, d.TotalBytesRead, h.RecallSum, h.RecallN, d.RecallSum, d.RecallN)
				}
				if chosen == 0 {
					t.Fatal("no step chose on the device")
				}
				if covered > 0 {
					t.Errorf("%d Covered calls of selections made in the forward still running: the counts must wait for the step's end", covered)
				}
				t.Logf("%d layer steps chose through the chooser; bytes read %d", chosen, d.TotalBytesRead)
			})
		}
	}
}

func equalSel(a, b [][]int32) bool {
	return slices.EqualFunc(a, b, func(x, y []int32) bool { return (x == nil) == (y == nil) && slices.Equal(x, y) })
}
