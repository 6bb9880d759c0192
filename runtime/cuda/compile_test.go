package cuda

import (
	"bytes"
	"os"
	"testing"

	kernelsrc "github.com/kvbench/kvbench/cuda"
)

// TestCompileKernels compiles the kernel sources with NVRTC: for the GPU's
// architecture where one is present, else for sm_90 (it needs NVRTC only).
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
	res, err := Compile("kvbench.cu", kernelsrc.Source(), arch, KernelOptions())
	if err != nil {
		t.Fatal(err)
	}
	if res.Cached || len(res.Image) == 0 {
		t.Fatalf("cached %v, %d bytes", res.Cached, len(res.Image))
	}
	if res.Log != "" {
		t.Logf("NVRTC log:\n%s", res.Log)
	}
	again, err := Compile("kvbench.cu", kernelsrc.Source(), arch, KernelOptions())
	if err != nil || !again.Cached || !bytes.Equal(again.Image, res.Image) {
		t.Fatalf("second compile: err %v, cached %v", err, again != nil && again.Cached)
	}
	if out := os.Getenv("KVBENCH_PTX_OUT"); out != "" {
		ptx, err := Compile("kvbench.cu", kernelsrc.Source(), "compute_"+arch[3:5], KernelOptions())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, ptx.Image, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
