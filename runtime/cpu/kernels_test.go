package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// Kernel tests: every fast kernel (through the dispatchers, so with the
// assembly where the CPU has it) and every Go reference version against a
// naive float64 computation written out here.

// weight element kinds of the matmul dispatchers, for the tests.
const (
	tkF32 = iota
	tkBF16
	tkF16
)

var tkNames = [...]string{"F32", "BF16", "F16"}

// setAVX2 switches the assembly kernels on (where the CPU has them) or off
// for the rest of a test or benchmark.
func setAVX2(tb testing.TB, on bool) {
	old := useAVX2
	useAVX2 = on && hasAVX2FMA
	tb.Cleanup(func() { useAVX2 = old })
}

// bf16Value and f16Value decode weight bit patterns independently of the
// code under test.
func bf16Value(h uint16) float64 {
	return float64(math.Float32frombits(uint32(h) << 16))
}

func f16Value(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	e, m := int(h>>10&0x1f), float64(h&0x3ff)
	switch e {
	case 0: // zero or subnormal
		return sign * math.Ldexp(m, -24)
	case 0x1f:
		if m != 0 {
			return math.NaN()
		}
		return sign * math.Inf(1)
	}
	return sign * math.Ldexp(1024+m, e-25)
}

// mmCase is one matmul problem with weights of some kind.
type mmCase struct {
	kind                         int
	rows, in, outStride, o0, o1  int
	x                            []float32
	wf                           []float32 // kind F32
	wh                           []uint16  // kinds BF16, F16
	nOut                         int       // weight rows
	allowOverflowSkip, debugName bool
}

func (c *mmCase) weight(o, i int) float64 {
	switch c.kind {
	case tkF32:
		return float64(c.wf[o*c.in+i])
	case tkBF16:
		return bf16Value(c.wh[o*c.in+i])
	}
	return f16Value(c.wh[o*c.in+i])
}

func (c *mmCase) run(out []float32, fast bool) {
	switch {
	case c.kind == tkF32 && fast:
		matmulF32(out, c.x, c.wf, c.rows, c.in, c.outStride, c.o0, c.o1)
	case c.kind == tkF32:
		matmulF32Go(out, c.x, c.wf, c.rows, c.in, c.outStride, c.o0, c.o1)
	case c.kind == tkBF16 && fast:
		matmulBF16(out, c.x, c.wh, c.rows, c.in, c.outStride, c.o0, c.o1)
	case c.kind == tkBF16:
		matmulBF16Go(out, c.x, c.wh, c.rows, c.in, c.outStride, c.o0, c.o1)
	case fast:
		matmulF16(out, c.x, c.wh, c.rows, c.in, c.outStride, c.o0, c.o1)
	default:
		matmulF16Go(out, c.x, c.wh, c.rows, c.in, c.outStride, c.o0, c.o1)
	}
}

func (c *mmCase) String() string {
	return fmt.Sprintf("%s rows=%d in=%d out=%d stride=%d o=[%d,%d)", tkNames[c.kind], c.rows, c.in, c.nOut, c.outStride, c.o0, c.o1)
}

// checkSum compares one float32 result with the float64 sum of the n
// products p: within 1e-5 of sum|p| (plus a few subnormal ulps), the same
// infinity, or NaN where the exact sum is NaN. Sums whose finite terms come
// near the float32 range are not checked (float32 may overflow where
// float64 does not). It returns a description of a mismatch, or "".
func checkSum(got float32, ref, finiteAbs float64, n int) string {
	if finiteAbs >= 1e37 {
		return ""
	}
	g := float64(got)
	switch {
	case math.IsNaN(ref):
		if !math.IsNaN(g) {
			return fmt.Sprintf("got %g, want NaN", g)
		}
	case math.IsInf(ref, 0):
		if g != ref {
			return fmt.Sprintf("got %g, want %g", g, ref)
		}
	default:
		if math.Abs(g-ref) > 1e-5*finiteAbs+float64(n)*1e-44 || math.IsNaN(g) {
			return fmt.Sprintf("got %.9g, want %.9g (err %.3g, sum|xw| %.3g)", g, ref, math.Abs(g-ref), finiteAbs)
		}
	}
	return ""
}

