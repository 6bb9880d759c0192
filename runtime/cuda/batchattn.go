package cuda

import (
	"cmp"
	"math"
	goruntime "runtime"
	"slices"

	"github.com/kvbench/kvbench/internal/crew"
	"github.com/kvbench/kvbench/runtime"
)

// AttendBatch (runtime.BatchAttender) is Attend over the calls of a batch's
// streams, each over its own cache and under its own policy, with as few
// launches as the calls' shapes allow: the calls that the split-KV kernels
// take without a download of their own (no recall, accumulated
// probabilities only zeroed ones, page lists in the device tables, not a
// prompt chunk for the tensor-core prefill; a selection made on the device
// is read where its kernel left it, RH_SEL) have their metadata built one
// after another into one array, sent by value where it fits (rtbBox) or
// uploaded in one copy, and run as one grid
// of every call's split rows per kernel (attn_rtb_*, then attn_rtb_combine
// or the fused merge; one launch for the usual batch, whose streams share
// the policy); the KV copies the streams queued go in one be_kv_ops before
// it. The calls with accumulated probabilities that the split-KV kernels
// take run through Attend with their reads waited for once (attendAcc).
// Every other call runs through Attend, in the calls' order. Each
// call's outputs are those Attend gives it to the rounding of a different
// chunk of tokens per block (the chunk is chosen for the whole grid).
//
// KVBENCH_BATCH_ATTN=off runs every call through Attend (for comparison).
func (b *Backend) AttendBatch(calls []*runtime.AttnArgs) {
	pc := runtime.StartParts() // KVBENCH_PHASES: the parts below, timed
	b.flushQuest()             // the streams' Quest bounds and choices, queued by their hooks, as one launch each
	bt := &b.bt
	bt.calls, bt.acc = bt.calls[:0], bt.acc[:0]
	off := b.batchOff
	for _, a := range calls {
		switch {
		case !off && b.batchable(a):
			bt.calls = append(bt.calls, batchCall{a: a})
		case !off && b.accDeferred(a):
			bt.acc = append(bt.acc, a)
		default:
			b.Attend(a)
		}
	}
	if len(bt.acc) > 1 {
		b.attendAcc(bt.acc)
	} else if len(bt.acc) == 1 {
		b.Attend(bt.acc[0])
	}
	if len(bt.calls) < 2 {
		for i := range bt.calls {
			b.Attend(bt.calls[i].a)
		}
		return
	}
	pc.Mark("attention: calls sorted, Quest's work flushed")
	b.pt.hold = true                     // the page tables' uploads of every call at once, below
	defer func() { b.pt.hold = false }() // at the end, also when a call's metadata panics (a cell's failure)
	bt.oneRope = true
	b.checkTables(bt)
	pc.Mark("attention: tables checked")
	for i := range bt.calls { // the page tables first, one call after another
		c := &bt.calls[i]
		if !c.current {
			b.callPages(c.a.Seqs, nil)
			if !b.pt.call {
				panic("cuda: AttendBatch: a call's page lists are not in the device tables")
			}
			b.pt.call = false // no putMeta: the batch uploads every call's ints at once
			c.kvt = b.pageType()
		}
		c.a = b.listCall(c.a) // Quest's call over its page lists (questlists.go), its tables current
		if c.a.QShift != nil && c.a.InvFreq == nil {
			b.thetaFreqs(c.a.Theta, c.a.HeadDim) // its cache filled before the calls read it side by side
			bt.oneRope = bt.oneRope && b.rope.theta == bt.calls[0].a.Theta && b.rope.hd == bt.calls[0].a.HeadDim
		}
	}
	pc.Mark("attention: tables refreshed")
	parts := b.batchMeta(bt)
	pc.Mark("attention: metadata built")
	if b.onBatchMeta != nil {
		bases := make([]int32, 0, 2*len(bt.calls))
		for i := range bt.calls {
			bases = append(bases, bt.calls[i].base, bt.calls[i].hdr)
		}
		b.onBatchMeta(bt.ints, bases, parts)
	}
	b.sendRuns()
	nacc := b.accPlan(bt) // before the upload: it may grow accWork, which waits
	b.batchTC(bt)
	// Launches: the calls of one kernel and scale together.
	bt.order = bt.order[:0]
	for i := range bt.calls {
		bt.order = append(bt.order, i)
	}
	slices.SortStableFunc(bt.order, func(i, j int) int {
		ci, cj := &bt.calls[i], &bt.calls[j]
		if c := cmp.Compare(ci.kernel, cj.kernel); c != 0 {
			return c
		}
		return cmp.Compare(ci.a.Scale, cj.a.Scale)
	})
	bt.launches = bt.launches[:0]
	bt.tab = bt.tab[:0]
	var needO, needML int64
	for lo := 0; lo < len(bt.order); {
		first := &bt.calls[bt.order[lo]]
		hi := lo + 1
		for hi < len(bt.order) {
			c := &bt.calls[bt.order[hi]]
			if c.kernel != first.kernel || c.a.Scale != first.a.Scale {
				break
			}
			hi++
		}
		l := b.planLaunch(lo, hi)
		needO = max(needO, l.bytesO)
		needML = max(needML, l.bytesML)
		bt.launches = append(bt.launches, l)
		lo = hi
	}
	// Workspaces before the upload (growing one waits for the device, which
	// restarts the staging arena): partials in b.part; in b.ml the fused
	// merge's counters, then the partials' maxima and sums.
	partO := b.grow(&b.part, needO)
	pmlAt := span(ctrWords * 4)
	oldP, oldN := b.ml.p, b.ml.bytes
	ws := b.grow(&b.ml, pmlAt+needML)
	if ws != oldP || b.ml.bytes != oldN {
		b.launch("be_zero", Dim3{ctrWords / 256, 1, 1}, Dim3{256, 1, 1}, ws, int64(ctrWords))
	}
	pc.Mark("attention: launches planned, workspaces")
	b.flushKV()
	pc.Mark("attention: KV copies flushed")
	var p [putMax]Ptr
	var tab, ints Ptr // uploaded, or none where the box holds them
	box := b.rtbBox(bt, nacc)
	boxed := box[0] > 0
	if !boxed {
		b.reserve(span(int64(len(bt.ints))*4) + span(int64(len(bt.tab))*8) + span(int64(len(bt.acct))*8))
		p = b.putCarried(raw(bt.tab), raw(bt.acct), raw(bt.ints))
		tab, ints = p[0], p[2]
	}
	pc.Mark("attention: metadata uploaded")
	if nacc > 0 { // the sums start at 0 (AccZero)
		n := bt.accBytes / 4
		b.launch("be_zero", Dim3{blocks(n), 1, 1}, Dim3{256, 1, 1}, bt.accDev, n)
	}
	bv := wordsByValue(box)
	for _, l := range bt.launches {
		lt := Ptr(0)
		if !boxed {
			lt = tab.Add(int64(l.first) * rtbWords * 8)
		}
		kernel, comb := l.kernel, l.comb
		if len(box) != len(b.bbox) { // the larger box (rtbBox gives it to one launch alone)
			kernel, comb = l.kernelX, l.combX
		}
		gy, gz := min(l.nsg, maxGridY), (l.nsg+maxGridY-1)/maxGridY
		var counters Ptr
		if l.fused {
			counters = ws
		}
		b.launchSmem(kernel, Dim3{l.nchunks, gy, gz}, Dim3{attnThreads, 1, 1}, l.smem,
			lt, int32(l.calls), int32(l.nsg), b.pt.pool, ints, int32(l.chunk), int32(l.pgw), l.scale*float32(math.Log2E),
			partO, ws.Add(pmlAt), counters, bv)
		b.split.last = Plan{Kernel: kernel, Chunk: l.chunk, Blocks: l.nchunks * l.nsg, Rows: l.nsg, Resident: b.occupancy(b.fn(l.kernel), l.smem),
			SharedMem: l.smem, ByValue: boxed, Merge: mergeOf(l.fused, 0, l.nchunks, false), Lists: l.lists, Arith: bt.arith()}
		if !l.fused && l.nchunks > 1 { // one chunk a row: the kernel wrote the outputs
			must(b.fn(comb).LaunchAfter(Dim3{l.vg, gy, l.hd / 32 * gz}, Dim3{combThreads, 1, 1}, 0,
				partO, ws.Add(pmlAt), int32(l.nchunks), lt, int32(l.calls), int32(l.nsg), ints, bv))
		}
	}
	pc.Mark("attention: kernels launched")
	if nacc > 0 {
		b.accFinish(bt, nacc, p[1], ints)
		pc.Mark("attention: sums read and handed out")
	}
}

