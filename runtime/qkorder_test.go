package runtime_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// interleaving is a CPU backend that asks for the query and key rows in
// interleaved RoPE order (runtime.QKInterleaver) and counts the RoPE calls
// of each style.
type interleaving struct {
	*cpu.Backend
	styles map[runtime.RopeStyle]int
}

func (b *interleaving) InterleaveQK() bool { return true }

func (b *interleaving) RoPE(x runtime.Buffer, rows, heads, headDim int, pos []int, theta float64, style runtime.RopeStyle) {
	b.styles[style]++
	b.Backend.RoPE(x, rows, heads, headDim, pos, theta, style)
}

func (b *interleaving) RoPEFreqs(x runtime.Buffer, rows, heads, headDim int, pos []int, inv []float32, style runtime.RopeStyle) {
	b.styles[style]++
	b.Backend.RoPEFreqs(x, rows, heads, headDim, pos, inv, style)
}

// TestInterleaveHeadsRoPE: the half-split rotation of a head's channels,
// reordered by InterleaveHeadsForTest, is the interleaved rotation of the
// reordered channels, value for value; the reorder refuses shapes that are
// not whole heads.
func TestInterleaveHeadsRoPE(t *testing.T) {
	be := cpu.New(1)
	defer be.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	for _, hd := range []int{8, 16, 64, 128} {
		heads, rows := 3, 2
		x := make([]float32, rows*heads*hd)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		// Rows of the tensor are channels: transpose to [heads*hd, rows].
		col := make([]float32, len(x))
		for r := range rows {
			for c := range heads * hd {
				col[c*rows+r] = x[r*heads*hd+c]
			}
		}
		perm, err := runtime.InterleaveHeadsForTest(&runtime.Tensor{Name: "x", DType: runtime.F32, Shape: []int{heads * hd, rows}, F32: col}, hd)
		if err != nil {
			t.Fatal(err)
		}
		xp := make([]float32, len(x))
		for r := range rows {
			for c := range heads * hd {
				xp[r*heads*hd+c] = perm.F32[c*rows+r]
			}
		}
		pos := []int{5, 900}
		rot := func(v []float32, style runtime.RopeStyle) []float32 {
			buf := be.Alloc(len(v))
			be.Write(buf, 0, v)
			be.RoPE(buf, rows, heads, hd, pos, 1e4, style)
			out := make([]float32, len(v))
			be.Read(out, buf, 0)
			return out
		}
		half, inter := rot(x, runtime.RopeHalf), rot(xp, runtime.RopeInterleaved)
		for r := range rows {
			for h := range heads {
				for i := range hd / 2 {
					o := r*heads*hd + h*hd
					if inter[o+2*i] != half[o+i] || inter[o+2*i+1] != half[o+i+hd/2] {
						t.Fatalf("hd %d, row %d, head %d, pair %d: interleaved (%v, %v), half-split (%v, %v)", hd, r, h, i,
							inter[o+2*i], inter[o+2*i+1], half[o+i], half[o+i+hd/2])
					}
				}
			}
		}
	}
	u := &runtime.Tensor{Name: "b", DType: runtime.BF16, Shape: []int{8}, U16: []uint16{0, 1, 2, 3, 4, 5, 6, 7}}
	p, err := runtime.InterleaveHeadsForTest(u, 4)
	if err != nil || !slices.Equal(p.U16, []uint16{0, 2, 1, 3, 4, 6, 5, 7}) {
		t.Errorf("a vector of two heads of 4: %v, %v", p, err)
	}
	for _, bad := range []struct {
		t  *runtime.Tensor
		hd int
	}{{u, 3}, {u, 16}, {&runtime.Tensor{Name: "short", DType: runtime.F32, Shape: []int{8, 2}, F32: make([]float32, 10)}, 4}} {
		if _, err := runtime.InterleaveHeadsForTest(bad.t, bad.hd); err == nil {
			t.Errorf("%s %v by heads of %d: no error", bad.t.Name, bad.t.Shape, bad.hd)
		}
	}
}

