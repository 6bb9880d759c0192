package runtime_test

import (
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// archVariants are synthetic models with each feature of the architectures
// issue: RoPE scalings, Qwen3's per-head norms, a sliding window, and all
// at once. They keep the shape of synthetic "tiny" (head_dim 16: eight
// frequency pairs).
func archVariants() map[string]runtime.Config {
	base := func() runtime.Config {
		m, err := runtime.Synthetic("tiny")
		if err != nil {
			panic(err)
		}
		return m.Config
	}
	with := func(edit func(c *runtime.Config)) runtime.Config {
		c := base()
		edit(&c)
		return c
	}
	short := []float64{1, 1.1, 1.3, 1.6, 2, 2.5, 3, 4}
	long := []float64{1.2, 1.5, 2, 3, 4, 6, 8, 12}
	return map[string]runtime.Config{
		"linear": with(func(c *runtime.Config) { c.RopeScaling = runtime.RopeScaling{Type: runtime.RopeLinear, Factor: 4} }),
		"dynamic": with(func(c *runtime.Config) {
			c.RopeScaling = runtime.RopeScaling{Type: runtime.RopeDynamic, Factor: 2, OriginalMaxSeq: 16}
		}),
		"llama3": with(func(c *runtime.Config) {
			c.RopeScaling = runtime.RopeScaling{Type: runtime.RopeLlama3, Factor: 8, OriginalMaxSeq: 64, LowFreqFactor: 1, HighFreqFactor: 4}
		}),
		"yarn": with(func(c *runtime.Config) {
			c.RopeScaling = runtime.RopeScaling{Type: runtime.RopeYarn, Factor: 4, OriginalMaxSeq: 64, BetaFast: 32, BetaSlow: 1,
				AttnFactor: runtime.YarnAttnFactor(4, 0, 0)}
		}),
		"longrope": with(func(c *runtime.Config) {
			c.RopeScaling = runtime.RopeScaling{Type: runtime.RopeLongrope, Factor: 4, OriginalMaxSeq: 16,
				ShortFactor: short, LongFactor: long, AttnFactor: runtime.LongropeAttnFactor(4, 16)}
		}),
		"qknorm": with(func(c *runtime.Config) { c.QKNorm = true }),
		// Qwen3's shape: heads*head_dim (128) apart from the hidden size.
		"qwen3 shape": with(func(c *runtime.Config) { c.QKNorm, c.HeadDim, c.RopeTheta = true, 32, 1e6 }),
		"window":      with(func(c *runtime.Config) { c.SlidingWindow = 7 }),
		// Heads of 8 channels (the CPU's inline small-head path), llama2.c's
		// interleaved pairs, GQA 2:1.
		"small heads": with(func(c *runtime.Config) {
			c.Heads, c.KVHeads, c.HeadDim, c.Rope, c.SlidingWindow = 8, 4, 8, runtime.RopeInterleaved, 5
			c.RopeScaling = runtime.RopeScaling{Type: runtime.RopeLlama3, Factor: 4, OriginalMaxSeq: 32, LowFreqFactor: 1, HighFreqFactor: 2}
		}),
		"all": with(func(c *runtime.Config) {
			c.QKNorm, c.SlidingWindow = true, 9
			c.RopeScaling = runtime.RopeScaling{Type: runtime.RopeYarn, Factor: 8, OriginalMaxSeq: 32, BetaFast: 16, BetaSlow: 2,
				AttnFactor: 1.3, NoTruncate: true}
		}),
	}
}

// archModel returns the random model of c, checked.
func archModel(t testing.TB, c runtime.Config) *runtime.Model {
	t.Helper()
	m := runtime.NewRandomModel(c, 5)
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	return m
}

// f64 returns a tensor's values in float64.
func f64(t *runtime.Tensor) []float64 {
	v := make([]float32, t.Len())
	t.ToF32(v, 0)
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// refForward computes the logits of every token of toks in float64, written
// out from the definitions as transformers has them: RMSNorm; q, k, v
// projections (+ bias); Qwen3's RMSNorm of each head's query and key; RoPE
// (rotate-half or interleaved) whose position p turns by p*inv(p)[i], with
// cos and sin times the attention factor; causal attention within the
// sliding window; the SwiGLU MLP; the final norm and head. inv(p) gives the
// frequencies position p was rotated with (the step it was computed in).
func refForward(m *runtime.Model, toks []int, inv func(p int) []float32) [][]float64 {
	c, w := m.Config, m.Weights
	n, hd := len(toks), c.HeadDim
	rms := func(x, g []float64) []float64 {
		var ss float64
		for _, v := range x {
			ss += v * v
		}
		r := 1 / math.Sqrt(ss/float64(len(x))+float64(c.NormEps))
		out := make([]float64, len(x))
		for i := range x {
			out[i] = g[i] * x[i] * r
		}
		return out
	}
	mul := func(wt []float64, x []float64, out int) []float64 {
		in := len(x)
		y := make([]float64, out)
		for o := range y {
			for i, v := range x {
				y[o] += wt[o*in+i] * v
			}
		}
		return y
	}
	af := c.RopeScaling.Attention()
	rope := func(v []float64, p int) {
		f := inv(p)
		for i := 0; i < hd/2; i++ {
			ia, ib := i, i+hd/2
			if c.Rope == runtime.RopeInterleaved {
				ia, ib = 2*i, 2*i+1
			}
			ang := float64(p) * float64(f[i])
			cs, sn := math.Cos(ang)*af, math.Sin(ang)*af
			a, b := v[ia], v[ib]
			v[ia], v[ib] = a*cs-b*sn, b*cs+a*sn
		}
	}
	emb := f64(w.Embed)
	x := make([][]float64, n)
	for r, tok := range toks {
		x[r] = append([]float64(nil), emb[tok*c.Dim:(tok+1)*c.Dim]...)
	}
	for _, l := range w.Layers {
		wq, wk, wv, wo := f64(l.Wq), f64(l.Wk), f64(l.Wv), f64(l.Wo)
		q, k, v := make([][]float64, n), make([][]float64, n), make([][]float64, n)
		for r := range x {
			xb := rms(x[r], f64(l.AttnNorm))
			q[r], k[r], v[r] = mul(wq, xb, c.QDim()), mul(wk, xb, c.KVDim()), mul(wv, xb, c.KVDim())
			if c.QKVBias {
				for i, b := range f64(l.Bq) {
					q[r][i] += b
				}
				for i, b := range f64(l.Bk) {
					k[r][i] += b
				}
				for i, b := range f64(l.Bv) {
					v[r][i] += b
				}
			}
			for h := 0; h < c.Heads; h++ {
				qh := q[r][h*hd : (h+1)*hd]
				if c.QKNorm {
					copy(qh, rms(qh, f64(l.QNorm)))
				}
				rope(qh, r)
			}
			for h := 0; h < c.KVHeads; h++ {
				kh := k[r][h*hd : (h+1)*hd]
				if c.QKNorm {
					copy(kh, rms(kh, f64(l.KNorm)))
				}
				rope(kh, r)
			}
		}
		for r := range x {
			att := make([]float64, c.QDim())
			for h := 0; h < c.Heads; h++ {
				g := h / (c.Heads / c.KVHeads)
				qh := q[r][h*hd : (h+1)*hd]
				sc := make([]float64, r+1)
				mx := math.Inf(-1)
				for j := 0; j <= r; j++ {
					sc[j] = math.Inf(-1)
					if c.SlidingWindow > 0 && j <= r-c.SlidingWindow {
						continue
					}
					var s float64
					for i := range qh {
						s += qh[i] * k[j][g*hd+i]
					}
					sc[j] = s / math.Sqrt(float64(hd))
					mx = math.Max(mx, sc[j])
				}
				var sum float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - mx)
					sum += sc[j]
				}
				for j := range sc {
					for i := 0; i < hd; i++ {
						att[h*hd+i] += sc[j] / sum * v[j][g*hd+i]
					}
				}
			}
			for i, o := range mul(wo, att, c.Dim) {
				x[r][i] += o
			}
		}
		gate, up, down := f64(l.Gate), f64(l.Up), f64(l.Down)
		for r := range x {
			xb := rms(x[r], f64(l.MLPNorm))
			gt, u := mul(gate, xb, c.Hidden), mul(up, xb, c.Hidden)
			for i := range gt {
				gt[i] = gt[i] / (1 + math.Exp(-gt[i])) * u[i]
			}
			for i, o := range mul(down, gt, c.Dim) {
				x[r][i] += o
			}
		}
	}
	out := make([][]float64, n)
	head := f64(w.Output)
	for r := range x {
		out[r] = mul(head, rms(x[r], f64(w.Norm)), c.Vocab)
	}
	return out
}

