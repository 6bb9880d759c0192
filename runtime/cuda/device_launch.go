package cuda

// Kernel images and launches: a Module's loading and its Functions, their
// occupancy and shared memory, and the launch paths (plain, after another
// kernel, in clusters) with their parameters packed by value.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Module is a loaded kernel image.
type Module struct {
	d       *Device
	h       uintptr
	Res     *CompileResult
	kernels map[string]bool // the image's kernels; nil: not known
}

// Function is a kernel of a Module with its resource use.
type Function struct {
	d      *Device
	h      uintptr
	Name   string
	Regs   int // registers per thread
	Local  int // local memory (stack, spills) per thread, bytes
	Shared int // static shared memory, bytes
}

// Load compiles src for this device (through the cache) and loads it.
func (d *Device) Load(name, src string, opts []string) (*Module, error) {
	if d.api.fake != nil {
		ms, err := d.fakeModules(1)
		return ms[0], err
	}
	res, err := Compile(name, src, d.Arch(), opts)
	if err != nil {
		return nil, err
	}
	return d.loadImage(res)
}

// loadImage loads a compiled image as a module.
func (d *Device) loadImage(res *CompileResult) (*Module, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer leave()
	m := &Module{d: d, Res: res}
	if names, err := imageKernels(res.Image); err == nil {
		m.kernels = make(map[string]bool, len(names))
		for _, n := range names {
			m.kernels[n] = true
		}
	}
	img := append(res.Image, 0) // a PTX image must end in NUL
	if err := d.api.check("cuModuleLoadData", d.api.cuModuleLoadData(&m.h, unsafe.Pointer(&img[0]))); err != nil {
		return nil, err
	}
	runtime.KeepAlive(img)
	return m, nil
}

// LoadParts compiles src as parts modules (CompileParts) and loads them.
func (d *Device) LoadParts(name, src string, opts []string, parts int) (Modules, error) {
	if d.api.fake != nil {
		return d.fakeModules(parts)
	}
	res, err := CompileParts(name, src, d.Arch(), opts, parts)
	if err != nil {
		return nil, err
	}
	mods := make([]*Module, 0, parts)
	for _, r := range res {
		m, err := d.loadImage(r)
		if err != nil {
			for _, m := range mods {
				_ = m.Unload()
			}
			return nil, err
		}
		mods = append(mods, m)
	}
	return mods, nil
}

// Modules are the parts of one source (LoadParts).
type Modules []*Module

