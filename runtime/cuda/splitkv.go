package cuda

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync"

	"github.com/kvbench/kvbench/runtime"
)

// ---- the runtime's attention on the split-KV kernels (attn_rt_*) ----

// fusedFor reports whether a split kernel with vg virtual heads a row
// merges its rows itself (attn_finish's fused merge) rather than leave them
// to a separate combine launch, in mode (combineOf), for a launch of rows
// split rows of chunks chunks each, on the tensor cores (tc) or not: by
// default rows of one head where there are fusedRows of them or each has
// at most mergeGroup chunks (one level of merges), rows of 4 heads on the
// tensor cores over at most mergeGroup chunks, fusedRows rows or more of
// up to 4 heads on the tensor cores over at most fusedFew chunks, and
// fusedRows8 rows or more of 8 heads on the tensor cores over at most
// mergeGroup chunks; "fused" or "separate" force one form.
//
// Measured on the H100 (docs/benchmarks.md). MHA rows fused (2026-12-06):
// 32 rows 0.3-0.8 µs faster on attn_rt at 512-16K, over 17-65 chunks a
// row; 8 and 16 rows (8/8, 16/16) 0.5-2.0 µs slower over 17 or more chunks
// (the last blocks of few rows merge in two levels what the combine spreads
// over rows x D/32 blocks), and level to 1.0 µs faster over at most 16 (the
// tensor-core kernel's 5-16 chunks a row). GQA rows fused, with the merge
// in one round of loads (2026-12-06): rows of 4 heads (32/8) 0.3-0.8 µs
// faster over 9-16 chunks (the H200: 0.1-0.6) and 1.2-2.2 slower over 17 or
// more (two levels); rows of 2 (32/16) 0.7-1.5 slower and of 8 (28/4, 7
// heads) 0.1-0.8 slower even over 9-16 chunks: the merge's one block a row
// does what the combine spreads over many, and every block pays the
// arrival. Where there are fusedRows rows or more of at most fusedFew
// chunks (a batch's), rows of up to 4 heads on the tensor cores merge
// fused: 8 streams of 32/16 (128 rows of 2 heads, 2 and 4 chunks) at 1K /
// 2K 33.3 / 55.0 µs against 37.7 / 59.3 with the combine launch (H100,
// 2026-12-06). Rows of 8 heads on the tensor cores (28/4, 16/2) merge fused
// where there are fusedRows8 rows or more over at most mergeGroup chunks
// (H100, 2026-12-06, batches of 4-24 streams at 512-4K, the combine
// against the fused merge): 24 rows level to 3.3 µs faster over 5-11 chunks, 32
// rows 0.2-3.9, 48-96 rows 2.7-16.1; 8 and 16 rows 4.0 slower to 0.8
// faster. Rows off the tensor cores (a batch's shifted or accumulating
// calls) keep the combine there: untimed.
func fusedFor(mode string, vg, rows, chunks int, tc bool) bool {
	switch mode {
	case "fused":
		return true
	case "separate":
		return false
	}
	if chunks <= fusedFew && rows >= fusedRows && vg <= 4 && tc {
		return true
	}
	if vg == 8 && tc && rows >= fusedRows8 && chunks <= mergeGroup {
		return true
	}
	if chunks > mergeGroup {
		return vg == 1 && rows >= fusedRows
	}
	return vg == 1 || tc && vg == 4
}

// fusedRows is the least number of MHA split rows that merge in the split
// kernel over any number of chunks (fusedFor).
const fusedRows = 32

// fusedRows8 is the least number of split rows of 8 heads on the tensor
// cores that merge in the split kernel (fusedFor).
const fusedRows8 = 24

// fusedFew is the most chunks a row of up to 4 heads on the tensor cores
// has where fusedRows rows or more merge in the split kernel (fusedFor).
const fusedFew = 4

// Plan describes the launch of an Attend (Backend.AttnPlan).
type Plan struct {
	Kernel    string // the split-KV kernel
	Chunk     int    // tokens per block
	Blocks    int    // blocks of the attention kernel
	Rows      int    // its split rows (Blocks / Rows chunks a row)
	Resident  int    // blocks resident per multiprocessor
	SharedMem int    // dynamic shared memory per block, bytes
	ByValue   bool   // the call's ints went to the kernel by value (RtBox), not uploaded
	Early     bool   // its blocks read the settled tokens before waiting for the kernel ahead (RH_EARLY)
	Merge     string // where a row's chunks merge: "fused" (its last blocks, counted), "polled" (block 0, pollmerge.go), "combine" (a second launch), "cluster", or "" (one chunk a row)
	Lists     bool   // Quest's choice read as its heads' page lists (questlists.go; a batch: some call of the launch)
	Arith     int    // KV heads whose pages the kernel found by their stride, no pointer loaded (pageArith; a batch: all its calls')
}

// arithHeads counts the KV heads of a call's ints h whose descriptors give
// their pages' stride (SD_PST).
func arithHeads(h []int32, kvHeads int) int {
	n := 0
	for g := range kvHeads {
		if h[g*sdWords+sdPStride] != 0 {
			n++
		}
	}
	return n
}

