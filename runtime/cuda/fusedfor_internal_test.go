package cuda

import "testing"

// TestFusedFor checks which runtime calls merge in their split kernel under
// each setting of KVBENCH_ATTN_COMBINE.
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
		t.Setenv("KVBENCH_ATTN_COMBINE", c.env)
		if got := fusedFor(c.vg, c.nchunks); got != c.want {
			t.Errorf("KVBENCH_ATTN_COMBINE=%q, %d heads a row, %d chunks: fused %v, want %v", c.env, c.vg, c.nchunks, got, c.want)
		}
	}
}
