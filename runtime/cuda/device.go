package cuda

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Device attributes (CUdevice_attribute values from cuda.h).
const (
	attrMaxThreadsPerBlock     = 1
	attrMaxSharedPerBlock      = 8
	attrClockRate              = 13
	attrMultiprocessorCount    = 16
	attrMemoryClockRate        = 36
	attrGlobalMemoryBusWidth   = 37
	attrL2CacheSize            = 38
	attrComputeCapabilityMaj   = 75
	attrComputeCapabilityMin   = 76
	attrMaxSharedPerBlockOptin = 97
)

// Function attributes (CUfunction_attribute values from cuda.h).
const (
	funcAttrSharedSizeBytes = 1
	funcAttrLocalSizeBytes  = 3
	funcAttrNumRegs         = 4
)

// Ptr is a device memory address (CUdeviceptr).
type Ptr uint64

// Add returns p offset by bytes.
func (p Ptr) Add(bytes int64) Ptr { return Ptr(int64(p) + bytes) }

// Device is one CUDA GPU with its primary context and a stream that every
// operation of this package is ordered on. Each method makes the context
// current on the calling goroutine's OS thread, locked for the call, so a
// Device may be used from any goroutine, one call at a time.
type Device struct {
	api     *driverAPI
	ordinal int
	dev     int32
	ctx     uintptr
	stream  uintptr

	Name                string // e.g. "NVIDIA H100 80GB HBM3"
	Major               int    // compute capability
	Minor               int
	SMs                 int   // multiprocessors
	L2Bytes             int   // L2 cache size
	MemBytes            int64 // total device memory
	SharedPerBlock      int   // default shared memory limit of a block
	SharedPerBlockOptin int   // limit a kernel can opt in to
	ClockKHz            int   // the multiprocessors' peak clock (0: the driver did not say)
	MemClockKHz         int   // the memory's peak clock (0: the driver did not say)
	MemBusBits          int   // the memory bus's width (0: the driver did not say)

	mu     sync.Mutex
	allocs map[Ptr]int64
	now    int64
	peak   int64
	closed bool
	pdl    bool // LaunchAfter launches programmatic dependents
	// side is a second stream (non-blocking, made on first use) for
	// copies the stream must not wait for (SideCopyDtoH); sideBusy: work
	// was queued on it since the last Sync.
	side     uintptr
	sideBusy bool

	// serial counts the operations queued on the stream that nothing after
	// them overlaps: a copy, a memset, a wait, a graph's replay, a kernel
	// launched without the programmatic attribute. Whatever was queued
	// before one of them has finished before anything queued after it
	// starts (a plain kernel's own writes excepted: a dependent it lets
	// start early may overlap them). Not counted while a capture records the
	// stream's work; cuBLAS' launches are not counted either.
	serial    atomic.Uint64
	capturing atomic.Bool

	kc *kernelClock // the kernel clock, when started (kclock.go)
}

// Serial returns the count of stream-serialising operations queued so far
// (see Device.serial): a kernel queued after the count moved past c starts
// after everything queued before c was reached has finished.
func (d *Device) Serial() uint64 { return d.serial.Load() }

// serialise notes a stream-serialising operation being queued.
func (d *Device) serialise() {
	if !d.capturing.Load() {
		d.serial.Add(1)
	}
}

// Open retains the primary context of device ordinal and creates a stream.
func Open(ordinal int) (*Device, error) {
	api, err := loadDriver()
	if err != nil {
		return nil, err
	}
	if ordinal < 0 || ordinal >= drvDevs {
		return nil, fmt.Errorf("cuda: device %d does not exist (%d devices)", ordinal, drvDevs)
	}
	return openWith(api, ordinal)
}