// rtbBox fills b.bbox (RtbBox in attention_rtb.cu) with the batch's table and
// ints where they can go to its kernels by value: one launch (its combine
// gets the same box), no accumulated probabilities (whose kernels read the
// ints after it), and the table and ints together at most rtbBoxWords (a
// device selection is read where its kernel left it: RH_SEL).
// Where they are too long for it, the launch takes the larger box (b.xbox,
// RtbXBox) if there is one and they fit it. It returns the box the
// launch passes: n = 0 (b.bbox) where none holds them and the kernels read
// the uploaded ones. A batch's upload cost 6-9 µs of a step's device time
// on the H100 (2x16/2 heads at 1K-4K tokens: 25.6-28.3 µs a step against
// 17.0-19.8 at best).
func (b *Backend) rtbBox(bt *batchAttn, nacc int) []int32 {
	tabWords := 2 * len(bt.tab)
	n := tabWords + len(bt.ints)
	b.bbox[0] = 0
	if b.noBox || len(bt.launches) != 1 || nacc > 0 {
		return b.bbox
	}
	box := b.bbox
	if n > len(box)-2 {
		if n > len(b.xbox)-2 {
			return b.bbox
		}
		box = b.xbox
	}
	box[0] = int32(n)
	copy(raw(box[2:2+tabWords]), raw(bt.tab))
	copy(box[2+tabWords:], bt.ints)
	return box
}

