package runtime_test

import (
	"testing"
	"time"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// batchCPU is the CPU backend with a BatchAttender that attends each call
// in turn and records the size of every batch.
type batchCPU struct {
	*cpu.Backend
	sizes []int
}

func (b *batchCPU) AttendBatch(calls []*runtime.AttnArgs) {
	b.sizes = append(b.sizes, len(calls))
	for _, a := range calls {
		b.Attend(a)
	}
}

// TestBatchAttendsTogether checks that a batch step on a BatchAttender
// hands the attention of every stream of a layer to one AttendBatch, but
// for a stream that times its attention (OnAttend), which attends alone
// and gets its times; and that the logits are those of the same batch on a
// backend that attends call by call.
func TestBatchAttendsTogether(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	plain := cpu.New(1)
	defer plain.Close()
	ba := &batchCPU{Backend: cpu.New(1)}
	defer ba.Close()
	const S = 4
	ref := batchRunners(t, m, plain, S)
	rs := batchRunners(t, m, ba, S)
	var timed []int
	rs[2].OnAttend = func(layer, rows int, d time.Duration) { timed = append(timed, layer) }
	bRef, err := runtime.NewBatch(ref...)
	if err != nil {
		t.Fatal(err)
	}
	b, err := runtime.NewBatch(rs...)
	if err != nil {
		t.Fatal(err)
	}
	V, L := m.Config.Vocab, m.Config.Layers
	streams := []int{3, 0, 2, 1}
	want, got := make([]float32, S*V), make([]float32, S*V)
	for step := range 3 {
		toks := randTokens(S, V, uint64(10+step))
		ba.sizes, timed = ba.sizes[:0], timed[:0]
		if err := bRef.Step(streams, toks, want); err != nil {
			t.Fatal(err)
		}
		if err := b.Step(streams, toks, got); err != nil {
			t.Fatal(err)
		}
		if len(ba.sizes) != L {
			t.Fatalf("step %d: %d AttendBatch calls for %d layers", step, len(ba.sizes), L)
		}
		for l, n := range ba.sizes {
			if n != S-1 {
				t.Errorf("step %d layer %d: AttendBatch of %d calls, want %d (the timed stream alone)", step, l, n, S-1)
			}
		}
		if len(timed) != L {
			t.Errorf("step %d: the timed stream got %d attention times, want %d", step, len(timed), L)
		}
		for k := range want {
			if got[k] != want[k] {
				t.Fatalf("step %d: logit %d of stream %d: %v through AttendBatch, %v call by call", step, k%V, streams[k/V], got[k], want[k])
			}
		}
	}
	// A stream fed alone attends alone.
	ba.sizes = ba.sizes[:0]
	one := make([]float32, V)
	if err := rs[0].Forward([]int{5}, one); err != nil {
		t.Fatal(err)
	}
	if len(ba.sizes) != 0 {
		t.Errorf("a runner alone made %d AttendBatch calls", len(ba.sizes))
	}
}
