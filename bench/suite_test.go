package bench

import (
	"context"
	"fmt"
	"github.com/kvbench/kvbench/internal/num"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/tasks"
)

// fakeTask is a task for tests: documented parameters, the expanded ones,
// a Check that validates numbers and paths.
type fakeTask struct {
	name   string
	docs   []policies.ParamDoc
	expand []string
	check  func(p tasks.Params) error
}

func (f *fakeTask) Name() string                { return f.name }
func (f *fakeTask) Version() int                { return 1 }
func (f *fakeTask) Metrics() []tasks.Metric     { return []tasks.Metric{{Name: "score", Better: "higher"}} }
func (f *fakeTask) Params() []policies.ParamDoc { return f.docs }
func (f *fakeTask) Expand() []string            { return f.expand }
func (f *fakeTask) Check(p tasks.Params) error  { return f.check(p) }
func (f *fakeTask) Run(context.Context, tasks.Model, tasks.Params) (*tasks.Result, error) {
	return nil, nil
}

// fakeExpander adds ExpandValue and PathParams: "n: K" stands for 1..K, and
// "corpus" is a path.
type fakeExpander struct{ fakeTask }

func (f *fakeExpander) ExpandValue(name string, v any) ([]any, bool) {
	k, ok := v.(int)
	if name != "n" || !ok {
		return nil, false
	}
	out := make([]any, k)
	for i := range out {
		out[i] = i + 1
	}
	return out, true
}

func (f *fakeExpander) PathParams() []string { return []string{"corpus"} }

func numVal(p tasks.Params, name string, lo, hi float64) error {
	v, ok := p[name]
	if !ok {
		return nil
	}
	f, ok := num.Parse(v)
	if !ok {
		return fmt.Errorf("parameter %s: %v is not a number", name, v)
	}
	if f < lo || f > hi || f != f {
		return fmt.Errorf("parameter %s: %v is out of range [%v, %v]", name, v, lo, hi)
	}
	return nil
}

func exists(p tasks.Params, name string) error {
	if s, ok := p[name].(string); ok {
		if _, err := os.Stat(s); err != nil {
			return fmt.Errorf("parameter %s: %v", name, err)
		}
	}
	return nil
}

func docs(names ...string) []policies.ParamDoc {
	var d []policies.ParamDoc
	for _, n := range names {
		def := map[string]string{"max_new": "32", "trials": "10", "streams": "1"}[n]
		d = append(d, policies.ParamDoc{Name: n, Default: def})
	}
	return d
}

func init() {
	// Stand-ins for the real tasks when they are not built in.
	stand := []*fakeTask{
		{name: "passkey", docs: docs("lengths", "depths", "trials", "seed", "decode_tail"), expand: []string{"lengths", "depths"},
			check: func(p tasks.Params) error {
				for _, e := range []error{numVal(p, "lengths", 1, 1<<31), numVal(p, "depths", 0, 1), numVal(p, "trials", 1, 1<<20)} {
					if e != nil {
						return e
					}
				}
				return nil
			}},
		{name: "perplexity", docs: docs("text", "tokens", "streams", "bucket"),
			check: func(p tasks.Params) error {
				if err := exists(p, "text"); err != nil {
					return err
				}
				return numVal(p, "tokens", 1, 1<<31)
			}},
		{name: "needle", docs: docs("haystack", "needle", "question", "lengths", "depths", "max_new", "decode_tail"), expand: []string{"lengths", "depths"},
			check: func(p tasks.Params) error {
				if err := exists(p, "haystack"); err != nil {
					return err
				}
				return numVal(p, "depths", 0, 1)
			}},
	}
	for _, t := range stand {
		if _, err := tasks.Lookup(t.name); err != nil {
			tasks.Register(t)
		}
	}
	tasks.Register(&fakeExpander{fakeTask{name: "kvbench-test-fake", docs: docs("xs", "n", "corpus", "whole", "x"), expand: []string{"xs", "n"},
		check: func(p tasks.Params) error {
			if err := exists(p, "corpus"); err != nil {
				return err
			}
			return numVal(p, "xs", 0, 100)
		}}})
}

