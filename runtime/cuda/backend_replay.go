package cuda

import (
	"time"

	"github.com/kvbench/kvbench/runtime"
)

// Device-time marks (runtime.DeviceTimer) and CUDA-graph replay of a decode
// step's fixed sequences of operations (runtime.Replayer).

// Mark records a timestamp on the stream after the work queued so far.
func (b *Backend) Mark() int {
	b.flushKV()
	if b.marks == len(b.events) {
		e, err := b.D.NewEvent()
		must(err)
		b.events = append(b.events, e)
	}
	must(b.events[b.marks].Record())
	b.marks++
	return b.marks - 1
}

// Elapsed waits for marks i and j and returns the device time between them.
func (b *Backend) Elapsed(i, j int) time.Duration {
	ms, err := b.events[j].Since(b.events[i])
	must(err)
	return time.Duration(ms * 1e6)
}

// graphsFor reports whether Replay records and replays a step of rows rows
// (one a stream) as graphs. A graph's launch ends the programmatic
// dependent launches' overlap (the first kernel inside waits for the last
// one before to finish; so does the kernel after it), twice a layer: a
// one-row step, whose host queues its launches well ahead of the device,
// runs faster launched directly (H200, 8B shape, 512 tokens: 237.5 / 237.9
// tok/s direct against 226.5 / 228.3 replayed). A batch step's host is the
// slower side: it replays. KVBENCH_GRAPHS=on replays every step, off none.
func (b *Backend) graphsFor(rows int) bool {
	return !b.noGraphs && (rows > 1 || b.allGraphs)
}

// Replay runs ops (see runtime.Replayer): directly the first time key is
// seen (the scratch they need grows then, never inside a capture), recorded
// as a CUDA graph the second time, replayed from the graph afterwards. A
// graph recorded before the scratch of the products it runs moved
// (replayGen) is recorded again.
func (b *Backend) Replay(key runtime.ReplayKey, ops func()) {
	b.flushKV()
	if !b.graphsFor(key.Rows) {
		ops()
		return
	}
	r := b.graphs[key]
	if r == nil {
		b.graphs[key] = &replay{}
		ops()
		return
	}
	if r.g != nil && r.gen != b.replayGen {
		must(r.g.Destroy())
		r.g = nil
	}
	if r.g == nil {
		must(b.D.BeginCapture())
		b.capturing = true
		ops()
		b.flushKV()
		b.capturing = false
		g, err := b.D.EndCapture()
		must(err)
		r.g, r.gen = g, b.replayGen
	}
	must(r.g.Launch())
}

// replay is a Replay key's state: seen once (no graph yet) or recorded at
// scratch generation gen.
type replay struct {
	g   *Graph
	gen uint64
}

// dropReplays destroys every recorded graph and forgets the keys.
func (b *Backend) dropReplays() {
	for k, r := range b.graphs {
		if r.g != nil {
			_ = r.g.Destroy()
		}
		delete(b.graphs, k)
	}
}

// notCapturing panics when an operation that needs host data or a wait runs
// inside Replay's capture (a misuse of runtime.Replayer).
func (b *Backend) notCapturing(what string) {
	if b.capturing {
		panic("cuda: " + what + " inside a replayed sequence (runtime.Replayer: kernel methods on fixed buffers only)")
	}
}

// ClearMarks lets the marks' events be recorded again.
func (b *Backend) ClearMarks() { b.marks = 0 }
