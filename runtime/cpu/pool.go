package cpu

// job is work split over [0, n) and run on the pool's workers; w is the index
// of the worker running the span (0 is the calling goroutine), for per-worker
// scratch memory.
type job interface {
	run(w, lo, hi int)
}

type span struct {
	j      job
	lo, hi int
}

// pool is a fixed set of goroutines that run spans of a job. run hands out
// spans over channels of values, so a parallel call allocates nothing.
type pool struct {
	workers int
	work    []chan span
	done    chan struct{}
}

func newPool(workers int) *pool {
	p := &pool{workers: max(workers, 1), done: make(chan struct{}, workers)}
	for w := 1; w < p.workers; w++ {
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

// run executes j over [0, n), split into at most one span per worker, each at
// least grain items long, and returns when every span is done.
func (p *pool) run(j job, n, grain int) {
	if n <= 0 {
		return
	}
	parts := min(p.workers, max(1, n/max(grain, 1)))
	if parts == 1 {
		j.run(0, 0, n)
		return
	}
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

// close stops the workers.
func (p *pool) close() {
	for _, ch := range p.work {
		close(ch)
	}
	p.work = nil
}