// relDiff is max |a-b| over max |b|, row by row of logits.
func relDiff(got []float32, want [][]float64) float64 {
	var d, scale float64
	for r, row := range want {
		for i, w := range row {
			d = math.Max(d, math.Abs(float64(got[r*len(row)+i])-w))
			scale = math.Max(scale, math.Abs(w))
		}
	}
	return d / scale
}

// TestArchAgainstReference runs each variant on the CPU against the float64
// reference: a whole prompt in one step (every position rotated with the
// frequencies of the prompt's length), and token by token (each position
// with those of its own step, as transformers decodes: dynamic and longrope
// keep the keys rotated as they were). Each variant must also differ from
// the same weights without its feature, so that the comparison means
// something.
func TestArchAgainstReference(t *testing.T) {
	const tol = 2e-5
	be := cpu.New(0)
	defer be.Close()
	rng := rand.New(rand.NewPCG(8, 8))
	toks := make([]int, 40)
	for i := range toks {
		toks[i] = 3 + rng.IntN(256)
	}
	for name, c := range archVariants() {
		t.Run(name, func(t *testing.T) {
			m := archModel(t, c)
			v := c.Vocab
			once := func(int) []float32 { return c.RopeInvFreq(len(toks)) }
			stepwise := func(p int) []float32 { return c.RopeInvFreq(p + 1) }
			for _, mode := range []struct {
				name    string
				maxRows int
				inv     func(int) []float32
			}{{"prompt", len(toks), once}, {"decode", 1, stepwise}} {
				r, err := runtime.NewRunner(m, be, mode.maxRows)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]float32, len(toks)*v)
				if err := r.ForwardAll(toks, got); err != nil {
					t.Fatal(err)
				}
				want := refForward(m, toks, mode.inv)
				if d := relDiff(got, want); d > tol {
					t.Errorf("%s: logits differ from the reference by %.3g relative", mode.name, d)
				}
			}
			// Without the feature the logits move well past the tolerance.
			plain := *m
			plain.Config.RopeScaling = runtime.RopeScaling{}
			plain.Config.SlidingWindow = 0
			plain.Config.QKNorm = false
			plain.Weights.Layers = append([]runtime.LayerWeights(nil), m.Weights.Layers...)
			for i := range plain.Weights.Layers {
				plain.Weights.Layers[i].QNorm, plain.Weights.Layers[i].KNorm = nil, nil
			}
			r, err := runtime.NewRunner(&plain, be, len(toks))
			if err != nil {
				t.Fatal(err)
			}
			got := make([]float32, len(toks)*v)
			if err := r.ForwardAll(toks, got); err != nil {
				t.Fatal(err)
			}
			if d := relDiff(got, refForward(m, toks, once)); d < 100*tol {
				t.Errorf("the variant's logits are within %.3g of plain RoPE's: the test cannot see the feature", d)
			}
		})
	}
}

