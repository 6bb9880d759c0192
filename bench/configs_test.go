package bench

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
)

// shippedSuites returns configs/*.yaml and, for each, its text with the
// text of the suites it includes appended.
func shippedSuites(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("../configs/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no suites in configs/: %v", err)
	}
	out := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`(?m)^include:\s*(\S+)`).FindAllStringSubmatch(string(data), -1) {
			inc, err := os.ReadFile(filepath.Join(filepath.Dir(f), m[1]))
			if err != nil {
				t.Fatal(err)
			}
			data = append(data, inc...)
		}
		out[f] = string(data)
	}
	return out
}

// TestConfigsValidate checks every suite shipped in configs/ against the real
// fixtures: those of $KVBENCH_SHARED, else ../shared beside the repository
// (the suites' ${KVBENCH_SHARED:-../../shared}). Suites that read them are
// skipped where there are none.
func TestConfigsValidate(t *testing.T) {
	dir, haveShared := fixtures.Find()
	for f, text := range shippedSuites(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if strings.Contains(text, "KVBENCH_SHARED") && !haveShared {
				t.Skipf("reads the shared fixtures, which are absent (set KVBENCH_SHARED or place them in ../shared beside the repository; looked for %q)", dir)
			}
			s, err := LoadSuite(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Cells()) == 0 {
				t.Fatal("no cells")
			}
			if err := s.CheckModels(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestConfigsFindShared checks, without the real fixtures, that the shipped
// suites read them only through KVBENCH_SHARED (with ../shared beside the
// repository as the fallback): every path they name lies in a stand-in
// folder that KVBENCH_SHARED points at, and with KVBENCH_SHARED unset in
// ../../shared relative to configs/.
func TestConfigsFindShared(t *testing.T) {
	stand := t.TempDir()
	suites := shippedSuites(t)
	pathRe := regexp.MustCompile(`\$\{KVBENCH_SHARED:-\.\./\.\./shared\}(/[^",}\s]*)`)
	for f, text := range suites {
		if strings.Contains(text, "../shared") && !strings.Contains(text, "${KVBENCH_SHARED:-../../shared}") {
			t.Errorf("%s names ../shared without ${KVBENCH_SHARED:-../../shared}", f)
		}
		for _, m := range pathRe.FindAllStringSubmatch(text, -1) {
			p := filepath.Join(stand, m[1])
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if filepath.Ext(p) == ".txt" {
				err := os.WriteFile(p, []byte("text"), 0o644)
				if err != nil {
					t.Fatal(err)
				}
			} else if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			} else if err := os.WriteFile(filepath.Join(p, "a.txt"), []byte("text"), 0o644); err != nil {
				t.Fatal(err) // a folder of texts holds .txt files
			}
		}
	}
	configs, err := filepath.Abs("../configs")
	if err != nil {
		t.Fatal(err)
	}
	fallback := filepath.Join(configs, "../../shared")
	for _, env := range []map[string]string{{"KVBENCH_SHARED": stand}, {}} {
		setEnv(t, env)
		root := stand
		if len(env) == 0 {
			root = fallback
		}
		for f, text := range suites {
			if !strings.Contains(text, "KVBENCH_SHARED") {
				continue
			}
			s, err := LoadSuite(f)
			if len(env) == 0 {
				// The fallback: ../shared beside the repository, which
				// may or may not be there.
				if err != nil && !strings.Contains(err.Error(), fallback) {
					t.Errorf("%s without KVBENCH_SHARED: %v, want paths in %s", f, err, fallback)
				}
				if err != nil {
					continue
				}
			} else if err != nil {
				t.Errorf("%s with KVBENCH_SHARED=%s: %v", f, stand, err)
				continue
			}
			var paths []string
			for _, m := range s.Models {
				paths = append(paths, m.Path)
			}
			for _, e := range s.Tasks {
				for _, k := range []string{"text", "haystack"} {
					if p, ok := e.Params[k].(string); ok {
						paths = append(paths, p)
					}
				}
			}
			for _, p := range paths {
				if !strings.HasPrefix(p, root+string(filepath.Separator)) {
					t.Errorf("%s (env %v): path %s is not in %s", f, env, p, root)
				}
			}
		}
	}
}
