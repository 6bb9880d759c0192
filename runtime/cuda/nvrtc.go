package cuda

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// nvrtcAPI holds the bound NVRTC entry points; each returns an nvrtcResult.
type nvrtcAPI struct {
	nvrtcVersion           func(major, minor *int32) int32
	nvrtcGetErrorString    func(r int32) string
	nvrtcCreateProgram     func(prog *uintptr, src *byte, name *byte, numHeaders int32, headers, includeNames unsafe.Pointer) int32
	nvrtcDestroyProgram    func(prog *uintptr) int32
	nvrtcCompileProgram    func(prog uintptr, numOptions int32, options unsafe.Pointer) int32
	nvrtcGetProgramLogSize func(prog uintptr, n *uint64) int32
	nvrtcGetProgramLog     func(prog uintptr, log *byte) int32
	nvrtcGetCUBINSize      func(prog uintptr, n *uint64) int32
	nvrtcGetCUBIN          func(prog uintptr, cubin *byte) int32
	nvrtcGetPTXSize        func(prog uintptr, n *uint64) int32
	nvrtcGetPTX            func(prog uintptr, ptx *byte) int32

	path    string // the library that was opened
	version string // "13.0"
}

func (n *nvrtcAPI) symbols() []symbol {
	return []symbol{
		{&n.nvrtcVersion, []string{"nvrtcVersion"}},
		{&n.nvrtcGetErrorString, []string{"nvrtcGetErrorString"}},
		{&n.nvrtcCreateProgram, []string{"nvrtcCreateProgram"}},
		{&n.nvrtcDestroyProgram, []string{"nvrtcDestroyProgram"}},
		{&n.nvrtcCompileProgram, []string{"nvrtcCompileProgram"}},
		{&n.nvrtcGetProgramLogSize, []string{"nvrtcGetProgramLogSize"}},
		{&n.nvrtcGetProgramLog, []string{"nvrtcGetProgramLog"}},
		{&n.nvrtcGetCUBINSize, []string{"nvrtcGetCUBINSize"}},
		{&n.nvrtcGetCUBIN, []string{"nvrtcGetCUBIN"}},
		{&n.nvrtcGetPTXSize, []string{"nvrtcGetPTXSize"}},
		{&n.nvrtcGetPTX, []string{"nvrtcGetPTX"}},
	}
}

func (n *nvrtcAPI) check(call string, r int32) error {
	if r == 0 {
		return nil
	}
	return &Error{Call: call, Code: int(r), Name: n.nvrtcGetErrorString(r)}
}

var (
	nvrtcOnce sync.Once
	nvrtcLib  *nvrtcAPI
	nvrtcErr  error
)

// nvrtcCandidates lists where libnvrtc is looked for, in order: $KVBENCH_NVRTC
// (a file), the loader's search path, the CUDA toolkit folders, and the
// nvidia-cuda-nvrtc Python wheels' folders.
func nvrtcCandidates() []string {
	return libCandidates("KVBENCH_NVRTC", []string{"libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"}, "cuda_nvrtc")
}

// libCandidates lists the paths a CUDA library is looked for at: $env (a
// file) alone when set, else the sonames on the loader's search path, then in
// the CUDA toolkit folders and in the NVIDIA Python wheels' folder wheel.
func libCandidates(env string, sonames []string, wheel string) []string {
	if p := os.Getenv(env); p != "" {
		return []string{p}
	}
	out := append([]string(nil), sonames...)
	dirs := []string{"/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu"}
	if h := os.Getenv("CUDA_HOME"); h != "" {
		dirs = append([]string{filepath.Join(h, "lib64")}, dirs...)
	}
	for _, pat := range []string{
		"/usr/local/cuda-*/lib64",
		"/usr/local/lib/python3*/dist-packages/nvidia/" + wheel + "/lib",
		"/usr/local/lib/python3*/site-packages/nvidia/" + wheel + "/lib",
		"/usr/lib/python3*/dist-packages/nvidia/" + wheel + "/lib",
		"/opt/*/.venv/lib/python3*/site-packages/nvidia/" + wheel + "/lib",
		"/opt/*/.venv/lib/python3*/site-packages/nvidia/cu13/lib",
	} {
		m, _ := filepath.Glob(pat)
		sort.Sort(sort.Reverse(sort.StringSlice(m)))
		dirs = append(dirs, m...)
	}
	for _, d := range dirs {
		for _, s := range sonames {
			out = append(out, filepath.Join(d, s))
		}
	}
	return out
}

