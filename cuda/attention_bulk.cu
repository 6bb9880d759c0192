// Split-KV decode attention fed by bulk copies (sm_90 and later): the same
// rows, chunks, partials and merges as attn_split (attention.cu), but the
// keys and values reach shared memory through the copy engine
// (cp.async.bulk, completion counted on an mbarrier) instead of through the
// threads' registers, so the bytes in flight are bounded by shared memory,
// not by registers, and the loads do not stop while a warp computes.
//
// Each of the BULK_NW warps of a block is its own pipeline: it takes the
// tiles w, w + BULK_NW, ... of the block's chunk (a tile is BULK_TT
// consecutive tokens of the row: BULK_TT keys, then BULK_TT values), keeps
// `stages` tiles in flight in its own ring of shared memory, and folds each
// tile into a running (max, sum, output) per head: an online softmax, one
// pass over the chunk. Lane 0 of the warp issues the copies; the warp never
// waits for another warp until the end of the chunk, where the warps'
// partials are rescaled to the block's max and summed (attn_finish).
//
// Paged rows (Quest): a tile's tokens may lie on several pages; each run of
// tokens on one page is one copy, of the tokens before n (the rest of a
// partial last page is masked and never read).

#define BULK_NW 4       // warps per block
#define BULK_NT (BULK_NW * 32)
#define BULK_TT 16      // tokens per tile
#define BULK_SMAX 8     // the most stages a warp may ask for

// BULK_OK: the bulk copies need sm_90 and PTX 8.0 (NVRTC 12 or later);
// elsewhere the kernels are empty and the host does not launch them.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && __CUDACC_VER_MAJOR__ >= 12
#define BULK_OK 1
#else
#define BULK_OK 0
#endif

__device__ __forceinline__ u32 smem_u32(const void* p) { return (u32)__cvta_generic_to_shared(p); }

#if BULK_OK
__device__ __forceinline__ void mbar_init(u64* bar) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(bar)) : "memory");
}

// mbar_expect: the one arrival of the barrier's phase, announcing bytes of
// copies that complete it.
__device__ __forceinline__ void mbar_expect(u64* bar, u32 bytes) {
    asm volatile("{\n\t.reg .b64 st;\n\tmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n\t}" ::"r"(smem_u32(bar)),
                 "r"(bytes)
                 : "memory");
}

__device__ __forceinline__ void mbar_wait(u64* bar, u32 parity) {
    u32 done;
    do {
        asm volatile(
            "{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\tselp.u32 %0, 1, 0, p;\n\t}"
            : "=r"(done)
            : "r"(smem_u32(bar)), "r"(parity)
            : "memory");
    } while (!done);
}

// bulk_copy copies bytes (a multiple of 16, both addresses 16-byte aligned)
// from global to shared memory, completing on bar.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, u32 bytes, u64* bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     smem_u32(dst)),
                 "l"(src), "r"(bytes), "r"(smem_u32(bar))
                 : "memory");
}
#endif

