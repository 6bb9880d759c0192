package cpu

// kernelName names the matrix kernels in use, for Device.
func kernelName() string {
	switch {
	case useAVX2 && hasF16C:
		return "avx2+fma+f16c asm"
	case useAVX2:
		return "avx2+fma asm"
	}
	return "go"
}
