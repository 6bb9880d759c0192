// Split-KV decode attention with the keys and values staged in shared
// memory by asynchronous copies (cp.async, sm_80 and later): attn_split's
// rows, chunks, two passes and merges, but each thread's loads go to its
// own ring of ASYNC_P groups of ASYNC_U 16-byte pieces in shared memory
// instead of to registers. A thread reads back only the pieces it asked for,
// so waiting for its own copies (cp.async.wait_group) is all the
// synchronisation the ring needs. The ring runs through both passes: the
// last key steps ask for the first values, so ASYNC_P - 1 groups stay in
// flight across the softmax, and the depth costs shared memory, not
// registers. Masked tokens are zero-filled by the copy (no read).

#ifndef ASYNC_P
#define ASYNC_P 4  // groups in flight per thread
#endif
#ifndef ASYNC_U
#define ASYNC_U 4  // 16-byte pieces per group (tokens per thread per step)
#endif

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
// cp_async16 copies 16 bytes from src to shared dst, or zero-fills dst
// without reading when !ok.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"((u32)__cvta_generic_to_shared(dst)), "l"(src),
                 "r"(ok ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
#endif

template <int D, int G, bool PAGED>
__device__ __forceinline__ void attn_async(
    const bf16* __restrict__ q, const bf16* __restrict__ K, const bf16* __restrict__ V,
    const int* __restrict__ pages, int n, int nsel, int pageSize, int rowsPerKV, int chunk,
    float scaleLog2, float* __restrict__ partO, float* __restrict__ partML, int* __restrict__ counters,
    float* __restrict__ out, float* __restrict__ raw) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int NT = ATTN_NT, P = ASYNC_P, U = ASYNC_U;
    constexpr int L = D / 8;    // threads per token
    constexpr int TG = NT / L;  // tokens per step
    static_assert(G <= L, "group larger than the lanes of a token");
    // smem: the ring [P][U][NT] uint4, the scores [G][chunk], (paged) the
    // chunk's page ids; after pass 2 the warps' partial outputs [NW][G][D]
    // from offset 0.
    extern __shared__ __align__(16) uint4 async_smem[];
    uint4* ring = async_smem;
    float* sc = reinterpret_cast<float*>(async_smem + P * U * NT);
    int* spg = reinterpret_cast<int*>(sc + G * chunk);

    pdl_trigger();
    pdl_wait();
    const int r = blockIdx.y, c = blockIdx.x;
    const int tid = threadIdx.x, lane = tid % L, tg = tid / L, w = tid >> 5;
    const int kvh = r / rowsPerKV;
    const int total = PAGED ? nsel * pageSize : n;
    const int c0 = c * chunk;
    const int len = min(chunk, total - c0);
    const int nk = (len + TG * U - 1) / (TG * U);  // steps per pass
    const bf16* Kh = K + (size_t)kvh * n * D + lane * 8;
    const bf16* Vh = V + (size_t)kvh * n * D + lane * 8;
    uint4 qv[G];
#pragma unroll
    for (int g = 0; g < G; ++g) qv[g] = *reinterpret_cast<const uint4*>(q + (size_t)(r * G + g) * D + lane * 8);
    const int pg0 = stage_pages<PAGED, NT>(spg, pages, r, nsel, pageSize, c0, len);
    auto token_of = [&](int i) -> int { return i < len ? chunk_token<PAGED>(spg, pg0, c0, i, pageSize, n) : -1; };
    // issue asks for group gi of the thread's sequence (the key steps, then
    // the value steps); past the end it commits an empty group, so that
    // "all but the last P-1 groups are done" always means "group gi is".
    auto issue = [&](int gi) {
        if (gi < 2 * nk) {
            const bool key = gi < nk;
            const int base = (key ? gi : gi - nk) * TG * U;
            const bf16* src = key ? Kh : Vh;
            uint4* slot = ring + (gi % P) * U * NT + tid;
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const int t = token_of(base + u * TG + tg);
                cp_async16(slot + u * NT, src + (size_t)max(t, 0) * D, t >= 0);
            }
        }
        cp_async_commit();
    };
