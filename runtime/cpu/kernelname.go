package cpu

// kernelName names the matrix kernels in use, for Device.
func kernelName() string { return "go" }