// Function looks up the kernel name in the part whose image lists it (the
// first, for the small kernels every part holds); where none does (a list
// that could not be read), in each part in turn.
func (ms Modules) Function(name string) (*Function, error) {
	for _, m := range ms {
		if m.kernels[name] {
			return m.Function(name)
		}
	}
	var first error
	for _, m := range ms {
		f, err := m.Function(name)
		if err == nil {
			return f, nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		first = fmt.Errorf("cuda: no kernel %s in the %d modules", name, len(ms))
	}
	return nil, first
}

// Unload unloads every part.
func (ms Modules) Unload() error {
	var errs []error
	for _, m := range ms {
		errs = append(errs, m.Unload())
	}
	return errors.Join(errs...)
}

// Unload unloads the module.
func (m *Module) Unload() error {
	if err := m.d.enter(); err != nil {
		return err
	}
	defer leave()
	return m.d.api.check("cuModuleUnload", m.d.api.cuModuleUnload(m.h))
}

// Function looks up the kernel name (an extern "C" name) in the module.
func (m *Module) Function(name string) (*Function, error) {
	if err := m.d.enter(); err != nil {
		return nil, err
	}
	defer leave()
	f := &Function{d: m.d, Name: name}
	if err := m.d.api.check("cuModuleGetFunction("+name+")", m.d.api.cuModuleGetFunction(&f.h, m.h, name)); err != nil {
		return nil, err
	}
	for _, a := range []struct {
		dst  *int
		attr int32
	}{{&f.Regs, funcAttrNumRegs}, {&f.Local, funcAttrLocalSizeBytes}, {&f.Shared, funcAttrSharedSizeBytes}} {
		var v int32
		if err := m.d.api.check("cuFuncGetAttribute", m.d.api.cuFuncGetAttribute(&v, a.attr, f.h)); err != nil {
			return nil, err
		}
		*a.dst = int(v)
	}
	return f, nil
}

// Occupancy is how many blocks of block threads and smem bytes of dynamic
// shared memory can be resident on one multiprocessor.
func (f *Function) Occupancy(block, smem int) (int, error) {
	if err := f.d.enter(); err != nil {
		return 0, err
	}
	defer leave()
	var n int32
	err := f.d.api.check("cuOccupancyMaxActiveBlocksPerMultiprocessor("+f.Name+")",
		f.d.api.cuOccupancyMaxActiveBlocksPerMultiprocessor(&n, f.h, int32(block), uint64(smem)))
	return int(n), err
}

// funcAttrMaxDynamicShared is CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES.
const funcAttrMaxDynamicShared = 8

// AllowShared lets launches of f take up to bytes of dynamic shared memory
// (the default limit is 48 KiB).
func (f *Function) AllowShared(bytes int) error {
	if err := f.d.enter(); err != nil {
		return err
	}
	defer leave()
	return f.d.api.check("cuFuncSetAttribute("+f.Name+", max dynamic shared)",
		f.d.api.cuFuncSetAttribute(f.h, funcAttrMaxDynamicShared, int32(bytes)))
}

// Dim3 is a grid or block shape.
type Dim3 struct{ X, Y, Z int }

// Launch enqueues f on the device's stream with grid, block, smem bytes of
// dynamic shared memory and args, each a Ptr, int32, uint32, int64, uint64,
// float32 or float64 (passed by value as the kernel's parameter of that
// size). It does not wait; Sync reports errors of the kernel's execution.
func (f *Function) Launch(grid, block Dim3, smem int, args ...any) error {
	return f.launch(false, 0, grid, block, smem, args)
}

// LaunchAfter launches f as a programmatic dependent of the kernel before it
// on the stream (compute capability 9.0+, where the driver has
// cuLaunchKernelEx; elsewhere, or with KVBENCH_PDL=off, it is Launch): f's
// blocks may start while that kernel finishes, so f must wait (pdl_wait in
// the kernels) before it reads what that kernel writes or writes what it
// reads. The kernel before it may let f start early (pdl_trigger).
func (f *Function) LaunchAfter(grid, block Dim3, smem int, args ...any) error {
	return f.launch(f.d.pdl, 0, grid, block, smem, args)
}

// LaunchCluster is LaunchAfter with the grid's blocks in clusters of
// cluster blocks along x (grid.X a multiple of it; 8 at most, compute
// capability 9.0+ and a driver with cuLaunchKernelEx: HasClusters), whose
// blocks run at once and may read each other's shared memory.
func (f *Function) LaunchCluster(cluster int, grid, block Dim3, smem int, args ...any) error {
	if !f.d.HasClusters() {
		return fmt.Errorf("cuda: %s: thread block clusters need compute capability 9.0 and cuLaunchKernelEx", f.Name)
	}
	if cluster < 1 || cluster > 8 || grid.X%cluster != 0 {
		return fmt.Errorf("cuda: %s: a cluster of %d blocks for a grid of %d along x", f.Name, cluster, grid.X)
	}
	return f.launch(f.d.pdl, cluster, grid, block, smem, args)
}

// HasClusters reports whether kernels may be launched in thread block
// clusters (LaunchCluster). The fake device does (it reports compute
// capability 9.0).
func (d *Device) HasClusters() bool {
	return d.Major >= 9 && (d.api.fake != nil || d.api.rawLaunchEx != 0)
}

// launchConfig is CUlaunchConfig; launchAttr is CUlaunchAttribute (an id,
// padding, a 64-byte value union).
type launchConfig struct {
	gridX, gridY, gridZ, blockX, blockY, blockZ, smem uint32
	_                                                 uint32
	stream, attrs                                     uintptr
	nattrs                                            uint32
	_                                                 uint32
}

type launchAttr struct {
	id  uint32
	_   uint32
	val [64]byte
}

// attrProgrammaticSerialization is CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
// attrClusterDimension CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION.
const (
	attrProgrammaticSerialization = 6
	attrClusterDimension          = 4
)

func (f *Function) launch(pdl bool, cluster int, grid, block Dim3, smem int, args []any) error {
	// One 8-byte slot per argument and an array of pointers to the slots,
	// reused from a pool; the driver copies them before cuLaunchKernel
	// returns.
	lb := launchBufs.Get().(*launchBuf)
	defer launchBufs.Put(lb)
	if len(args) > len(lb.slots) {
		return fmt.Errorf("cuda: %s: %d arguments (at most %d)", f.Name, len(args), len(lb.slots))
	}
	for i, a := range args {
		s := unsafe.Pointer(&lb.slots[i])
		lb.slots[i] = 0
		switch v := a.(type) {
		case Ptr:
			*(*uint64)(s) = uint64(v)
		case int32:
			*(*int32)(s) = v
		case uint32:
			*(*uint32)(s) = v
		case int64:
			*(*int64)(s) = v
		case uint64:
			*(*uint64)(s) = v
		case float32:
			*(*float32)(s) = v
		case float64:
			*(*float64)(s) = v
		case *TensorMap: // by value: the driver copies the 128 bytes at launch
			lb.params[i] = v.bytes()
			continue
		case ByValue: // a struct parameter: the driver copies its bytes at launch
			if len(v) == 0 {
				panic(fmt.Sprintf("cuda: %s: argument %d is an empty struct", f.Name, i))
			}
			lb.params[i] = unsafe.Pointer(&v[0])
			continue
		default:
			panic(fmt.Sprintf("cuda: %s: argument %d has unsupported type %T", f.Name, i, a))
		}
		lb.params[i] = s
	}
	fix := func(v int) uintptr { return uintptr(max(v, 1)) }
	if err := f.d.enter(); err != nil {
		return err
	}
	defer leave()
	if !pdl {
		f.d.serialise()
	}
	if t := f.d.clockStart(); t != 0 {
		defer f.d.clockEnd(f.Name, t)
	}
	if fk := f.d.api.fake; fk != nil {
		fk.launched(f.Name)
		return nil
	}
	if pdl || cluster > 0 {
		n := 0
		if pdl {
			lb.attrs[n] = launchAttr{id: attrProgrammaticSerialization}
			lb.attrs[n].val[0] = 1
			n++
		}
		if cluster > 0 { // CUlaunchAttributeValue.clusterDim: x, y, z
			lb.attrs[n] = launchAttr{id: attrClusterDimension}
			binary.LittleEndian.PutUint32(lb.attrs[n].val[0:], uint32(cluster))
			binary.LittleEndian.PutUint32(lb.attrs[n].val[4:], 1)
			binary.LittleEndian.PutUint32(lb.attrs[n].val[8:], 1)
			n++
		}
		lb.cfg = launchConfig{gridX: uint32(fix(grid.X)), gridY: uint32(fix(grid.Y)), gridZ: uint32(fix(grid.Z)),
			blockX: uint32(fix(block.X)), blockY: uint32(fix(block.Y)), blockZ: uint32(fix(block.Z)), smem: uint32(smem),
			stream: f.d.stream, attrs: uintptr(unsafe.Pointer(&lb.attrs[0])), nattrs: uint32(n)}
		r, _, _ := purego.SyscallN(f.d.api.rawLaunchEx, uintptr(unsafe.Pointer(&lb.cfg)), f.h, uintptr(unsafe.Pointer(&lb.params[0])), 0)
		runtime.KeepAlive(lb)
		if r != 0 {
			return f.d.api.check("cuLaunchKernelEx("+f.Name+")", int32(r))
		}
		return nil
	}
	r, _, _ := purego.SyscallN(f.d.api.rawLaunch, f.h, fix(grid.X), fix(grid.Y), fix(grid.Z), fix(block.X), fix(block.Y), fix(block.Z),
		uintptr(smem), f.d.stream, uintptr(unsafe.Pointer(&lb.params[0])), 0)
	runtime.KeepAlive(lb)
	if r != 0 {
		return f.d.api.check("cuLaunchKernel("+f.Name+")", int32(r))
	}
	return nil
}

// ByValue is a kernel parameter passed by value (a struct): exactly the
// bytes of the kernel's parameter type, which the driver copies at launch.
type ByValue []byte

// wordsByValue is a struct parameter of int32 words (RtBox, RtHead).
func wordsByValue(w []int32) ByValue { return ByValue(raw(w)) }

// launchBuf holds a launch's argument slots and the pointers to them.
type launchBuf struct {
	slots  [32]uint64
	params [32]unsafe.Pointer
	cfg    launchConfig
	attrs  [2]launchAttr
}

var launchBufs = sync.Pool{New: func() any { return new(launchBuf) }}