// verify runs the case (fast or Go reference) and checks every output
// element and that nothing outside [o0,o1) of each output row is written.
func (c *mmCase) verify(t testing.TB, fast bool) {
	t.Helper()
	outLen := (c.rows-1)*c.outStride + c.o1 + 3
	out := make([]float32, outLen)
	const sentinel = float32(-12345.5)
	for i := range out {
		out[i] = sentinel
	}
	c.run(out, fast)
	for r := 0; r < c.rows; r++ {
		for o := c.o0; o < c.o1; o++ {
			var ref, fabs float64
			for i := 0; i < c.in; i++ {
				p := float64(c.x[r*c.in+i]) * c.weight(o, i)
				ref += p
				if !math.IsInf(p, 0) && !math.IsNaN(p) {
					fabs += math.Abs(p)
				}
			}
			if msg := checkSum(out[r*c.outStride+o], ref, fabs, c.in); msg != "" {
				t.Fatalf("%v fast=%v: out[r=%d, o=%d]: %s", c, fast, r, o, msg)
			}
		}
	}
	for i, v := range out {
		r, o := i/c.outStride, i%c.outStride
		if r < c.rows && o >= c.o0 && o < c.o1 {
			continue
		}
		if v != sentinel {
			t.Fatalf("%v fast=%v: wrote out[%d] (row %d col %d) outside the range", c, fast, i, r, o)
		}
	}
}

