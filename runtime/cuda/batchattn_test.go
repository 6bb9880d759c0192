package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestAttendBatchGPU compares AttendBatch, the attention of many streams'
// calls in one launch (attn_rtb_*), with Attend on each call on the GPU and
// with the CPU, on random caches built through runtime.KVCache: float32 and
// bf16 pages, head dims 64 and 128, GQA groups 4 (the 8B and 1B shapes), 1
// (rows of one head: the fused merge) and 3 (split rows of one head of a
// group), streams of different lengths (one of a single token; evictions:
// positions out of order), and per case one policy option for every stream
// (plain, re-positioned keys, the sliding window, a selection per head,
// accumulated probabilities with a selection: Attend's kernels, their reads
// waited for once; or, the sums zeroed (AccZero, as H2O and TOVA give
// them), in the batched grid with one attn_rtb_acc; or zeroed and summed
// over each KV head's group, AccGroup, against the CPU's heads added up in
// head order) or a mix (options per stream; a stream of three query
// rows), which takes several launches. It checks every stream's output (and
// Acc) and that the batched kernel ran.
func TestAttendBatchGPU(t *testing.T) {
	g := newGPU(t)
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(41, 3))
	for _, typ := range []runtime.DType{runtime.F32, runtime.BF16} {
		for _, hd := range []int{64, 128} {
			for _, hk := range [][2]int{{32, 8}, {8, 8}, {6, 2}, {28, 4}} {
				for _, opt := range []string{"plain", "shift", "window", "sel", "acc", "acczero", "accgroup", "mixed"} {
					for _, chunk := range []int{0, 1024} { // 1024: one chunk a row, no combine
						name := fmt.Sprintf("%v/hd%d/%dx%d/%s/chunk%d", typ, hd, hk[0], hk[1], opt, chunk)
						t.Run(name, func(t *testing.T) {
							if err := g.SetAttnChunk(chunk); err != nil {
								t.Fatal(err)
							}
							defer g.SetAttnChunk(0)
							batchCase(t, c, g, rng, typ, hd, hk[0], hk[1], opt)
						})
					}
				}
			}
		}
	}
}

// batchOpts are the options of the streams of a "mixed" case, by stream.
var batchOpts = []string{"plain", "shift", "window", "sel", "acc", "acczero", "accgroup"}

