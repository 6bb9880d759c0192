package policies_test

import (
	"testing"
	"time"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
)

// timedHook adds up the time a policy's hooks take.
type timedHook struct {
	inner runtime.Hook
	spent time.Duration
}

func (h *timedHook) BeforeAttend(l int, a *runtime.AttnArgs) {
	t0 := time.Now()
	h.inner.BeforeAttend(l, a)
	h.spent += time.Since(t0)
}

func (h *timedHook) AfterAttend(l int, a *runtime.AttnArgs) {
	t0 := time.Now()
	h.inner.AfterAttend(l, a)
	h.spent += time.Since(t0)
}

// BenchmarkSinkWindowHooks reports the host time of window's and
// streamingllm's hooks in a decode step over a full cache of 1024 tokens a
// KV head (the tiny model: 3 layers of 2 KV heads), per layer and KV head
// (hook-ns/layer-head): what a batched step pays per stream, layer and KV
// head on any backend.
func BenchmarkSinkWindowHooks(b *testing.B) {
	for _, c := range []struct {
		name   string
		params policies.Params
	}{{"window", policies.Params{"budget": 1024}}, {"streamingllm", policies.Params{"sinks": 4, "budget": 1024}}} {
		b.Run(c.name, func(b *testing.B) {
			p, err := policies.New(c.name, c.params)
			if err != nil {
				b.Fatal(err)
			}
			r := tinyRunner(b, "tiny", 256)
			if err := p.Start(r); err != nil {
				b.Fatal(err)
			}
			toks := streamTokens(1200+b.N, 3)
			lg := make([]float32, r.Model.Config.Vocab)
			for i := 0; i < 1200; i++ { // fill the window one token at a time
				if err := r.Forward(toks[i:i+1], lg); err != nil {
					b.Fatal(err)
				}
			}
			h := &timedHook{inner: r.Hook}
			r.Hook = h
			b.ResetTimer()
			for i := range b.N {
				if err := r.Forward(toks[1200+i:1201+i], lg); err != nil {
					b.Fatal(err)
				}
			}
			c := r.Model.Config
			b.ReportMetric(float64(h.spent.Nanoseconds())/float64(b.N*c.Layers*c.KVHeads), "hook-ns/layer-head")
		})
	}
}

// TestWindowRepositionPlain: a window without sinks re-positioned gives the
// logits of the plain window bit for bit (every kept key and query shifts
// alike, so no distance changes).
func TestWindowRepositionPlain(t *testing.T) {
	toks := streamTokens(120, 8)
	var out [2][][]float32
	for i, rep := range []bool{false, true} {
		p, err := policies.New("window", policies.Params{"window": 24, "reposition": rep})
		if err != nil {
			t.Fatal(err)
		}
		if out[i], err = runPolicy(t, p, toks, 40); err != nil {
			t.Fatal(err)
		}
	}
	for s := range out[0] {
		for j := range out[0][s] {
			if out[0][s][j] != out[1][s][j] {
				t.Fatalf("forward %d: logit %d is %v re-positioned, %v plain", s, j, out[1][s][j], out[0][s][j])
			}
		}
	}
}
