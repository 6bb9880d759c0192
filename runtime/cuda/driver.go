package cuda

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Error is a failed CUDA driver or NVRTC call: the call and the error's name.
type Error struct {
	Call string // the function called, e.g. "cuMemAlloc_v2"
	Code int    // the CUresult or nvrtcResult
	Name string // the error's name, e.g. "CUDA_ERROR_OUT_OF_MEMORY"
	Log  string // the NVRTC compile log, when there is one
}

func (e *Error) Error() string {
	s := fmt.Sprintf("cuda: %s: %s (%d)", e.Call, e.Name, e.Code)
	if e.Log != "" {
		s += "\n" + e.Log
	}
	return s
}

// driverAPI holds the bound CUDA driver entry points. Every one returns a
// CUresult; the Go signatures mirror cuda.h with CUdeviceptr as uint64 and the
// opaque handles (CUcontext, CUmodule, CUfunction, CUstream, CUevent) as
// uintptr.
type driverAPI struct {
	cuInit                                      func(flags uint32) int32
	cuDriverGetVersion                          func(v *int32) int32
	cuGetErrorName                              func(code int32, s **byte) int32
	cuDeviceGetCount                            func(n *int32) int32
	cuDeviceGet                                 func(dev *int32, ordinal int32) int32
	cuDeviceGetName                             func(name *byte, n int32, dev int32) int32
	cuDeviceGetAttribute                        func(v *int32, attr int32, dev int32) int32
	cuDeviceTotalMem                            func(bytes *uint64, dev int32) int32
	cuDevicePrimaryCtxRetain                    func(ctx *uintptr, dev int32) int32
	cuDevicePrimaryCtxRelease                   func(dev int32) int32
	cuCtxSetCurrent                             func(ctx uintptr) int32
	cuCtxSynchronize                            func() int32
	cuMemGetInfo                                func(free, total *uint64) int32
	cuMemAlloc                                  func(dptr *uint64, bytes uint64) int32
	cuMemFree                                   func(dptr uint64) int32
	cuMemcpyDtoDAsync                           func(dst, src uint64, n uint64, stream uintptr) int32
	cuMemcpyHtoDAsync                           func(dst uint64, src unsafe.Pointer, n uint64, stream uintptr) int32
	cuMemcpyDtoHAsync                           func(dst unsafe.Pointer, src uint64, n uint64, stream uintptr) int32
	cuMemAllocHost                              func(p *unsafe.Pointer, bytes uint64) int32
	cuMemFreeHost                               func(p unsafe.Pointer) int32
	cuMemsetD8Async                             func(dst uint64, v uint8, n uint64, stream uintptr) int32
	cuMemsetD32Async                            func(dst uint64, v uint32, n uint64, stream uintptr) int32
	cuModuleLoadData                            func(mod *uintptr, image unsafe.Pointer) int32
	cuModuleUnload                              func(mod uintptr) int32
	cuModuleGetFunction                         func(fn *uintptr, mod uintptr, name string) int32
	cuFuncGetAttribute                          func(v *int32, attr int32, fn uintptr) int32
	cuFuncSetAttribute                          func(fn uintptr, attr int32, v int32) int32
	cuOccupancyMaxActiveBlocksPerMultiprocessor func(n *int32, fn uintptr, blockSize int32, smem uint64) int32
	cuStreamCreate                              func(s *uintptr, flags uint32) int32
	cuStreamDestroy                             func(s uintptr) int32
	cuStreamSynchronize                         func(s uintptr) int32
	cuStreamWaitEvent                           func(s, e uintptr, flags uint32) int32
	cuEventCreate                               func(e *uintptr, flags uint32) int32
	cuEventDestroy                              func(e uintptr) int32
	cuEventRecord                               func(e, s uintptr) int32
	cuEventSynchronize                          func(e uintptr) int32
	cuEventQuery                                func(e uintptr) int32
	cuEventElapsedTime                          func(ms *float32, start, end uintptr) int32
	cuStreamBeginCapture                        func(s uintptr, mode int32) int32
	cuStreamEndCapture                          func(s uintptr, graph *uintptr) int32
	cuGraphInstantiateWithFlags                 func(exec *uintptr, graph uintptr, flags uint64) int32
	cuGraphLaunch                               func(exec, s uintptr) int32
	cuGraphExecDestroy                          func(exec uintptr) int32
	cuGraphDestroy                              func(graph uintptr) int32

	// Raw addresses of the calls on the per-operation path, called through
	// purego.SyscallN (no reflection, no allocation).
	rawLaunch, rawSetCtx, rawHtoDAsync uintptr
	// cuLaunchKernelEx, for programmatic dependent launches; 0 when the
	// driver lacks it.
	rawLaunchEx uintptr
	// cuCtxGetCurrent (Device.enter); 0 when the driver lacks it.
	rawGetCtx uintptr
	// cuProfilerStart and cuProfilerStop (a profiler's range: ncu
	// --profile-from-start off); 0 when the driver lacks them.
	rawProfStart, rawProfStop uintptr
	// cuTensorMapEncodeTiled (tma.go); 0 when the driver lacks it.
	rawTensorMapEncode uintptr
	// fake is the fake device's state when the entry points are its
	// (KVBENCH_CUDA_FAKE, fake.go): the raw calls above are not made.
	fake *fakeDev
}

