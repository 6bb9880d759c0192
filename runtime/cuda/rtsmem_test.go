package cuda

import "testing"

// TestRtSmem checks the shared memory the host gives attn_rt blocks
// (attn_rt_row's layout) and that a lean call (no selection, no positions:
// a decode step's full attention) leaves the chunk of one wave at 128K
// tokens within the 48 KiB a block may take: on a GPU of 132
// multiprocessors with 4 resident blocks each, 8 split rows of 131,073
// tokens need chunks of 2016 tokens. Before lean calls every call staged
// token ids and positions, the chunk was lowered to 1952 and the grid took
// a second wave.
func TestRtSmem(t *testing.T) {
	for _, c := range []struct {
		vg, hd, chunk, ps int
		shifted, lean     bool
		want              int
	}{
		{4, 128, 512, 16, false, false, 4*(4*512+2*512) + 16*(512/16+2)},
		{4, 128, 512, 16, false, true, 4*4*512 + 16*(512/16+2)},
		{4, 128, 512, 16, true, true, 4*(4*512+512+64) + 16*(512/16+2)},
		{4, 128, 512, 16, true, false, 4*(4*512+3*512+64) + 16*(512/16+2)},
		{1, 128, 32, 16, false, true, 4 * attnThreads / 32 * 128}, // the warps' partial outputs
		{1, 64, 32, 16, false, true, 16 * attnThreads},            // the fused merge's room
	} {
		if got := rtSmem(c.vg, c.hd, c.chunk, c.ps, c.shifted, c.lean); got != c.want {
			t.Errorf("rtSmem(%d, %d, %d, %d, %v, %v) = %d, want %d", c.vg, c.hd, c.chunk, c.ps, c.shifted, c.lean, got, c.want)
		}
	}
	const sms, resident, rows, tokens = 132, 4, 8, 131073
	perRow := sms * resident / rows
	chunk := (tokens + perRow - 1) / perRow
	chunk = (chunk + minChunkTokens - 1) / minChunkTokens * minChunkTokens
	if n := (tokens + chunk - 1) / chunk * rows; n > sms*resident {
		t.Fatalf("chunk %d: %d blocks for %d slots", chunk, n, sms*resident)
	}
	const static = 256 // attn_rt_d128_g4_bf16's static shared memory (ptxas, sm_80)
	if got := rtSmem(4, 128, chunk, 16, false, true); got > maxAttnSmemB-static {
		t.Errorf("lean call, chunk %d: %d B of shared memory, more than %d", chunk, got, maxAttnSmemB-static)
	}
	if got := rtSmem(4, 128, chunk, 16, false, false); got <= maxAttnSmemB-static {
		t.Errorf("staging call, chunk %d: %d B of shared memory; the case this test guards no longer arises", chunk, got)
	}
}
