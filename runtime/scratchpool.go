package runtime

import "sync"

// scratchPool keeps the scratch of runners' own passes (prefill chunks,
// decode steps alone) for every runner over one upload of a model's weights:
// a runner borrows a state for the length of a Forward or LogProbs call and
// gives it back after, so that the many streams of a cell, which run one
// after another (or as a Batch, which has scratch of its own), hold one
// prefill-sized scratch between them instead of one each (64 streams of an
// 8B model with 2048-row chunks held 27 GB of scratch). Runners that pass at
// the same time get distinct states. On a backend that is a WorkCounter,
// the states made before a ReleaseWork (which freed their buffers) are
// dropped, idle or given back after it.
type scratchPool struct {
	mu      sync.Mutex
	idle    map[int][]*state  // states not lent, by their rows
	release uint64            // the backend's WorkReleases when the idle states were made
	lent    map[*state]uint64 // the backend's WorkReleases when each lent state was made
}

// releases is be's WorkReleases, 0 where it has none.
func releases(be Backend) uint64 {
	if wc, ok := be.(WorkCounter); ok {
		return wc.WorkReleases()
	}
	return 0
}

// take lends a state of rows rows (hbRows of them in the MLP's float32
// scratch, mlpRows), made on be for c when none is idle.
func (p *scratchPool) take(be Backend, c Config, rows, hbRows int) *state {
	now := releases(be)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forget(now)
	var s *state
	if l := p.idle[rows]; len(l) > 0 {
		s = l[len(l)-1]
		p.idle[rows] = l[:len(l)-1]
	} else {
		st := newState(be, c, rows, hbRows)
		s = &st
	}
	if p.lent == nil {
		p.lent = map[*state]uint64{}
	}
	p.lent[s] = now
	return s
}

// give takes back a state that take lent on be; one made before a
// ReleaseWork since is dropped.
func (p *scratchPool) give(be Backend, s *state) {
	now := releases(be)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forget(now)
	made, ok := p.lent[s]
	delete(p.lent, s)
	if !ok || made != now {
		return
	}
	if p.idle == nil {
		p.idle = map[int][]*state{}
	}
	p.idle[s.maxRows] = append(p.idle[s.maxRows], s)
}

// forget drops the idle states when the backend's WorkReleases is no longer
// the one they were made at (p.mu held).
func (p *scratchPool) forget(now uint64) {
	if p.release != now {
		clear(p.idle)
		p.release = now
	}
}

// WorkCounter is an optional WorkReleaser capability: the number of
// ReleaseWork calls so far, so that buffers the runtime keeps from one call
// to the next (the scratch runners share) are known to be gone when it
// changes.
type WorkCounter interface {
	// WorkReleases counts the ReleaseWork calls made so far.
	WorkReleases() uint64
}
