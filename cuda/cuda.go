// Package cuda holds the CUDA C sources of kvbench's GPU kernels. They are
// embedded in the binary and compiled at run time by NVRTC for the GPU found
// (runtime/cuda does that), so building kvbench needs no CUDA toolkit.
package cuda

import _ "embed"

//go:embed common.cu
var common string

//go:embed attention.cu
var attention string

//go:embed attention_mma.cu
var attentionMMA string

//go:embed attention_tc.cu
var attentionTC string

//go:embed quest.cu
var quest string

//go:embed policies.cu
var policies string

//go:embed backend.cu
var backend string

//go:embed gemv.cu
var gemv string

//go:embed prefill.cu
var prefill string

//go:embed prefill_wg.cu
var prefillWG string

//go:embed prefill_tma.cu
var prefillTMA string

// Parts is the number of modules the source is compiled as, side by side:
// module p with -DKVB_PART=p holds the kernel families common.cu's KVB_IN
// gives it (the split-KV decode kernels by head dimension and group, the
// CUDA-core and tensor-core dense ones, the wgmma prefill in part 11, its
// TMA-fed variants in part 12, the runtime's tensor-core decode kernels of
// lean calls in part 13, the rest in part 0) and all the small kernels.
// NVRTC's time goes mostly to the big families; compiled one after the
// other they took 148 s on the H200 machine.
const Parts = 14

// Source is the whole kernel source, one translation unit that serves both
// the runtime's backend and kvbench kernels: the shared helpers, the forward
// pass's ops (backend.cu) and its decode matrix-vector products (gemv.cu),
// the tensor-core prefill attention (mma.sync, and wgmma on Hopper, fed by
// cp.async or the TMA), the split-KV decode attention kernels
// (CUDA-core and tensor-core, synthetic and the runtime's), the Quest kernels and the other policies'
// steps.
func Source() string {
	return common + "\n" + backend + "\n" + gemv + "\n" + prefill + "\n" + prefillWG + "\n" + prefillTMA + "\n" + attention + "\n" + attentionMMA + "\n" + attentionTC + "\n" + quest + "\n" + policies
}