// openWith is Open through the entry points api (the driver's or the fake
// device's).
func openWith(api *driverAPI, ordinal int) (*Device, error) {
	d := &Device{api: api, ordinal: ordinal, allocs: map[Ptr]int64{}}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := api.check("cuDeviceGet", api.cuDeviceGet(&d.dev, int32(ordinal))); err != nil {
		return nil, err
	}
	name := make([]byte, 256)
	if err := api.check("cuDeviceGetName", api.cuDeviceGetName(&name[0], int32(len(name)), d.dev)); err != nil {
		return nil, err
	}
	d.Name = goString(&name[0])
	attrs := []struct {
		dst  *int
		attr int32
	}{
		{&d.Major, attrComputeCapabilityMaj},
		{&d.Minor, attrComputeCapabilityMin},
		{&d.SMs, attrMultiprocessorCount},
		{&d.L2Bytes, attrL2CacheSize},
		{&d.SharedPerBlock, attrMaxSharedPerBlock},
		{&d.SharedPerBlockOptin, attrMaxSharedPerBlockOptin},
	}
	for _, a := range attrs {
		var v int32
		if err := api.check(fmt.Sprintf("cuDeviceGetAttribute(%d)", a.attr), api.cuDeviceGetAttribute(&v, a.attr, d.dev)); err != nil {
			return nil, err
		}
		*a.dst = int(v)
	}
	// The clocks and the bus width only inform choices (MemBytesPerSMCycle):
	// a driver that does not give them leaves them 0.
	for _, a := range []struct {
		dst  *int
		attr int32
	}{{&d.ClockKHz, attrClockRate}, {&d.MemClockKHz, attrMemoryClockRate}, {&d.MemBusBits, attrGlobalMemoryBusWidth}} {
		var v int32
		if api.cuDeviceGetAttribute(&v, a.attr, d.dev) == 0 && v > 0 {
			*a.dst = int(v)
		}
	}
	var total uint64
	if err := api.check("cuDeviceTotalMem_v2", api.cuDeviceTotalMem(&total, d.dev)); err != nil {
		return nil, err
	}
	d.MemBytes = int64(total)
	if err := api.check("cuDevicePrimaryCtxRetain", api.cuDevicePrimaryCtxRetain(&d.ctx, d.dev)); err != nil {
		return nil, err
	}
	if err := api.check("cuCtxSetCurrent", api.cuCtxSetCurrent(d.ctx)); err != nil {
		return nil, err
	}
	// A non-blocking stream (CU_STREAM_NON_BLOCKING): every copy and memset
	// of this package is enqueued on it too, so nothing is ordered through
	// the legacy default stream, and work on another Device's stream (of
	// another goroutine) never joins this one's (a graph capture on one
	// stream is not broken by another's copies).
	if err := api.check("cuStreamCreate", api.cuStreamCreate(&d.stream, 1)); err != nil {
		api.cuDevicePrimaryCtxRelease(d.dev)
		return nil, err
	}
	d.pdl = d.Major >= 9 && api.rawLaunchEx != 0 && os.Getenv("KVBENCH_PDL") != "off"
	return d, nil
}

// MemBandwidth is the memory's peak bandwidth in bytes a second (two
// transfers a memory clock over the bus), 0 where the driver did not give
// the memory clock or the bus width. An H100 SXM reports 2,619 MHz over
// 5,120 bits (3.35 TB/s), an H200 3,201 MHz over 6,144 (4.92 TB/s).
func (d *Device) MemBandwidth() float64 {
	return 2 * float64(d.MemClockKHz) * 1e3 * float64(d.MemBusBits) / 8
}

// MemBytesPerSMCycle is MemBandwidth shared among the multiprocessors, per
// cycle of their peak clock: how many bytes of memory a multiprocessor's
// cycle must consume to keep up (H100 SXM 12.8, H200 18.8); 0 where a
// figure is missing.
func (d *Device) MemBytesPerSMCycle() float64 {
	if d.SMs == 0 || d.ClockKHz == 0 {
		return 0
	}
	return d.MemBandwidth() / (float64(d.SMs) * float64(d.ClockKHz) * 1e3)
}

