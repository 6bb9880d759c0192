package cuda_test

import (
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestFakeMHARows: rows of one head (MHA) take the tensor-core kernel where
// a launch has at most 16 of them (useTC), and merge in the split kernel
// where there are 32 or more or each has at most 16 chunks, else in the
// combine launch (fusedFor), on the fake device's 132 multiprocessors:
// 8/8 heads of 128 in 9 chunks of 64 at 513 tokens and 16 of 128 at 2,048
// (in the kernel, polled; counted with KVBENCH_ATTN_POLL=off), 17 at 2,049
// (combine); heads of 64 in 17 chunks of 64 at 1,025 (combine); 16/16 in 9
// of 128 at 1,025 (polled); 32/32 on attn_rt, fused (counted: more chunks
// than a polled merge takes); KVBENCH_ATTN_TC and KVBENCH_ATTN_COMBINE
// still force either way;
// a batch step of 2 streams of 8/8 heads (16 rows) takes the tensor-core
// kernel and so does one of 4 (32 rows: a batch's rows of one head take
// it however many, batchTC), unless KVBENCH_ATTN_TC=off.
func TestFakeMHARows(t *testing.T) {
	for _, c := range []struct {
		heads, hd, tokens int
		env, val          string
		tc                bool
		chunks            int // chunks a row (0: not checked)
		merge             string
	}{
		{8, 128, 513, "", "", true, 9, "polled"},
		{8, 128, 513, "KVBENCH_ATTN_POLL", "off", true, 9, "fused"},
		{8, 128, 2048, "", "", true, 16, "polled"},
		{8, 128, 2049, "", "", true, 17, "combine"},
		{8, 64, 1025, "", "", true, 17, "combine"},
		{16, 128, 1025, "", "", true, 9, "polled"},
		{32, 128, 1025, "", "", false, 0, "fused"},
		{8, 128, 2049, "KVBENCH_ATTN_TC", "off", false, 0, "combine"},
		{32, 128, 1025, "KVBENCH_ATTN_COMBINE", "separate", false, 0, "combine"},
		{8, 128, 2049, "KVBENCH_ATTN_COMBINE", "fused", true, 17, "fused"},
	} {
		name := "default"
		if c.env != "" {
			name = c.env + "=" + c.val
			t.Setenv(c.env, c.val)
		}
		p := decodePlan(t, c.heads, c.heads, c.hd, c.tokens)
		if c.env != "" {
			t.Setenv(c.env, "")
		}
		if strings.HasSuffix(p.Kernel, "_tc") != c.tc || p.Merge != c.merge || p.Rows != c.heads ||
			c.chunks > 0 && p.Blocks != c.chunks*p.Rows {
			t.Errorf("%d/%d heads of %d at %d tokens (%s): %+v; want tensor cores %v, %d chunks a row, merge %q",
				c.heads, c.heads, c.hd, c.tokens, name, p, c.tc, c.chunks, c.merge)
		}
	}
	batchPlan := func(streams int) cuda.Plan { return batchStepPlan(t, 8, streams, func(i int) int { return 600 + 7*i }) }
	if two, four := batchPlan(2), batchPlan(4); !strings.HasSuffix(two.Kernel, "_tc") || two.Rows != 16 ||
		!strings.HasSuffix(four.Kernel, "_tc") || four.Rows != 32 {
		t.Errorf("batch steps of 2 and 4 streams of 8/8 heads: %+v and %+v; want the tensor cores for both", two, four)
	}
	t.Setenv("KVBENCH_ATTN_TC", "off")
	if four := batchPlan(4); strings.HasSuffix(four.Kernel, "_tc") {
		t.Errorf("a batch step of 4 streams of 8/8 heads with KVBENCH_ATTN_TC=off: %+v", four)
	}
}
