package cuda

import (
	"cmp"
	"slices"
	"sync"
)

// The kernel clock (KVBENCH_KERNEL_TIMES=1, Device.StartKernelClock): an
// event pair recorded around every kernel launch, cuBLAS product and graph
// replay on the stream, read at the stream's waits and summed by name, so
// that one run tells where a pass's device time goes (ncu needs a replay a
// kernel, too slow over a whole 128K prefill; nsys is not usable on the
// GPU machine). The events sit between launches that would otherwise
// overlap (programmatic dependents), so a clocked run is slower: its times
// say where the time goes, not how fast the pass is. Nothing is recorded
// while a graph is being captured (its replay is one entry, "graph").

// KernelTime is the device time of one kernel's launches (or "cublas
// gemm", "graph").
type KernelTime struct {
	Name     string
	Launches int
	Ms       float64
}

// kernelClock is a device's clock: the events recorded and not yet read,
// the free ones, and the sums.
type kernelClock struct {
	mu   sync.Mutex
	free []uintptr
	open []clockPair
	sums map[string]*KernelTime
	err  error // the first driver error met (the clock then stops)
}

type clockPair struct {
	name       string
	start, end uintptr
}

// StartKernelClock starts timing every kernel the device runs from now on
// (see KernelTimes).
func (d *Device) StartKernelClock() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.kc == nil {
		d.kc = &kernelClock{sums: map[string]*KernelTime{}}
	}
}

// clockStart records a start event for work about to be queued, where the
// clock runs and no capture is in progress; 0 otherwise. Called between
// enter and leave.
func (d *Device) clockStart() uintptr {
	kc := d.kc
	if kc == nil || d.capturing.Load() {
		return 0
	}
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if kc.err != nil {
		return 0
	}
	e := kc.event(d)
	if e != 0 && kc.check(d.api.check("cuEventRecord", d.api.cuEventRecord(e, d.stream))) {
		return e
	}
	return 0
}

// clockEnd records the end of the work named name begun at start (0: not
// clocked).
func (d *Device) clockEnd(name string, start uintptr) {
	if start == 0 {
		return
	}
	kc := d.kc
	kc.mu.Lock()
	defer kc.mu.Unlock()
	e := kc.event(d)
	if e == 0 || !kc.check(d.api.check("cuEventRecord", d.api.cuEventRecord(e, d.stream))) {
		return
	}
	kc.open = append(kc.open, clockPair{name, start, e})
}

// event returns a free event, made if none is (0 after an error).
func (kc *kernelClock) event(d *Device) uintptr {
	if n := len(kc.free); n > 0 {
		e := kc.free[n-1]
		kc.free = kc.free[:n-1]
		return e
	}
	var e uintptr
	if !kc.check(d.api.check("cuEventCreate", d.api.cuEventCreate(&e, 0))) {
		return 0
	}
	return e
}

// check keeps the first error; it reports whether err is nil.
func (kc *kernelClock) check(err error) bool {
	if err != nil && kc.err == nil {
		kc.err = err
	}
	return err == nil
}

// read adds the recorded pairs to the sums (the stream has been waited
// for: every event has completed) and frees their events. Called between
// enter and leave.
func (d *Device) clockRead() {
	kc := d.kc
	if kc == nil {
		return
	}
	kc.mu.Lock()
	defer kc.mu.Unlock()
	for _, p := range kc.open {
		var ms float32
		if kc.err == nil {
			kc.check(d.api.check("cuEventElapsedTime", d.api.cuEventElapsedTime(&ms, p.start, p.end)))
		}
		s := kc.sums[p.name]
		if s == nil {
			s = &KernelTime{Name: p.name}
			kc.sums[p.name] = s
		}
		s.Launches++
		s.Ms += float64(ms)
		kc.free = append(kc.free, p.start, p.end)
	}
	kc.open = kc.open[:0]
}

// KernelTimes waits for the stream and returns the device time of every
// kernel name since the clock started or the last reset, most first (nil
// when the clock does not run); reset starts the sums over.
func (d *Device) KernelTimes(reset bool) ([]KernelTime, error) {
	if d.kc == nil {
		return nil, nil
	}
	if err := d.Sync(); err != nil { // reads the pairs
		return nil, err
	}
	kc := d.kc
	kc.mu.Lock()
	defer kc.mu.Unlock()
	out := make([]KernelTime, 0, len(kc.sums))
	for _, s := range kc.sums {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b KernelTime) int { return cmp.Or(cmp.Compare(b.Ms, a.Ms), cmp.Compare(a.Name, b.Name)) })
	err := kc.err
	if reset {
		kc.sums = map[string]*KernelTime{}
	}
	return out, err
}
