package results

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// Run is one run of a suite: the records of one results directory. Compare
// takes several runs per side as independent repetitions.
type Run struct {
	Dir     string // where the records came from ("" when built in memory)
	Records []Record
}

// Single wraps the records of one run, for Compare.
func Single(recs []Record) []Run { return []Run{{Records: recs}} }

// LoadRuns reads the runs of dir. A results directory (one holding
// results.jsonl) is one run; a directory without one whose subdirectories
// hold results.jsonl is one run per such subdirectory, in name order (the
// layout of repetitions: kvbench run SUITE --out DIR/1, --out DIR/2, ...). A
// results file given directly is one run. The warnings are those of
// LoadWarn, prefixed with the file. A directory with neither is an error.
func LoadRuns(dir string) ([]Run, []string, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("results: %w", err)
	}
	if !st.IsDir() {
		recs, warn, err := LoadWarn(dir)
		if err != nil {
			return nil, warn, err
		}
		return []Run{{Dir: dir, Records: recs}}, warn, nil
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); err == nil {
		recs, warn, err := LoadWarn(dir)
		if err != nil {
			return nil, warn, err
		}
		return []Run{{Dir: dir, Records: recs}}, warn, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("results: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("results: %w", err)
	}
	var subs []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		sub := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(sub, FileName)); err == nil {
			subs = append(subs, sub)
		}
	}
	if len(subs) == 0 {
		return nil, nil, fmt.Errorf("results: %s holds no %s, and no subdirectory of it does (want a results directory, or a directory of one results directory per run)", dir, FileName)
	}
	sort.Strings(subs)
	var (
		runs  []Run
		warns []string
	)
	for _, sub := range subs {
		recs, warn, err := LoadWarn(sub)
		warns = append(warns, warn...)
		if err != nil {
			return nil, warns, err
		}
		runs = append(runs, Run{Dir: sub, Records: recs})
	}
	return runs, warns, nil
}
