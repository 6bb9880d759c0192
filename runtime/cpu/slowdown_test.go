package cpu

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvbench/kvbench/runtime"
)

func TestParseSlowdown(t *testing.T) {
	for v, want := range map[string]float64{"": 1, "1": 1, "1.25": 1.25, "3": 3} {
		f, err := parseSlowdown(v)
		if err != nil || f != want {
			t.Errorf("parseSlowdown(%q) = %v, %v; want %v", v, f, err, want)
		}
	}
	for _, v := range []string{"abc", "0.5", "-2", "NaN", "Inf", "1.25x"} {
		if _, err := parseSlowdown(v); err == nil || !strings.Contains(err.Error(), SlowdownEnv) {
			t.Errorf("parseSlowdown(%q): error %v, want one naming %s", v, err, SlowdownEnv)
		}
	}
}

// TestAttendSlowdown: with the knob at 3, every Attend takes at least twice
// the fastest plain one (3x by construction, less a margin for a shared
// machine) and computes the same output.
func TestAttendSlowdown(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	const heads, kvHeads, hd, page, n = 8, 2, 64, 16, 512
	b := New(1)
	defer b.Close()
	seqs := make([]runtime.KVSeq, kvHeads)
	for g := range seqs {
		seqs[g].PageSize = page
		for t0 := 0; t0 < n; t0 += page {
			k, v := make([]float32, page*hd), make([]float32, page*hd)
			for i := range k {
				k[i], v[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
			}
			seqs[g].K = append(seqs[g].K, &f32{k})
			seqs[g].V = append(seqs[g].V, &f32{v})
		}
		seqs[g].N = n
		for t0 := 0; t0 < n; t0++ {
			seqs[g].Pos = append(seqs[g].Pos, int32(t0))
		}
	}
	q := make([]float32, heads*hd)
	for i := range q {
		q[i] = float32(rng.NormFloat64())
	}
	attend := func(out []float32) time.Duration {
		t0 := time.Now()
		b.Attend(&runtime.AttnArgs{Out: &f32{out}, Q: &f32{q}, Rows: 1, QPos: []int{n - 1}, Heads: heads,
			KVHeads: kvHeads, HeadDim: hd, Scale: float32(1 / math.Sqrt(hd)), Seqs: seqs})
		return time.Since(t0)
	}
	plainOut, slowOut := make([]float32, heads*hd), make([]float32, heads*hd)
	var plain, slow []time.Duration
	defer func(f float64) { attnSlowdown = f }(attnSlowdown)
	for range 10 { // warm: caches, the clock's speed
		attend(plainOut)
	}
	// Alternately, so that both see the machine alike (runs one after the
	// other once saw the plain ones slower than the slowed ones' own work).
	for range 30 {
		attnSlowdown = 1
		plain = append(plain, attend(plainOut))
		attnSlowdown = 3
		slow = append(slow, attend(slowOut))
	}
	if !slices.Equal(plainOut, slowOut) {
		t.Error("the slowdown changed the output")
	}
	if lo, fast := slices.Min(slow), slices.Min(plain); lo < 2*fast {
		t.Errorf("slowed Attend took %v at least, the plain one %v at least: want >= 2x", lo, fast)
	}
}
