package cuda

import (
	"bytes"
	"debug/elf"
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

// kernelNames lists the kernels (global functions) of a CUBIN image.
func kernelNames(t *testing.T, img []byte) []string {
	t.Helper()
	// CUBINs carry their own ELF version (ident and header); debug/elf
	// reads only version 1.
	img = slices.Clone(img)
	if len(img) > 24 {
		img[elf.EI_VERSION] = byte(elf.EV_CURRENT)
		copy(img[20:24], []byte{1, 0, 0, 0})
	}
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatalf("CUBIN: %v", err)
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatalf("CUBIN symbols: %v", err)
	}
	var names []string
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && elf.ST_BIND(s.Info) == elf.STB_GLOBAL {
			names = append(names, s.Name)
		}
	}
	return names
}
