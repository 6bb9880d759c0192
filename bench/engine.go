package bench

import (
	"fmt"
	goruntime "runtime"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/results"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/chat"
	_ "github.com/kvbench/kvbench/runtime/cpu"  // registers the cpu backend
	_ "github.com/kvbench/kvbench/runtime/cuda" // registers the cuda backend
	"github.com/kvbench/kvbench/runtime/tokenizer"
	"github.com/kvbench/kvbench/tasks"
)

// Engine is a model under one cache policy configuration: it implements
// tasks.Model, starting streams that each own a KV cache and a fresh policy
// instance on the model's device (one backend and one upload of the
// weights, shared by every stream and every cell of the model: Devices),
// and it gathers their accounting and attention timings for the cell's
// record. The streams take turns on the device, one call at a time; a
// device error in any of them (a panic of the backend: memory that ran
// out, a failed launch) becomes that stream's error, and the engine's other
// streams stop with it.
type Engine struct {
	Model       *runtime.Model
	Tok         tokenizer.Tokenizer
	Policy      string
	Params      policies.Params
	Backend     string        // registered backend name ("": cpu)
	Threads     int           // CPU threads of the backend (0: every core)
	RecallEvery int           // sample attention recall every n decode steps (0: never)
	MaxRows     int           // prefill chunk (default: PrefillChunk's)
	KVType      runtime.DType // KV page element type (default F32)
	PageSize    int           // KV page slots (default runtime.DefaultPageSize)
	Precision   string        // compute precision (bf16, f32; "": the backend's default)
	// Prefill is the protocol of each stream's prompt (policies.Prefill):
	// dense, the default, keeps and attends the whole prompt and lets the
	// policy compress once it is in; chunked evicts after every MaxRows
	// chunk.
	Prefill policies.Prefill
	// Chat is the model's chat template, or nil (tasks.ChatTemplater).
	Chat *chat.Template
	// Devices are the run's backends, shared by its cells (Run sets them);
	// nil: the engine opens its own, closed by Close.
	Devices *Devices

	mu       sync.Mutex
	idle     []*runtime.Runner // closed streams' runners, for the next stream
	dev      *device           // the device the streams run on, once acquired
	weights  *runtime.DeviceWeights
	own      *Devices // the engine's own devices when Devices is nil
	fault    error    // a device error of a stream: the engine's streams stop
	passRows int      // the runners' prefill chunk (PassRows)
	mem      *results.Memory
	closed   bool
	lat      []float64 // decode attention time per layer and step, µs (bounded reservoir)
	latN     int
	stats    []policies.Stats // of closed streams
	budget   int
	maxLat   int
	seed     uint64
	backend  string
	device   string
}

// NewEngine checks the policy and its parameters and returns an engine.
func NewEngine(m *runtime.Model, tok tokenizer.Tokenizer, policy string, params policies.Params) (*Engine, error) {
	p, err := policies.New(policy, params)
	if err != nil {
		return nil, err
	}
	return &Engine{Model: m, Tok: tok, Policy: policy, Params: params, budget: p.Budget(), maxLat: 1 << 16, seed: 1}, nil
}

// Tokenizer returns the model's tokenizer.
func (e *Engine) Tokenizer() tokenizer.Tokenizer { return e.Tok }

// ChatTemplate returns the model's chat template, or nil.
func (e *Engine) ChatTemplate() *chat.Template { return e.Chat }

// Vocab is the model's vocabulary size.
func (e *Engine) Vocab() int { return e.Model.Config.Vocab }

// MaxSeq is the model's trained context.
func (e *Engine) MaxSeq() int { return e.Model.Config.MaxSeq }

// Budget is the policy's nominal budget.
func (e *Engine) Budget() int { return e.budget }

// Device describes the backend the streams run on.
func (e *Engine) Device() (backend, device string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.backend, e.device
}

