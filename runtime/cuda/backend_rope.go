package cuda

import (
	"math"
	"slices"

	"github.com/kvbench/kvbench/runtime"
)

// RoPE on the device: the inverse frequencies as float32 bits (from theta
// or a scaled RoPE's own), the rotation of queries and keys in one launch.

var (
	_ runtime.QKInterleaver    = (*Backend)(nil)
	_ runtime.ScaledRoPE       = (*Backend)(nil)
	_ runtime.RoPEPairer       = (*Backend)(nil)
	_ runtime.ScaledRoPEPairer = (*Backend)(nil)
)

// invFreq appends the RoPE inverse frequencies, as the CPU computes them,
// as float32 bits.
func invFreq(dst []int32, theta float64, headDim int) []int32 {
	for i := 0; i < headDim/2; i++ {
		dst = append(dst, int32(math.Float32bits(float32(1/math.Pow(theta, float64(2*i)/float64(headDim))))))
	}
	return dst
}

// freqBits appends the inverse frequencies inv as float32 bits.
func freqBits(dst []int32, inv []float32) []int32 {
	for _, f := range inv {
		dst = append(dst, int32(math.Float32bits(f)))
	}
	return dst
}

// attnInvFreq appends the inverse frequencies of a's re-positioned keys:
// a.InvFreq when set (scaled RoPE), else those of a.Theta.
func (b *Backend) attnInvFreq(dst []int32, a *runtime.AttnArgs) []int32 {
	if a.InvFreq != nil {
		return freqBits(dst, a.InvFreq[:a.HeadDim/2])
	}
	return append(dst, b.thetaFreqs(a.Theta, a.HeadDim)...)
}

// thetaFreqs is invFreq of theta and headDim, computed once for the last
// pair asked for (a model's RoPE: every call asks the same).
func (b *Backend) thetaFreqs(theta float64, headDim int) []int32 {
	if b.rope.inv == nil || b.rope.theta != theta || b.rope.hd != headDim {
		b.rope.inv, b.rope.theta, b.rope.hd = invFreq(b.rope.inv[:0], theta, headDim), theta, headDim
	}
	return b.rope.inv
}

// RoPE rotates every head of every row by its position's angles.
func (b *Backend) RoPE(x runtime.Buffer, rows, heads, headDim int, pos []int, theta float64, style runtime.RopeStyle) {
	b.ropeWith(x, rows, heads, headDim, pos, theta, nil, style, nil, 0)
}

// RoPEFreqs rotates every head of every row by its position's angles with
// the inverse frequencies inv [headDim/2] (scaled RoPE).
func (b *Backend) RoPEFreqs(x runtime.Buffer, rows, heads, headDim int, pos []int, inv []float32, style runtime.RopeStyle) {
	b.ropeWith(x, rows, heads, headDim, pos, 0, inv[:headDim/2], style, nil, 0)
}

// RoPE2Freqs rotates the queries q and the keys k in one launch with the
// inverse frequencies inv [headDim/2] (scaled RoPE).
func (b *Backend) RoPE2Freqs(q, k runtime.Buffer, rows, heads, kvHeads, headDim int, pos []int, inv []float32, style runtime.RopeStyle) {
	b.ropeWith(q, rows, heads, headDim, pos, 0, inv[:headDim/2], style, k, kvHeads)
}

// RoPE2 rotates the queries q and the keys k in one launch.
func (b *Backend) RoPE2(q, k runtime.Buffer, rows, heads, kvHeads, headDim int, pos []int, theta float64, style runtime.RopeStyle) {
	b.ropeWith(q, rows, heads, headDim, pos, theta, nil, style, k, kvHeads)
}

// InterleaveQK asks for the query and key rows of half-split RoPE models
// in interleaved order (runtime.QKInterleaver) where a decode step's
// products, RoPE and KV stores are one launch (be_mv_qkv_rope, whose
// blocks then read 8 adjacent rows holding 4 whole pairs): unless
// KVBENCH_MV_ROPE, KVBENCH_ROPE_KV or KVBENCH_KV_BOX is off. It is also
// whether MatMul3 leaves a step's products pending for that launch.
func (b *Backend) InterleaveQK() bool { return !b.noMVRope && !b.noRopeKV && !b.noKVBox }

