package cuda

import "testing"

// TestUseTC: the default choice of the tensor-core kernel for lean calls
// (groups of 4 or more, chunks of at most tcMaxChunk) and KVBENCH_ATTN_TC's
// values.
func TestUseTC(t *testing.T) {
	for _, c := range []struct {
		vg, chunk int
		want      bool
	}{
		{4, 32, true}, {4, tcMaxChunk, true}, {4, tcMaxChunk + 32, false}, {8, 64, true},
		{2, 32, false}, {1, 32, false}, {8, 4000, false},
	} {
		if got := useTC(c.vg, c.chunk); got != c.want {
			t.Errorf("useTC(%d, %d) = %v, want %v", c.vg, c.chunk, got, c.want)
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
