package cuda_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// BenchmarkFakePrefill times the host's share of a prompt's prefill on the
// CUDA backend, on the fake device (no kernels run): one chunk of 4,096
// tokens through the layers of the 8B shape (four of its 32 layers: the
// share is per layer), into a runner's fresh cache ("fresh": every KV page
// allocated) or into the pages a Reset left ("reused"). A real prefill
// overlaps this host time with the device's work only while the host runs
// ahead, so a host share near the device's (about 3.5 ms a layer for this
// chunk on an H200) leaves the device idle:
//
//	go test ./runtime/cuda -run '^$' -bench FakePrefill -cpuprofile cpu.out
func BenchmarkFakePrefill(b *testing.B) {
	be := fakeBackend(b)
	c := runtime.Config{Arch: "llama", Dim: 4096, Hidden: 14336, Layers: 4, Heads: 32, KVHeads: 8, HeadDim: 128, Vocab: 32000,
		MaxSeq: 1 << 20, RopeTheta: 5e5, NormEps: 1e-5}
	m := runtime.ZeroModel(c)
	const rows = 4096
	prompt := make([]int, rows)
	for i := range prompt {
		prompt[i] = 3 + i%1000
	}
	logits := make([]float32, c.Vocab)
	w, err := runtime.UploadWeights(m, be)
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"fresh", "reused"} {
		b.Run(mode, func(b *testing.B) {
			newRunner := func() *runtime.Runner {
				r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: rows, KVType: runtime.BF16, Weights: w})
				if err != nil {
					b.Fatal(err)
				}
				return r
			}
			r := newRunner()
			if err := r.Forward(prompt, logits); err != nil { // warm: scratch made
				b.Fatal(err)
			}
			l0, c0, r0, w0 := cuda.FakeCounts()
			runtime.WritePhases(nil)
			var el time.Duration
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				if mode == "fresh" {
					r.Cache.Free()
					r = newRunner()
				} else {
					r.Reset()
				}
				b.StartTimer()
				t0 := time.Now()
				if err := r.Forward(prompt, logits); err != nil {
					b.Fatal(err)
				}
				el += time.Since(t0)
			}
			b.StopTimer()
			l1, c1, r1, w1 := cuda.FakeCounts()
			n := float64(b.N)
			b.ReportMetric(float64(el.Microseconds())/1e3/n/float64(c.Layers), "ms/layer")
			b.ReportMetric(float64(l1-l0)/n, "launches")
			b.ReportMetric(float64(c1-c0)/n, "copies")
			b.ReportMetric(float64(r1-r0)/n, "reads")
			b.ReportMetric(float64(w1-w0)/n, "waits")
			var phases strings.Builder // with KVBENCH_PHASES: the pass part by part
			runtime.WritePhases(&phases)
			if phases.Len() > 0 {
				fmt.Printf("%s: part by part\n%s", b.Name(), phases.String())
			}
			r.Cache.Free()
		})
	}
}