// ropeWith runs be_rope with the inverse frequencies inv, or those of theta
// when inv is nil, over x and, when x2 is not nil, x2 [rows,
// heads2*headDim] too.
func (b *Backend) ropeWith(x runtime.Buffer, rows, heads, headDim int, pos []int, theta float64, inv []float32, style runtime.RopeStyle,
	x2 runtime.Buffer, heads2 int) {
	if rows == 0 {
		return
	}
	b.check(x, 0, rows*heads*headDim, "RoPE")
	var p2 Ptr
	if x2 != nil {
		b.check(x2, 0, rows*heads2*headDim, "RoPE")
		p2 = b.f32(x2)
	} else {
		heads2 = 0
	}
	v := b.hInts[:0]
	for _, p := range pos[:rows] {
		v = append(v, int32(p))
	}
	if inv != nil {
		v = freqBits(v, inv)
	} else {
		v = append(v, b.thetaFreqs(theta, headDim)...)
	}
	b.hInts = v
	// A decode step's RoPE, left pending with its stores, takes the pending
	// products of these queries and keys: one launch for all of it.
	pend := rows == 1 && heads2 > 0 && !b.noRopeKV && !b.noKVBox && heads2 <= kvBoxOps
	var qkv qkvCall
	if pend && !b.noMVRope && style == runtime.RopeInterleaved {
		qkv, _ = b.takeQKV(x, x2, heads, heads2, headDim)
	}
	b.flushKV()
	// The queries and keys of a layer rotate by the same positions: reuse
	// the upload while the arena still holds it.
	p := b.rope.p
	if b.rope.epoch != b.epoch || !slices.Equal(b.rope.v, v) {
		b.reserve(span(int64(len(v)) * 4))
		p = put(b, v)
		b.rope.v, b.rope.p, b.rope.epoch = append(b.rope.v[:0], v...), p, b.epoch
	}
	inter := int32(0)
	if style == runtime.RopeInterleaved {
		inter = 1
	}
	// A prompt's rows: a block a row, its cos and sin table computed once
	// for every head; a few rows: the pairs spread over blocks.
	threads, pairBlocks := 128, ((heads+heads2)*headDim/2+127)/128
	if rows >= 64 {
		threads, pairBlocks = 256, 1
	}
	b.ropeAt = ropeCall{grid: Dim3{rows, pairBlocks, 1}, block: Dim3{threads, 1, 1}, x: b.f32(x), p: p, inv: p.Add(int64(rows) * 4),
		heads: heads, hd: headDim, inter: inter, k: p2, heads2: heads2, qkv: qkv}
	if pend {
		b.ropeAt.pending = true // flushKV launches it, with the keys' stores if they follow
		return
	}
	b.launchRope(false)
}

// ropeCall is ropeWith's launch. A decode step's (one row, queries and
// keys) is left pending: the next operation's flushKV launches it, as
// be_rope_kv with the KV stores queued after it when they are one store of
// each key head of that row (the cache's Append of the step), else as
// be_rope before them. So the rotated key goes to its page from the
// rotating thread, with no launch between (KVBENCH_ROPE_KV=off: never).
// When it took the step's pending q/k/v products (qkv.pending: queries and
// keys in interleaved order), it is be_mv_qkv_rope, with the stores or
// without.
type ropeCall struct {
	pending      bool
	grid, block  Dim3
	x, p, inv, k Ptr
	heads, hd    int
	heads2       int
	inter        int32
	qkv          qkvCall
}

