// Package cuda is kvbench's GPU runtime: a binding of the CUDA driver API and
// NVRTC loaded at run time with purego (dlopen of libcuda.so.1 and libnvrtc;
// no cgo, no CUDA headers at build time), an accounting device allocator, an
// on-disk cache of compiled kernels, and the decode-attention kernels (dense
// split-KV and Quest) with their float64 references.
//
// A binary that imports it runs on machines without a GPU: nothing happens
// at init time, and Available says why no device can be used.
package cuda
