package runtime

import "sync"

// scratchPool keeps the scratch of runners' own passes (prefill chunks,
// decode steps alone) for every runner over one upload of a model's weights:
// a runner borrows a state for the length of a Forward or LogProbs call and
// gives it back after, so that the many streams of a cell, which run one
// after another (or as a Batch, which has scratch of its own), hold one
// prefill-sized scratch between them instead of one each (64 streams of an
// 8B model with 2048-row chunks held 27 GB of scratch). Runners that pass at
// the same time get distinct states.
type scratchPool struct {
	mu   sync.Mutex
	idle map[int][]*state // states not lent, by their rows
}

// take lends a state of rows rows, made on be for c when none is idle.
func (p *scratchPool) take(be Backend, c Config, rows int) *state {
	p.mu.Lock()
	if l := p.idle[rows]; len(l) > 0 {
		s := l[len(l)-1]
		p.idle[rows] = l[:len(l)-1]
		p.mu.Unlock()
		return s
	}
	p.mu.Unlock()
	s := newState(be, c, rows)
	return &s
}

// give takes back a state that take lent.
func (p *scratchPool) give(s *state) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.idle == nil {
		p.idle = map[int][]*state{}
	}
	p.idle[s.maxRows] = append(p.idle[s.maxRows], s)
}

// states is the number of states the pool holds idle (for tests).
func (p *scratchPool) states() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.idle {
		n += len(l)
	}
	return n
}
