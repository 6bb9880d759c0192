package bench

import (
	"fmt"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/tasks"
)

// NewBatch starts n streams under fresh instances of the engine's policy
// that can decode together (tasks.Batcher): runners on the engine's device
// over its one upload of the weights, stepped through a runtime.Batch, so a
// batch step runs the matrix products once over every stream's row while
// each stream attends its own cache under its own policy. On a GPU only the
// first stream times its attention (device timestamps around every
// stream's attention would cost more than the attention), and in batch
// steps only on sampled ones (timedStep): a timed stream attends apart from
// the batch. On the CPU every stream does, as alone. Closing the batch closes its streams, whose
// runners go to the engine's next streams as a closed stream's do.
func (e *Engine) NewBatch(n int) (tasks.Batch, error) {
	if n < 1 {
		return nil, fmt.Errorf("batch of %d streams: need at least one", n)
	}
	pols := make([]policies.Policy, n)
	for i := range pols {
		p, err := policies.New(e.Policy, e.Params)
		if err != nil {
			return nil, err
		}
		p.MeasureRecall(e.RecallEvery)
		p.SetPrefill(e.Prefill)
		pols[i] = p
	}
	be, _, err := e.acquire()
	if err != nil {
		return nil, err
	}
	_, onDevice := be.(runtime.DeviceTimer)
	b := &engineBatch{e: e}
	err = e.guard(func() error {
		runners := make([]*runtime.Runner, 0, n)
		for i, p := range pols {
			r, err := e.runner()
			if err != nil {
				return err
			}
			if err := p.Start(r); err != nil {
				e.mu.Lock()
				e.idle = append(e.idle, r) // fresh or reset: fit for the next stream
				e.mu.Unlock()
				return err
			}
			s := &stream{e: e, r: r, p: p, be: be}
			if !onDevice || i == 0 {
				r.OnAttend = s.onAttend
			}
			if onDevice && i == 0 {
				b.timed = s
			}
			b.streams = append(b.streams, s)
			runners = append(runners, r)
		}
		var err error
		b.b, err = runtime.NewBatch(runners...)
		return err
	})
	if err != nil {
		for _, s := range b.streams {
			s.Close()
		}
		return nil, err
	}
	return b, nil
}

// engineBatch is a tasks.Batch: the engine's streams stepped together
// through a runtime.Batch, each call holding the engine's device (guard).
type engineBatch struct {
	e       *Engine
	b       *runtime.Batch
	streams []*stream
	closed  bool
	timed   *stream // on a device, the stream that times its attention
	steps   int     // batch steps so far
}

// timedStep says whether the timed stream of a batch on a device times its
// attention in batch step n (from 0): the first timedFirst steps and then
// every timedEvery-th, so its samples span the run (contexts short to long)
// while it attends apart from the batch in one step of timedEvery.
func timedStep(n int) bool { return n < timedFirst || n%timedEvery == 0 }

const timedFirst, timedEvery = 8, 16

// TimedSteps is how many of a batch's first n steps time its timed stream's
// attention on a device (timedStep): the attention timings a run of n steps
// records per layer.
func TimedSteps(n int) int {
	c := 0
	for i := 0; i < n; i++ {
		if timedStep(i) {
			c++
		}
	}
	return c
}

func (b *engineBatch) Len() int                  { return len(b.streams) }
func (b *engineBatch) Stream(i int) tasks.Stream { return b.streams[i] }

func (b *engineBatch) LogProbs(streams, ids, targets []int, out []float64) error {
	defer b.sample()()
	return b.e.guard(func() error { return b.b.LogProbs(streams, ids, targets, out) })
}

func (b *engineBatch) Step(streams, ids []int, logits []float32) error {
	defer b.sample()()
	return b.e.guard(func() error { return b.b.Step(streams, ids, logits) })
}

// sample counts a batch step and, on a device, takes the timed stream into
// the batch when the step is not one it times (timedStep); the returned
// function gives it back its timing.
func (b *engineBatch) sample() func() {
	t := b.timed
	if t == nil {
		return func() {}
	}
	n := b.steps
	b.steps++
	if timedStep(n) {
		return func() {}
	}
	t.r.OnAttend = nil // in the batch this step; timed again alone (Prompt, Step)
	return func() { t.r.OnAttend = t.onAttend }
}

// Close closes every stream: each hands its accounting and timings to the
// engine, as a stream's Close does.
func (b *engineBatch) Close() {
	if b.closed {
		return
	}
	b.closed = true
	for _, s := range b.streams {
		s.Close()
	}
}

var _ tasks.Batcher = (*Engine)(nil)

// BatchRoom (tasks.BatchSizer) is how many streams holding tokens tokens
// each the engine's device could hold at once beside what it holds now: half
// of its free memory (runtime.MemoryRoom) over one stream's KV cache at that
// length, at least 1; 1 where the backend cannot tell its free memory.
func (e *Engine) BatchRoom(tokens int) int {
	be, _, err := e.acquire()
	if err != nil {
		return 1
	}
	mr, ok := be.(runtime.MemoryRoom)
	if !ok {
		return 1
	}
	c := e.Model.Config
	perStream := int64(max(tokens, 1)) * int64(c.Layers*c.KVHeads*c.HeadDim*2*e.KVType.Size())
	return int(max(1, min(mr.FreeBytes()/2/max(perStream, 1), 1<<16)))
}

var _ tasks.BatchSizer = (*Engine)(nil)