// threadCtx maps an OS thread id to the context this package last made
// current on it, so that enter skips the driver call when it already is
// (drivers without cuCtxGetCurrent).
var threadCtx sync.Map

// enter locks the goroutine to its thread and makes the context current;
// the caller must call leave (runtime.UnlockOSThread) when done. It asks
// the driver for the thread's current context (a call into libcuda, ~0.2
// us) rather than the kernel for the thread's id (a system call: 1.1 us on
// the development VM, more under gVisor), once for every launch and copy.
func (d *Device) enter() error {
	runtime.LockOSThread()
	if d.closed {
		runtime.UnlockOSThread()
		return fmt.Errorf("cuda: device %d is closed", d.ordinal)
	}
	if d.api.fake != nil {
		return nil
	}
	tid := -1
	if d.api.rawGetCtx != 0 {
		var cur uintptr
		if r, _, _ := purego.SyscallN(d.api.rawGetCtx, uintptr(unsafe.Pointer(&cur))); r == 0 && cur == d.ctx {
			return nil
		}
	} else {
		tid = syscall.Gettid()
		if c, ok := threadCtx.Load(tid); ok && c.(uintptr) == d.ctx {
			return nil
		}
	}
	r, _, _ := purego.SyscallN(d.api.rawSetCtx, d.ctx)
	if err := d.api.check("cuCtxSetCurrent", int32(r)); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	if tid >= 0 {
		threadCtx.Store(tid, d.ctx)
	}
	return nil
}

func leave() { runtime.UnlockOSThread() }

// Close frees every allocation still held, the stream and the context.
func (d *Device) Close() error {
	if err := d.enter(); err != nil {
		return err
	}
	defer leave()
	d.mu.Lock()
	for p := range d.allocs {
		d.api.cuMemFree(uint64(p))
	}
	d.allocs = map[Ptr]int64{}
	d.now = 0
	d.mu.Unlock()
	err1 := d.api.check("cuStreamDestroy_v2", d.api.cuStreamDestroy(d.stream))
	if d.side != 0 {
		if err := d.api.check("cuStreamDestroy_v2 (side stream)", d.api.cuStreamDestroy(d.side)); err1 == nil {
			err1 = err
		}
		d.side = 0
	}
	err2 := d.api.check("cuDevicePrimaryCtxRelease_v2", d.api.cuDevicePrimaryCtxRelease(d.dev))
	// The context may be gone: no thread counts as having it current.
	threadCtx.Range(func(k, v any) bool {
		if v.(uintptr) == d.ctx {
			threadCtx.Delete(k)
		}
		return true
	})
	d.closed = true
	if err1 != nil {
		return err1
	}
	return err2
}

// Arch is the NVRTC target for this device: "sm_90a" on Hopper (so kernels may
// use its architecture-specific instructions), else "sm_XY".
func (d *Device) Arch() string {
	if d.Major == 9 && d.Minor == 0 {
		return "sm_90a"
	}
	return fmt.Sprintf("sm_%d%d", d.Major, d.Minor)
}

// String describes the device in one line.
func (d *Device) String() string {
	return fmt.Sprintf("%s (sm_%d%d, %d SMs, %d MB L2, %.1f GiB, driver CUDA %s)",
		d.Name, d.Major, d.Minor, d.SMs, d.L2Bytes>>20, float64(d.MemBytes)/(1<<30), drvVerStr)
}

// MemInfo returns the device's free and total memory.
func (d *Device) MemInfo() (free, total int64, err error) {
	if err := d.enter(); err != nil {
		return 0, 0, err
	}
	defer leave()
	var f, t uint64
	err = d.api.check("cuMemGetInfo_v2", d.api.cuMemGetInfo(&f, &t))
	return int64(f), int64(t), err
}

