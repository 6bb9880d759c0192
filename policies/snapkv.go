package policies

import (
	"cmp"
	"fmt"
	goruntime "runtime"
	"slices"

	"github.com/kvbench/kvbench/internal/crew"
	"github.com/kvbench/kvbench/runtime"
)

// snapKV compresses the cache once, when an announced prompt ends, by an
// observation window (SnapKV, FasterDecoding/SnapKV; PyramidKV adds per-layer
// budgets, see pyramidkv.go).
//
// For a prompt of n tokens starting at stream position start, the window is
// its last `window` queries, positions [start+n-window, start+n). While the
// prompt runs, attention accumulates (runtime.AttnArgs.Acc with AccFrom =
// start+n-window) the softmax probabilities of the window's queries over every
// cached key: the real causal attention of those rows, so keys inside the
// window are masked causally as in the reference. Only the prefix keys
// (positions < start+n-window) are candidates. For each query head the summed
// probabilities of the prefix keys, taken in position order, are smoothed by a
// 1-D pooling of width `kernel`, stride 1, padding kernel/2, exactly as the
// reference's F.max_pool1d / F.avg_pool1d do: max pooling pads with -Inf (a
// window at the edge takes the maximum of the tokens it covers), average
// pooling pads with zeros and divides by `kernel` (count_include_pad=True, so
// edge scores are shrunk). GQA: the pooled scores of the query heads of a KV
// head's group are averaged (the reference repeats the KV heads and selects per
// query head, which would break the cache's per-KV-head storage). Each KV head
// keeps the top capacity-window prefix tokens by that score (ties: the earlier
// position first; the reference's torch.topk leaves ties unspecified) plus
// every token at or after the window's start; the rest are evicted.
//
// Compression runs only if n >= capacity (as the reference: q_len <
// max_capacity_prompt keeps everything), once per announced prompt, layer by
// layer: in AfterAttend of the forward chunk that holds the prompt's last row,
// right after that layer's attention (the prompt's own attention is exact,
// as in the reference, which compresses what it stores after prefill). When a
// prompt follows earlier tokens of the stream, those are prefix keys too (the
// reference only compresses a prompt fed into an empty cache). Decode steps
// append to the cache and are never compressed: LayerBudget is (0, 0), Budget
// is the capacity. A stream with no announced prompt (every token fed one at
// a time, Prompt not called) is never compressed: SnapKV then equals full
// attention, and Stats.NotApplicable says "no prompt" (records and tables
// mark such a cell not applicable rather than show full attention's
// numbers beside a budget). This is the dense prompt protocol (PrefillDense) that every
// policy follows by default, through the same prompt tracking (base); SnapKV
// has no per-chunk variant, so PrefillChunked changes nothing here.
//
// The window's probabilities are summed in float32 by the attention kernel
// (the reference sums them in the model's dtype); pooling, averaging and
// ranking are in float64.
type snapKV struct {
	base
	capacity int // average tokens kept per KV head, window included
	window   int
	kernel   int  // pooling width (odd)
	avg      bool // average pooling; max otherwise
	pyramid  bool // per-layer budgets (pyramidkv)
	beta     int  // pyramidkv's min-budget divisor

	// Set at layer 0 for the forward in progress, from the prompt that base
	// follows (promptState).
	n        int  // the prompt's length
	from     int  // its first window position: start+n-window
	winRows  bool // holds window rows: attention accumulates
	firstWin bool // holds the first window row: accumulators start at zero
	lastRow  bool // holds the last prompt row: compress after attention
	shared   bool // the whole window is in this forward: one accumulator set for all layers
	prompted bool // the stream has had an announced prompt

	acc   [][][]float32 // [layer or 0 when shared][heads][tokens] window probabilities
	hdr   [][][]float32 // [layer][heads] a shared window's headers, a layer's each (views)
	heads []snapHead    // each KV head's choice and scratch (compress)
}

// snapHead is one KV head's choice of the tokens to evict, with its scratch.
type snapHead struct {
	order    []int32   // prefix token indices, in position order
	rank     []int32   // positions in order, the capacity's best first (topK)
	raw      []float64 // one query head's scores in position order (avg pooling)
	pooled   []float64
	pool     []float64 // snapPool1d's scratch
	raw32    []float32 // max pooling's: the gather where positions do not ascend,
	pooled32 []float32 // the pooled values,
	pool32   []float32 // and snapMaxPool's scratch
	score    []float64 // group mean of the pooled scores
	drop     []int32   // the token indices to evict (rank's tail; nil: none)
}

