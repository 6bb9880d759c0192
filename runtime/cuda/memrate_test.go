package cuda_test

import (
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestDeviceMemRateGPU: the driver's memory clock and bus width give a
// plausible peak bandwidth, and the bytes a multiprocessor cycle that
// choose the decode kernel of MHA rows (useTC) fall on the side measured:
// under 16 on an H100 SXM (80GB HBM3), 16 or more on an H200. Logs the
// figures. Skips without a GPU.
func TestDeviceMemRateGPU(t *testing.T) {
	if ok, why := cuda.Available(); !ok {
		t.Skip("no CUDA device: " + why)
	}
	d, err := cuda.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	bw, rate := d.MemBandwidth(), d.MemBytesPerSMCycle()
	t.Logf("%s: %d MHz, memory %d MHz over %d bits: %.2f TB/s, %.1f bytes a multiprocessor cycle",
		d.Name, d.ClockKHz/1000, d.MemClockKHz/1000, d.MemBusBits, bw/1e12, rate)
	if bw < 0.3e12 || bw > 20e12 || rate < 1 || rate > 100 {
		t.Fatalf("implausible: %.3g bytes/s, %.3g bytes a cycle (%+v)", bw, rate, d)
	}
	switch {
	case strings.Contains(d.Name, "H100 80GB HBM3") && rate >= 16:
		t.Errorf("%s: %.1f bytes a cycle, want under 16 (MHA rows on attn_rt)", d.Name, rate)
	case strings.Contains(d.Name, "H200") && rate < 16:
		t.Errorf("%s: %.1f bytes a cycle, want 16 or more (MHA rows on the tensor cores from 8K)", d.Name, rate)
	}
}
