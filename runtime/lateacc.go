package runtime

import (
	"os"
	"slices"
)

// Late AfterAttend: a decode step's H2O and TOVA, and H2O's prompt chunks
// before the last under the dense protocol, read the probabilities
// attention accumulated (AttnArgs.Acc) in AfterAttend, and nothing before
// the next pass's BeforeAttend of that layer reads what they do with them.
// On a backend that reads Acc back from a device, a read a layer drains the
// device's queue once a layer; with every stream's hook agreeing, the pass
// instead asks the backend to defer the reads (AccDeferrer), keeps each
// layer's call (AttnArgs) aside, and after the last layer fills them all
// with one wait and runs the hooks' AfterAttend in layer order.

// AccDeferrer is an optional Backend capability: after DeferAcc(true)
// reports true, and until DeferAcc(false), an attention call with Acc and
// AccView may return before its sums are read back; FlushAcc waits for the
// device once and fills every deferred call's Acc (as AccView allows:
// Acc[h] replaced by the backend's views, valid until the backend's next
// attention call). A deferred call's Acc headers ([heads]) and Seqs must
// stay as they were until FlushAcc; a call the backend cannot defer is
// filled before it returns, as always. DeferAcc(true) reports false where
// the backend does not defer now (a setting).
type AccDeferrer interface {
	DeferAcc(on bool) bool
	FlushAcc()
}

// AccPacer is an optional AccDeferrer capability: a pass's deferred reads
// waited for in parts, so that the late AfterAttend of the first layers
// runs on the host while the device still works on the last ones (the
// step's work is all queued by then). AccMark marks the reads deferred so
// far and returns the mark (marks count up from 0 in a pass; -1: the
// backend does not pace now, FlushAcc alone fills the calls); AccDone
// reports, without waiting, whether the reads before mark m have landed;
// FlushAccTo waits for them only and fills their calls' Acc, as FlushAcc
// does. Marks are taken in a deferring pass and flushed, in order, after
// DeferAcc(false), or while it still defers (a lagging pass: lagHooks);
// FlushAcc fills whatever is left and forgets the marks.
type AccPacer interface {
	AccMark() int
	AccDone(m int) bool
	FlushAccTo(m int)
}

// noLatePrompt reports whether KVBENCH_LATE_PROMPT=off keeps every prompt
// chunk's AfterAttend at its layer (a wait for the sums a layer, as before
// prompt chunks could be late), to compare the two in one build.
func noLatePrompt() bool { return os.Getenv("KVBENCH_LATE_PROMPT") == "off" }

// LateHook is a Hook whose AfterAttend of the pass about to attend (asked
// after layer 0's BeforeAttend) may run after the pass's last layer, in
// layer order, on its call's AttnArgs kept aside: it reads only Acc (through
// AccView, with Acc headers of its own for each layer), its layer's
// sequences (which nothing changes between that layer's attention and the
// pass's end) and its own state, and the pass's later layers do not need
// what it does.
type LateHook interface {
	AfterAttendLate() bool
}

// LagHook is a Hook whose AfterAttend of the prompt chunk about to attend
// (asked after layer 0's BeforeAttend, where the pass is not late) may run
// once its layer's output and MLP are queued, before the next layer's
// BeforeAttend, on its call's AttnArgs kept aside: it reads only Acc
// (AccView, headers of its own for each layer), its layer's sequences and
// its own state, and what it changes (its layer's cache: an eviction) is
// read by nothing before the next layer's BeforeAttend. The host then waits
// for that layer's sums alone while the device runs its MLP, where a hook
// at its layer drains the device first: a prompt's compression, a layer
// at a time, leaves the device less idle.
type LagHook interface {
	AfterAttendLag() bool
}

// noLagHooks reports whether KVBENCH_LAG_HOOKS=off keeps every prompt
// chunk's hooks at their layer (the host waits for each layer's sums with
// the device drained), to compare the two in one build.
func noLagHooks() bool { return os.Getenv("KVBENCH_LAG_HOOKS") == "off" }

// lagAcc reports whether the pass's hooks lag a layer's MLP (asked once
// layer 0's calls are built, where the pass is not late): a prompt's chunk
// (rows past one a segment), a backend that defers Acc reads and paces
// them, and every segment's hook a LagHook that agrees.
func (p *pass) lagAcc() bool {
	_, defers := p.be.(AccDeferrer)
	_, paces := p.be.(AccPacer)
	if !defers || !paces || len(p.tokens) == len(p.segs) || noLagHooks() {
		return false
	}
	for i := range p.segs {
		lh, ok := p.segs[i].r.Hook.(LagHook)
		if !ok || !lh.AfterAttendLag() {
			return false
		}
	}
	return true
}

// lagHooks waits for layer l's deferred sums alone (its mark; all the
// reads so far where the backend did not mark it) and runs every
// segment's AfterAttend of layer l on its call kept aside.
func (p *pass) lagHooks(l int) {
	if m := p.accMarks[l]; m >= 0 {
		p.be.(AccPacer).FlushAccTo(m)
	} else {
		p.be.(AccDeferrer).FlushAcc() // the reads so far: this layer's
	}
	p.lateAll = true
	p.lateHooks(l, l+1)
	p.lateAll = false
	for i := range p.segs {
		p.segs[i].r.lateAttn[l] = AttnArgs{} // no references kept to the pass's buffers
	}
}