// mergeOf names where the rows of a split launch of nchunks chunks a row
// merge (Plan.Merge): fused (counted, or polled: poll), in a combine
// launch, or in a cluster (cl > 0).
func mergeOf(fused bool, cl, nchunks int, poll bool) string {
	switch {
	case nchunks <= 1:
		return ""
	case cl > 0:
		return "cluster"
	case poll:
		return "polled"
	case fused:
		return "fused"
	}
	return "combine"
}

// Header words of a call of the runtime's split-KV kernels (RH_* in
// attention_rt.cu), placed after the KV heads' descriptors.
const (
	rhRows = iota
	rhHeads
	rhG
	rhGH
	rhRT
	rhTiles
	rhWin
	rhRowOff
	rhHeadOff
	rhInvOff
	rhStride
	rhInter
	rhSRows
	rhLean
	rhEarly
	rhGR
	rhNoLo
	rhTrace // 2 words: the trace's device address, low word first (attntrace.go; 0: none)
	_
	rhSel // 2 words: a device selection's address less 4 bytes a word of its offsets' base (selAt; 0: the selections are in the ints)
	_
	rhPBase // 2 words: the address the descriptors' page offsets count from (pageArith; 0 where no KV head has them)
	_
	rhEpoch // the polled merge's epoch (pollmerge.go; 0: none)
	rhWords
)

// rtBoxWords is the most ints a call passes by value (RT_BOX_WORDS in
// attention_rt.cu: RtBox, a kernel parameter of 4 + 4*rtBoxWords bytes).
const rtBoxWords = 960

// maxGridY is the most blocks a launch has in grid y; split rows beyond it
// go to grid z (RH_SROWS).
const maxGridY = 65535

// ctrWords is the room for the fused merge's counters at the start of the
// b.ml workspace: kept zero between launches (each launch resets what it
// used), cleared when the workspace is made again. A call that would need
// more merges its partials with attn_rt_combine instead.
const ctrWords = 16 << 10

// splitState is a Backend's state for the split-KV kernels of Attend.
type splitState struct {
	chunk    int            // tokens per block asked for (SetAttnChunk); 0: chosen per call
	minChunk int            // least tokens per block a chosen chunk has ($KVBENCH_ATTN_MIN_CHUNK)
	tcMin    int            // least tokens per block a chosen chunk of the _tc kernels has ($KVBENCH_ATTN_TC_MIN; 0: tcLeast's choice)
	waves    int            // waves of resident blocks a chosen chunk fills ($KVBENCH_ATTN_WAVES)
	short    int            // the longest chunk the _short kernels take ($KVBENCH_ATTN_SHORT; 0: none)
	tc       tcMode         // when lean calls run the tensor-core _tc kernels ($KVBENCH_ATTN_TC)
	tcStages int            // the _tc kernels' stages a warp, TC_ST ($KVBENCH_ATTN_TC_ST)
	slowMem  bool           // the device's memory is slow for the decode kernels (slowMemory)
	tcSlots  int            // the most resident blocks a multiprocessor the _tc kernels' chunks count ($KVBENCH_ATTN_TC_SLOTS; 0: all; -1: tcSlotsFor's default)
	cluster  int            // the longest row whose chunks run as one cluster, the _tcc kernels ($KVBENCH_ATTN_CLUSTER; 0: none)
	noEarly  bool           // the _tc kernels never read before pdl_wait ($KVBENCH_ATTN_EARLY=off)
	noArith  bool           // the kernels read every page pointer, even of lists one stride apart ($KVBENCH_ATTN_ARITH=off; pageArith)
	noTCAcc  bool           // calls with Acc stay off the _tc kernels ($KVBENCH_ATTN_TC_ACC=off)
	noLo     bool           // the _tc kernels take q and p in bf16 alone, no low halves ($KVBENCH_ATTN_TC_LO=off; SDPA's precision, for timing)
	combine  string         // where split rows merge: fusedFor's mode ($KVBENCH_ATTN_COMBINE)
	occ      map[occKey]int // resident blocks per multiprocessor, by kernel and shared memory
	last     Plan           // the last Attend's launch (AttnPlan)
	earlyN   int64          // the launches that read early so far (tests)
}

type occKey struct {
	f    *Function
	smem int
}

// tcMinChunk is the default least chunk of the tensor-core decode kernels;
// tcLongChunk the one for heads of 128 where chunks that long still give a
// call's grid half a block a multiprocessor or more (tcLeast).
const (
	tcMinChunk  = 64
	tcLongChunk = 128
)

// tcLeast is the least chunk of a tensor-core call over heads of hd
// channels, rows split rows and a longest row of longest tokens, on a
// device of sms multiprocessors: $KVBENCH_ATTN_TC_MIN where set, else
// tcMinChunk, and tcLongChunk for heads of 128 where the rows' chunks of
// tcLongChunk make at least sms/2 blocks. A block's four warps take tiles
// of 16 tokens: a chunk of 32 leaves two of them without one. Measured on
// an H100 (docs/benchmarks.md): 64 took 32/8 at 512 and 1K tokens from
// 10.7 and 12.3 to 10.4 and 11.7 µs (2026-12-05); 128 took 32/8 heads of
// 128 (8 rows) at 1.5K, 2K and 3K tokens (96-192 blocks of 128) from 12.3,
// 13.5 and 14.3 µs to 11.6, 12.3 and 13.4, was level at 768 and 1K (48
// and 64 blocks) and 0.45 µs slower at 512 (32), while heads of 64 (blocks
// half as long) were 0.2-0.45 µs slower at 512-2K (2026-12-06). Rows long
// enough for the chooser to fill the device take 128 or more anyway.
func (s *splitState) tcLeast(hd, rows, longest, sms int) int {
	switch {
	case s.tcMin > 0:
		return s.tcMin
	case hd == 128 && 2*rows*((longest+tcLongChunk-1)/tcLongChunk) >= sms:
		return tcLongChunk
	}
	return tcMinChunk
}

