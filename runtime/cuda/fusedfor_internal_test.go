package cuda

import (
	"strings"
	"testing"
)

// TestFusedFor checks which split rows merge in their split kernel under
// each mode of KVBENCH_ATTN_COMBINE, and that combineOf refuses others.
func TestFusedFor(t *testing.T) {
	cases := []struct {
		env  string
		vg   int
		want bool
	}{
		{"", 1, true}, {"", 4, false}, {"", 8, false},
		{"separate", 1, false}, {"fused", 4, true}, {"fused", 1, true},
	}
	for _, c := range cases {
		if got := fusedFor(c.env, c.vg); got != c.want {
			t.Errorf("KVBENCH_ATTN_COMBINE=%q, %d heads a row: fused %v, want %v", c.env, c.vg, got, c.want)
		}
	}
	t.Setenv(combineEnv, "short")
	if _, err := combineOf(); err == nil || !strings.Contains(err.Error(), combineEnv) {
		t.Errorf("KVBENCH_ATTN_COMBINE=short: error %v, want one naming the variable", err)
	}
}