func init() {
	Register(Spec{Name: "snapkv", Doc: "keeps, once the prompt is read, the prompt tokens its last `window` queries attend to most (pooled), plus the window",
		Params: snapParamDocs(),
		New: func(p Params) (Policy, error) {
			return newSnapKV("snapkv", p, false)
		}})
}

func snapParamDocs() []ParamDoc {
	return append(knobDocs("tokens kept per KV head after the prompt, window included: the capacity (pyramidkv: its mean over layers)"),
		ParamDoc{"capacity", "256", "tokens kept per KV head after the prompt, window included (the budget under its own name)"},
		ParamDoc{"window", "32", "observation window: the last prompt queries scoring the prefix"},
		ParamDoc{"kernel", "7", "pooling width (odd)"},
		ParamDoc{"pooling", "max", "score smoothing: max or avg"},
	)
}

// newSnapKV reads the parameters shared by snapkv and pyramidkv: budget is
// the capacity; a ratio sets it from the prompt (and must leave room for
// the window).
func newSnapKV(name string, p Params, pyramid bool) (Policy, error) {
	rd := newReader(name, p)
	k := rd.knob(1)
	capacity := rd.alias("capacity", k, 256, 1)
	window := rd.Int("window", 32, 1, 1<<30)
	kernel := rd.Int("kernel", 7, 1, 1<<20)
	pooling := rd.Enum("pooling", "max", "avg")
	beta := 0
	if pyramid {
		beta = rd.Int("beta", 20, 1, 1<<30)
	}
	if rd.err == nil && !k.share() && capacity < window {
		what := "capacity"
		if k.tokens() {
			what = "budget"
		}
		rd.fail(what, "%d is less than window %d (the capacity counts the window)", capacity, window)
	}
	if rd.err == nil && kernel%2 == 0 {
		rd.fail("kernel", "%d is even; the pooling width must be odd", kernel)
	}
	out, err := rd.done()
	if err != nil {
		return nil, err
	}
	pol := &snapKV{base: base{name: name, params: out, budget: capacity, evicts: true},
		capacity: capacity, window: window, kernel: kernel, avg: pooling == "avg",
		pyramid: pyramid, beta: beta}
	if k.share() {
		pol.ratioBudget(fmt.Sprintf("ratio %v", k.ratio), []string{"budget", "capacity"}, pol.shareOf(k.ratio, func(kept, n int) error {
			if kept < window && kept < n {
				return fmt.Errorf("fewer than the window's %d (the capacity counts the window)", window)
			}
			pol.capacity, pol.budget = kept, kept
			pol.params["capacity"] = kept
			return nil
		}))
	} else {
		out["budget"] = capacity
	}
	return pol, nil
}

func (s *snapKV) Start(r *runtime.Runner) error {
	s.winRows, s.firstWin, s.lastRow, s.shared, s.prompted = false, false, false, false, false
	return s.bind(r, s)
}

// LayerBudget is (0, 0): the cache grows during decode.
func (s *snapKV) LayerBudget(l int) (hold, attend int) { return 0, 0 }

func (s *snapKV) BeforeAttend(l int, a *runtime.AttnArgs) {
	if s.idle() {
		return
	}
	s.begin(l, a)
	if l == 0 {
		s.plan(a)
		// Until a prompt is announced there is nothing to compress: the
		// stream runs as full attention, and its Stats say so.
		s.prompted = s.prompted || s.prompting
		s.stats.NotApplicable = ""
		if !s.prompted {
			s.stats.NotApplicable = NotApplicableNoPrompt
		}
	}
	if s.winRows {
		s.accumulate(l, a)
	}
	s.finish(l, a, 0)
}

func (s *snapKV) AfterAttend(l int, a *runtime.AttnArgs) {
	if s.idle() {
		return
	}
	if s.lastRow {
		s.compress(l, a)
	}
	s.end(l, a)
}

// AfterAttendLag: the forward that holds the whole window compresses each
// layer from that layer's own sums (views) and touches its layer's cache
// alone (runtime.LagHook).
func (s *snapKV) AfterAttendLag() bool { return !s.idle() && s.shared && !s.sampled }

// plan places the forward in progress within the announced prompt that base
// follows (the same protocol as every policy's: SnapKV compresses where the
// others do under PrefillDense, after the prompt's last row, whatever the
// protocol).
func (s *snapKV) plan(a *runtime.AttnArgs) {
	s.winRows, s.firstWin, s.lastRow, s.shared = false, false, false, false
	if !s.prompting || s.promptLen() < s.capacity {
		return
	}
	first, newest := a.QPos[0], a.QPos[a.Rows-1]
	s.n, s.from = s.promptLen(), s.hi+1-s.window
	s.winRows = newest >= s.from
	s.firstWin = s.winRows && first <= s.from
	s.lastRow = s.promptEnd
	s.shared = s.firstWin && s.lastRow
}

