package cuda

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// cublasAPI holds the bound cuBLAS entry points; each returns a
// cublasStatus_t.
type cublasAPI struct {
	cublasCreate       func(h *uintptr) int32
	cublasDestroy      func(h uintptr) int32
	cublasSetStream    func(h, stream uintptr) int32
	cublasSetWorkspace func(h uintptr, ws uint64, bytes uint64) int32
	cublasGetVersion   func(h uintptr, v *int32) int32
	cublasGemmEx       func(h uintptr, transa, transb int32, m, n, k int32, alpha unsafe.Pointer,
		a uint64, atype int32, lda int32, b uint64, btype int32, ldb int32, beta unsafe.Pointer,
		c uint64, ctype int32, ldc int32, compute int32, algo int32) int32

	path string
}

func (c *cublasAPI) symbols() []symbol {
	return []symbol{
		{&c.cublasCreate, []string{"cublasCreate_v2"}},
		{&c.cublasDestroy, []string{"cublasDestroy_v2"}},
		{&c.cublasSetStream, []string{"cublasSetStream_v2"}},
		{&c.cublasSetWorkspace, []string{"cublasSetWorkspace_v2"}},
		{&c.cublasGetVersion, []string{"cublasGetVersion_v2"}},
		{&c.cublasGemmEx, []string{"cublasGemmEx"}},
	}
}

// cuBLAS and CUDA enumerations (cublas_api.h, library_types.h).
const (
	cublasOpN            = 0
	cublasOpT            = 1
	cudaR32F             = 0
	cudaR16F             = 2
	cudaR16BF            = 14
	cublasCompute32F     = 68
	cublasCompute32FPed  = 69 // float32 with no reduced-precision shortcuts (no TF32)
	cublasGemmDefault    = -1
	cublasWorkspaceBytes = 32 << 20
)

// cublasStatusNames names the cublasStatus_t values.
var cublasStatusNames = map[int32]string{
	1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED", 7: "CUBLAS_STATUS_INVALID_VALUE",
	8: "CUBLAS_STATUS_ARCH_MISMATCH", 11: "CUBLAS_STATUS_MAPPING_ERROR", 13: "CUBLAS_STATUS_EXECUTION_FAILED",
	14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED", 16: "CUBLAS_STATUS_LICENSE_ERROR",
}

func (c *cublasAPI) check(call string, r int32) error {
	if r == 0 {
		return nil
	}
	name, ok := cublasStatusNames[r]
	if !ok {
		name = fmt.Sprintf("cublasStatus %d", r)
	}
	return &Error{Call: call, Code: int(r), Name: name}
}

var (
	cublasOnce sync.Once
	cublasLib  *cublasAPI
	cublasErr  error
)

// loadCublas opens libcublas ($KVBENCH_CUBLAS, the loader's path, the CUDA
// toolkit, the nvidia-cublas wheels) and binds it, once.
func loadCublas() (*cublasAPI, error) {
	cublasOnce.Do(func() {
		var errs []error
		for _, c := range libCandidates("KVBENCH_CUBLAS", []string{"libcublas.so", "libcublas.so.13", "libcublas.so.12"}, "cublas") {
			if strings.Contains(c, "/") {
				if _, err := os.Stat(c); err != nil {
					continue
				}
				preload(c, "libcublasLt.so*")
			}
			h, err := purego.Dlopen(c, purego.RTLD_NOW|purego.RTLD_GLOBAL)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			api := &cublasAPI{path: c}
			if err := bind(h, c, api.symbols()); err != nil {
				errs = append(errs, err)
				continue
			}
			cublasLib = api
			return
		}
		cublasErr = fmt.Errorf("cuda: no usable libcublas (set KVBENCH_CUBLAS to its path): %w", errors.Join(errs...))
	})
	return cublasLib, cublasErr
}

// BLAS is a cuBLAS handle bound to a device's stream, with a workspace from
// the device's accounted allocations.
type BLAS struct {
	d       *Device
	api     *cublasAPI
	h       uintptr
	ws      Ptr
	Version string // e.g. "13.0.2"
	Path    string // the library opened
}

// NewBLAS creates a cuBLAS handle on d's stream.
func NewBLAS(d *Device) (*BLAS, error) {
	api, err := fakeCublas(), error(nil) // the fake device's
	if d.api.fake == nil {
		api, err = loadCublas()
	}
	if err != nil {
		return nil, err
	}
	ws, err := d.Alloc(cublasWorkspaceBytes)
	if err != nil {
		return nil, err
	}
	bl := &BLAS{d: d, api: api, ws: ws, Path: api.path}
	if err := bl.init(); err != nil {
		_ = bl.Close()
		return nil, err
	}
	return bl, nil
}

