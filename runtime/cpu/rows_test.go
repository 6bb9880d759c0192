package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// dotLanes is dotsAVX2's sum, written out: a chain of fused multiply-adds
// a lane over elements j, j+8, ..., then ((l0+l1)+(l2+l3)) +
// ((l4+l5)+(l6+l7)). The fused multiply-add is float64's rounded to
// float32: the product of two float32 is exact in float64, so this is the
// single rounding but for a sum that lands within 2^-29 of a float32
// tie, which the seeded inputs here do not meet.
func dotLanes(q, k []float32) float32 {
	var l [8]float32
	for i := range q {
		l[i%8] = float32(math.FMA(float64(q[i]), float64(k[i]), float64(l[i%8])))
	}
	return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
}

// TestKernelRows checks dotRows and axpyRows bit for bit: with the assembly,
// rows of whole multiples of 32 elements against dotLanes (and each row's
// score against the same row scored alone: the rows beside it do not
// change it), other rows and every row without the assembly against one
// dotF32 call a row, axpyRows against one axpyF32 call a row. Rows of
// 1..300 elements, 1..19 rows, strides at and past the row, weights with
// zeros (skipped) and a NaN (added), and nothing past y or out written.
func TestKernelRows(t *testing.T) {
	for _, avx := range []bool{true, false} {
		setAVX2(t, avx)
		rng := rand.New(rand.NewPCG(3, 11))
		for _, n := range []int{1, 8, 31, 32, 33, 64, 96, 128, 160, 256, 300} {
			for _, cnt := range []int{1, 4, 7, 8, 9, 16, 17, 19, 24, 31} {
				for _, pad := range []int{0, 5} {
					stride := n + pad
					q := randF32(rng, n)
					k := randF32(rng, (cnt-1)*stride+n)
					out := make([]float32, cnt+1)
					out[cnt] = 7
					dotRows(out[:cnt], q, k, stride)
					for s := range cnt {
						want := dotF32(q, k[s*stride:])
						if avx && n%32 == 0 {
							want = dotLanes(q, k[s*stride:s*stride+n])
							var alone [1]float32
							dotRows(alone[:], q, k[s*stride:s*stride+n], stride)
							if math.Float32bits(alone[0]) != math.Float32bits(out[s]) {
								t.Fatalf("n=%d cnt=%d stride=%d: row %d scored %v among %d rows, %v alone", n, cnt, stride, s, out[s], cnt, alone[0])
							}
						}
						if math.Float32bits(out[s]) != math.Float32bits(want) {
							t.Fatalf("avx %v n=%d cnt=%d stride=%d: dotRows[%d] = %v, want %v", avx, n, cnt, stride, s, out[s], want)
						}
					}
					if out[cnt] != 7 {
						t.Fatalf("dotRows wrote past out (n=%d cnt=%d)", n, cnt)
					}
					e := randF32(rng, cnt)
					e[0] = 0
					if cnt > 4 {
						e[3] = float32(math.NaN())
					}
					y0 := randF32(rng, n+1)
					y, want := append([]float32(nil), y0...), append([]float32(nil), y0...)
					axpyRows(y[:n], e, k, stride)
					for s, w := range e {
						if w != 0 {
							axpyF32(want[:n], w, k[s*stride:])
						}
					}
					for i := range y {
						if math.Float32bits(y[i]) != math.Float32bits(want[i]) {
							t.Fatalf("avx %v n=%d cnt=%d stride=%d: axpyRows y[%d] = %v, want %v", avx, n, cnt, stride, i, y[i], want[i])
						}
					}
				}
			}
		}
	}
}

// TestKernelRowsBounds: rows past the slice still panic (the assembly is
// only reached with rows that fit) and an empty problem does nothing.
func TestKernelRowsBounds(t *testing.T) {
	setAVX2(t, true)
	k := make([]float32, 3*64)
	out := make([]float32, 4)
	defer func() {
		if recover() == nil {
			t.Error("dotRows over 4 rows of a 3-row slice: no panic")
		}
	}()
	dotRows(out[:0], k[:64], k, 64)
	axpyRows(out[:0], nil, k, 64)
	dotRows(out, k[:64], k, 64)
}

// BenchmarkPageRows times a page of 16 rows of a head of 64 or 128: its
// scores (dots) and its weighted value rows (axpys), through the page
// kernels and as a dotF32 or axpyF32 call a row (calls).
func BenchmarkPageRows(b *testing.B) {
	for _, hd := range []int{64, 128} {
		rng := rand.New(rand.NewPCG(1, 2))
		q, k, out, e := randF32(rng, hd), randF32(rng, 16*hd), make([]float32, 16), randF32(rng, 16)
		for _, c := range []struct {
			name string
			run  func()
		}{
			{"dots", func() { dotRows(out, q, k, hd) }},
			{"dots/calls", func() { dotRowsGo(out, q, k, hd) }},
			{"axpys", func() { axpyRows(q, e, k, hd) }},
			{"axpys/calls", func() { axpyRowsGo(q, e, k, hd) }},
		} {
			b.Run(fmt.Sprintf("hd%d/%s", hd, c.name), func(b *testing.B) {
				for range b.N {
					c.run()
				}
			})
		}
	}
}