template <int D, int G, bool PAGED>
__device__ __forceinline__ void attn_bulk(
    const bf16* __restrict__ q, const bf16* __restrict__ K, const bf16* __restrict__ V,
    const int* __restrict__ pages, int n, int nsel, int pageSize, int rowsPerKV, int chunk,
    float scaleLog2, float* __restrict__ partO, float* __restrict__ partML, int* __restrict__ counters,
    float* __restrict__ out, float* __restrict__ raw, int stages) {
#if BULK_OK
    constexpr int NW = BULK_NW, NT = BULK_NT, TT = BULK_TT;
    constexpr int L = D / 8;        // lanes per token (8 channels each)
    constexpr int TPW = 32 / L;     // tokens per warp step
    constexpr int TILE = TT * D;    // bf16 of the keys (or values) of a tile
    constexpr int HL = 32 / G;      // lanes per head in the softmax step
    constexpr int EPL = TT / HL > 0 ? TT / HL : 1;  // scores per lane there
    static_assert(G <= L, "group larger than the lanes of a token");
    // smem: per warp `stages` tiles [K tile | V tile] bf16; per warp the
    // tile's scores [G][TT] float; (paged) the chunk's page ids. At the end
    // the warps' partial outputs [NW][G][D] float from offset 0.
    extern __shared__ __align__(16) uint4 bulk_smem[];
    __shared__ u64 bars[NW][BULK_SMAX];
    __shared__ float sMw[NW][G], sLw[NW][G];

    pdl_trigger();
    pdl_wait();
    const int r = blockIdx.y, c = blockIdx.x, tid = threadIdx.x;
    const int w = tid >> 5, ln = tid & 31, lane = ln % L, ts = ln / L;
    const int kvh = r / rowsPerKV;
    const int total = PAGED ? nsel * pageSize : n;
    const int c0 = c * chunk;
    const int len = min(chunk, total - c0);
    const int ntiles = (len + TT - 1) / TT;
    const int mine = w < ntiles ? (ntiles - 1 - w) / NW + 1 : 0;  // tiles w, w+NW, ...
    bf16* ring = reinterpret_cast<bf16*>(bulk_smem) + (size_t)w * stages * 2 * TILE;
    float* sc = reinterpret_cast<float*>(reinterpret_cast<bf16*>(bulk_smem) + (size_t)NW * stages * 2 * TILE) + w * G * TT;
    int* spg = reinterpret_cast<int*>(reinterpret_cast<float*>(reinterpret_cast<bf16*>(bulk_smem) +
                                                               (size_t)NW * stages * 2 * TILE) +
                                      NW * G * TT);
    const bf16* Kh = K + (size_t)kvh * n * D;
    const bf16* Vh = V + (size_t)kvh * n * D;

    uint4 qv[G];
#pragma unroll
    for (int g = 0; g < G; ++g) qv[g] = *reinterpret_cast<const uint4*>(q + (size_t)(r * G + g) * D + lane * 8);
    if (ln == 0) {
        for (int s = 0; s < stages; ++s) mbar_init(&bars[w][s]);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    const int pg0 = stage_pages<PAGED, NT>(spg, pages, r, nsel, pageSize, c0, len);
    __syncwarp();

    // issue asks for the warp's j-th tile (lane 0 only).
    auto issue = [&](int j) {
        const int v0 = (w + j * NW) * TT, cnt = min(TT, len - v0);
        bf16* dk = ring + (size_t)(j % stages) * 2 * TILE;
        u64* bar = &bars[w][j % stages];
        if (!PAGED) {
            const u32 bytes = (u32)cnt * D * 2;
            mbar_expect(bar, 2 * bytes);
            bulk_copy(dk, Kh + (size_t)(c0 + v0) * D, bytes, bar);
            bulk_copy(dk + TILE, Vh + (size_t)(c0 + v0) * D, bytes, bar);
            return;
        }
        // Runs of tokens on one page: count the bytes, then copy.
        u32 tot = 0;
        for (int v = c0 + v0, e = c0 + v0 + cnt; v < e;) {
            const int slot = v % pageSize, seg = min(pageSize - slot, e - v);
            const int t = spg[v / pageSize - pg0] * pageSize + slot;
            tot += (u32)max(0, min(seg, n - t));
            v += seg;
        }
        mbar_expect(bar, tot * D * 4);
        for (int v = c0 + v0, e = c0 + v0 + cnt; v < e;) {
            const int slot = v % pageSize, seg = min(pageSize - slot, e - v);
            const int t = spg[v / pageSize - pg0] * pageSize + slot;
            const int ok = min(seg, n - t);
            if (ok > 0) {
                const size_t at = (size_t)(v - c0 - v0) * D;
                bulk_copy(dk + at, Kh + (size_t)t * D, (u32)ok * D * 2, bar);
                bulk_copy(dk + TILE + at, Vh + (size_t)t * D, (u32)ok * D * 2, bar);
            }
            v += seg;
        }
    };
    if (ln == 0)
        for (int j = 0; j < min(stages, mine); ++j) issue(j);

    float qf[G][8];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        unpack8(qv[g], qf[g]);
#pragma unroll
        for (int j = 0; j < 8; ++j) qf[g][j] *= scaleLog2;
    }
    float acc[G][8];
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[g][j] = 0.f;
    // The softmax step: lane ln keeps head gl's running max and its share
    // of the running sum.
    const int gl = ln / HL;
    float runM = NEG_INF, runL = 0.f;

    for (int j = 0; j < mine; ++j) {
        const int v0 = (w + j * NW) * TT, cnt = min(TT, len - v0);
        mbar_wait(&bars[w][j % stages], (u32)(j / stages) & 1u);
        const bf16* tk = ring + (size_t)(j % stages) * 2 * TILE;
        const bf16* tv = tk + TILE;
        // Scores of the tile's tokens (base 2; -inf where masked).
#pragma unroll
        for (int st = 0; st < TT / TPW; ++st) {
            const int i = st * TPW + ts;
            int h;
            const float d = group_dot<G, L>(qf, *reinterpret_cast<const uint4*>(tk + i * D + lane * 8), lane, h);
            if (lane % (L / G) == 0 && i < cnt) {
                const float x = chunk_token<PAGED>(spg, pg0, c0, v0 + i, pageSize, n) >= 0 ? d : NEG_INF;
                sc[h * TT + i] = x;
                if (raw != nullptr) raw[(size_t)(r * G + h) * total + c0 + v0 + i] = x;
            }
        }
        __syncwarp();
        // Online softmax: the tile's max per head, the rescale of what came
        // before, the probabilities in place of the scores.
        float xs[EPL], tm = NEG_INF;
#pragma unroll
        for (int e = 0; e < EPL; ++e) {
            const int i = ln % HL + e * HL;
            xs[e] = i < cnt ? sc[gl * TT + i] : NEG_INF;
            tm = fmaxf(tm, xs[e]);
        }
#pragma unroll
        for (int o = HL / 2; o > 0; o >>= 1) tm = fmaxf(tm, __shfl_xor_sync(FULL_MASK, tm, o));
        const float newM = fmaxf(runM, tm);
        const float base = newM == NEG_INF ? 0.f : newM;
        const float alpha = exp2f(runM - base);
        float ps = 0.f;
#pragma unroll
        for (int e = 0; e < EPL; ++e) {
            const int i = ln % HL + e * HL;
            const float p = exp2f(xs[e] - base);
            if (i < TT) sc[gl * TT + i] = p;
            ps += p;
        }
        runL = runL * alpha + ps;
        runM = newM;
#pragma unroll
        for (int g = 0; g < G; ++g) {
            const float a = __shfl_sync(FULL_MASK, alpha, g * HL);
#pragma unroll
            for (int k = 0; k < 8; ++k) acc[g][k] *= a;
        }
        __syncwarp();
        // acc[g] += p[g][t] * v[t] over this lane's tokens; masked tokens
        // (all p zero) are skipped: their shared memory was never written.
#pragma unroll
        for (int st = 0; st < TT / TPW; ++st) {
            const int i = st * TPW + ts;
            float p[G];
            bool any = false;
#pragma unroll
            for (int g = 0; g < G; ++g) {
                p[g] = sc[g * TT + i];
                any |= p[g] != 0.f;
            }
            if (i >= cnt || !any) continue;
            float vf[8];
            unpack8(*reinterpret_cast<const uint4*>(tv + i * D + lane * 8), vf);
#pragma unroll
            for (int g = 0; g < G; ++g)
#pragma unroll
                for (int k = 0; k < 8; ++k) acc[g][k] = fmaf(p[g], vf[k], acc[g][k]);
        }
        __syncwarp();  // the warp is done with the stage and the scores
        if (ln == 0 && j + stages < mine) {
            asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
            issue(j + stages);
        }
    }

    // The warp's partial: outputs summed over its token lanes, sums over
    // the softmax lanes of each head.
#pragma unroll
    for (int o = L; o < 32; o <<= 1)
#pragma unroll
        for (int g = 0; g < G; ++g)
#pragma unroll
            for (int k = 0; k < 8; ++k) acc[g][k] += __shfl_xor_sync(FULL_MASK, acc[g][k], o);
#pragma unroll
    for (int o = HL / 2; o > 0; o >>= 1) runL += __shfl_xor_sync(FULL_MASK, runL, o);
    if (ln % HL == 0) {
        sMw[w][gl] = runM;
        sLw[w][gl] = runL;
    }
    __syncthreads();  // every warp is done with its ring
    // The block's max and sum per head; this warp's outputs rescaled to it.
    float m[G], l[G], scale[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        float mx = NEG_INF;
#pragma unroll
        for (int k = 0; k < NW; ++k) mx = fmaxf(mx, sMw[k][g]);
        const float b = mx == NEG_INF ? 0.f : mx;
        float s = 0.f;
#pragma unroll
        for (int k = 0; k < NW; ++k) s += sLw[k][g] * exp2f(sMw[k][g] - b);
        m[g] = mx;
        l[g] = s;
        scale[g] = exp2f(sMw[w][g] - b);
    }
    float* part = reinterpret_cast<float*>(bulk_smem);
    if (ln < L) {
#pragma unroll
        for (int g = 0; g < G; ++g)
#pragma unroll
            for (int k = 0; k < 8; ++k) part[(w * G + g) * D + lane * 8 + k] = acc[g][k] * scale[g];
    }
    __syncthreads();
    attn_finish<D, G, NT>(part, m, l, partO, partML, counters, out);
#endif
}

// Parameters: those of attn_split (ATTN_PARAMS), then the stages in flight
// per warp (1 .. BULK_SMAX).
#define BULK_KERNELS(D, G)                                                                           \
    extern "C" __global__ void __launch_bounds__(BULK_NT) attn_bulk_dense_d##D##_g##G(ATTN_PARAMS, int stages) { \
        attn_bulk<D, G, false>(ATTN_ARGS, stages);                                                   \
    }                                                                                                \
    extern "C" __global__ void __launch_bounds__(BULK_NT) attn_bulk_paged_d##D##_g##G(ATTN_PARAMS, int stages) { \
        attn_bulk<D, G, true>(ATTN_ARGS, stages);                                                    \
    }

BULK_KERNELS(64, 1)
BULK_KERNELS(64, 2)
BULK_KERNELS(64, 4)
BULK_KERNELS(64, 8)
BULK_KERNELS(128, 1)
BULK_KERNELS(128, 2)
BULK_KERNELS(128, 4)
BULK_KERNELS(128, 8)
