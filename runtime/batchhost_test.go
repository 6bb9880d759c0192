package runtime_test

import (
	"testing"
	"time"

	"github.com/kvbench/kvbench/policies"
	"github.com/kvbench/kvbench/runtime"
)

// nullBackend does no work: buffers are lengths, kernels return at once. A
// batched step on it costs what the runtime and the policies cost on the
// host, which a device's step pays on top of (or overlapping) its kernels.
type nullBackend struct{}

type nullBuf int

func (n nullBuf) Len() int { return int(n) }

func (nullBackend) Name() string                                                            { return "null" }
func (nullBackend) Device() string                                                          { return "none" }
func (nullBackend) Upload(t *runtime.Tensor) (runtime.Buffer, error)                        { return nullBuf(t.Len()), nil }
func (nullBackend) Alloc(n int) runtime.Buffer                                              { return nullBuf(n) }
func (nullBackend) Write(runtime.Buffer, int, []float32)                                    {}
func (nullBackend) Read([]float32, runtime.Buffer, int)                                     {}
func (nullBackend) CopyRows(_, _ runtime.Buffer, _, _, _, _ int)                            {}
func (nullBackend) Embed(_, _ runtime.Buffer, _ []int, _ int)                               {}
func (nullBackend) RMSNorm(_, _, _ runtime.Buffer, _, _ int, _ float32)                     {}
func (nullBackend) MatMul(_, _, _ runtime.Buffer, _, _, _ int)                              {}
func (nullBackend) AddBias(_, _ runtime.Buffer, _, _ int)                                   {}
func (nullBackend) RoPE(runtime.Buffer, int, int, int, []int, float64, runtime.RopeStyle)   {}
func (nullBackend) SwiGLU(_, _ runtime.Buffer, _ int)                                       {}
func (nullBackend) Add(_, _ runtime.Buffer, _ int)                                          {}
func (nullBackend) StoreKV(_, _ runtime.Buffer, _ int, _, _ runtime.Buffer, _, _, _, _ int) {}
func (nullBackend) MoveKV(_, _ runtime.Buffer, _ int, _, _ runtime.Buffer, _, _ int)        {}
func (nullBackend) Attend(*runtime.AttnArgs)                                                {}
func (nullBackend) View(_ runtime.Buffer, _, n int) runtime.Buffer                          { return nullBuf(n) }

// KVLanes and JoinKVLanes (runtime.KVLaner): its copies do nothing.
func (nb nullBackend) KVLanes(n int) []runtime.KVOps {
	ops := make([]runtime.KVOps, n)
	for i := range ops {
		ops[i] = nb
	}
	return ops
}
func (nullBackend) JoinKVLanes() {}

// BenchmarkBatchHostStep reports the host time of a batched decode step of
// 64 streams of the 8B shape (32 layers of 8 KV heads) holding 1024 tokens
// each under window and streamingllm, on the null backend: the runtime's
// and the policies' share of a step (ms/step), whatever the device. The
// null backend has lanes: KVBENCH_LANES=off for the step one stream after
// another.
func BenchmarkBatchHostStep(b *testing.B) {
	c := runtime.Config{Arch: "llama", Dim: 4096, Hidden: 14336, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128,
		Vocab: 32000, MaxSeq: 1 << 20, RopeTheta: 5e5, NormEps: 1e-5}
	m := runtime.ZeroModel(c)
	const streams, prompt = 64, 1100
	for _, pc := range []struct {
		name   string
		params policies.Params
	}{{"full", nil}, {"window", policies.Params{"budget": 1024}}, {"streamingllm", policies.Params{"sinks": 4, "budget": 1024}},
		{"h2o", policies.Params{"budget": 1024}}, {"tova", policies.Params{"budget": 1024}}} {
		b.Run(pc.name, func(b *testing.B) {
			rs := siblings(b, m, nullBackend{}, 1, streams)
			for _, r := range rs {
				p, err := policies.New(pc.name, pc.params)
				if err != nil {
					b.Fatal(err)
				}
				if err := p.Start(r); err != nil {
					b.Fatal(err)
				}
			}
			batch, err := runtime.NewBatch(rs...)
			if err != nil {
				b.Fatal(err)
			}
			ids, toks := make([]int, streams), make([]int, streams)
			for i := range ids {
				ids[i], toks[i] = i, 3+i
			}
			for range prompt { // fill every window, one token a step
				if err := batch.Step(ids, toks, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			t0 := time.Now()
			for range b.N {
				if err := batch.Step(ids, toks, nil); err != nil {
					b.Fatal(err)
				}
			}
			ms := float64(time.Since(t0).Microseconds()) / 1e3 / float64(b.N)
			b.ReportMetric(ms, "ms/step")
			b.ReportMetric(float64(streams)*60e3/ms, "tokens/min")
		})
	}
}
