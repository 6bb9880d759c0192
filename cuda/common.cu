// Shared helpers of kvbench's kernels. Compiled by NVRTC with no headers:
// bf16 values are handled as raw 16-bit patterns (a bf16 is the top half of
// a float32), so neither cuda_bf16.h nor the runtime headers are needed.

typedef unsigned short bf16;
typedef unsigned int u32;
typedef unsigned long long u64;

// The source is compiled as Parts modules side by side (package cuda's
// Parts; runtime/cuda's Device.LoadParts), module p with -DKVB_PART=p: the
// big families of instantiated kernels sit in KVB_IN(p) blocks (the
// prefill family in part 0), the small kernels in every part. Without
// KVB_PART (one module) everything is compiled.
#ifdef KVB_PART
#define KVB_IN(p) (KVB_PART == (p))
#else
#define KVB_IN(p) 1
#endif

#define FULL_MASK 0xffffffffu
#define NEG_INF __int_as_float(0xff800000)

// arrive_last counts a block's arrival at ctr, shared by n blocks, and says
// whether this block came last. One thread calls it, after a __syncthreads
// that follows the block's writes; the last block's threads, after another
// __syncthreads, read every block's writes through the L2 (__ldcg). The
// count is one acq_rel atomic at GPU scope: its release half orders the
// block's writes (before it through the barrier, which the release covers)
// before the count, its acquire half the other blocks' writes before
// whatever the last block does after it, the barrier passing that on to its
// other threads. A full fence (__threadfence, fence.sc) in every thread and a
// relaxed atomic, the classic pattern, cost the fused merge 0.2-1.1 us more
// on the H100 (docs/benchmarks.md, twenty-ninth session).
__device__ __forceinline__ bool arrive_last(int* ctr, int n) {
    int old;
    asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], 1;" : "=r"(old) : "l"(ctr) : "memory");
    return old == n - 1;
}

// Tagged words (the polled merge, attn_merge_poll): a float32 value in the
// low half of a 64-bit word and the launch's epoch in the high half, stored
// and loaded as one single-copy-atomic access at GPU scope, so that a
// reader that sees the epoch sees the value written with it, and a word
// left by an earlier launch (an older epoch) is told apart without a fence
// or a count.
__device__ __forceinline__ u64 tag_word(float x, u32 ep) { return ((u64)ep << 32) | __float_as_uint(x); }
__device__ __forceinline__ float tag_value(u64 w) { return __uint_as_float((u32)w); }
__device__ __forceinline__ bool tag_is(u64 w, u32 ep) { return (u32)(w >> 32) == ep; }
__device__ __forceinline__ void st_tag(u64* p, float x, u32 ep) {
    asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" ::"l"(p), "l"(tag_word(x, ep)) : "memory");
}
__device__ __forceinline__ void st_tag2(u64* p, float x, float y, u32 ep) {
    asm volatile("st.relaxed.gpu.global.v2.u64 [%0], {%1, %2};" ::"l"(p), "l"(tag_word(x, ep)), "l"(tag_word(y, ep))
                 : "memory");
}
__device__ __forceinline__ void ld_tag2(const u64* p, u64& a, u64& b) {
    asm volatile("ld.relaxed.gpu.global.v2.u64 {%0, %1}, [%2];" : "=l"(a), "=l"(b) : "l"(p) : "memory");
}

// unpack8 widens the 8 bf16 values of a 16-byte vector to float32.
__device__ __forceinline__ void unpack8(const uint4 v, float f[8]) {
    f[0] = __uint_as_float(v.x << 16);
    f[1] = __uint_as_float(v.x & 0xffff0000u);
    f[2] = __uint_as_float(v.y << 16);
    f[3] = __uint_as_float(v.y & 0xffff0000u);
    f[4] = __uint_as_float(v.z << 16);
    f[5] = __uint_as_float(v.z & 0xffff0000u);
    f[6] = __uint_as_float(v.w << 16);
    f[7] = __uint_as_float(v.w & 0xffff0000u);
}

// ld_stream loads 16 read-only bytes that are used once: through the
// non-coherent path, without allocating in L1.
__device__ __forceinline__ uint4 ld_stream(const bf16* p) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}

// ld_stream_if is ld_stream where ok, else zeros. The predicate is inside
// the instruction: the compiler may execute an asm statement that it sees
// as free of side effects ahead of the branch that guards it, so a guard
// outside the asm does not keep a masked (out of bounds) address unread.
__device__ __forceinline__ uint4 ld_stream_if(const bf16* p, bool ok) {
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    asm("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %5, 0;\n\t"
        "@q ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n\t}"
        : "+r"(v.x), "+r"(v.y), "+r"(v.z), "+r"(v.w)
        : "l"(p), "r"((int)ok));
    return v;
}

