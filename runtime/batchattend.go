package runtime

// BatchAttender is an optional Backend capability: the attention calls of
// several streams (a Batch's step: each call over its own stream's cache,
// with its own policy's options) made together, in as few device launches as
// their shapes allow, instead of one Attend each. A backend without it gets
// one Attend per call.
type BatchAttender interface {
	// AttendBatch has the effect of Attend on each call in turn (each
	// call's outputs to the rounding of the backend's attention kernels;
	// accumulated probabilities and recall as Attend gives them). The
	// calls' Out buffers do not overlap, nor any call's Out another's Q.
	AttendBatch(calls []*AttnArgs)
}

// attend runs the attention of layer l of every segment of the pass: on a
// BatchAttender, the segments whose runner times its attention (OnAttend)
// alone, as a runner alone does, and every other segment in one
// AttendBatch; otherwise one Attend per segment.
func (p *pass) attend(l int) {
	ba, ok := p.be.(BatchAttender)
	if !ok || len(p.segs) < 2 {
		for i := range p.segs {
			p.segs[i].attend(l)
		}
		return
	}
	calls := p.s.calls[:0]
	for i := range p.segs {
		g := &p.segs[i]
		if g.r.OnAttend != nil {
			g.attend(l)
			continue
		}
		calls = append(calls, &g.r.attn)
	}
	p.s.calls = calls
	if len(calls) > 0 {
		ba.AttendBatch(calls)
	}
}
