package cuda

import "testing"

// TestUseTC: the default choice of the tensor-core kernel for lean calls
// (groups of 4 or more) and KVBENCH_ATTN_TC's values.
func TestUseTC(t *testing.T) {
	for vg, want := range map[int]bool{1: false, 2: false, 4: true, 8: true} {
		if got := useTC(vg); got != want {
			t.Errorf("useTC(%d) = %v, want %v", vg, got, want)
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