// lagEnd ends a lagging pass: deferring off, the marks forgotten (every
// layer's sums were filled by its lagHooks).
func (p *pass) lagEnd() {
	d := p.be.(AccDeferrer)
	d.DeferAcc(false)
	d.FlushAcc()
	p.accMarks = nil
}

// lateAcc reports whether the pass's AfterAttend runs after its last layer
// (asked once layer 0's calls are built): a backend that defers Acc reads,
// and every segment's hook a LateHook that agrees; a prompt's chunk (rows
// past one a segment) only without KVBENCH_LATE_PROMPT=off.
func (p *pass) lateAcc() bool {
	if _, ok := p.be.(AccDeferrer); !ok || (len(p.tokens) != len(p.segs) && noLatePrompt()) {
		return false
	}
	for i := range p.segs {
		lh, ok := p.segs[i].r.Hook.(LateHook)
		if !ok || !lh.AfterAttendLate() {
			return false
		}
	}
	return true
}

// keepCalls sets aside every segment's call of layer l (late passes) and
// marks the layer's deferred reads where the backend paces them (AccPacer).
func (p *pass) keepCalls(l int) {
	for i := range p.segs {
		r := p.segs[i].r
		if len(r.lateAttn) != p.c.Layers {
			r.lateAttn = make([]AttnArgs, p.c.Layers)
		}
		r.lateAttn[l] = r.attn
	}
	if pc, ok := p.be.(AccPacer); ok {
		if l == 0 {
			p.accMarks = make([]int, 0, p.c.Layers)
		}
		p.accMarks = append(p.accMarks, pc.AccMark())
	}
}

// lateRoundPart names the KVBENCH_PHASES part that counts the rounds of
// n layers (the filling of their sums is its time).
func lateRoundPart(n int) string {
	switch {
	case n == 1:
		return "late hooks: rounds of 1 layer (sums filled)"
	case n <= 4:
		return "late hooks: rounds of 2-4 layers (sums filled)"
	default:
		return "late hooks: rounds of 5+ layers (sums filled)"
	}
}

// lateAfter fills the deferred sums and runs every segment's AfterAttend
// of every layer, in layer order, on its calls kept aside. Where the
// backend paces the reads (every layer marked), it waits for the first
// layer's, then takes every layer whose reads have landed by then, and so
// on: each round one spread over the lanes (laneWork) while the device
// works on the later layers. Else one wait, one spread for all the layers.
func (p *pass) lateAfter() {
	d := p.be.(AccDeferrer)
	d.DeferAcc(false)
	p.lateAll = true
	if pc, ok := p.be.(AccPacer); ok && p.paced() {
		p.lateRounds(pc)
		d.FlushAcc() // nothing is left to wait for; the marks are forgotten
	} else {
		d.FlushAcc()
		p.lateHooks(0, p.c.Layers)
	}
	p.lateAll = false
	p.accMarks = nil
	for i := range p.segs {
		clear(p.segs[i].r.lateAttn) // no references kept to the step's buffers
	}
}

// lateRounds runs the late hooks round by round: it waits for the first
// layer whose sums are not in yet, takes every later one whose sums have
// landed too, and runs their hooks.
func (p *pass) lateRounds(pc AccPacer) {
	L := p.c.Layers
	parts := StartParts() // KVBENCH_PHASES: the rounds' waits and their hooks
	for lo := 0; lo < L; {
		pc.FlushAccTo(p.accMarks[lo])
		parts.Mark("late hooks: waiting for the next layer's sums")
		hi := lo + 1
		for hi < L && pc.AccDone(p.accMarks[hi]) {
			hi++
		}
		if hi-1 > lo {
			pc.FlushAccTo(p.accMarks[hi-1]) // landed: no wait
		}
		parts.Mark(lateRoundPart(hi - lo))
		p.lateHooks(lo, hi)
		parts.Mark("late hooks: a round's hooks (lanes)")
		lo = hi
	}
}

// lateHooks runs every segment's AfterAttend of layers lo..hi-1, in order,
// on the calls kept aside: one spread over the lanes (laneWork).
func (p *pass) lateHooks(lo, hi int) {
	p.lateLo, p.lateHi = lo, hi
	p.afterAttend(lo)
}

// paced reports whether the backend marked every layer's deferred reads
// (AccPacer) in this late pass.
func (p *pass) paced() bool {
	return len(p.accMarks) == p.c.Layers && !slices.Contains(p.accMarks, -1)
}

// AccGrouper is an optional Backend capability: it takes AttnArgs.AccGroup
// (a KV head's group of sums added up where they are made: a device then
// reads back a group's fraction of the bytes). AccGroups reports whether
// it does now (a setting may turn it off).
type AccGrouper interface {
	AccGroups() bool
}

// GroupSums reports whether be takes AttnArgs.AccGroup.
func GroupSums(be Backend) bool {
	g, ok := be.(AccGrouper)
	return ok && g.AccGroups()
}
