package runtime_test

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// slotCPU is the CPU backend with runtime.DeviceArgmax done on the host
// through its buffers, as a device would keep the slots: Runner.Greedy's
// device path, checked without a GPU. poison, when >= 0, is the Argmax
// call whose logit 5 it takes for NaN.
type slotCPU struct {
	*cpu.Backend
	argmaxes, embeds int
	poison           int
}

func (b *slotCPU) Argmax(slots runtime.Buffer, i int, logits runtime.Buffer, n int) {
	v := make([]float32, n)
	b.Read(v, logits, 0)
	if b.argmaxes == b.poison {
		v[5] = float32(math.NaN())
	}
	b.argmaxes++
	best, bad, count := -1, 0, 0
	var bits uint32
	for j, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			if count == 0 {
				bad, bits = j, math.Float32bits(x)
			}
			count++
			continue
		}
		if best < 0 || x > v[best] {
			best = j
		}
	}
	word := func(k int) float32 { return math.Float32frombits(uint32(int32(k))) }
	b.Write(slots, i*runtime.GreedySlot, []float32{word(best), word(count), word(bad), math.Float32frombits(bits)})
}

func (b *slotCPU) EmbedSlot(dst, table, slots runtime.Buffer, i, dim, vocab int) {
	b.embeds++
	w := make([]float32, 1)
	b.Read(w, slots, i*runtime.GreedySlot)
	tok := int(int32(math.Float32bits(w[0])))
	if tok < 0 || tok >= vocab {
		b.Write(dst, 0, make([]float32, dim))
		return
	}
	b.Embed(dst, table, []int{tok}, dim)
}

// greedyRunner is a runner of the tiny synthetic model on be, fed a prompt,
// and the argmax of the prompt's last logits.
func greedyRunner(t *testing.T, m *runtime.Model, be runtime.Backend) (*runtime.Runner, int) {
	t.Helper()
	r, err := runtime.NewRunner(m, be, 8)
	if err != nil {
		t.Fatal(err)
	}
	logits := make([]float32, m.Config.Vocab)
	if err := r.Forward(randTokens(11, m.Config.Vocab, 3), logits); err != nil {
		t.Fatal(err)
	}
	return r, slices.Index(logits, slices.Max(logits))
}

// TestGreedyDevice checks Runner.Greedy against Forward and the host's
// argmax one token at a time (a model with an untied head, whose greedy
// tokens change from step to step), on the plain CPU (the host loop) and through
// DeviceArgmax (the slots): the same tokens, the same last logits, the
// same position, and the device path's n-1 embeddings and argmaxes.
func TestGreedyDevice(t *testing.T) {
	m, err := runtime.Synthetic("tiny-interleaved")
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.Vocab
	const n = 13

	plain := cpu.New(1)
	defer plain.Close()
	ref, tok := greedyRunner(t, m, plain)
	want := make([]int, n)
	wantLogits := make([]float32, V)
	for k := range n {
		if err := ref.Forward([]int{tok}, wantLogits); err != nil {
			t.Fatal(err)
		}
		tok = slices.Index(wantLogits, slices.Max(wantLogits))
		want[k] = tok
	}

	if len(slices.Compact(slices.Clone(want))) < n/2 {
		t.Fatalf("the reference tokens %v hardly change: the comparison would not tell steps apart", want)
	}
	for _, dev := range []bool{false, true} {
		var be runtime.Backend = cpu.New(1)
		sb := &slotCPU{Backend: be.(*cpu.Backend), poison: -1}
		if dev {
			be = sb
		}
		r, first := greedyRunner(t, m, be)
		got, logits := make([]int, n), make([]float32, V)
		if err := r.Greedy(first, n, got, logits); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("device %v: tokens %v, want %v", dev, got, want)
		}
		if !slices.Equal(logits, wantLogits) {
			t.Errorf("device %v: the last logits differ from Forward's", dev)
		}
		if r.Pos() != ref.Pos() {
			t.Errorf("device %v: position %d, want %d", dev, r.Pos(), ref.Pos())
		}
		if dev && (sb.argmaxes != n-1 || sb.embeds != n-1) {
			t.Errorf("%d argmaxes and %d embeddings on the device, want %d each", sb.argmaxes, sb.embeds, n-1)
		}
		// Again from where it stands, with no logits asked for: the slots
		// are reused.
		more := make([]int, 4)
		if err := r.Greedy(got[n-1], 4, more, nil); err != nil {
			t.Fatal(err)
		}
		sb.Close()
	}
}

// TestGreedyNonFinite checks that a non-finite logit met on the device is
// reported at its step, undiagnosed, and that a bad call is refused.
func TestGreedyNonFinite(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	be := &slotCPU{Backend: cpu.New(1), poison: 3}
	defer be.Close()
	r, first := greedyRunner(t, m, be)
	start := r.Pos()
	out := make([]int, 8)
	err = r.Greedy(first, 8, out, nil)
	var nf *runtime.NonFiniteError
	if !errors.As(err, &nf) {
		t.Fatalf("got %v, want a NonFiniteError", err)
	}
	if nf.Layer != runtime.NotDiagnosed || nf.Pos != start+3 || !math.IsNaN(nf.Value) || !strings.Contains(err.Error(), "greedy run on the device") {
		t.Errorf("got %+v (%v), want position %d, NaN, not diagnosed", nf, err, start+3)
	}

	r.Reset()
	for _, c := range []struct {
		first, n, room, logits int
		want                   string
	}{
		{0, 0, 4, 0, "0 tokens asked"},
		{0, 5, 4, 0, "room for 4"},
		{-1, 2, 4, 0, "first token -1"},
		{m.Config.Vocab, 2, 4, 0, "outside the vocabulary"},
		{0, 2, 4, 3, "logits buffer holds 3"},
	} {
		var lg []float32
		if c.logits > 0 {
			lg = make([]float32, c.logits)
		}
		if err := r.Greedy(c.first, c.n, make([]int, c.room), lg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Greedy(%d, %d, room %d): %v, want %q", c.first, c.n, c.room, err, c.want)
		}
	}
}