func TestExampleSuite(t *testing.T) {
	s, err := LoadSuite("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("testdata")
	if s.Name != "passkey-quest" || s.Backend != "auto" || s.Seed != 1 || s.RecallEvery != 64 || s.Threads != 0 {
		t.Errorf("top-level fields: %+v", s)
	}
	if len(s.Models) != 1 || s.Models[0] != (ModelSpec{Name: "ref25m", Path: "synthetic:tiny", Tokenizer: filepath.Join(abs, "tok/tokenizer.model")}) {
		t.Errorf("models: %+v", s.Models)
	}
	if len(s.Policies) != 3 || len(s.Tasks) != 3 {
		t.Fatalf("%d policies, %d tasks", len(s.Policies), len(s.Tasks))
	}
	if got := s.Tasks[1].Params["text"]; got != filepath.Join(abs, "text") {
		t.Errorf("perplexity text = %v, want it resolved against testdata", got)
	}
	cells := s.Cells()
	// 1 model × (1 + 2 + 3) policy configurations × (2·3 + 1 + 2·10) task cells.
	if want := 1 * 6 * 27; len(cells) != want {
		t.Fatalf("%d cells, want %d", len(cells), want)
	}
	keys := map[string]bool{}
	for _, c := range cells {
		if keys[c.Key] {
			t.Errorf("repeated key %s", c.Key)
		}
		keys[c.Key] = true
	}
	for _, k := range []string{
		"ref25m/full/passkey(depths=0,lengths=2048,seed=1,trials=10)",
		"ref25m/quest(budget=64,page=16)/passkey(depths=0.5,lengths=2048,seed=1,trials=10)",
		"ref25m/streamingllm(recent=1020,sinks=4)/perplexity(streams=4,text=text,tokens=1000000)",
		"ref25m/quest(budget=1024,page=16)/needle(depths=0.1111111111111111,haystack=\"text/sample.txt\",lengths=16384)",
		"ref25m/full/needle(depths=1,haystack=\"text/sample.txt\",lengths=4096)",
	} {
		if !keys[k] {
			t.Errorf("missing key %s", k)
		}
	}
	if c := cells[0]; c.Key != "ref25m/full/passkey(depths=0,lengths=2048,seed=1,trials=10)" || c.Policy != "full" ||
		len(c.PolicyParams) != 0 || c.TaskParams["lengths"] != 2048 || c.TaskParams["depths"] != 0 {
		t.Errorf("first cell %+v", c)
	}
	// The needle cells hold the resolved haystack and one depth each.
	for _, c := range cells {
		if c.Task == "needle" {
			if c.TaskParams["haystack"] != filepath.Join(abs, "text/sample.txt") {
				t.Errorf("%s: haystack %v", c.Key, c.TaskParams["haystack"])
			}
			if _, ok := c.TaskParams["depths"].(float64); !ok {
				t.Errorf("%s: depths %v (%T)", c.Key, c.TaskParams["depths"], c.TaskParams["depths"])
			}
		}
	}

	// Keys do not depend on where the suite is read from.
	data, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "text"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "text", "sample.txt"), []byte("Some text. More text."), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "s.yaml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	s2, err := LoadSuite(filepath.Join(dir, "s.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cells2 := s2.Cells()
	if len(cells2) != len(cells) {
		t.Fatalf("%d cells on reload", len(cells2))
	}
	for i := range cells {
		if cells[i].Key != cells2[i].Key {
			t.Fatalf("cell %d: key %s, then %s", i, cells[i].Key, cells2[i].Key)
		}
	}
	if got := s2.Tasks[1].Params["text"]; got != filepath.Join(dir, "text") {
		t.Errorf("text = %v, want it relative to the suite's folder", got)
	}
}

// base is a valid suite; cases edit it.
const base = `name: t
models:
  - {name: m, path: synthetic:tiny}
policies:
  - full
tasks:
  - {name: passkey, lengths: [64]}
`

func edit(line int, text string) string {
	lines := strings.Split(strings.TrimSuffix(base, "\n"), "\n")
	lines[line-1] = text
	return strings.Join(lines, "\n") + "\n"
}

