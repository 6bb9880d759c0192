//go:build amd64

package cpu

// CPU feature detection for the AVX2 kernels, with our own CPUID/XGETBV
// (cpuid_amd64.s) so the package needs no dependency for it.

func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)

func xgetbv(index uint32) (eax, edx uint32)

// cpuFeatures reports whether the CPU and OS support the AVX2 kernels
// (AVX, AVX2 and FMA, with the OS saving the XMM and YMM register state)
// and, on top of that, F16C (VCVTPH2PS) for the float16 kernel.
func cpuFeatures() (avx2FMA, f16c bool) {
	maxLeaf, _, _, _ := cpuid(0, 0)
	if maxLeaf < 7 {
		return false, false
	}
	_, _, ecx1, _ := cpuid(1, 0)
	const (
		bitFMA     = 1 << 12
		bitOSXSAVE = 1 << 27
		bitAVX     = 1 << 28
		bitF16C    = 1 << 29
	)
	if ecx1&(bitFMA|bitOSXSAVE|bitAVX) != bitFMA|bitOSXSAVE|bitAVX {
		return false, false
	}
	// XCR0 bit 1: XMM state, bit 2: YMM upper halves, both enabled by the OS.
	if xcr0, _ := xgetbv(0); xcr0&6 != 6 {
		return false, false
	}
	_, ebx7, _, _ := cpuid(7, 0)
	const bitAVX2 = 1 << 5
	if ebx7&bitAVX2 == 0 {
		return false, false
	}
	return true, ecx1&bitF16C != 0
}

var hasAVX2FMA, hasF16C = cpuFeatures()

// useAVX2 selects the assembly kernels; tests and benchmarks clear it to
// force the Go reference path. It is only ever true where hasAVX2FMA is.
var useAVX2 = hasAVX2FMA