// accumulate points attention's probability accumulators at layer l's
// buffers, sized to the layer's cache; they start at zero with the window.
func (s *snapKV) accumulate(l int, a *runtime.AttnArgs) {
	slot := l
	if s.shared {
		slot = 0
	}
	for len(s.acc) <= slot {
		s.acc = append(s.acc, nil)
	}
	if len(s.acc[slot]) < a.Heads {
		s.acc[slot] = make([][]float32, a.Heads)
	}
	bufs := s.acc[slot][:a.Heads]
	group := a.Heads / a.KVHeads
	for h := range bufs {
		n := a.Seqs[h/group].N
		b := bufs[h]
		old := len(b)
		if s.firstWin {
			old = 0
		}
		switch {
		case cap(b) < n:
			nb := make([]float32, n, n+n/4+64)
			copy(nb, b[:old])
			b = nb
		case s.shared: // the call starts the sums from zero (AccZero)
			b = b[:n]
		default:
			b = b[:n]
			clear(b[min(old, n):])
		}
		bufs[h] = b
	}
	a.Acc, a.AccFrom = bufs, s.from
	if s.shared {
		// The whole window in this forward: its sums start from zero, and
		// the backend may hand them back as views, into headers of the
		// layer's own (so that its compression may wait for the layer's
		// MLP: AfterAttendLag).
		for len(s.hdr) <= l {
			s.hdr = append(s.hdr, nil)
		}
		if len(s.hdr[l]) < a.Heads {
			s.hdr[l] = make([][]float32, a.Heads)
		}
		hdr := s.hdr[l][:a.Heads]
		copy(hdr, bufs)
		a.Acc, a.AccZero, a.AccView = hdr, true, true
	}
}

// compress evicts from layer l the prefix tokens outside each KV head's top
// scores, once the prompt's last row has attended. The KV heads choose side
// by side (the crew: at 32K tokens a layer's choice is some 10 ms on one
// core, on the host while the device waits for the next layer), then evict
// in order.
func (s *snapKV) compress(l int, a *runtime.AttnArgs) {
	acc := a.Acc // a shared window's: the layer's headers (the backend's views, or the shared buffers)
	if !s.shared {
		acc = s.acc[l]
	}
	group := a.Heads / a.KVHeads
	seqs := s.cache.Seqs(l)
	if len(s.heads) < len(seqs) {
		s.heads = append(s.heads, make([]snapHead, len(seqs)-len(s.heads))...)
	}
	keep := s.keep(l)
	parts := min(len(seqs), goruntime.GOMAXPROCS(0), crew.MaxParts)
	per := (len(seqs) + parts - 1) / parts
	crew.Run(parts, func(k int) {
		for g := k * per; g < min(len(seqs), (k+1)*per); g++ {
			s.heads[g].choose(&seqs[g], acc[g*group:(g+1)*group], s.from, keep, s.kernel, s.avg)
		}
	})
	for g := range seqs {
		if h := &s.heads[g]; h.drop != nil {
			s.cache.Evict(l, g, h.drop)
		}
	}
}