// symbol names one entry point: the Go function to bind and the exported
// names to try, the preferred (versioned) one first.
type symbol struct {
	fn    any
	names []string
}

func (d *driverAPI) symbols() []symbol {
	return []symbol{
		{&d.cuInit, []string{"cuInit"}},
		{&d.cuDriverGetVersion, []string{"cuDriverGetVersion"}},
		{&d.cuGetErrorName, []string{"cuGetErrorName"}},
		{&d.cuDeviceGetCount, []string{"cuDeviceGetCount"}},
		{&d.cuDeviceGet, []string{"cuDeviceGet"}},
		{&d.cuDeviceGetName, []string{"cuDeviceGetName"}},
		{&d.cuDeviceGetAttribute, []string{"cuDeviceGetAttribute"}},
		{&d.cuDeviceTotalMem, []string{"cuDeviceTotalMem_v2"}},
		{&d.cuDevicePrimaryCtxRetain, []string{"cuDevicePrimaryCtxRetain"}},
		{&d.cuDevicePrimaryCtxRelease, []string{"cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"}},
		{&d.cuCtxSetCurrent, []string{"cuCtxSetCurrent"}},
		{&d.cuCtxSynchronize, []string{"cuCtxSynchronize"}},
		{&d.cuMemGetInfo, []string{"cuMemGetInfo_v2"}},
		{&d.cuMemAlloc, []string{"cuMemAlloc_v2"}},
		{&d.cuMemFree, []string{"cuMemFree_v2"}},
		{&d.cuMemcpyDtoDAsync, []string{"cuMemcpyDtoDAsync_v2"}},
		{&d.cuMemcpyHtoDAsync, []string{"cuMemcpyHtoDAsync_v2"}},
		{&d.cuMemcpyDtoHAsync, []string{"cuMemcpyDtoHAsync_v2"}},
		{&d.cuMemAllocHost, []string{"cuMemAllocHost_v2"}},
		{&d.cuMemFreeHost, []string{"cuMemFreeHost"}},
		{&d.cuMemsetD8Async, []string{"cuMemsetD8Async"}},
		{&d.cuMemsetD32Async, []string{"cuMemsetD32Async"}},
		{&d.cuModuleLoadData, []string{"cuModuleLoadData"}},
		{&d.cuModuleUnload, []string{"cuModuleUnload"}},
		{&d.cuModuleGetFunction, []string{"cuModuleGetFunction"}},
		{&d.cuFuncGetAttribute, []string{"cuFuncGetAttribute"}},
		{&d.cuFuncSetAttribute, []string{"cuFuncSetAttribute"}},
		{&d.cuOccupancyMaxActiveBlocksPerMultiprocessor, []string{"cuOccupancyMaxActiveBlocksPerMultiprocessor"}},
		{&d.cuStreamCreate, []string{"cuStreamCreate"}},
		{&d.cuStreamDestroy, []string{"cuStreamDestroy_v2", "cuStreamDestroy"}},
		{&d.cuStreamSynchronize, []string{"cuStreamSynchronize"}},
		{&d.cuStreamWaitEvent, []string{"cuStreamWaitEvent"}},
		{&d.cuEventCreate, []string{"cuEventCreate"}},
		{&d.cuEventDestroy, []string{"cuEventDestroy_v2", "cuEventDestroy"}},
		{&d.cuEventRecord, []string{"cuEventRecord"}},
		{&d.cuEventSynchronize, []string{"cuEventSynchronize"}},
		{&d.cuEventQuery, []string{"cuEventQuery"}},
		// CUDA 12.8 added the _v2 export; CUDA 13 headers name only it.
		{&d.cuEventElapsedTime, []string{"cuEventElapsedTime_v2", "cuEventElapsedTime"}},
		{&d.cuStreamBeginCapture, []string{"cuStreamBeginCapture_v2", "cuStreamBeginCapture"}},
		{&d.cuStreamEndCapture, []string{"cuStreamEndCapture"}},
		{&d.cuGraphInstantiateWithFlags, []string{"cuGraphInstantiateWithFlags"}},
		{&d.cuGraphLaunch, []string{"cuGraphLaunch"}},
		{&d.cuGraphExecDestroy, []string{"cuGraphExecDestroy"}},
		{&d.cuGraphDestroy, []string{"cuGraphDestroy"}},
	}
}

