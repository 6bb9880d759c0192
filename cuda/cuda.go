// Package cuda holds the CUDA C sources of kvbench's GPU kernels. They are
// embedded in the binary and compiled at run time by NVRTC for the GPU found
// (runtime/cuda does that), so building kvbench needs no CUDA toolkit.
package cuda

import _ "embed"

//go:embed common.cu
var common string

//go:embed attention.cu
var attention string

//go:embed attention_rt.cu
var attentionRT string

//go:embed attention_rtb.cu
var attentionRTB string

//go:embed attention_tc.cu
var attentionTC string

//go:embed quest.cu
var quest string

//go:embed floor.cu
var floor string

//go:embed backend.cu
var backend string

//go:embed backend_attn.cu
var backendAttn string

//go:embed backend_quest.cu
var backendQuest string

//go:embed gemv.cu
var gemv string

//go:embed prefill.cu
var prefill string

//go:embed prefill_wg.cu
var prefillWG string

//go:embed prefill_tma.cu
var prefillTMA string

//go:embed acccols.cu
var accCols string

// Parts is the number of modules the source is compiled as, side by side:
// module p with -DKVB_PART=p holds the kernel families common.cu's KVB_IN
// gives it (the runtime's split-KV decode kernels by head dimension and
// group in parts 1-4, their batched forms in parts 5-8, the wgmma prefill
// in part 9, its TMA-fed variants in part 10, the tensor-core decode
// kernels of lean calls in part 11, their batched forms with the larger box
// (RtbXBox) in part 12, the other batched forms with it in parts 13-16, the
// rest in part 0) and all the small
// kernels. NVRTC's time goes mostly to the big families: compiled one after
// the other, they would take minutes (148 s on the H200 machine, with the
// synthetic split-KV kernels since removed).
const Parts = 17

// Source is the whole kernel source, one translation unit that serves both
// the runtime's backend and kvbench kernels: the shared helpers, the forward
// pass's ops (backend.cu; its general attention kernel in backend_attn.cu,
// Quest's page bounds in backend_quest.cu) and its decode matrix-vector
// products (gemv.cu), the tensor-core prefill attention (mma.sync, and
// wgmma on Hopper, fed by cp.async or the TMA) and a prompt chunk's
// accumulated probabilities after it (acccols.cu), the split-KV decode
// attention kernels (CUDA-core and tensor-core), Quest's page choice and
// the read floors of `kvbench kernels --floor`.
func Source() string {
	return common + "\n" + backend + "\n" + backendAttn + "\n" + backendQuest + "\n" + gemv + "\n" + prefill + "\n" + prefillWG + "\n" + prefillTMA + "\n" + accCols + "\n" + attention + "\n" + attentionRT + "\n" + attentionRTB + "\n" + attentionTC + "\n" + quest + "\n" + floor
}
