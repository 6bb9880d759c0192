package bench

import (
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// TestTimedStreamSampledGPU: in a batch on a device only the first stream
// times its attention, and in batch steps only on the sampled ones
// (timedStep): its latency samples are the layers of those steps, the other
// streams have none, and a step alone (Stream.Step) is timed as before.
func TestTimedStreamSampledGPU(t *testing.T) {
	skipWithoutGPU(t)
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(m, nil, "window", map[string]any{"window": 24})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.Backend = "cuda"
	tb, err := e.NewBatch(3)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	b := tb.(*engineBatch)
	const steps = 40
	streams, ids, targets, out := []int{0, 1, 2}, []int{5, 6, 7}, []int{8, 9, 10}, make([]float64, 3)
	for range steps {
		if err := b.LogProbs(streams, ids, targets, out); err != nil {
			t.Fatal(err)
		}
	}
	want := TimedSteps(steps) * m.Config.Layers
	if want == steps*m.Config.Layers || want == 0 {
		t.Fatalf("timedStep samples %d of %d layer steps: the test needs some steps left out", want, steps*m.Config.Layers)
	}
	if got := len(b.streams[0].lat); got != want {
		t.Errorf("the timed stream has %d latency samples after %d batch steps, want %d (the sampled steps' layers)", got, steps, want)
	}
	for i, s := range b.streams[1:] {
		if len(s.lat) != 0 {
			t.Errorf("stream %d has %d latency samples, want none", i+1, len(s.lat))
		}
	}
	logits := make([]float32, m.Config.Vocab)
	if err := tb.Stream(0).Step(4, logits); err != nil {
		t.Fatal(err)
	}
	if got := len(b.streams[0].lat); got != want+m.Config.Layers {
		t.Errorf("a step alone added %d samples, want %d", got-want, m.Config.Layers)
	}
}

// TestBatchRoom: the streams the engine says fit fall as their length grows,
// never below 1.
func TestBatchRoom(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(m, nil, "full", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	short, long, huge := e.BatchRoom(1<<10), e.BatchRoom(1<<24), e.BatchRoom(1<<40)
	if short < long || long < 1 || huge != 1 {
		t.Errorf("room for streams of 1K, 16M and 2^40 tokens: %d, %d, %d", short, long, huge)
	}
	if short < 16 {
		t.Errorf("room for 1K-token streams of a tiny model: %d", short)
	}
}
