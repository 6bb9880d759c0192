package cuda

import "testing"

// TestPollFor: the polled merge takes a row merged in the kernel over 2 to
// pollChunks chunks where the whole grid is resident at once, with the
// switch on and outside a recorded graph; never otherwise.
func TestPollFor(t *testing.T) {
	for _, c := range []struct{ vg, hd, want int }{{1, 64, 16}, {1, 128, 16}, {2, 64, 16}, {2, 128, 8}, {4, 64, 8}, {4, 128, 4}, {8, 128, 4}} {
		if got := pollChunks(c.vg, c.hd); got != c.want {
			t.Errorf("pollChunks(%d, %d) = %d, want %d", c.vg, c.hd, got, c.want)
		}
	}
	b := &Backend{D: &Device{SMs: 132}}
	for _, c := range []struct {
		vg, hd, nchunks, nsrows, resident int
		capturing, off                    bool
		want                              bool
	}{
		{1, 64, 9, 32, 3, false, false, true},
		{1, 64, 16, 32, 4, false, false, true},
		{1, 64, 17, 32, 3, false, false, false}, // past one merge group
		{4, 128, 5, 8, 3, false, false, false},  // more than a round of loads a thread
		{4, 128, 4, 8, 3, false, false, true},
		{1, 128, 16, 32, 1, false, false, false}, // 512 blocks, 132 resident
		{1, 128, 12, 33, 3, false, false, true},  // 396 blocks, 396 resident
		{1, 128, 13, 33, 3, false, false, false}, // 429 blocks
		{1, 64, 1, 32, 3, false, false, false},   // one chunk: nothing to merge
		{1, 64, 9, 32, 3, true, false, false},    // inside a graph's capture
		{1, 64, 9, 32, 3, false, true, false},    // KVBENCH_ATTN_POLL=off
	} {
		b.capturing, b.poll.off = c.capturing, c.off
		if got := b.pollFor(c.vg, c.hd, c.nchunks, c.nsrows, c.resident); got != c.want {
			t.Errorf("pollFor(%+v) = %v, want %v", c, got, c.want)
		}
	}
}
