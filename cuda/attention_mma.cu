// Split-KV decode attention for GQA rows on the tensor cores (sm_80+):
// attn_mma_{dense,paged}_d{D}_g{G}, G = 2..8 query heads per row. Same
// parameters, work split, partials and merge as attn_split (attention.cu);
// only the arithmetic differs. With G heads, the CUDA-core kernel spends
// ~G*8 FMAs, an unpack and a butterfly per 16 bytes of K or V; here one warp
// instruction (mma.sync m16n8k16, bf16 in, float32 accumulate) covers 16
// tokens x 16 channels x 8 heads, so a block issues a few instructions per
// kilobyte read. Opt-in (KVBENCH_ATTN_MMA=on, kernels.go useMMA): on the H100
// the loads, not the arithmetic, set the pace, and these kernels measured
// 2-4 % slower than attn_split (more registers, fewer loads in flight).
//
// Each warp takes the chunk's tiles of 16 tokens in turn (tile w, w+NW, ...)
// with the next tile's loads in flight while it computes on the current one.
//
// Scores, S[token][head] = K q: A = a K tile (16 tokens x 16 channels), B =
// the queries (16 channels x 8 heads, heads >= G zero). The channel order
// inside a product does not matter, so each lane feeds its registers
// straight from 16-byte loads: lane (gid, tig) = (lane/4, lane%4) loads
// channels j*32 + tig*8 .. +7 of tokens gid and gid+8 (and of query head
// gid), and products 2j and 2j+1 take the first and the second half of
// those 8 channels as their k slots {2tig, 2tig+1, 2tig+8, 2tig+9}.
//
// Output, O^T[channel][head] = V^T P^T: A = V^T (16 channels x 16 tokens),
// B = P^T (16 tokens x 8 heads). A's k pairs are two tokens of one channel,
// so lane (gid, tig) loads channels 64p + 8gid .. +7 of tokens 2tig, 2tig+1,
// 2tig+8, 2tig+9 and pairs them with byte permutes; product tile 4p + e
// holds channels 64p + 8gid + 2e (row gid) and +1 (row gid+8). The
// probabilities are split into bf16 high and low parts (split_bf16) and
// multiplied twice, so the output keeps float32 accuracy.

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
// mma_bf16 accumulates d += A B for one m16n8k16 product.
__device__ __forceinline__ void mma_bf16(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
#endif

// u32_at returns 32-bit word e of a 16-byte vector.
__device__ __forceinline__ u32 u32_at(const uint4& v, int e) { return e == 0 ? v.x : e == 1 ? v.y : e == 2 ? v.z : v.w; }

template <int D, int G, bool PAGED>
__device__ __forceinline__ void attn_mma(
    const bf16* __restrict__ q, const bf16* __restrict__ K, const bf16* __restrict__ V,
    const int* __restrict__ pages, int n, int nsel, int pageSize, int rowsPerKV, int chunk,
    float scaleLog2, float* __restrict__ partO, float* __restrict__ partML, int* __restrict__ counters,
    float* __restrict__ out, float* __restrict__ raw) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int NT = ATTN_NT, NW = NT / 32;
    constexpr int KP = D / 32;  // 16-byte pieces of a key row per lane
    constexpr int VP = D / 64;  // 16-byte pieces of a value row per lane
    static_assert(G >= 2 && G <= 8 && D % 64 == 0, "tensor-core rows: 2-8 heads, D a multiple of 64");
    // smem: probabilities [G][SC] (scores, then split_bf16 words), then
    // (paged) the chunk's page ids; after pass 2 the warps' partial outputs
    // [NW][G][D] from offset 0.
    extern __shared__ float smem[];

    pdl_trigger();
    pdl_wait();
    const int r = blockIdx.y, c = blockIdx.x;
    const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
    const int kvh = r / rowsPerKV;
    const int total = PAGED ? nsel * pageSize : n;
    const int c0 = c * chunk;
    const int len = min(chunk, total - c0);
    const int ntiles = (len + 15) / 16;
    const int SC = chunk + 8;  // a head's stride: heads' rows fall in different banks
    const bf16* Kh = K + (size_t)kvh * n * D;
    const bf16* Vh = V + (size_t)kvh * n * D;

    // The queries as B fragments (unscaled bf16; the scale is applied to
    // the float32 scores).
    uint4 qb[KP];
#pragma unroll
    for (int j = 0; j < KP; ++j) {
        qb[j] = make_uint4(0u, 0u, 0u, 0u);
        if (gid < G) qb[j] = *reinterpret_cast<const uint4*>(q + (size_t)(r * G + gid) * D + j * 32 + tig * 8);
    }

    int* spg = reinterpret_cast<int*>(smem + G * SC);
    const int pg0 = stage_pages<PAGED, NT>(spg, pages, r, nsel, pageSize, c0, len);
    auto token_of = [&](int i) -> int { return i < len ? chunk_token<PAGED>(spg, pg0, c0, i, pageSize, n) : -1; };
    auto load = [&](const bf16* p, int t) -> uint4 {
        return ld_stream_if(p + (size_t)max(t, 0) * D, t >= 0);
    };
    // fetchK: the lane's pieces of tokens gid and gid+8 of a tile.
    auto fetchK = [&](int tile, uint4 (&x)[2][KP], int (&t)[2]) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            t[h] = token_of(tile * 16 + gid + 8 * h);
#pragma unroll
            for (int j = 0; j < KP; ++j) x[h][j] = load(Kh + j * 32 + tig * 8, t[h]);
        }
    };
    // fetchV: the lane's pieces of tokens 2tig, 2tig+1, 2tig+8, 2tig+9.
    auto fetchV = [&](int tile, uint4 (&y)[4][VP]) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const int t = token_of(tile * 16 + 2 * tig + (k & 1) + 8 * (k >> 1));