// launchRope launches b.ropeAt: with the queued KV copies as its stores
// (withStores: ropeStores has put them in b.kvBox), or alone.
func (b *Backend) launchRope(withStores bool) {
	r := &b.ropeAt
	r.pending = false
	if r.qkv.pending {
		b.launchQKVRope(r, withStores)
		return
	}
	if withStores {
		must(b.fn("be_rope_kv").LaunchAfter(r.grid, r.block, 0, r.x, r.p, r.inv, int32(r.heads), int32(r.hd), r.inter, r.k, int32(r.heads2),
			ByValue(raw(b.kvBox))))
		return
	}
	must(b.fn("be_rope").LaunchAfter(r.grid, r.block, 0, r.x, r.p, r.inv, int32(r.heads), int32(r.hd), r.inter, r.k, int32(r.heads2)))
}

// launchQKVRope launches be_mv_qkv_rope: r's products, its rotation and,
// withStores, the stores in b.kvBox (whose values must come from the
// products' values: ropeStores checked the keys only).
func (b *Backend) launchQKVRope(r *ropeCall, withStores bool) {
	c := r.qkv
	r.qkv.pending = false
	q, k, v := c.ms[0], c.ms[1], c.ms[2]
	if withStores && b.kvBox[3] != uint64(b.f32(v.dst)) {
		// The values stored are not these products' values: the stores
		// run as their own launch after the rotation.
		b.launchQKVRope(&ropeCall{qkv: qkvCall{pending: true, x: c.x, in: c.in, ms: c.ms}, p: r.p, inv: r.inv, heads: r.heads,
			hd: r.hd, heads2: r.heads2}, false)
		must(b.fn("be_kv_box").LaunchAfter(Dim3{r.heads2, 1, 1}, Dim3{min(r.hd, 128), 1, 1}, 0, ByValue(raw(b.kvBox)), int32(r.hd)))
		return
	}
	for _, m := range c.ms {
		checkWeight(m.w, c.in, m.out)
		b.check(m.dst, 0, m.out, "MatMul")
	}
	b.check(c.x, 0, c.in, "MatMul")
	stores := int32(0)
	if withStores {
		stores = 1
	}
	bias, bwt, _ := mvBiases(c.ms[:]) // takeQKV took none it declines
	blocks := (r.heads + 2*r.heads2) * r.hd / 8
	must(b.fn("be_mv_qkv_rope").LaunchAfter(Dim3{blocks, 1, 1}, Dim3{mvThreads, 1, 1}, 0, b.f32(c.x), int32(c.in), wtype(q.w.dtype),
		b.f32(q.dst), q.w.p, int32(r.heads), b.f32(k.dst), k.w.p, b.f32(v.dst), v.w.p, int32(r.heads2), int32(r.hd), r.p, r.inv,
		stores, bias[0], bias[1], bias[2], bwt, ByValue(raw(b.kvBox))))
}

// ropeStores reports whether the queued KV copies are exactly one store of
// each key head of b.ropeAt's row (into f32 or bf16 pages, one mode, the
// values' heads at one stride too) and, if so, puts them in b.kvBox in key
// head order for be_rope_kv.
func (b *Backend) ropeStores() bool {
	r, q := &b.ropeAt, &b.kv
	n := len(q.ops) / 5
	if q.bulk || n != r.heads2 || q.hd != r.hd || n > kvBoxOps {
		return false
	}
	stride := uint64(r.hd) * 4
	mode, v0 := q.ops[4], uint64(0)
	var seen [kvBoxOps]bool
	for i := range n {
		o := q.ops[5*i : 5*i+5]
		if o[4] != mode || (mode != kvCopyF32 && mode != kvStoreB16) || o[2] < uint64(r.k) || (o[2]-uint64(r.k))%stride != 0 {
			return false
		}
		j := int((o[2] - uint64(r.k)) / stride)
		if j >= n || seen[j] {
			return false
		}
		if i == 0 {
			v0 = o[3] - uint64(j)*stride
		} else if o[3] != v0+uint64(j)*stride {
			return false
		}
		seen[j] = true
		copy(b.kvBox[5*j:5*j+5], o)
	}
	return true
}
