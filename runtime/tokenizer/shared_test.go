package tokenizer

import (
	"os"
	"path/filepath"
	"testing"
)

// sharedDir returns the shared test-data folder: $KVBENCH_SHARED, else
// <module root>/../shared, found by walking up from the working directory to
// the folder that holds go.mod. It returns "" when none exists.
func sharedDir() string {
	if d := os.Getenv("KVBENCH_SHARED"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(filepath.Dir(dir), "shared")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// sharedFile returns the path of rel under the shared folder, or skips the
// test when the file is absent.
func sharedFile(tb testing.TB, rel string) string {
	tb.Helper()
	dir := sharedDir()
	if dir == "" {
		tb.Skipf("shared test data not found (set KVBENCH_SHARED or place it at <repo>/../shared); need %s", rel)
	}
	p := filepath.Join(dir, rel)
	if _, err := os.Stat(p); err != nil {
		tb.Skipf("shared test data %s absent (%v); set KVBENCH_SHARED to the shared folder", p, err)
	}
	return p
}
