package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// newGPU returns the CUDA backend on GPU 0 at float32 precision (the parity
// tests against the CPU), or skips with the reason.
func newGPU(t testing.TB) *cuda.Backend {
	t.Helper()
	return newGPUPrec(t, "f32")
}

// newGPUPrec is newGPU at compute precision prec (KVBENCH_PRECISION).
func newGPUPrec(t testing.TB, prec string) *cuda.Backend {
	t.Helper()
	t.Setenv("KVBENCH_PRECISION", prec)
	if ok, why := cuda.Available(); !ok {
		t.Skip("no CUDA device: " + why)
	}
	b, err := cuda.NewBackend(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	t.Logf("backend %s on %s", b.Name(), b.Device())
	return b
}

// relDiff is max |a-b| over max |b| (at least 1e-30).
func relDiff(a, b []float32) float64 {
	var d, m float64
	for i := range b {
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
		m = max(m, math.Abs(float64(b[i])))
	}
	return d / max(m, 1e-30)
}

// spreadTokens is n token ids spread over a vocabulary (the special ids
// below 3 left out), for prompts of the GPU-against-CPU tests.
func spreadTokens(n, vocab int) []int {
	ids := make([]int, n)
	for i := range ids {
		ids[i] = 3 + (i*7919)%(vocab-3)
	}
	return ids
}

func randVec(rng *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = (rng.Float32()*2 - 1) * scale
	}
	return v
}

// pair is one buffer on each backend with the same contents.
type pair struct{ c, g runtime.Buffer }

func newPair(c *cpu.Backend, g *cuda.Backend, data []float32) pair {
	p := pair{c.Alloc(len(data)), g.Alloc(len(data))}
	c.Write(p.c, 0, data)
	g.Write(p.g, 0, data)
	return p
}

func read(be runtime.Backend, b runtime.Buffer) []float32 {
	v := make([]float32, b.Len())
	be.Read(v, b, 0)
	return v
}

func (p pair) cmp(t *testing.T, c *cpu.Backend, g *cuda.Backend, what string, tol float64) {
	t.Helper()
	want, got := read(c, p.c), read(g, p.g)
	d := relDiff(got, want)
	if d > tol || math.IsNaN(d) {
		t.Errorf("%s: relative difference %.3g > %.3g", what, d, tol)
	} else {
		t.Logf("%s: relative difference %.3g", what, d)
	}
}

func weight(rng *rand.Rand, dt runtime.DType, shape ...int) *runtime.Tensor {
	t := &runtime.Tensor{Name: "w", DType: dt, Shape: shape}
	n := t.Len()
	switch dt {
	case runtime.F32:
		t.F32 = randVec(rng, n, 1)
	case runtime.BF16:
		for _, v := range randVec(rng, n, 1) {
			t.U16 = append(t.U16, runtime.F32ToBF16(v))
		}
	case runtime.F16:
		for range n {
			// Normal halves of magnitude in [2^-5, 2).
			t.U16 = append(t.U16, uint16(rng.IntN(2))<<15|uint16(10+rng.IntN(6))<<10|uint16(rng.IntN(1024)))
		}
	}
	return t
}

