package runtime_test

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvbench/kvbench/runtime"
	"github.com/kvbench/kvbench/runtime/cpu"
)

// TestPhases checks the pass timing: with it on, a batch's steps, a
// runner's steps and its prompt chunk land in rows of their own (4 streams a
// pass, 1, 1 with chunks), with the passes counted, attention and the head
// timed, and no more time than the steps took; a second WritePhases writes
// nothing (the sums were forgotten); off, nothing.
func TestPhases(t *testing.T) {
	m, rs, b := tinyBatch(t, 4)
	V := m.Config.Vocab
	logits := make([]float32, 4*V)
	runtime.WritePhases(&bytes.Buffer{}) // the prompts' passes, if any were timed
	restore := runtime.SetPhases(true)
	t0 := time.Now()
	for range 3 {
		if err := b.Step([]int{0, 1, 2, 3}, []int{5, 6, 7, 8}, logits); err != nil {
			t.Fatal(err)
		}
	}
	batchWall := time.Since(t0)
	t0 = time.Now()
	for range 2 {
		if err := rs[0].Forward([]int{9}, logits[:V]); err != nil {
			t.Fatal(err)
		}
	}
	walls := []time.Duration{time.Since(t0) / 2, 0, batchWall / 3}
	t0 = time.Now()
	if err := rs[1].Forward([]int{3, 4, 5}, logits[:V]); err != nil { // a prompt chunk of three rows
		t.Fatal(err)
	}
	walls[1] = time.Since(t0)
	restore()
	var out bytes.Buffer
	runtime.WritePhases(&out)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 5 || !strings.Contains(lines[0], "| attention ms |") {
		t.Fatalf("WritePhases wrote\n%s\nwant a header, a rule and three rows", out.String())
	}
	for i, want := range []string{"| 1 | 2 |", "| 1 (chunks) | 1 |", "| 4 | 3 |"} {
		row := lines[2+i]
		if !strings.HasPrefix(row, want) {
			t.Errorf("row %d is %q, want it to start %q (streams a pass, passes)", i, row, want)
		}
		var cells []float64
		for _, f := range strings.Split(strings.Trim(row, "| "), "|")[2:] {
			var v float64
			if _, err := fmt.Sscan(strings.TrimSpace(f), &v); err != nil {
				t.Fatalf("row %q: cell %q: %v", row, f, err)
			}
			cells = append(cells, v)
		}
		// Every layer attends and the head reads: those parts took time.
		// A pass is timed inside its step: the mean is at most the step's.
		if cells[4] <= 0 || cells[7] <= 0 {
			t.Errorf("row %q: attention %.4f ms, head %.4f ms, want both > 0", row, cells[4], cells[7])
		}
		if total, wall := cells[len(cells)-1], walls[i].Seconds()*1e3; total > wall+0.0015 {
			t.Errorf("row %q: a pass's parts sum to %.4f ms, more than its step's %.4f", row, total, wall)
		}
	}
	out.Reset()
	runtime.WritePhases(&out)
	if out.Len() != 0 {
		t.Errorf("a second WritePhases wrote %q, want nothing", out.String())
	}
	if err := rs[0].Forward([]int{9}, logits[:V]); err != nil { // timing off again
		t.Fatal(err)
	}
	runtime.WritePhases(&out)
	if out.Len() != 0 {
		t.Errorf("with the timing off, WritePhases wrote %q", out.String())
	}
}