// putCarried is putBytes for a batch's metadata: the bytes laid out in
// the arena as putBytes lays them, and written there by up to
// b.putLaunches launches of attn_rtb_put, each carrying a box of their
// words and starting beside the kernel ahead of it, where that is enough;
// else sent by one copy, as putBytes does. A copy on the stream cost a
// batch step 6-9 µs of device time on the H100 (docs/benchmarks.md). The
// parts are int32 and uint64 slices: whole words.
func (b *Backend) putCarried(parts ...[]byte) [putMax]Ptr {
	out, off, last := b.stageBytes(parts...)
	per := int64(len(b.pbox) - 2)
	words := last / 4
	if last <= 0 {
		return out
	}
	if (words+per-1)/per > int64(b.putLaunches) {
		must(b.D.CopyHtoDAsync(b.st.dev.Add(off), b.st.host, off, last))
		return out
	}
	h := b.st.host.Bytes()[off : off+last]
	for lo := int64(0); lo < words; lo += per {
		n := min(per, words-lo)
		b.pbox[0] = int32(n)
		copy(raw(b.pbox[2:2+n]), h[lo*4:(lo+n)*4])
		b.launchAfter("attn_rtb_put", Dim3{1, 1, 1}, Dim3{256, 1, 1}, b.st.dev.Add(off+lo*4), wordsByValue(b.pbox))
	}
	return out
}

var _ runtime.BatchAttender = (*Backend)(nil)

// batchAttnEnv names the variable that turns the batched launches off.
const batchAttnEnv = "KVBENCH_BATCH_ATTN"

// rtbWords is the 8-byte words of a call's entry in a batched launch's
// table (RtbCall in attention_rtb.cu: first split row and ints offset, header
// offset, queries, outputs, raw scores, maxima and sums).
const rtbWords = 6