func TestParseSuiteErrors(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		line int
		at   string // text at the error's column on that line ("" for no column check)
		want string
	}{
		{"unknown top-level field", base + "polcies: []\n", 8, "polcies", `unknown field "polcies" in suite; did you mean policies?`},
		{"unknown policy", edit(5, "  - qest"), 5, "qest", "did you mean quest?"},
		{"unknown policy param", edit(5, "  - {name: quest, budgt: 64}"), 5, "budgt", "unknown parameter budgt"},
		{"policy param type", edit(5, "  - {name: quest, budget: lots}"), 5, "lots", `"lots" is not a number`},
		{"policy param range", edit(5, "  - {name: quest, budget: [64, 0]}"), 5, "0]", "0 is out of range"},
		{"policy param empty list", edit(5, "  - {name: quest, budget: []}"), 5, "{", "budget: empty list"},
		{"policy without name", edit(5, "  - {budget: 64}"), 5, "{", "missing required field name"},
		{"policy as list", edit(5, "  - [full]"), 5, "[", "want a name or a mapping"},
		{"duplicate policy configuration", edit(5, "  - full\n  - {name: full}"), 6, "{", "repeats the configuration"},
		{"seed type", edit(1, "name: t\nseed: abc"), 2, "abc", `seed: want an integer, got string "abc"`},
		{"threads float", edit(1, "name: t\nthreads: 1.5"), 2, "1.5", "want an integer, got number 1.5"},
		{"recall_every negative", edit(1, "name: t\nrecall_every: -1"), 2, "-1", "out of range"},
		{"name not a string", edit(1, "name: [a]"), 1, "[a]", "name: want a string"},
		{"missing name", edit(1, "backend: cpu"), 1, "backend", "missing required field name"},
		{"bad backend", edit(1, "name: t\nbackend: gpu"), 2, "gpu", `"gpu" is not one of auto, cpu, cuda`},
		{"bad kv_dtype", edit(1, "name: t\nkv_dtype: bf61"), 2, "bf61", `kv_dtype: "bf61" is not one of f32, bf16; did you mean bf16?`},
		{"page_size zero", edit(1, "name: t\npage_size: 0"), 2, "0", "page_size"},
		{"empty policies", strings.Replace(base, "policies:\n  - full\n", "policies: []\n", 1), 4, "policies", "policies: needs at least one entry"},
		{"missing tasks", strings.Replace(base, "tasks:\n  - {name: passkey, lengths: [64]}\n", "", 1), 1, "name", "missing required field tasks"},
		{"duplicate model", edit(3, "  - {name: m, path: synthetic:tiny}\n  - {name: m, path: synthetic:small}"), 4, "{", `duplicate model name "m" (first at suite.yaml:3:5)`},
		{"model missing path", edit(3, "  - {name: m}"), 3, "{", "missing required field path"},
		{"unknown model field", edit(3, "  - {name: m, path: synthetic:tiny, tokeniser: t.model}"), 3, "tokeniser", "did you mean tokenizer?"},
		{"unknown synthetic model", edit(3, "  - {name: m, path: synthetic:tinny}"), 3, "{", "did you mean synthetic:tiny?"},
		{"models not a list", edit(3, "  m: 1"), 3, "m", "models: want a list, got a mapping"},
		{"unknown task", edit(7, "  - {name: paskey, lengths: [64]}"), 7, "paskey", "did you mean passkey?"},
		{"unknown task param", edit(7, "  - {name: passkey, lenghts: [64]}"), 7, "lenghts", "did you mean lengths?"},
		{"depth out of range", edit(7, "  - {name: passkey, lengths: [64], depths: [0, 1.5]}"), 7, "1.5", "depths"},
		{"task list not expanded", edit(7, "  - {name: passkey, lengths: [64], trials: [1, 2]}"), 7, "[1, 2]", "trials"},
		{"task value null", edit(7, "  - {name: passkey, lengths: }"), 7, "}", "parameter lengths has no value"},
		{"missing text file", edit(7, "  - {name: perplexity, text: no/such.txt, tokens: 10}"), 7, "no/such", "text"},
		{"duplicate field", edit(1, "name: t\nname: u"), 2, "name", "duplicate field name (first at line 1)"},
		{"yaml syntax", edit(7, "  - name: passkey: 1"), 7, "", "mapping values are not allowed"},
		{"self-referencing alias", edit(7, "  - {name: passkey, lengths: &l [64, *l]}"), 7, "", "nested too deep"},
		{"two documents", base + "---\nname: u\n", 8, "---", "one YAML document"},
		{"include missing", edit(1, "name: t\ninclude: no-such.yaml"), 2, "no-such", "include no-such.yaml"},
		{"not a mapping", "- a\n- b\n", 1, "-", "a suite is a mapping"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseSuite("suite.yaml", []byte(c.yaml))
			if err == nil {
				t.Fatalf("no error for\n%s", c.yaml)
			}
			msg := err.Error()
			t.Log(msg)
			prefix := fmt.Sprintf("suite.yaml:%d:", c.line)
			if c.at != "" {
				lines := strings.Split(c.yaml, "\n")
				col := strings.Index(lines[c.line-1], c.at) + 1
				if col == 0 {
					t.Fatalf("bad case: %q not on line %d", c.at, c.line)
				}
				prefix = fmt.Sprintf("suite.yaml:%d:%d: ", c.line, col)
			}
			if !strings.Contains(msg, prefix) || !strings.Contains(msg, c.want) {
				t.Errorf("error %q\nwant %q ... %q", msg, prefix, c.want)
			}
		})
	}
}