// Alloc allocates bytes of device memory (uninitialised).
func (d *Device) Alloc(bytes int64) (Ptr, error) {
	if bytes <= 0 {
		panic(fmt.Sprintf("cuda: Alloc(%d)", bytes))
	}
	if err := d.enter(); err != nil {
		return 0, err
	}
	defer leave()
	var p uint64
	if err := d.api.check(fmt.Sprintf("cuMemAlloc_v2(%d bytes)", bytes), d.api.cuMemAlloc(&p, uint64(bytes))); err != nil {
		return 0, err
	}
	d.mu.Lock()
	d.allocs[Ptr(p)] = bytes
	d.now += bytes
	d.peak = max(d.peak, d.now)
	d.mu.Unlock()
	return Ptr(p), nil
}

// Free releases memory from Alloc.
func (d *Device) Free(p Ptr) error {
	d.mu.Lock()
	n, ok := d.allocs[p]
	d.mu.Unlock()
	if !ok {
		panic(fmt.Sprintf("cuda: Free(%#x): not allocated by this device", uint64(p)))
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer leave()
	if err := d.api.check("cuMemFree_v2", d.api.cuMemFree(uint64(p))); err != nil {
		return err
	}
	d.mu.Lock()
	delete(d.allocs, p)
	d.now -= n
	d.mu.Unlock()
	return nil
}

// MemStats returns the bytes allocated through Alloc now and at the peak.
func (d *Device) MemStats() (now, peak int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.now, d.peak
}

// ResetPeak sets the peak of MemStats to the bytes allocated now.
func (d *Device) ResetPeak() {
	d.mu.Lock()
	d.peak = d.now
	d.mu.Unlock()
}

func bytesOf[T any](s []T) (unsafe.Pointer, int64) {
	if len(s) == 0 {
		return nil, 0
	}
	var z T
	return unsafe.Pointer(&s[0]), int64(len(s)) * int64(unsafe.Sizeof(z))
}

// Upload copies the elements of src to dst on the device's stream (after
// the work enqueued before it) and waits for the copy.
func Upload[T any](d *Device, dst Ptr, src []T) error {
	p, n := bytesOf(src)
	if n == 0 {
		return nil
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer leave()
	d.serialise()
	if err := d.api.check("cuMemcpyHtoDAsync_v2", d.api.cuMemcpyHtoDAsync(uint64(dst), p, uint64(n), d.stream)); err != nil {
		return err
	}
	err := d.api.check("cuStreamSynchronize", d.api.cuStreamSynchronize(d.stream))
	if err == nil {
		err = d.syncSide()
	}
	runtime.KeepAlive(src)
	return err
}

// Download copies len(dst) elements from src into dst after the work on the
// device's stream has finished.
func Download[T any](d *Device, dst []T, src Ptr) error {
	p, n := bytesOf(dst)
	if n == 0 {
		return nil
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer leave()
	d.serialise()
	if err := d.api.check("cuMemcpyDtoHAsync_v2", d.api.cuMemcpyDtoHAsync(p, uint64(src), uint64(n), d.stream)); err != nil {
		return err
	}
	err := d.api.check("cuStreamSynchronize", d.api.cuStreamSynchronize(d.stream))
	if err == nil {
		err = d.syncSide()
	}
	runtime.KeepAlive(dst)
	if err == nil {
		d.clockRead()
	}
	return err
}

// CopyAsync enqueues a device-to-device copy of bytes on the stream.
func (d *Device) CopyAsync(dst, src Ptr, bytes int64) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer leave()
	d.serialise()
	return d.api.check("cuMemcpyDtoDAsync_v2", d.api.cuMemcpyDtoDAsync(uint64(dst), uint64(src), uint64(bytes), d.stream))
}

// Copy copies bytes from src to dst on the device's stream and waits for it.
func (d *Device) Copy(dst, src Ptr, bytes int64) error {
	if err := d.CopyAsync(dst, src, bytes); err != nil {
		return err
	}
	return d.Sync()
}

// Memset8 sets bytes bytes at p to v on the stream and waits for it.
func (d *Device) Memset8(p Ptr, v uint8, bytes int64) error {
	if err := d.enter(); err != nil {
		return err
	}
	d.serialise()
	err := d.api.check("cuMemsetD8Async", d.api.cuMemsetD8Async(uint64(p), v, uint64(bytes), d.stream))
	leave()
	if err != nil {
		return err
	}
	return d.Sync()
}

// Memset32 sets n 32-bit words at p to v on the stream and waits for it;
// with v = math.Float32bits(NaN) it poisons a float32 output.
func (d *Device) Memset32(p Ptr, v uint32, n int64) error {
	if err := d.enter(); err != nil {
		return err
	}
	d.serialise()
	err := d.api.check("cuMemsetD32Async", d.api.cuMemsetD32Async(uint64(p), v, uint64(n), d.stream))
	leave()
	if err != nil {
		return err
	}
	return d.Sync()
}

// PoisonF32 fills n float32s at p with NaN.
func (d *Device) PoisonF32(p Ptr, n int64) error {
	return d.Memset32(p, math.Float32bits(float32(math.NaN())), n)
}

// Sync waits for all work on the device's stream, and on its side stream
// where work was queued there, and reports a launch or execution error
// from it.
func (d *Device) Sync() error {
	if err := d.enter(); err != nil {
		return err
	}
	defer leave()
	d.serialise()
	if err := d.api.check("cuStreamSynchronize", d.api.cuStreamSynchronize(d.stream)); err != nil {
		return err
	}
	if err := d.syncSide(); err != nil {
		return err
	}
	d.clockRead()
	return nil
}

// syncSide waits for the side stream where work was queued there since
// the last wait: every wait for the stream waits for it too, so a caller
// that reuses memory after a wait never meets a side copy still reading it.
func (d *Device) syncSide() error {
	if !d.sideBusy {
		return nil
	}
	d.sideBusy = false
	return d.api.check("cuStreamSynchronize (side stream)", d.api.cuStreamSynchronize(d.side))
}

// SideCopyDtoH enqueues on the side stream a copy of bytes from src to h at
// off that starts once the work queued on the stream so far has run; the
// stream goes on without waiting for it. after is an event of the caller's,
// recorded on the stream for the side stream to wait for (recorded again
// by the next call: a wait takes the record it was queued behind); done,
// if not nil, is recorded on the side stream after the copy (the stream
// may wait for it, WaitFor, before it writes src again). Sync waits for
// the copy too.
func (d *Device) SideCopyDtoH(h *Pinned, off int64, src Ptr, bytes int64, after, done *Event) error {
	dst, err := h.span(off, bytes, "SideCopyDtoH")
	if err != nil || bytes == 0 {
		return err
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer leave()
	if d.side == 0 {
		if err := d.api.check("cuStreamCreate (side stream)", d.api.cuStreamCreate(&d.side, 1)); err != nil {
			return err
		}
	}
	if err := d.api.check("cuEventRecord", d.api.cuEventRecord(after.h, d.stream)); err != nil {
		return err
	}
	if err := d.api.check("cuStreamWaitEvent", d.api.cuStreamWaitEvent(d.side, after.h, 0)); err != nil {
		return err
	}
	d.sideBusy = true
	if fk := d.api.fake; fk != nil {
		fk.sideCopies.Add(1)
	}
	if err := d.api.check("cuMemcpyDtoHAsync_v2 (side stream)", d.api.cuMemcpyDtoHAsync(dst, uint64(src), uint64(bytes), d.side)); err != nil {
		return err
	}
	if done == nil {
		return nil
	}
	return d.api.check("cuEventRecord (side stream)", d.api.cuEventRecord(done.h, d.side))
}

// WaitFor makes the work queued on the stream after it wait for e's last
// record (on either stream).
func (d *Device) WaitFor(e *Event) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer leave()
	return d.api.check("cuStreamWaitEvent", d.api.cuStreamWaitEvent(d.stream, e.h, 0))
}

// ProfilerRange starts (on) or stops the range a profiler attached with
// --profile-from-start off records (ncu, nsys), after the queued work has
// run; without a profiler it does nothing.
func (d *Device) ProfilerRange(on bool) error {
	if err := d.Sync(); err != nil {
		return err
	}
	if d.api.fake != nil {
		return nil
	}
	fn, name := d.api.rawProfStop, "cuProfilerStop"
	if on {
		fn, name = d.api.rawProfStart, "cuProfilerStart"
	}
	if fn == 0 {
		return fmt.Errorf("cuda: the driver has no %s", name)
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer leave()
	r, _, _ := purego.SyscallN(fn)
	return d.api.check(name, int32(r))
}

// Event is a CUDA event for timing work on the device's stream.
type Event struct {
	d *Device
	h uintptr
}

// NewEvent creates a timing event.
func (d *Device) NewEvent() (*Event, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer leave()
	e := &Event{d: d}
	if err := d.api.check("cuEventCreate", d.api.cuEventCreate(&e.h, 0)); err != nil {
		return nil, err
	}
	return e, nil
}

// NewSyncEvent creates an event for waiting on, without timing (cheaper to
// record and to wait for).
func (d *Device) NewSyncEvent() (*Event, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer leave()
	e := &Event{d: d}
	const disableTiming = 0x2 // CU_EVENT_DISABLE_TIMING
	if err := d.api.check("cuEventCreate", d.api.cuEventCreate(&e.h, disableTiming)); err != nil {
		return nil, err
	}
	return e, nil
}

// Done reports, without waiting, whether the work enqueued before the
// event's last Record has run.
func (e *Event) Done() (bool, error) {
	if err := e.d.enter(); err != nil {
		return false, err
	}
	defer leave()
	const notReady = 600 // CUDA_ERROR_NOT_READY
	r := e.d.api.cuEventQuery(e.h)
	if r == notReady {
		return false, nil
	}
	return r == 0, e.d.api.check("cuEventQuery", r)
}

// RecordSide enqueues the event on the side stream (after its copies; on
// the stream where the side stream was never used).
func (e *Event) RecordSide() error {
	if err := e.d.enter(); err != nil {
		return err
	}
	defer leave()
	s := e.d.side
	if s == 0 {
		s = e.d.stream
	}
	return e.d.api.check("cuEventRecord (side stream)", e.d.api.cuEventRecord(e.h, s))
}

// Record enqueues the event on the device's stream.
func (e *Event) Record() error {
	if err := e.d.enter(); err != nil {
		return err
	}
	defer leave()
	return e.d.api.check("cuEventRecord", e.d.api.cuEventRecord(e.h, e.d.stream))
}

// Since waits for e and returns the milliseconds between start and e.
func (e *Event) Since(start *Event) (float64, error) {
	if err := e.d.enter(); err != nil {
		return 0, err
	}
	defer leave()
	if err := e.d.api.check("cuEventSynchronize", e.d.api.cuEventSynchronize(e.h)); err != nil {
		return 0, err
	}
	var ms float32
	if err := e.d.api.check("cuEventElapsedTime", e.d.api.cuEventElapsedTime(&ms, start.h, e.h)); err != nil {
		return 0, err
	}
	return float64(ms), nil
}

// Wait waits until the work enqueued before the event's last Record has run.
func (e *Event) Wait() error {
	if err := e.d.enter(); err != nil {
		return err
	}
	defer leave()
	return e.d.api.check("cuEventSynchronize", e.d.api.cuEventSynchronize(e.h))
}

// Destroy releases the event.
func (e *Event) Destroy() error {
	if err := e.d.enter(); err != nil {
		return err
	}
	defer leave()
	return e.d.api.check("cuEventDestroy_v2", e.d.api.cuEventDestroy(e.h))
}
