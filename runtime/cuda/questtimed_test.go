package cuda_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// TestFakeQuestTimedSelection: where a runner times its attention
// (OnAttend, as the suites record latency), a Quest decode step's page
// scores and choice launch between the marks around each layer's
// attention, so a Quest cell's recorded latency includes its selection
// (README, kvbench kernels). On the fake device, whose trace shows the
// events recorded among the launches.
func TestFakeQuestTimedSelection(t *testing.T) {
	be := fakeBackend(t)
	c := runtime.Config{Arch: "llama", Dim: 256, Hidden: 256, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 64, Vocab: 300, MaxSeq: 1 << 16, RopeTheta: 1e4, NormEps: 1e-5}
	batch := promptedBatch(t, be, runtime.ZeroModel(c), "quest", policies.Params{"budget": 32, "page": 16, "dense_layers": 0}, 1, 64,
		func(int) int { return 200 })
	r, logits := batch.Runner(0), make([]float32, c.Vocab)
	timed := 0
	r.OnAttend = func(_, rows int, _ time.Duration) { timed++ }
	stop := cuda.FakeTraceEvents()
	if err := r.Forward([]int{7}, logits); err != nil {
		t.Fatal(err)
	}
	trace := stop()
	if timed != c.Layers {
		t.Fatalf("%d layers' attention timed, want %d", timed, c.Layers)
	}
	// The trace between two events: a layer's timed span holds its choice
	// and its attention, with no event between them.
	var spans [][]string
	for i, name := range trace {
		if name != "event" {
			continue
		}
		j := i + 1
		for j < len(trace) && trace[j] != "event" {
			j++
		}
		spans = append(spans, trace[i+1:j])
	}
	has := func(span []string, prefix string) bool {
		return slices.ContainsFunc(span, func(s string) bool { return strings.HasPrefix(s, prefix) })
	}
	chosen := 0
	for _, span := range spans {
		if !has(span, "be_quest_choose") {
			continue
		}
		chosen++
		if !has(span, "be_quest_score") || !has(span, "attn_") {
			t.Errorf("a Quest choice launched in a span without its scores or an attention kernel: %v", span)
		}
	}
	if chosen != c.Layers {
		t.Errorf("%d timed spans hold a Quest choice, want %d (a layer's); trace %v", chosen, c.Layers, trace)
	}
	if before := slices.Index(trace, "event"); before < 0 || slices.ContainsFunc(trace[:before], func(s string) bool { return strings.HasPrefix(s, "be_quest_choose") }) {
		t.Errorf("a Quest choice launched before the first mark: %v", trace)
	}
}
