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

// cachePair is one layer's KV cache built the same way through
// runtime.KVCache on both backends: float32 pages on the CPU that hold the
// values as the GPU's pages of type typ hold them (rounded to bf16 for
// BF16). Appends, evictions and the cache's flags (Bounded, Ascending) are
// the runtime's own.
type cachePair struct {
	c, g   *runtime.KVCache
	cfg    runtime.Config
	typ    runtime.DType
	be     [2]runtime.Backend
	next   int // position of the next appended token
	record bool
}

// newCachePair returns empty caches of one layer of cfg's KV shape with
// pages of ps tokens; record keeps the reference copy recall needs.
func newCachePair(t *testing.T, c *cpu.Backend, g *cuda.Backend, cfg runtime.Config, ps int, typ runtime.DType, record bool) *cachePair {
	t.Helper()
	cfg.Layers = 1
	cc, err := runtime.NewKVCacheOf(c, cfg, ps, runtime.F32)
	if err != nil {
		t.Fatal(err)
	}
	gc, err := runtime.NewKVCacheOf(g, cfg, ps, typ)
	if err != nil {
		t.Fatal(err)
	}
	if record {
		cc.RecordAll()
		gc.RecordAll()
	}
	return &cachePair{c: cc, g: gc, cfg: cfg, typ: typ, be: [2]runtime.Backend{c, g}, record: record}
}

// lastRows is the positions of the last rows tokens appended: a call's
// query rows.
func (p *cachePair) lastRows(rows int) []int {
	qpos := make([]int, rows)
	for r := range qpos {
		qpos[r] = p.next - rows + r
	}
	return qpos
}

// queryRows appends rows tokens, a call's query rows (as the runner appends
// them before the call), and returns their positions.
func (p *cachePair) queryRows(rng *rand.Rand, rows int) []int {
	p.append(rng, rows)
	return p.lastRows(rows)
}

// append adds rows tokens of random keys and values at the next positions,
// in one Append per backend (the GPU's is one kernel for a prompt chunk).
func (p *cachePair) append(rng *rand.Rand, rows int) {
	kvDim := p.cfg.KVDim()
	k, v := randVec(rng, rows*kvDim, 1), randVec(rng, rows*kvDim, 1)
	pos := make([]int, rows)
	for i := range pos {
		pos[i] = p.next + i
	}
	p.next += rows
	kg, vg := p.be[1].Alloc(rows*kvDim), p.be[1].Alloc(rows*kvDim)
	p.be[1].Write(kg, 0, k)
	p.be[1].Write(vg, 0, v)
	p.g.Append(0, kg, vg, rows, pos)
	if p.typ == runtime.BF16 {
		for i := range k {
			k[i], v[i] = roundBF16(k[i]), roundBF16(v[i])
		}
	}
	kc, vc := p.be[0].Alloc(rows*kvDim), p.be[0].Alloc(rows*kvDim)
	p.be[0].Write(kc, 0, k)
	p.be[0].Write(vc, 0, v)
	p.c.Append(0, kc, vc, rows, pos)
}

// evict drops about frac of every KV head's tokens, the same indices on both
// backends (the last tokens move into the holes: positions stop ascending).
func (p *cachePair) evict(rng *rand.Rand, frac float64) {
	for h := range p.cfg.KVHeads {
		n := p.c.Len(0, h)
		var drop []int32
		for _, i := range rng.Perm(n)[:int(frac*float64(n))] {
			drop = append(drop, int32(i))
		}
		p.c.Evict(0, h, slices.Clone(drop))
		p.g.Evict(0, h, drop)
	}
}

// seqs returns the sequences of backend i (0 CPU, 1 GPU).
func (p *cachePair) seqs(i int) []runtime.KVSeq {
	if i == 0 {
		return p.c.Seqs(0)
	}
	return p.g.Seqs(0)
}

// ref returns the recall reference of backend i.
func (p *cachePair) ref(i int) []runtime.KVSeq {
	if i == 0 {
		return p.c.Reference(0)
	}
	return p.g.Reference(0)
}

// attnCase is one attention call compared between the backends.
type attnCase struct {
	heads, rows int
	qpos        []int
	window      int
	opt         string // plain, sel+acc, recall, shift
	tol         float64
}