// SetAttnChunk sets the tokens per block of the split-KV kernels of Attend
// (a multiple of ChunkTokens, lowered where the block's shared memory would
// not fit); 0 lets each call choose one that fills the GPU in one wave.
func (b *Backend) SetAttnChunk(tokens int) error {
	if tokens < 0 || tokens%ChunkTokens != 0 {
		return fmt.Errorf("cuda: attention chunk %d is not 0 or a positive multiple of %d", tokens, ChunkTokens)
	}
	b.split.chunk = tokens
	return nil
}

// AttnPlan describes the launch of the last Attend: its attention kernel
// (attn_rt_* for the split-KV kernels, flash_prefill_* for the tensor-core
// prefill, be_attend for the general kernel) and, for the split-KV kernels,
// the chunk, blocks, residency and shared memory.
func (b *Backend) AttnPlan() Plan { return b.split.last }

// occupancy is f's resident blocks per multiprocessor at attnThreads
// threads and smem bytes of dynamic shared memory, asked of the driver once.
func (b *Backend) occupancy(f *Function, smem int) int {
	k := occKey{f, smem}
	if n, ok := b.split.occ[k]; ok {
		return n
	}
	n, err := f.Occupancy(attnThreads, smem)
	must(err)
	if b.split.occ == nil {
		b.split.occ = map[occKey]int{}
	}
	b.split.occ[k] = n
	return n
}

// splitOK says whether Attend runs a on the split-KV kernels: head dim 64
// or 128 and no recall (the general kernel be_attend measures it).
func splitOK(a *runtime.AttnArgs, recall bool) bool {
	return (a.HeadDim == 64 || a.HeadDim == 128) && !recall
}

// tokenRange is the range [lo, hi) of the token indices of s that a query
// row at a position in minQ..maxQ may see: with positions known to ascend,
// the tokens past maxQ and those every row's sliding window hides are left
// out; otherwise all of them.
func tokenRange(s *runtime.KVSeq, minQ, maxQ, window int) (lo, hi int) {
	if !s.Ascending || s.N == 0 {
		return 0, s.N
	}
	pos := s.Pos[:s.N]
	if s.Bounded && int(s.MaxPos) <= maxQ {
		hi = s.N // no position past maxQ (a decode step's usual case)
	} else {
		hi, _ = slices.BinarySearch(pos, int32(min(maxQ, math.MaxInt32-1)+1)) // first position > maxQ
	}
	if window > 0 {
		lo, _ = slices.BinarySearch(pos[:hi], int32(max(minQ-window, math.MinInt32+1)+1)) // first position > minQ-window
	}
	return lo, hi
}

// sharedHeads returns the query heads of a split row's subgroup (gr) and
// the virtual heads they take (gh, a power of two): the largest of 8, 4, 2,
// 1 that divides group such that the heads of each such subgroup read the
// same token list (the same selection, or none), gr = gh. A decode call's
// (one query row) group of 3, 5, 6 or 7 heads that share their tokens is
// one subgroup padded to 4 or 8 virtual heads instead (Qwen2.5-7B's 28
// heads over 4: one read of each KV head's tokens, not seven). heads holds
// (offset, count) per query head, as Attend lays them out.
func sharedHeads(heads []int32, group, rows int) (gr, gh int) {
	shared := func(n int) bool {
		for h := 0; h < len(heads)/2; h++ {
			first := h - h%n
			if heads[2*h] != heads[2*first] || heads[2*h+1] != heads[2*first+1] {
				return false
			}
		}
		return true
	}
	if pad := 1 << bits.Len(uint(group-1)); rows == 1 && group <= 8 && pad != group && shared(group) {
		return group, pad
	}
	for _, gh := range []int{8, 4, 2} {
		if group%gh == 0 && shared(gh) {
			return gh, gh
		}
	}
	return 1, 1
}

// attendSplit is Attend on the split-KV kernels of attention_rt.cu, the same
// kernels for every policy: attn_rt_d{D}_g{G}_{bf16,f32}[_sh], a block per
// (chunk of tokens, split row), where a split row is G virtual heads that
// read the same tokens of one KV head once (the query heads of a GQA group
// that share their tokens, times query rows of a prompt chunk), then
// attn_rt_combine_d{D} (or the split kernel's own fused merge for rows of
// one head), and attn_rt_acc to add the probabilities to Acc. The
// descriptors, rows, heads and inverse frequencies are in b.hInts (Attend),
// the header's room at hdr.
// splitShape is the shape of a split-KV call: heads sharing a selection
// (gh), query rows per split row (rt), virtual group (vg), split rows, the
// longest token list of a split row, the smallest page, whether keys are
// re-positioned, whether the call is lean (no selection, no positions: full
// attention of a decode step stages no token ids or positions, which leaves
// room for longer chunks), and the kernel name's suffix (_d.._g.._type[_sh]).
type splitShape struct {
	gr, gh, rt, vg, sub, tiles, srows int // gr of gh virtual heads real (sharedHeads)
	longest, minPS                    int
	shifted, lean, pow2               bool        // pow2: every KV head's pages hold a power of two tokens
	names                             *splitNames // the kernels of this shape
}