// batchAttn is AttendBatch's building space on the host.
type batchAttn struct {
	calls    []batchCall
	order    []int // calls by launch
	ints     []int32
	tab      []uint64
	launches []batchLaunch
	parts    []metaPart
	acc      []*runtime.AttnArgs // calls with Acc that do not batch (attendAcc)
	oneRope  bool                // the re-positioned calls share one theta and head dim (thetaFreqs' cache)
	// The batched calls with Acc (accPlan): attn_rtb_acc's table, their
	// sums' device region, the longest token list and the most heads.
	acct                 []uint64
	accDev               Ptr
	accBytes             int64
	accLongest, accHeads int
}

// metaPart is one goroutine's share of batchMeta: the ints of its calls,
// and a call's ints while they are built.
type metaPart struct {
	ints, h []int32
	panic   any // a panic of its goroutine, raised again by the caller
}

// metaCallsPerPart is the fewest calls worth a goroutine of batchMeta
// (tests change it), and metaMinProcs the fewest threads: on 2 cores the
// goroutines' wake-ups cost more than they save (1B, 64 streams: 4.3 ->
// 4.8-5.1 ms a step, docs/benchmarks.md).
var metaCallsPerPart, metaMinProcs = 32, 4

// metaCallsEnv sets Backend.metaCalls: batchMeta's and checkTables's
// fewest calls a part, in place of metaCallsPerPart.
const metaCallsEnv = "KVBENCH_META_CALLS"

// metaPer is the fewest calls a part of batchMeta and checkTables.
func (b *Backend) metaPer() int {
	if b.metaCalls > 0 {
		return b.metaCalls
	}
	return metaCallsPerPart
}

// partsFor is how many goroutines share work on n calls, at least perPart
// a goroutine: one with KVBENCH_LANES=off or fewer than metaMinProcs
// threads, at most 16.
func (b *Backend) partsFor(n, perPart int) int {
	if procs := goruntime.GOMAXPROCS(0); !b.noLanes && procs >= metaMinProcs {
		return max(1, min(procs, 16, n/perPart))
	}
	return 1
}

// checkTables marks the calls whose every KV sequence's device page table
// holds its lists as they are (callPages would stage nothing: the lists'
// generation and lengths are the table's), with their page type: the
// calls split into parts checked side by side, as batchMeta builds them.
// A decode step adds a page to a sequence once in PageSize tokens, so most
// calls need no refresh, and the check's reads (a cache miss or two a
// sequence, 8,192 sequences a 1B step) leave the serial loop. The tables
// are only read, but for each one's clock of use (each table belongs to one
// call) and each sequence's Slot.
func (b *Backend) checkTables(bt *batchAttn) {
	n := len(bt.calls)
	clock0 := b.pt.clock
	b.pt.clock += uint64(n)
	for i := range bt.calls {
		bt.calls[i].current = false
	}
	if b.pt.off || b.pt.seqs == nil || !tableChecks {
		return
	}
	inParts(b.partsFor(n, b.metaPer()), n, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			c := &bt.calls[i]
			c.kvt, c.current = b.tablesCurrent(c.a.Seqs, clock0+uint64(i)+1)
		}
	})
}

// tableChecks enables checkTables (tests turn it off to compare).
var tableChecks = true

// tablesCurrent reports whether every sequence of seqs has a device table
// holding its lists as they are, all of one page type kvt, marking the
// tables it finds used at clock; false where any has no ID, no table, an
// older generation, other lengths or no pages (callPages then refreshes
// them, or says what is wrong: the marks it left are callPages's own).
func (b *Backend) tablesCurrent(seqs []runtime.KVSeq, clock uint64) (kvt int32, ok bool) {
	kvt = -1
	for i := range seqs {
		s := &seqs[i]
		if s.ID == 0 {
			return -1, false
		}
		t := b.table(s)
		if t == nil || t.gen != s.Gen || len(t.k) != len(s.K) || len(t.v) != len(s.V) || t.kvt < 0 || (kvt >= 0 && t.kvt != kvt) {
			return -1, false
		}
		t.used, s.Slot, kvt = clock, t.slot, t.kvt
	}
	return kvt, true
}

