package bench

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// faulty is a CPU backend whose second instance panics, as a device whose
// memory ran out would, once it has made failAfter buffers.
type faulty struct {
	runtime.Backend
	id, allocs int
}

var faults struct {
	sync.Mutex
	made, closed int
}

const failAfter = 40

func (f *faulty) Alloc(n int) runtime.Buffer {
	f.allocs++
	if f.id == 2 && f.allocs > failAfter {
		panic("cuda: cuMemAlloc_v2: CUDA_ERROR_OUT_OF_MEMORY (injected)")
	}
	return f.Backend.Alloc(n)
}

func (f *faulty) Close() {
	faults.Lock()
	faults.closed++
	faults.Unlock()
	f.Backend.(runtime.Closer).Close()
}

func init() {
	runtime.RegisterBackend(runtime.BackendSpec{
		Name:      "faulty-test",
		Available: func() (bool, string) { return true, "" },
		New: func(threads int) (runtime.Backend, error) {
			faults.Lock()
			faults.made++
			id := faults.made
			faults.Unlock()
			return &faulty{Backend: cpu.New(1), id: id}, nil
		},
	})
}

// TestStreamFailureContained injects an allocation failure into one stream
// of a four-stream perplexity cell: the cell is recorded as failed with the
// reason, every backend it opened is closed, and the next cell runs.
func TestStreamFailureContained(t *testing.T) {
	dir := t.TempDir()
	text := strings.Repeat("The river ran past the mill and on to the sea. ", 400)
	if err := os.WriteFile(filepath.Join(dir, "t.txt"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	y := "name: f\nmodels: [synthetic:tiny]\npolicies: [full]\n" +
		"tasks: [{name: perplexity, text: t.txt, tokens: 300, streams: 4, bucket: 100}]\n"
	s, err := ParseSuite(filepath.Join(dir, "s.yaml"), []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	cells := s.Cells()
	if len(cells) != 1 {
		t.Fatalf("%d cells", len(cells))
	}
	models := map[string]*loadedModel{}
	rec := runCell(t.Context(), s, cells[0], models, "faulty-test")
	if rec.OK() || !strings.Contains(rec.Error, "injected") || !strings.Contains(rec.Error, "stream") {
		t.Fatalf("status %s, error %q: want the cell failed with the stream's reason", rec.Status, rec.Error)
	}
	faults.Lock()
	made, closed := faults.made, faults.closed
	faults.Unlock()
	if made < 2 || closed != made {
		t.Errorf("%d backends opened, %d closed: want every one closed when the cell ends", made, closed)
	}
	if again := runCell(t.Context(), s, cells[0], models, "cpu"); !again.OK() {
		t.Errorf("the next cell failed too: %s", again.Error)
	}
}
