package cuda

import (
	"strings"
	"testing"
)

// TestFusedFor checks which split rows merge in their split kernel under
// each mode of KVBENCH_ATTN_COMBINE, and that combineOf refuses others:
// by default MHA rows, 32 or more of them over any chunks, fewer over at
// most 16 chunks (one level of merges), rows of 4 heads on the tensor
// cores over at most 16 chunks, and 32 rows or more of up to 4 heads on
// the tensor cores over at most 4 chunks (a batch's), and 24 rows or more
// of 8 heads on the tensor cores over at most 16.
func TestFusedFor(t *testing.T) {
	cases := []struct {
		env              string
		vg, rows, chunks int
		tc               bool
		want             bool
	}{
		{"", 1, 32, 65, false, true}, {"", 1, 64, 17, true, true}, {"", 1, 8, 9, true, true}, {"", 1, 16, 16, false, true},
		{"", 1, 16, 17, true, false}, {"", 1, 8, 33, false, false}, {"", 1, 31, 17, false, false},
		{"", 4, 8, 9, true, true}, {"", 4, 8, 16, true, true}, {"", 4, 8, 17, true, false}, {"", 4, 32, 65, true, false},
		{"", 4, 8, 9, false, false}, {"", 2, 16, 9, true, false}, {"", 8, 4, 9, true, false}, {"", 8, 4, 2, false, false},
		{"", 2, 128, 2, true, true}, {"", 2, 128, 4, true, true}, {"", 8, 32, 4, true, true}, {"", 8, 24, 16, true, true}, {"", 8, 24, 17, true, false}, {"", 8, 23, 5, true, false}, {"", 8, 96, 2, false, false}, {"", 2, 128, 5, true, false}, {"", 2, 31, 2, true, false},
		{"", 2, 128, 2, false, false}, {"", 4, 64, 3, false, false},
		{"separate", 1, 32, 9, false, false}, {"separate", 4, 8, 9, true, false},
		{"fused", 4, 8, 33, true, true}, {"fused", 1, 8, 33, false, true}, {"fused", 8, 4, 33, false, true},
	}
	for _, c := range cases {
		if got := fusedFor(c.env, c.vg, c.rows, c.chunks, c.tc); got != c.want {
			t.Errorf("KVBENCH_ATTN_COMBINE=%q, %d heads a row, %d rows of %d chunks, tensor cores %v: fused %v, want %v",
				c.env, c.vg, c.rows, c.chunks, c.tc, got, c.want)
		}
	}
	t.Setenv(combineEnv, "short")
	if _, err := combineOf(); err == nil || !strings.Contains(err.Error(), combineEnv) {
		t.Errorf("KVBENCH_ATTN_COMBINE=short: error %v, want one naming the variable", err)
	}
}