#pragma unroll
            for (int p = 0; p < VP; ++p) y[k][p] = load(Vh + 64 * p + 8 * gid, t);
        }
    };

    // Pass 1: scores; the warp's last tile asks for its first values, so
    // that loads stay in flight across the softmax.
    uint4 ya[4][VP], yb[4][VP];
    {
        uint4 xa[2][KP], xb[2][KP];
        int ta[2], tb[2];
        fetchK(w, xa, ta);
        for (int tile = w; tile < ntiles; tile += NW) {
            fetchK(tile + NW, xb, tb);  // past the chunk: zeros, no loads
            if (tile + NW >= ntiles) fetchV(w, ya);
            float s0[4] = {0.f, 0.f, 0.f, 0.f}, s1[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int j = 0; j < KP; ++j) {
                mma_bf16(s0, xa[0][j].x, xa[1][j].x, xa[0][j].y, xa[1][j].y, qb[j].x, qb[j].y);
                mma_bf16(s1, xa[0][j].z, xa[1][j].z, xa[0][j].w, xa[1][j].w, qb[j].z, qb[j].w);
            }
            // s[0], s[1]: token gid, heads 2tig, 2tig+1; s[2], s[3]: token gid+8.
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int h = 2 * tig + (e & 1), i = tile * 16 + gid + 8 * (e >> 1);
                if (h < G && i < len) {
                    const float x = ta[e >> 1] >= 0 ? (s0[e] + s1[e]) * scaleLog2 : NEG_INF;
                    smem[h * SC + i] = x;
                    if (raw != nullptr) raw[(size_t)(r * G + h) * total + c0 + i] = x;
                }
            }
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                ta[h] = tb[h];
#pragma unroll
                for (int j = 0; j < KP; ++j) xa[h][j] = xb[h][j];
            }
        }
    }
    __syncthreads();
    float m[G], l[G];
    chunk_softmax<G, NT, true>(smem, SC, len, ntiles * 16, m, l);

    // Pass 2: o[4p+e] += V^T P^T, rows: channels 64p + 8gid + 2e (+1),
    // columns: heads 2tig, 2tig+1.
    float o[D / 16][4];
#pragma unroll
    for (int i = 0; i < D / 16; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    const u32* pw = reinterpret_cast<const u32*>(smem) + gid * SC + 2 * tig;
    for (int tile = w; tile < ntiles; tile += NW) {
        fetchV(tile + NW, yb);
        u32 bh0 = 0u, bh1 = 0u, bl0 = 0u, bl1 = 0u;
        if (gid < G) {
            const uint2 p0 = *reinterpret_cast<const uint2*>(pw + tile * 16);
            const uint2 p1 = *reinterpret_cast<const uint2*>(pw + tile * 16 + 8);
            bh0 = __byte_perm(p0.x, p0.y, 0x7632);
            bl0 = __byte_perm(p0.x, p0.y, 0x5410);
            bh1 = __byte_perm(p1.x, p1.y, 0x7632);
            bl1 = __byte_perm(p1.x, p1.y, 0x5410);
        }
#pragma unroll
        for (int p = 0; p < VP; ++p)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const u32 v0 = u32_at(ya[0][p], e), v1 = u32_at(ya[1][p], e);
                const u32 v2 = u32_at(ya[2][p], e), v3 = u32_at(ya[3][p], e);
                const u32 a0 = __byte_perm(v0, v1, 0x5410), a1 = __byte_perm(v0, v1, 0x7632);
                const u32 a2 = __byte_perm(v2, v3, 0x5410), a3 = __byte_perm(v2, v3, 0x7632);
                mma_bf16(o[4 * p + e], a0, a1, a2, a3, bh0, bh1);
                mma_bf16(o[4 * p + e], a0, a1, a2, a3, bl0, bl1);
            }
#pragma unroll
        for (int k = 0; k < 4; ++k)
#pragma unroll
            for (int p = 0; p < VP; ++p) ya[k][p] = yb[k][p];
    }
    __syncthreads();  // every thread is done with the probabilities
#pragma unroll
    for (int p = 0; p < VP; ++p)
#pragma unroll
        for (int e = 0; e < 4; ++e)
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const int h = 2 * tig + (k & 1), ch = 64 * p + 8 * gid + 2 * e + (k >> 1);
                if (h < G) smem[(w * G + h) * D + ch] = o[4 * p + e][k];
            }
    __syncthreads();
    attn_finish<D, G>(smem, m, l, partO, partML, counters, out);
#endif
}

#define ATTN_MMA_KERNELS(D, G)                                                                                   \
    extern "C" __global__ void __launch_bounds__(ATTN_NT) attn_mma_dense_d##D##_g##G(ATTN_PARAMS) {              \
        attn_mma<D, G, false>(ATTN_ARGS);                                                                        \
    }                                                                                                            \
    extern "C" __global__ void __launch_bounds__(ATTN_NT) attn_mma_paged_d##D##_g##G(ATTN_PARAMS) {              \
        attn_mma<D, G, true>(ATTN_ARGS);                                                                         \
    }

#if KVB_IN(10)
ATTN_MMA_KERNELS(64, 2)
ATTN_MMA_KERNELS(64, 4)
ATTN_MMA_KERNELS(64, 8)
ATTN_MMA_KERNELS(128, 2)
ATTN_MMA_KERNELS(128, 4)
ATTN_MMA_KERNELS(128, 8)
#endif