// splitNames are the split-KV kernels of one shape: one call's (attn_rt_*)
// and a batch's (attn_rtb_*), and their combines.
// short is attn_rt's variant with fewer loads in flight for short chunks
// ("" where there is none: float32 pages, re-positioned keys, 1 or 8 heads a
// row; rows of one head measured no faster with it, 32/32 heads); tc the
// tensor-core kernel of lean calls (attention_tc.cu; "" for float32 pages
// and re-positioned keys).
// tcc is tc's variant whose row's chunks are one cluster, merged in
// distributed shared memory (sm_90a).
// tcb is tc over a batched launch's calls (attn_rtb's table); rtbX, tcbX
// and rtbCombX are rtb, tcb and rtbComb taking the larger box (RtbXBox).
type splitNames struct{ rt, rtb, rtbX, rtComb, rtbComb, rtbCombX, short, tc, tcc, tcb, tcbX string }

// splitKey is the shape that names a split-KV kernel.
type splitKey struct {
	hd, vg        int
	bf16, shifted bool
}

// splitNamesOf returns the kernel names of shape k, built once (calls'
// shapes are read on batchMeta's goroutines, a thousand a step).
func splitNamesOf(k splitKey) *splitNames {
	if n, ok := splitNameCache.Load(k); ok {
		return n.(*splitNames)
	}
	kt, sh := "f32", ""
	if k.bf16 {
		kt = "bf16"
	}
	if k.shifted {
		sh = "_sh"
	}
	suffix := fmt.Sprintf("_d%d_g%d_%s%s", k.hd, k.vg, kt, sh)
	short, tc, tcc, tcb, tcbX := "", "", "", "", ""
	if k.bf16 && !k.shifted && k.vg >= 2 && k.vg <= 4 {
		short = "attn_rt" + suffix + "_short"
	}
	if k.bf16 && !k.shifted && k.vg&(k.vg-1) == 0 && k.vg <= 8 {
		tc, tcc, tcb, tcbX = "attn_rt"+suffix+"_tc", "attn_rt"+suffix+"_tcc", "attn_rtb"+suffix+"_tc", "attn_rtb"+suffix+"_tc_xb"
	}
	n, _ := splitNameCache.LoadOrStore(k, &splitNames{rt: "attn_rt" + suffix, rtb: "attn_rtb" + suffix, rtbX: "attn_rtb" + suffix + "_xb",
		rtComb: fmt.Sprintf("attn_rt_combine_d%d", k.hd), rtbComb: fmt.Sprintf("attn_rtb_combine_d%d", k.hd),
		rtbCombX: fmt.Sprintf("attn_rtb_combine_d%d_xb", k.hd), short: short, tc: tc, tcc: tcc, tcb: tcb, tcbX: tcbX})
	return n.(*splitNames)
}

var splitNameCache sync.Map // splitKey -> *splitNames

// DecodeKernels names the split-KV kernels a decode call over bf16 pages of
// head dim hd runs for kernel groups of vg heads (the tensor-core kernel,
// where there is one, and the CUDA-core one) and the combine that merges
// their rows (for `kvbench kernels -v`).
func DecodeKernels(hd, vg int) (kernels []string, combine string) {
	n := splitNamesOf(splitKey{hd: hd, vg: vg, bf16: true})
	if n.tc == "" {
		return []string{n.rt}, n.rtComb
	}
	return []string{n.tc, n.rt}, n.rtComb
}

// splitShapeOf reads a call's shape from its descriptors and head table
// (its ints h, the table at headOff) and its page type kvt.
func splitShapeOf(a *runtime.AttnArgs, h []int32, headOff, kvt int32) splitShape {
	hd, group := a.HeadDim, a.Heads/a.KVHeads
	var p splitShape
	p.gr, p.gh = sharedHeads(h[headOff:int(headOff)+2*a.Heads], group, a.Rows)
	p.rt = 1
	if a.Rows > 1 {
		p.rt = min(8/p.gh, 1<<bits.Len(uint(a.Rows-1)))
	}
	p.vg, p.sub, p.tiles = p.gh*p.rt, group/p.gr, (a.Rows+p.rt-1)/p.rt
	p.srows = a.KVHeads * p.sub * p.tiles
	p.minPS, p.lean, p.pow2 = math.MaxInt, true, true
	for g := range a.Seqs {
		d := h[g*sdWords : (g+1)*sdWords]
		p.minPS = min(p.minPS, int(d[1]))
		p.pow2 = p.pow2 && d[1]&(d[1]-1) == 0
		p.shifted = p.shifted || (a.QShift != nil && d[5] >= 0)
		p.lean = p.lean && d[4] < 0
		for s := range p.sub {
			hh := g*group + s*p.gr
			if n := h[int(headOff)+2*hh+1]; n >= 0 {
				p.longest = max(p.longest, int(n))
				p.lean = false
			} else {
				p.longest = max(p.longest, int(d[11]-d[10]))
			}
		}
	}
	p.names = splitNamesOf(splitKey{hd: hd, vg: p.vg, bf16: kvt == kvBF16, shifted: p.shifted})
	return p
}