// TestPartClock checks the finer parts: summed by name in the order first
// seen, written after the passes' table and forgotten; nothing while the
// timing is off.
func TestPartClock(t *testing.T) {
	var out bytes.Buffer
	runtime.WritePhases(&out)
	out.Reset()
	off := runtime.StartParts()
	off.Mark("never")
	restore := runtime.SetPhases(true)
	pc := runtime.StartParts()
	time.Sleep(time.Millisecond)
	pc.Mark("a")
	pc.Mark("b")
	pc.Mark("a")
	off.Mark("never") // started while off: stays off
	restore()
	runtime.WritePhases(&out)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[2], "| a | 2 | ") || !strings.HasPrefix(lines[3], "| b | 1 | ") {
		t.Fatalf("WritePhases wrote\n%s\nwant the parts a (2 calls) and b (1)", out.String())
	}
	var calls int
	var total float64
	if _, err := fmt.Sscanf(lines[2], "| a | %d | %f |", &calls, &total); err != nil || total < 1 {
		t.Errorf("part a: %q (%v): want at least the 1 ms slept", lines[2], err)
	}
	out.Reset()
	runtime.WritePhases(&out)
	if out.Len() != 0 {
		t.Errorf("a second WritePhases wrote %q", out.String())
	}
}

// tickTimer is a CPU backend that is a DeviceTimer whose marks are a
// millisecond apart on its "device": the device time between marks a and b
// is b-a milliseconds. It counts the marks it forgot.
type tickTimer struct {
	*cpu.Backend
	marks, cleared int
}

func (d *tickTimer) Mark() int { d.marks++; return d.marks - 1 }
func (d *tickTimer) Elapsed(a, b int) time.Duration {
	return time.Duration(b-a) * time.Millisecond
}
func (d *tickTimer) ClearMarks() { d.cleared += d.marks; d.marks = 0 }

// TestPhasesDevice: with KVBENCH_PHASES=device each pass row has a device
// row under it, each part the device time between the mark before it and
// its own (here a millisecond a mark: the start and the head 1 ms a pass,
// every layer's parts 1 ms a layer), and the pass forgets its marks where
// no OnAttend reads them; OnAttend's marks are left to it, and it still
// gets every layer's time.
func TestPhasesDevice(t *testing.T) {
	m, err := runtime.Synthetic("tiny")
	if err != nil {
		t.Fatal(err)
	}
	L := m.Config.Layers
	for _, onAttend := range []bool{false, true} {
		t.Run(fmt.Sprintf("OnAttend %v", onAttend), func(t *testing.T) {
			be := &tickTimer{Backend: cpu.New(1)}
			defer be.Close()
			r, err := runtime.NewRunner(m, be, 8)
			if err != nil {
				t.Fatal(err)
			}
			attended := 0
			if onAttend {
				r.OnAttend = func(layer, rows int, d time.Duration) { attended++ }
			}
			logits := make([]float32, m.Config.Vocab)
			runtime.WritePhases(&bytes.Buffer{})
			defer runtime.SetPhases(true)()
			defer runtime.SetPhasesDevice(true)()
			for i := range 2 {
				if err := r.Forward([]int{3 + i}, logits); err != nil {
					t.Fatal(err)
				}
			}
			var out bytes.Buffer
			runtime.WritePhases(&out)
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if len(lines) != 4 || !strings.HasPrefix(lines[3], "| 1, device | 2 |") {
				t.Fatalf("WritePhases wrote\n%s\nwant a header, a rule, a row and its device row", out.String())
			}
			var cells []float64
			for _, f := range strings.Split(strings.Trim(lines[3], "| "), "|")[2:] {
				var v float64
				if _, err := fmt.Sscan(strings.TrimSpace(f), &v); err != nil {
					t.Fatalf("row %q: cell %q: %v", lines[3], f, err)
				}
				cells = append(cells, v)
			}
			want := []float64{1, float64(L), float64(L), float64(L), float64(L), float64(L), float64(L), 1, float64(2 + 6*L)}
			if onAttend { // OnAttend's marks around each layer's attention: the attention part spans one more
				want[4] += float64(2 * L)
				want[8] += float64(2 * L)
			}
			if !slices.Equal(cells, want) {
				t.Errorf("device ms a pass %v, want %v", cells, want)
			}
			if be.marks != 0 || be.cleared == 0 {
				t.Errorf("%d marks left, %d forgotten: the passes' marks were not forgotten", be.marks, be.cleared)
			}
			if onAttend && attended != 2*L {
				t.Errorf("OnAttend got %d times, want %d", attended, 2*L)
			}
		})
	}
}
