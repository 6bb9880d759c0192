package runtime_test

import (
	"errors"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/internal/fixtures"
	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// forwardAll feeds tokens to a fresh runner and returns every step's logits:
// the prompt's last, then one per decode step.
func forwardAll(t *testing.T, r *runtime.Runner, prompt []int, steps int) []float32 {
	t.Helper()
	vocab := r.Model.Config.Vocab
	logits := make([]float32, vocab)
	if err := r.Forward(prompt, logits); err != nil {
		t.Fatal(err)
	}
	out := slices.Clone(logits)
	for i := range steps {
		if err := r.Forward([]int{3 + i}, logits); err != nil {
			t.Fatal(err)
		}
		out = append(out, logits...)
	}
	return out
}

// TestRunnersShareWeights checks that runners made over one UploadWeights
// compute what a runner with its own upload does, that the upload is
// counted once, and that weights of another model or backend, or freed,
// are refused.
func TestRunnersShareWeights(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	be := cpu.New(1)
	defer be.Close()
	prompt := []int{5, 9, 14, 3, 77, 12, 40, 8, 19, 21}
	alone, err := runtime.NewRunner(m, be, 4)
	if err != nil {
		t.Fatal(err)
	}
	want := forwardAll(t, alone, prompt, 6)

	before := runtime.WeightUploads()
	uploadsBefore := be.Memory().Uploads
	dw, err := runtime.UploadWeights(m, be)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		r, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{MaxRows: 4, Weights: dw})
		if err != nil {
			t.Fatal(err)
		}
		if got := forwardAll(t, r, prompt, 6); !slices.Equal(got, want) {
			t.Fatalf("runner %d over shared weights computes other logits than a runner with its own upload", i)
		}
	}
	if n := runtime.WeightUploads() - before; n != 1 {
		t.Errorf("%d uploads for three runners over shared weights, want 1", n)
	}
	if n := be.Memory().Uploads - uploadsBefore; n != dw.Tensors() {
		t.Errorf("the backend saw %d tensor uploads, want %d (each tensor once)", n, dw.Tensors())
	}
	if dw.Model() != m || dw.Backend() != be || dw.Bytes() <= 0 {
		t.Errorf("weights of %v on %v, %d bytes", dw.Model().Source, dw.Backend().Name(), dw.Bytes())
	}

	other, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runtime.NewRunnerWith(other, be, runtime.RunnerOptions{Weights: dw}); err == nil || !strings.Contains(err.Error(), "uploaded for model") {
		t.Errorf("weights of another model: %v", err)
	}
	be2 := cpu.New(1)
	defer be2.Close()
	if _, err := runtime.NewRunnerWith(m, be2, runtime.RunnerOptions{Weights: dw}); err == nil || !strings.Contains(err.Error(), "another cpu backend") {
		t.Errorf("weights of another backend: %v", err)
	}
	w0 := be.Memory().Weights
	dw.Free()
	if !dw.Freed() || be.Memory().Weights >= w0 {
		t.Errorf("freed weights still counted: %d bytes before, %d after", w0, be.Memory().Weights)
	}
	if _, err := runtime.NewRunnerWith(m, be, runtime.RunnerOptions{Weights: dw}); err == nil || !strings.Contains(err.Error(), "freed") {
		t.Errorf("freed weights: %v", err)
	}
}

// failingUpload is a CPU backend whose Upload fails at the nth tensor and
// that counts the buffers given back.
type failingUpload struct {
	*cpu.Backend
	n, calls, freed int
}

func (f *failingUpload) Upload(t *runtime.Tensor) (runtime.Buffer, error) {
	f.calls++
	if f.calls == f.n {
		return nil, errors.New("out of memory (injected)")
	}
	return f.Backend.Upload(t)
}

func (f *failingUpload) Free(x runtime.Buffer) {
	f.freed++
	f.Backend.Free(x)
}

// TestUploadWeightsFailure checks that a failed upload names the tensor and
// gives back the tensors uploaded before it.
func TestUploadWeightsFailure(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	be := &failingUpload{Backend: cpu.New(1), n: 5}
	defer be.Close()
	_, err = runtime.UploadWeights(m, be)
	if err == nil || !strings.Contains(err.Error(), "injected") || !strings.Contains(err.Error(), "upload ") {
		t.Fatalf("UploadWeights: %v, want the injected error naming the tensor", err)
	}
	if be.freed != be.n-1 {
		t.Errorf("%d buffers given back after the failure at upload %d, want %d", be.freed, be.n, be.n-1)
	}
	if w := be.Memory().Weights; w != 0 {
		t.Errorf("%d weight bytes still counted after the failed upload", w)
	}
}

