package crew

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// runCounts runs a job of parts parts that counts each part's calls and
// checks every part ran once.
func runCounts(t *testing.T, parts int) {
	t.Helper()
	counts := make([]atomic.Int32, parts)
	Run(parts, func(p int) { counts[p].Add(1) })
	for p := range counts {
		if n := counts[p].Load(); n != 1 {
			t.Fatalf("job of %d parts: part %d ran %d times", parts, p, n)
		}
	}
}

// TestRun checks that every part of a job runs once and that its writes
// are seen when Run returns, for jobs of 0 to more than MaxParts parts, back
// to back (the workers awake) and after a pause longer than their spin (the
// workers asleep).
func TestRun(t *testing.T) {
	for _, parts := range []int{0, 1, 2, 3, 16, MaxParts, MaxParts + 5, 2*MaxParts + 1} {
		runCounts(t, parts)
	}
	for i := range 2000 {
		runCounts(t, 2+i%17)
	}
	for range 3 {
		time.Sleep(3 * spin)
		runCounts(t, 16)
	}
	sum := make([]int, 16) // plain writes: Run's return orders them
	for i := range 100 {
		Run(16, func(p int) { sum[p] += p * i })
	}
	for p, v := range sum {
		if want := p * 4950; v != want {
			t.Fatalf("part %d summed %d, want %d", p, v, want)
		}
	}
}

// TestRunConcurrent checks jobs from several goroutines at once: one holds
// the crew, the others run on goroutines of their own; every part runs once.
func TestRunConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 300 {
				runCounts(t, 2+i%9)
			}
		})
	}
	wg.Wait()
}

// TestRunPanics checks that a part's panic reaches Run's caller after every
// part has returned: an error as itself, a runtime error with the part and
// its stack; and that the crew runs jobs after.
func TestRunPanics(t *testing.T) {
	boom := errors.New("boom")
	for _, part := range []int{0, 5} {
		var done atomic.Int32
		got := func() (e any) {
			defer func() { e = recover() }()
			Run(8, func(p int) {
				if p == part {
					panic(boom)
				}
				time.Sleep(time.Millisecond)
				done.Add(1)
			})
			return nil
		}()
		if err, ok := got.(error); !ok || !errors.Is(err, boom) {
			t.Errorf("part %d's panic arrived as %v, want %v", part, got, boom)
		}
		if n := done.Load(); n != 7 {
			t.Errorf("Run returned with %d of the 7 other parts done", n)
		}
	}
	got := func() (e any) {
		defer func() { e = recover() }()
		var s []int
		Run(4, func(p int) {
			if p == 3 {
				_ = s[p]
			}
		})
		return nil
	}()
	if msg, ok := got.(string); !ok || !strings.Contains(msg, "index out of range") || !strings.Contains(msg, "part 3 of a crew's job") || !strings.Contains(msg, "crew_test.go") {
		t.Errorf("a runtime error arrived as %v, want its message, the part and the stack", got)
	}
	runCounts(t, 16)
}

// TestRunOff checks the jobs with the crew off (KVBENCH_CREW=off): parts on
// fresh goroutines, each once, a panic raised on the caller's.
func TestRunOff(t *testing.T) {
	off = true
	defer func() { off = false }()
	for _, parts := range []int{1, 2, 16, MaxParts + 3} {
		runCounts(t, parts)
	}
	got := func() (e any) {
		defer func() { e = recover() }()
		Run(3, func(p int) {
			if p == 2 {
				panic("two")
			}
		})
		return nil
	}()
	if got != "two" {
		t.Errorf("the panic arrived as %v, want two", got)
	}
}
