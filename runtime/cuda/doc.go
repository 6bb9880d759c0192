// Package cuda is kvbench's GPU runtime: a binding of the CUDA driver API and
// NVRTC loaded at run time with purego (dlopen of libcuda.so.1 and libnvrtc;
// no cgo, no CUDA headers at build time), an accounting device allocator, an
// on-disk cache of compiled kernels, and the Backend that runs kvbench's
// forward pass and decode attention (split-KV over the paged cache, Quest's
// page choice) on one GPU.
//
// A binary that imports it runs on machines without a GPU: nothing happens
// at init time, and Available says why no device can be used.
//
// Files, by layer:
//   - the binding: driver.go (the driver API's functions), device.go
//     (contexts, memory, kernels' launch), stream.go (pinned memory, copies),
//     nvrtc.go, image.go and kernels.go (compiling and loading kvbench/cuda's
//     source), cublas.go, tma.go, fake.go (a device that runs nothing, for the
//     host's share);
//   - memory: slab.go (the small buffers' sub-allocator: KV pages among them),
//     memory.go (accounting), pinup.go (weight uploads), view.go;
//   - the Backend (runtime.Backend on one GPU, registered as "cuda" by
//     register.go): backend.go (buffers, staging of metadata), backend_ops.go
//     (embedding, norms, products, adds), gemv.go and normed.go (a decode
//     step's one-row products, a prompt's norms in the GEMMs' input type),
//     backend_rope.go, backend_kv.go (KV pages: allocation, stores, moves;
//     kvqueue.go, kvlanes.go, ptrtable.go), backend_replay.go (device-time
//     marks, CUDA graphs);
//   - attention: backend_attention.go and splitkv.go (Attend: the split-KV
//     decode kernels over the paged cache), pagetable.go (page lists kept on
//     the device), flashtma.go (prefill), batchattn.go, accbatch.go (a batch's
//     calls), backend_quest.go and questbatch.go (Quest); floor.go (the read
//     floors `kvbench kernels --floor` times), reference.go (bf16
//     conversions, page_minmax's reference).
package cuda