func randF32(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

// randWeights returns n random weights of kind (for F32 in wf, else the
// bit patterns in wh) of roughly unit size.
func randWeights(rng *rand.Rand, kind, n int) (wf []float32, wh []uint16) {
	wf = randF32(rng, n)
	if kind == tkF32 {
		return wf, nil
	}
	wh = make([]uint16, n)
	for i, v := range wf {
		if kind == tkBF16 {
			wh[i] = uint16(math.Float32bits(v) >> 16)
		} else {
			wh[i] = f16Bits(v)
		}
	}
	return nil, wh
}

// f16Bits rounds a float32 of moderate size (|v| < 65504, normal in
// float16) to float16 bits by truncation, which is all the tests need.
func f16Bits(v float32) uint16 {
	b := math.Float32bits(v)
	sign := uint16(b>>16) & 0x8000
	e := int(b>>23&0xff) - 127 + 15
	if e <= 0 {
		return sign // flush tiny values to zero
	}
	return sign | uint16(e)<<10 | uint16(b>>13&0x3ff)
}

func newRandCase(rng *rand.Rand, kind, rows, in, nOut int) *mmCase {
	c := &mmCase{kind: kind, rows: rows, in: in, nOut: nOut}
	c.x = randF32(rng, rows*in)
	c.wf, c.wh = randWeights(rng, kind, nOut*in)
	c.o0 = rng.IntN(nOut)
	c.o1 = c.o0 + 1 + rng.IntN(nOut-c.o0)
	c.outStride = nOut + rng.IntN(5)
	return c
}

// TestKernelMatmul covers in = 1..300 (every size, so every remainder mod
// 8 and 16), rows 1..9, random output ranges and strides, for each weight
// kind, through the fast dispatchers and through the Go references.
func TestKernelMatmul(t *testing.T) {
	t.Logf("AVX2+FMA: %v, F16C: %v", hasAVX2FMA, hasF16C)
	for _, fast := range []bool{true, false} {
		for kind := range tkNames {
			t.Run(fmt.Sprintf("%s/fast=%v", tkNames[kind], fast), func(t *testing.T) {
				setAVX2(t, true)
				rng := rand.New(rand.NewPCG(uint64(kind), 1))
				for in := 1; in <= 300; in++ {
					c := newRandCase(rng, kind, 1+rng.IntN(9), in, 1+rng.IntN(20))
					c.verify(t, fast)
				}
			})
		}
	}
}

// TestKernelMatmulShapes covers the paths of the tiled driver explicitly:
// output ranges of width 1..3 (single-row kernel), 4, 5..11 (a last group
// overlapping the previous one), row counts around the 3-row tiles and
// beyond one x block, and the model sizes.
func TestKernelMatmulShapes(t *testing.T) {
	setAVX2(t, true)
	rng := rand.New(rand.NewPCG(2, 2))
	for kind := range tkNames {
		for _, in := range []int{1, 7, 8, 9, 15, 16, 17, 64, 172, 384} {
			for _, rows := range []int{1, 2, 3, 4, 5, 6, 7} {
				for width := 1; width <= 11; width++ {
					c := newRandCase(rng, kind, rows, in, 16)
					c.o0 = rng.IntN(16 - width + 1)
					c.o1 = c.o0 + width
					c.verify(t, true)
				}
			}
		}
		for _, sh := range [][2]int{{31, 256}, {40, 300}, {64, 384}, {13, 1000}, {2, 4096}, {10, 1030}} {
			c := newRandCase(rng, kind, sh[0], sh[1], 37)
			c.o0, c.o1 = 0, 37
			c.verify(t, true)
		}
	}
}

// TestKernelMatmulSpecial puts special weight values into every kernel:
// zeros of both signs, negatives, subnormals (of float16 and bfloat16), the
// largest finite values and infinities, with some x exactly zero.
func TestKernelMatmulSpecial(t *testing.T) {
	specials := map[int][]uint16{
		tkBF16: {0x0000, 0x8000, 0x0001, 0x8001, 0x007f, 0x0080, 0x3f80, 0xbf80, 0xc0a0, 0x7f7f, 0xff7f, 0x7f80, 0xff80},
		tkF16:  {0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x83ff, 0x0400, 0x3c00, 0xbc00, 0xc500, 0x7bff, 0xfbff, 0x7c00, 0xfc00},
	}
	for _, fast := range []bool{true, false} {
		for _, kind := range []int{tkBF16, tkF16} {
			t.Run(fmt.Sprintf("%s/fast=%v", tkNames[kind], fast), func(t *testing.T) {
				setAVX2(t, true)
				rng := rand.New(rand.NewPCG(3, uint64(kind)))
				sp := specials[kind]
				for trial := 0; trial < 400; trial++ {
					in := 1 + rng.IntN(70)
					c := newRandCase(rng, kind, 1+rng.IntN(5), in, 1+rng.IntN(12))
					// Mostly one value repeated (so infinities of one sign
					// survive), or a random mix.
					allSame := trial%2 == 0
					v := sp[rng.IntN(len(sp))]
					for i := range c.wh {
						if !allSame {
							v = sp[rng.IntN(len(sp))]
						}
						if allSame || rng.IntN(3) == 0 {
							c.wh[i] = v
						}
					}
					for i := range c.x {
						if rng.IntN(10) == 0 {
							c.x[i] = 0
						}
					}
					c.verify(t, fast)
				}
			})
		}
	}
	// The float16 decoding of the kernels is exact for every bit pattern:
	// a one-element dot product with x = 1 returns the weight itself (up
	// to the sign of zero: the sum starts at +0).
	if hasAVX2FMA && hasF16C {
		setAVX2(t, true)
		x := []float32{1}
		out := make([]float32, 1)
		for h := 0; h < 1<<16; h++ {
			w := []uint16{uint16(h)}
			matmulF16(out, x, w, 1, 1, 1, 0, 1)
			want := f16Value(uint16(h))
			if got := float64(out[0]); got != want && !(math.IsNaN(got) && math.IsNaN(want)) {
				t.Fatalf("f16 %#04x: got %g, want %g", h, got, want)
			}
		}
	}
}

// TestKernelFallback runs the dispatchers with the assembly switched off,
// which is the path of CPUs without AVX2 and of other architectures.
func TestKernelFallback(t *testing.T) {
	setAVX2(t, false)
	if useAVX2 {
		t.Fatal("useAVX2 still set")
	}
	rng := rand.New(rand.NewPCG(5, 5))
	for kind := range tkNames {
		for in := 1; in <= 80; in += 3 {
			newRandCase(rng, kind, 1+rng.IntN(6), in, 1+rng.IntN(12)).verify(t, true)
		}
	}
	checkDotAxpy(t, rng)
}

// TestKernelAgreesWithGo checks the fast kernels against the Go references
// directly at the model sizes (not only against float64).
func TestKernelAgreesWithGo(t *testing.T) {
	setAVX2(t, true)
	rng := rand.New(rand.NewPCG(6, 6))
	for kind := range tkNames {
		for _, in := range []int{64, 172, 384, 1024} {
			for _, rows := range []int{1, 5} {
				c := newRandCase(rng, kind, rows, in, 70)
				c.o0, c.o1, c.outStride = 3, 70, 70
				a := make([]float32, rows*70)
				b := make([]float32, rows*70)
				c.run(a, true)
				c.run(b, false)
				for i := range a {
					if d := math.Abs(float64(a[i] - b[i])); d > 1e-4*math.Max(1, math.Abs(float64(b[i]))) {
						t.Fatalf("%v: element %d: fast %g, Go %g", c, i, a[i], b[i])
					}
				}
			}
		}
	}
}

func checkDotAxpy(t *testing.T, rng *rand.Rand) {
	t.Helper()
	for n := 0; n <= 300; n++ {
		a := randF32(rng, n)
		b := randF32(rng, n+rng.IntN(3))
		var ref, fabs float64
		for i := range a {
			ref += float64(a[i]) * float64(b[i])
			fabs += math.Abs(float64(a[i]) * float64(b[i]))
		}
		if msg := checkSum(dotF32(a, b), ref, fabs, n); msg != "" {
			t.Fatalf("dotF32 n=%d: %s", n, msg)
		}
		if msg := checkSum(dotF32Go(a, b), ref, fabs, n); msg != "" {
			t.Fatalf("dotF32Go n=%d: %s", n, msg)
		}

		y := randF32(rng, n+2)
		y0 := append([]float32(nil), y...)
		alpha := float32(rng.NormFloat64())
		axpyF32(y[:n], alpha, b)
		for i := range y {
			want, scale := y0[i], 0.0
			if i < n {
				want = float32(float64(y0[i]) + float64(alpha)*float64(b[i]))
				// A fused multiply-add rounds once, the Go loop twice.
				scale = 2e-7 * (math.Abs(float64(y0[i])) + math.Abs(float64(alpha*b[i])))
			}
			if d := math.Abs(float64(y[i] - want)); d > scale {
				t.Fatalf("axpyF32 n=%d: y[%d] = %g, want %g", n, i, y[i], want)
			}
		}
	}
}

// TestKernelDotAxpy checks dotF32 and axpyF32 for n = 0..300 (the
// attention sizes 64..128 among them) and that axpy writes only y[:n].
func TestKernelDotAxpy(t *testing.T) {
	setAVX2(t, true)
	checkDotAxpy(t, rand.New(rand.NewPCG(7, 7)))
}

// TestKernelBounds checks that bad arguments still panic (the assembly is
// only reached with validated slices) and that empty problems do nothing.
func TestKernelBounds(t *testing.T) {
	setAVX2(t, true)
	mustPanic := func(name string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s: no panic", name)
			}
		}()
		f()
	}
	x := make([]float32, 2*16)
	w := make([]uint16, 8*16)
	out := make([]float32, 2*8)
	// (Full slice expressions: the Go versions reslice within capacity.)
	mustPanic("short w", func() { matmulBF16(out, x, w[:8*16-1:8*16-1], 1, 16, 8, 0, 8) })
	mustPanic("short x", func() { matmulBF16(out, x[:31:31], w, 2, 16, 8, 0, 8) })
	mustPanic("short out", func() { matmulBF16(out[:15:15], x, w, 2, 16, 8, 0, 8) })
	mustPanic("short b", func() { dotF32(x[:4], x[:3:3]) })
	mustPanic("short x (axpy)", func() { axpyF32(x[:4], 1, x[:3:3]) })
	matmulBF16(out, x, w, 0, 16, 8, 0, 8)
	matmulBF16(out, x, w, 2, 16, 8, 5, 5)
	if dotF32(nil, nil) != 0 {
		t.Error("empty dot not 0")
	}
	axpyF32(nil, 1, nil)
	// in == 0: every output is the empty sum.
	out[3] = 7
	matmulF32(out, nil, nil, 1, 0, 8, 0, 8)
	if out[3] != 0 {
		t.Error("in=0: output not zeroed")
	}
}

