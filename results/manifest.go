package results

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ManifestName is the name of the run manifest inside a results directory.
const ManifestName = "manifest.json"

// ManifestFormat is the layout version of the manifests this package writes.
const ManifestFormat = 1

// Manifest records what produced the records of a results directory: the
// run-wide settings that can change a metric (the binary, the backend, the
// KV layout, recall sampling, ...) and each cell's full specification (the
// model's files, the policy's and task's parameters, the task's version).
// A run that resumes into the directory builds its own manifest and refuses
// to reuse records when the two differ (see DiffManifest).
type Manifest struct {
	Format int `json:"format"`
	// Settings are run-wide, by name; values are canonical strings.
	Settings map[string]string `json:"settings"`
	// Cells holds each cell's specification by cell key, as JSON values
	// (see CellSpec).
	Cells map[string]map[string]any `json:"cells"`
	// Forced notes each resume that went on despite differences
	// (--force-resume), with what differed.
	Forced []string `json:"forced,omitempty"`
}

// CellSpec turns a cell's specification (a struct or map that encodes to a
// JSON object) into the form a manifest holds, so that a fresh one compares
// equal to one read back from disk.
func CellSpec(v any) (map[string]any, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("results: encoding a cell specification: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("results: a cell specification must encode to a JSON object: %w", err)
	}
	return m, nil
}

// ReadManifest reads dir's manifest; it returns nil and no error when dir
// has none.
func ReadManifest(dir string) (*Manifest, error) {
	path := filepath.Join(dir, ManifestName)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("results: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("results: %s: not a valid manifest: %v (delete it together with %s to start afresh)", path, err, FileName)
	}
	switch {
	case m.Format <= 0:
		return nil, fmt.Errorf("results: %s: field format missing or not positive", path)
	case m.Format > ManifestFormat:
		return nil, fmt.Errorf("results: %s: format %d was written by a newer kvbench (this one reads format %d)", path, m.Format, ManifestFormat)
	}
	return &m, nil
}

// WriteManifest replaces the directory's manifest atomically: the new one is
// written beside it, synced, and renamed over it, so that a crash leaves
// either the old manifest or the new one, whole.
func (s *Store) WriteManifest(m *Manifest) error {
	if m == nil {
		return errors.New("results: WriteManifest(nil)")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return ErrClosed
	}
	c := *m
	c.Format = ManifestFormat
	data, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return fmt.Errorf("results: encoding the manifest: %w", err)
	}
	data = append(data, '\n')
	path := filepath.Join(s.dir, ManifestName)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("results: writing the manifest: %w", err)
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("results: writing %s: %w", path, werr)
	}
	syncDir(s.dir)
	return nil
}

// Mismatch is one difference between a results directory's manifest and the
// run about to resume into it.
type Mismatch struct {
	Cell     string // the cell key; "" for a run-wide setting
	Field    string // the setting, or the cell's field (nested: "task_params.text")
	Recorded string // the value in the manifest; "(none)" when absent
	Now      string // the value of this run; "(none)" when absent
}

func (m Mismatch) String() string {
	s := fmt.Sprintf("%s: %s (recorded), %s (this run)", m.Field, m.Recorded, m.Now)
	if m.Cell != "" {
		s = "cell " + m.Cell + ": " + s
	}
	return s
}

const absent = "(none)"

// DiffManifest lists how now differs from recorded: every run-wide setting
// whose value differs (or that one of them lacks), then for each of the
// given cells (those whose records would be reused) every field of its
// specification that differs, or its absence from recorded. Settings come
// in name order, cells in the order given.
func DiffManifest(recorded, now *Manifest, cells []string) []Mismatch {
	var out []Mismatch
	names := map[string]bool{}
	for k := range recorded.Settings {
		names[k] = true
	}
	for k := range now.Settings {
		names[k] = true
	}
	sorted := make([]string, 0, len(names))
	for k := range names {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		r, rok := recorded.Settings[k]
		n, nok := now.Settings[k]
		if rok && nok && r == n {
			continue
		}
		mm := Mismatch{Field: k, Recorded: absent, Now: absent}
		if rok {
			mm.Recorded = quoteSetting(r)
		}
		if nok {
			mm.Now = quoteSetting(n)
		}
		out = append(out, mm)
	}
	for _, c := range cells {
		r, rok := recorded.Cells[c]
		n := now.Cells[c]
		if !rok {
			out = append(out, Mismatch{Cell: c, Field: "specification", Recorded: absent, Now: "present"})
			continue
		}
		out = diffValue(out, c, "", r, n)
	}
	return out
}