func TestBackendOps(t *testing.T) {
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16, runtime.F16} {
		for _, sh := range [][3]int{{1, 64, 50}, {13, 64, 70}, {5, 37, 9}, {33, 384, 259}} {
			rows, in, out := sh[0], sh[1], sh[2]
			w := weight(rng, dt, out, in)
			wc, _ := c.Upload(w)
			wg, err := g.Upload(w)
			if err != nil {
				t.Fatal(err)
			}
			x := newPair(c, g, randVec(rng, rows*in, 1))
			d := newPair(c, g, make([]float32, rows*out))
			c.MatMul(d.c, x.c, wc, rows, in, out)
			g.MatMul(d.g, x.g, wg, rows, in, out)
			d.cmp(t, c, g, fmt.Sprintf("MatMul %v %dx%dx%d", dt, rows, in, out), 1e-5)
			if in == 64 {
				tok := []int{3, 0, out - 1, 7}
				e := newPair(c, g, make([]float32, len(tok)*in))
				c.Embed(e.c, wc, tok, in)
				g.Embed(e.g, wg, tok, in)
				e.cmp(t, c, g, fmt.Sprintf("Embed %v", dt), 0)
			}
			nw := weight(rng, dt, in)
			nc, _ := c.Upload(nw)
			ng, _ := g.Upload(nw)
			rn := newPair(c, g, make([]float32, rows*in))
			c.RMSNorm(rn.c, x.c, nc, rows, in, 1e-5)
			g.RMSNorm(rn.g, x.g, ng, rows, in, 1e-5)
			rn.cmp(t, c, g, fmt.Sprintf("RMSNorm %v", dt), 1e-6)
			c.AddBias(x.c, nc, rows, in)
			g.AddBias(x.g, ng, rows, in)
			x.cmp(t, c, g, fmt.Sprintf("AddBias %v", dt), 0)
		}
	}
	// RoPE, both styles; 7 rows (a decode step's layout: pairs spread over
	// blocks) and 70 (a prompt's: a block a row, one cos/sin table for every
	// head; past head dim 512 without the table).
	for _, style := range []runtime.RopeStyle{runtime.RopeHalf, runtime.RopeInterleaved} {
		for _, sh := range [][2]int{{7, 8}, {7, 64}, {7, 128}, {70, 64}, {70, 128}, {70, 640}} {
			rows, heads, hd := sh[0], 3, sh[1]
			pos := []int{0, 1, 5, 100, 1000, 4095, 16383}
			for len(pos) < rows {
				pos = append(pos, 17*len(pos)+3)
			}
			x := newPair(c, g, randVec(rng, rows*heads*hd, 1))
			c.RoPE(x.c, rows, heads, hd, pos, 1e4, style)
			g.RoPE(x.g, rows, heads, hd, pos, 1e4, style)
			x.cmp(t, c, g, fmt.Sprintf("RoPE style %v rows %d hd %d", style, rows, hd), 1e-6)
			// Queries and keys in one launch (RoPE2), 5 and 2 heads.
			q, k := newPair(c, g, randVec(rng, rows*5*hd, 1)), newPair(c, g, randVec(rng, rows*2*hd, 1))
			c.RoPE(q.c, rows, 5, hd, pos, 5e5, style)
			c.RoPE(k.c, rows, 2, hd, pos, 5e5, style)
			g.RoPE2(q.g, k.g, rows, 5, 2, hd, pos, 5e5, style)
			q.cmp(t, c, g, fmt.Sprintf("RoPE2 queries style %v rows %d hd %d", style, rows, hd), 1e-6)
			k.cmp(t, c, g, fmt.Sprintf("RoPE2 keys style %v rows %d hd %d", style, rows, hd), 1e-6)
			// Scaled RoPE (llama3's frequencies), one launch (RoPE2Freqs).
			sc := runtime.Config{HeadDim: hd, RopeTheta: 5e5, MaxSeq: 1 << 17,
				RopeScaling: runtime.RopeScaling{Type: runtime.RopeLlama3, Factor: 8, OriginalMaxSeq: 8192, LowFreqFactor: 1, HighFreqFactor: 4}}
			inv := sc.RopeInvFreq(0)
			c.RoPEFreqs(q.c, rows, 5, hd, pos, inv, style)
			c.RoPEFreqs(k.c, rows, 2, hd, pos, inv, style)
			g.RoPE2Freqs(q.g, k.g, rows, 5, 2, hd, pos, inv, style)
			q.cmp(t, c, g, fmt.Sprintf("RoPE2Freqs queries style %v rows %d hd %d", style, rows, hd), 1e-6)
			k.cmp(t, c, g, fmt.Sprintf("RoPE2Freqs keys style %v rows %d hd %d", style, rows, hd), 1e-6)
		}
	}
	n := 1000
	a, b := newPair(c, g, randVec(rng, n, 4)), newPair(c, g, randVec(rng, n, 4))
	c.SwiGLU(a.c, b.c, n)
	g.SwiGLU(a.g, b.g, n)
	a.cmp(t, c, g, "SwiGLU", 1e-6)
	g.Write(a.g, 0, read(c, a.c)) // same inputs for the exact ops below
	c.Add(a.c, b.c, n)
	g.Add(a.g, b.g, n)
	a.cmp(t, c, g, "Add", 0)
	c.CopyRows(a.c, b.c, 3, 10, 5, 20)
	g.CopyRows(a.g, b.g, 3, 10, 5, 20)
	a.cmp(t, c, g, "CopyRows", 0)
	// Write/Read at an offset.
	g.Write(a.g, 17, []float32{1, 2, 3})
	got := make([]float32, 3)
	g.Read(got, a.g, 17)
	if !slices.Equal(got, []float32{1, 2, 3}) {
		t.Errorf("Write/Read: %v", got)
	}

	for _, hd := range []int{8, 64} {
		testAttendOps(t, c, g, rng, hd)
	}
	if now, peak := g.MemStats(); now <= 0 || peak < now {
		t.Errorf("MemStats %d, %d", now, peak)
	}
}