// inParts runs f(k, lo, hi) over parts consecutive ranges of [0, n), part
// k on a goroutine of the crew (part 0 on the caller's), and waits for them.
func inParts(parts, n int, f func(k, lo, hi int)) {
	per := (n + parts - 1) / parts
	crew.Run(parts, func(k int) { f(k, min(n, k*per), min(n, (k+1)*per)) })
}

// batchMeta builds every call's ints (describe, splitHeader) into bt.ints,
// each call at its base: the calls split into parts built side by side on
// goroutines (the backend's lanes; one part with KVBENCH_LANES=off or few
// calls), then joined in the calls' order; it returns the parts. The page
// tables are up to date (callPages of every call): describe only reads the
// backend.
func (b *Backend) batchMeta(bt *batchAttn) int {
	n := len(bt.calls)
	parts := 1
	if bt.oneRope {
		parts = b.partsFor(n, b.metaPer())
	}
	for len(bt.parts) < parts {
		bt.parts = append(bt.parts, metaPart{})
	}
	build := func(k, lo, hi int) {
		pt := &bt.parts[k]
		defer func() {
			if r := recover(); r != nil {
				pt.panic = r
			}
		}()
		pt.ints = pt.ints[:0]
		for i := lo; i < hi; i++ {
			c := &bt.calls[i]
			m := b.describe(&pt.h, c.a, true)
			c.arith = arithHeads(pt.h, c.a.KVHeads)
			splitHeader(c, pt.h, m, b.split.noLo)
			selAt(pt.h[m.hdr:], m.sel) // its device selection read where it lies (rt_sel)
			c.base, c.part = int32(len(pt.ints)), k
			pt.ints = append(pt.ints, pt.h...)
		}
	}
	inParts(parts, n, build)
	for k := range parts {
		if r := bt.parts[k].panic; r != nil {
			for j := range parts {
				bt.parts[j].panic = nil
			}
			panic(r)
		}
	}
	bt.ints = bt.ints[:0]
	starts := [16]int32{}
	for k := range parts {
		starts[k] = int32(len(bt.ints))
		bt.ints = append(bt.ints, bt.parts[k].ints...)
	}
	for i := range bt.calls {
		bt.calls[i].base += starts[bt.calls[i].part]
	}
	return parts
}

// batchCall is one call of a batch: its ints at base in the batch's ints,
// its header at hdr in them, and its split-KV shape.
type batchCall struct {
	a         *runtime.AttnArgs
	base, hdr int32
	kernel    string // attn_rtb_d{D}_g{G}_{bf16,f32}[_sh], or _bf16_tc
	tcb       string // the tensor-core kernel that could serve it (lean, bf16 pages of a power of two), or ""
	tc        bool   // kernel is tcb
	comb      string // its combine, attn_rtb_combine_d{D}
	kernelX   string // kernel, tcb and comb taking the larger box (RtbXBox)
	tcbX      string
	combX     string
	vg, srows int // virtual heads per split row, split rows
	longest   int // the longest token list of a split row
	arith     int // KV heads whose pages are found by their stride (arithHeads)
	minPS     int // the smallest page of its KV heads
	shifted   bool
	lean      bool // no selection, no positions (RH_LEAN)
	hd        int
	kvt       int32 // its pages' type
	current   bool  // its page tables held its lists already (checkTables)
	part      int   // the part of batchMeta that built its ints
	// With Acc (accPlan): where its raw scores and (row, head) maxima and
	// sums go, its sums' offset in the read and their stride a head.
	raw, ml Ptr
	accOff  int64
	astride int
}

