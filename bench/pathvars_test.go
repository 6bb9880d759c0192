package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// setEnv replaces the environment expandVars reads for one test.
func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	old := lookupEnv
	lookupEnv = func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
	t.Cleanup(func() { lookupEnv = old })
}

func TestExpandVars(t *testing.T) {
	setEnv(t, map[string]string{"SHARED": "/data/shared", "EMPTY": "", "SUB": "books", "REL": "rel/dir"})
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		in, want string
	}{
		{"plain/path.txt", "plain/path.txt"},
		{"cost$5/a", "cost$5/a"},
		{"${SHARED}/models/m", "/data/shared/models/m"},
		{"${SHARED:-../shared}/models/m", "/data/shared/models/m"},
		{"${UNSET:-../shared}/models/m", "../shared/models/m"},
		{"${EMPTY:-fallback}/x", "fallback/x"},
		{"data/${SUB}/a.txt", "data/books/a.txt"},
		{"${SHARED}/${SUB}", "/data/shared/books"},
		{"${REL}/x", filepath.Join(cwd, "rel/dir") + "/x"},
		{"${UNSET:-}/abs", "/abs"},
	} {
		got, err := expandVars(c.in)
		if err != nil || got != c.want {
			t.Errorf("expandVars(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, c := range []struct {
		in, want string
	}{
		{"${UNSET}/models", "environment variable UNSET is not set (set it, or give a fallback: ${UNSET:-DIR})"},
		{"${EMPTY}/models", "environment variable EMPTY is empty"},
		{"${SHARED/models", "${ without a closing }"},
		{"${1X}/a", "${1X} is not a variable"},
		{"${}/a", "${} is not a variable"},
		{"${A B}/a", "is not a variable"},
		{"${UNSET:-${SHARED}}/a", "fallbacks are literal"},
		{"${UNSET:-}", "empty after expanding"},
	} {
		got, err := expandVars(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.in) {
			t.Errorf("expandVars(%q) = %q, %v; want an error naming the path and %q", c.in, got, err, c.want)
		}
	}
}

// TestSuitePathVars checks that every kind of suite path expands variables
// and that an unset one is an error at its line naming the variable.
func TestSuitePathVars(t *testing.T) {
	shared := t.TempDir()
	for _, f := range []string{"data/a.txt", "inc/common.yaml", "models/m/config.json", "tok.model"} {
		p := filepath.Join(shared, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		data := "x"
		if strings.HasSuffix(f, ".yaml") {
			data = "policies: [{name: window, window: 8}]\n"
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	suite := filepath.Join(dir, "s.yaml")
	text := `name: vars
include: ${FIX}/inc/common.yaml
models:
  - {name: m, path: "${FIX}/models/m", tokenizer: "${FIX:-nowhere}/tok.model"}
policies: [full]
tasks:
  - {name: perplexity, text: "${FIX}/data/a.txt", tokens: 10}
  - {name: kvbench-test-fake, corpus: ["${FIX}/data/a.txt", "${LOCAL:-.}/s.yaml"]}
`
	if err := os.WriteFile(suite, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	setEnv(t, map[string]string{"FIX": shared})
	s, err := LoadSuite(suite)
	if err != nil {
		t.Fatal(err)
	}
	if m := s.Models[0]; m.Path != filepath.Join(shared, "models/m") || m.Tokenizer != filepath.Join(shared, "tok.model") {
		t.Errorf("model paths not expanded: %+v", m)
	}
	if got := s.Tasks[0].Params["text"]; got != filepath.Join(shared, "data/a.txt") {
		t.Errorf("text = %v", got)
	}
	if got := s.Tasks[1].Params["corpus"].([]any); got[0] != filepath.Join(shared, "data/a.txt") || got[1] != suite {
		t.Errorf("corpus = %v (fallback . is the suite's folder)", got)
	}
	if len(s.Policies) != 2 || s.Policies[0].Name != "window" {
		t.Errorf("included policies: %+v", s.Policies)
	}
	// Cell keys keep the paths as written: the same on every machine.
	for _, c := range s.Cells() {
		if strings.Contains(c.Key, shared) {
			t.Errorf("cell key %q holds the expanded path", c.Key)
		}
	}

	// Unset: every use is an error at its own line, naming the variable.
	setEnv(t, map[string]string{})
	_, err = LoadSuite(suite)
	if err == nil {
		t.Fatal("unset variable accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		suite + ":2:10: include \"${FIX}/inc/common.yaml\": environment variable FIX is not set",
		suite + ":4:21: model m: path \"${FIX}/models/m\": environment variable FIX is not set",
		suite + ":7:30: task perplexity: parameter text: \"${FIX}/data/a.txt\": environment variable FIX is not set",
		suite + ":8:40: task kvbench-test-fake: parameter corpus: \"${FIX}/data/a.txt\": environment variable FIX is not set",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "tok.model") || strings.Contains(msg, "s.yaml\"") {
		t.Errorf("paths with a fallback reported:\n%s", msg)
	}
}
