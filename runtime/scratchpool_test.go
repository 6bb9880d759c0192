package runtime_test

import (
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// allocCounter is a backend that counts the Alloc calls of each size, and
// a WorkCounter whose count the test sets (a ReleaseWork that freed every
// buffer but the weights).
type allocCounter struct {
	runtime.Backend
	sizes    map[int]int
	releases uint64
}

func (a *allocCounter) WorkReleases() uint64 { return a.releases }

func (a *allocCounter) Alloc(n int) runtime.Buffer {
	a.sizes[n]++
	return a.Backend.Alloc(n)
}

// TestRunnersShareScratch checks that runners over one upload of the weights
// share the scratch of their own passes: eight streams fed prompts one after
// another make one prefill-sized scratch between them (its MLP buffers,
// [rows, hidden], twice), not one each, and a stream fed after the others
// gives the logits a runner of its own gives. After a ReleaseWork the
// scratch is made anew (the old one's buffers were freed), once.
func TestRunnersShareScratch(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cb := cpu.New(1)
	defer cb.Close()
	be := &allocCounter{Backend: cb, sizes: map[int]int{}}
	const rows = 8
	first, err := runtime.NewRunner(m, be, rows)
	if err != nil {
		t.Fatal(err)
	}
	rs := []*runtime.Runner{first}
	for range 7 {
		r, err := first.Sibling()
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	c := m.Config
	logits := make([]float32, c.Vocab)
	for i, r := range rs {
		if err := r.Forward(randTokens(5+i, c.Vocab, uint64(i)), logits); err != nil {
			t.Fatal(err)
		}
	}
	if n := be.sizes[rows*c.Hidden]; n != 2 {
		t.Errorf("8 streams made %d buffers of [%d rows, hidden %d], want 2 (one shared scratch)", n, rows, c.Hidden)
	}
	be.releases++
	for i, r := range rs[:3] {
		if err := r.Forward(randTokens(2+i, c.Vocab, uint64(40+i)), logits); err != nil {
			t.Fatal(err)
		}
	}
	if n := be.sizes[rows*c.Hidden]; n != 4 {
		t.Errorf("after a ReleaseWork, streams made %d buffers of [%d rows, hidden %d] in all, want 4 (one scratch before, one after)", n, rows, c.Hidden)
	}
	// The shared scratch gives what a runner's own does.
	own, err := runtime.NewRunner(m, cb, rows)
	if err != nil {
		t.Fatal(err)
	}
	toks := randTokens(12, c.Vocab, 77)
	want := make([]float32, c.Vocab)
	if err := own.Forward(toks, want); err != nil {
		t.Fatal(err)
	}
	if err := rs[3].Forward(randTokens(3, c.Vocab, 5), logits); err != nil {
		t.Fatal(err)
	}
	rs[5].Reset()
	if err := rs[5].Forward(toks, logits); err != nil {
		t.Fatal(err)
	}
	for k := range want {
		if logits[k] != want[k] {
			t.Fatalf("logit %d: %v from the shared scratch, %v from a runner's own", k, logits[k], want[k])
		}
	}
}