// shiftCheck wraps a policy's hook and, at every decode step and layer,
// recomputes attention directly: keys un-rotated from their positions and
// rotated at their cache positions (the held tokens ranked by position),
// the query likewise, all with the model's scaled frequencies, and the
// scores times the square of its attention factor.
type shiftCheck struct {
	t     *testing.T
	inner runtime.Hook
	be    runtime.Backend
	c     runtime.Config
	worst float64
	steps int
}

func (d *shiftCheck) BeforeAttend(l int, a *runtime.AttnArgs) { d.inner.BeforeAttend(l, a) }

func (d *shiftCheck) AfterAttend(l int, a *runtime.AttnArgs) {
	defer d.inner.AfterAttend(l, a)
	if a.Rows != 1 || a.QShift == nil {
		return
	}
	c, hd := d.c, d.c.HeadDim
	inv := a.InvFreq
	rot := func(x []float64, p float64) []float64 {
		out := make([]float64, hd)
		for i := 0; i < hd/2; i++ {
			ia, ib := i, i+hd/2
			if c.Rope == runtime.RopeInterleaved {
				ia, ib = 2*i, 2*i+1
			}
			cs, sn := math.Cos(p*float64(inv[i])), math.Sin(p*float64(inv[i]))
			out[ia] = x[ia]*cs - x[ib]*sn
			out[ib] = x[ib]*cs + x[ia]*sn
		}
		return out
	}
	read := func(b runtime.Buffer, off int) []float64 {
		v := make([]float32, hd)
		d.be.Read(v, b, off)
		out := make([]float64, hd)
		for i, x := range v {
			out[i] = float64(x)
		}
		return out
	}
	af := c.RopeScaling.Attention()
	qpos := a.QPos[0]
	for h := 0; h < c.Heads; h++ {
		seq := &a.Seqs[h/(c.Heads/c.KVHeads)]
		idx := make([]int, seq.N)
		for i := range idx {
			idx[i] = i
		}
		sort.Slice(idx, func(i, j int) bool { return seq.Pos[idx[i]] < seq.Pos[idx[j]] })
		q := rot(read(a.Q, h*hd), -float64(qpos))
		qc := rot(q, float64(seq.N-1))
		scores := make([]float64, seq.N)
		m := math.Inf(-1)
		for rank, tok := range idx {
			k := rot(read(seq.K[tok/seq.PageSize], (tok%seq.PageSize)*hd), -float64(seq.Pos[tok]))
			kc := rot(k, float64(rank))
			var s float64
			for i := range kc {
				s += qc[i] * kc[i]
			}
			scores[rank] = s * af * af / math.Sqrt(float64(hd))
			m = math.Max(m, scores[rank])
		}
		want := make([]float64, hd)
		var sum float64
		for rank, tok := range idx {
			e := math.Exp(scores[rank] - m)
			sum += e
			for i, x := range read(seq.V[tok/seq.PageSize], (tok%seq.PageSize)*hd) {
				want[i] += e * x
			}
		}
		out := read(a.Out, h*hd)
		for i := range want {
			diff := math.Abs(want[i]/sum - out[i])
			d.worst = math.Max(d.worst, diff)
			if diff > 1e-4 {
				d.t.Fatalf("pos %d layer %d head %d channel %d: kernel %v, direct %v", qpos, l, h, i, out[i], want[i]/sum)
			}
		}
	}
	d.steps++
}