// preload opens the libraries matching pattern in path's folder (a library
// that path loads by name, found there even when the folder is not on the
// loader's path).
func preload(path, pattern string) {
	if !strings.Contains(path, "/") {
		return
	}
	m, _ := filepath.Glob(filepath.Join(filepath.Dir(path), pattern))
	sort.Strings(m)
	for _, b := range m {
		if _, err := purego.Dlopen(b, purego.RTLD_NOW|purego.RTLD_GLOBAL); err == nil {
			return
		}
	}
}

func loadNVRTC() (*nvrtcAPI, error) {
	nvrtcOnce.Do(func() {
		var errs []error
		for _, c := range nvrtcCandidates() {
			if strings.Contains(c, "/") {
				if _, err := os.Stat(c); err != nil {
					continue
				}
				// NVRTC loads its builtins library by name; load it from
				// the same folder first so that a library found outside the
				// loader's path still compiles.
				preload(c, "libnvrtc-builtins.so*")
			}
			h, err := purego.Dlopen(c, purego.RTLD_NOW|purego.RTLD_GLOBAL)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			n := &nvrtcAPI{path: c}
			if err := bind(h, c, n.symbols()); err != nil {
				errs = append(errs, err)
				continue
			}
			var maj, min int32
			if err := n.check("nvrtcVersion", n.nvrtcVersion(&maj, &min)); err != nil {
				errs = append(errs, err)
				continue
			}
			n.version = fmt.Sprintf("%d.%d", maj, min)
			nvrtcLib = n
			return
		}
		nvrtcErr = fmt.Errorf("cuda: no usable libnvrtc (set KVBENCH_NVRTC to its path): %w", errors.Join(errs...))
	})
	return nvrtcLib, nvrtcErr
}

// NVRTCVersion is the version of the NVRTC library found ("13.0") and its
// path, or an error saying why none was found.
func NVRTCVersion() (version, path string, err error) {
	n, err := loadNVRTC()
	if err != nil {
		return "", "", err
	}
	return n.version, n.path, nil
}

// cString returns s as a NUL-terminated byte slice.
func cString(s string) []byte {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return b
}

// CompileResult is a compiled kernel image and how it was made.
type CompileResult struct {
	Image  []byte   // CUBIN (for an sm_ arch) or PTX (for a compute_ arch)
	Arch   string   // e.g. "sm_90a"
	NVRTC  string   // NVRTC version, e.g. "13.0"
	Opts   []string // options besides the architecture
	Cached bool     // read from the on-disk cache
	Key    string   // the cache key
	Log    string   // NVRTC's log (warnings), empty when cached
}

