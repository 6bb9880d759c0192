package cuda

import (
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

//go:embed clang_prelude.h
var clangPrelude string

// clangFor finds a clang++ whose CUDA front end knows sm_90: $KVBENCH_CLANG,
// else the first of clang++-19 ... clang++-16 and clang++ on the path that
// does; "" when none does.
func clangFor(t *testing.T, dir string) string {
	t.Helper()
	names := []string{"clang++-19", "clang++-18", "clang++-17", "clang++-16", "clang++"}
	if v := os.Getenv("KVBENCH_CLANG"); v != "" {
		names = []string{v}
	}
	probe := filepath.Join(dir, "probe.cu")
	if err := os.WriteFile(probe, []byte("__attribute__((global)) void k() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			continue
		}
		if exec.Command(p, clangArgs("sm_90", -1, probe)...).Run() == nil {
			return p
		}
	}
	return ""
}

// clangArgs checks file for arch (sm_90: Hopper's sm_90a features too) as
// module part of the source (package cuda's Parts; -1: the whole source),
// with the macros defs defined (NAME=value) beside.
func clangArgs(arch string, part int, file string, defs ...string) []string {
	args := []string{"-x", "cuda", "--cuda-device-only", "-nocudainc", "-nocudalib", "--cuda-gpu-arch=" + arch,
		"-fsyntax-only", "-std=c++17", "-Wno-everything"}
	if arch == "sm_90" {
		args = append(args, "-D__CUDA_ARCH_FEAT_SM90_ALL")
	}
	if part >= 0 {
		args = append(args, fmt.Sprintf("-DKVB_PART=%d", part))
	}
	for _, d := range defs {
		args = append(args, "-D"+d)
	}
	return append(args, file)
}

// TestClangSyntax checks the kernel source as NVRTC gets it (Source) with
// clang's CUDA front end, so a change to the kernels is parsed and
// type-checked (templates instantiated) on a machine without a GPU: for the
// GPU generations from Volta to Hopper, and on Hopper each module part
// alone. clang is not NVRTC (inline PTX is not checked, nor is what only
// NVRTC refuses), but a misspelt name, a wrong type or a missing guard of
// an architecture fails here. A source with an error planted fails too, so
// the check is not vacuous. Skips where no clang++ with CUDA support is
// installed (CI installs Debian's clang-16).
func TestClangSyntax(t *testing.T) {
	dir := t.TempDir()
	clang := clangFor(t, dir)
	if clang == "" {
		t.Skip("no clang++ with CUDA sm_90 support (KVBENCH_CLANG, clang++-16 and later): the kernel source is not checked")
	}
	write := func(name, src string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(clangPrelude+"\n#line 1 \"kvbench.cu\"\n"+src), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	file := write("kvbench.cu", Source())
	check := func(arch string, part int, f string, defs ...string) (string, error) {
		out, err := exec.Command(clang, clangArgs(arch, part, f, defs...)...).CombinedOutput()
		return string(out), err
	}
	t.Run("planted error", func(t *testing.T) {
		bad := write("bad.cu", Source()+"\n__device__ void kvb_planted() { kvb_undefined(1); }\n")
		if out, err := check("sm_90", -1, bad); err == nil || !strings.Contains(out, "kvb_undefined") {
			t.Fatalf("a source calling an undeclared function passed the check (%v): %s", err, out)
		}
	})
	type job struct {
		arch string
		part int
		def  string // a macro defined beside ("": none)
	}
	jobs := []job{{"sm_70", -1, ""}, {"sm_75", -1, ""}, {"sm_80", -1, ""}, {"sm_86", -1, ""}, {"sm_89", -1, ""}, {"sm_90", -1, ""},
		{"sm_80", -1, "KVB_TRACE=1"}, {"sm_90", -1, "KVB_TRACE=1"}, // the attention trace's build (KVBENCH_ATTN_TRACE)
		{"sm_90", -1, "TC_ST=3"},                                                   // the tensor-core decode kernels' settings
		{"sm_90", 12, "RTB_XBOX_WORDS=8000"}, {"sm_90", 15, "RTB_XBOX_WORDS=8000"}} // the batched kernels' larger box
	for p := range Parts {
		jobs = append(jobs, job{"sm_90", p, ""})
	}
	for _, j := range jobs {
		t.Run(fmt.Sprintf("%s/part %d/%s", j.arch, j.part, j.def), func(t *testing.T) {
			t.Parallel()
			var defs []string
			if j.def != "" {
				defs = append(defs, j.def)
			}
			if out, err := check(j.arch, j.part, file, defs...); err != nil {
				lines := strings.Split(out, "\n")
				t.Fatalf("%s, part %d (-1: whole): %v\n%s", j.arch, j.part, err, strings.Join(lines[:min(len(lines), 40)], "\n"))
			}
		})
	}
}
