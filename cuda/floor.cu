// The read floors of `kvbench kernels --floor` (runtime/cuda floor.go):
// read_floor reads a buffer once and does nothing else: the time below
// which no step that must read as many bytes can go; floor_split and
// floor_combine read it in a split-KV step's shape.

#define RF_NT 256

// read_floor: grid-stride read of n16 16-byte words, RU loads in flight per
// thread. The loaded bits are folded into one word that is stored only if
// it equals a constant no input is made to hit, so no load can be dropped.
#define RU 8
// xor_words folds the 16-byte words src[i], src[i + stride], ... below
// hi into one word, RU loads in flight.
__device__ __forceinline__ u32 xor_words(const uint4* __restrict__ src, u64 i, u64 hi, u64 stride) {
    u32 x = 0;
    for (; i + (RU - 1) * stride < hi; i += RU * stride) {
        uint4 v[RU];
#pragma unroll
        for (int u = 0; u < RU; ++u) v[u] = ld_stream(reinterpret_cast<const bf16*>(src + i + u * stride));
#pragma unroll
        for (int u = 0; u < RU; ++u) x ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    for (; i < hi; i += stride) {
        const uint4 v = ld_stream(reinterpret_cast<const bf16*>(src + i));
        x ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    return x;
}

extern "C" __global__ void __launch_bounds__(RF_NT) read_floor(const uint4* __restrict__ src, u64 n16,
                                                                u32* __restrict__ sink) {
    const u32 x = xor_words(src, blockIdx.x * (u64)RF_NT + threadIdx.x, n16, (u64)gridDim.x * RF_NT);
    if (x == 0x9e3779b9u) sink[0] = x;
}

// The read floor in a split step's shape, for what a split-KV decode step
// could reach at best: block (c, r) of grid (nc, rows) reads chunk c of row
// r (rowWords 16-byte words a row, cut into nc near-equal chunks) and
// writes np floats of partial made from what it read (so no load can be
// dropped): thread t's word x gives part[j] = (x & 255) + j for j = t mod
// RF_NT. Then, fused = 0: nothing more (floor_combine sums the partials
// after this kernel's end, as attn_rt_combine does); fused = 1: the row's
// last block to finish sums them into out (a counter a row, arrive_last, as
// the fused merge does; ctr [rows] is zero between launches, each launch
// clears what it used).
__device__ __forceinline__ void floor_sum(const float* __restrict__ p, int nc, int np, int j, float* __restrict__ out) {
    float s = 0.f;
    int c = 0;
    for (; c + 8 <= nc; c += 8) {
        float v[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) v[u] = __ldcg(p + (size_t)(c + u) * np + j);
#pragma unroll
        for (int u = 0; u < 8; ++u) s += v[u];
    }
    for (; c < nc; ++c) s += __ldcg(p + (size_t)c * np + j);
    out[j] = s;
}

extern "C" __global__ void __launch_bounds__(RF_NT) floor_split(const uint4* __restrict__ src, u64 rowWords, int np,
                                                                 float* __restrict__ part, float* __restrict__ out,
                                                                 int* __restrict__ ctr, int fused) {
    pdl_trigger();
    const int c = blockIdx.x, r = blockIdx.y, nc = gridDim.x, tid = threadIdx.x;
    const u32 x = xor_words(src + (u64)r * rowWords, rowWords * c / nc + tid, rowWords * (c + 1) / nc, RF_NT);
    float* p = part + ((size_t)r * nc + c) * np;
    for (int j = tid; j < np; j += RF_NT) p[j] = (float)(x & 255u) + (float)j;
    if (!fused) return;
    __syncthreads();
    __shared__ int sLast;
    if (tid == 0) sLast = arrive_last(ctr + r, nc);
    __syncthreads();
    if (!sLast) return;
    for (int j = tid; j < np; j += RF_NT) floor_sum(part + (size_t)r * nc * np, nc, np, j, out + (size_t)r * np);
    if (tid == 0) ctr[r] = 0;
}

// floor_combine: grid (ceil(np / RF_NT), rows), launched as a programmatic
// dependent of floor_split; block (b, r) sums the nc partials of columns
// b*RF_NT.. of row r once floor_split has ended.
extern "C" __global__ void __launch_bounds__(RF_NT) floor_combine(const float* __restrict__ part, int nc, int np,
                                                                   float* __restrict__ out) {
    const int r = blockIdx.y, j = blockIdx.x * RF_NT + threadIdx.x;
    pdl_wait();
    if (j < np) floor_sum(part + (size_t)r * nc * np, nc, np, j, out + (size_t)r * np);
}
