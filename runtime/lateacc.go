package runtime

// Late AfterAttend: a decode step's H2O and TOVA read the probabilities
// attention accumulated (AttnArgs.Acc) in AfterAttend, and nothing before
// the next step's BeforeAttend of that layer reads what they do with them.
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

// LateHook is a Hook whose AfterAttend of the pass about to attend (asked
// after layer 0's BeforeAttend) may run after the pass's last layer, in
// layer order, on its call's AttnArgs kept aside: it reads only Acc (through
// AccView, with Acc headers of its own for each layer) and its own state,
// and the pass's later layers do not need what it does.
type LateHook interface {
	AfterAttendLate() bool
}

// lateAcc reports whether the pass's AfterAttend runs after its last layer
// (asked once layer 0's calls are built): one row a segment, a backend that
// defers Acc reads, and every segment's hook a LateHook that agrees.
func (p *pass) lateAcc() bool {
	if _, ok := p.be.(AccDeferrer); !ok || len(p.tokens) != len(p.segs) {
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

// keepCalls sets aside every segment's call of layer l (late passes).
func (p *pass) keepCalls(l int) {
	for i := range p.segs {
		r := p.segs[i].r
		if len(r.lateAttn) != p.c.Layers {
			r.lateAttn = make([]AttnArgs, p.c.Layers)
		}
		r.lateAttn[l] = r.attn
	}
}

// lateAfter fills the deferred sums with one wait and runs every
// segment's AfterAttend of every layer, in layer order, on its calls kept
// aside: one spread over the lanes for all the layers (laneWork).
func (p *pass) lateAfter() {
	d := p.be.(AccDeferrer)
	d.DeferAcc(false)
	d.FlushAcc()
	p.lateAll = true
	p.afterAttend(0)
	p.lateAll = false
	for i := range p.segs {
		clear(p.segs[i].r.lateAttn) // no references kept to the step's buffers
	}
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
