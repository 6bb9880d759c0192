package bench

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
)

// TestConfigsValidate checks every suite shipped in configs/. Suites that
// read the development fixtures (../shared) are checked only where those
// exist.
func TestConfigsValidate(t *testing.T) {
	files, err := filepath.Glob("../configs/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no suites in configs/: %v", err)
	}
	_, haveShared := fixtures.Find()
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			// An included suite's paths count as the file's own.
			for _, m := range regexp.MustCompile(`(?m)^include:\s*(\S+)`).FindAllStringSubmatch(string(data), -1) {
				inc, err := os.ReadFile(filepath.Join(filepath.Dir(f), m[1]))
				if err != nil {
					t.Fatal(err)
				}
				data = append(data, inc...)
			}
			if strings.Contains(string(data), "shared/") && !haveShared {
				t.Skip("reads ../shared, which is absent")
			}
			s, err := LoadSuite(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Cells()) == 0 {
				t.Fatal("no cells")
			}
		})
	}
}