// batchLaunch is one grid of a batch: calls calls (order[first:] of the
// batch, entries first.. of its table) of one kernel.
type batchLaunch struct {
	kernel, comb        string
	kernelX, combX      string // the same taking the larger box (RtbXBox)
	first, calls, nsg   int
	hd, vg              int
	chunk, nchunks, pgw int
	smem                int
	fused               bool
	lists               bool // some call runs over Quest's page lists (Plan.Lists)
	scale               float32
	bytesO, bytesML     int64
}

// batchable says whether AttendBatch runs a in a batched launch.
func (b *Backend) batchable(a *runtime.AttnArgs) bool {
	if a.Rows == 0 || a.KVHeads <= 0 || a.Heads%a.KVHeads != 0 || len(a.Seqs) != a.KVHeads || b.pt.off {
		return false
	}
	if !splitOK(a, false) || (a.Acc != nil && !a.AccZero) || a.Recall != nil || b.flashOK(a) {
		return false
	}
	if !b.noAccTail && accTail(a) > 0 { // Attend runs its rows before AccFrom apart
		return false
	}
	if b.accColsOK(a) { // Attend runs it on the tensor cores
		return false
	}
	for i := range a.Seqs {
		if a.Seqs[i].ID == 0 {
			return false
		}
	}
	return true
}

// splitHeader is attendSplit's shape of call c (its ints h, laid out as m
// says): the split rows, the longest token list, the kernel, and the header
// written into h (noLo: RH_NOLO).
func splitHeader(c *batchCall, h []int32, m attnLayout, noLo bool) {
	a := c.a
	group := a.Heads / a.KVHeads
	p := splitShapeOf(a, h, m.headOff, c.kvt)
	c.kernel, c.comb, c.tcb, c.tc = p.names.rtb, p.names.rtbComb, "", false
	c.kernelX, c.tcbX, c.combX = p.names.rtbX, "", p.names.rtbCombX
	if p.names.tcb != "" && p.lean && p.pow2 {
		c.tcb, c.tcbX = p.names.tcb, p.names.tcbX
	}
	c.vg, c.srows, c.longest, c.minPS, c.shifted, c.lean, c.hd = p.vg, p.srows, p.longest, p.minPS, p.shifted, p.lean, a.HeadDim
	copy(h[m.hdr:], []int32{rhRows: int32(a.Rows), rhHeads: int32(a.Heads), rhG: int32(group), rhGH: int32(p.gh),
		rhRT: int32(p.rt), rhTiles: int32(p.tiles), rhWin: int32(max(a.Window, 0)), rhRowOff: m.rowOff, rhHeadOff: m.headOff,
		rhInvOff: m.invOff, rhStride: int32(max(p.longest, 1)), rhInter: flag(a.Rope == runtime.RopeInterleaved), rhSRows: int32(c.srows), rhLean: flag(p.lean), rhGR: int32(p.gr),
		rhNoLo: flag(noLo), rhTrace: 0, rhTrace + 1: 0}) // no trace: a batch's kernels write none
	c.hdr = m.hdr
}

// batchTC moves the calls the batched tensor-core kernel serves to it
// (attn_rtb_*_tc: lean calls over bf16 pages of a power of two tokens, with
// Acc unless KVBENCH_ATTN_TC_ACC=off, as tcOK), every one of them where it
// fits (tcFits): unlike one call's rows (useTC), a batch's rows of one or
// two heads are many, and attn_rtb spread over them ran 1.5-3.8x slower
// than the tensor-core kernel (H100, 2026-12-06: 8x32/32 heads of 128 at
// 2K 272.7 µs against 97.1, 2x at 2K 57.3 against 30.6, 8x32/16 at 4K
// 161.8 against 100.8, 8x32/32 heads of 64 at 8K 523.6 against 181.1;
// docs/benchmarks.md), where groups of 4 or more heads take it already.
func (b *Backend) batchTC(bt *batchAttn) {
	if b.split.tc == tcOff || b.D.Major < 8 {
		return
	}
	type shape struct {
		name  string
		minPS int
	}
	fits := map[shape]bool{}
	for i := range bt.calls {
		c := &bt.calls[i]
		if c.tcb == "" || c.a.Acc != nil && b.split.noTCAcc {
			continue
		}
		k := shape{c.tcb, c.minPS}
		ok, seen := fits[k]
		if !seen {
			ok = b.tcFits(c.tcb, c.vg, c.hd, c.minPS)
			fits[k] = ok
		}
		if ok {
			c.kernel, c.kernelX, c.tc = c.tcb, c.tcbX, true
		}
		if ok && !seen && b.xbox != nil { // its form with the larger box too
			b.allowShared(c.tcbX, b.D.SharedPerBlockOptin-b.fn(c.tcbX).Shared)
		}
	}
}

