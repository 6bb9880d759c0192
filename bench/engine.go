package bench

import (
	"fmt"
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
// tasks.Model, starting streams that each own a backend, a KV cache and a
// fresh policy instance, and it gathers their accounting and attention
// timings for the cell's record.
type Engine struct {
	Model       *runtime.Model
	Tok         tokenizer.Tokenizer
	Policy      string
	Params      policies.Params
	Backend     string        // registered backend name ("": cpu)
	Threads     int           // CPU threads per stream (0: every core)
	RecallEvery int           // sample attention recall every n decode steps (0: never)
	MaxRows     int           // prefill chunk (default: defaultChunk)
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

	mu      sync.Mutex
	idle    []idleRunner // closed streams' runners, for the next stream
	lat     []float64    // decode attention time per layer and step, µs (bounded reservoir)
	latN    int
	stats   []policies.Stats // of closed streams
	budget  int
	maxLat  int
	seed    uint64
	backend string
	device  string
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
	name := e.Backend
	if name == "" {
		name = "cpu"
	}
	var be runtime.Backend
	var r *runtime.Runner
	e.mu.Lock()
	if n := len(e.idle); n > 0 {
		be, r = e.idle[n-1].be, e.idle[n-1].r
		e.idle = e.idle[:n-1]
	}
	e.mu.Unlock()
	if r == nil {
		spec, err := runtime.LookupBackend(name)
		if err != nil {
			return nil, err
		}
		if be, err = spec.Open(e.Threads, e.Precision); err != nil {
			return nil, fmt.Errorf("backend %s: %w", name, err)
		}
		rows := e.MaxRows
		if rows <= 0 {
			rows = defaultChunk(name)
		}
		r, err = runtime.NewRunnerWith(e.Model, be, runtime.RunnerOptions{MaxRows: rows, PageSize: e.PageSize, KVType: e.KVType})
		if err != nil {
			closeBackend(be)
			return nil, err
		}
	}
	p.MeasureRecall(e.RecallEvery)
	p.SetPrefill(e.Prefill)
	if err := p.Start(r); err != nil {
		closeBackend(be)
		return nil, err
	}
	s := &stream{e: e, r: r, p: p, be: be}
	r.OnAttend = s.onAttend
	e.mu.Lock()
	e.backend, e.device = be.Name(), be.Device()
	e.mu.Unlock()
	return s, nil
}

// defaultChunk is the prefill chunk of a backend: 256 rows on the CPU (its
// kernels gain nothing from more), 2048 on a GPU, whose GEMMs and prefill
// attention fill the device only with thousands of rows.
func defaultChunk(backend string) int {
	if backend == "cuda" {
		return 2048
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
	s.p.Prompt(len(ids))
	return s.r.Forward(ids, logits)
}

func (s *stream) Step(id int, logits []float32) error {
	s.one[0] = id
	return s.r.Forward(s.one[:], logits)
}

func (s *stream) Pos() int               { return s.r.Pos() }
func (s *stream) Stats() *policies.Stats { return s.p.Stats() }

// Close hands the stream's accounting and timings to the engine and frees
// its memory.
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
	if rel, ok := s.p.(interface{ Release() }); ok {
		rel.Release() // device memory the policy holds (Quest's page bounds)
	}
	s.r.Reset()
	s.r.Hook, s.r.OnAttend = nil, nil
	e.idle = append(e.idle, idleRunner{s.be, s.r}) // the next stream reuses its weights and pages
	e.mu.Unlock()
}

// idleRunner is a closed stream's backend and runner, weights uploaded and
// cache emptied, kept for the engine's next stream: every stream of a cell
// has the same policy configuration, so what a policy set on the cache
// (shift tracking, the recall reference) holds for the next one too.
type idleRunner struct {
	be runtime.Backend
	r  *runtime.Runner
}

// Close releases the backends the engine's closed streams left; call it
// once the cell is done.
func (e *Engine) Close() {
	e.mu.Lock()
	idle := e.idle
	e.idle = nil
	e.mu.Unlock()
	for _, x := range idle {
		closeBackend(x.be)
	}
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