func TestInclude(t *testing.T) {
	s, err := LoadSuite("testdata/include/main.yaml")
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("testdata")
	if len(s.Includes) != 1 || s.Includes[0] != filepath.Join(abs, "include", "common.yaml") {
		t.Errorf("includes %v", s.Includes)
	}
	if len(s.Models) != 1 || s.Models[0].Tokenizer != filepath.Join(abs, "include", "tok.model") {
		t.Errorf("models %+v", s.Models)
	}
	var keys []string
	for _, c := range s.Cells() {
		keys = append(keys, c.Key)
	}
	want := []string{
		"tiny/full/perplexity(text=\"../text\",tokens=1000)",
		"tiny/full/passkey(lengths=256)",
		"tiny/window(window=32)/perplexity(text=\"../text\",tokens=1000)",
		"tiny/window(window=32)/passkey(lengths=256)",
		"tiny/window(window=64)/perplexity(text=\"../text\",tokens=1000)",
		"tiny/window(window=64)/passkey(lengths=256)",
	}
	if strings.Join(keys, "\n") != strings.Join(want, "\n") {
		t.Errorf("keys\n%s\nwant\n%s", strings.Join(keys, "\n"), strings.Join(want, "\n"))
	}
	if got := s.Tasks[0].Params["text"]; got != filepath.Join(abs, "text") {
		t.Errorf("included text = %v, want it relative to the included file", got)
	}

	_, err = LoadSuite("testdata/include/cycle_a.yaml")
	if err == nil || !strings.Contains(err.Error(), "includes itself") || !strings.Contains(err.Error(), "included from testdata/include/cycle_a.yaml:2:10") {
		t.Errorf("include cycle: %v", err)
	}

	// Errors in an included file name it and the including line.
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("bad.yaml", "policies:\n  - {name: quest, budget: -1}\n")
	main := write("main.yaml", "name: x\ninclude: bad.yaml\n"+strings.TrimPrefix(base, "name: t\n"))
	_, err = LoadSuite(main)
	want1 := filepath.Join(dir, "bad.yaml") + ":2:27: policy quest: parameter budget: -1 is out of range"
	if err == nil || !strings.Contains(err.Error(), want1) || !strings.Contains(err.Error(), "(included from "+main+":2:10)") {
		t.Errorf("error in included file: %v\nwant %s", err, want1)
	}
}

func TestLoadSuiteMissing(t *testing.T) {
	_, err := LoadSuite("testdata/no-such.yaml")
	if err == nil || !strings.HasPrefix(err.Error(), "testdata/no-such.yaml: ") {
		t.Errorf("missing file: %v", err)
	}
}