// NewStream starts an independent stream under a fresh policy instance.
func (e *Engine) NewStream() (tasks.Stream, error) {
	p, err := policies.New(e.Policy, e.Params)
	if err != nil {
		return nil, err
	}
	if _, _, err := e.acquire(); err != nil {
		return nil, err
	}
	var s *stream
	err = e.guard(func() error {
		r, err := e.runner()
		if err != nil {
			return err
		}
		p.MeasureRecall(e.RecallEvery)
		p.SetPrefill(e.Prefill)
		if err := p.Start(r); err != nil {
			e.mu.Lock()
			e.idle = append(e.idle, r) // fresh or reset: fit for the next stream
			e.mu.Unlock()
			return err
		}
		s = &stream{e: e, r: r, p: p, be: r.Backend}
		r.OnAttend = s.onAttend
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// acquire returns the engine's backend and the model's weights on it,
// acquired from Devices (or the engine's own) at the first call.
func (e *Engine) acquire() (runtime.Backend, *runtime.DeviceWeights, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, nil, fmt.Errorf("engine %s: closed", e)
	}
	if e.dev != nil {
		return e.dev.be, e.weights, nil
	}
	ds := e.Devices
	if ds == nil {
		if e.own == nil {
			e.own = NewDevices()
		}
		ds = e.own
	}
	name := e.Backend
	if name == "" {
		name = "cpu"
	}
	d, w, uploaded, err := ds.acquire(devKey{name, e.Threads, e.Precision}, e.Model)
	if err != nil {
		return nil, nil, err
	}
	e.dev, e.weights = d, w
	e.backend, e.device = d.be.Name(), d.be.Device()
	e.mem = &results.Memory{Weights: w.Bytes(), Uploaded: uploaded}
	return d.be, w, nil
}

// ProfilerRange starts or stops a profiler's range on the engine's backend
// (an ncu or nsys run with --profile-from-start off records what lies
// between), when the backend has one.
func (e *Engine) ProfilerRange(on bool) error {
	be, _, err := e.acquire()
	if err != nil {
		return err
	}
	pr, ok := be.(interface{ ProfilerRange(on bool) error })
	if !ok {
		return fmt.Errorf("engine %s: backend %s has no profiler range", e, be.Name())
	}
	return pr.ProfilerRange(on)
}

// runner returns a closed stream's runner, or a new one over the shared
// weights; the device is held (guard).
func (e *Engine) runner() (*runtime.Runner, error) {
	e.mu.Lock()
	if n := len(e.idle); n > 0 {
		r := e.idle[n-1]
		e.idle = e.idle[:n-1]
		e.mu.Unlock()
		return r, nil
	}
	be, w := e.dev.be, e.weights
	e.mu.Unlock()
	// The default chunk of a dense prefill may move to the rows the
	// backend's passes run best at (a GPU's: RowFitter); an asked one, and
	// the chunked protocol's, where the policy evicts, stay.
	fit := e.MaxRows <= 0 && e.Prefill != policies.PrefillChunked
	r, err := runtime.NewRunnerWith(e.Model, be, runtime.RunnerOptions{MaxRows: PrefillChunk(e.MaxRows, be.Name(), e.Prefill), FitRows: fit,
		PageSize: e.PageSize, KVType: e.KVType, Weights: w})
	if err == nil {
		e.mu.Lock()
		e.passRows = r.MaxRows()
		e.mu.Unlock()
	}
	return r, err
}

// PassRows is the prefill chunk of the engine's runners (0 before the
// first is made).
func (e *Engine) PassRows() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.passRows
}

// guard runs f holding the engine's device (acquired before), one call at a
// time across every stream that shares it. A panic of the backend in f (a
// device error) is returned as an error and becomes the engine's fault:
// from then on guard returns that fault without running anything, so the
// cell's other streams stop instead of running on a device in an unknown
// state; the cell's end gives everything back (Close).
func (e *Engine) guard(f func() error) (err error) {
	e.mu.Lock()
	d, fault := e.dev, e.fault
	e.mu.Unlock()
	if d == nil {
		return fmt.Errorf("engine %s: no device acquired", e)
	}
	if fault != nil {
		return fault
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	defer func() {
		if p := recover(); p != nil {
			err = panicError(d.be, p)
			e.mu.Lock()
			if e.fault == nil {
				e.fault = err
			} else {
				err = e.fault
			}
			e.mu.Unlock()
		}
	}()
	if fault := e.faulted(); fault != nil { // set while f waited for the device
		return fault
	}
	return f()
}

// panicError is the error of a panic in a stream's work on be: an error the
// backend raised (a device error: memory that ran out, a failed launch)
// with its message, anything else (a bug) with its stack too.
func panicError(be runtime.Backend, p any) error {
	if err, ok := p.(error); ok {
		if _, bug := err.(goruntime.Error); !bug {
			return fmt.Errorf("device error on %s: %w", be.Name(), err)
		}
	}
	return fmt.Errorf("panic on %s: %v\n%s", be.Name(), p, debug.Stack())
}

// faulted is the engine's fault, or nil.
func (e *Engine) faulted() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fault
}

// PrefillChunk is the prompt tokens a forward pass takes: n when set (> 0),
// else the default of the protocol and backend. Under chunked prefill the
// chunk is where the policy evicts, so it is 256 on every backend (the same
// records on the CPU and a GPU); under dense prefill it only sets how much a
// pass computes at once: 256 rows on the CPU (its kernels gain nothing from
// more), 8192 on a GPU, whose GEMMs and prefill attention fill the device
// only with thousands of rows (the H200, an 8B prefill of 32K tokens: 1.445 s
// in chunks of 4,096, 1.393 in 8,192, whose 3.6 GB of scratch is twice
// 4,096's; 2026-12-04, docs/benchmarks.md). A GPU's runners then move that
// default to the rows its prefill attention fills its multiprocessors at
// (runtime.RowFitter: 8,448 for the 8B shape on the H200).
func PrefillChunk(n int, backend string, pre policies.Prefill) int {
	switch {
	case n > 0:
		return n
	case backend == "cuda" && pre != policies.PrefillChunked:
		return 8192
	}
	return 256
}

type stream struct {
	e      *Engine
	r      *runtime.Runner
	p      policies.Policy
	be     runtime.Backend
	one    [1]int
	lat    []float64 // this stream's decode attention times, µs
	closed bool
}

func (s *stream) onAttend(_, rows int, d time.Duration) {
	if rows == 1 && len(s.lat) < 1<<16 {
		s.lat = append(s.lat, float64(d.Nanoseconds())/1e3)
	}
}

func (s *stream) Prompt(ids []int, logits []float32) error {
	return s.e.guard(func() error {
		s.p.Prompt(len(ids))
		return s.r.Forward(ids, logits)
	})
}

func (s *stream) Step(id int, logits []float32) error {
	return s.e.guard(func() error {
		s.one[0] = id
		return s.r.Forward(s.one[:], logits)
	})
}

func (s *stream) Pos() int               { return s.r.Pos() }
func (s *stream) Stats() *policies.Stats { return s.p.Stats() }

// Close hands the stream's accounting and timings to the engine and frees
// its memory: the policy's, and the cache's pages go to the runner's free
// list, the runner kept for the engine's next stream (every stream of a
// cell has the same policy configuration, so what a policy set on the cache,
// shift tracking or the recall reference, holds for the next one too; a
// batch's runners too). A stream closed after a device error leaves its
// runner to the cell's release.
func (s *stream) Close() {
	if s.closed {
		return
	}
	s.closed = true
	e := s.e
	e.mu.Lock()
	e.stats = append(e.stats, *s.p.Stats())
	for _, v := range s.lat {
		e.latN++
		if len(e.lat) < e.maxLat {
			e.lat = append(e.lat, v)
		} else if j := int(e.seed % uint64(e.latN)); j < e.maxLat { // reservoir sampling
			e.lat[j] = v
		}
		e.seed = e.seed*6364136223846793005 + 1442695040888963407
	}
	e.mu.Unlock()
	err := e.guard(func() error {
		if rel, ok := s.p.(interface{ Release() }); ok {
			rel.Release() // device memory the policy holds (Quest's page bounds)
		}
		s.r.Reset()
		s.r.Hook, s.r.OnAttend = nil, nil
		return nil
	})
	if err == nil {
		e.mu.Lock()
		e.idle = append(e.idle, s.r) // the next stream reuses its pages
		e.mu.Unlock()
	}
}

// Close ends the cell: it gives back what its streams held on the device
// (their KV pages, and through the device's release everything but the
// weights, when no other engine uses the device) and keeps the cell's
// memory figures for Memory. The weights stay for the model's next cell;
// an engine without Devices closes its own. Call it once the cell is done
// and its streams are closed. The error is a device fault found in the
// release (the device is then closed, and the next cell opens it anew).
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	idle, d, own := e.idle, e.dev, e.own
	e.idle = nil
	e.mu.Unlock()
	if d == nil {
		if own != nil {
			own.Close()
		}
		return nil
	}
	d.mu.Lock()
	if mr, ok := d.be.(runtime.MemoryReporter); ok {
		m := mr.Memory()
		e.mu.Lock()
		e.mem.KV, e.mem.Scratch, e.mem.Peak = m.PeakKV, m.PeakScratch, m.Peak
		e.mu.Unlock()
	}
	if e.faulted() == nil {
		func() {
			defer func() { _ = recover() }() // a device in trouble: the release below reports it
			for _, r := range idle {
				r.Cache.Free()
			}
		}()
	}
	d.mu.Unlock()
	ds := e.Devices
	if ds == nil {
		ds = own
	}
	err := ds.release(d, e.Model)
	if own != nil {
		own.Close()
	}
	if _, peak, herr := runtime.HostMemory(); herr == nil {
		e.mu.Lock()
		e.mem.HostPeakRSS = peak
		e.mu.Unlock()
	}
	return err
}