// kvPair is a KV sequence built identically on both backends.
type kvPair struct{ c, g runtime.KVSeq }

func newKV(c *cpu.Backend, g *cuda.Backend, rng *rand.Rand, n, ps, hd int, shift bool) kvPair {
	var kv kvPair
	for _, s := range []*runtime.KVSeq{&kv.c, &kv.g} {
		s.N, s.PageSize = n, ps
	}
	pages := (n + ps - 1) / ps
	for range pages {
		k, v := randVec(rng, ps*hd, 1), randVec(rng, ps*hd, 1)
		kc, vc, kg, vg := c.Alloc(ps*hd), c.Alloc(ps*hd), g.Alloc(ps*hd), g.Alloc(ps*hd)
		c.Write(kc, 0, k)
		c.Write(vc, 0, v)
		g.Write(kg, 0, k)
		g.Write(vg, 0, v)
		kv.c.K, kv.c.V = append(kv.c.K, kc), append(kv.c.V, vc)
		kv.g.K, kv.g.V = append(kv.g.K, kg), append(kv.g.V, vg)
	}
	pos := make([]int32, n)
	p := int32(0)
	for i := range pos {
		pos[i] = p
		p += 1 + int32(rng.IntN(2))
	}
	kv.c.Pos, kv.g.Pos = pos, pos
	if shift {
		sh := make([]int32, n)
		for i := range sh {
			sh[i] = int32(rng.IntN(5))
		}
		kv.c.Shift, kv.g.Shift = sh, sh
	}
	return kv
}