// choose sets h.drop to the indices of seq's prefix tokens (positions
// before from) outside the keep best by the pooled scores of the group's
// query heads (acc), or to nil where the prefix has no more than keep.
func (h *snapHead) choose(seq *runtime.KVSeq, acc [][]float32, from, keep, kernel int, avg bool) {
	h.drop = nil
	h.order = h.order[:0]
	for t, p := range seq.Pos[:seq.N] {
		if int(p) < from {
			h.order = append(h.order, int32(t))
		}
	}
	m := len(h.order)
	if keep >= m {
		return
	}
	if !seq.Ascending { // else the indices are in position order already
		slices.SortFunc(h.order, func(x, y int32) int { return cmp.Compare(seq.Pos[x], seq.Pos[y]) })
	}
	h.score = snapGrow(h.score, m)
	clear(h.score)
	group := float64(len(acc))
	if avg {
		h.raw = snapGrow(h.raw, m)
		h.pooled = snapGrow(h.pooled, m)
		for _, qh := range acc {
			for i, t := range h.order {
				h.raw[i] = float64(qh[t])
			}
			h.pool = snapPool1d(h.pooled, h.raw, kernel, avg, h.pool)
			for i, v := range h.pooled {
				h.score[i] += v / group
			}
		}
	} else {
		// Max pooling in float32, the sums' own type: a maximum is one of
		// its values, so it is the float64 pooling's exactly. Ascending
		// positions put the prefix at indices 0..m-1: no gather.
		h.pooled32 = snapGrow(h.pooled32, m)
		for _, qh := range acc {
			src := qh[:m]
			if !seq.Ascending {
				h.raw32 = snapGrow(h.raw32, m)
				for i, t := range h.order {
					h.raw32[i] = qh[t]
				}
				src = h.raw32
			}
			h.pool32 = snapMaxPool(h.pooled32, src, kernel, h.pool32)
			for i, v := range h.pooled32 {
				h.score[i] += float64(v) / group
			}
		}
	}
	// rank[:keep] are the positions in order of the tokens kept (the
	// best scores, ties to the earlier position), rank[keep:] the rest:
	// a selection, not a sort (Evict takes the drops in any order).
	h.rank = h.rank[:0]
	for i := range m {
		h.rank = append(h.rank, int32(i))
	}
	topK(h.rank, h.score, keep)
	h.drop = h.rank[keep:] // rank's tail, turned into token indices in place
	for j, i := range h.drop {
		h.drop[j] = h.order[i]
	}
}

// keep is the number of prefix tokens layer l keeps.
func (s *snapKV) keep(l int) int {
	if s.pyramid {
		return pyramidBudget(s.capacity, s.window, s.beta, s.cfg.Layers, s.n, l)
	}
	return s.capacity - s.window
}

func snapGrow[T float32 | float64](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n, n+n/4+64)
	}
	return b[:n]
}

// snapPool1d writes into dst the 1-D pooling of src with width kernel (odd),
// stride 1 and padding kernel/2, as torch's F.max_pool1d (padding is -Inf:
// the maximum over the covered elements) or F.avg_pool1d with
// count_include_pad=True (padding is zero: the covered sum divided by kernel).
// len(dst) == len(src). Max pooling takes 2 x len(src) floats of scratch
// from tmp, grown if shorter, and returns it.
//
// The maxima are van Herk's and Gil and Werman's: src cut into blocks of
// kernel elements, each element's maximum from its block's start (pre) and
// to its block's end (suf); a window of kernel elements spans at most two
// blocks, its maximum max(suf[lo], pre[hi]), three comparisons an element
// whatever the width. A window cut short by an edge lies in one block
// starting at lo (the first) or ending at hi (the last). The values are the
// maxima themselves: no rounding.
func snapPool1d(dst, src []float64, kernel int, avg bool, tmp []float64) []float64 {
	pad := kernel / 2
	n := len(src)
	if avg {
		for i := range dst[:n] {
			lo, hi := max(i-pad, 0), min(i+pad, n-1)
			var sum float64
			for _, v := range src[lo : hi+1] {
				sum += v
			}
			dst[i] = sum / float64(kernel)
		}
		return tmp
	}
	return snapMaxPool(dst, src, kernel, tmp)
}

// snapMaxPool is snapPool1d's max pooling, in either float type.
func snapMaxPool[T float32 | float64](dst, src []T, kernel int, tmp []T) []T {
	pad := kernel / 2
	n := len(src)
	if cap(tmp) < 2*n {
		tmp = make([]T, 2*n)
	}
	pre, suf := tmp[:n], tmp[n:2*n]
	for b := 0; b < n; b += kernel {
		e := min(b+kernel, n)
		pre[b] = src[b]
		for i := b + 1; i < e; i++ {
			pre[i] = max(pre[i-1], src[i])
		}
		suf[e-1] = src[e-1]
		for i := e - 2; i >= b; i-- {
			suf[i] = max(suf[i+1], src[i])
		}
	}
	// A whole window [i-pad, i+pad] spans two blocks, or is one block
	// (then suf and pre both hold its maximum): no division a element.
	for i := pad; i+pad < n; i++ {
		dst[i] = max(suf[i-pad], pre[i+pad])
	}
	edge := func(i int) { // a window the edges cut short
		lo, hi := max(i-pad, 0), min(i+pad, n-1)
		switch {
		case lo/kernel != hi/kernel:
			dst[i] = max(suf[lo], pre[hi])
		case lo%kernel == 0: // from the block's start
			dst[i] = pre[hi]
		default: // to the block's end (the last, cut short by the edge)
			dst[i] = suf[lo]
		}
	}
	for i := range min(pad, n) {
		edge(i)
	}
	for i := max(n-pad, pad); i < n; i++ {
		edge(i)
	}
	return tmp
}
