// Package results holds kvbench's result records, the JSONL store that
// survives crashes and resumes runs, tables (Markdown, CSV), plots (PNG,
// SVG), the HTML report, and compare, the regression gate.
package results

import (
	"time"

	"github.com/kvbench/kvbench/tasks"
)

// Record is the outcome of one cell of a suite, self-describing: the cell's
// parameters, the task's version and the run's environment travel with it.
type Record struct {
	Suite     string `json:"suite"`
	Cell      string `json:"cell"` // stable key: model/policy(params)/task(params)
	Model     string `json:"model"`
	ModelPath string `json:"model_path"`
	// ModelContext is the context the model was trained for
	// (max_position_embeddings; 0 when not recorded): the report marks
	// what lies past it.
	ModelContext int            `json:"model_context,omitempty"`
	Policy       string         `json:"policy"`
	PolicyParams map[string]any `json:"policy_params"`
	Budget       int            `json:"budget"` // the policy's nominal budget (0: none)
	Task         string         `json:"task"`
	TaskVersion  int            `json:"task_version"`
	TaskParams   map[string]any `json:"task_params"`

	Status string `json:"status"` // "ok" or "failed"
	Error  string `json:"error,omitempty"`

	// Declared are the task's declarations of its metrics (name, unit,
	// better direction), copied from the task when the cell ran: compare
	// gates each metric by them. Records written before they were carried
	// lack them; compare then takes the declarations of the task in the
	// running build, and says so.
	Declared []tasks.Metric `json:"metric_decls,omitempty"`

	Metrics map[string]float64       `json:"metrics,omitempty"`
	Curves  map[string][]tasks.Point `json:"curves,omitempty"`
	Detail  map[string]any           `json:"detail,omitempty"`

	Latency    Latency `json:"attn_latency"` // attention time per layer and step
	KV         KV      `json:"kv"`
	Tokens     int     `json:"tokens"`
	Throughput float64 `json:"tokens_per_s"`

	// Memory is what the cell held on its device; nil in records written
	// before it was measured, and for a cell that failed before using one.
	Memory *Memory `json:"memory,omitempty"`

	Meta Meta `json:"meta"`
}

// Latency summarises attention-kernel times per layer and step, in
// microseconds: wall-clock on the CPU backend, device events on the GPU.
// Samples keeps a bounded set of per-step totals (all layers) for
// significance tests in compare.
type Latency struct {
	P50     float64   `json:"p50_us"`
	P90     float64   `json:"p90_us"`
	Mean    float64   `json:"mean_us"`
	N       int       `json:"n"`
	Samples []float64 `json:"samples_us,omitempty"`
}

// KV is the cell's cache accounting.
type KV struct {
	MaxResident   int64   `json:"max_resident_bytes"`
	FinalResident int64   `json:"final_resident_bytes"`
	BytesRead     float64 `json:"bytes_read_per_step"` // mean over decode steps
	Recall        float64 `json:"recall"`              // mean sampled attention recall (-1: not sampled)
	MaxAttended   int     `json:"max_attended"`
	Type          string  `json:"kv_dtype,omitempty"`  // page element type (f32, bf16)
	PageSize      int     `json:"page_size,omitempty"` // slots per page
}

// Memory is a cell's memory on its device, from the backend's own
// accounting: weights + KV + scratch. KV is the KV pages as allocated
// (pages a cache keeps free for reuse included) and, beside the policies'
// kv.max_resident_bytes (the most any one stream held), what every stream
// of the cell held at once; scratch is everything else the backend took
// (activations, workspaces; on a GPU also staging space, page tables and
// the unused part of its slabs).
type Memory struct {
	Weights int64 `json:"weights_bytes"` // the model's uploaded weights, shared by every stream and cell of the model
	KV      int64 `json:"kv_bytes"`      // the most KV page bytes held at once
	Scratch int64 `json:"scratch_bytes"` // the most scratch bytes held at once
	Peak    int64 `json:"peak_bytes"`    // the most held at once, weights included
	// Uploaded says the cell uploaded the weights; false: it used those an
	// earlier cell of the model uploaded.
	Uploaded bool `json:"weights_uploaded"`
	// HostPeakRSS is the process's peak resident memory on the host when
	// the cell ended (VmHWM; 0 where not known).
	HostPeakRSS int64 `json:"host_peak_rss_bytes,omitempty"`
}

// Meta is the environment of the run.
type Meta struct {
	GitRevision string    `json:"git_revision"`
	Version     string    `json:"kvbench_version"`
	GoVersion   string    `json:"go_version"`
	Backend     string    `json:"backend"`
	Device      string    `json:"device"`
	NVRTC       string    `json:"nvrtc,omitempty"`
	Host        string    `json:"host"`
	Seed        int64     `json:"seed"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
}

// OK reports whether the cell succeeded.
func (r *Record) OK() bool { return r.Status == "ok" }
