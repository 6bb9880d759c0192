package cpu

import (
	"fmt"
	"os"
	"sync/atomic"

	"github.com/kvbench/kvbench/internal/crew"
)

// job is work split over [0, n) and run on the pool's workers; w is the index
// of the worker running the span (0 is the calling goroutine), for per-worker
// scratch memory. A job's results may not depend on how [0, n) is split or
// which worker runs a span.
type job interface {
	run(w, lo, hi int)
}

// piecesPerWorker is how many pieces a job is cut into per worker: workers
// that finish early take the pieces left, so a job whose items cost unlike
// amounts (a prompt chunk's causal rows: the last see more keys) keeps
// every core busy to its end.
const piecesPerWorker = 4

// PoolEnv, set to "static", splits every job into one span per worker
// handed out over channels to goroutines of the backend's own, which sleep
// between jobs (the way before the crew: to compare the two in one run);
// "crew" or unset: the crew. Another value is an error when a backend is
// made through the registry (runtime.NewBackend).
const PoolEnv = "KVBENCH_CPU_POOL"

var poolStatic, poolErr = parsePool(os.Getenv(PoolEnv))

func parsePool(v string) (static bool, err error) {
	switch v {
	case "", "crew":
		return false, nil
	case "static":
		return true, nil
	}
	return false, fmt.Errorf("cpu: %s=%q: want crew or static", PoolEnv, v)
}

// pool spreads a job over workers goroutines: the process's crew
// (internal/crew), whose workers spin a while after each job where a
// goroutine woken from sleep would take tens of microseconds, more than a
// small model's matrix product of one row; the pieces are taken in order
// from a shared counter. A pool runs one job at a time.
type pool struct {
	workers int
	j       job
	n, size int
	next    atomic.Int64
	part    func(int) // p.take, bound once so that a job allocates nothing
	static  *staticPool
}

func newPool(workers int) *pool { return newPoolMode(workers, poolStatic) }

// newPoolMode is newPool on the crew, or on goroutines of its own (static).
func newPoolMode(workers int, static bool) *pool {
	p := &pool{workers: max(workers, 1)}
	p.part = p.take
	if static {
		p.static = newStaticPool(p.workers)
	}
	return p
}

// run executes j over [0, n), on at most one worker per grain items (each
// piece at least grain long), and returns when every piece is done.
func (p *pool) run(j job, n, grain int) {
	if n <= 0 {
		return
	}
	grain = max(grain, 1)
	parts := min(p.workers, max(1, n/grain))
	if parts == 1 {
		j.run(0, 0, n)
		return
	}
	if p.static != nil {
		p.static.run(j, n, parts)
		return
	}
	p.j, p.n = j, n
	p.size = max(grain, (n+parts*piecesPerWorker-1)/(parts*piecesPerWorker))
	p.next.Store(0)
	crew.Run(parts, p.part)
	p.j = nil
}

// take is worker w's share: pieces taken in turn until none is left.
func (p *pool) take(w int) {
	for {
		lo := int(p.next.Add(int64(p.size))) - p.size
		if lo >= p.n {
			return
		}
		p.j.run(w, lo, min(lo+p.size, p.n))
	}
}

// close stops the static pool's workers; the crew's live as long as the
// process.
func (p *pool) close() {
	if p.static != nil {
		p.static.close()
	}
}

type span struct {
	j      job
	lo, hi int
}

// staticPool is the backend's own goroutines, a span each per job over
// channels (KVBENCH_CPU_POOL=static).
type staticPool struct {
	work []chan span
	done chan struct{}
}

func newStaticPool(workers int) *staticPool {
	p := &staticPool{done: make(chan struct{}, workers)}
	for w := 1; w < workers; w++ {
		ch := make(chan span, 1)
		p.work = append(p.work, ch)
		go func(w int, ch chan span) {
			for s := range ch {
				s.j.run(w, s.lo, s.hi)
				p.done <- struct{}{}
			}
		}(w, ch)
	}
	return p
}

func (p *staticPool) run(j job, n, parts int) {
	size := (n + parts - 1) / parts
	sent := 0
	for i := 1; i < parts; i++ {
		lo := i * size
		if lo >= n {
			break
		}
		p.work[i-1] <- span{j, lo, min(lo+size, n)}
		sent++
	}
	j.run(0, 0, min(size, n))
	for range sent {
		<-p.done
	}
}

func (p *staticPool) close() {
	for _, ch := range p.work {
		close(ch)
	}
	p.work = nil
}
