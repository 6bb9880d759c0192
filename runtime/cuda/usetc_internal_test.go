package cuda

import "testing"

// TestUseTC: the default choice of the tensor-core kernel for lean calls
// (groups of 4 or more at every length; rows of one head at every length
// where there are at most 16 of them; groups of 1 or 2 from 8,192 tokens,
// or from 32,768 where the memory is slow, as the H100's 12.8 bytes a
// multiprocessor cycle are and the H200's 18.8 or unknown figures are not;
// rows of one head of 385-896 tokens where the memory is slow) and
// KVBENCH_ATTN_TC's values.
func TestUseTC(t *testing.T) {
	for _, c := range []struct {
		vg, rows, longest, hd int
		slow                  bool
		want                  bool
	}{{1, 32, 600, 128, false, false}, {2, 16, 8191, 128, false, false}, {1, 32, 8192, 128, false, true}, {2, 16, 131072, 128, false, true},
		{4, 8, 1, 128, false, true}, {8, 4, 600, 64, false, true}, {4, 8, 131072, 128, false, true}, {1, 32, 8192, 128, true, true},
		{2, 16, 32767, 128, true, true}, {2, 16, 32768, 64, true, true}, {1, 32, 131072, 128, true, true}, {4, 8, 600, 128, true, true}, {8, 4, 131072, 128, true, true},
		{1, 16, 600, 128, true, true}, {1, 8, 512, 128, false, true}, {1, 17, 1200, 128, true, false}, {2, 8, 600, 128, true, true},
		{1, 16, 131072, 128, true, true}, {1, 32, 32767, 128, true, true},
		// rows of one head of 128 on slow memory: 321-960 tokens and from 1,793
		{1, 32, 513, 128, true, true}, {1, 32, 769, 128, true, true}, {1, 32, 385, 128, true, true}, {1, 32, 960, 128, true, true},
		{1, 32, 320, 128, true, false}, {1, 32, 961, 128, true, false}, {1, 32, 1025, 128, true, false}, {1, 32, 257, 128, true, false},
		{1, 32, 1792, 128, true, false}, {1, 32, 1793, 128, true, true}, {1, 32, 4097, 128, true, true},
		// of 64, and rows of two heads: every length
		{1, 32, 257, 64, true, true}, {1, 32, 1, 64, true, true}, {1, 32, 3073, 64, true, true}, {1, 32, 4097, 64, true, true},
		{1, 32, 16385, 64, true, true}, {2, 16, 257, 64, true, true}, {2, 16, 513, 128, true, true}, {2, 16, 16385, 128, true, true},
		// fast memory: from 8K
		{1, 32, 513, 128, false, false}, {1, 32, 513, 64, false, false}, {2, 16, 513, 64, false, false}, {2, 16, 8191, 64, false, false},
		// groups of 3 (none between 2 and 4 today): as before, from 32K on slow memory
		{3, 16, 8192, 128, true, false}, {3, 16, 32768, 128, true, true}} {
		if got := useTC(c.vg, c.rows, c.longest, c.hd, c.slow); got != c.want {
			t.Errorf("useTC(%d, %d rows, %d tokens, heads of %d, slow %v) = %v, want %v", c.vg, c.rows, c.longest, c.hd, c.slow, got, c.want)
		}
	}
	for _, c := range []struct {
		clock, bus int
		slow       bool
	}{{3201000, 6144, false}, {2619000, 5120, true}, {0, 0, false}, {3201000, 0, false}} {
		d := &Device{SMs: 132, ClockKHz: 1980000, MemClockKHz: c.clock, MemBusBits: c.bus}
		if got := slowMemory(d); got != c.slow {
			t.Errorf("memory %d kHz over %d bits (%.1f bytes a cycle): slow %v, want %v", c.clock, c.bus, d.MemBytesPerSMCycle(), got, c.slow)
		}
	}
	if slowMemory(nil) {
		t.Error("no device: slow memory")
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

// TestTCSlotsFor: one block a multiprocessor for one stream's groups of 4 or
// more heads of 128 where the memory is slow; two for heads of 64, rows of
// one or two heads, a batch of streams, or fast memory; and
// $KVBENCH_ATTN_TC_SLOTS (tcSlots 0 or more) over all of them.
func TestTCSlotsFor(t *testing.T) {
	for _, c := range []struct {
		env, hd, vg   int
		slow, batched bool
		want          int
	}{
		{-1, 128, 4, true, false, 1}, {-1, 128, 8, true, false, 1}, {-1, 128, 4, false, false, 2},
		{-1, 128, 4, true, true, 2}, {-1, 64, 4, true, false, 2}, {-1, 128, 1, true, false, 2},
		{-1, 128, 2, true, false, 2}, {0, 128, 4, true, false, 0}, {2, 128, 4, true, false, 2},
		{3, 64, 1, false, true, 3},
	} {
		s := splitState{tcSlots: c.env, slowMem: c.slow}
		if got := s.tcSlotsFor(c.hd, c.vg, c.batched); got != c.want {
			t.Errorf("tcSlots %d, heads of %d in groups of %d, slow memory %v, batched %v: %d, want %d",
				c.env, c.hd, c.vg, c.slow, c.batched, got, c.want)
		}
	}
}

// TestVersionAtLeast: the CUDA versions that take kernel parameters of
// 32 KB (rtbBoxWords: 12.1 on) and those that do not parse.
func TestVersionAtLeast(t *testing.T) {
	for v, want := range map[string]bool{"12.1": true, "12.0": false, "13.0": true, "11.8": false, "12.10": true, "": false, "x.y": false} {
		if got := versionAtLeast(v, 12, 1); got != want {
			t.Errorf("versionAtLeast(%q, 12, 1) = %v, want %v", v, got, want)
		}
	}
}
