package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// rowsCall is a prompt chunk's attention call over a cache pair's GPU side:
// rows query rows at the cache's last positions, with Acc (zeroed, or from
// given sums) and, for heads of 16, the be_attend path.
func rowsCall(g *cuda.Backend, cp *cachePair, rng *rand.Rand, heads, hd, rows int, acc [][]float32, zero bool) *runtime.AttnArgs {
	w := heads * hd
	q, out := g.Alloc(rows*w), g.Alloc(rows*w)
	g.Write(q, 0, randVec(rng, rows*w, 1))
	qpos := cp.lastRows(rows)
	a := &runtime.AttnArgs{Rows: rows, QPos: qpos, Heads: heads, KVHeads: cp.cfg.KVHeads, HeadDim: hd,
		Scale: float32(1 / math.Sqrt(float64(hd))), Seqs: cp.seqs(1), Rope: runtime.RopeHalf, Theta: 1e4, Q: q, Out: out,
		AccZero: zero, AccFrom: qpos[rows/3]}
	a.Acc = make([][]float32, heads)
	for h := range a.Acc {
		a.Acc[h] = slices.Clone(acc[h])
	}
	return a
}

// TestAttendRowsGPU: a call whose kept scores pass the cap runs in blocks of
// rows (accrows.go) and gives what it gives in one call: the outputs and the
// sums (zeroed, carried from given ones, or a KV head's group's) within
// float32 rounding of the blocks' other split-KV chunks, on the split-KV
// path (heads of 64 and 128) and be_attend's (16).
func TestAttendRowsGPU(t *testing.T) {
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(8, 1))
	for _, hd := range []int{16, 64, 128} {
		for _, mode := range []string{"zero", "carried", "group"} {
			zero := mode != "carried"
			t.Run(fmt.Sprintf("hd%d/%s", hd, mode), func(t *testing.T) {
				heads, kv, rows := 8, 2, 40
				cp := newCachePair(t, c, g, runtime.Config{Heads: heads, KVHeads: kv, HeadDim: hd}, 16, runtime.BF16, false)
				cp.append(rng, 300)
				acc := make([][]float32, heads)
				for h := range acc {
					acc[h] = randVec(rng, cp.c.Len(0, h/(heads/kv)), 1)
				}
				seed := rng.Uint64()
				run := func(max int64) ([]float32, [][]float32) {
					defer cuda.SetAccRawMax(max)()
					a := rowsCall(g, cp, rand.New(rand.NewPCG(seed, 2)), heads, hd, rows, acc, zero)
					if mode == "group" { // a KV head's group summed
						a.AccGroup, a.Acc = true, make([][]float32, kv)
						for k := range a.Acc {
							a.Acc[k] = make([]float32, cp.c.Len(0, k))
						}
					}
					g.Attend(a)
					return read(g, a.Out), a.Acc
				}
				wantOut, wantAcc := run(1 << 40)
				gotOut, gotAcc := run(int64(heads*300*4) * 7) // 7 rows a block
				if d := relDiff(gotOut, wantOut); d > 1e-5 || math.IsNaN(d) {
					t.Errorf("outputs in blocks of rows differ by %.3g (relative)", d)
				}
				for h := range wantAcc {
					if d := relDiff(gotAcc[h], wantAcc[h]); d > 1e-5 || math.IsNaN(d) {
						t.Errorf("Acc[%d] in blocks of rows differs by %.3g (relative)", h, d)
					}
				}
			})
		}
	}
}

// TestFakeAttendRows: on the fake device, a call whose scores pass the cap
// runs as ceil(rows / block) calls (one attn_rt_acc each), the last block
// the rest; one that fits, as one.
func TestFakeAttendRows(t *testing.T) {
	g := fakeBackend(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(2, 3))
	heads, kv, hd := 8, 2, 64
	cp := newCachePair(t, c, g, runtime.Config{Heads: heads, KVHeads: kv, HeadDim: hd}, 16, runtime.BF16, false)
	cp.append(rng, 300)
	acc := make([][]float32, heads)
	for h := range acc {
		acc[h] = make([]float32, 300)
	}
	for _, cs := range []struct {
		max  int64
		want int64
	}{{1 << 40, 1}, {int64(heads*300*4) * 7, 6}, {1, 40}} {
		restore := cuda.SetAccRawMax(cs.max)
		k0 := cuda.FakeKernels()
		g.Attend(rowsCall(g, cp, rng, heads, hd, 40, acc, true))
		k1 := cuda.FakeKernels()
		restore()
		if n := k1["attn_rt_acc"] - k0["attn_rt_acc"]; n != cs.want {
			t.Errorf("cap %d bytes: %d attn_rt_acc launches, want %d", cs.max, n, cs.want)
		}
	}
}