// Memory is the device memory of the cell: the model's weights, and the
// peaks of KV pages, scratch and their sum while the cell ran (known once
// Close has run; nil when the engine never used a device or its backend
// does not report memory).
func (e *Engine) Memory() *results.Memory {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mem == nil || !e.closed {
		return nil
	}
	m := *e.mem
	return &m
}

func closeBackend(be runtime.Backend) {
	switch c := be.(type) {
	case runtime.Closer:
		c.Close()
	case interface{ Close() error }:
		_ = c.Close()
	}
}

// Summary returns the latency and cache accounting over every closed stream.
func (e *Engine) Summary() (results.Latency, results.KV) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var lat results.Latency
	if len(e.lat) > 0 {
		v := append([]float64(nil), e.lat...)
		sort.Float64s(v)
		var sum float64
		for _, x := range v {
			sum += x
		}
		lat = results.Latency{P50: quantile(v, 0.5), P90: quantile(v, 0.9), Mean: sum / float64(len(v)), N: e.latN}
		// Keep up to 200 evenly spaced samples (of the sorted values) for
		// significance tests.
		step := max(1, len(v)/200)
		for i := 0; i < len(v); i += step {
			lat.Samples = append(lat.Samples, v[i])
		}
	}
	kv := results.KV{Recall: -1}
	var rsum float64
	var rn, steps int
	var read float64
	for _, st := range e.stats {
		kv.MaxResident = max(kv.MaxResident, st.MaxResidentBytes)
		kv.FinalResident = max(kv.FinalResident, st.ResidentBytes)
		kv.MaxAttended = max(kv.MaxAttended, st.MaxAttended)
		rsum += st.RecallSum
		rn += st.RecallN
		steps += st.Steps
		read += float64(st.TotalBytesRead)
	}
	if rn > 0 {
		kv.Recall = rsum / float64(rn)
	}
	if steps > 0 {
		kv.BytesRead = read / float64(steps)
	}
	return lat, kv
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := q * float64(len(sorted)-1)
	lo := int(i)
	if lo+1 >= len(sorted) {
		return sorted[len(sorted)-1]
	}
	f := i - float64(lo)
	return sorted[lo]*(1-f) + sorted[lo+1]*f
}

var _ tasks.Model = (*Engine)(nil)

// String names the engine's configuration.
func (e *Engine) String() string {
	return fmt.Sprintf("%s under %s %v", e.Model.Source, e.Policy, e.Params)
}