// quoteSetting shows an empty setting as "" so that it stays visible.
func quoteSetting(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

// diffValue appends the differences between two JSON values, descending
// into objects so that the innermost differing field is named.
func diffValue(out []Mismatch, cell, path string, r, n any) []Mismatch {
	rm, rIsMap := r.(map[string]any)
	nm, nIsMap := n.(map[string]any)
	if rIsMap && nIsMap {
		keys := map[string]bool{}
		for k := range rm {
			keys[k] = true
		}
		for k := range nm {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			sub := k
			if path != "" {
				sub = path + "." + k
			}
			rv, rok := rm[k]
			nv, nok := nm[k]
			switch {
			case rok && nok:
				out = diffValue(out, cell, sub, rv, nv)
			case rok:
				out = append(out, Mismatch{Cell: cell, Field: sub, Recorded: jsonText(rv), Now: absent})
			default:
				out = append(out, Mismatch{Cell: cell, Field: sub, Recorded: absent, Now: jsonText(nv)})
			}
		}
		return out
	}
	if rt, nt := jsonText(r), jsonText(n); rt != nt {
		if path == "" {
			path = "specification"
		}
		out = append(out, Mismatch{Cell: cell, Field: path, Recorded: rt, Now: nt})
	}
	return out
}

// jsonText is a JSON value's canonical text (object keys sorted).
func jsonText(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(data)
}

// MismatchError is returned when a run would reuse records of a results
// directory that another configuration produced, or whose configuration is
// unknown (records without a manifest).
type MismatchError struct {
	Dir string
	// Unchecked is the number of records found without a manifest (written
	// by a kvbench before run manifests, or the manifest removed).
	Unchecked int
	Diffs     []Mismatch
}

// maxListedCellDiffs bounds the per-cell differences an error lists.
const maxListedCellDiffs = 10

func (e *MismatchError) Error() string {
	var b strings.Builder
	if e.Unchecked > 0 {
		fmt.Fprintf(&b, "results: %s holds %d records but no %s (written by a kvbench without run manifests, or the manifest was removed): what produced them cannot be checked against this run",
			filepath.Join(e.Dir, FileName), e.Unchecked, ManifestName)
		return b.String()
	}
	fmt.Fprintf(&b, "results: %s holds results of another configuration; resuming would mix them (%s differs from this run):",
		e.Dir, filepath.Join(e.Dir, ManifestName))
	cellDiffs := 0
	for _, d := range e.Diffs {
		if d.Cell != "" {
			cellDiffs++
			if cellDiffs > maxListedCellDiffs {
				continue
			}
		}
		b.WriteString("\n  ")
		b.WriteString(d.String())
	}
	if cellDiffs > maxListedCellDiffs {
		fmt.Fprintf(&b, "\n  ... and %d more differences of cells", cellDiffs-maxListedCellDiffs)
	}
	return b.String()
}

// Summary is the differences on one line, for notes: at most
// maxListedCellDiffs of cells, like Error.
func (e *MismatchError) Summary() string {
	if e.Unchecked > 0 {
		return fmt.Sprintf("%d records without a manifest", e.Unchecked)
	}
	var parts []string
	cellDiffs := 0
	for _, d := range e.Diffs {
		if d.Cell != "" {
			cellDiffs++
			if cellDiffs > maxListedCellDiffs {
				continue
			}
		}
		parts = append(parts, d.String())
	}
	if cellDiffs > maxListedCellDiffs {
		parts = append(parts, fmt.Sprintf("and %d more differences of cells", cellDiffs-maxListedCellDiffs))
	}
	return strings.Join(parts, "; ")
}
