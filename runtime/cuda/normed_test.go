package cuda_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// TestBackendNormed checks a prompt's norms written in the GEMMs' input
// type (runtime.NormedProducts) under bf16 compute: NormMatMul3, NormMatMul
// and NormMLP give the same bits as RMSNorm then MatMul3, MatMul and MLP
// (whose GEMMs round the float32 norm themselves), and the CPU's values
// within bf16's rounding; float32 weights, f16 weights for NormMLP, and
// fewer rows than the GEMMs take are declined (nothing written).
func TestBackendNormed(t *testing.T) {
	c := cpu.New(0)
	defer c.Close()
	g := newGPUPrec(t, "bf16")
	rng := rand.New(rand.NewPCG(9, 21))
	for _, dt := range []runtime.DType{runtime.BF16, runtime.F16, runtime.F32} {
		for _, sh := range []struct{ rows, in, out, hidden int }{{40, 256, 96, 512}, {300, 4096, 1024, 1024}, {17, 264, 40, 72}, {1, 256, 96, 512}} {
			rows, in := sh.rows, sh.in
			name := fmt.Sprintf("%v %d rows of %d", dt, rows, in)
			takes := dt != runtime.F32 && rows > 1 // the GEMMs take 15 rows or more
			x := randVec(rng, rows*in, 2)
			xp := newPair(c, g, x)
			nc, ng := uploadBoth(t, c, g, weight(rng, dt, in))
			const eps = 1e-5
			// The reference: RMSNorm to float32, then the products.
			xb := newPair(c, g, make([]float32, rows*in))
			c.RMSNorm(xb.c, xp.c, nc, rows, in, eps)
			g.RMSNorm(xb.g, xp.g, ng, rows, in, eps)
			var ws [3][2]runtime.Buffer
			var want, got [3]pair
			var ms, fused [3]runtime.MatOut
			for i := range ws {
				ws[i][0], ws[i][1] = uploadBoth(t, c, g, weight(rng, dt, sh.out, in))
				want[i] = newPair(c, g, make([]float32, rows*sh.out))
				got[i] = newPair(c, g, make([]float32, rows*sh.out))
				c.MatMul(want[i].c, xb.c, ws[i][0], rows, in, sh.out)
				ms[i] = runtime.MatOut{Dst: want[i].g, W: ws[i][1], Out: sh.out}
				fused[i] = runtime.MatOut{Dst: got[i].g, W: ws[i][1], Out: sh.out}
			}
			g.MatMul3(xb.g, rows, in, ms[0], ms[1], ms[2])
			if took := g.NormMatMul3(xp.g, ng, eps, rows, in, fused[0], fused[1], fused[2]); took != takes {
				t.Fatalf("%s: NormMatMul3 took the call: %v", name, took)
			}
			for i := range got {
				sameBits(t, g, got[i], want[i], nil, takes, fmt.Sprintf("%s NormMatMul3 [%d]", name, i))
				if takes {
					got[i].c = want[i].c
					got[i].cmp(t, c, g, fmt.Sprintf("%s NormMatMul3 [%d] against the CPU", name, i), 2e-2)
				}
			}
			one := newPair(c, g, make([]float32, rows*sh.out))
			if took := g.NormMatMul(xp.g, ng, eps, rows, in, runtime.MatOut{Dst: one.g, W: ws[0][1], Out: sh.out}); took != takes {
				t.Fatalf("%s: NormMatMul took the call: %v", name, took)
			}
			sameBits(t, g, one, want[0], nil, takes, name+" NormMatMul")

			// The MLP block: x += down · SwiGLU(gate·n, up·n).
			gc, gg := uploadBoth(t, c, g, weight(rng, dt, sh.hidden, in))
			uc, ug := uploadBoth(t, c, g, weight(rng, dt, sh.hidden, in))
			dc, dg := uploadBoth(t, c, g, weight(rng, dt, in, sh.hidden))
			ref := newPair(c, g, x)
			if !g.MLP(ref.g, xb.g, gg, ug, dg, rows, in, sh.hidden) {
				g.Write(ref.g, 0, x) // the reference is then the two products' path
				h, h2 := g.Alloc(rows*sh.hidden), g.Alloc(rows*sh.hidden)
				tmp := g.Alloc(rows * in)
				g.MatMulSwiGLU(h, h2, xb.g, gg, ug, rows, in, sh.hidden)
				g.MatMulAdd(ref.g, tmp, h, dg, rows, sh.hidden, in)
				g.Free(h)
				g.Free(h2)
				g.Free(tmp)
			}
			mx := newPair(c, g, x)
			if took := g.NormMLP(mx.g, ng, eps, gg, ug, dg, rows, in, sh.hidden); took != (takes && dt == runtime.BF16) {
				t.Fatalf("%s: NormMLP took the call: %v", name, took)
			}
			sameBits(t, g, mx, ref, x, takes && dt == runtime.BF16, name+" NormMLP")
			if takes && dt == runtime.BF16 {
				h, h2 := c.Alloc(rows*sh.hidden), c.Alloc(rows*sh.hidden)
				c.MatMul(h, xb.c, gc, rows, in, sh.hidden)
				c.MatMul(h2, xb.c, uc, rows, in, sh.hidden)
				c.SwiGLU(h, h2, rows*sh.hidden)
				dn := c.Alloc(rows * in)
				c.MatMul(dn, h, dc, rows, sh.hidden, in)
				c.Add(mx.c, dn, rows*in)
				mx.cmp(t, c, g, name+" NormMLP against the CPU", 2e-2)
			}
		}
	}
}

// sameBits checks that got's device values are want's, bit for bit (took:
// the fused call ran), or that got still holds init (nil: zeros) where it
// declined.
func sameBits(t *testing.T, g runtime.Backend, got, want pair, init []float32, took bool, what string) {
	t.Helper()
	a, b := read(g, got.g), read(g, want.g)
	if !took {
		if init == nil {
			init = make([]float32, len(a))
		}
		if !slices.Equal(a, init) {
			t.Errorf("%s: declined, yet its output was written", what)
		}
		return
	}
	for i := range a {
		if a[i] != b[i] {
			t.Errorf("%s: value %d is %v, RMSNorm then the products give %v", what, i, a[i], b[i])
			return
		}
	}
}