__device__ __forceinline__ float f32_from_bf16(bf16 h) {
    return __uint_as_float(((u32)h) << 16);
}

// bf16_from_f32 rounds to nearest even (inputs here are finite).
__device__ __forceinline__ bf16 bf16_from_f32(float f) {
    u32 u = __float_as_uint(f);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16)(u >> 16);
}

// pdl_wait: in a kernel launched as a programmatic dependent (LaunchAfter),
// waits until the kernel before it on the stream has finished and its
// writes are visible; otherwise (or before sm_90) it returns at once.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// pdl_trigger lets a programmatic dependent launched after this kernel start
// its blocks (which then wait in pdl_wait) before this kernel finishes. The
// split-KV kernels call it (their dependent, attn_rt_combine, is small);
// dependents that take room on the GPU while they wait can lose by it (an
// early start of a Quest top-K selection kernel, since removed, measured
// 1-10 µs slower at 32K-128K tokens than its start at the scoring's end:
// H100, 2026-11-24); without a trigger a dependent still saves its launch
// latency.
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// fma4 adds w * o to acc, lane by lane.
__device__ __forceinline__ void fma4(float4& acc, float w, float4 o) {
    acc.x = fmaf(w, o.x, acc.x);
    acc.y = fmaf(w, o.y, acc.y);
    acc.z = fmaf(w, o.z, acc.z);
    acc.w = fmaf(w, o.w, acc.w);
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// block_excl_scan returns the sum of v over the threads before this one.
// All NT threads must call it; ws is NT/32 words of shared memory.
template <int NT>
__device__ __forceinline__ u32 block_excl_scan(u32 v, u32* ws) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    u32 incl = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        u32 t = __shfl_up_sync(FULL_MASK, incl, o);
        if (lane >= o) incl += t;
    }
    __syncthreads();  // ws may still be read by a previous call
    if (lane == 31) ws[w] = incl;
    __syncthreads();
    u32 before = 0;
#pragma unroll
    for (int i = 0; i < NT / 32; ++i)
        if (i < w) before += ws[i];
    return before + incl - v;
}

// splitmix64 hashes x to 64 well-mixed bits.
__device__ __forceinline__ u64 splitmix64(u64 x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// fill_bf16 writes n pseudo-random bf16 values, uniform in [-scale, scale),
// a function of (seed, index) only.
extern "C" __global__ void fill_bf16(bf16* __restrict__ dst, u64 n, u64 seed, float scale) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        u64 h = splitmix64(seed * 0x632be59bd9b4e019ull + i);
        float u = (float)(h >> 40) * (1.0f / 16777216.0f);  // [0, 1)
        dst[i] = bf16_from_f32((2.0f * u - 1.0f) * scale);
    }
}

// page_minmax writes the channel-wise minimum and maximum of the keys of
// each page: K [kvHeads, n, D], mn and mx [kvHeads, pages, D]. A last page
// with fewer than pageSize tokens covers the tokens it has.
// Grid (pages, kvHeads), block D threads (one per channel).
extern "C" __global__ void page_minmax(const bf16* __restrict__ K, int n, int D, int pageSize, int pages,
                                       bf16* __restrict__ mn, bf16* __restrict__ mx) {
    const int p = blockIdx.x, h = blockIdx.y, c = threadIdx.x;
    if (c >= D) return;
    const bf16* k = K + ((size_t)h * n) * D + c;
    const int t0 = p * pageSize, t1 = min(n, t0 + pageSize);
    float lo = f32_from_bf16(k[(size_t)t0 * D]), hi = lo;
    for (int t = t0 + 1; t < t1; ++t) {
        float v = f32_from_bf16(k[(size_t)t * D]);
        lo = fminf(lo, v);
        hi = fmaxf(hi, v);
    }
    const size_t o = ((size_t)h * pages + p) * D + c;
    mn[o] = bf16_from_f32(lo);  // exact: lo and hi are bf16 values
    mx[o] = bf16_from_f32(hi);
}

// gtime is the GPU's global clock in nanoseconds (%globaltimer), the same
// on every multiprocessor.
__device__ __forceinline__ u64 gtime() {
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

// sm_id is the multiprocessor the calling thread runs on.
__device__ __forceinline__ u32 sm_id() {
    u32 s;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(s));
    return s;
}

// spin keeps the GPU busy for ns nanoseconds, so that work enqueued behind
// it starts back to back, free of the host's launch gaps, when timed.
extern "C" __global__ void spin(u64 ns) {
    const u64 t0 = gtime();
    while (gtime() - t0 < ns) {
    }
}
