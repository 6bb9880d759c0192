package cuda

import (
	"fmt"
	"maps"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// A device that runs nothing, for timing and profiling the host's share of
// a run on a machine without a GPU (KVBENCH_CUDA_FAKE=1 makes it the only
// CUDA device of the process: kvbench then runs its suites on it;
// NewFakeBackend opens it alone, for tests). Every driver and
// cuBLAS entry point answers at once: allocations hand out addresses that
// point nowhere, launches and copies to the device do nothing, copies from
// it give zeros, events measure no time, kernels need no compiling. The
// backend's host code (metadata, page tables, KV-copy queues, lanes, the
// policies) runs as on a GPU, so a Go CPU profile of a run shows where a
// step's host time goes; the numbers the run computes are zeros and mean
// nothing. The backend's description starts with "fake". FakeCounts tells
// how many launches and copies a piece of work made: a real driver spends
// a few microseconds of host time on each, which the fake does not.

// fakeEnv names the variable that selects the fake device.
const fakeEnv = "KVBENCH_CUDA_FAKE"

// fakeOn reports whether KVBENCH_CUDA_FAKE asks for the fake device.
func fakeOn() bool { v := os.Getenv(fakeEnv); return v != "" && v != "0" && v != "off" }

// fakeSums: with KVBENCH_FAKE_SUMS=random the fake device's attention sums
// (what fillAcc hands a policy) are pseudo-random, uniform in [0, 2/n) for
// n tokens, where its reads give zeros: H2O's, TOVA's and SnapKV's choices
// then meet the orders real sums give (zeros all tie, and their sorts and
// selections run fast on ties), so a profile of their host work is a
// real one.
// (Read when a fake device opens: fakeDriver.)
var fakeSums bool

// fakeSumCalls numbers the calls of fakeFillSums: each its own values.
var fakeSumCalls atomic.Uint64

// fakeFillSums writes fakeSums's values into v: a xorshift generator's
// top 24 bits a value (cheap: a profile with the switch on should show the
// policies' work, not the fake's).
func fakeFillSums(v []float32) {
	x := fakeSumCalls.Add(1)*0x9e3779b97f4a7c15 | 1
	s := 2 / float32(max(len(v), 1)) / (1 << 24)
	for i := range v {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		v[i] = float32(x>>40) * s
	}
}

// fakeDev is the fake device's state.
type fakeDev struct {
	next     atomic.Uint64 // the next device address handed out
	handles  atomic.Uint64 // the next module, function, stream, event or graph handle
	mu       sync.Mutex
	host     map[unsafe.Pointer][]byte // pinned host buffers, kept alive here
	sizes    map[uint64]uint64         // device allocations' sizes
	used     atomic.Int64              // device bytes held
	launches atomic.Int64
	copies   atomic.Int64 // host-to-device and device-to-device copies, memsets
	reads    atomic.Int64 // device-to-host copies
	waits    atomic.Int64 // the host's waits for the device (stream, context, event)
	gemms    atomic.Int64
	busy     atomic.Int64 // event queries left to answer "not ready" (SetFakeBusy)
	queries  atomic.Int64 // event queries (cuEventQuery)
	// streamWaits and sideCopies count a stream's waits for an event and
	// the copies on the side stream (Device.SideCopyDtoH).
	streamWaits, sideCopies atomic.Int64
	// The device's time (KVBENCH_FAKE_US: each kernel, GEMM and graph
	// launch is that many microseconds of work after the work queued
	// before it; 0, the default: no time at all): doneAt is when the
	// queued work ends, evDone when the work before each event's last
	// record does; a wait sleeps until then, a query compares. Under mu.
	// (One timeline: the side stream's copies take no time.)
	perLaunch time.Duration
	doneAt    time.Time
	evDone    map[uintptr]time.Time
	// evAt is when each event's last record completes on the fake's clock:
	// the host's time of the record, or the queued work's end where that is
	// later. Elapsed times are differences of it: with no device time the
	// host's share of the span timed (what kvbench prints under the fake).
	evAt        map[uintptr]time.Time
	byName      map[string]int64 // launches by kernel name (cuBLAS GEMMs as "cublas"), under mu
	trace       []string         // launches in order while tracing (FakeTrace), under mu
	tracing     bool
	traceEvents bool // events recorded go in the trace too (FakeTraceEvents), under mu
}

// fakeMem is the fake device's memory, in bytes (an H200's).
const fakeMem = 143771 << 20

// fakeSharedOptin is the shared memory a block of the fake device may opt
// in to, fakeSharedPerSM a multiprocessor's (an H200's; tests set others:
// SetFakeShared).
var (
	fakeSharedOptin int32 = 227 << 10
	fakeSharedPerSM int32 = 228 << 10
	fakeMemClockKHz int32 = 3201000 // an H200's (SetFakeMemory)
	fakeMemBusBits  int32 = 6144
)

// fake is the one fake device of the process.
var fake = &fakeDev{host: map[unsafe.Pointer][]byte{}, sizes: map[uint64]uint64{}, byName: map[string]int64{}}

// FakeCounts returns the launches (cuBLAS GEMMs included), copies to or on
// the device (memsets included), reads from it and waits for it that the
// fake device has seen since the process started: the difference of two
// calls is what the work between them asked of the driver. On a GPU each
// wait costs the host the time the device needs to catch up.
func FakeCounts() (launches, copies, reads, waits int64) {
	return fake.launches.Load() + fake.gemms.Load(), fake.copies.Load(), fake.reads.Load(), fake.waits.Load()
}

// SetFakeBusy makes the fake device's next n event queries answer "not
// ready" (its work is otherwise always done: a wait returns at once).
func SetFakeBusy(n int) { fake.busy.Store(int64(n)) }

// FakeEventQueries returns the event queries the fake device has answered.
func FakeEventQueries() int64 { return fake.queries.Load() }

// FakeSide returns the copies the fake device has run on a side stream and
// the waits of a stream for an event.
func FakeSide() (copies, streamWaits int64) { return fake.sideCopies.Load(), fake.streamWaits.Load() }

// FakeKernels returns the launches the fake device has seen by kernel name
// (cuBLAS's GEMMs under "cublas", graph launches under "graph"; graph
// captures begun under "capture"), a copy.
func FakeKernels() map[string]int64 {
	fake.mu.Lock()
	defer fake.mu.Unlock()
	return maps.Clone(fake.byName)
}

// FakeTrace starts recording the fake device's launches in order (kernel
// names, and "graph" for a graph's launch; not cuBLAS's GEMMs) and
// returns a function that stops and returns them: the order a piece of
// work queued its kernels in.
func FakeTrace() func() []string {
	fake.mu.Lock()
	fake.trace, fake.tracing = nil, true
	fake.mu.Unlock()
	return func() []string {
		fake.mu.Lock()
		defer fake.mu.Unlock()
		fake.tracing = false
		return fake.trace
	}
}

// FakeTraceEvents is FakeTrace with every event recorded on the stream in
// the trace too, as "event": where a timed piece of work's marks (Mark)
// fall among its launches.
func FakeTraceEvents() func() []string {
	stop := FakeTrace()
	fake.mu.Lock()
	fake.traceEvents = true
	fake.mu.Unlock()
	return func() []string {
		fake.mu.Lock()
		fake.traceEvents = false
		fake.mu.Unlock()
		return stop()
	}
}

// launched counts one launch of the kernel name.
func (f *fakeDev) launched(name string) {
	f.launches.Add(1)
	f.mu.Lock()
	f.byName[name]++
	if f.tracing {
		f.trace = append(f.trace, name)
	}
	f.work()
	f.mu.Unlock()
}

// work adds a launch's device time behind the queued work (under mu).
func (f *fakeDev) work() {
	if f.perLaunch == 0 {
		return
	}
	now := time.Now()
	if f.doneAt.Before(now) {
		f.doneAt = now
	}
	f.doneAt = f.doneAt.Add(f.perLaunch)
}

// until is when the work queued so far ends (ev: before event ev's last
// record; the zero time when there is no device time).
func (f *fakeDev) until(ev uintptr, event bool) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	if event {
		return f.evDone[ev]
	}
	return f.doneAt
}

