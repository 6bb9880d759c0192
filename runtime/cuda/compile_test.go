package cuda

import (
	"bytes"
	"os"
	"slices"
	"testing"
	"time"

	kernelsrc "github.com/kvbench/kvbench/cuda"
)

// TestCompileKernels compiles the kernel sources with NVRTC as the runtime
// does, in kernelsrc.Parts programs side by side: for the GPU's
// architecture where one is present, else for sm_90 (it needs NVRTC only).
// Every part holds kernels, the big families each in one part only, and a
// second compile comes from the cache. With KVBENCH_COMPILE_WHOLE=1 it also
// compiles the source as one program and checks that the parts hold the
// same kernels (minutes: the reason for the parts).
func TestCompileKernels(t *testing.T) {
	ver, path, err := NVRTCVersion()
	if err != nil {
		t.Skip("no NVRTC:", err)
	}
	t.Logf("NVRTC %s at %s", ver, path)
	arch := "sm_90"
	if ok, _ := Available(); ok {
		d, err := Open(0)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		arch = d.Arch()
	}
	t.Setenv("KVBENCH_CUDA_CACHE", t.TempDir())
	t0 := time.Now()
	parts, err := CompileParts("kvbench.cu", kernelsrc.Source(), arch, KernelOptions(), kernelsrc.Parts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d parts compiled in %v", len(parts), time.Since(t0).Round(time.Millisecond))
	owner := map[string]int{} // kernel -> part, for those in one part only
	in := map[string]int{}    // kernel -> parts holding it
	all := map[string]bool{}
	for p, res := range parts {
		if res.Cached || len(res.Image) == 0 {
			t.Fatalf("part %d: cached %v, %d bytes", p, res.Cached, len(res.Image))
		}
		if res.Log != "" {
			t.Logf("part %d: NVRTC log:\n%s", p, res.Log)
		}
		for _, k := range kernelNames(t, res.Image) {
			in[k]++
			owner[k] = p
			all[k] = true
		}
	}
	own := make([]int, len(parts))
	for k, n := range in {
		switch n {
		case 1:
			own[owner[k]]++
		case len(parts):
		default:
			t.Errorf("kernel %s is in %d of %d parts (one, or all for the small ones)", k, n, len(parts))
		}
	}
	for p, n := range own {
		if n == 0 {
			t.Errorf("part %d holds no kernel of its own", p)
		}
	}
	t.Logf("%d kernels; of their own, by part: %v", len(all), own)
	// Every prefill variant KVBENCH_FLASH names is compiled (the wgmma
	// and TMA ones for sm_90a only).
	for name, f := range flashShapes {
		for _, hd := range []int{64, 128} {
			if k, _ := f.kernel(hd); (arch == "sm_90a" || !f.wg) && !all[k] {
				t.Errorf("KVBENCH_FLASH=%s: no kernel %s", name, k)
			}
		}
	}
	again, err := CompileParts("kvbench.cu", kernelsrc.Source(), arch, KernelOptions(), kernelsrc.Parts)
	if err != nil {
		t.Fatal(err)
	}
	for p := range again {
		if !again[p].Cached || !bytes.Equal(again[p].Image, parts[p].Image) {
			t.Fatalf("second compile of part %d: cached %v", p, again[p].Cached)
		}
	}
	if os.Getenv("KVBENCH_COMPILE_WHOLE") == "1" {
		whole, err := Compile("kvbench.cu", kernelsrc.Source(), arch, KernelOptions())
		if err != nil {
			t.Fatal(err)
		}
		got := slices.Sorted(func(yield func(string) bool) {
			for k := range all {
				if !yield(k) {
					return
				}
			}
		})
		want := kernelNames(t, whole.Image)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("the parts hold %d kernels, the whole source %d", len(got), len(want))
		}
	}
}

// kernelNames lists the kernels of a compiled image.
func kernelNames(t *testing.T, img []byte) []string {
	t.Helper()
	names, err := imageKernels(img)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestImageKernels lists the kernels of a small program compiled to CUBIN
// and to PTX (with NVRTC only); four's 64-bit division brings the
// compiler's helper functions, which are no kernels.
func TestImageKernels(t *testing.T) {
	if _, _, err := NVRTCVersion(); err != nil {
		t.Skip("no NVRTC:", err)
	}
	t.Setenv("KVBENCH_CUDA_CACHE", t.TempDir())
	src := `extern "C" __global__ void one(float* x) { x[0] = 1.f; }
__device__ float helper(float v) { return v * 2.f; }
extern "C" __global__ void two(float* x) { x[0] = helper(x[1]); }
template <int N> __global__ void three(float* x) { x[0] = N; }
template __global__ void three<3>(float*);
extern "C" __global__ void four(unsigned long long* x, float* y) { x[0] = x[1] / x[2]; y[0] = y[1] / y[2]; }`
	for _, arch := range []string{"sm_90", "compute_90"} {
		res, err := Compile("image.cu", src, arch, KernelOptions())
		if err != nil {
			t.Fatal(err)
		}
		got := kernelNames(t, res.Image)
		slices.Sort(got)
		if len(got) != 4 || got[0] != "_Z5threeILi3EEvPf" || got[1] != "four" || got[2] != "one" || got[3] != "two" {
			t.Errorf("%s: kernels %v, want _Z5threeILi3EEvPf, four, one, two (no compiler helpers)", arch, got)
		}
	}
}
