package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/policies"
)

// storiesGolden is the output the reference C implementation prints for
// stories260K: greedy, 256 steps from BOS (FIXTURES.md).
const storiesGolden = `Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.
Lily's mom said, "Lily, let's go to the park." Lily was sad and didn't know what to do. She said, "I want to play with your ball, but I can't find it."
Lily was sad and didn't know what to do. She said, "I'm sorry, Lily. I didn't know what to do."
Lily didn't want to help her mom, so she said, "I'm sorry, mom. I didn't know what to do." Her mom said, "Don't worry, Lily. We can help you.`

func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(&out, &errb, args)
	return out.String(), errb.String(), err
}

func TestGenerateStories260K(t *testing.T) {
	dir := fixtures.Path(t, "models/stories260K")
	out, _, err := runCLI(t, "generate", "--model", filepath.Join(dir, "stories260K.bin"),
		"--tokenizer", filepath.Join(dir, "tok512.bin"), "--steps", "256")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSuffix(out, "\n"); got != storiesGolden {
		t.Errorf("stories260K generation differs from the reference:\n got %q\nwant %q", got, storiesGolden)
	}
}

func TestGenerateGutenbergGreedy(t *testing.T) {
	dir := fixtures.Path(t, "models/gutenberg-llama-25m")
	data, err := os.ReadFile(filepath.Join(dir, "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Greedy struct {
			Text string `json:"text"`
		} `json:"greedy"`
	}
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	const prompt = "It was a dark and stormy night;"
	want, ok := strings.CutPrefix(g.Greedy.Text, prompt)
	if !ok {
		t.Fatalf("golden greedy text does not start with the prompt: %q", g.Greedy.Text)
	}
	out, _, err := runCLI(t, "generate", "--model", dir, "--prompt", prompt, "--steps", "32")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSuffix(out, "\n"); got != want {
		t.Errorf("generation differs from golden.json:\n got %q\nwant %q", got, want)
	}
}

func TestGenerateSynthetic(t *testing.T) {
	a, _, err := runCLI(t, "generate", "--model", "synthetic:tiny", "--prompt", "Once", "--steps", "20")
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := runCLI(t, "generate", "--model", "synthetic:tiny", "--prompt", "Once", "--steps", "20")
	if err != nil {
		t.Fatal(err)
	}
	if a != b || len(a) == 0 {
		t.Errorf("synthetic generation not deterministic or empty: %q vs %q", a, b)
	}
}

func TestScorePolicies(t *testing.T) {
	text := filepath.Join(t.TempDir(), "t.txt")
	if err := os.WriteFile(text, []byte(strings.Repeat("The grass is green. The sky is blue. ", 20)), 0o644); err != nil {
		t.Fatal(err)
	}
	full, _, err := runCLI(t, "score", "--model", "synthetic:tiny", "--text", text, "--tokens", "300")
	if err != nil {
		t.Fatal(err)
	}
	streamed, _, err := runCLI(t, "score", "--model", "synthetic:tiny", "--text", text, "--tokens", "300", "--policy", "full", "--bucket", "100")
	if err != nil {
		t.Fatal(err)
	}
	line := func(s, key string) string {
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(l, key) {
				return strings.TrimSpace(strings.TrimPrefix(l, key))
			}
		}
		t.Fatalf("no %q line in:\n%s", key, s)
		return ""
	}
	a, _ := strconv.ParseFloat(line(full, "perplexity"), 64)
	b, _ := strconv.ParseFloat(line(streamed, "perplexity"), 64)
	if !(a > 1) || math.Abs(a-b) > 1e-5*a {
		t.Errorf("full attention perplexity %v in chunks, %v streamed", a, b)
	}
	win, _, err := runCLI(t, "score", "--model", "synthetic:tiny", "--text", text, "--tokens", "300",
		"--policy", "streamingllm", "--param", "sinks=4", "--param", "recent=60")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(win, "recall") || !strings.Contains(win, "kv_resident") {
		t.Errorf("streamed score output lacks recall or memory:\n%s", win)
	}
}

func TestCLIErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"generate"}, "--model is required"},
		{[]string{"generate", "--model", "synthetic:nope"}, "unknown synthetic model"},
		{[]string{"generate", "--model", "/nonexistent/model"}, "/nonexistent/model"},
		{[]string{"score", "--model", "synthetic:tiny"}, "--text is required"},
		{[]string{"score", "--model", "synthetic:tiny", "--text", "x", "--policy", "windw"}, "did you mean window"},
		{[]string{"score", "--model", "synthetic:tiny", "--text", "x", "--policy", "window", "--param", "size=3"}, "unknown parameter size"},
		{[]string{"score", "--model", "synthetic:tiny", "--text", "x", "--param", "a=1"}, "--param needs --policy"},
		{[]string{"generate", "--model", "synthetic:tiny", "extra"}, "unexpected arguments"},
		{[]string{"generate", "--model", "synthetic:tiny", "--kv-dtype", "bf61"}, "did you mean bf16"},
		{[]string{"generate", "--model", "synthetic:tiny", "--kv-dtype", "bf16", "--backend", "cpu"}, "need the cuda backend"},
		{[]string{"generate", "--model", "synthetic:tiny", "--page-size", "0"}, "--page-size 0"},
	} {
		_, _, err := runCLI(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("kvbench %s: error %v, want %q", strings.Join(c.args, " "), err, c.want)
		}
	}
	for _, cmd := range []string{"generate", "score", "version"} {
		_, stderr, err := runCLI(t, cmd, "--help")
		if err == nil || !strings.Contains(stderr, "Usage: kvbench "+cmd) {
			t.Errorf("%s --help: err %v, stderr %q", cmd, err, stderr)
		}
	}
}

func TestVersionFlag(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-version"}, {"version"}} {
		out, stderr, err := runCLI(t, args...)
		if err != nil || !strings.HasPrefix(out, "kvbench "+version+" (revision ") || stderr != "" {
			t.Errorf("kvbench %s: %v, stdout %q, stderr %q", args[0], err, out, stderr)
		}
	}
}

// Errors are returned once for main to print, without the usage text.
func TestErrorsWithoutUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"score", "--bogus"}, "score: flag provided but not defined: -bogus (kvbench score --help lists the flags)"},
		{[]string{"score", "--tokens", "abc"}, `score: invalid value "abc" for flag -tokens`},
		{[]string{"validate", "--nope", "x.yaml"}, "validate: flag provided but not defined: -nope"},
		{[]string{"vresion"}, `unknown command "vresion"; did you mean version? (kvbench help lists the commands)`},
		{[]string{"frob"}, `unknown command "frob" (kvbench help lists the commands)`},
		{[]string{"--"}, `unknown command "--"`},
	} {
		out, stderr, err := runCLI(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("kvbench %s: error %v, want %q", strings.Join(c.args, " "), err, c.want)
		}
		if stderr != "" || out != "" {
			t.Errorf("kvbench %s printed besides its error: stdout %q, stderr %q", strings.Join(c.args, " "), out, stderr)
		}
	}
}

// Every policy runs with its default parameters.
func TestScoreDefaultParams(t *testing.T) {
	text := filepath.Join(t.TempDir(), "t.txt")
	if err := os.WriteFile(text, []byte(strings.Repeat("The grass is green. The sky is blue. ", 20)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range policies.Names() {
		out, _, err := runCLI(t, "score", "--model", "synthetic:tiny", "--text", text, "--tokens", "300", "--policy", name)
		if err != nil {
			t.Errorf("score --policy %s: %v", name, err)
			continue
		}
		if !strings.Contains(out, "policy       "+name) || !strings.Contains(out, "perplexity") {
			t.Errorf("score --policy %s output:\n%s", name, out)
		}
	}
}

// validate checks that the models' paths exist and are loadable formats,
// naming the line; --no-models skips that.
func TestValidateModels(t *testing.T) {
	dir := t.TempDir()
	suite := filepath.Join(dir, "s.yaml")
	text := "name: m\nmodels:\n  - {name: a, path: \"synthetic:tiny\"}\n  - {name: b, path: missing/model}\npolicies: [full]\ntasks:\n  - {name: passkey, lengths: [300]}\n"
	if err := os.WriteFile(suite, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := runCLI(t, "validate", suite)
	if want := suite + ":4:21: model b: path: model " + filepath.Join(dir, "missing/model") + ": no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("validate with a missing model: %v\nwant %s", err, want)
	}
	out, _, err := runCLI(t, "validate", suite, "--no-models")
	if err != nil || !strings.Contains(out, "is valid: 2 cells (models not checked)") {
		t.Errorf("validate --no-models: %v %q", err, out)
	}
	out, _, err = runCLI(t, "validate", "../../configs/smoke.yaml")
	if err != nil || !strings.Contains(out, "(models checked)") {
		t.Errorf("validate smoke.yaml: %v %q", err, out)
	}
}