// wait counts a wait for the device and sleeps until t.
func (f *fakeDev) wait(t time.Time) {
	f.waits.Add(1)
	if d := time.Until(t); d > 0 {
		time.Sleep(d)
	}
}

func (f *fakeDev) handle() uintptr { return uintptr(f.handles.Add(1)) }

// fakeLaunchTime reads $KVBENCH_FAKE_US: the fake device's microseconds of
// work a launch (unset or 0: none). Anything but a number of 0 or more is
// a mistake in a test's setting: it panics saying so.
func fakeLaunchTime() time.Duration {
	v := os.Getenv("KVBENCH_FAKE_US")
	if v == "" {
		return 0
	}
	us, err := strconv.ParseFloat(v, 64)
	if err != nil || us < 0 {
		panic(fmt.Sprintf("cuda: KVBENCH_FAKE_US=%q is not a number of microseconds (0 or more)", v))
	}
	return time.Duration(us * float64(time.Microsecond))
}

// fakeDriver returns the entry points of the fake device.
func fakeDriver() *driverAPI {
	if os.Getenv("KVBENCH_FAKE_SUMS") == "random" {
		fakeSums = true
	}
	f := fake
	f.next.CompareAndSwap(0, 1<<40)
	f.mu.Lock()
	f.perLaunch, f.evDone, f.evAt = fakeLaunchTime(), map[uintptr]time.Time{}, map[uintptr]time.Time{}
	f.mu.Unlock()
	d := &driverAPI{fake: f}
	d.cuInit = func(uint32) int32 { return 0 }
	d.cuDriverGetVersion = func(v *int32) int32 { *v = 13000; return 0 }
	d.cuGetErrorName = func(int32, **byte) int32 { return 1 }
	d.cuDeviceGetCount = func(n *int32) int32 { *n = 1; return 0 }
	d.cuDeviceGet = func(dev *int32, ordinal int32) int32 { *dev = ordinal; return 0 }
	d.cuDeviceGetName = func(name *byte, n int32, _ int32) int32 {
		s := unsafe.Slice(name, n)
		copy(s, "fake device (no kernels run)\x00")
		return 0
	}
	d.cuDeviceGetAttribute = func(v *int32, attr int32, _ int32) int32 {
		switch attr {
		case attrComputeCapabilityMaj:
			*v = 9
		case attrComputeCapabilityMin:
			*v = 0
		case attrMultiprocessorCount:
			*v = 132
		case attrL2CacheSize:
			*v = 60 << 20
		case attrMaxSharedPerBlock:
			*v = 48 << 10
		case attrMaxSharedPerBlockOptin:
			*v = fakeSharedOptin
		case attrClockRate:
			*v = 1980000
		case attrMemoryClockRate:
			*v = fakeMemClockKHz
		case attrGlobalMemoryBusWidth:
			*v = fakeMemBusBits
		default:
			*v = 0
		}
		return 0
	}
	d.cuDeviceTotalMem = func(b *uint64, _ int32) int32 { *b = fakeMem; return 0 }
	d.cuDevicePrimaryCtxRetain = func(ctx *uintptr, _ int32) int32 { *ctx = f.handle(); return 0 }
	d.cuDevicePrimaryCtxRelease = func(int32) int32 { return 0 }
	d.cuCtxSetCurrent = func(uintptr) int32 { return 0 }
	d.cuCtxSynchronize = func() int32 { f.wait(f.until(0, false)); return 0 }
	d.cuMemGetInfo = func(free, total *uint64) int32 {
		*total = fakeMem
		*free = uint64(max(fakeMem-f.used.Load(), 0))
		return 0
	}
	d.cuMemAlloc = func(p *uint64, n uint64) int32 {
		if int64(n) > fakeMem-f.used.Load() {
			return 2 // CUDA_ERROR_OUT_OF_MEMORY
		}
		n = (max(n, 1) + 511) &^ 511
		// Addresses are not reused; aligned as the driver's: 512 bytes, 2
		// MiB from 2 MiB on (the slabs' pages count on it).
		align := uint64(512)
		if n >= 2<<20 {
			align = 2 << 20
		}
		for {
			old := f.next.Load()
			start := (old + align - 1) &^ (align - 1)
			if f.next.CompareAndSwap(old, start+n) {
				*p = start
				break
			}
		}
		f.used.Add(int64(n))
		f.mu.Lock()
		f.sizes[*p] = n
		f.mu.Unlock()
		return 0
	}
	d.cuMemFree = func(p uint64) int32 {
		f.mu.Lock()
		n, ok := f.sizes[p]
		delete(f.sizes, p)
		f.mu.Unlock()
		if !ok {
			return 1 // CUDA_ERROR_INVALID_VALUE
		}
		f.used.Add(-int64(n))
		return 0
	}
	d.cuMemcpyDtoDAsync = func(_, _ uint64, _ uint64, _ uintptr) int32 { f.copies.Add(1); return 0 }
	d.cuMemcpyHtoDAsync = func(_ uint64, _ unsafe.Pointer, _ uint64, _ uintptr) int32 { f.copies.Add(1); return 0 }
	d.cuMemcpyDtoHAsync = func(dst unsafe.Pointer, _ uint64, n uint64, _ uintptr) int32 {
		f.reads.Add(1)
		clear(unsafe.Slice((*byte)(dst), n))
		return 0
	}
	d.cuMemAllocHost = func(p *unsafe.Pointer, n uint64) int32 {
		b := make([]byte, max(n, 1))
		*p = unsafe.Pointer(&b[0])
		f.mu.Lock()
		f.host[*p] = b
		f.mu.Unlock()
		return 0
	}
	d.cuMemFreeHost = func(p unsafe.Pointer) int32 {
		f.mu.Lock()
		delete(f.host, p)
		f.mu.Unlock()
		return 0
	}
	d.cuMemsetD8Async = func(uint64, uint8, uint64, uintptr) int32 { f.copies.Add(1); return 0 }
	d.cuMemsetD32Async = func(uint64, uint32, uint64, uintptr) int32 { f.copies.Add(1); return 0 }
	d.cuModuleLoadData = func(m *uintptr, _ unsafe.Pointer) int32 { *m = f.handle(); return 0 }
	d.cuModuleUnload = func(uintptr) int32 { return 0 }
	d.cuModuleGetFunction = func(fn *uintptr, _ uintptr, _ string) int32 { *fn = f.handle(); return 0 }
	d.cuFuncGetAttribute = func(v *int32, _ int32, _ uintptr) int32 { *v = 0; return 0 }
	d.cuFuncSetAttribute = func(uintptr, int32, int32) int32 { return 0 }
	d.cuOccupancyMaxActiveBlocksPerMultiprocessor = func(n *int32, _ uintptr, block int32, smem uint64) int32 {
		*n = max(2048/max(block, 1), 1) // threads and dynamic shared memory (1 KB a block reserved) limit it
		if smem > 0 {
			*n = max(min(*n, fakeSharedPerSM/(int32(smem)+1024)), 0)
		}
		return 0
	}
	d.cuStreamCreate = func(s *uintptr, _ uint32) int32 { *s = f.handle(); return 0 }
	d.cuStreamDestroy = func(uintptr) int32 { return 0 }
	d.cuStreamSynchronize = func(uintptr) int32 { f.wait(f.until(0, false)); return 0 }
	d.cuStreamWaitEvent = func(_, _ uintptr, _ uint32) int32 { f.streamWaits.Add(1); return 0 }
	d.cuEventCreate = func(e *uintptr, _ uint32) int32 { *e = f.handle(); return 0 }
	d.cuEventDestroy = func(uintptr) int32 { return 0 }
	d.cuEventRecord = func(e, _ uintptr) int32 {
		f.mu.Lock()
		if f.perLaunch > 0 {
			f.evDone[e] = f.doneAt
		}
		f.evAt[e] = time.Now()
		if f.doneAt.After(f.evAt[e]) {
			f.evAt[e] = f.doneAt
		}
		if f.tracing && f.traceEvents {
			f.trace = append(f.trace, "event")
		}
		f.mu.Unlock()
		return 0
	}
	d.cuEventSynchronize = func(e uintptr) int32 { f.wait(f.until(e, true)); return 0 }
	d.cuEventQuery = func(e uintptr) int32 {
		f.queries.Add(1)
		if f.busy.Add(-1) >= 0 || time.Now().Before(f.until(e, true)) {
			return 600 // CUDA_ERROR_NOT_READY
		}
		f.busy.Store(0)
		return 0
	}
	d.cuEventElapsedTime = func(ms *float32, start, end uintptr) int32 {
		f.mu.Lock()
		*ms = float32(f.evAt[end].Sub(f.evAt[start]).Seconds() * 1e3)
		f.mu.Unlock()
		return 0
	}
	d.cuStreamBeginCapture = func(uintptr, int32) int32 { f.mu.Lock(); f.byName["capture"]++; f.mu.Unlock(); return 0 }
	d.cuStreamEndCapture = func(_ uintptr, g *uintptr) int32 { *g = f.handle(); return 0 }
	d.cuGraphInstantiateWithFlags = func(e *uintptr, _ uintptr, _ uint64) int32 { *e = f.handle(); return 0 }
	d.cuGraphLaunch = func(_, _ uintptr) int32 { f.launched("graph"); return 0 }
	d.cuGraphExecDestroy = func(uintptr) int32 { return 0 }
	d.cuGraphDestroy = func(uintptr) int32 { return 0 }
	d.rawLaunchEx = 1 // programmatic dependent launches, as on a Hopper GPU's driver
	return d
}

