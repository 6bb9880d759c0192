package bench

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/results"
)

// TestPrefillKey: the suite key prefill is dense by default, takes chunked,
// and names the file and line of a bad value with a suggestion.
func TestPrefillKey(t *testing.T) {
	s, err := ParseSuite("suite.yaml", []byte(base))
	require.NoError(t, err)
	assert.Equal(t, "dense", s.Prefill)
	s, err = ParseSuite("suite.yaml", []byte("prefill: chunked\n"+base))
	require.NoError(t, err)
	assert.Equal(t, "chunked", s.Prefill)
	_, err = ParseSuite("suite.yaml", []byte("prefill: chunky\n"+base))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "suite.yaml:1")
	assert.Contains(t, err.Error(), `prefill: "chunky" is not one of dense, chunked; did you mean chunked?`)
	_, err = ParseSuite("suite.yaml", []byte("prefill: [dense]\n"+base))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "prefill")
}

// TestPrefillChunkKey: prefill_chunk takes a positive number of tokens and
// names the file and line of a bad value; PrefillChunk's defaults follow
// the protocol and the backend.
func TestPrefillChunkKey(t *testing.T) {
	s, err := ParseSuite("suite.yaml", []byte(base))
	require.NoError(t, err)
	assert.Zero(t, s.PrefillChunk, "unset: the default")
	s, err = ParseSuite("suite.yaml", []byte("prefill_chunk: 2048\n"+base))
	require.NoError(t, err)
	assert.Equal(t, 2048, s.PrefillChunk)
	for _, bad := range []string{"0", "-4", "big", "[256]", "2000000"} {
		_, err = ParseSuite("suite.yaml", []byte("prefill_chunk: "+bad+"\n"+base))
		require.Error(t, err, bad)
		assert.Contains(t, err.Error(), "suite.yaml:1", bad)
		assert.Contains(t, err.Error(), "prefill_chunk", bad)
	}
	for _, c := range []struct {
		n       int
		backend string
		pre     policies.Prefill
		want    int
	}{
		{0, "cpu", policies.PrefillDense, 256},
		{0, "cuda", policies.PrefillDense, 8192},
		{0, "cpu", policies.PrefillChunked, 256},
		{0, "cuda", policies.PrefillChunked, 256}, // the eviction points match the CPU's
		{1000, "cuda", policies.PrefillChunked, 1000},
		{64, "cpu", policies.PrefillDense, 64},
	} {
		assert.Equal(t, c.want, PrefillChunk(c.n, c.backend, c.pre), "%+v", c)
	}
}

// prefillSuiteText runs h2o and a window over passkey prompts several
// prefill chunks long (the engine's chunk is 256 rows).
const prefillSuiteText = `name: prefill
backend: cpu
%s
models: [{name: tiny, path: "synthetic:tiny"}]
policies: [{name: h2o, heavy: 24, recent: 24}, {name: window, window: 48}]
tasks:
  - {name: passkey, lengths: [700], trials: 2, decode_tail: 8}
`

func runPrefillSuite(t *testing.T, dir, out, setting string) []results.Record {
	t.Helper()
	path := filepath.Join(dir, "suite.yaml")
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(prefillSuiteText, "%s", setting, 1)), 0o644))
	s, err := LoadSuite(path)
	require.NoError(t, err)
	sum, err := Run(context.Background(), s, runOpts(out))
	require.NoError(t, err)
	require.Empty(t, sum.FailedCells)
	recs, err := results.Load(out)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	return recs
}