func (b *Backend) attendSplit(a *runtime.AttnArgs, hdr, rowOff, headOff, invOff int32) {
	hd, group := a.HeadDim, a.Heads/a.KVHeads
	p := splitShapeOf(a, b.hInts, headOff, b.pageType())
	gh, rt, vg, tiles, nsrows := p.gh, p.rt, p.vg, p.tiles, p.srows
	longest, minPS, shifted, lean := p.longest, p.minPS, p.shifted, p.lean
	name := p.names.rt
	f := b.fn(name)
	smemFor := func(chunk int) int { return rtSmem(vg, hd, chunk, minPS, shifted, lean) }
	limit := maxAttnSmemB
	tc := b.tcOK(a, p) && (b.split.tc == tcOn || useTC(vg, nsrows, longest, hd, b.split.slowMem)) && b.tcFits(p.names.tc, vg, hd, minPS)
	if tc { // tcFits has let it take the opt-in shared memory
		name = p.names.tc
		f = b.fn(name)
		smemFor = func(chunk int) int { return b.tcSmem(vg, hd, chunk, minPS) }
		limit = b.D.SharedPerBlockOptin
	}
	slots, least := 0, b.split.minChunk // the chooser's resident blocks a multiprocessor (0: all) and least chunk
	if tc {
		slots, least = b.split.tcSlotsFor(hd, vg, false), max(least, b.split.tcLeast(hd, nsrows, longest, b.D.SMs))
	}
	chunk := b.splitChunk(f, smemFor, limit, nsrows, longest, slots, least)
	cl := 0 // the blocks of a cluster: a row's chunks (the _tcc kernel)
	if tc {
		if c, n := b.clusterChunk(chunk, longest); n > 0 && a.Acc == nil && smemFor(c) <= limit-b.fn(p.names.tcc).Shared {
			chunk, cl, name = c, n, p.names.tcc
			b.allowShared(name, b.D.SharedPerBlockOptin-b.fn(name).Shared)
			f = b.fn(name)
		}
	}
	smem, nchunks := smemFor(chunk), max(1, (longest+chunk-1)/chunk)
	if !tc && p.names.short != "" && chunk <= b.split.short {
		name = p.names.short
		f = b.fn(name)
	}
	pgw := chunk/minPS + 2
	ngroups := (nchunks + mergeGroup - 1) / mergeGroup
	// Rows the polled merge takes merge in the kernel unless the combine is
	// asked for: without the arrival's count it beats the combine launch
	// wherever it applies (pollmerge.go).
	resident := b.occupancy(f, smem)
	pollable := cl == 0 && b.split.combine != "separate" && b.pollFor(vg, hd, nchunks, nsrows, resident)
	fused := (pollable || fusedFor(b.split.combine, vg, nsrows, nchunks, tc)) && nsrows*(ngroups+1) <= ctrWords && cl == 0
	parts := nchunks
	if fused {
		parts += ngroups
	}
	stride := max(longest, 1)
	copy(b.hInts[hdr:], []int32{rhRows: int32(a.Rows), rhHeads: int32(a.Heads), rhG: int32(group), rhGH: int32(gh),
		rhRT: int32(rt), rhTiles: int32(tiles), rhWin: int32(max(a.Window, 0)), rhRowOff: rowOff, rhHeadOff: headOff,
		rhInvOff: invOff, rhStride: int32(stride), rhInter: flag(a.Rope == runtime.RopeInterleaved), rhSRows: int32(nsrows), rhLean: flag(lean), rhGR: int32(p.gr),
		rhNoLo: flag(b.split.noLo)})
	gy, gz := min(nsrows, maxGridY), (nsrows+maxGridY-1)/maxGridY

	// Workspaces first (growing one waits for the device, which restarts
	// the staging arena): partials in b.part; in b.ml the fused merge's
	// counters, each (row, head)'s max and sum for Acc, then the partials'
	// maxima and sums; Acc's raw scores in b.scores.
	items := a.Rows * a.Heads
	partO := b.grow(&b.part, int64(nsrows*parts*vg*hd)*4)
	mlAt := span(ctrWords * 4)
	pmlAt := mlAt + span(int64(items)*8)
	oldP, oldN := b.ml.p, b.ml.bytes
	ws := b.grow(&b.ml, pmlAt+int64(nsrows*parts*vg*2)*4)
	if ws != oldP || b.ml.bytes != oldN {
		b.launch("be_zero", Dim3{ctrWords / 256, 1, 1}, Dim3{256, 1, 1}, ws, int64(ctrWords))
	}
	comb := !fused && nchunks > 1 && cl == 0 // a combine launch merges the partials
	combBlocks := 0
	if comb {
		combBlocks = vg * gy * (hd / 32 * gz)
	}
	trace := b.traceCall(name, nchunks, nsrows, combBlocks)
	b.hInts[hdr+rhTrace], b.hInts[hdr+rhTrace+1] = int32(uint32(trace)), int32(uint32(trace>>32))
	// A device selection is read where it lies (rt_sel), not copied after
	// the ints: the ints may then go by value.
	selAt(b.hInts[hdr:], b.cs)
	b.cs = chosenCall{}
	var raw, mlAcc, counters Ptr
	if a.Acc != nil {
		raw = b.grow(&b.scores, int64(items*stride)*4)
		mlAcc = ws.Add(mlAt)
	}
	if fused {
		counters = ws
	}
	partML := ws.Add(pmlAt)
	poll := fused && pollable
	if poll { // tagged partials of their own, and the call's epoch
		var ep uint32
		partO, partML, ep = b.pollParts(int64(nsrows*nchunks*vg*hd), int64(nsrows*nchunks*vg*2))
		b.hInts[hdr+rhEpoch] = int32(ep)
	}
	astride := 0
	if a.Acc != nil {
		astride = b.accHost(a)
	}
	b.flushKV()
	early := tc && cl == 0 && b.earlyReads(a, b.hInts)
	b.hInts[hdr+rhEarly] = flag(early)
	b.reserve(b.metaSpan() + span(int64(len(b.hAcc))*4))
	boxed := b.rtBox()
	var ints, ptrs Ptr
	if boxed {
		ints, ptrs = b.placeMeta()
	} else {
		ints, ptrs = b.putMeta()
	}
	var accDev Ptr
	if a.Acc != nil {
		accDev = b.accDevice(a)
	}
	// A programmatic dependent: its blocks read the call's ints (by value,
	// or uploaded before the kernel ahead of it) while that kernel ends, and
	// wait for it before the page tables, q and the keys.
	args := []any{b.f32(a.Q), ptrs, ints, hdr, int32(chunk), int32(pgw), a.Scale * float32(math.Log2E),
		partO, partML, counters, b.f32(a.Out), raw, mlAcc, wordsByValue(b.box)}
	if cl > 0 { // the cluster merges the row: no partials, no combine
		must(f.LaunchCluster(cl, Dim3{nchunks, gy, gz}, Dim3{attnThreads, 1, 1}, smem, args...))
	} else {
		must(f.LaunchAfter(Dim3{nchunks, gy, gz}, Dim3{attnThreads, 1, 1}, smem, args...))
	}
	b.split.last = Plan{Kernel: name, Chunk: chunk, Blocks: nchunks * nsrows, Rows: nsrows, Resident: resident, SharedMem: smem, ByValue: boxed, Early: early,
		Merge: mergeOf(fused, cl, nchunks, poll), Lists: listsOf(a) != nil, Arith: arithHeads(b.hInts, a.KVHeads)}
	if early {
		b.split.earlyN++
	}
	if comb { // else the kernel merged the row (fused, cluster) or, one chunk a row, wrote the outputs (and ml)
		must(b.fn(p.names.rtComb).LaunchAfter(Dim3{vg, gy, hd / 32 * gz}, Dim3{combThreads, 1, 1}, 0,
			partO, ws.Add(pmlAt), int32(nchunks), b.f32(a.Out), mlAcc, wordsByValue(b.hInts[hdr:hdr+rhWords])))
	}
	if a.Acc == nil {
		return
	}
	must(b.fn("attn_rt_acc").LaunchAfter(Dim3{(stride + 127) / 128, accSlices(a), 1}, Dim3{128, 1, 1}, 0,
		accDev, int32(astride), raw, mlAcc, ints, hdr, int32(a.AccFrom), flag(a.AccGroup)))
	b.accRead(a, accDev, astride)
}