// fakeCublas returns cuBLAS entry points for the fake device.
func fakeCublas() *cublasAPI {
	f := fake
	return &cublasAPI{
		path:               "fake",
		cublasCreate:       func(h *uintptr) int32 { *h = f.handle(); return 0 },
		cublasDestroy:      func(uintptr) int32 { return 0 },
		cublasSetStream:    func(_, _ uintptr) int32 { return 0 },
		cublasSetWorkspace: func(uintptr, uint64, uint64) int32 { return 0 },
		cublasGetVersion:   func(_ uintptr, v *int32) int32 { *v = 130100; return 0 },
		cublasGemmEx: func(uintptr, int32, int32, int32, int32, int32, unsafe.Pointer, uint64, int32, int32, uint64, int32, int32,
			unsafe.Pointer, uint64, int32, int32, int32, int32) int32 {
			f.gemms.Add(1)
			f.mu.Lock()
			f.byName["cublas"]++
			f.work()
			f.mu.Unlock()
			return 0
		},
	}
}

// fakeModules stands for LoadParts' compiled modules on the fake device:
// parts modules whose kernel lists are not known (any name is found).
func (d *Device) fakeModules(parts int) (Modules, error) {
	mods := make(Modules, parts)
	for i := range mods {
		mods[i] = &Module{d: d, h: fake.handle(), Res: &CompileResult{Arch: d.Arch(), NVRTC: "fake"}}
	}
	return mods, nil
}