// TestKernelAllocs checks that the dispatchers allocate nothing (they run
// in the zero-allocation decode loop), on every path of the driver.
func TestKernelAllocs(t *testing.T) {
	setAVX2(t, true)
	rng := rand.New(rand.NewPCG(8, 8))
	const in, nOut, rows = 100, 13, 7
	x := randF32(rng, rows*in)
	wf := randF32(rng, nOut*in)
	_, wh := randWeights(rng, tkBF16, nOut*in)
	out := make([]float32, rows*nOut)
	y := make([]float32, in)
	var sink float32
	allocs := testing.AllocsPerRun(50, func() {
		for _, r := range []int{1, rows} {
			for _, o := range [][2]int{{0, nOut}, {2, 4}, {5, 10}} {
				matmulF32(out, x, wf, r, in, nOut, o[0], o[1])
				matmulBF16(out, x, wh, r, in, nOut, o[0], o[1])
				matmulF16(out, x, wh, r, in, nOut, o[0], o[1])
			}
		}
		sink += dotF32(x[:in], wf)
		axpyF32(y, 0.5, x)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run, want 0", allocs)
	}
	_ = sink
}

// fuzzCase builds a bfloat16 matmul from fuzz input: weights take their
// bit patterns straight from data (any value, NaN and infinities
// included), x small integers over 16.
func fuzzCase(data []byte, rows, in, o0, width, pad uint8) *mmCase {
	c := &mmCase{kind: tkBF16}
	c.rows = 1 + int(rows)%9
	c.in = 1 + int(in)%300
	c.nOut = 1 + int(o0)%12 + int(width)%12
	c.o0 = int(o0) % 12
	c.o1 = c.o0 + 1 + int(width)%12
	c.outStride = c.nOut + int(pad)%4
	if len(data) == 0 {
		data = []byte{0}
	}
	c.x = make([]float32, c.rows*c.in)
	for i := range c.x {
		c.x[i] = float32(int8(data[(3*i+1)%len(data)])) / 16
	}
	c.wh = make([]uint16, c.nOut*c.in)
	for i := range c.wh {
		c.wh[i] = uint16(data[(2*i)%len(data)]) | uint16(data[(2*i+1)%len(data)])<<8
	}
	return c
}

var fuzzSeeds = []struct {
	data                     []byte
	rows, in, o0, width, pad uint8
}{
	{[]byte{0x80, 0x3f, 0x00, 0xc0}, 0, 7, 0, 3, 0},
	{[]byte{0x80, 0x7f, 0x12, 0x34}, 3, 40, 1, 9, 2},
	{[]byte("the quick brown fox jumps over the lazy dog"), 8, 255, 4, 11, 3},
	{[]byte{0x01, 0x00, 0x7f, 0x80, 0xff, 0xff}, 5, 17, 0, 4, 1},
	{[]byte{0xc0, 0x7f, 0x3c, 0x41}, 2, 199, 7, 5, 0},
}

// FuzzMatmulBF16 checks the bfloat16 matmul (fast path) against the
// float64 reference on arbitrary weight bits and shapes.
func FuzzMatmulBF16(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s.data, s.rows, s.in, s.o0, s.width, s.pad)
	}
	f.Fuzz(func(t *testing.T, data []byte, rows, in, o0, width, pad uint8) {
		fuzzCase(data, rows, in, o0, width, pad).verify(t, true)
	})
}