// TestQKInterleavedRunner runs models of half-split RoPE (biases, head
// norms, scaled RoPE, sliding windows, the reference model) on a backend
// that asks for interleaved query and key rows against the plain CPU, under
// full attention and policies that read keys or attention (quest, snapkv,
// h2o, window with re-positioned keys): every RoPE call is interleaved,
// the logits agree to float32 rounding (the dot products are the same sums
// in another order) and the greedy tokens are the same.
func TestQKInterleavedRunner(t *testing.T) {
	models := map[string]*runtime.Model{}
	for _, name := range []string{"tiny", "tiny-qwen"} {
		m, err := runtime.Synthetic(name)
		if err != nil {
			t.Fatal(err)
		}
		models[name] = m
	}
	for name, c := range archVariants() {
		if c.Rope == runtime.RopeHalf {
			models[name] = archModel(t, c)
		}
	}
	if d, ok := fixtures.Find(); ok { // the reference model where the fixtures are
		m, err := runtime.Load(filepath.Join(d, "models/kvbench-ref-13m"))
		if err != nil {
			t.Fatal(err)
		}
		models["kvbench-ref-13m"] = m
	}
	pols := []struct {
		name string
		p    policies.Params
	}{{"full", nil}, {"quest", policies.Params{"budget": 32, "page": 8}}, {"snapkv", policies.Params{"budget": 24, "window": 8}},
		{"h2o", policies.Params{"budget": 24}}, {"window", policies.Params{"budget": 24, "reposition": true}}}
	for name, m := range models {
		for _, pc := range pols {
			t.Run(fmt.Sprintf("%s/%s", name, pc.name), func(t *testing.T) {
				run := func(be runtime.Backend) ([]float32, []int) {
					r, err := runtime.NewRunner(m, be, 16)
					if err != nil {
						t.Fatal(err)
					}
					p, err := policies.New(pc.name, pc.p)
					if err != nil {
						t.Fatal(err)
					}
					if err := p.Start(r); err != nil {
						t.Fatal(err)
					}
					V := m.Config.Vocab
					prompt := make([]int, 40)
					for i := range prompt {
						prompt[i] = 3 + (i*37)%(V-3)
					}
					p.Prompt(len(prompt))
					logits := make([]float32, V)
					if err := r.Forward(prompt, logits); err != nil {
						t.Fatal(err)
					}
					all, ids := slices.Clone(logits), []int{}
					for range 12 {
						id := int(slices.Index(logits, slices.Max(logits)))
						ids = append(ids, id)
						if err := r.Forward([]int{id}, logits); err != nil {
							t.Fatal(err)
						}
						all = append(all, logits...)
					}
					return all, ids
				}
				plain := cpu.New(1)
				defer plain.Close()
				il := &interleaving{Backend: cpu.New(1), styles: map[runtime.RopeStyle]int{}}
				defer il.Close()
				want, wantIDs := run(plain)
				got, gotIDs := run(il)
				if il.styles[runtime.RopeHalf] != 0 || il.styles[runtime.RopeInterleaved] == 0 {
					t.Fatalf("RoPE calls by style on the interleaving backend: %v, want interleaved only", il.styles)
				}
				if d := maxRel(got, want); d > 2e-4 {
					t.Errorf("logits differ from the plain backend's by %.3g (relative to the largest)", d)
				}
				if !slices.Equal(gotIDs, wantIDs) {
					t.Errorf("greedy tokens %v, want %v", gotIDs, wantIDs)
				}
			})
		}
	}
}

// maxRel is the largest difference of got and want relative to want's
// largest magnitude.
func maxRel(got, want []float32) float64 {
	var d, m float64
	for i := range want {
		d = max(d, math.Abs(float64(got[i])-float64(want[i])))
		m = max(m, math.Abs(float64(want[i])))
	}
	return d / max(m, 1e-30)
}
