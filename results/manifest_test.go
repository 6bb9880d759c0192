package results

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func testManifest(t *testing.T) *Manifest {
	t.Helper()
	spec, err := CellSpec(map[string]any{"model_path": "/m", "task_params": map[string]any{"tokens": 100, "text": "/a.txt"}, "task_version": 1})
	require.NoError(t, err)
	return &Manifest{Format: ManifestFormat,
		Settings: map[string]string{"revision": "abc", "recall_every": "16", "kv_dtype": "f32"},
		Cells:    map[string]map[string]any{"tiny/full/ppl": spec}}
}

func TestManifestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	got, err := ReadManifest(dir)
	require.NoError(t, err)
	assert.Nil(t, got, "a directory without a manifest has none")

	s, err := Open(dir)
	require.NoError(t, err)
	want := testManifest(t)
	want.Forced = []string{"once"}
	require.NoError(t, s.WriteManifest(want))
	// A second write replaces the first whole.
	want.Settings["recall_every"] = "32"
	require.NoError(t, s.WriteManifest(want))
	require.NoError(t, s.Close())
	assert.ErrorIs(t, s.WriteManifest(want), ErrClosed)

	got, err = ReadManifest(dir)
	require.NoError(t, err)
	require.NotNil(t, got)
	assert.Equal(t, want.Settings, got.Settings)
	assert.Equal(t, want.Forced, got.Forced)
	assert.Empty(t, DiffManifest(got, want, []string{"tiny/full/ppl"}), "a manifest read back equals the one written")
	_, err = os.Stat(filepath.Join(dir, ManifestName+".tmp"))
	assert.True(t, os.IsNotExist(err), "no temporary file left behind")
}

func TestReadManifestErrors(t *testing.T) {
	for _, tc := range []struct{ name, data, want string }{
		{"not json", "{format: 1", "not a valid manifest"},
		{"no format", `{"settings": {}}`, "format missing"},
		{"newer", `{"format": 99, "settings": {}}`, "newer kvbench"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, ManifestName), []byte(tc.data), 0o644))
			_, err := ReadManifest(dir)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), filepath.Join(dir, ManifestName), "the error names the file")
		})
	}
}

func TestDiffManifest(t *testing.T) {
	rec := testManifest(t)
	same := testManifest(t)
	assert.Empty(t, DiffManifest(rec, same, []string{"tiny/full/ppl"}))

	now := testManifest(t)
	now.Settings["recall_every"] = "32"
	delete(now.Settings, "kv_dtype")
	now.Settings["prefill"] = "chunked"
	now.Cells["tiny/full/ppl"]["task_params"].(map[string]any)["text"] = "/b.txt"
	now.Cells["tiny/full/ppl"]["task_version"] = float64(2)
	spec, err := CellSpec(map[string]any{"model_path": "/m"})
	require.NoError(t, err)
	now.Cells["tiny/quest/ppl"] = spec

	got := DiffManifest(rec, now, []string{"tiny/full/ppl", "tiny/quest/ppl"})
	var lines []string
	for _, d := range got {
		lines = append(lines, d.String())
	}
	assert.Equal(t, []string{
		"kv_dtype: f32 (recorded), (none) (this run)",
		"prefill: (none) (recorded), chunked (this run)",
		"recall_every: 16 (recorded), 32 (this run)",
		`cell tiny/full/ppl: task_params.text: "/a.txt" (recorded), "/b.txt" (this run)`,
		"cell tiny/full/ppl: task_version: 1 (recorded), 2 (this run)",
		"cell tiny/quest/ppl: specification: (none) (recorded), present (this run)",
	}, lines)

	// Only the cells named are compared: a cell that will be rerun may
	// change freely.
	assert.Len(t, DiffManifest(rec, now, nil), 3)
}

func TestCellSpecNormalizes(t *testing.T) {
	a, err := CellSpec(struct {
		N int            `json:"n"`
		P map[string]any `json:"p"`
	}{3, map[string]any{"x": []any{1, "b"}}})
	require.NoError(t, err)
	b, err := CellSpec(map[string]any{"n": 3.0, "p": map[string]any{"x": []any{1.0, "b"}}})
	require.NoError(t, err)
	assert.Empty(t, diffValue(nil, "c", "", a, b), "ints and their float64 read-back compare equal")
	_, err = CellSpec([]int{1})
	assert.Error(t, err, "a specification must be an object")
}

func TestMismatchErrorText(t *testing.T) {
	e := &MismatchError{Dir: "out/x", Diffs: []Mismatch{{Field: "revision", Recorded: "a", Now: "b"}}}
	for i := 0; i < maxListedCellDiffs+3; i++ {
		e.Diffs = append(e.Diffs, Mismatch{Cell: "c" + string(rune('a'+i)), Field: "model_path", Recorded: `"/x"`, Now: `"/y"`})
	}
	msg := e.Error()
	assert.Contains(t, msg, "revision: a (recorded), b (this run)")
	assert.Contains(t, msg, `cell ca: model_path: "/x" (recorded), "/y" (this run)`)
	assert.Contains(t, msg, "and 3 more differences of cells")
	assert.Equal(t, 1+maxListedCellDiffs+1, strings.Count(msg, "\n"), "the listed lines are bounded")
	assert.Contains(t, e.Summary(), "revision: a (recorded), b (this run); cell ca:")
	assert.NotContains(t, e.Summary(), "\n")

	u := &MismatchError{Dir: "out/x", Unchecked: 4}
	assert.Contains(t, u.Error(), "out/x/results.jsonl holds 4 records but no manifest.json")
	assert.Equal(t, "4 records without a manifest", u.Summary())
}

// TestManifestLeftoverTemporary: a crash while writing the manifest leaves
// the temporary file beside the old manifest; reading ignores it and the
// next write replaces it.
func TestManifestLeftoverTemporary(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	require.NoError(t, err)
	defer s.Close()
	want := testManifest(t)
	require.NoError(t, s.WriteManifest(want))
	tmp := filepath.Join(dir, ManifestName+".tmp")
	require.NoError(t, os.WriteFile(tmp, []byte(`{"format": 1, "settings": {"revis`), 0o644))
	got, err := ReadManifest(dir)
	require.NoError(t, err)
	assert.Equal(t, want.Settings, got.Settings, "the old manifest is intact")
	want.Settings["revision"] = "def"
	require.NoError(t, s.WriteManifest(want))
	got, err = ReadManifest(dir)
	require.NoError(t, err)
	assert.Equal(t, "def", got.Settings["revision"])
	_, err = os.Stat(tmp)
	assert.True(t, os.IsNotExist(err))
}