#pragma unroll
    for (int gi = 0; gi < P - 1; ++gi) issue(gi);

    float qf[G][8];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        unpack8(qv[g], qf[g]);
#pragma unroll
        for (int j = 0; j < 8; ++j) qf[g][j] *= scaleLog2;
    }
    // Pass 1: scores.
    for (int s = 0; s < nk; ++s) {
        issue(s + P - 1);
        cp_async_wait<P - 1>();
        const uint4* slot = ring + (s % P) * U * NT + tid;
#pragma unroll
        for (int u = 0; u < U; ++u) {
            int h;
            const float d = group_dot<G, L>(qf, slot[u * NT], lane, h);
            const int i = s * TG * U + u * TG + tg;
            if (lane % (L / G) == 0 && i < len) {
                const float x = token_of(i) >= 0 ? d : NEG_INF;
                sc[h * chunk + i] = x;
                if (raw != nullptr) raw[(size_t)(r * G + h) * total + c0 + i] = x;
            }
        }
    }
    __syncthreads();

    float m[G], l[G];
    chunk_softmax<G, NT, false>(sc, chunk, len, len, m, l);

    // Pass 2: acc[g] = sum_t p[g][t] * v[t] over this thread's tokens
    // (masked tokens were zero-filled: p * 0).
    float acc[G][8];
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[g][j] = 0.f;
    for (int s = 0; s < nk; ++s) {
        issue(nk + s + P - 1);
        cp_async_wait<P - 1>();
        const uint4* slot = ring + ((nk + s) % P) * U * NT + tid;
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int i = min(s * TG * U + u * TG + tg, len - 1);
            float vf[8];
            unpack8(slot[u * NT], vf);
#pragma unroll
            for (int g = 0; g < G; ++g) {
                const float p = sc[g * chunk + i];
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[g][j] = fmaf(p, vf[j], acc[g][j]);
            }
        }
    }
    cp_async_wait<0>();
    // Sum over the token groups: first within the warp, then across warps.
#pragma unroll
    for (int o = L; o < 32; o <<= 1) {
#pragma unroll
        for (int g = 0; g < G; ++g)
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[g][j] += __shfl_xor_sync(FULL_MASK, acc[g][j], o);
    }
    __syncthreads();  // every thread is done with the ring and the probabilities
    float* part = reinterpret_cast<float*>(async_smem);
    if ((tid & 31) < L) {
#pragma unroll
        for (int g = 0; g < G; ++g)
#pragma unroll
            for (int j = 0; j < 8; ++j) part[(w * G + g) * D + lane * 8 + j] = acc[g][j];
    }
    __syncthreads();
    attn_finish<D, G>(part, m, l, partO, partML, counters, out);
#endif
}

#define ASYNC_KERNELS(D, G)                                                                               \
    extern "C" __global__ void __launch_bounds__(ATTN_NT, ((G) == 4 ? ATTN_MINB : 1)) attn_async_dense_d##D##_g##G(ATTN_PARAMS) { \
        attn_async<D, G, false>(ATTN_ARGS);                                                               \
    }                                                                                                     \
    extern "C" __global__ void __launch_bounds__(ATTN_NT, ((G) == 4 ? ATTN_MINB : 1)) attn_async_paged_d##D##_g##G(ATTN_PARAMS) { \
        attn_async<D, G, true>(ATTN_ARGS);                                                                \
    }

ASYNC_KERNELS(64, 1)
ASYNC_KERNELS(64, 2)
ASYNC_KERNELS(64, 4)
ASYNC_KERNELS(64, 8)
ASYNC_KERNELS(128, 1)
ASYNC_KERNELS(128, 2)
ASYNC_KERNELS(128, 4)
ASYNC_KERNELS(128, 8)