func testAttendOps(t *testing.T, c *cpu.Backend, g *cuda.Backend, rng *rand.Rand, hd int) {
	heads, kvHeads, rows, n, ps := 4, 2, 3, 45, 16
	var seqs, refs []kvPair
	for range kvHeads {
		seqs = append(seqs, newKV(c, g, rng, n, ps, hd, true))
		refs = append(refs, newKV(c, g, rng, n+5, ps, hd, false))
	}
	// The reference holds token p at index p.
	for i := range refs {
		for p := range refs[i].c.Pos {
			refs[i].c.Pos[p] = int32(p)
		}
	}
	qpos := []int{int(seqs[0].c.Pos[10]), int(seqs[0].c.Pos[30]), int(seqs[0].c.Pos[n-1]) + 3}
	for _, opt := range []string{"plain", "sel", "shift", "acc", "recall", "all"} {
		q := newPair(c, g, randVec(rng, rows*heads*hd, 1))
		out := newPair(c, g, make([]float32, rows*heads*hd))
		mk := func(be int) *runtime.AttnArgs {
			a := &runtime.AttnArgs{Rows: rows, QPos: qpos, Heads: heads, KVHeads: kvHeads, HeadDim: hd,
				Scale: float32(1 / math.Sqrt(float64(hd))), Rope: runtime.RopeHalf, Theta: 1e4}
			if be == 0 {
				a.Q, a.Out = q.c, out.c
			} else {
				a.Q, a.Out = q.g, out.g
			}
			for i := range seqs {
				s, r := seqs[i].c, refs[i].c
				if be == 1 {
					s, r = seqs[i].g, refs[i].g
				}
				if opt != "shift" && opt != "all" {
					s.Shift = nil
				}
				a.Seqs = append(a.Seqs, s)
				a.Ref = append(a.Ref, r)
			}
			if opt != "recall" && opt != "all" {
				a.Ref = nil
			} else {
				a.Recall = make([]float32, rows*heads)
			}
			if opt == "shift" || opt == "all" {
				a.QShift = []int{0, 2, -1}
			}
			if opt == "sel" || opt == "all" {
				a.Sel = make([][]int32, heads)
				a.Sel[0] = []int32{0, 3, 4, 20, 44}
				a.Sel[2] = []int32{1, 2, 40}
				a.Sel[3] = []int32{}
			}
			if opt == "acc" || opt == "all" {
				a.Acc = make([][]float32, heads)
				for h := range a.Acc {
					a.Acc[h] = make([]float32, n)
				}
				a.AccFrom = qpos[1]
			}
			return a
		}
		ac, ag := mk(0), mk(1)
		c.Attend(ac)
		g.Attend(ag)
		out.cmp(t, c, g, fmt.Sprintf("Attend hd %d %s", hd, opt), 1e-5)
		if ac.Acc != nil {
			for h := range ac.Acc {
				if d := relDiff(ag.Acc[h], ac.Acc[h]); d > 1e-5 {
					t.Errorf("Attend hd %d %s: Acc[%d] relative difference %.3g", hd, opt, h, d)
				}
			}
		}
		if ac.Recall != nil {
			if d := relDiff(ag.Recall, ac.Recall); d > 1e-5 {
				t.Errorf("Attend hd %d %s: Recall %v, want %v", hd, opt, ag.Recall, ac.Recall)
			}
		}
		// Scorer.
		for r := range rows {
			for h := range heads {
				wc, wg := make([]float32, n), make([]float32, n)
				c.QK(ac, r, h, wc)
				g.QK(ag, r, h, wg)
				for i := range wc {
					if wc[i] != wg[i] && math.Abs(float64(wc[i]-wg[i])) > 1e-5*max(1, math.Abs(float64(wc[i]))) {
						t.Fatalf("QK hd %d row %d head %d token %d: %v, want %v", hd, r, h, i, wg[i], wc[i])
					}
				}
			}
		}
	}
	lc, hc, lg, hg := make([]float32, hd), make([]float32, hd), make([]float32, hd), make([]float32, hd)
	c.KeyBounds(&seqs[1].c, 5, 40, lc, hc)
	g.KeyBounds(&seqs[1].g, 5, 40, lg, hg)
	if !slices.Equal(lc, lg) || !slices.Equal(hc, hg) {
		t.Errorf("KeyBounds differ: %v %v, want %v %v", lg, hg, lc, hc)
	}
	// StoreKV and MoveKV.
	kvDim := 2 * hd
	k, v := newPair(c, g, randVec(rng, 3*kvDim, 1)), newPair(c, g, randVec(rng, 3*kvDim, 1))
	s := seqs[0]
	c.StoreKV(s.c.K[1], s.c.V[1], 5, k.c, v.c, 2, 1, hd, kvDim)
	g.StoreKV(s.g.K[1], s.g.V[1], 5, k.g, v.g, 2, 1, hd, kvDim)
	c.MoveKV(s.c.K[0], s.c.V[0], 3, s.c.K[2], s.c.V[2], 7, hd)
	g.MoveKV(s.g.K[0], s.g.V[0], 3, s.g.K[2], s.g.V[2], 7, hd)
	for p := range s.c.K {
		pair{s.c.K[p], s.g.K[p]}.cmp(t, c, g, fmt.Sprintf("StoreKV/MoveKV K page %d", p), 0)
		pair{s.c.V[p], s.g.V[p]}.cmp(t, c, g, fmt.Sprintf("StoreKV/MoveKV V page %d", p), 0)
	}
}