func TestValueExpanderAndPaths(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "c.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	suite := `name: fake
models: [synthetic:tiny]
policies: [full]
tasks:
  - name: kvbench-test-fake
    corpus: c.txt
    n: 3
    xs: [1, 2]
    whole: [5, 6]
`
	s, err := ParseSuite(filepath.Join(dir, "s.yaml"), []byte(suite))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, c := range s.Cells() {
		keys = append(keys, c.Key)
		if c.TaskParams["corpus"] != filepath.Join(dir, "c.txt") {
			t.Errorf("corpus %v", c.TaskParams["corpus"])
		}
		if w, ok := c.TaskParams["whole"].([]any); !ok || len(w) != 2 {
			t.Errorf("whole %v, want the list passed whole", c.TaskParams["whole"])
		}
	}
	// n expands through ExpandValue (1..3), xs as a list; order as written,
	// the last parameter fastest.
	want := ""
	for n := 1; n <= 3; n++ {
		for x := 1; x <= 2; x++ {
			want += fmt.Sprintf("tiny/full/kvbench-test-fake(corpus=c.txt,n=%d,whole=[5,6],xs=%d)\n", n, x)
		}
	}
	if got := strings.Join(keys, "\n") + "\n"; got != want {
		t.Errorf("keys\n%s\nwant\n%s", got, want)
	}

	// A failing cell names the line of the element that fails.
	bad := strings.Replace(suite, "xs: [1, 2]", "xs: [1,\n      200]", 1)
	_, err = ParseSuite(filepath.Join(dir, "s.yaml"), []byte(bad))
	if want := filepath.Join(dir, "s.yaml") + ":9:7: task kvbench-test-fake: parameter xs: 200 is out of range"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v\nwant %s", err, want)
	}
	// The same failure in several cells is reported once.
	if n := strings.Count(err.Error(), "\n"); n != 0 {
		t.Errorf("%d more errors: %v", n, err)
	}
}

func TestAliasesAndBareEntries(t *testing.T) {
	suite := `name: a
models:
  - synthetic:tiny
  - {name: small, path: "synthetic:small@2"}
policies:
  - full
  - {name: quest, budget: &b [64, 128]}
  - {name: oracle, budget: *b}
tasks:
  - {name: passkey, lengths: *b, depths: 0.25}
`
	s, err := ParseSuite("a.yaml", []byte(suite))
	if err != nil {
		t.Fatal(err)
	}
	if s.Models[0].Name != "tiny" || s.Models[1].Path != "synthetic:small@2" {
		t.Errorf("models %+v", s.Models)
	}
	cells := s.Cells()
	if len(cells) != 2*5*2 {
		t.Errorf("%d cells", len(cells))
	}
	if cells[len(cells)-1].Key != "small/oracle(budget=128)/passkey(depths=0.25,lengths=128)" {
		t.Errorf("last key %s", cells[len(cells)-1].Key)
	}
}

func TestPolicyValuesCanonical(t *testing.T) {
	// "64" and 64 are the same configuration once the policy reads them.
	_, err := ParseSuite("s.yaml", []byte(edit(5, "  - {name: quest, budget: \"64\"}\n  - {name: quest, budget: 64.0}")))
	if err == nil || !strings.Contains(err.Error(), "s.yaml:6:5: policy quest(budget=64) repeats the configuration of s.yaml:5:5") {
		t.Errorf("got %v", err)
	}
	s, err := ParseSuite("s.yaml", []byte(edit(5, "  - {name: quest, budget: \"64\"}")))
	if err != nil {
		t.Fatal(err)
	}
	c := s.Cells()[0]
	if c.PolicyParams["budget"] != 64 || c.Key != "m/quest(budget=64)/passkey(lengths=64)" {
		t.Errorf("cell %+v", c)
	}
	_ = math.Inf
}

// TestKVLayout checks the KV layout fields: defaults, the key of a
// non-default layout, and the refusal of bf16 pages on the CPU.
func TestKVLayout(t *testing.T) {
	s, err := ParseSuite("suite.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if s.KVType != "f32" || s.PageSize != 16 {
		t.Errorf("defaults: kv_dtype %q page_size %d", s.KVType, s.PageSize)
	}
	plain := s.Cells()[0].Key
	s, err = ParseSuite("suite.yaml", []byte(strings.Replace(base, "name: t\n", "name: t\nbackend: cpu\nkv_dtype: bf16\npage_size: 32\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if k := s.Cells()[0].Key; k == plain || !strings.Contains(k, "@kv=bf16/32") {
		t.Errorf("key of a bf16/32 layout %q (f32/16: %q)", k, plain)
	}
	_, err = Run(context.Background(), s, RunOptions{Out: t.TempDir(), Quiet: true})
	if err == nil || !strings.Contains(err.Error(), "kv_dtype bf16 needs backend cuda") {
		t.Errorf("bf16 on the cpu backend: %v", err)
	}
}

// TestTaskPolicies checks a task entry's policies key: the task runs with
// those policies only, and names the suite lacks, an empty list or a
// non-string are errors naming the line.
func TestTaskPolicies(t *testing.T) {
	head := "name: s\nmodels: [{name: m, path: \"synthetic:tiny\"}]\npolicies:\n  - full\n  - {name: window, window: 64}\n  - {name: h2o, budget: [32, 64]}\ntasks:\n"
	s, err := ParseSuite("s.yaml", []byte(head+
		"  - {name: passkey, lengths: [512], depths: [0], trials: 1}\n"+
		"  - {name: perplexity, text: ../configs/data/river.txt, tokens: 64, policies: [full, window]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, c := range s.Cells() {
		count[c.Task+"/"+c.Policy]++
	}
	want := map[string]int{"passkey/full": 1, "passkey/window": 1, "passkey/h2o": 2, "perplexity/full": 1, "perplexity/window": 1}
	if fmt.Sprint(count) != fmt.Sprint(want) {
		t.Fatalf("cells %v, want %v", count, want)
	}
	for _, tc := range []struct{ task, want string }{
		{"{name: passkey, policies: [full, widow]}", `s.yaml:8:21: task passkey: policies: the suite has no policy "widow" (it has full, window, h2o); did you mean window?`},
		{"{name: passkey, policies: []}", "s.yaml:8:31: task passkey: policies: needs at least one policy name"},
		{"{name: passkey, policies: [{a: 1}]}", "s.yaml:8:32: task passkey: policies: want a string"},
	} {
		_, err := ParseSuite("s.yaml", []byte(head+"  - "+tc.task+"\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.task, err, tc.want)
		}
	}
}