// TestKernelFuzzSeeds runs the fuzz seeds (also run by FuzzMatmulBF16
// under plain go test) for -run Kernel, with the assembly and without.
func TestKernelFuzzSeeds(t *testing.T) {
	for _, on := range []bool{true, false} {
		setAVX2(t, on)
		for _, s := range fuzzSeeds {
			fuzzCase(s.data, s.rows, s.in, s.o0, s.width, s.pad).verify(t, true)
		}
	}
}

// Benchmarks: go = the Go reference (assembly off), asm = the dispatcher
// with AVX2. Names give out x in of the weight; MatVec is one row (decode),
// Prefill64 64 rows.

func benchMatmul(b *testing.B, kind, rows, nOut, in int) {
	rng := rand.New(rand.NewPCG(9, 9))
	x := randF32(rng, rows*in)
	wf, wh := randWeights(rng, kind, nOut*in)
	out := make([]float32, rows*nOut)
	esz := 2
	if kind == tkF32 {
		esz = 4
	}
	for _, impl := range []string{"go", "asm"} {
		b.Run(impl, func(b *testing.B) {
			if impl == "asm" && (!hasAVX2FMA || kind == tkF16 && !hasF16C) {
				b.Skip("no AVX2/FMA/F16C")
			}
			setAVX2(b, impl == "asm")
			b.SetBytes(int64(nOut*in*esz + rows*in*4))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				switch kind {
				case tkF32:
					matmulF32(out, x, wf, rows, in, nOut, 0, nOut)
				case tkBF16:
					matmulBF16(out, x, wh, rows, in, nOut, 0, nOut)
				default:
					matmulF16(out, x, wh, rows, in, nOut, 0, nOut)
				}
			}
			b.ReportMetric(2*float64(rows*nOut*in)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

func BenchmarkMatVecBF16_384x1024(b *testing.B)            { benchMatmul(b, tkBF16, 1, 384, 1024) }
func BenchmarkMatVecBF16_1024x384(b *testing.B)            { benchMatmul(b, tkBF16, 1, 1024, 384) }
func BenchmarkMatVecBF16_32000x384(b *testing.B)           { benchMatmul(b, tkBF16, 1, 32000, 384) }
func BenchmarkMatMulBF16_Prefill64(b *testing.B)           { benchMatmul(b, tkBF16, 64, 1024, 384) }
func BenchmarkMatVecF32_384x1024(b *testing.B)             { benchMatmul(b, tkF32, 1, 384, 1024) }
func BenchmarkMatVecF32_1024x384(b *testing.B)             { benchMatmul(b, tkF32, 1, 1024, 384) }
func BenchmarkMatVecF32_32000x384(b *testing.B)            { benchMatmul(b, tkF32, 1, 32000, 384) }
func BenchmarkMatMulF32_Prefill64(b *testing.B)            { benchMatmul(b, tkF32, 64, 1024, 384) }
func BenchmarkMatVecF16_1024x384(b *testing.B)             { benchMatmul(b, tkF16, 1, 1024, 384) }
func BenchmarkMatMulF16_Prefill64(b *testing.B)            { benchMatmul(b, tkF16, 64, 1024, 384) }
func BenchmarkMatVecBF16_172x64(b *testing.B)              { benchMatmul(b, tkBF16, 1, 172, 64) }
func BenchmarkMatVecBF16_4096x4096(b *testing.B)           { benchMatmul(b, tkBF16, 1, 4096, 4096) }
func BenchmarkMatMulBF16_Prefill64_32000x384(b *testing.B) { benchMatmul(b, tkBF16, 64, 32000, 384) }
func BenchmarkMatMulBF16_Prefill64_1024x4096(b *testing.B) { benchMatmul(b, tkBF16, 64, 1024, 4096) }
func BenchmarkMatMulBF16_Prefill512(b *testing.B)          { benchMatmul(b, tkBF16, 512, 1024, 384) }

func benchVec(b *testing.B, n int, axpy bool) {
	rng := rand.New(rand.NewPCG(10, 10))
	x, y := randF32(rng, n), randF32(rng, n)
	for _, impl := range []string{"go", "asm"} {
		b.Run(impl, func(b *testing.B) {
			if impl == "asm" && !hasAVX2FMA {
				b.Skip("no AVX2/FMA")
			}
			setAVX2(b, impl == "asm")
			b.SetBytes(int64(8 * n))
			var s float32
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if axpy {
					axpyF32(y, 1e-9, x)
				} else {
					s += dotF32(x, y)
				}
			}
			b.ReportMetric(2*float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			_ = s
		})
	}
}

func BenchmarkDotF32_64(b *testing.B)   { benchVec(b, 64, false) }
func BenchmarkDotF32_128(b *testing.B)  { benchVec(b, 128, false) }
func BenchmarkAxpyF32_64(b *testing.B)  { benchVec(b, 64, true) }
func BenchmarkAxpyF32_128(b *testing.B) { benchVec(b, 128, true) }
