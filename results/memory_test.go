package results

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRecordMemory checks that a record's device memory is stored and read
// back, and that a record written before it existed (no "memory" field)
// still reads, with no memory.
func TestRecordMemory(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	require.NoError(t, err)
	mem := &Memory{Weights: 1 << 20, KV: 4096, Scratch: 512, Peak: 1<<20 + 4608, Uploaded: true, HostPeakRSS: 7 << 20}
	require.NoError(t, s.Append(&Record{Suite: "s", Cell: "new", Status: "ok", KV: KV{Recall: -1}, Memory: mem}))
	require.NoError(t, s.Close())
	old := `{"suite":"s","cell":"old","model":"m","model_path":"p","policy":"full","policy_params":null,"budget":0,` +
		`"task":"t","task_version":1,"task_params":null,"status":"ok","attn_latency":{"p50_us":0,"p90_us":0,"mean_us":0,"n":0},` +
		`"kv":{"max_resident_bytes":0,"final_resident_bytes":0,"bytes_read_per_step":0,"recall":-1,"max_attended":0},` +
		`"tokens":0,"tokens_per_s":0,"meta":{"git_revision":"","kvbench_version":"","go_version":"","backend":"cpu","device":"","host":"","seed":0,` +
		`"start":"2026-01-01T00:00:00Z","end":"2026-01-01T00:00:00Z"}}` + "\n"
	f, err := os.OpenFile(filepath.Join(dir, FileName), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(old)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	recs, err := Load(dir)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	assert.Equal(t, "new", recs[0].Cell)
	assert.Equal(t, mem, recs[0].Memory)
	assert.Equal(t, "old", recs[1].Cell)
	assert.Nil(t, recs[1].Memory)
}
