package cuda_test

import (
	"sort"
	"testing"
	"time"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cuda"
)

// hostTimer wraps the CUDA backend and adds up the host time of each
// operation of a decode step: where a step's time goes when the device
// waits for the host. Diagnostic output only (-v).
type hostTimer struct {
	*cuda.Backend
	t map[string]time.Duration
	n map[string]int
}

func (h *hostTimer) add(op string, t0 time.Time) {
	h.t[op] += time.Since(t0)
	h.n[op]++
}

func (h *hostTimer) Embed(d, t runtime.Buffer, tok []int, dim int) {
	defer h.add("Embed", time.Now())
	h.Backend.Embed(d, t, tok, dim)
}
func (h *hostTimer) RoPE(x runtime.Buffer, rows, heads, hd int, pos []int, theta float64, st runtime.RopeStyle) {
	defer h.add("RoPE", time.Now())
	h.Backend.RoPE(x, rows, heads, hd, pos, theta, st)
}
func (h *hostTimer) StoreKV(kp, vp runtime.Buffer, slot int, k, v runtime.Buffer, row, head, hd, kvDim int) {
	defer h.add("StoreKV", time.Now())
	h.Backend.StoreKV(kp, vp, slot, k, v, row, head, hd, kvDim)
}
func (h *hostTimer) Attend(a *runtime.AttnArgs) {
	defer h.add("Attend", time.Now())
	h.Backend.Attend(a)
}
func (h *hostTimer) Replay(k runtime.ReplayKey, ops func()) {
	defer h.add("Replay", time.Now())
	h.Backend.Replay(k, ops)
}
func (h *hostTimer) MatMul(d, x, w runtime.Buffer, rows, in, out int) {
	defer h.add("MatMul", time.Now())
	h.Backend.MatMul(d, x, w, rows, in, out)
}
func (h *hostTimer) RMSNorm(d, x, w runtime.Buffer, rows, dim int, eps float32) {
	defer h.add("RMSNorm", time.Now())
	h.Backend.RMSNorm(d, x, w, rows, dim, eps)
}
func (h *hostTimer) CopyRows(d, s runtime.Buffer, dr, sr, rows, width int) {
	defer h.add("CopyRows", time.Now())
	h.Backend.CopyRows(d, s, dr, sr, rows, width)
}
func (h *hostTimer) Read(d []float32, s runtime.Buffer, off int) {
	defer h.add("Read (waits for the device)", time.Now())
	h.Backend.Read(d, s, off)
}

func TestBackendDecodeProfile(t *testing.T) {
	m, err := runtime.Load(fixtures.Path(t, "models/gutenberg-llama-25m"))
	if err != nil {
		t.Fatal(err)
	}
	h := &hostTimer{Backend: newGPU(t), t: map[string]time.Duration{}, n: map[string]int{}}
	r, err := runtime.NewRunner(m, h, 256)
	if err != nil {
		t.Fatal(err)
	}
	vocab := m.Config.Vocab
	prompt := spreadTokens(1000, vocab)
	logits := make([]float32, vocab)
	if err := r.Forward(prompt, logits); err != nil {
		t.Fatal(err)
	}
	clear(h.t)
	clear(h.n)
	const steps = 200
	t0 := time.Now()
	for i := range steps {
		if err := r.Forward([]int{3 + i%100}, logits); err != nil {
			t.Fatal(err)
		}
	}
	total := time.Since(t0)
	var ops []string
	for k := range h.t {
		ops = append(ops, k)
	}
	sort.Slice(ops, func(i, j int) bool { return h.t[ops[i]] > h.t[ops[j]] })
	t.Logf("decode step: %v (%d steps)", total/steps, steps)
	for _, k := range ops {
		t.Logf("  %-28s %8v per step (%d calls per step, %v each)", k, h.t[k]/steps, h.n[k]/steps, h.t[k]/time.Duration(h.n[k]))
	}
}