// compareAttend runs the same call over cp on the CPU and on g and checks
// the output, the accumulated probabilities, recall and (one row, one head)
// QK against the CPU's.
func compareAttend(t *testing.T, c *cpu.Backend, g *cuda.Backend, cp *cachePair, rng *rand.Rand, ac attnCase) {
	t.Helper()
	hd, kvHeads := cp.cfg.HeadDim, cp.cfg.KVHeads
	group := ac.heads / kvHeads
	q := newPair(c, g, randVec(rng, ac.rows*ac.heads*hd, 1))
	out := newPair(c, g, make([]float32, ac.rows*ac.heads*hd))
	g.Write(out.g, 0, slices.Repeat([]float32{float32(math.NaN())}, ac.rows*ac.heads*hd))
	var sel [][]int32
	var acc []float32
	var qshift []int
	if ac.opt == "acc" { // accumulation over every token (H2O's and TOVA's decode calls)
		for h := range ac.heads {
			acc = append(acc, randVec(rng, cp.c.Len(0, h/group), 1)...)
		}
	}
	if ac.opt == "sel+acc" {
		sel = make([][]int32, ac.heads)
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
		for h := range ac.heads {
			acc = append(acc, randVec(rng, cp.c.Len(0, h/group), 1)...)
		}
	}
	if ac.opt == "shift" {
		for _, kc := range []*runtime.KVCache{cp.c, cp.g} {
			kc.TrackShifts()
		}
		for h := range kvHeads {
			sh := cp.c.Seqs(0)[h].Shift
			for i := range sh {
				sh[i] = int32(rng.IntN(5))
			}
			copy(cp.g.Seqs(0)[h].Shift, sh)
		}
		for range ac.rows {
			qshift = append(qshift, rng.IntN(3)-1)
		}
	}
	args := make([]*runtime.AttnArgs, 2)
	for i := range args {
		a := &runtime.AttnArgs{Rows: ac.rows, QPos: ac.qpos, Heads: ac.heads, KVHeads: kvHeads, HeadDim: hd,
			Scale: float32(1 / math.Sqrt(float64(hd))), Seqs: cp.seqs(i), Window: ac.window,
			Rope: runtime.RopeHalf, Theta: 1e4, Q: q.c, Out: out.c}
		if i == 1 {
			a.Q, a.Out = q.g, out.g
		}
		if acc != nil {
			a.Sel = sel
			a.Acc = make([][]float32, ac.heads)
			off := 0
			for h := range a.Acc {
				n := cp.c.Len(0, h/group)
				a.Acc[h] = slices.Clone(acc[off : off+n])
				off += n
			}
			a.AccFrom = ac.qpos[ac.rows/2]
		}
		if ac.opt == "recall" {
			a.Ref, a.Recall = cp.ref(i), make([]float32, ac.rows*ac.heads)
		}
		if qshift != nil {
			a.QShift = qshift
		}
		args[i] = a
	}
	c.Attend(args[0])
	g.Attend(args[1])
	out.cmp(t, c, g, "output", ac.tol)
	for h := range args[0].Acc {
		if d := relDiff(args[1].Acc[h], args[0].Acc[h]); d > ac.tol || math.IsNaN(d) {
			t.Errorf("Acc[%d]: relative difference %.3g", h, d)
		}
	}
	if args[0].Recall != nil {
		if d := relDiff(args[1].Recall, args[0].Recall); d > 1e-5 || math.IsNaN(d) {
			t.Errorf("recall %v, want %v", args[1].Recall, args[0].Recall)
		}
	}
	r, h := ac.rows-1, ac.heads-1
	n := cp.c.Len(0, h/group)
	wc, wg := make([]float32, n), make([]float32, n)
	c.QK(args[0], r, h, wc)
	g.QK(args[1], r, h, wg)
	for i := range wc {
		if (math.IsInf(float64(wc[i]), -1) != math.IsInf(float64(wg[i]), -1)) ||
			math.Abs(float64(wc[i]-wg[i])) > 1e-5*max(1, math.Abs(float64(wc[i]))) {
			t.Fatalf("QK row %d head %d token %d (position %d): %v, want %v", r, h, i, cp.c.Seqs(0)[h/group].Pos[i], wg[i], wc[i])
		}
	}
}

// TestAttendWindowGPU compares the GPU's attention under a model's sliding
// window with the CPU's on random caches built through runtime.KVCache:
// decode (one row at the newest position) and prompt rows, float32 and
// bf16 pages, with and without eviction (positions out of order), windows
// shorter and longer than the context, at both compute precisions (bf16:
// prompt rows of head dim 64 and 128 run the tensor-core prefill), with the
// policy options (selection with accumulation, re-positioned keys, recall),
// and head dims that take every attention path (16: the general kernel).
func TestAttendWindowGPU(t *testing.T) {
	c := cpu.New(0)
	defer c.Close()
	rng := rand.New(rand.NewPCG(17, 4))
	for _, prec := range []string{"f32", "bf16"} {
		g := newGPUPrec(t, prec)
		for _, typ := range []runtime.DType{runtime.F32, runtime.BF16} {
			for _, hd := range []int{16, 64, 128} {
				for _, evict := range []bool{false, true} {
					for _, rows := range []int{1, 24} {
						for _, window := range []int{5, 37, 1000} {
							for _, opt := range []string{"plain", "sel+acc", "shift", "recall"} {
								name := fmt.Sprintf("%s/%v/hd%d/evict%v/rows%d/window%d/%s", prec, typ, hd, evict, rows, window, opt)
								t.Run(name, func(t *testing.T) {
									cfg := runtime.Config{Heads: 8, KVHeads: 2, HeadDim: hd}
									cp := newCachePair(t, c, g, cfg, 16, typ, opt == "recall")
									cp.append(rng, 200)
									if evict {
										cp.evict(rng, 0.3)
									}
									qpos := cp.queryRows(rng, rows)
									tol := 2e-5
									if prec == "bf16" && rows >= 16 && hd != 16 && opt == "plain" {
										tol = flashTol // the tensor-core prefill: bf16 products
									}
									compareAttend(t, c, g, cp, rng, attnCase{heads: 8, rows: rows, qpos: qpos, window: window, opt: opt, tol: tol})
								})
							}
						}
					}
				}
			}
		}
	}
}
