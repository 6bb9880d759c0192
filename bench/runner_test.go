package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvbench/kvbench/results"
)

// runSuiteText is a small suite that runs in well under a second on the
// CPU: a synthetic model, two policies, a short perplexity task. %s is
// replaced by extra top-level settings.
const runSuiteText = `name: resume
backend: cpu
%s
models: [{name: tiny, path: "synthetic:tiny"}]
policies: [full, {name: streamingllm, sinks: 4, recent: 28}]
tasks:
  - {name: perplexity, text: text.txt, tokens: 60, bucket: 30}
`

// writeRunSuite writes a suite (runSuiteText with extra settings) and its
// text into dir and loads it.
func writeRunSuite(t *testing.T, dir, extra string) *Suite {
	t.Helper()
	text, err := os.ReadFile("../configs/data/river.txt")
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "text.txt"), text, 0o644))
	path := filepath.Join(dir, "suite.yaml")
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(runSuiteText, extra)), 0o644))
	s, err := LoadSuite(path)
	require.NoError(t, err)
	return s
}

func runOpts(out string) RunOptions {
	return RunOptions{Out: out, Quiet: true, Revision: "rev-a", Binary: "bin-a"}
}

func resultLines(t *testing.T, out string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, results.FileName))
	require.NoError(t, err)
	return strings.Count(string(data), "\n")
}

// TestResumeSameConfiguration: a rerun with nothing changed reuses every
// cell; a cell added to the suite runs alone.
func TestResumeSameConfiguration(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	s := writeRunSuite(t, dir, "")
	sum, err := Run(context.Background(), s, runOpts(out))
	require.NoError(t, err)
	require.Equal(t, 2, sum.Ran)
	require.Empty(t, sum.FailedCells)
	m, err := results.ReadManifest(out)
	require.NoError(t, err)
	require.NotNil(t, m, "the run wrote its manifest")
	assert.Equal(t, "rev-a", m.Settings["revision"])
	assert.Len(t, m.Cells, 2)

	sum, err = Run(context.Background(), s, runOpts(out))
	require.NoError(t, err)
	assert.Equal(t, 0, sum.Ran)
	assert.Equal(t, 2, sum.Skipped)

	// The same suite with one more policy: only the new cell runs.
	text, err := os.ReadFile(filepath.Join(dir, "suite.yaml"))
	require.NoError(t, err)
	more := strings.Replace(string(text), "policies: [full,", "policies: [full, {name: window, window: 32},", 1)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "suite.yaml"), []byte(more), 0o644))
	s2, err := LoadSuite(filepath.Join(dir, "suite.yaml"))
	require.NoError(t, err)
	sum, err = Run(context.Background(), s2, runOpts(out))
	require.NoError(t, err)
	assert.Equal(t, 1, sum.Ran)
	assert.Equal(t, 3, resultLines(t, out))
	m, err = results.ReadManifest(out)
	require.NoError(t, err)
	assert.Len(t, m.Cells, 3)
}

