package bench

import (
	"os"
	"strings"
	"testing"
)

// FuzzParseSuite: arbitrary bytes never panic; every error names the suite
// file; a suite that parses expands into cells with unique keys.
func FuzzParseSuite(f *testing.F) {
	if data, err := os.ReadFile("testdata/example.yaml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte(base))
	for _, s := range []string{
		"",
		"---\n",
		"# only a comment\n",
		"name: x\n",
		"[1, 2]\n",
		"name: t\npolcies: []\n",
		"name: t\nseed: abc\nthreads: 1.5\nbackend: gpu\n",
		"name: t\nmodels: [{name: m, path: synthetic:tiny}, {name: m, path: synthetic:small}]\npolicies: [qest]\ntasks: [paskey]\n",
		"name: t\nmodels: [synthetic:tiny]\npolicies:\n  - {name: quest, budget: [64, 0, \"x\"], page: [1, 2]}\ntasks:\n  - {name: passkey, lengths: [64], depths: [0, 1.5]}\n",
		"name: t\nmodels: [synthetic:tiny]\npolicies: [full, full]\ntasks:\n  - {name: needle, haystack: testdata/text, lengths: [64], depths: 3}\n",
		"name: t\nmodels: [synthetic:tiny]\npolicies: [{name: window, window: &w [1, 2]}]\ntasks: [{name: passkey, lengths: *w}]\n",
		"a: &a [*a]\n",
		"name: t\ninclude: testdata/include/common.yaml\n",
		"name: t\ninclude: [.]\n",
		"name: {a: 1}\nmodels: 3\npolicies: {}\ntasks: x\n",
		"name: t\n  bad: indent\n",
		"name: t\n---\nname: u\n",
		"? [a]\n: b\n",
		"<<: {name: t}\n",
		"name: !!binary aGVsbG8=\nseed: !custom 1\n",
		"name: t\nseed: 99999999999999999999999\n",
		"name: t\nmodels: [{name: m, path: synthetic:tiny}]\npolicies: [full]\ntasks: [{name: perplexity, text: testdata/text, tokens: .inf}]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSuite("fuzz.yaml", data)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.Contains(line, "fuzz.yaml") {
					t.Fatalf("error line %q does not name the suite (all: %v)", line, err)
				}
			}
			return
		}
		cells := s.Cells()
		if len(cells) == 0 {
			t.Fatalf("valid suite without cells:\n%s", data)
		}
		keys := map[string]bool{}
		for _, c := range cells {
			if keys[c.Key] {
				t.Fatalf("repeated key %s", c.Key)
			}
			keys[c.Key] = true
		}
		Estimate(cells)
	})
}