// TestPrefillRecorded: each record says which prompt protocol ran, the run's
// manifest holds it (a resume with the other protocol is refused), and the
// dense protocol's peak memory is the whole prompt while the chunked one's
// stays near the budget.
func TestPrefillRecorded(t *testing.T) {
	dir := t.TempDir()
	dense := runPrefillSuite(t, dir, filepath.Join(dir, "dense"), "")
	chunked := runPrefillSuite(t, dir, filepath.Join(dir, "chunked"), "prefill: chunked")
	for i := range dense {
		d, c := dense[i], chunked[i]
		require.Equal(t, d.Cell, c.Cell, "the protocol is recorded, not part of the cell key")
		assert.Equal(t, "dense", d.Detail["prefill"], d.Cell)
		assert.Equal(t, "chunked", c.Detail["prefill"], c.Cell)
		// 692 prefilled tokens in pages of 16: 44 pages per layer and KV
		// head at the peak of at least one layer, 3 layers and 2 KV heads of
		// 2 KiB pages (float32, head dim 16).
		whole := int64(2 * 44 * 2048)
		assert.GreaterOrEqual(t, d.KV.MaxResident, whole, "%s: dense peak %d bytes, less than one layer holding the prompt", d.Cell, d.KV.MaxResident)
		assert.Less(t, c.KV.MaxResident, whole, "%s: chunked peak %d bytes", c.Cell, c.KV.MaxResident)
		assert.Equal(t, d.KV.FinalResident, c.KV.FinalResident, "%s: both end at the budget", d.Cell)
	}
	m, err := results.ReadManifest(filepath.Join(dir, "chunked"))
	require.NoError(t, err)
	assert.Equal(t, "chunked", m.Settings["prefill"])
	assert.Equal(t, "256", m.Settings["prefill_chunk"])
	for i := range dense {
		assert.EqualValues(t, 256, dense[i].Detail["prefill_chunk"], dense[i].Cell)
	}

	// A chunk of its own: recorded, changes the chunked protocol's
	// eviction points (its peak), and a resume with another is refused.
	wide := runPrefillSuite(t, dir, filepath.Join(dir, "wide"), "prefill: chunked\nprefill_chunk: 128")
	for i := range wide {
		assert.EqualValues(t, 128, wide[i].Detail["prefill_chunk"], wide[i].Cell)
		assert.Less(t, wide[i].KV.MaxResident, chunked[i].KV.MaxResident, "%s: a smaller chunk, a lower peak", wide[i].Cell)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "suite.yaml"), []byte(strings.Replace(prefillSuiteText, "%s", "prefill: chunked\nprefill_chunk: 64", 1)), 0o644))
	s64, err := LoadSuite(filepath.Join(dir, "suite.yaml"))
	require.NoError(t, err)
	_, err = Run(context.Background(), s64, runOpts(filepath.Join(dir, "wide")))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "prefill_chunk: 128 (recorded), 64 (this run)")

	path := filepath.Join(dir, "suite.yaml")
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(prefillSuiteText, "%s", "prefill: dense", 1)), 0o644))
	s, err := LoadSuite(path)
	require.NoError(t, err)
	_, err = Run(context.Background(), s, runOpts(filepath.Join(dir, "chunked")))
	var mis *results.MismatchError
	require.True(t, errors.As(err, &mis), "want a MismatchError, got %v", err)
	assert.Contains(t, err.Error(), "prefill: chunked (recorded), dense (this run)")
}

// TestEnginePrefill: the engine hands its protocol to every stream's policy.
func TestEnginePrefill(t *testing.T) {
	m, tok, err := OpenModel("synthetic:tiny", "")
	require.NoError(t, err)
	peak := func(pre policies.Prefill) int64 {
		e, err := NewEngine(m, tok, "window", policies.Params{"window": 16})
		require.NoError(t, err)
		e.MaxRows, e.Prefill = 32, pre
		s, err := e.NewStream()
		require.NoError(t, err)
		defer s.Close()
		ids := make([]int, 200)
		for i := range ids {
			ids[i] = 3 + i%250
		}
		logits := make([]float32, m.Config.Vocab)
		require.NoError(t, s.Prompt(ids, logits))
		return s.Stats().MaxResidentBytes
	}
	dense, chunked := peak(policies.PrefillDense), peak(policies.PrefillChunked)
	// 200 tokens: 13 pages per KV head in the layer the last chunk reaches
	// first; the chunked protocol never holds more than 16+32 tokens.
	assert.GreaterOrEqual(t, dense, int64(2*13*2048))
	assert.LessOrEqual(t, chunked, int64(3*2*4*2048))
}
