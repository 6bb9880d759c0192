package cuda

import (
	"strings"
	"testing"
)

// TestTraceSummary lays out a trace's words (two split rows of two
// chunks, two combine blocks) and checks the summary's numbers against
// those worked out by hand.
func TestTraceSummary(t *testing.T) {
	const base = 1_000_000
	// start, staged, first tile, tiles done, end (ns after base); SM, tiles,
	// tokens; maxima formed, outputs in shared memory (ns after base).
	blocks := [][traceWords]uint64{
		{0, 1000, 2000, 30000, 31000, 3, 16, 1024, 30100, 30400},
		{500, 1500, 2500, 32500, 33000, 3, 16, 1024, 32700, 32800},
		{1000, 2000, 4000, 34000, 34500, 7, 16, 1024, 34200, 34300},
		{0, 800, 0, 900, 1200, 9, 0, 0, 0, 0}, // no tile: first tile unset, no inner stamps
	}
	var w []uint64
	for _, b := range blocks {
		for i, x := range b {
			if (i < 5 || i >= 8) && (x != 0 || i == 0) {
				x += base
			}
			w = append(w, x)
		}
	}
	w = append(w, base+34000, base+36000, base+34100, base+37000)
	a := parseTrace("attn_rt_d128_g4_bf16_tc", 2, 2, 2, w)
	if len(a.Blocks) != 4 || len(a.Combine) != 2 || a.Blocks[2].SM != 7 || a.Blocks[1].Tokens != 1024 {
		t.Fatalf("parsed %+v", a)
	}
	got := a.Summary()
	for _, want := range []string{
		"attn_rt_d128_g4_bf16_tc: 4 of 4 blocks on 3 multiprocessors",
		"start 0.00..0.50..1.00", // starts 0, 0, 0.5, 1
		"stage 1.00/1.00",        // 1, 1, 1, 0.8: median (of 4, upper) 1
		"first tile 1.00/2.00",   // 1, 1, 2
		"tiles 30.00/30.00",      // 28, 30, 30
		"partial 0.50/1.00",      // 1, 0.5, 0.5, 0.3
		// the three blocks with inner stamps: maxima 0.1, 0.2, 0.2; to shared
		// 0.3, 0.1, 0.1; sums and stores 0.6, 0.2, 0.2
		"(maxima 0.20/0.20, to shared 0.10/0.30, sums and stores 0.20/0.60)",
		"end 1.20..33.00..34.50", // 31, 33, 34.5, 1.2
		"combine (2 blocks) ends 36.00..37.00..37.00",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary %q lacks %q", got, want)
		}
	}
	// attn_rt stamps no first tile: its passes count from the staging.
	rt := parseTrace("attn_rt_d128_g1_bf16", 1, 1, 0, []uint64{base, base + 1000, 0, base + 5000, base + 5500, 2, 0, 32, 0, 0})
	if s := rt.Summary(); !strings.Contains(s, "first tile -; tiles 4.00/4.00; partial 0.50/0.50; end 5.50..5.50..5.50") {
		t.Errorf("attn_rt's summary: %q", s)
	}
	empty := parseTrace("attn_rt_d128_g1_bf16", 1, 2, 0, make([]uint64, 2*traceWords))
	if s := empty.Summary(); !strings.Contains(s, "no block wrote a trace") {
		t.Errorf("an empty trace's summary: %q", s)
	}
}