// TestResumeMismatch changes one thing that can change a metric between two
// runs into one directory: the second run is refused with an error naming
// the difference, appends nothing, and goes on with ForceResume.
func TestResumeMismatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra string                         // settings of the second suite
		opts  func(o *RunOptions)            // changes to the second run's options
		edit  func(t *testing.T, dir string) // changes to the second suite's files
		want  string
		// newKeys: the change is part of the cell keys too, so no record is
		// reused; the directory is still refused (it would mix layouts).
		newKeys bool
	}{
		{name: "recall_every", extra: "recall_every: 4", want: "recall_every: 0 (recorded), 4 (this run)"},
		{name: "page_size", extra: "page_size: 8", want: "page_size: 16 (recorded), 8 (this run)", newKeys: true},
		{name: "threads", extra: "threads: 1", want: "threads: 0 (recorded), 1 (this run)"},
		{name: "seed", extra: "seed: 7", want: "seed: 1 (recorded), 7 (this run)"},
		{name: "revision", opts: func(o *RunOptions) { o.Revision = "rev-b" }, want: "revision: rev-a (recorded), rev-b (this run)"},
		{name: "binary", opts: func(o *RunOptions) { o.Binary = "bin-b" }, want: "binary: bin-a (recorded), bin-b (this run)"},
		{name: "suite", edit: func(t *testing.T, dir string) {
			rewrite(t, filepath.Join(dir, "suite.yaml"), "name: resume", "name: other")
		}, want: "suite: resume (recorded), other (this run)"},
		{name: "model", edit: func(t *testing.T, dir string) {
			rewrite(t, filepath.Join(dir, "suite.yaml"), `"synthetic:tiny"`, `"synthetic:tiny-mha"`)
		}, want: `model_path: "synthetic:tiny" (recorded), "synthetic:tiny-mha" (this run)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, out := t.TempDir(), t.TempDir()
			s := writeRunSuite(t, dir, "")
			_, err := Run(context.Background(), s, runOpts(out))
			require.NoError(t, err)
			before := resultLines(t, out)

			s2 := writeRunSuite(t, dir, tc.extra)
			if tc.edit != nil {
				tc.edit(t, dir)
				s2, err = LoadSuite(filepath.Join(dir, "suite.yaml"))
				require.NoError(t, err)
			}
			opt := runOpts(out)
			if tc.opts != nil {
				tc.opts(&opt)
			}
			_, err = Run(context.Background(), s2, opt)
			var mis *results.MismatchError
			require.True(t, errors.As(err, &mis), "want a MismatchError, got %v", err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, before, resultLines(t, out), "a refused resume appends nothing")

			opt.ForceResume = true
			sum, err := Run(context.Background(), s2, opt)
			require.NoError(t, err)
			if tc.newKeys {
				assert.Equal(t, 2, sum.Ran, "cells of new keys run")
			} else {
				assert.Equal(t, 2, sum.Skipped, "a forced resume reuses the records")
			}
			m, err := results.ReadManifest(out)
			require.NoError(t, err)
			require.Len(t, m.Forced, 1, "the manifest notes the override")
			assert.Contains(t, m.Forced[0], tc.want)

			// The forced manifest now describes this configuration.
			_, err = Run(context.Background(), s2, runOpts2(opt))
			assert.NoError(t, err)
		})
	}
}

// runOpts2 is opt without ForceResume.
func runOpts2(opt RunOptions) RunOptions {
	opt.ForceResume = false
	return opt
}

func rewrite(t *testing.T, path, old, new string) {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Contains(t, string(data), old)
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(data), old, new, 1)), 0o644))
}

// TestResumeOtherSuiteFolder: the same suite text in another folder names
// another text file under the same relative path, so the cells keep their
// keys but not their inputs.
func TestResumeOtherSuiteFolder(t *testing.T) {
	a, b, out := t.TempDir(), t.TempDir(), t.TempDir()
	_, err := Run(context.Background(), writeRunSuite(t, a, ""), runOpts(out))
	require.NoError(t, err)
	_, err = Run(context.Background(), writeRunSuite(t, b, ""), runOpts(out))
	require.Error(t, err)
	assert.Contains(t, err.Error(), fmt.Sprintf(`task_params.text: %q (recorded), %q (this run)`,
		filepath.Join(a, "text.txt"), filepath.Join(b, "text.txt")))
}

// TestResumeWithoutManifest: records without a manifest (an older kvbench)
// are refused unless forced.
func TestResumeWithoutManifest(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	s := writeRunSuite(t, dir, "")
	_, err := Run(context.Background(), s, runOpts(out))
	require.NoError(t, err)
	require.NoError(t, os.Remove(filepath.Join(out, results.ManifestName)))
	_, err = Run(context.Background(), s, runOpts(out))
	var mis *results.MismatchError
	require.True(t, errors.As(err, &mis), "got %v", err)
	assert.Equal(t, 2, mis.Unchecked)
	assert.Contains(t, err.Error(), "no manifest.json")
	opt := runOpts(out)
	opt.ForceResume = true
	sum, err := Run(context.Background(), s, opt)
	require.NoError(t, err)
	assert.Equal(t, 2, sum.Skipped)
}

// TestRetryFailedIgnoresChangedFailedCell: with Retry, a failed cell is
// rerun, so a change to it is no mismatch; the other settings still are.
func TestRetryFailedIgnoresChangedFailedCell(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	s := writeRunSuite(t, dir, "")
	s.Models = append(s.Models, ModelSpec{Name: "gone", Path: filepath.Join(dir, "no-such-model")})
	sum, err := Run(context.Background(), s, runOpts(out))
	require.NoError(t, err)
	require.Len(t, sum.FailedCells, 2)

	// The missing model appears, under another path.
	s.Models[1].Path = "synthetic:tiny-qwen"
	_, err = Run(context.Background(), s, runOpts(out))
	require.Error(t, err, "without retry the failed cells are reused and their model changed")
	assert.Contains(t, err.Error(), "model_path")
	opt := runOpts(out)
	opt.Retry = true
	sum, err = Run(context.Background(), s, opt)
	require.NoError(t, err)
	assert.Equal(t, 2, sum.Ran)
	assert.Empty(t, sum.FailedCells)
}

// TestFailedCellsOfDirectory: the summary lists every failed cell of the
// directory, those of earlier runs too, until a retry mends them.
func TestFailedCellsOfDirectory(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	s := writeRunSuite(t, dir, "")
	s.Models = append(s.Models, ModelSpec{Name: "gone", Path: filepath.Join(dir, "no-such-model")})
	sum, err := Run(context.Background(), s, runOpts(out))
	require.NoError(t, err)
	assert.Equal(t, 4, sum.Ran)
	assert.Equal(t, 2, sum.Failed)
	require.Len(t, sum.FailedCells, 2)
	for _, c := range sum.FailedCells {
		assert.True(t, strings.HasPrefix(c.Key, "gone/"), c.Key)
		assert.Contains(t, c.Error, "no-such-model")
		assert.False(t, c.Earlier)
		assert.True(t, c.InSuite)
	}

	sum, err = Run(context.Background(), s, runOpts(out))
	require.NoError(t, err)
	assert.Equal(t, 0, sum.Ran)
	assert.Equal(t, 0, sum.Failed, "nothing failed in this run")
	require.Len(t, sum.FailedCells, 2, "the directory still holds two failed cells")
	assert.True(t, sum.FailedCells[0].Earlier)

	// A suite without the failing model still sees them: they are cells of
	// the directory.
	s.Models = s.Models[:1]
	sum, err = Run(context.Background(), s, runOpts(out))
	require.NoError(t, err)
	require.Len(t, sum.FailedCells, 2)
	assert.False(t, sum.FailedCells[0].InSuite)
}

// TestRunSettings: the KVBENCH_ knobs of the environment are settings,
// locations are not, and equivalent spellings of a setting compare equal.
func TestRunSettings(t *testing.T) {
	t.Setenv("KVBENCH_GEMM", "bf16")
	t.Setenv("KVBENCH_SHARED", "/somewhere")
	t.Setenv("KVBENCH_PRECISION", "")
	s := &Suite{Name: "x", Seed: 1, KVType: "float32"}
	set := runSettings(s, "cuda", "r", "b")
	assert.Equal(t, "bf16", set["env.KVBENCH_GEMM"])
	_, has := set["env.KVBENCH_SHARED"]
	assert.False(t, has, "a fixture location is no setting")
	_, has = set["env.KVBENCH_PRECISION"]
	assert.False(t, has, "an empty variable is as good as unset")
	assert.Equal(t, "f32", set["kv_dtype"])
	assert.Equal(t, "16", set["page_size"], "page size 0 is the default")
	assert.Equal(t, "dense", set["prefill"], "no prefill is the default")

	s2 := *s
	s2.KVType = "bf16"
	t.Setenv("KVBENCH_GEMM", "")
	t.Setenv("KVBENCH_ATTN_TC", "on")
	d := results.DiffManifest(&results.Manifest{Settings: set}, &results.Manifest{Settings: runSettings(&s2, "cuda", "r", "b")}, nil)
	var got []string
	for _, m := range d {
		got = append(got, m.String())
	}
	assert.Equal(t, []string{
		"env.KVBENCH_ATTN_TC: (none) (recorded), on (this run)",
		"env.KVBENCH_GEMM: bf16 (recorded), (none) (this run)",
		"kv_dtype: f32 (recorded), bf16 (this run)",
	}, got)
}

// TestResumeManifestWithoutRecords: a run killed before its first record
// left only a manifest; another configuration may take the directory, since
// nothing would be mixed.
func TestResumeManifestWithoutRecords(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	s := writeRunSuite(t, dir, "")
	st, err := results.Open(out)
	require.NoError(t, err)
	m, err := buildManifest(s, s.Cells(), "cpu", "rev-a", "bin-a")
	require.NoError(t, err)
	require.NoError(t, st.WriteManifest(m))
	require.NoError(t, st.Close())

	opt := runOpts(out)
	opt.Revision = "rev-b"
	sum, err := Run(context.Background(), writeRunSuite(t, dir, "recall_every: 4"), opt)
	require.NoError(t, err)
	assert.Equal(t, 2, sum.Ran)
	got, err := results.ReadManifest(out)
	require.NoError(t, err)
	assert.Equal(t, "rev-b", got.Settings["revision"])
	assert.Equal(t, "4", got.Settings["recall_every"])
	assert.Empty(t, got.Forced)
}

// errAfter is a context whose Err reports Canceled from its n-th call on:
// it interrupts a cell part way, where the task polls Err every step.
type errAfter struct {
	context.Context
	n, calls int
}

func (c *errAfter) Err() error {
	c.calls++
	if c.calls >= c.n {
		return context.Canceled
	}
	return nil
}

// TestInterruptedCellNotRecorded: a cell cut by the run's interruption leaves
// no record (not a failure record), so resuming runs it again; the cells
// finished before it are kept.
func TestInterruptedCellNotRecorded(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	s := writeRunSuite(t, dir, "")
	// The loop's check before each cell, then one a decode step: the second
	// cell is cut in its first steps.
	ctx := &errAfter{Context: context.Background(), n: 1 + 60 + 5}
	sum, err := Run(ctx, s, runOpts(out))
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 1, sum.Ran, "the first cell ran")
	assert.Equal(t, 1, resultLines(t, out), "the cut cell has no record")
	sum, err = Run(context.Background(), s, runOpts(out))
	require.NoError(t, err)
	assert.Equal(t, 1, sum.Skipped)
	assert.Equal(t, 1, sum.Ran, "resuming runs the cut cell")
	assert.Equal(t, 2, resultLines(t, out))
}