// compareModel runs the same tokens through a runner on the CPU and on g
// and compares the logits and 32 greedy tokens.
func compareModel(t *testing.T, g *cuda.Backend, m *runtime.Model) {
	c := cpu.New(0)
	defer c.Close()
	rc, err := runtime.NewRunner(m, c, 32)
	if err != nil {
		t.Fatal(err)
	}
	rg, err := runtime.NewRunner(m, g, 32)
	if err != nil {
		t.Fatal(err)
	}
	vocab := m.Config.Vocab
	rng := rand.New(rand.NewPCG(7, 8))
	prompt := make([]int, 40)
	for i := range prompt {
		prompt[i] = 3 + rng.IntN(min(vocab-3, 256))
	}
	lc, lg := make([]float32, len(prompt)*vocab), make([]float32, len(prompt)*vocab)
	if err := rc.ForwardAll(prompt, lc); err != nil {
		t.Fatal(err)
	}
	if err := rg.ForwardAll(prompt, lg); err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for r := range prompt {
		worst = max(worst, relDiff(lg[r*vocab:(r+1)*vocab], lc[r*vocab:(r+1)*vocab]))
	}
	// Greedy generation.
	argmax := func(v []float32) int {
		best := 0
		for i, x := range v {
			if x > v[best] {
				best = i
			}
		}
		return best
	}
	lc, lg = lc[(len(prompt)-1)*vocab:], lg[(len(prompt)-1)*vocab:]
	var idc, idg []int
	for range 32 {
		tc, tg := argmax(lc[:vocab]), argmax(lg[:vocab])
		idc, idg = append(idc, tc), append(idg, tg)
		if err := rc.Forward([]int{tc}, lc); err != nil {
			t.Fatal(err)
		}
		if err := rg.Forward([]int{tc}, lg); err != nil { // same input: compare logits step by step
			t.Fatal(err)
		}
		worst = max(worst, relDiff(lg[:vocab], lc[:vocab]))
	}
	t.Logf("%s: max relative logit difference %.3g (40-token prefill + 32 decode steps)", m.Source, worst)
	if worst > 1e-3 {
		t.Errorf("%s: logits differ by %.3g relative", m.Source, worst)
	}
	if !slices.Equal(idc, idg) {
		t.Errorf("%s: greedy ids differ:\n cpu %v\n gpu %v", m.Source, idc, idg)
	} else {
		t.Logf("%s: greedy ids identical over 32 tokens", m.Source)
	}
}

func TestBackendModels(t *testing.T) {
	g := newGPU(t)
	for _, name := range []string{"tiny", "tiny-interleaved", "tiny-qwen", "small"} {
		t.Run(name, func(t *testing.T) {
			m, err := runtime.Synthetic(name)
			if err != nil {
				t.Fatal(err)
			}
			compareModel(t, g, m)
		})
	}
	for _, rel := range []string{"models/gutenberg-llama-25m", "models/stories260K/stories260K.bin"} {
		t.Run(rel, func(t *testing.T) {
			m, err := runtime.Load(fixtures.Path(t, rel))
			if err != nil {
				t.Fatal(err)
			}
			compareModel(t, g, m)
		})
	}
}

// selHook records the selection of every layer of the last step.
type selHook struct {
	inner runtime.Hook
	sel   map[int][][]int32
}

func (h *selHook) BeforeAttend(l int, a *runtime.AttnArgs) {
	h.inner.BeforeAttend(l, a)
	var s [][]int32
	if a.Sel != nil {
		for _, x := range a.Sel {
			s = append(s, slices.Clone(x))
		}
	} else if a.Chosen != nil { // a selection on the device (Quest's PageChooser)
		for h := range a.Heads {
			s = append(s, a.Chosen.Tokens(h))
		}
	}
	h.sel[l] = s
}

func (h *selHook) AfterAttend(l int, a *runtime.AttnArgs) { h.inner.AfterAttend(l, a) }

func (h *selHook) Err() error {
	if e, ok := h.inner.(interface{ Err() error }); ok {
		return e.Err()
	}
	return nil
}

var policyParams = map[string]policies.Params{
	"full":         nil,
	"window":       {"window": 24},
	"streamingllm": {"sinks": 4, "recent": 20},
	"random":       {"budget": 24, "seed": 9},
	"h2o":          {"heavy": 12, "recent": 12},
	"oracle":       {"budget": 24},
	"quest":        {"budget": 32, "page": 8, "dense_layers": 1},
	"snapkv":       {"capacity": 24, "window": 8, "kernel": 5},
	"pyramidkv":    {"capacity": 24, "window": 8, "kernel": 5},
	"tova":         {"cache": 24},
}

type polRun struct {
	r      *runtime.Runner
	p      policies.Policy
	h      *selHook
	logits []float32
}

func newPolRun(t *testing.T, be runtime.Backend, m *runtime.Model, name string, params policies.Params) *polRun {
	p, err := policies.New(name, params)
	if err != nil {
		t.Fatal(err)
	}
	r, err := runtime.NewRunner(m, be, 32)
	if err != nil {
		t.Fatal(err)
	}
	p.MeasureRecall(10)
	if err := p.Start(r); err != nil {
		t.Fatal(err)
	}
	h := &selHook{inner: r.Hook, sel: map[int][][]int32{}}
	r.Hook = h
	return &polRun{r: r, p: p, h: h, logits: make([]float32, m.Config.Vocab)}
}

