package cuda

import "testing"

// TestUseTC: the default choice of the tensor-core kernel for lean calls
// (groups of 4 or more at every length; of 1 or 2 from 8,192 tokens where
// the memory gives 16 bytes a multiprocessor cycle or more, or where that
// is unknown, as on the H200's 18.8, never on the H100's 12.8) and
// KVBENCH_ATTN_TC's values.
func TestUseTC(t *testing.T) {
	for _, c := range []struct {
		vg, longest int
		rate        float64
		want        bool
	}{{1, 600, 18.8, false}, {2, 8191, 18.8, false}, {1, 8192, 18.8, true}, {2, 131072, 18.8, true}, {4, 1, 18.8, true},
		{8, 600, 18.8, true}, {4, 131072, 18.8, true}, {1, 8192, 0, true}, {1, 8192, 12.8, false}, {2, 131072, 12.8, false},
		{4, 600, 12.8, true}, {8, 131072, 12.8, true}, {1, 8192, 16, true}} {
		if got := useTC(c.vg, c.longest, c.rate); got != c.want {
			t.Errorf("useTC(%d, %d, %g) = %v, want %v", c.vg, c.longest, c.rate, got, c.want)
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
