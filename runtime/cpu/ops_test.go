package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

func TestExpf(t *testing.T) {
	check := func(x float32) {
		want := math.Exp(float64(x))
		got := float64(expf(x))
		if want > math.MaxFloat32 {
			if !math.IsInf(got, 1) {
				t.Errorf("expf(%g) = %g, want +Inf", x, got)
			}
			return
		}
		if want < 1e-38 { // subnormal range: absolute error
			if math.Abs(got-want) > 2e-45 {
				t.Errorf("expf(%g) = %g, want %g", x, got, want)
			}
			return
		}
		if rel := math.Abs(got-want) / want; rel > 4e-7 {
			t.Errorf("expf(%g) = %g, want %g (rel %.2g)", x, got, want, rel)
		}
	}
	for _, x := range []float32{0, 1, -1, 0.5, -0.5, 88.7, 88.72, 88.73, -87, -100, -103, -104, 1e-8, -1e-8, 20, -20} {
		check(x)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 100000; i++ {
		check(float32(rng.Float64()*190 - 100))
	}
	if v := expf(float32(math.NaN())); v == v {
		t.Errorf("expf(NaN) = %g", v)
	}
}

// TestRoPEAgainstFormula checks both pairings against the rotation written
// out with complex numbers in float64.
func TestRoPEAgainstFormula(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	const rows, heads, hd = 5, 3, 16
	pos := []int{0, 1, 7, 100, 4095}
	for _, style := range []runtime.RopeStyle{runtime.RopeHalf, runtime.RopeInterleaved} {
		x := make([]float32, rows*heads*hd)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		orig := append([]float32(nil), x...)
		b := New(1)
		buf := &f32{x}
		b.RoPE(buf, rows, heads, hd, pos, 10000, style)
		for r := 0; r < rows; r++ {
			for h := 0; h < heads; h++ {
				for i := 0; i < hd/2; i++ {
					ia, ib := 2*i, 2*i+1
					if style == runtime.RopeHalf {
						ia, ib = i, i+hd/2
					}
					base := (r*heads + h) * hd
					theta := float64(pos[r]) * math.Pow(10000, -float64(2*i)/hd)
					z := complex(float64(orig[base+ia]), float64(orig[base+ib])) * complex(math.Cos(theta), math.Sin(theta))
					if math.Abs(real(z)-float64(x[base+ia])) > 2e-3 || math.Abs(imag(z)-float64(x[base+ib])) > 2e-3 {
						t.Fatalf("%v row %d head %d pair %d: got (%g, %g), want (%g, %g)", style, r, h, i,
							x[base+ia], x[base+ib], real(z), imag(z))
					}
				}
			}
		}
		b.Close()
	}
}

// TestAttendAgainstNaive compares Attend with a direct float64 computation on
// random queries and a paged cache with a causal mask.
func TestAttendAgainstNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	const heads, kvHeads, hd, page = 6, 2, 8, 4
	b := New(2)
	defer b.Close()
	for _, n := range []int{1, 3, 4, 9, 33} {
		seqs := make([]runtime.KVSeq, kvHeads)
		for g := range seqs {
			seqs[g].PageSize = page
			for t0 := 0; t0 < n; t0 += page {
				k, v := make([]float32, page*hd), make([]float32, page*hd)
				for i := range k {
					k[i], v[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
				}
				seqs[g].K = append(seqs[g].K, &f32{k})
				seqs[g].V = append(seqs[g].V, &f32{v})
			}
			seqs[g].N = n
			for t0 := 0; t0 < n; t0++ {
				seqs[g].Pos = append(seqs[g].Pos, int32(t0))
			}
		}
		rows := 3
		qpos := []int{n - 3, n - 2, n - 1}
		q := make([]float32, rows*heads*hd)
		for i := range q {
			q[i] = float32(rng.NormFloat64())
		}
		out := make([]float32, rows*heads*hd)
		scale := float32(1 / math.Sqrt(hd))
		b.Attend(&runtime.AttnArgs{Out: &f32{out}, Q: &f32{q}, Rows: rows, QPos: qpos, Heads: heads,
			KVHeads: kvHeads, HeadDim: hd, Scale: scale, Seqs: seqs})
		for r := 0; r < rows; r++ {
			for h := 0; h < heads; h++ {
				s := &seqs[h/(heads/kvHeads)]
				want := make([]float64, hd)
				if qpos[r] >= 0 {
					var ws []float64
					var m, sum float64 = math.Inf(-1), 0
					for t0 := 0; t0 <= qpos[r]; t0++ {
						k := vec(s.K[t0/page])[(t0%page)*hd:]
						var d float64
						for i := 0; i < hd; i++ {
							d += float64(q[(r*heads+h)*hd+i]) * float64(k[i])
						}
						d *= float64(scale)
						ws = append(ws, d)
						m = math.Max(m, d)
					}
					for t0, d := range ws {
						e := math.Exp(d - m)
						sum += e
						v := vec(s.V[t0/page])[(t0%page)*hd:]
						for i := 0; i < hd; i++ {
							want[i] += e * float64(v[i])
						}
					}
					for i := range want {
						want[i] /= sum
					}
				}
				for i := 0; i < hd; i++ {
					got := float64(out[(r*heads+h)*hd+i])
					if math.Abs(got-want[i]) > 1e-5 {
						t.Fatalf("n=%d row %d head %d ch %d: got %g want %g", n, r, h, i, got, want[i])
					}
				}
			}
		}
	}
}

func TestExpNeg(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 200000; i++ {
		x := float32(-rng.Float64() * 90)
		if i < 10 {
			x = []float32{0, -1e-9, -0.5, -1, -10, -80, -87.2, -87.4, -100, float32(math.Inf(-1))}[i]
		}
		want := math.Exp(float64(x))
		got := float64(expNeg(x))
		if x < -87.3 {
			if got != 0 {
				t.Fatalf("expNeg(%g) = %g, want 0 (flushed)", x, got)
			}
			continue
		}
		if rel := math.Abs(got-want) / want; rel > 4e-7 {
			t.Fatalf("expNeg(%g) = %g, want %g (rel %.2g)", x, got, want, rel)
		}
	}
}

func TestExpNegSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, fast := range []bool{true, false} {
		saved := useAVX2
		useAVX2 = useAVX2 && fast
		for n := 0; n < 70; n++ {
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(rng.NormFloat64() * 30)
				if rng.IntN(7) == 0 {
					x[i] = float32(math.Inf(-1))
				}
			}
			sub := float32(math.Inf(-1)) // as in a softmax: the largest value
			for _, v := range x {
				sub = max(sub, v)
			}
			want := make([]float32, n)
			var wsum float64
			for i, v := range x {
				want[i] = expNeg(v - sub)
				wsum += float64(want[i])
			}
			got := append([]float32(nil), x...)
			sum := expNegSum(got, sub)
			for i := range got {
				if d := math.Abs(float64(got[i] - want[i])); d > 1e-6*float64(want[i])+1e-38 {
					t.Fatalf("fast=%v n=%d: element %d (x=%g) = %g, want %g", fast, n, i, x[i], got[i], want[i])
				}
			}
			if math.Abs(float64(sum)-wsum) > 1e-5*wsum+1e-30 {
				t.Fatalf("fast=%v n=%d: sum %g, want %g", fast, n, sum, wsum)
			}
		}
		useAVX2 = saved
	}
}