// planLaunch sizes the grid of the calls order[lo:hi] of the batch (one
// kernel) and appends their table entries.
func (b *Backend) planLaunch(lo, hi int) batchLaunch {
	bt := &b.bt
	c0 := &bt.calls[bt.order[lo]]
	l := batchLaunch{kernel: c0.kernel, comb: c0.comb, kernelX: c0.kernelX, combX: c0.combX, first: len(bt.tab) / rtbWords, calls: hi - lo,
		hd: c0.hd, vg: c0.vg, scale: c0.a.Scale}
	longest, minPS, lean := 0, math.MaxInt, true
	for _, i := range bt.order[lo:hi] {
		c := &bt.calls[i]
		bt.tab = append(bt.tab, uint64(uint32(l.nsg))|uint64(uint32(c.base))<<32, uint64(uint32(c.hdr)),
			uint64(b.f32(c.a.Q)), uint64(b.f32(c.a.Out)), uint64(c.raw), uint64(c.ml))
		l.nsg += c.srows
		l.lists = l.lists || listsOf(c.a) != nil
		longest, minPS, lean = max(longest, c.longest), min(minPS, c.minPS), lean && c.lean
	}
	// A lean call stages less than the others: the grid's blocks have room
	// for the others' (lean only when every call is).
	vg, hd, shifted := l.vg, l.hd, c0.shifted
	smemFor := func(chunk int) int { return rtSmem(vg, hd, chunk, minPS, shifted, lean) }
	limit, slots, least := maxAttnSmemB, 0, b.split.minChunk
	if c0.tc { // batchTC has let it take the opt-in shared memory
		smemFor = func(chunk int) int { return b.tcSmem(vg, hd, chunk, minPS) }
		limit, slots, least = b.D.SharedPerBlockOptin, b.split.tcSlotsFor(hd, vg, true), max(least, b.split.tcLeast(hd, l.nsg, longest, b.D.SMs))
	}
	l.chunk = b.splitChunk(b.fn(l.kernel), smemFor, limit, l.nsg, longest, slots, least)
	l.smem, l.nchunks = smemFor(l.chunk), max(1, (longest+l.chunk-1)/l.chunk)
	l.pgw = l.chunk/minPS + 2
	ngroups := (l.nchunks + mergeGroup - 1) / mergeGroup
	l.fused = fusedFor(b.split.combine, vg, l.nsg, l.nchunks, c0.tc) && l.nsg*(ngroups+1) <= ctrWords
	parts := l.nchunks
	if l.fused {
		parts += ngroups
	}
	l.bytesO = int64(l.nsg*parts*vg*hd) * 4
	l.bytesML = int64(l.nsg*parts*vg*2) * 4
	return l
}

// WorkReleases is the number of ReleaseWork calls so far
// (runtime.WorkCounter): memory the runtime keeps across calls (the
// runners' shared scratch) is invalid once it changes.
func (b *Backend) WorkReleases() uint64 { return b.releases }

var _ runtime.WorkCounter = (*Backend)(nil)

// arith is the KV heads of the batch's calls whose pages are found by
// their stride (Plan.Arith).
func (bt *batchAttn) arith() int {
	n := 0
	for i := range bt.calls {
		n += bt.calls[i].arith
	}
	return n
}
