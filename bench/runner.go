package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	goruntime "runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/results"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/chat"
	"github.com/kvbench/kvbench/runtime/tokenizer"
	"github.com/kvbench/kvbench/tasks"
)

// RunOptions control a suite run.
type RunOptions struct {
	Out   string // results directory
	Quiet bool   // no progress bar and no notes
	// Without a terminal there is no progress output either, only the notes
	// (the backend chosen, failed cells).
	Retry    bool      // rerun cells recorded as failed
	Progress io.Writer // where the progress bar and notes go (stderr)
	TTY      bool      // Progress is a terminal: draw the bar
	Version  string    // kvbench version for the records
	Revision string    // git revision of the build ("" : read from the binary)
	// Binary identifies the running executable in the run manifest (""
	// : the SHA-256 digest of os.Executable).
	Binary string
	// ForceResume reuses the records of Out even when its manifest says
	// another configuration produced them; the manifest notes the override.
	ForceResume bool

	devices *Devices // the run's devices (tests); nil: Run opens and closes its own
}

// RunSummary counts what a run did.
type RunSummary struct {
	// Cells of the suite, those already done (skipped), those run now and
	// those of them that failed.
	Cells, Skipped, Ran, Failed int
	Backend, Reason             string
	// FailedCells are every cell of the results directory whose record is
	// failed after the run, those recorded by earlier runs included, in
	// the order of the results file.
	FailedCells []FailedCell
	// Warnings are what opening the results directory repaired or noticed.
	Warnings []string
}

// FailedCell is a failed cell of a results directory.
type FailedCell struct {
	Key     string
	Error   string
	Earlier bool // recorded by an earlier run and not rerun by this one
	InSuite bool // the cell belongs to the suite that ran
}

// SelectBackend resolves a suite's backend: "auto" takes CUDA when this
// machine can run it and otherwise the CPU, saying why; a named backend must
// be able to run here.
func SelectBackend(want string) (name, reason string, err error) {
	switch want {
	case "", "auto":
		s, err := runtime.LookupBackend("cuda")
		if err != nil {
			return "cpu", "auto: this build has no CUDA backend; using the CPU", nil
		}
		if ok, why := s.Available(); !ok {
			return "cpu", "auto: no usable GPU (" + why + "); using the CPU", nil
		}
		return "cuda", "", nil
	case "cpu", "cuda":
		s, err := runtime.LookupBackend(want)
		if err != nil {
			return "", "", fmt.Errorf("backend %s: not in this build", want)
		}
		if ok, why := s.Available(); !ok {
			return "", "", fmt.Errorf("backend %s: not usable here: %s", want, why)
		}
		return want, "", nil
	}
	return "", "", fmt.Errorf("unknown backend %q (auto, cpu, cuda)", want)
}