// TestScaledRoPEReposition checks StreamingLLM's re-positioned attention
// under every scaling whose frequencies stay fixed: the rotation by the
// shift uses the scaled frequencies and the attention factor stays on the
// scores. Dynamic and longrope change frequencies past their original
// context, so re-positioning across that change is refused.
func TestScaledRoPEReposition(t *testing.T) {
	be := cpu.New(0)
	defer be.Close()
	vars := archVariants()
	for _, name := range []string{"linear", "llama3", "yarn", "all", "dynamic", "longrope"} {
		t.Run(name, func(t *testing.T) {
			c := vars[name]
			c.SlidingWindow = 0 // the window would hide tokens the direct check counts
			m := archModel(t, c)
			r, err := runtime.NewRunner(m, be, 16)
			if err != nil {
				t.Fatal(err)
			}
			p, err := policies.New("streamingllm", policies.Params{"sinks": 3, "recent": 9})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Start(r); err != nil {
				t.Fatal(err)
			}
			chk := &shiftCheck{t: t, inner: r.Hook, be: be, c: m.Config}
			r.Hook = chk
			logits := make([]float32, c.Vocab)
			if err := r.Forward([]int{1, 40, 50, 60, 70}, logits); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 40; i++ {
				err := r.Forward([]int{3 + (i*37)%256}, logits)
				if c.RopeScaling.Varies() {
					if err == nil {
						continue
					}
					if !strings.Contains(err.Error(), "cannot be re-positioned exactly") || r.Pos() != c.RopeScaling.OriginalMaxSeq+1 {
						t.Fatalf("at position %d: %v", r.Pos()-1, err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if c.RopeScaling.Varies() {
				t.Fatalf("no error past the original context of %d with re-positioned keys", c.RopeScaling.OriginalMaxSeq)
			}
			if chk.steps < 20*c.Layers {
				t.Fatalf("checked %d shifted layer steps", chk.steps)
			}
			t.Logf("largest difference from the direct computation: %.2g", chk.worst)
		})
	}
}

// plainBackend hides the CPU backend's optional capabilities, as a backend
// without scaled RoPE or sliding windows would be.
type plainBackend struct{ runtime.Backend }

func TestArchRefusedWithoutCapability(t *testing.T) {
	be := cpu.New(0)
	defer be.Close()
	vars := archVariants()
	_, err := runtime.NewRunner(archModel(t, vars["yarn"]), plainBackend{be}, 4)
	if err == nil || !strings.Contains(err.Error(), "has RoPE scaling yarn x4 from 64") || !strings.Contains(err.Error(), "backend cannot apply") {
		t.Fatalf("scaled RoPE on a backend without it: %v", err)
	}
	m := archModel(t, vars["window"]) // window 7
	r, err := runtime.NewRunner(m, plainBackend{be}, 4)
	if err != nil {
		t.Fatal(err)
	}
	logits := make([]float32, m.Config.Vocab)
	if err := r.Forward([]int{1, 2, 3, 4, 5, 6, 7}, logits); err != nil {
		t.Fatalf("positions below the window: %v", err)
	}
	err = r.Forward([]int{8}, logits)
	if err == nil || !strings.Contains(err.Error(), "position 7 reaches the model's sliding window (config.json field sliding_window = 7)") {
		t.Fatalf("a position the window reaches: %v", err)
	}
	if r.Pos() != 7 {
		t.Fatalf("the refused step ran: position %d", r.Pos())
	}
}