// copying is a CPU backend that claims to copy weights to a device: its
// Upload reads every element (as a copy to a GPU does) and keeps a
// checksum instead of the data.
type copying struct {
	*cpu.Backend
	sum float64
}

func (c *copying) CopiesWeights() bool { return true }

func (c *copying) Upload(t *runtime.Tensor) (runtime.Buffer, error) {
	for i := range t.Len() {
		c.sum += float64(t.At(i))
	}
	return c.Backend.Upload(t)
}

// TestUploadDropsHostPages loads the reference model (its safetensors
// mapped) and uploads it to a backend that copies weights: every page is
// read, yet the process's resident memory grows by far less than the
// model, because each tensor's pages are dropped once it is uploaded. The
// same model read in place (the CPU) stays resident.
func TestUploadDropsHostPages(t *testing.T) {
	path := fixtures.Path(t, "models/gutenberg-llama-25m")
	if goruntime.GOOS != "linux" {
		t.Skip("files are mapped on Linux only")
	}
	m, err := runtime.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	tensors := allTensors(m)
	// The Rss of this model's own mappings: the process's whole RssFile
	// also moves when the garbage collector unmaps another test's mapping
	// of the same file, as it did mid-upload once.
	rss := func() int64 { return runtime.RSSMappedForTest(t, tensors) }
	var bytes int64
	seen := map[*runtime.Tensor]bool{}
	for _, x := range tensors {
		if !seen[x] {
			seen[x] = true
			bytes += x.Bytes()
		}
	}
	// Another model's mapping of the same file, every page read, unmapped
	// by the garbage collector during the upload: it must not count.
	other, err := runtime.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	otherSum := sumTensors(allTensors(other))
	rss0 := rss()
	be := &copying{Backend: cpu.New(1)}
	defer be.Close()
	other = nil
	goruntime.GC()
	if _, err := runtime.UploadWeights(m, be); err != nil {
		t.Fatal(err)
	}
	goruntime.GC()
	rss1 := rss()
	if grew := rss1 - rss0; grew > bytes/4 {
		t.Errorf("resident memory of its mappings grew by %d bytes uploading a %d-byte model to a copying backend, want under a quarter of it", grew, bytes)
	}
	// Read in place (a CPU upload keeps the pages): resident again.
	sum := sumTensors(tensors)
	rss2 := rss()
	t.Logf("model of %d bytes: resident memory of its mappings +%d after a copying upload, +%d once read in place", bytes, rss1-rss0, rss2-rss0)
	if grew := rss2 - rss0; grew < bytes/2 {
		t.Errorf("reading every weight grew the resident memory of its mappings by %d bytes only, for a %d-byte model: the measure does not see mapped pages", grew, bytes)
	}
	if sum != be.sum || sum != otherSum {
		t.Errorf("the weights read back after their pages were dropped differ from those uploaded (sums %v, %v; another load's %v)", sum, be.sum, otherSum)
	}
}

// sumTensors reads every element of the distinct tensors, in order.
func sumTensors(tensors []*runtime.Tensor) float64 {
	var sum float64
	done := map[*runtime.Tensor]bool{}
	for _, x := range tensors {
		if done[x] {
			continue
		}
		done[x] = true
		for i := range x.Len() {
			sum += float64(x.At(i))
		}
	}
	return sum
}

// allTensors lists every tensor of m in the order UploadWeights takes them
// (a tied head twice).
func allTensors(m *runtime.Model) []*runtime.Tensor {
	w := &m.Weights
	out := []*runtime.Tensor{w.Embed, w.Norm, w.Output}
	for i := range w.Layers {
		l := &w.Layers[i]
		out = append(out, l.AttnNorm, l.Wq, l.Wk, l.Wv, l.Wo, l.Bq, l.Bk, l.Bv, l.QNorm, l.KNorm, l.MLPNorm, l.Gate, l.Up, l.Down)
	}
	return slices.DeleteFunc(out, func(x *runtime.Tensor) bool { return x == nil })
}
