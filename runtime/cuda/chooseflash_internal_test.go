package cuda

import (
	"strings"
	"testing"
)

// TestChooseFlash: the default prefill kernel by architecture, names from
// KVBENCH_FLASH, and the errors for unknown names and for wgmma variants off
// Hopper.
func TestChooseFlash(t *testing.T) {
	for _, c := range []struct {
		name, arch string
		want       flashShape
		err        string
	}{
		{"", "sm_90a", flashShapes[flashWG], ""},
		{"", "sm_80", flashShapes[flashMMA], ""},
		{"", "sm_89", flashShapes[flashMMA], ""},
		{"w4m1n64", "sm_90a", flashShape{4, 1, 64, false, 0}, ""},
		{"g2n64k", "sm_90a", flashShape{8, 1, 64, true, 2}, ""},
		{"g2n128k", "sm_80", flashShape{}, "needs a Hopper GPU"},
		{"w9", "sm_90a", flashShape{}, `"w9" is not one of g2n128, g2n128k, g2n128s, g2n64k, w4m1n64`},
	} {
		got, err := chooseFlash(c.name, c.arch)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("chooseFlash(%q, %q): error %v, want one with %q", c.name, c.arch, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("chooseFlash(%q, %q) = %+v, %v; want %+v", c.name, c.arch, got, err, c.want)
		}
	}
	for name, f := range flashShapes {
		k, smem := f.kernel(128)
		if smem <= 0 || smem > 227<<10 || !strings.Contains(k, "_d128_") {
			t.Errorf("%s: kernel %s with %d bytes of shared memory", name, k, smem)
		}
	}
	if k, smem := flashShapes["g2n128"].kernel(128); k != "flash_wg_d128_g2_n128_m1" || smem != 128*128*2+6*128*128*2+3*128*4 {
		t.Errorf("g2n128: %s, %d bytes", k, smem)
	}
	if r := flashShapes["g2n64k"].rows(); r != 128 {
		t.Errorf("g2n64k: %d rows a block, want 128", r)
	}
}