// Run executes every cell of s that DIR does not already hold, appending a
// record as each cell ends. A cell that fails is recorded with its reason and
// the run goes on. Rerunning into the same DIR resumes, after checking
// DIR's manifest: records that another configuration produced (another
// binary, backend, KV layout, recall sampling, suite, or cell
// specification) are not reused but refused with a *results.MismatchError,
// unless opt.ForceResume. The summary lists every failed cell of DIR.
func Run(ctx context.Context, s *Suite, opt RunOptions) (*RunSummary, error) {
	backend, reason, err := SelectBackend(s.Backend)
	if err != nil {
		return nil, err
	}
	if s.KVType != "" && s.KVType != "f32" && backend == "cpu" {
		why := ""
		if reason != "" {
			why = " (" + reason + ")"
		}
		return nil, fmt.Errorf("suite %s: kv_dtype %s needs backend cuda; this run uses the cpu backend%s, whose KV pages are float32", s.File, s.KVType, why)
	}
	if opt.Progress == nil {
		opt.Progress = io.Discard
	}
	if reason != "" && !opt.Quiet {
		fmt.Fprintln(opt.Progress, "kvbench:", reason)
	}
	cells := s.Cells()
	store, err := results.Open(opt.Out)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	recs, warns, err := results.LoadWarn(opt.Out)
	if err != nil {
		return nil, err
	}
	sum := &RunSummary{Cells: len(cells), Backend: backend, Reason: reason,
		Warnings: append(store.Warnings(), warns...)}
	if !opt.Quiet {
		for _, w := range sum.Warnings {
			fmt.Fprintln(opt.Progress, "kvbench:", w)
		}
	}
	outcome := newOutcomes(recs)
	var todo []Cell
	var reused []string
	planned := make(map[string]bool, len(cells))
	for _, c := range cells {
		planned[c.Key] = true
		if o, ok := outcome.byKey[c.Key]; ok && (o.ok || !opt.Retry) {
			reused = append(reused, c.Key)
		} else {
			todo = append(todo, c)
		}
	}
	sum.Skipped = len(reused)

	manifestRev, rev := opt.Revision, opt.Revision
	if rev == "" {
		manifestRev, rev = stampedRevision(), gitRevision()
	}
	binary := opt.Binary
	if binary == "" {
		binary = executableDigest()
	}
	want, err := buildManifest(s, cells, backend, manifestRev, binary)
	if err != nil {
		return nil, err
	}
	if err := checkResume(store, want, len(recs), reused, opt); err != nil {
		return nil, err
	}

	if len(todo) == 0 {
		sum.FailedCells = outcome.failed(planned)
		return sum, nil
	}
	var bar *progressbar.ProgressBar
	if opt.TTY && !opt.Quiet {
		bar = progressbar.NewOptions(len(todo), progressbar.OptionSetWriter(opt.Progress),
			progressbar.OptionSetDescription(s.Name), progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true), progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionClearOnFinish())
	}
	models := map[string]*loadedModel{}
	devs := opt.devices
	if devs == nil {
		devs = NewDevices() // one backend per configuration, one upload per model, for every cell
		defer devs.Close()
	}
	defer func() { sum.FailedCells = outcome.failed(planned) }()
	for _, c := range todo {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		if bar != nil {
			bar.Describe(shorten(c.Key, 60))
		}
		rec := runCell(ctx, s, c, models, devs, backend)
		if err := ctx.Err(); err != nil && !rec.OK() {
			// Cut by the interruption (Ctrl-C, a time limit's SIGINT): no
			// record, so that resuming runs the cell again.
			return sum, err
		}
		rec.Meta.GitRevision, rec.Meta.Version = rev, opt.Version
		if err := store.Append(rec); err != nil {
			if !rec.OK() {
				return sum, err
			}
			// A result the store refuses (a metric that is not finite) is
			// recorded as the cell's failure instead.
			rec.Status, rec.Error = "failed", "result not storable: "+err.Error()
			rec.Metrics, rec.Curves, rec.Detail, rec.Latency = nil, nil, nil, results.Latency{}
			if err := store.Append(rec); err != nil {
				return sum, err
			}
		}
		outcome.set(rec, false)
		sum.Ran++
		if !rec.OK() {
			sum.Failed++
			if bar == nil && !opt.Quiet {
				fmt.Fprintf(opt.Progress, "kvbench: cell %s failed: %s\n", c.Key, rec.Error)
			}
		}
		if bar != nil {
			_ = bar.Add(1)
		}
	}
	if bar != nil {
		_ = bar.Finish()
	}
	return sum, nil
}

// checkResume compares the manifest of the store's directory with want
// when the directory holds records (n of them; reused are the cells whose
// records this run keeps), then writes the manifest of this run: want, plus
// the recorded cells want does not name. It writes before any cell runs, so
// no record is ever appended without its manifest entry.
func checkResume(store *results.Store, want *results.Manifest, n int, reused []string, opt RunOptions) error {
	old, err := results.ReadManifest(store.Dir())
	if err != nil {
		return err
	}
	var mis *results.MismatchError
	if n > 0 {
		if old == nil {
			mis = &results.MismatchError{Dir: store.Dir(), Unchecked: n}
		} else if d := results.DiffManifest(old, want, reused); len(d) > 0 {
			mis = &results.MismatchError{Dir: store.Dir(), Diffs: d}
		}
	}
	if mis != nil && !opt.ForceResume {
		return mis
	}
	out := *want
	if old != nil {
		out.Forced = append(out.Forced, old.Forced...)
		for k, v := range old.Cells {
			if _, ok := out.Cells[k]; !ok {
				out.Cells[k] = v
			}
		}
	}
	if mis != nil {
		out.Forced = append(out.Forced, time.Now().UTC().Format(time.RFC3339)+": resumed despite: "+mis.Summary())
		if !opt.Quiet {
			fmt.Fprintln(opt.Progress, "kvbench: --force-resume: reusing records despite:", mis.Error())
		}
	}
	return store.WriteManifest(&out)
}

// outcomes is the latest status of each cell of a results directory, in the
// order of the results file.
type outcomes struct {
	order []string
	byKey map[string]*outcome
}

type outcome struct {
	ok      bool
	err     string
	earlier bool
}

func newOutcomes(recs []results.Record) *outcomes {
	o := &outcomes{byKey: make(map[string]*outcome, len(recs))}
	for i := range recs {
		o.set(&recs[i], true)
	}
	return o
}

func (o *outcomes) set(r *results.Record, earlier bool) {
	if _, ok := o.byKey[r.Cell]; !ok {
		o.order = append(o.order, r.Cell)
	}
	o.byKey[r.Cell] = &outcome{ok: r.OK(), err: r.Error, earlier: earlier}
}

// failed lists the failed cells; planned marks the suite's cells.
func (o *outcomes) failed(planned map[string]bool) []FailedCell {
	var out []FailedCell
	for _, k := range o.order {
		if c := o.byKey[k]; !c.ok {
			out = append(out, FailedCell{Key: k, Error: c.err, Earlier: c.earlier, InSuite: planned[k]})
		}
	}
	return out
}

type loadedModel struct {
	m    *runtime.Model
	tok  tokenizer.Tokenizer
	chat *chat.Template
	err  error
}

