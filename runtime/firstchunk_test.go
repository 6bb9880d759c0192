package runtime_test

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// TestFirstChunk checks the order of a long input's passes: with FitRows the
// remainder over the chunk comes first (the pass over the fewest keys), then
// whole chunks; without, whole chunks then the remainder; a remainder under
// 16 rows stays last either way. Every row's logits (ForwardAll) match
// across the two orders and a one-pass run.
func TestFirstChunk(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.Vocab
	be := cpu.New(1)
	defer be.Close()
	for _, tc := range []struct {
		n    int
		fit  bool
		want []int
	}{
		{90, true, []int{26, 32, 32}},
		{90, false, []int{32, 32, 26}},
		{64, true, []int{32, 32}},
		{20, true, []int{20}},
		{70, true, []int{32, 32, 6}}, // a remainder under 16 rows stays last
		{80, true, []int{16, 32, 32}},
	} {
		t.Run(fmt.Sprintf("%d_fit_%v", tc.n, tc.fit), func(t *testing.T) {
			run := func(rows int, fit bool) ([]float32, []int) {
				r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: rows, FitRows: fit})
				if err != nil {
					t.Fatal(err)
				}
				var passes []int
				r.OnAttend = func(layer, rows int, _ time.Duration) {
					if layer == 0 {
						passes = append(passes, rows)
					}
				}
				logits := make([]float32, tc.n*V)
				if err := r.ForwardAll(randTokens(tc.n, V, 5), logits); err != nil {
					t.Fatal(err)
				}
				return logits, passes
			}
			got, passes := run(32, tc.fit)
			if !slices.Equal(passes, tc.want) {
				t.Fatalf("passes of %d rows, want %v", passes, tc.want)
			}
			want, _ := run(tc.n, false)
			for i := range want {
				if d := math.Abs(float64(got[i] - want[i])); d > 1e-4 || math.IsNaN(d) {
					t.Fatalf("logit %d of row %d: %v in passes %v, %v in one pass", i%V, i/V, got[i], passes, want[i])
				}
			}
		})
	}
}