func sortedPos(s runtime.KVSeq) []int32 {
	p := slices.Clone(s.Pos[:s.N])
	slices.Sort(p)
	return p
}

func sortedSel(s []int32, seq runtime.KVSeq) []int32 {
	// Selections are token indices: compare the positions they name.
	var p []int32
	for _, t := range s {
		p = append(p, seq.Pos[t])
	}
	slices.Sort(p)
	return p
}

func TestBackendPolicies(t *testing.T) {
	g := newGPU(t)
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 11))
	toks := make([]int, 200)
	for i := range toks {
		toks[i] = 3 + rng.IntN(256)
	}
	const prompt = 50
	names := policies.Names()
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			params, ok := policyParams[name]
			if !ok {
				t.Logf("policy %s: no small parameters known here; defaults", name)
			}
			c := cpu.New(0)
			defer c.Close()
			rc, rg := newPolRun(t, c, m, name, params), newPolRun(t, g, m, name, params)
			firstBad, bad, worst := -1, 0, 0.0
			var report []string
			step := func(i int, in []int) {
				if err := rc.r.Forward(in, rc.logits); err != nil {
					t.Fatal(err)
				}
				if err := rg.r.Forward(in, rg.logits); err != nil {
					t.Fatal(err)
				}
				worst = max(worst, relDiff(rg.logits, rc.logits))
				mism := false
				for l := 0; l < m.Config.Layers; l++ {
					sc, sg := rc.r.Cache.Seqs(l), rg.r.Cache.Seqs(l)
					for h := range sc {
						pc, pg := sortedPos(sc[h]), sortedPos(sg[h])
						if !slices.Equal(pc, pg) {
							mism = true
							if len(report) < 6 {
								report = append(report, fmt.Sprintf("step %d layer %d kv head %d: kept cpu %v gpu %v", i, l, h, pc, pg))
							}
						}
					}
					selc, selg := rc.h.sel[l], rg.h.sel[l]
					if (selc == nil) != (selg == nil) {
						mism = true
						report = append(report, fmt.Sprintf("step %d layer %d: selection set on one backend only", i, l))
						continue
					}
					group := m.Config.Heads / m.Config.KVHeads
					for h := range selc {
						if (selc[h] == nil) != (selg[h] == nil) {
							mism = true
							continue
						}
						a, b := sortedSel(selc[h], sc[h/group]), sortedSel(selg[h], sg[h/group])
						if !slices.Equal(a, b) {
							mism = true
							if len(report) < 6 {
								report = append(report, fmt.Sprintf("step %d layer %d head %d: selected cpu %v gpu %v", i, l, h, a, b))
							}
						}
					}
				}
				if mism {
					bad++
					if firstBad < 0 {
						firstBad = i
					}
				}
			}
			rc.p.Prompt(prompt)
			rg.p.Prompt(prompt)
			step(prompt-1, toks[:prompt])
			for i := prompt; i < len(toks); i++ {
				step(i, toks[i:i+1])
			}
			sc, sg := rc.p.Stats(), rg.p.Stats()
			t.Logf("%s: logits max relative difference %.3g; steps with a kept/selected set mismatch: %d (first %d)", name, worst, bad, firstBad)
			t.Logf("%s: mean recall cpu %.6f gpu %.6f (%d samples); bytes read cpu %d gpu %d", name,
				sc.MeanRecall(), sg.MeanRecall(), sc.RecallN, sc.TotalBytesRead, sg.TotalBytesRead)
			if sc.TotalBytesRead != sg.TotalBytesRead || sc.MaxAttended != sg.MaxAttended {
				t.Errorf("%s: bytes read cpu %d gpu %d, most tokens attended cpu %d gpu %d", name, sc.TotalBytesRead, sg.TotalBytesRead, sc.MaxAttended, sg.MaxAttended)
			}
			if math.Abs(sc.MeanRecall()-sg.MeanRecall()) > 1e-4 {
				t.Errorf("%s: mean recall cpu %.6f gpu %.6f", name, sc.MeanRecall(), sg.MeanRecall())
			}
			if bad > 0 {
				t.Errorf("%s: kept or selected sets differ:\n%s", name, strings.Join(report, "\n"))
			}
			if worst > 1e-3 {
				t.Errorf("%s: logits differ by %.3g relative", name, worst)
			}
		})
	}
}
