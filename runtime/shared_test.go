package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// sharedDir returns the folder of shared read-only fixtures: $KVBENCH_SHARED,
// or else ../shared beside the module root (the folder holding go.mod, found
// by walking up from the test's working directory). It skips the test when
// the folder is absent, as it is in a fresh clone elsewhere.
func sharedDir(t testing.TB) string {
	t.Helper()
	dir, err := findSharedDir()
	if err != nil {
		t.Skipf("shared fixtures: %v; skipping", err)
	}
	return dir
}

// findSharedDir locates the shared fixtures as sharedDir does, reporting
// why when they are absent; for callers that must not skip (fuzz seeds).
func findSharedDir() (string, error) {
	if dir := os.Getenv("KVBENCH_SHARED"); dir != "" {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return "", fmt.Errorf("KVBENCH_SHARED=%s is not a folder", dir)
		}
		return dir, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("no working directory: %w", err)
	}
	for dir := wd; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			shared := filepath.Join(filepath.Dir(dir), "shared")
			if st, err := os.Stat(shared); err != nil || !st.IsDir() {
				return "", fmt.Errorf("%s not found (set KVBENCH_SHARED to use them)", shared)
			}
			return shared, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above %s (set KVBENCH_SHARED to use them)", wd)
		}
		dir = parent
	}
}

// sharedFile returns the path of a fixture under sharedDir, skipping the test
// when that file is absent.
func sharedFile(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(sharedDir(t), filepath.FromSlash(rel))
	if _, err := os.Stat(p); err != nil {
		t.Skipf("shared fixture %s not found; skipping", p)
	}
	return p
}