// runCell runs one cell on devs and returns its record, failed or not; a
// panic in a task, or a device error in any of its streams, is caught and
// recorded as the cell's failure, with the cell's memory figures. The
// cell's device memory is given back before the next cell runs (only the
// model's weights stay).
func runCell(ctx context.Context, s *Suite, c Cell, models map[string]*loadedModel, devs *Devices, backend string) (rec *results.Record) {
	rec = &results.Record{Suite: s.Name, Cell: c.Key, Model: c.Model.Name, ModelPath: c.Model.Path,
		Policy: c.Policy, PolicyParams: c.PolicyParams, Task: c.Task, TaskParams: c.TaskParams,
		KV: results.KV{Recall: -1}}
	host, _ := os.Hostname()
	rec.Meta = results.Meta{GoVersion: goruntime.Version(), Backend: backend, Host: host, Seed: int64(s.Seed), Start: time.Now().UTC()}
	fail := func(err error) *results.Record {
		rec.Status, rec.Error = "failed", err.Error()
		rec.Meta.End = time.Now().UTC()
		return rec
	}
	defer func() {
		if p := recover(); p != nil {
			rec = fail(fmt.Errorf("panic: %v\n%s", p, debug.Stack()))
		}
	}()
	task, err := tasks.Lookup(c.Task)
	if err != nil {
		return fail(err)
	}
	rec.TaskVersion = task.Version()
	rec.Declared = task.Metrics() // compare gates each metric by its declared direction and unit
	lm := models[c.Model.Name]
	if lm == nil {
		lm = &loadedModel{}
		lm.m, lm.tok, lm.err = OpenModel(c.Model.Path, c.Model.Tokenizer)
		if lm.err == nil {
			tokPath := c.Model.Tokenizer
			if tokPath == "" {
				tokPath = lm.m.Tokenizer // the one beside the model (or in its download)
			}
			lm.chat, lm.err = OpenChatTemplate(c.Model.Path, tokPath, c.Model.ChatTemplate)
		}
		models[c.Model.Name] = lm
	}
	if lm.err != nil {
		return fail(lm.err)
	}
	rec.ModelContext = lm.m.Config.MaxSeq
	e, err := NewEngine(lm.m, lm.tok, c.Policy, c.PolicyParams)
	if err != nil {
		return fail(err)
	}
	e.Devices = devs
	defer func() {
		// After the record is made (a panic's failure included): the
		// release, then what the cell held.
		err := e.Close()
		rec.Memory = e.Memory()
		if err != nil {
			if rec.OK() {
				rec.Metrics, rec.Curves, rec.Latency = nil, nil, results.Latency{}
				rec.Status, rec.Error = "failed", "device fault found when the cell ended (its results are not trusted): "+err.Error()
			} else {
				rec.Error += "; the device faulted and was reopened: " + err.Error()
			}
		}
	}()
	e.RecallEvery, e.Threads, e.Backend, e.PageSize, e.Precision = s.RecallEvery, s.Threads, backend, s.PageSize, s.Precision
	e.Chat = lm.chat
	if e.KVType, err = ParseKVType(s.KVType); err != nil {
		return fail(err)
	}
	if e.Prefill, err = policies.ParsePrefill(s.Prefill); err != nil {
		return fail(fmt.Errorf("suite %s: prefill: %w", s.File, err))
	}
	e.MaxRows = s.PrefillChunk
	rec.Budget = e.Budget()
	t0 := time.Now()
	res, err := task.Run(ctx, e, c.TaskParams)
	el := time.Since(t0)
	if err != nil {
		return fail(err)
	}
	rec.Status = "ok"
	rec.Metrics, rec.Curves, rec.Detail, rec.Tokens = res.Metrics, res.Curves, res.Detail, res.Tokens
	// The prompt protocol the policy followed (policies.Prefill).
	if rec.Detail == nil {
		rec.Detail = map[string]any{}
	}
	rec.Detail["prefill"] = e.Prefill.String()
	rec.Detail["prefill_chunk"] = PrefillChunk(e.MaxRows, backend, e.Prefill)
	if n := e.PassRows(); n > 0 {
		rec.Detail["prefill_chunk"] = n
	}
	if el > 0 {
		rec.Throughput = float64(res.Tokens) / el.Seconds()
	}
	rec.Latency, rec.KV = e.Summary()
	e.describeEffective(rec) // tokens held and attended, a ratio's budget, not applicable
	rec.KV.Type, rec.KV.PageSize = s.KVType, s.PageSize
	_, rec.Meta.Device = e.Device()
	rec.Meta.End = time.Now().UTC()
	return rec
}

// gitRevision is the revision of the kvbench build, else of the git
// checkout in the working directory, else "unknown".
func gitRevision() string {
	if rev := stampedRevision(); rev != "unknown" {
		return rev
	}
	if out, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		if rev := strings.TrimSpace(string(out)); rev != "" {
			return rev
		}
	}
	return "unknown"
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