// CompileParts compiles src as parts programs side by side, program p with
// -DKVB_PART=p added to opts (package kvbench/cuda's Parts). NVRTC takes
// programs on several threads at once: the time is about that of the
// largest part, not of the whole source.
func CompileParts(name, src, arch string, opts []string, parts int) ([]*CompileResult, error) {
	res := make([]*CompileResult, parts)
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[p], errs[p] = Compile(name, src, arch, append(slices.Clip(opts), fmt.Sprintf("-DKVB_PART=%d", p)))
			if errs[p] != nil {
				errs[p] = fmt.Errorf("part %d of %d: %w", p, parts, errs[p])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return res, nil
}

// CacheDir is where compiled kernels are kept: $KVBENCH_CUDA_CACHE, else
// the user cache folder's kvbench/cuda (~/.cache/kvbench/cuda).
func CacheDir() string {
	if d := os.Getenv("KVBENCH_CUDA_CACHE"); d != "" {
		return d
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "kvbench", "cuda")
}

// Compile compiles CUDA C source src for arch ("sm_90a" gives CUBIN,
// "compute_90" PTX) with NVRTC, reusing the on-disk cache keyed by the
// source, the NVRTC version, arch and opts. It needs NVRTC but no GPU.
func Compile(name, src, arch string, opts []string) (*CompileResult, error) {
	n, err := loadNVRTC()
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	for _, part := range append([]string{src, n.version, arch}, opts...) {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	key := hex.EncodeToString(h.Sum(nil))[:32]
	ext := ".cubin"
	if strings.HasPrefix(arch, "compute_") {
		ext = ".ptx"
	}
	res := &CompileResult{Arch: arch, NVRTC: n.version, Opts: opts, Key: key}
	path := filepath.Join(CacheDir(), key+ext)
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		res.Image, res.Cached = b, true
		return res, nil
	}
	img, log, err := n.compile(name, src, append([]string{"--gpu-architecture=" + arch}, opts...), ext == ".ptx")
	if err != nil {
		return nil, err
	}
	res.Image, res.Log = img, log
	// The cache is an optimisation: failing to write it is not an error.
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
		tmp, err := os.CreateTemp(filepath.Dir(path), key+".tmp*")
		if err == nil {
			_, werr := tmp.Write(img)
			cerr := tmp.Close()
			if werr == nil && cerr == nil {
				_ = os.Rename(tmp.Name(), path)
			} else {
				_ = os.Remove(tmp.Name())
			}
		}
	}
	return res, nil
}

func (n *nvrtcAPI) compile(name, src string, opts []string, ptx bool) (img []byte, log string, err error) {
	csrc, cname := cString(src), cString(name)
	var prog uintptr
	if err := n.check("nvrtcCreateProgram", n.nvrtcCreateProgram(&prog, &csrc[0], &cname[0], 0, nil, nil)); err != nil {
		return nil, "", err
	}
	defer n.nvrtcDestroyProgram(&prog)
	// The option array holds Go pointers that C reads: pin them.
	var pin runtime.Pinner
	defer pin.Unpin()
	copts := make([][]byte, len(opts))
	ptrs := make([]*byte, len(opts)+1)
	for i, o := range opts {
		copts[i] = cString(o)
		pin.Pin(&copts[i][0])
		ptrs[i] = &copts[i][0]
	}
	pin.Pin(&ptrs[0])
	r := n.nvrtcCompileProgram(prog, int32(len(opts)), unsafe.Pointer(&ptrs[0]))
	runtime.KeepAlive(copts)
	runtime.KeepAlive(csrc)
	var logSize uint64
	if n.nvrtcGetProgramLogSize(prog, &logSize) == 0 && logSize > 1 {
		b := make([]byte, logSize)
		if n.nvrtcGetProgramLog(prog, &b[0]) == 0 {
			log = strings.TrimRight(string(b[:logSize-1]), "\x00\n")
		}
	}
	if r != 0 {
		e := n.check("nvrtcCompileProgram", r).(*Error)
		e.Log = log
		return nil, log, e
	}
	sizeFn, getFn, call := n.nvrtcGetCUBINSize, n.nvrtcGetCUBIN, "nvrtcGetCUBIN"
	if ptx {
		sizeFn, getFn, call = n.nvrtcGetPTXSize, n.nvrtcGetPTX, "nvrtcGetPTX"
	}
	var size uint64
	if err := n.check(call+"Size", sizeFn(prog, &size)); err != nil {
		return nil, log, err
	}
	if size == 0 {
		return nil, log, fmt.Errorf("cuda: %s: empty image (is %q a real sm_ architecture?)", call, opts[0])
	}
	img = make([]byte, size)
	if err := n.check(call, getFn(prog, &img[0])); err != nil {
		return nil, log, err
	}
	return img, log, nil
}