// bind resolves each symbol in lib with Dlsym (a missing one is an error, not
// a panic) and registers the Go function for it.
func bind(lib uintptr, libName string, syms []symbol) error {
	for _, s := range syms {
		var addr uintptr
		var err error
		for _, name := range s.names {
			addr, err = purego.Dlsym(lib, name)
			if err == nil && addr != 0 {
				break
			}
		}
		if addr == 0 {
			return fmt.Errorf("cuda: %s has none of %v: %v", libName, s.names, err)
		}
		purego.RegisterFunc(s.fn, addr)
	}
	return nil
}

var (
	drvOnce   sync.Once
	drv       *driverAPI
	drvErr    error
	drvDevs   int
	drvVerStr string
)

// loadDriver opens libcuda.so.1, binds the entry points and calls cuInit. It
// runs once; later calls return the first result.
func loadDriver() (*driverAPI, error) {
	drvOnce.Do(func() {
		if fakeOn() {
			drv, drvDevs, drvVerStr = fakeDriver(), 1, "13.0"
			return
		}
		drv, drvErr = openDriver()
	})
	return drv, drvErr
}

func openDriver() (*driverAPI, error) {
	names := []string{"libcuda.so.1", "libcuda.so"}
	if p := os.Getenv("KVBENCH_LIBCUDA"); p != "" {
		names = []string{p}
	}
	var lib uintptr
	var errs []error
	for _, n := range names {
		h, err := purego.Dlopen(n, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err == nil {
			lib = h
			break
		}
		errs = append(errs, err)
	}
	if lib == 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			// dlerror's text can be empty (its state was read elsewhere).
			if msgs[i] = e.Error(); msgs[i] == "" {
				msgs[i] = names[i] + ": cannot be opened"
			}
		}
		return nil, fmt.Errorf("no CUDA driver library: %s", strings.Join(msgs, "; "))
	}
	d := &driverAPI{}
	if err := bind(lib, "libcuda.so.1", d.symbols()); err != nil {
		return nil, err
	}
	for _, r := range []struct {
		dst  *uintptr
		name string
	}{{&d.rawLaunch, "cuLaunchKernel"}, {&d.rawSetCtx, "cuCtxSetCurrent"}, {&d.rawHtoDAsync, "cuMemcpyHtoDAsync_v2"}} {
		addr, err := purego.Dlsym(lib, r.name)
		if err != nil || addr == 0 {
			return nil, fmt.Errorf("cuda: libcuda.so.1 has no %s: %v", r.name, err)
		}
		*r.dst = addr
	}
	if addr, err := purego.Dlsym(lib, "cuLaunchKernelEx"); err == nil {
		d.rawLaunchEx = addr
	}
	d.rawGetCtx, _ = purego.Dlsym(lib, "cuCtxGetCurrent")
	d.rawProfStart, _ = purego.Dlsym(lib, "cuProfilerStart")
	d.rawProfStop, _ = purego.Dlsym(lib, "cuProfilerStop")
	d.rawTensorMapEncode, _ = purego.Dlsym(lib, "cuTensorMapEncodeTiled")
	if err := d.check("cuInit", d.cuInit(0)); err != nil {
		return nil, err
	}
	var v int32
	if err := d.check("cuDriverGetVersion", d.cuDriverGetVersion(&v)); err != nil {
		return nil, err
	}
	drvVerStr = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	var n int32
	if err := d.check("cuDeviceGetCount", d.cuDeviceGetCount(&n)); err != nil {
		return nil, err
	}
	drvDevs = int(n)
	return d, nil
}

// check turns a CUresult into nil or an *Error naming call.
func (d *driverAPI) check(call string, r int32) error {
	if r == 0 {
		return nil
	}
	name := fmt.Sprintf("CUresult %d", r)
	var p *byte
	if d.cuGetErrorName != nil && d.cuGetErrorName(r, &p) == 0 && p != nil {
		name = goString(p)
	}
	return &Error{Call: call, Code: int(r), Name: name}
}

// goString copies the NUL-terminated C string at p.
func goString(p *byte) string {
	if p == nil {
		return ""
	}
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}

// Available reports whether a CUDA driver and at least one device are present
// and, when not, why. It never panics or exits: a binary that imports this
// package runs on machines without a GPU.
func Available() (bool, string) {
	if _, err := loadDriver(); err != nil {
		return false, err.Error()
	}
	if drvDevs == 0 {
		return false, "the CUDA driver reports no device"
	}
	return true, ""
}

// DriverVersion is the CUDA version the driver supports ("13.0"), or "" when
// no driver was loaded.
func DriverVersion() string {
	if _, err := loadDriver(); err != nil {
		return ""
	}
	return drvVerStr
}
