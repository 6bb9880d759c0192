package cpu

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kvbench/kvbench/runtime"
)

// countJob counts each item's visits and checks the worker indices.
type countJob struct {
	t       *testing.T
	seen    []atomic.Int32
	workers int
	bad     atomic.Int32
}

func (j *countJob) run(w, lo, hi int) {
	if w < 0 || w >= j.workers || lo < 0 || hi > len(j.seen) || lo >= hi {
		j.bad.Add(1)
		return
	}
	for i := lo; i < hi; i++ {
		j.seen[i].Add(1)
	}
}

// TestPoolCovers checks that both pools run every item of a job once, in
// spans of at least grain items (but the last), on workers numbered below
// the pool's count: jobs of 0 to many items, grains from 1 to more than the
// items, pools of 1 to 9 workers, back to back.
func TestPoolCovers(t *testing.T) {
	for _, static := range []bool{false, true} {
		for _, workers := range []int{1, 2, 3, 9} {
			p := newPoolMode(workers, static)
			for _, n := range []int{0, 1, 2, 7, 64, 1000, 4099} {
				for _, grain := range []int{0, 1, 3, 100, 5000} {
					j := &countJob{t: t, seen: make([]atomic.Int32, n), workers: workers}
					p.run(j, n, grain)
					if j.bad.Load() != 0 {
						t.Fatalf("static=%v workers %d n %d grain %d: %d spans out of range", static, workers, n, grain, j.bad.Load())
					}
					for i := range j.seen {
						if c := j.seen[i].Load(); c != 1 {
							t.Fatalf("static=%v workers %d n %d grain %d: item %d ran %d times", static, workers, n, grain, i, c)
						}
					}
				}
			}
			p.close()
		}
	}
}

// TestPoolSplitsResults checks that a model's logits do not depend on the
// pool: the crew's pieces (taken in any order) give bit for bit the static
// spans' results, for a prompt pass and a decode step.
func TestPoolSplitsResults(t *testing.T) {
	logits := func(static bool) []float32 {
		b := New(3)
		b.pool = newPoolMode(3, static)
		defer b.Close()
		return tinyModelLogits(t, b)
	}
	a, s := logits(false), logits(true)
	if len(a) != len(s) || len(a) == 0 {
		t.Fatalf("%d and %d logits", len(a), len(s))
	}
	for i := range a {
		if a[i] != s[i] {
			t.Fatalf("logit %d: crew %v, static %v", i, a[i], s[i])
		}
	}
}

// panicJob panics on one item.
type panicJob struct{ at int }

func (j *panicJob) run(_, lo, hi int) {
	if j.at >= lo && j.at < hi {
		panic(fmt.Sprintf("bad item %d", j.at))
	}
}

// TestPoolPanic checks that a panic on a worker reaches the caller (where
// the runner records the cell as failed) instead of ending the process.
func TestPoolPanic(t *testing.T) {
	p := newPoolMode(2, false)
	for _, at := range []int{0, 999} {
		func() {
			defer func() {
				e := recover()
				if s, _ := e.(string); !strings.Contains(s, fmt.Sprintf("bad item %d", at)) {
					t.Fatalf("recovered %v, want the job's panic", e)
				}
			}()
			p.run(&panicJob{at: at}, 1000, 1)
			t.Fatal("no panic")
		}()
	}
	j := &countJob{t: t, seen: make([]atomic.Int32, 100), workers: 2}
	p.run(j, 100, 1) // the pool still works
	for i := range j.seen {
		if j.seen[i].Load() != 1 {
			t.Fatalf("after a panic: item %d ran %d times", i, j.seen[i].Load())
		}
	}
}

// TestPoolConcurrentBackends runs matrix products on several backends at
// once: one holds the crew, the others run on goroutines of their own, and
// every result is the product.
func TestPoolConcurrentBackends(t *testing.T) {
	const rows, in, out = 5, 64, 200
	rng := rand.New(rand.NewPCG(1, 2))
	wt := randTensor(rng, "w", out, in)
	x := make([]float32, rows*in)
	for i := range x {
		x[i] = rng.Float32() - 0.5
	}
	want := make([]float32, rows*out) // one thread's product: the kernels' own sums
	matmulF32(want, x, wt.F32, rows, in, out, 0, out)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			b := New(2)
			defer b.Close()
			w, err := b.Upload(wt)
			if err != nil {
				t.Error(err)
				return
			}
			dst, xb := b.Alloc(rows*out), b.Alloc(rows*in)
			copy(vec(xb), x)
			for range 200 {
				b.MatMul(dst, xb, w, rows, in, out)
				for i, v := range vec(dst) {
					if v != want[i] {
						t.Errorf("out[%d] = %v, want %v", i, v, want[i])
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

// randTensor is a float32 weight of out x in values in [-0.5, 0.5).
func randTensor(rng *rand.Rand, name string, out, in int) *runtime.Tensor {
	w := make([]float32, out*in)
	for i := range w {
		w[i] = rng.Float32() - 0.5
	}
	return &runtime.Tensor{Name: name, DType: runtime.F32, Shape: []int{out, in}, F32: w}
}

// tinyModelLogits runs the synthetic "small" model (heads of 64, so the
// page kernels run) on b: every logit of a 300-token prompt in chunks of
// 128 rows, then ten decode steps' last logits.
func tinyModelLogits(t *testing.T, b *Backend) []float32 {
	t.Helper()
	m, err := runtime.Synthetic("small")
	if err != nil {
		t.Fatal(err)
	}
	r, err := runtime.NewRunner(m, b, 128)
	if err != nil {
		t.Fatal(err)
	}
	vocab := m.Config.Vocab
	rng := rand.New(rand.NewPCG(3, 4))
	toks := make([]int, 310)
	for i := range toks {
		toks[i] = rng.IntN(vocab)
	}
	out := make([]float32, len(toks)*vocab)
	if err := r.ForwardAll(toks[:300], out[:300*vocab]); err != nil {
		t.Fatal(err)
	}
	for i := 300; i < len(toks); i++ {
		if err := r.Forward(toks[i:i+1], out[i*vocab:(i+1)*vocab]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestPoolEnv checks KVBENCH_CPU_POOL's values: the crew unset or "crew",
// the static pool for "static", an error naming the variable otherwise.
func TestPoolEnv(t *testing.T) {
	for v, want := range map[string]bool{"": false, "crew": false, "static": true} {
		if static, err := parsePool(v); err != nil || static != want {
			t.Errorf("parsePool(%q) = %v, %v; want %v", v, static, err, want)
		}
	}
	for _, v := range []string{"statc", "off", "Static"} {
		if _, err := parsePool(v); err == nil || !strings.Contains(err.Error(), PoolEnv) {
			t.Errorf("parsePool(%q): error %v, want one naming %s", v, err, PoolEnv)
		}
	}
}
