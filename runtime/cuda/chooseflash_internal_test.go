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
		hd         int
		want       flashShape
		err        string
	}{
		{"", "sm_90a", 128, flashShapes[flashWG], ""},
		{"", "sm_90a", 64, flashShapes[flashWG64], ""},
		{"", "sm_80", 128, flashShapes[flashMMA], ""},
		{"", "sm_89", 64, flashShapes[flashMMA], ""},
		{"w4m1n64", "sm_90a", 128, flashShape{4, 1, 64, false, 0, 0, 0, 0}, ""},
		{"g2n64kw", "sm_90a", 128, flashShape{8, 1, 64, true, 2, 1, 0, 0}, ""},
		{"g2n128s", "sm_90a", 64, flashShape{8, 1, 128, true, 0, 0, 0, 0}, ""},
		{"t3n64", "sm_90a", 128, flashShape{12, 1, 64, true, 0, 1, tmaWarp, 4}, ""},
		{"g2n128kw", "sm_80", 128, flashShape{}, "needs a Hopper GPU"},
		{"t2n64", "sm_80", 64, flashShape{}, "needs a Hopper GPU"},
		{"w9", "sm_90a", 64, flashShape{}, `"w9" is not one of g2n128kw, g2n128s, g2n128w, g2n64kw, g3n64kw, g3n64w, p2n128, p2n64, t2n128, t2n64, t3n64, w4m1n64`},
	} {
		got, err := chooseFlash(c.name, c.arch, c.hd)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("chooseFlash(%q, %q, %d): error %v, want one with %q", c.name, c.arch, c.hd, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("chooseFlash(%q, %q, %d) = %+v, %v; want %+v", c.name, c.arch, c.hd, got, err, c.want)
		}
	}
	for name, f := range flashShapes {
		k, smem := f.kernel(128)
		if smem <= 0 || smem > 227<<10 || !strings.Contains(k, "_d128_") {
			t.Errorf("%s: kernel %s with %d bytes of shared memory", name, k, smem)
		}
	}
	if k, smem := flashShapes["g2n128kw"].kernel(128); k != "flash_wg_d128_g2_n128_m2_w1" || smem != 128*128*2+6*128*128*2+3*128*4+3*2*16*8+(2+16)*4 {
		t.Errorf("g2n128kw: %s, %d bytes", k, smem)
	}
	if k, smem := flashShapes["g2n128w"].kernel(64); k != "flash_wg_d64_g2_n128_m0_w1" || smem != 128*64*2+2*128*64*4+2*128*4+2*2*16*8+(2+16)*4 {
		t.Errorf("g2n128w: %s, %d bytes", k, smem)
	}
	if k, smem := flashShapes["g3n64w"].kernel(128); k != "flash_wg_d128_g3_n64_m0_w1" || smem != 192*128*2+2*64*128*4+2*64*4+2*2*16*8+(2+24)*4 {
		t.Errorf("g3n64w: %s, %d bytes", k, smem)
	}
	// flash_tma: NS stages of K, V and positions, 2*NS mbarriers (TMA_SMEM).
	if k, smem := flashShapes["t3n64"].kernel(128); k != "flash_tma_d128_g3_n64_s4" || smem != 192*128*2+4*64*128*4+4*64*4+4*2*8+(2+24)*4 {
		t.Errorf("t3n64: %s, %d bytes", k, smem)
	}
	if k, smem := flashShapes["t2n128"].kernel(64); k != "flash_tma_d64_g2_n128_s3" || smem != 128*64*2+3*128*64*4+3*128*4+3*2*8+(2+16)*4 {
		t.Errorf("t2n128: %s, %d bytes", k, smem)
	}
	if k, n := flashShapes["p2n64"].kernel(128); k != "flash_tma_d128_g2_n64_s4_p" || flashShapes["p2n64"].threads() != 384 || flashShapes["t3n64"].threads() != 416 {
		t.Errorf("p2n64: %s (%d bytes), %d threads; t3n64 %d", k, n, flashShapes["p2n64"].threads(), flashShapes["t3n64"].threads())
	}
	if r := flashShapes["g2n64kw"].rows(); r != 128 {
		t.Errorf("g2n64kw: %d rows a block, want 128", r)
	}
}