// rtSmem is the dynamic shared memory of a block of attn_rt_d{hd}_g{vg}
// over chunk tokens with pages of at least minPS tokens (attn_rt_row's
// layout): the scores, the chunk's token ids and positions unless the call
// is lean (RH_LEAN), its shifts and the inverse frequencies when keys are
// re-positioned, the key and value page pointers of its range; and at least
// the warps' partial outputs and the fused merge's room.
func rtSmem(vg, hd, chunk, minPS int, shifted, lean bool) int {
	words := vg * chunk
	if !lean {
		words += 2 * chunk
	}
	if shifted {
		words += chunk + hd/2
	}
	return max(4*words+16*(chunk/minPS+2), 4*attnThreads/32*vg*hd, 16*attnThreads)
}

// tcOK says whether the tensor-core kernel of lean calls (attention_tc.cu)
// can serve a split-KV call of shape p: bf16 pages of a power of two tokens,
// no selection, positions or re-positioned keys (accumulation unless
// KVBENCH_ATTN_TC_ACC=off), 1, 2, 4 or 8 virtual heads a split row, sm_80
// or later, and KVBENCH_ATTN_TC not off.
// Whether it does is useTC's (or KVBENCH_ATTN_TC=on: always).
func (b *Backend) tcOK(a *runtime.AttnArgs, p splitShape) bool {
	return b.split.tc != tcOff && p.names.tc != "" && p.lean && p.pow2 && (a.Acc == nil || !b.split.noTCAcc) && b.D.Major >= 8
}

// tcFits says whether the tensor-core kernel name can run a call of vg
// virtual heads of hd channels over pages of at least minPS tokens here:
// its stages (96 KB a block for head dim 128, 48 KB for 64) must fit a
// block's shared memory and, unless KVBENCH_ATTN_TC=on, two blocks must fit
// a multiprocessor, as on the H200 where it was measured (one block, four
// warps, as an A100's 164 KB or sm_86/sm_89's 100 KB would hold for head dim
// 128, has not been measured; neither has head dim 64 on those GPUs, where
// two fit and it serves). It lets name take the opt-in shared
// memory where it fits.
func (b *Backend) tcFits(name string, vg, hd, minPS int) bool {
	f := b.fn(name)
	smem := b.tcSmem(vg, hd, minChunkTokens, minPS)
	if smem > b.D.SharedPerBlockOptin-f.Shared {
		return false
	}
	b.allowShared(name, b.D.SharedPerBlockOptin-f.Shared)
	return b.split.tc == tcOn || b.occupancy(f, smem) >= 2
}

