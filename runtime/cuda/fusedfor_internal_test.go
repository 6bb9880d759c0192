package cuda

import (
	"strings"
	"testing"
)

// TestFusedFor checks which split rows merge in their split kernel under
// each mode of KVBENCH_ATTN_COMBINE, and that combineOf refuses others.
func TestFusedFor(t *testing.T) {
	cases := []struct {
		env         string
		vg, nchunks int
		want        bool
	}{
		{"", 1, 8, true}, {"", 4, 8, false}, {"", 4, 2, false},
		{"separate", 1, 8, false}, {"fused", 4, 40, true},
		{"short", 1, 40, true}, {"short", 4, 1, false}, {"short", 4, 2, true},
		{"short", 4, fusedMaxChunks, true}, {"short", 4, fusedMaxChunks + 1, false}, {"short", 8, 5, true},
	}
	for _, c := range cases {
		if got := fusedFor(c.env, c.vg, c.nchunks); got != c.want {
			t.Errorf("KVBENCH_ATTN_COMBINE=%q, %d heads a row, %d chunks: fused %v, want %v", c.env, c.vg, c.nchunks, got, c.want)
		}
	}
	t.Setenv(combineEnv, "shrot")
	if _, err := combineOf(); err == nil || !strings.Contains(err.Error(), combineEnv) {
		t.Errorf("KVBENCH_ATTN_COMBINE=shrot: error %v, want one naming the variable", err)
	}
}
