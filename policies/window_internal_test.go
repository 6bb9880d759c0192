package policies

import (
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// scanOnly is a sinkWindow's hook that forgets the ring before every
// layer, so that each eviction scans.
type scanOnly struct{ w *sinkWindow }

func (s scanOnly) BeforeAttend(l int, a *runtime.AttnArgs) {
	s.w.ring[l] = nil
	s.w.BeforeAttend(l, a)
}

func (s scanOnly) AfterAttend(l int, a *runtime.AttnArgs) { s.w.AfterAttend(l, a) }

// TestSinkWindowRing checks the ring's O(1) eviction against the scan: two
// streams of window and streamingllm over the same tokens (a prompt, then
// one token a step), one scanning every time, give the same logits bit for
// bit and the same cache layout, the ring serves most steps, and every
// sequence holds the sinks and the window.
func TestSinkWindowRing(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		params Params
		sinks  int
	}{{"window", Params{"budget": 48}, 0}, {"streamingllm", Params{"sinks": 4, "budget": 52}, 4}} {
		t.Run(c.name, func(t *testing.T) {
			ps, rs := twinRunners(t, m, c.name, c.params)
			ws := [2]*sinkWindow{ps[0].(*sinkWindow), ps[1].(*sinkWindow)}
			rs[1].Hook = scanOnly{ws[1]}
			toks := make([]int, 300)
			for i := range toks {
				toks[i] = 3 + (i*37)%200
			}
			stepTwins(t, m, ps, rs, toks, 80, func(n int) {
				for l := range m.Config.Layers {
					a, b := rs[0].Cache.Seqs(l), rs[1].Cache.Seqs(l)
					for h := range a {
						if !slices.Equal(a[h].Pos[:a[h].N], b[h].Pos[:b[h].N]) {
							t.Fatalf("token %d layer %d head %d: layout %v, the scan's %v", n, l, h, a[h].Pos[:a[h].N], b[h].Pos[:b[h].N])
						}
						for i, s := range []runtime.KVSeq{a[h], b[h]} {
							if s.Shift == nil {
								continue
							}
							// Past ShiftSpan every shift is 0 (backends send the span alone).
							if c.sinks > 0 && (s.ShiftSpan <= 0 || s.ShiftSpan > s.N) {
								t.Fatalf("token %d layer %d head %d runner %d: shift span %d of %d tokens", n, l, h, i, s.ShiftSpan, s.N)
							}
							if s.ShiftSpan > 0 && slices.ContainsFunc(s.Shift[s.ShiftSpan:s.N], func(v int32) bool { return v != 0 }) {
								t.Fatalf("token %d layer %d head %d runner %d: a nonzero shift past the span %d: %v", n, l, h, i, s.ShiftSpan, s.Shift[:s.N])
							}
						}
						kept := slices.Sorted(slices.Values(a[h].Pos[:a[h].N]))
						if a[h].N != ws[0].sinks+ws[0].recent || int(kept[c.sinks]) != n-ws[0].recent+1 || int(kept[len(kept)-1]) != n {
							t.Fatalf("token %d layer %d head %d: holds %v", n, l, h, kept)
						}
					}
				}
			})
			if hits, want := ws[0].ringHits, 200*m.Config.Layers; hits < want {
				t.Errorf("%d layer evictions through the ring, want at least %d", hits, want)
			}
			if ws[1].ringHits != 0 {
				t.Errorf("the scanning stream evicted %d times through the ring", ws[1].ringHits)
			}
		})
	}
}

// TestSinkWindowShiftShortcuts checks shift's shortcuts (the lowest kept
// position of an ascending sequence read after the sinks; only the sinks
// written whenever they lead, ring or not) against the scans they replace:
// two streams of streamingllm over the same tokens, a prompt of several
// chunks (dense and chunked protocols) and then one token a step, the
// second scanning, hold the same shifts and span and give the same logits;
// both mark the sinks' span as one run of equal shifts (ShiftEqual, which
// describe trusts) that holds ShiftAll.
func TestSinkWindowShiftShortcuts(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		params  Params
		prefill Prefill
	}{{Params{"sinks": 4, "budget": 52}, PrefillDense}, {Params{"sinks": 4, "budget": 52}, PrefillChunked}, {Params{"sinks": 2, "budget": 100}, PrefillDense}} {
		params := c.params
		ps, rs := twinRunners(t, m, "streamingllm", params)
		ps[1].(*sinkWindow).scan = true
		for _, p := range ps {
			p.SetPrefill(c.prefill)
		}
		toks := make([]int, 330)
		for i := range toks {
			toks[i] = 3 + (i*41)%200
		}
		stepTwins(t, m, ps, rs, toks, 200, func(n int) {
			for l := range m.Config.Layers {
				a, b := rs[0].Cache.Seqs(l), rs[1].Cache.Seqs(l)
				for h := range a {
					if a[h].ShiftSpan != b[h].ShiftSpan || !slices.Equal(a[h].Shift[:a[h].N], b[h].Shift[:b[h].N]) {
						t.Fatalf("%v token %d layer %d head %d: shifts %v (span %d), the scan's %v (span %d)", params, n, l, h,
							a[h].Shift[:a[h].N], a[h].ShiftSpan, b[h].Shift[:b[h].N], b[h].ShiftSpan)
					}
					for _, s := range []runtime.KVSeq{a[h], b[h]} {
						// An equal run holds ShiftAll throughout (describe writes
						// it without reading Shift); the sinks' run is one.
						if s.ShiftSpan > 0 && !s.ShiftEqual {
							t.Fatalf("%v token %d layer %d head %d: the sinks' span %d not marked equal", params, n, l, h, s.ShiftSpan)
						}
						for i := range s.ShiftSpan {
							if s.ShiftEqual && s.Shift[i] != s.ShiftAll {
								t.Fatalf("%v token %d layer %d head %d: shift %d is %d in a run marked %d", params, n, l, h, i, s.Shift[i], s.ShiftAll)
							}
						}
					}
				}
			}
		})
	}
}
