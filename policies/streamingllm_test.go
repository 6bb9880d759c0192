package policies_test

import (
	"math"
	"sort"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// rotate returns x rotated by RoPE at position pos (float64), or by -pos to
// undo a rotation.
func rotate(x []float64, pos float64, theta float64, style runtime.RopeStyle) []float64 {
	d := len(x)
	out := make([]float64, d)
	for i := 0; i < d/2; i++ {
		ia, ib := i, i+d/2
		if style == runtime.RopeInterleaved {
			ia, ib = 2*i, 2*i+1
		}
		ang := pos * math.Pow(theta, -float64(2*i)/float64(d))
		c, s := math.Cos(ang), math.Sin(ang)
		out[ia] = x[ia]*c - x[ib]*s
		out[ib] = x[ib]*c + x[ia]*s
	}
	return out
}

// directCheck wraps a policy's hook and, at every decode step and layer,
// recomputes attention from pre-RoPE keys and query rotated at their cache
// positions (the tokens held, ranked by original position), comparing with
// what the backend computed.
type directCheck struct {
	t     *testing.T
	inner runtime.Hook
	be    runtime.Backend
	c     runtime.Config
	worst float64
	steps int
}

func (d *directCheck) BeforeAttend(l int, a *runtime.AttnArgs) { d.inner.BeforeAttend(l, a) }

func (d *directCheck) AfterAttend(l int, a *runtime.AttnArgs) {
	defer d.inner.AfterAttend(l, a)
	if a.Rows != 1 {
		return
	}
	c, hd := d.c, d.c.HeadDim
	q := make([]float32, c.QDim())
	out := make([]float32, c.QDim())
	d.be.Read(q, a.Q, 0)
	d.be.Read(out, a.Out, 0)
	qpos := a.QPos[0]
	for h := 0; h < c.Heads; h++ {
		seq := &a.Seqs[h/(c.Heads/c.KVHeads)]
		// Held tokens ranked by original position give the cache positions.
		idx := make([]int, seq.N)
		for i := range idx {
			idx[i] = i
		}
		sort.Slice(idx, func(i, j int) bool { return seq.Pos[idx[i]] < seq.Pos[idx[j]] })
		qv := make([]float64, hd)
		for i := range qv {
			qv[i] = float64(q[h*hd+i])
		}
		qc := rotate(rotate(qv, -float64(qpos), c.RopeTheta, c.Rope), float64(seq.N-1), c.RopeTheta, c.Rope)
		scores := make([]float64, seq.N)
		m := math.Inf(-1)
		for rank, t := range idx {
			k := make([]float32, hd)
			d.be.Read(k, seq.K[t/seq.PageSize], (t%seq.PageSize)*hd)
			kv := make([]float64, hd)
			for i := range kv {
				kv[i] = float64(k[i])
			}
			kc := rotate(rotate(kv, -float64(seq.Pos[t]), c.RopeTheta, c.Rope), float64(rank), c.RopeTheta, c.Rope)
			var s float64
			for i := range kc {
				s += qc[i] * kc[i]
			}
			scores[rank] = s / math.Sqrt(float64(hd))
			m = math.Max(m, scores[rank])
		}
		want := make([]float64, hd)
		var sum float64
		for rank, t := range idx {
			e := math.Exp(scores[rank] - m)
			sum += e
			v := make([]float32, hd)
			d.be.Read(v, seq.V[t/seq.PageSize], (t%seq.PageSize)*hd)
			for i := range want {
				want[i] += e * float64(v[i])
			}
		}
		for i := range want {
			diff := math.Abs(want[i]/sum - float64(out[h*hd+i]))
			d.worst = math.Max(d.worst, diff)
			if diff > 1e-4 {
				d.t.Fatalf("pos %d layer %d head %d channel %d: kernel %v, direct %v", qpos, l, h, i, out[h*hd+i], want[i]/sum)
			}
		}
	}
	d.steps++
}

// TestStreamingLLMRepositionDirect checks re-positioned attention against
// attention computed directly from pre-RoPE keys rotated at their cache
// positions, for both RoPE conventions, once the cache has evicted.
func TestStreamingLLMRepositionDirect(t *testing.T) {
	for _, model := range []string{"tiny", "tiny-interleaved"} {
		t.Run(model, func(t *testing.T) {
			m, err := runtime.Synthetic(model)
			if err != nil {
				t.Fatal(err)
			}
			be := cpu.New(0)
			defer be.Close()
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
			chk := &directCheck{t: t, inner: r.Hook, be: be, c: m.Config}
			r.Hook = chk
			logits := make([]float32, m.Config.Vocab)
			if err := r.Forward([]int{1, 40, 50, 60, 70}, logits); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 60; i++ {
				if err := r.Forward([]int{3 + (i*37)%256}, logits); err != nil {
					t.Fatal(err)
				}
				if r.Cache.Len(0, 0) > 12 {
					t.Fatalf("cache holds %d tokens, budget 12", r.Cache.Len(0, 0))
				}
			}
			if chk.steps != 60*m.Config.Layers {
				t.Fatalf("checked %d layer steps, want %d", chk.steps, 60*m.Config.Layers)
			}
			t.Logf("largest difference from the direct computation: %.2g", chk.worst)
		})
	}
}