// useTC is the default choice between the tensor-core kernel and attn_rt
// for a lean call of vg virtual heads a split row and rows split rows whose
// longest row holds longest tokens, on a device whose memory is slow or not
// (slowMemory): the tensor-core kernel for groups of 4 or more, for rows of
// one head where there are at most tcFewRows of them, and for groups of 1
// or 2 from tcLongFrom tokens; where the memory is slow, slowTC's choice.
// It chooses for one call (attendSplit); a batch step's lean calls take the
// tensor-core kernel at every length (batchTC).
//
// Measured on the H200 (18.8 bytes a cycle; 2026-12-04, docs/benchmarks.md),
// with the swizzled stages: 32/8 heads of 128 at or under attn_rt at every
// length; 32/16 and 32/32 (2 and 1 heads a row) 2-3 % faster than attn_rt
// from 32K tokens, within 0.5 us from 8K, and up to 0.9 us slower at 1K-4K
// (32/32). On the H100 (12.8 bytes a cycle; 2026-12-05) 32/32 on attn_rt is
// 1.5 us faster at 8K, 2.1 at 16K, 1.2-1.7 at 32K and 0.8-1.0 at 64K, and
// level below 8K: there attn_rt's instructions keep up with the memory.
// 8/8 and 16/16 (8 and 16 rows; H100, 2026-12-06), each kernel with the
// merge fusedFor gives it: on the tensor cores 0.2-1.4 µs faster at
// 512-16K, but for 8 rows of 128 at 1K and 8K-16K and 16 at 512 (0.1-0.6 µs
// slower); attn_rt splits so few rows into many chunks of 32 tokens.
// From 32K tokens the tensor cores are faster on slow memory too (H100,
// 2026-12-06, two rounds against attn_rt, docs/benchmarks.md): 32/32 and
// 32/16, heads of 64 and 128, 0.7-10 µs faster at 32K-128K (32/32 heads of
// 64 at 128K 355 µs against 364-365), level at 16K (then attn_rt's).
// With the pages found by arithmetic (pageArith; H100, 2026-12-07, two to
// four rounds; docs/benchmarks.md), rows of one and two heads are faster on
// the tensor cores where the memory is slow at nearly every length:
// 32/16 by 0.2-1.3 µs from 257 to 16,385 tokens (heads of 128 level at
// 513); 32/32 heads of 64 by 0.3-1.4 µs at 257, 1,025-3,073 and
// 6,145-16,385 (level at 513-769; at 4,097 0.3 slower once, 0.4 faster
// once); 32/32 heads of 128 by 0.2-1.5 µs at 385-897 and 2,049-16,385 but
// slower at 257 (0.3) and 1,025-1,537 (0.1-0.4). So where the memory is
// slow, rows of one or two heads take them at every length (slowTC) but
// rows of one head of 128 outside the tcShort128 bounds. The H200 lost
// with them at 512-1K before the arithmetic, and is untimed with it.
func useTC(vg, rows, longest, hd int, slowMem bool) bool {
	switch {
	case vg >= 4 || vg == 1 && rows <= tcFewRows:
		return true
	case slowMem:
		return slowTC(vg, longest, hd)
	}
	return longest >= tcLongFrom
}

// slowTC is useTC's choice, where the memory is slow, for rows of vg heads
// (under 4) of hd channels: groups of 1 or 2 at every length but rows of
// one head of 128, which take the tensor cores over tcShort128Lo and at
// most tcShort128Hi tokens or over tcShort128From; others (groups of 3)
// from tcSlowLongFrom.
func slowTC(vg, longest, hd int) bool {
	if vg == 1 && hd == 128 {
		return longest > tcShort128Lo && longest <= tcShort128Hi || longest > tcShort128From
	}
	return vg <= 2 || longest >= tcSlowLongFrom
}

// The bounds of slowTC for rows of one head of 128, between the timed rows
// (257 and 385; 897 and 1,025; 1,537 and 2,049 tokens).
const (
	tcShort128Lo   = 320
	tcShort128Hi   = 960
	tcShort128From = 1792
)

// tcLongFrom is the least row from which groups of 1 or 2 heads take the
// tensor-core kernel (useTC).
const tcLongFrom = 8192

// tcSlowLongFrom is tcLongFrom where the memory is slow, for the groups
// slowTC does not send to the tensor cores at every length.
const tcSlowLongFrom = 32768

// tcFewRows is the most split rows of one head that take the tensor-core
// kernel at every length (useTC).
const tcFewRows = 16

// tcMemRate is the memory's bytes a multiprocessor cycle under which it is
// slow for the decode kernels (slowMemory): between the H100's 12.8, where
// attn_rt's instructions keep up with the memory, and the H200's 18.8,
// where they do not; no device in between was measured.
const tcMemRate = 16.0

// slowMemory says whether d's memory gives under tcMemRate bytes a
// multiprocessor cycle (Device.MemBytesPerSMCycle); false where the driver
// did not give the figures (nil d too): the H200's choices, as tuned.
func slowMemory(d *Device) bool {
	if d == nil {
		return false
	}
	r := d.MemBytesPerSMCycle()
	return r > 0 && r < tcMemRate
}

