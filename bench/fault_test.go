package bench

import (
	"errors"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// errInjected is the allocation failure the tests inject.
var errInjected = errors.New("out of memory (injected)")

// failNth returns an AllocFailer hook that fails the nth allocation of kind
// it is asked about, once, and counts the failures it made.
func failNth(kind runtime.MemKind, nth int) (func(runtime.MemKind, int64) error, func() int) {
	var mu sync.Mutex
	seen, failed := 0, 0
	hook := func(k runtime.MemKind, _ int64) error {
		mu.Lock()
		defer mu.Unlock()
		if k != kind {
			return nil
		}
		seen++
		if seen == nth {
			failed++
			return errInjected
		}
		return nil
	}
	return hook, func() int { mu.Lock(); defer mu.Unlock(); return failed }
}

// faultSuite writes a text and a suite of two cells of one model: a
// four-stream perplexity cell under each of full and window.
func faultSuite(t *testing.T, backend string) *Suite {
	t.Helper()
	dir := t.TempDir()
	text := strings.Repeat("The river ran past the mill and on to the sea. ", 400)
	if err := os.WriteFile(filepath.Join(dir, "t.txt"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	y := "name: f\nbackend: " + backend + "\nmodels: [synthetic:tiny]\npolicies: [full, {name: window, window: 32}]\n" +
		"tasks: [{name: perplexity, text: t.txt, tokens: 120, streams: 4, bucket: 40}]\n"
	s, err := ParseSuite(filepath.Join(dir, "s.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(s.Cells()); n != 2 {
		t.Fatalf("%d cells, want 2", n)
	}
	return s
}

// TestStreamFailureContained injects an allocation failure into one stream
// of a four-stream perplexity cell on the CPU: the cell is recorded as failed
// with the reason and its memory figures, the device gives back every KV
// page and scratch buffer the cell held (the weights stay), and the next
// cell runs on the same device and upload.
func TestStreamFailureContained(t *testing.T) {
	checkFailureContained(t, "cpu")
}

// TestStreamFailureContainedLanes is TestStreamFailureContained with the
// batch step's appends and evictions on lanes (runtime.KVLaner): the
// allocation fails on a lane's goroutine and must reach the cell all the
// same.
func TestStreamFailureContainedLanes(t *testing.T) {
	defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(4))
	t.Setenv("KVBENCH_LANES", "2")
	checkFailureContained(t, "cpu")
}

// TestStreamFailureContainedGPU is TestStreamFailureContained on the CUDA
// backend (skipped without a GPU).
func TestStreamFailureContainedGPU(t *testing.T) {
	skipWithoutGPU(t)
	checkFailureContained(t, "cuda")
}

// skipWithoutGPU skips the test when the CUDA backend cannot run here.
func skipWithoutGPU(t *testing.T) {
	t.Helper()
	spec, err := runtime.LookupBackend("cuda")
	if err != nil {
		t.Skip("no CUDA backend in this build")
	}
	if ok, why := spec.Available(); !ok {
		t.Skip("no CUDA device: " + why)
	}
}

func checkFailureContained(t *testing.T, backend string) {
	s := faultSuite(t, backend)
	cells := s.Cells()
	devs := NewDevices()
	defer devs.Close()
	// The 30th KV page allocation fails: the cell's streams have all begun
	// (every stream's first token takes pages in each layer) and one of
	// them is growing its cache.
	hook, failures := failNth(runtime.MemKV, 30)
	devs.onOpen = func(be runtime.Backend) {
		be.(runtime.AllocFailer).FailAllocs(hook)
	}
	models := map[string]*loadedModel{}
	rec := runCell(t.Context(), s, cells[0], models, devs, backend)
	if failures() != 1 {
		t.Fatalf("%d allocations failed, want 1", failures())
	}
	if rec.OK() || !strings.Contains(rec.Error, "injected") || !strings.Contains(rec.Error, "device error") {
		t.Fatalf("status %s, error %q: want the cell failed with the device error", rec.Status, rec.Error)
	}
	t.Logf("failed cell: %s; memory %+v", rec.Error, rec.Memory)
	if rec.Memory == nil || rec.Memory.Weights <= 0 || rec.Memory.KV <= 0 {
		t.Errorf("failed cell's memory %+v: want its weights and the KV it held", rec.Memory)
	}
	bes := devs.backends()
	if len(bes) != 1 {
		t.Fatalf("%d devices open after the failed cell, want the one (its weights kept)", len(bes))
	}
	mr := bes[0].(runtime.MemoryReporter)
	after := mr.Memory()
	if after.KV != 0 || after.KVBuffers != 0 {
		t.Errorf("after the failed cell the device holds %d KV bytes in %d buffers, want none", after.KV, after.KVBuffers)
	}
	if backend == "cpu" && after.Scratch != 0 {
		t.Errorf("after the failed cell the CPU backend counts %d scratch bytes, want none", after.Scratch)
	}
	if after.Weights != rec.Memory.Weights {
		t.Errorf("device holds %d weight bytes after the cell, the cell reported %d", after.Weights, rec.Memory.Weights)
	}

	next := runCell(t.Context(), s, cells[1], models, devs, backend)
	if !next.OK() {
		t.Fatalf("the next cell failed too: %s", next.Error)
	}
	if next.Memory == nil || next.Memory.Uploaded {
		t.Errorf("next cell's memory %+v: want it to reuse the weights the failed cell uploaded", next.Memory)
	}
	if again := devs.backends(); len(again) != 1 || again[0] != bes[0] {
		t.Errorf("the next cell ran on another device")
	}
	end := mr.Memory()
	if end.KV != 0 || end.Scratch != after.Scratch || end.Weights != after.Weights {
		t.Errorf("after the next cell: %+v; after the failed one: %+v: want the same (no KV, no scratch kept)", end, after)
	}
	if want := distinctTensors(cells[0].Model.Path, t); end.Uploads != want {
		t.Errorf("device saw %d tensor uploads over both cells, want %d (one upload)", end.Uploads, want)
	}
}

// distinctTensors is the number of distinct tensors of the model at path.
func distinctTensors(path string, t *testing.T) int {
	t.Helper()
	m, err := runtime.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[*runtime.Tensor]bool{}
	add := func(x *runtime.Tensor) {
		if x != nil {
			seen[x] = true
		}
	}
	add(m.Weights.Embed)
	add(m.Weights.Norm)
	add(m.Weights.Output)
	for i := range m.Weights.Layers {
		l := &m.Weights.Layers[i]
		for _, x := range []*runtime.Tensor{l.AttnNorm, l.Wq, l.Wk, l.Wv, l.Wo, l.Bq, l.Bk, l.Bv, l.QNorm, l.KNorm, l.MLPNorm, l.Gate, l.Up, l.Down} {
			add(x)
		}
	}
	return len(seen)
}

// sticky is a CPU backend whose ReleaseWork reports a device fault while
// stickyFault is set (once), as a GPU whose context a failed kernel
// poisoned would; stickyClosed counts the Close calls.
type sticky struct{ *cpu.Backend }

var stickyFault, stickyClosed int

func (s *sticky) ReleaseWork() error {
	if err := s.Backend.ReleaseWork(); err != nil {
		return err
	}
	if stickyFault > 0 {
		stickyFault--
		return errors.New("an illegal memory access was encountered (injected)")
	}
	return nil
}

func (s *sticky) Close() {
	stickyClosed++
	s.Backend.Close()
}

func init() {
	runtime.RegisterBackend(runtime.BackendSpec{
		Name:      "sticky-test",
		Available: func() (bool, string) { return true, "" },
		New: func(threads int) (runtime.Backend, error) {
			return &sticky{Backend: cpu.New(1)}, nil
		},
	})
}

// TestDeviceFaultReopens checks a fault found when a cell gives its memory
// back: the cell is recorded as failed (its results are not trusted), the
// device is closed, and the next cell opens it afresh and uploads the
// weights again.
func TestDeviceFaultReopens(t *testing.T) {
	s := faultSuite(t, "cpu")
	cells := s.Cells()
	devs := NewDevices()
	defer devs.Close()
	opened := 0
	devs.onOpen = func(runtime.Backend) { opened++ }
	models := map[string]*loadedModel{}
	closedBefore := stickyClosed
	stickyFault = 1
	rec := runCell(t.Context(), s, cells[0], models, devs, "sticky-test")
	if rec.OK() || !strings.Contains(rec.Error, "device fault") || !strings.Contains(rec.Error, "illegal memory access") {
		t.Fatalf("status %s, error %q: want the cell failed by the fault found at its end", rec.Status, rec.Error)
	}
	if rec.Metrics != nil {
		t.Errorf("a cell failed by a device fault keeps its metrics %v", rec.Metrics)
	}
	if n := len(devs.backends()); n != 0 || stickyClosed != closedBefore+1 {
		t.Fatalf("%d devices open, %d closed after the fault: want the faulty one closed", n, stickyClosed-closedBefore)
	}
	next := runCell(t.Context(), s, cells[1], models, devs, "sticky-test")
	if !next.OK() {
		t.Fatalf("the next cell failed: %s", next.Error)
	}
	if opened != 2 || next.Memory == nil || !next.Memory.Uploaded {
		t.Errorf("%d devices opened, next cell's memory %+v: want a new device with the weights uploaded again", opened, next.Memory)
	}
}