// batchCase is one case of TestAttendBatchGPU: a stream per mixed option (seven) attended on
// the CPU, by Attend on the GPU and by one AttendBatch.
func batchCase(t *testing.T, c *cpu.Backend, g *cuda.Backend, rng *rand.Rand, typ runtime.DType, hd, heads, kvHeads int, opt string) {
	t.Helper()
	S := len(batchOpts) // a stream an option in a mixed case
	cfg := runtime.Config{Heads: heads, KVHeads: kvHeads, HeadDim: hd}
	group := heads / kvHeads
	rows := make([]int, S)
	cps := make([]*cachePair, S)
	qrow := make([]int, S+1) // first query row of each stream in the shared buffers
	for i := range S {
		rows[i] = 1
		if opt == "mixed" && i == S-1 {
			rows[i] = 3
		}
		cps[i] = newCachePair(t, c, g, cfg, 16, typ, false)
		if n := 150*i + rng.IntN(60); n > 0 && i > 0 {
			cps[i].append(rng, n)
		}
		if i%2 == 1 {
			cps[i].evict(rng, 0.2)
		}
		cps[i].append(rng, rows[i]) // the rows' own tokens
		qrow[i+1] = qrow[i] + rows[i]
	}
	w := heads * hd
	qAll := randVec(rng, qrow[S]*w, 1)
	qc, qg := c.Alloc(len(qAll)), g.Alloc(len(qAll))
	c.Write(qc, 0, qAll)
	g.Write(qg, 0, qAll)
	// outputs: CPU, GPU alone, GPU batched
	outs := [3]runtime.Buffer{c.Alloc(len(qAll)), g.Alloc(len(qAll)), g.Alloc(len(qAll))}
	nan := slices.Repeat([]float32{float32(math.NaN())}, len(qAll))
	g.Write(outs[1], 0, nan)
	g.Write(outs[2], 0, nan)
	var args [3][]*runtime.AttnArgs
	for i := range S {
		o := opt
		if opt == "mixed" {
			o = batchOpts[i]
		}
		cp := cps[i]
		qpos := make([]int, rows[i])
		for r := range qpos {
			qpos[r] = cp.next - rows[i] + r
		}
		var sel [][]int32
		var qshift []int
		var acc [][]float32
		switch o {
		case "shift":
			for _, kc := range []*runtime.KVCache{cp.c, cp.g} {
				kc.TrackShifts()
			}
			for h := range kvHeads {
				sh := cp.c.Seqs(0)[h].Shift
				for j := range sh {
					sh[j] = int32(rng.IntN(5))
				}
				copy(cp.g.Seqs(0)[h].Shift, sh)
			}
			for range rows[i] {
				qshift = append(qshift, rng.IntN(3)-1)
			}
		case "sel", "acc", "acczero":
			sel = make([][]int32, heads)
			for h := range sel {
				n := cp.c.Len(0, h/group)
				switch h % 4 {
				case 1:
					sel[h] = []int32{int32(n - 1)}
				case 2:
					sel[h] = []int32{}
				case 3:
					for _, x := range rng.Perm(n)[:n/2+1] {
						sel[h] = append(sel[h], int32(x))
					}
				}
			}
			for h := range heads {
				switch o {
				case "acc":
					acc = append(acc, randVec(rng, cp.c.Len(0, h/group), 1))
				case "acczero": // zeroed sums, said so: the batched grid's case (H2O, TOVA)
					acc = append(acc, make([]float32, cp.c.Len(0, h/group)))
				}
			}
		case "accgroup": // zeroed sums of each KV head's group (H2O, TOVA): the CPU's by head
			for h := range heads {
				acc = append(acc, make([]float32, cp.c.Len(0, h/group)))
			}
		}
		for k := range args {
			// k 0 is the CPU's call, over the CPU's buffers; the others the GPU's.
			var q, out runtime.Buffer
			var seqs []runtime.KVSeq
			if k == 0 {
				seqs = cp.seqs(0)
				q, out = c.View(qc, qrow[i]*w, rows[i]*w), c.View(outs[0], qrow[i]*w, rows[i]*w)
			} else {
				seqs = cp.seqs(1)
				q, out = g.View(qg, qrow[i]*w, rows[i]*w), g.View(outs[k], qrow[i]*w, rows[i]*w)
			}
			a := &runtime.AttnArgs{Rows: rows[i], QPos: qpos, Heads: heads, KVHeads: kvHeads, HeadDim: hd,
				Scale: float32(1 / math.Sqrt(float64(hd))), Seqs: seqs, Rope: runtime.RopeHalf, Theta: 1e4,
				Q: q, Out: out, Sel: sel, QShift: qshift}
			if o == "window" {
				a.Window = 40
			}
			if acc != nil {
				a.AccZero = o == "acczero" || o == "accgroup"
				a.Acc = make([][]float32, heads)
				for h := range acc {
					a.Acc[h] = slices.Clone(acc[h])
				}
				if o == "accgroup" && k > 0 {
					a.AccGroup, a.Acc = true, make([][]float32, kvHeads)
					for g := range a.Acc {
						a.Acc[g] = make([]float32, cp.c.Len(0, g))
					}
				}
			}
			args[k] = append(args[k], a)
		}
	}
	for _, a := range args[0] {
		c.Attend(a)
	}
	for _, a := range args[1] {
		g.Attend(a)
	}
	g.AttendBatch(args[2])
	want, alone, got := read(c, outs[0]), read(g, outs[1]), read(g, outs[2])
	for i := range S {
		lo, hi := qrow[i]*w, qrow[i+1]*w
		if d := relDiff(got[lo:hi], want[lo:hi]); d > 2e-5 || math.IsNaN(d) {
			t.Errorf("stream %d (%d tokens): batched vs CPU: relative difference %.3g", i, cps[i].c.Len(0, 0), d)
		}
		if d := relDiff(got[lo:hi], alone[lo:hi]); d > 2e-5 || math.IsNaN(d) {
			t.Errorf("stream %d (%d tokens): batched vs Attend alone: relative difference %.3g", i, cps[i].c.Len(0, 0), d)
		}
		if args[2][i].AccGroup { // each KV head's group of the CPU's sums, added up in head order
			for g := range kvHeads {
				want := slices.Clone(args[0][i].Acc[g*group])
				for h := g*group + 1; h < (g+1)*group; h++ {
					for t := range want {
						want[t] += args[0][i].Acc[h][t]
					}
				}
				for k, a := range []*runtime.AttnArgs{args[1][i], args[2][i]} {
					if len(a.Acc[g]) != len(want) {
						t.Fatalf("stream %d Acc[%d] (group): %d sums, want %d", i, g, len(a.Acc[g]), len(want))
					}
					if d := relDiff(a.Acc[g], want); d > 2e-5 || math.IsNaN(d) {
						t.Errorf("stream %d Acc[%d] (group, %s): relative difference %.3g", i, g, []string{"alone", "batched"}[k], d)
					}
				}
			}
			continue
		}
		for h := range args[0][i].Acc {
			if d := relDiff(args[2][i].Acc[h], args[0][i].Acc[h]); d > 2e-5 || math.IsNaN(d) {
				t.Errorf("stream %d Acc[%d]: relative difference %.3g", i, h, d)
			}
		}
	}
	if k := g.AttnPlan().Kernel; opt != "acc" && !strings.HasPrefix(k, "attn_rtb_") {
		t.Errorf("the last launch ran %s, want a batched attn_rtb_* kernel", k)
	}
}
