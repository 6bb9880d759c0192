package bench

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/results"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/hub"
	"github.com/kvbench/kvbench/tasks"
)

// envLocations are the KVBENCH_ environment variables that name where
// things are (fixtures, caches, libraries) or drive the tests, not how a
// run computes; every other KVBENCH_ variable is a setting of the run
// (KVBENCH_PRECISION, KVBENCH_GEMM, KVBENCH_ATTN_TC, ...), so that a
// knob added later is covered without a change here.
var envLocations = map[string]bool{
	"KVBENCH_SHARED":          true,
	"KVBENCH_CUDA_CACHE":      true,
	"KVBENCH_LIBCUDA":         true,
	"KVBENCH_NVRTC":           true,
	"KVBENCH_CUBLAS":          true,
	"KVBENCH_TEST_CHILD_ARGS": true,
}

// envSettings adds "env.NAME" for every KVBENCH_ variable set (non-empty)
// in the environment, locations excepted.
func envSettings(set map[string]string) {
	for _, kv := range os.Environ() {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, "KVBENCH_") || envLocations[name] || val == "" {
			continue
		}
		set["env."+name] = val
	}
}

// runSettings returns the run-wide settings that can change a metric, by
// name, for the run manifest: the suite, the binary (its stamped revision
// and the digest of the executable), the backend, the knobs of the
// environment (envSettings), and every suite setting that reaches the
// engine. A new setting
// that can change numbers is one more line here.
func runSettings(s *Suite, backend, revision, binary string) map[string]string {
	set := map[string]string{
		"suite":         s.Name,
		"revision":      revision,
		"binary":        binary,
		"backend":       backend,
		"kv_dtype":      kvTypeName(s.KVType),
		"page_size":     strconv.Itoa(pageSizeOf(s.PageSize)),
		"prefill":       prefillName(s.Prefill),
		"prefill_chunk": strconv.Itoa(prefillChunkOf(s, backend)),
		"precision":     s.Precision,
		"recall_every":  strconv.Itoa(s.RecallEvery),
		"threads":       strconv.Itoa(s.Threads), // attention latency depends on it
		"seed":          strconv.FormatInt(s.Seed, 10),
	}
	envSettings(set)
	return set
}

// kvTypeName is a suite's KV page type in canonical form ("" is f32).
func kvTypeName(s string) string {
	if s == "" {
		return "f32"
	}
	if dt, err := ParseKVType(s); err == nil {
		return strings.ToLower(dt.String())
	}
	return s
}

// prefillChunkOf is the prompt chunk s's cells run with on backend.
func prefillChunkOf(s *Suite, backend string) int {
	p, _ := policies.ParsePrefill(s.Prefill) // checked when the suite was read ("" is dense)
	return PrefillChunk(s.PrefillChunk, backend, p)
}

// prefillName is a suite's prompt protocol in canonical form ("" is dense).
func prefillName(s string) string {
	if p, err := policies.ParsePrefill(s); err == nil {
		return p.String()
	}
	return s
}

func pageSizeOf(n int) int {
	if n <= 0 {
		return runtime.DefaultPageSize
	}
	return n
}

// cellSpec is what a cell runs, beyond the run-wide settings: everything
// that decides its numbers.
type cellSpec struct {
	Model        string          `json:"model"`
	ModelPath    string          `json:"model_path"`
	Tokenizer    string          `json:"tokenizer,omitempty"`
	Policy       string          `json:"policy"`
	PolicyParams policies.Params `json:"policy_params"`
	Task         string          `json:"task"`
	TaskVersion  int             `json:"task_version"`
	TaskParams   tasks.Params    `json:"task_params"`
}

// specOf returns c's specification in manifest form. Paths are made
// absolute, so that the same files named from another folder compare equal.
func specOf(c Cell) (map[string]any, error) {
	spec := cellSpec{Model: c.Model.Name, ModelPath: absPath(c.Model.Path), Tokenizer: absPath(c.Model.Tokenizer),
		Policy: c.Policy, PolicyParams: c.PolicyParams, Task: c.Task, TaskParams: c.TaskParams}
	if t, err := tasks.Lookup(c.Task); err == nil {
		spec.TaskVersion = t.Version()
		params := tasks.Params{}
		for k, v := range c.TaskParams {
			params[k] = v
		}
		for _, name := range taskPathParams(t) {
			switch p := params[name].(type) {
			case string:
				params[name] = absPath(p)
			case []any:
				abs := make([]any, len(p))
				for i, e := range p {
					abs[i] = e
					if s, ok := e.(string); ok {
						abs[i] = absPath(s)
					}
				}
				params[name] = abs
			}
		}
		spec.TaskParams = params
	}
	m, err := results.CellSpec(spec)
	if err != nil {
		return nil, fmt.Errorf("cell %s: %w", c.Key, err)
	}
	return m, nil
}

// absPath makes a file path absolute; "", synthetic models and paths that
// cannot be made absolute stay as they are.
func absPath(p string) string {
	if p == "" || strings.HasPrefix(p, "synthetic:") || hub.IsRef(p) || filepath.IsAbs(p) {
		return p
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// buildManifest is the manifest of a run of cells.
func buildManifest(s *Suite, cells []Cell, backend, revision, binary string) (*results.Manifest, error) {
	m := &results.Manifest{Format: results.ManifestFormat, Settings: runSettings(s, backend, revision, binary),
		Cells: make(map[string]map[string]any, len(cells))}
	for _, c := range cells {
		spec, err := specOf(c)
		if err != nil {
			return nil, err
		}
		m.Cells[c.Key] = spec
	}
	return m, nil
}

// stampedRevision is the VCS revision recorded in the running binary by the
// Go toolchain, or "unknown" (go test and go run binaries carry none; the
// binary's digest identifies them).
func stampedRevision() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// executableDigest is "sha256:" and the digest of the running executable,
// or "unknown" when it cannot be read.
func executableDigest() string {
	path, err := os.Executable()
	if err != nil {
		return "unknown"
	}
	f, err := os.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "unknown"
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