// maxCluster is the most blocks of a cluster (the portable limit).
const maxCluster = 8

// clusterChunk is the chunk and the cluster's blocks (one a chunk) for a
// lean call on the tensor cores whose longest row holds longest tokens,
// chosen chunk being the chunk the chooser (or SetAttnChunk) gave it: the
// _tcc kernel serves where clusters can run (sm_90a), rows of at most
// $KVBENCH_ATTN_CLUSTER tokens, in at most maxCluster chunks (the chosen
// chunk, raised to a multiple of ChunkTokens that makes that few unless
// SetAttnChunk asked for one); 0 blocks where it does not serve. The
// caller also checks that the raised chunk's shared memory fits.
func (b *Backend) clusterChunk(chosen, longest int) (int, int) {
	if b.split.cluster <= 0 || longest > b.split.cluster || b.D.Arch() != "sm_90a" || !b.D.HasClusters() {
		return 0, 0
	}
	c := chosen
	if b.split.chunk == 0 {
		least := (longest + maxCluster - 1) / maxCluster
		c = max(c, (least+minChunkTokens-1)/minChunkTokens*minChunkTokens)
	}
	n := max(1, (longest+c-1)/c)
	if n > maxCluster {
		return 0, 0
	}
	return c, n
}

// tcSlotsFor is the resident blocks a multiprocessor that the chunk of a
// tensor-core launch of vg virtual heads of hd channels a row fills:
// $KVBENCH_ATTN_TC_SLOTS where set, else one for groups of 4 or more heads of
// 128 of one stream on a device whose memory is slow (slowMemory: the
// H100), and two otherwise.
//
// Two measured on the H200 (2026-12-04, docs/benchmarks.md): 32/8 heads of
// 64 (four blocks fit) read 16K-64K tokens 1-9 % faster in chunks of about
// length/32 (two blocks a multiprocessor) than in the chunks that fill all
// four; one for them is 0.5-5 us slower at 4K-128K on the H100 too. One for
// groups of heads of 128 (two fit) measured on the H100 (2026-12-06): 32/8
// and 24/8 0.4-1.4 us faster at 2K, 16K-32K and 128K (24/8 at 64K too),
// level at 4K-8K (rows of 4 heads in 16 chunks merge fused, fusedFor); 16/2
// 0.8-1.3 us faster at 16K-128K; 28/4 0.2-0.7 at 8K-32K and 128K, level at
// 64K, 0.1-0.3 slower at 4K. MHA rows on the tensor cores keep two (one was
// 1.6-2.3 us slower at 32K for 32/32 heads of 128), as do the H200 and a
// batch of streams (untimed; from about 16 streams of 8 KV heads a row is
// one chunk either way).
func (s *splitState) tcSlotsFor(hd, vg int, batched bool) int {
	switch {
	case s.tcSlots >= 0:
		return s.tcSlots
	case hd == 128 && vg >= 4 && s.slowMem && !batched:
		return 1
	}
	return 2
}

// tcSmem is the dynamic shared memory of a block of the _tc kernel over
// chunk tokens with pages of at least minPS tokens: its warps' stages
// (attention_tc.cu: TC_ST tiles of 16 tokens' keys and values each) and the
// key and value page pointers of its range; at least the warps' outputs and
// the fused merge's room.
func (b *Backend) tcSmem(vg, hd, chunk, minPS int) int {
	stages := attnThreads / 32 * b.split.tcStages * 2 * 16 * hd * 2
	return max(stages+16*(chunk/minPS+2), 4*attnThreads/32*vg*hd, 16*attnThreads)
}

// splitChunk is the chunk of a launch of f over rows split rows of up to
// tokensPerRow tokens (smemFor: its shared memory at a chunk, at most limit
// bytes with f's static shared memory): the one
// SetAttnChunk asked for, else the smallest multiple of ChunkTokens, at
// least the floor least (minChunkOf: $KVBENCH_ATTN_MIN_CHUNK, on the
// tensor cores at least tcLeast's too) and at most the row, that fills the GPU's
// resident block slots in one wave ($KVBENCH_ATTN_WAVES waves; slots > 0:
// at most that many a multiprocessor counted),
// lowered until the shared memory fits.
func (b *Backend) splitChunk(f *Function, smemFor func(int) int, limit, rows, tokensPerRow, slots, least int) int {
	limit -= f.Shared
	chunk := b.split.chunk
	if chunk == 0 {
		least = max(least, minChunkTokens)
		chunk = least
		for range 4 {
			res := max(b.occupancy(f, smemFor(chunk)), 1)
			if slots > 0 {
				res = min(res, slots)
			}
			perRow := max(1, b.D.SMs*res*max(b.split.waves, 1)/rows)
			c := (tokensPerRow + perRow - 1) / perRow
			c = max(least, (c+minChunkTokens-1)/minChunkTokens*minChunkTokens)
			if c == chunk {
				break
			}
			chunk = c
		}
		// No longer than the row: a least chunk past it would only take
		// shared memory.
		chunk = min(chunk, max(minChunkTokens, (tokensPerRow+minChunkTokens-1)/minChunkTokens*minChunkTokens))
	}
	for chunk > minChunkTokens && smemFor(chunk) > limit {
		chunk -= minChunkTokens
	}
	return chunk
}
