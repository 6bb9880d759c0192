package cuda

import (
	"strings"
	"testing"
)

// TestFusedFor checks which split rows merge in their split kernel under
// each mode of KVBENCH_ATTN_COMBINE, and that combineOf refuses others:
// by default MHA rows, 32 or more of them over any chunks, fewer over at
// most 16 chunks (one level of merges).
func TestFusedFor(t *testing.T) {
	cases := []struct {
		env              string
		vg, rows, chunks int
		want             bool
	}{
		{"", 1, 32, 65, true}, {"", 1, 64, 17, true}, {"", 1, 8, 9, true}, {"", 1, 16, 16, true},
		{"", 1, 16, 17, false}, {"", 1, 8, 33, false}, {"", 1, 31, 17, false},
		{"", 4, 32, 9, false}, {"", 8, 4, 2, false},
		{"separate", 1, 32, 9, false}, {"fused", 4, 8, 33, true}, {"fused", 1, 8, 33, true},
	}
	for _, c := range cases {
		if got := fusedFor(c.env, c.vg, c.rows, c.chunks); got != c.want {
			t.Errorf("KVBENCH_ATTN_COMBINE=%q, %d heads a row, %d rows of %d chunks: fused %v, want %v", c.env, c.vg, c.rows, c.chunks, got, c.want)
		}
	}
	t.Setenv(combineEnv, "short")
	if _, err := combineOf(); err == nil || !strings.Contains(err.Error(), combineEnv) {
		t.Errorf("KVBENCH_ATTN_COMBINE=short: error %v, want one naming the variable", err)
	}
}