// init creates the handle and binds it to the stream and the workspace.
func (bl *BLAS) init() error {
	if err := bl.d.enter(); err != nil {
		return err
	}
	defer leave()
	api := bl.api
	if err := api.check("cublasCreate_v2", api.cublasCreate(&bl.h)); err != nil {
		return err
	}
	if err := api.check("cublasSetStream_v2", api.cublasSetStream(bl.h, bl.d.stream)); err != nil {
		return err
	}
	if err := api.check("cublasSetWorkspace_v2", api.cublasSetWorkspace(bl.h, uint64(bl.ws), cublasWorkspaceBytes)); err != nil {
		return err
	}
	var v int32
	if err := api.check("cublasGetVersion_v2", api.cublasGetVersion(bl.h, &v)); err != nil {
		return err
	}
	bl.Version = fmt.Sprintf("%d.%d.%d", v/10000, v/100%100, v%100)
	return nil
}

// Close destroys the handle and frees the workspace.
func (bl *BLAS) Close() error {
	var err error
	if bl.h != 0 {
		if err = bl.d.enter(); err != nil {
			return err
		}
		err = bl.api.check("cublasDestroy_v2", bl.api.cublasDestroy(bl.h))
		leave()
		bl.h = 0
	}
	if bl.ws != 0 {
		if e := bl.d.Free(bl.ws); err == nil {
			err = e
		}
		bl.ws = 0
	}
	return err
}

// GemmType is an element type GemmNT takes for its inputs.
type GemmType int32

// Input types of GemmNT.
const (
	GemmF32  GemmType = cudaR32F
	GemmBF16 GemmType = cudaR16BF
	GemmF16  GemmType = cudaR16F
)

// String names the type: f32, bf16 or f16.
func (t GemmType) String() string {
	switch t {
	case GemmF32:
		return "f32"
	case GemmBF16:
		return "bf16"
	case GemmF16:
		return "f16"
	}
	return fmt.Sprintf("type %d", int32(t))
}

// GemmNT enqueues dst[r, o] = sum_i x[r, i] * w[o, i] on the stream: dst
// [rows, out] float32, x [rows, in] and w [out, in] row-major, both of type
// t, accumulated in float32 (float32 inputs: full float32 arithmetic, no
// TF32).
func (bl *BLAS) GemmNT(dst, x, w Ptr, t GemmType, rows, in, out int) error {
	return bl.gemm(dst, x, w, t, rows, in, out, 0, cudaR32F)
}

// GemmNTNarrow is GemmNT with dst of the inputs' type t (bf16 or f16): the
// float32 sums rounded once, as they are stored.
func (bl *BLAS) GemmNTNarrow(dst, x, w Ptr, t GemmType, rows, in, out int) error {
	if t == GemmF32 {
		return fmt.Errorf("cuda: GemmNTNarrow of float32 inputs")
	}
	return bl.gemm(dst, x, w, t, rows, in, out, 0, int32(t))
}

// GemmNTAdd is GemmNT adding the product to dst (dst += x w^T, in the
// GEMM's float32 epilogue: the sum a separate float32 addition gives).
func (bl *BLAS) GemmNTAdd(dst, x, w Ptr, t GemmType, rows, in, out int) error {
	return bl.gemm(dst, x, w, t, rows, in, out, 1, cudaR32F)
}

// gemm is GemmNT with dst (of type ct) scaled by beta before the product is
// added.
func (bl *BLAS) gemm(dst, x, w Ptr, t GemmType, rows, in, out int, beta float32, ct int32) error {
	if rows <= 0 || in <= 0 || out <= 0 {
		return fmt.Errorf("cuda: GemmNT of %d x %d x %d", rows, in, out)
	}
	compute := int32(cublasCompute32F)
	if t == GemmF32 {
		compute = cublasCompute32FPed
	}
	alpha := float32(1)
	if err := bl.d.enter(); err != nil {
		return err
	}
	defer leave()
	if c := bl.d.clockStart(); c != 0 { // named by the weights' shape: the layer's products apart
		defer bl.d.clockEnd(fmt.Sprintf("cublas gemm %dx%d %v", out, in, t), c)
	}
	// Column-major view: dst^T [out x rows] = (w as [in x out])^T * (x as [in x rows]).
	r := bl.api.cublasGemmEx(bl.h, cublasOpT, cublasOpN, int32(out), int32(rows), int32(in),
		unsafe.Pointer(&alpha), uint64(w), int32(t), int32(in), uint64(x), int32(t), int32(in),
		unsafe.Pointer(&beta), uint64(dst), ct, int32(out), compute, cublasGemmDefault)
	if r == 0 {
		return nil
	}
	return bl.api.check(fmt.Sprintf("cublasGemmEx(%d x %d x %d, type %d, beta %v)", rows, in, out, t, beta), r)
}
