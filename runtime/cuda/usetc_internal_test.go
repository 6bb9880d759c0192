package cuda

import "testing"

// TestUseTC: the default choice of the tensor-core kernel for lean calls
// (groups of 4 or more at every length, of 1 or 2 from 8,192 tokens) and
// KVBENCH_ATTN_TC's values.
func TestUseTC(t *testing.T) {
	for _, c := range []struct {
		vg, longest int
		want        bool
	}{{1, 600, false}, {2, 8191, false}, {1, 8192, true}, {2, 131072, true}, {4, 1, true}, {8, 600, true}, {4, 131072, true}} {
		if got := useTC(c.vg, c.longest); got != c.want {
			t.Errorf("useTC(%d, %d) = %v, want %v", c.vg, c.longest, got, c.want)
		}
	}
	for v, want := range map[string]tcMode{"": tcAuto, "auto": tcAuto, "on": tcOn, "off": tcOff} {
		t.Setenv("KVBENCH_ATTN_TC", v)
		if got, err := tcModeOf(); err != nil || got != want {
			t.Errorf("KVBENCH_ATTN_TC=%q: %v, %v; want %v", v, got, err, want)
		}
	}
	t.Setenv("KVBENCH_ATTN_TC", "yes")
	if _, err := tcModeOf(); err == nil {
		t.Error("KVBENCH_ATTN_TC=yes accepted")
	}
}
