package policies_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/policies"
)

// Every policy runs with no parameters, and the defaults it resolves are
// the ones its documentation (kvbench list) states.
func TestDefaults(t *testing.T) {
	for _, name := range policies.Names() {
		spec, err := policies.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		p, err := policies.New(name, nil)
		if err != nil {
			t.Errorf("%s without parameters: %v", name, err)
			continue
		}
		got := p.Params()
		for _, d := range spec.Params {
			if d.Default == "" {
				t.Errorf("%s: parameter %s has no documented default", name, d.Name)
				continue
			}
			v, resolved := got[d.Name]
			if d.Default == policies.NoDefault {
				if resolved {
					t.Errorf("%s: parameter %s has no default but resolves to %v without parameters", name, d.Name, v)
				}
				continue
			}
			if !resolved {
				// h2o's ratios apply only when one is given.
				if name == "h2o" && strings.HasSuffix(d.Name, "_ratio") {
					continue
				}
				t.Errorf("%s: parameter %s (default %s) is not among the resolved parameters %v", name, d.Name, d.Default, got)
				continue
			}
			if s := fmt.Sprint(v); s != d.Default {
				t.Errorf("%s: parameter %s resolves to %s, documented default %s", name, d.Name, s, d.Default)
			}
		}
		for k := range got {
			documented := false
			for _, d := range spec.Params {
				documented = documented || d.Name == k
			}
			if !documented {
				t.Errorf("%s: resolved parameter %s is not documented", name, k)
			}
		}
		if name != "full" && p.Budget() != 256 {
			t.Errorf("%s: default budget %d, want 256 (every policy's defaults keep or read 256 tokens)", name, p.Budget())
		}
		// Every budgeted policy documents the shared knob, and full none.
		has := map[string]bool{}
		for _, d := range spec.Params {
			has[d.Name] = true
		}
		if budgeted := name != "full"; has["budget"] != budgeted || has["ratio"] != budgeted {
			t.Errorf("%s: documents budget %v and ratio %v, want %v", name, has["budget"], has["ratio"], budgeted)
		}
		if name != "full" && got["budget"] != 256 {
			t.Errorf("%s: resolved budget parameter %v, want 256", name, got["budget"])
		}
	}
	// A budget given in part keeps the other default.
	p, err := policies.New("h2o", policies.Params{"heavy": 64})
	if err != nil || p.Budget() != 64+128 {
		t.Errorf("h2o heavy 64: %v, budget %v", err, p)
	}
}
