// Prefill attention on the tensor cores (FlashAttention-2 style): causal,
// GQA, head dim 64 or 128, over the runtime's paged KV cache (float32 or
// bf16 pages), queries float32 rounded to bf16, scores and the output
// accumulated in float32. The runtime's Attend (runtime/cuda) takes this
// path for prompt chunks of 16 rows or more without a policy option
// (selection, re-positioning, accumulation, recall); it applies a model's
// sliding window.
//
// Block (row tile z, query head h): BM = 16*NW*MT query rows, each warp
// 16*MT of them (MT m-tiles: every K or V fragment read from shared memory
// feeds MT products), against the keys of KV head h/group in tiles of BN
// tokens. The queries are rounded to bf16 into shared memory once; keys and
// values are staged two tiles deep (cp.async for bf16 pages; float32 pages
// are read, rounded and stored). Per key tile a warp computes S = Q K^T
// (mma.sync m16n8k16, bf16 in, float32 accumulate), masks keys whose
// position is past the row's (only in tiles that cross the warp's
// diagonal), updates the running max and sum (base 2: one FFMA per score
// applies scale*log2 e and subtracts the max), and adds P V with P rounded
// to bf16 straight from S's registers (the accumulator layout of two
// adjacent 8-key tiles is the A operand layout of one 16-key step).
//
// Operands come from shared memory by ldmatrix: A of Q and B of K (rows of
// 8 channels), B of V transposed (.trans). Shared rows are padded by 8 bf16
// so that the 8 row addresses of an ldmatrix fall in different banks.
//
// Runtime metadata (the Attend descriptors, backend.cu): ints holds per KV
// head SD_WORDS words (N, page size, K and V page offsets into ptrs, the
// positions' offset) and per query row (qpos, qshift) at rowOff. Pages hold
// 1 << psShift tokens (a power of two: shifts, not divisions, per load). When sorted
// is set the KV head's positions ascend, so a tile of rows never needs keys
// past the last position <= its largest query position (a binary search);
// the mask itself is always by position. A model's sliding window (window >
// 0) also masks keys at positions <= the row's position - window; with
// ascending positions the tiles before the first key the tile's smallest
// query position still sees are not read, and a warp skips a tile whose
// keys its rows' windows all hide.

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
__device__ __forceinline__ void fl_mma(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void fl_ldsm4(u32 (&r)[4], const void* p) {
    u32 a = (u32)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

__device__ __forceinline__ void fl_ldsm4t(u32 (&r)[4], const void* p) {
    u32 a = (u32)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// fl_cp16 copies 16 bytes global -> shared asynchronously; ok false writes
// zeros and reads nothing.
__device__ __forceinline__ void fl_cp16(void* dst, const void* src, bool ok) {
    u32 d = (u32)__cvta_generic_to_shared(dst);
    int n = ok ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(n));
}

// fl_exp2 is 2^x (ex2.approx: 2^-inf = +0).
__device__ __forceinline__ float fl_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// fl_new_max takes this lane's maximum mx of a row's scores in a key tile
// to the row's (the four lanes that hold it), sets base to its scaled value
// (0 for a row with every key masked so far, max -inf, so that exp2 gives 0
// and not NaN), returns the factor rescaling what was summed under the old
// maximum m, and moves m to the new one.
__device__ __forceinline__ float fl_new_max(float mx, float& m, float scaleLog2, float& base) {
    mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
    base = mx == NEG_INF ? 0.f : mx * scaleLog2;
    const float c = fl_exp2(m * scaleLog2 - base);
    m = mx;
    return c;
}

// fl_quad_sum sums x over the four lanes that hold a row.
__device__ __forceinline__ float fl_quad_sum(float x) {
    x += __shfl_xor_sync(FULL_MASK, x, 1);
    return x + __shfl_xor_sync(FULL_MASK, x, 2);
}

__device__ __forceinline__ void fl_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void fl_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }
#endif

// fl_row_span sets qmax and qmin to the largest and smallest positions of
// the rows [r0, r0 + bm) that exist (of rows), -1 and INT_MAX if none.
__device__ __forceinline__ void fl_row_span(const int* ints, int rowOff, int r0, int bm, int rows, int& qmax,
                                            int& qmin) {
    int m = -1, mn = 0x7fffffff;
    for (int i = 0; i < bm && r0 + i < rows; ++i) {
        const int p = ints[rowOff + 2 * (r0 + i)];
        m = max(m, p);
        mn = min(mn, p);
    }
    qmax = m;
    qmin = mn;
}

// fl_key_range sets [kstart, kend) to the key indices a tile of rows with
// positions in [qmin, qmax] may see: all N unless the positions ascend
// (sorted) and are uploaded (pos); then up to the last position <= qmax
// and, under a sliding window (window > 0), from the first position the
// smallest row's window still sees. A binary search each.
__device__ __forceinline__ void fl_key_range(const int* pos, int N, int sorted, int qmin, int qmax, int window,
                                             int& kstart, int& kend) {
    kend = N, kstart = 0;
    if (!sorted || !pos) return;
    int lo = 0, hi = N;  // first index whose position exceeds qmax
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (pos[mid] <= qmax) lo = mid + 1; else hi = mid;
    }
    kend = lo;
    if (window > 0) {  // first index the window of the smallest row still sees
        const int wlo = be_win_lo(qmin, window);
        lo = 0, hi = kend;
        while (lo < hi) {
            const int mid = (lo + hi) >> 1;
            if (pos[mid] <= wlo) lo = mid + 1; else hi = mid;
        }
        kstart = lo;
    }
}

// fl_pack2 rounds two floats to bf16 and packs them, lo in the low half.
__device__ __forceinline__ u32 fl_pack2(float lo, float hi) {
    return (u32)bf16_from_f32(lo) | ((u32)bf16_from_f32(hi) << 16);
}

// fl_pack8 rounds the eight floats a, b to bf16: 16 bytes, in order.
__device__ __forceinline__ uint4 fl_pack8(float4 a, float4 b) {
    return make_uint4(fl_pack2(a.x, a.y), fl_pack2(a.z, a.w), fl_pack2(b.x, b.y), fl_pack2(b.z, b.w));
}

template <int D, int NW, int MT, int BN>
__device__ __forceinline__ void flash_prefill(float* __restrict__ out, const float* __restrict__ q,
                                              const u64* __restrict__ ptrs, const int* __restrict__ ints, int heads,
                                              int kvHeads, float scaleLog2, int rowOff, int rows, int kvt, int sorted,
                                              int psShift, float* __restrict__ lse, int window) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int BM = 16 * NW * MT, NT = 32 * NW, RS = D + 8;  // RS: padded shared row, bf16
    constexpr int KS = D / 16;                                   // k-steps of S = Q K^T
    constexpr int NO = D / 8;                                    // 8-channel tiles of O
    constexpr int NJ = BN / 8;                                   // 8-key tiles of S
    constexpr int CH = D / 8;                                    // 16-byte pieces of a bf16 row
    extern __shared__ __align__(16) unsigned char fl_smem[];
    bf16* Qs = (bf16*)fl_smem;             // [BM][RS]
    bf16* Ks = Qs + BM * RS;               // [2][BN][RS]
    bf16* Vs = Ks + 2 * BN * RS;           // [2][BN][RS]
    int* kp = (int*)(Vs + 2 * BN * RS);    // [2][BN] key positions
    __shared__ int qmaxs, qmins;

    const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
    const int mi = lane >> 3, rr = lane & 7;  // ldmatrix: this lane's matrix and row
    const int z = gridDim.x - 1 - blockIdx.x;  // the longest row tiles first
    const int h = blockIdx.y, group = heads / kvHeads;
    const int* sd = ints + (h / group) * SD_WORDS;
    const int N = sd[SD_N], psMask = (1 << psShift) - 1, kOff = sd[SD_K], vOff = sd[SD_V];
    const int* pos = sd[SD_POS] >= 0 ? ints + sd[SD_POS] : 0;  // none: every token is visible
    const int r0 = z * BM;

    // Largest and smallest query positions of the tile, and the keys they
    // may need.
    if (tid == 0) fl_row_span(ints, rowOff, r0, BM, rows, qmaxs, qmins);
    // The queries, rounded to bf16 (zeros past the last row).
    for (int i = tid; i < BM * CH; i += NT) {
        const int r = i / CH, c = (i % CH) * 8;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (r0 + r < rows) {
            const float* p = q + ((long long)(r0 + r) * heads + h) * D + c;
            const float4 a = *(const float4*)p, b = *(const float4*)(p + 4);
            v = fl_pack8(a, b);
        }
        *(uint4*)(Qs + r * RS + c) = v;
    }
    __syncthreads();
    const int qmax = qmaxs, qmin = qmins;
    int kstart, kend;
    fl_key_range(pos, N, sorted, qmin, qmax, window, kstart, kend);
    const int it0 = kstart / BN, ntiles = (kend + BN - 1) / BN;

    // This warp's rows: m-tile t holds rows wr + 16t + gid and + 8.
    const int wr = r0 + w * 16 * MT;
    int qa[MT], qb[MT], wla[MT], wlb[MT];  // row positions and window bounds
    int wmin = 0x7fffffff, wmax = -1;
#pragma unroll
    for (int t = 0; t < MT; ++t) {
        const int ra = wr + 16 * t + gid, rb = ra + 8;
        qa[t] = ra < rows ? ints[rowOff + 2 * ra] : -1;
        qb[t] = rb < rows ? ints[rowOff + 2 * rb] : -1;
        wla[t] = be_win_lo(qa[t], window);
        wlb[t] = be_win_lo(qb[t], window);
        wmin = min(wmin, min(qa[t], qb[t]));
        wmax = max(wmax, max(qa[t], qb[t]));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        wmin = min(wmin, __shfl_xor_sync(FULL_MASK, wmin, o));
        wmax = max(wmax, __shfl_xor_sync(FULL_MASK, wmax, o));
    }

    // Stage key/value tile it into buffer it&1.
    auto stage = [&](int it) {
        const int b = it & 1, t0 = it * BN;
        bf16* ks = Ks + b * BN * RS;
        bf16* vs = Vs + b * BN * RS;
        for (int i = tid; i < BN * CH; i += NT) {
            const int r = i / CH, c = (i % CH) * 8, t = t0 + r;
            const bool ok = t < kend;
            const int tt = ok ? t : 0;
            const char* kr = (const char*)ptrs[kOff + (tt >> psShift)];
            const char* vr = (const char*)ptrs[vOff + (tt >> psShift)];
            if (kvt == KV_BF16) {
                const long long o = ((long long)(tt & psMask) * D + c) * 2;
                fl_cp16(ks + r * RS + c, kr + o, ok);
                fl_cp16(vs + r * RS + c, vr + o, ok);
            } else {
                const long long o = ((long long)(tt & psMask) * D + c) * 4;
                uint4 kk = make_uint4(0u, 0u, 0u, 0u), vv = kk;
                if (ok) {
                    const float4 k0 = *(const float4*)(kr + o), k1 = *(const float4*)(kr + o + 16);
                    const float4 v0 = *(const float4*)(vr + o), v1 = *(const float4*)(vr + o + 16);
                    kk = fl_pack8(k0, k1);
                    vv = fl_pack8(v0, v1);
                }
                *(uint4*)(ks + r * RS + c) = kk;
                *(uint4*)(vs + r * RS + c) = vv;
            }
        }
        for (int i = tid; i < BN; i += NT) {
            const int t = t0 + i;
            kp[b * BN + i] = t < kend ? (pos ? pos[t] : 0) : 0x7fffffff;
        }
        fl_commit();
    };

    float o[MT][NO][4];
    float ma[MT], mb[MT], la[MT], lb[MT];  // running max (raw scores) and sum per row
#pragma unroll
    for (int t = 0; t < MT; ++t) {
#pragma unroll
        for (int n = 0; n < NO; ++n) o[t][n][0] = o[t][n][1] = o[t][n][2] = o[t][n][3] = 0.f;
        ma[t] = mb[t] = NEG_INF;
        la[t] = lb[t] = 0.f;
    }

    if (it0 < ntiles) stage(it0);
    for (int it = it0; it < ntiles; ++it) {
        if (it + 1 < ntiles) {
            stage(it + 1);
            fl_wait<1>();
        } else {
            fl_wait<0>();
        }
        __syncthreads();
        const int b = it & 1;
        const bf16* ks = Ks + b * BN * RS;
        const bf16* vs = Vs + b * BN * RS;
        const int* kps = kp + b * BN;
        // With ascending positions: a tile wholly past the warp's rows, or
        // wholly before every row's window, is skipped; one wholly before
        // the rows and inside every row's window needs no mask.
        const bool skip = sorted && (kps[0] > wmax || kps[BN - 1] <= be_win_lo(wmin, window));
        const bool full = sorted && kps[BN - 1] <= wmin && kps[0] > be_win_lo(wmax, window);
        if (!skip) {
            float s[MT][NJ][4];
#pragma unroll
            for (int t = 0; t < MT; ++t)
#pragma unroll
                for (int j = 0; j < NJ; ++j) s[t][j][0] = s[t][j][1] = s[t][j][2] = s[t][j][3] = 0.f;
#pragma unroll
            for (int k = 0; k < KS; ++k) {
                u32 qf[MT][4];
#pragma unroll
                for (int t = 0; t < MT; ++t)
                    fl_ldsm4(qf[t], Qs + (w * 16 * MT + 16 * t + (mi & 1) * 8 + rr) * RS + k * 16 + (mi >> 1) * 8);
#pragma unroll
                for (int j = 0; j < NJ; j += 2) {
                    // Matrices: (tile j, channels 0-7), (j, 8-15), (j+1, 0-7), (j+1, 8-15).
                    u32 bq[4];
                    fl_ldsm4(bq, ks + ((j + (mi >> 1)) * 8 + rr) * RS + k * 16 + (mi & 1) * 8);
#pragma unroll
                    for (int t = 0; t < MT; ++t) {
                        fl_mma(s[t][j], qf[t], bq[0], bq[1]);
                        fl_mma(s[t][j + 1], qf[t], bq[2], bq[3]);
                    }
                }
            }
            u32 pf[MT][BN / 16][4];
#pragma unroll
            for (int t = 0; t < MT; ++t) {
                // Mask by position (diagonal tiles), running max.
                float mxa = ma[t], mxb = mb[t];
#pragma unroll
                for (int j = 0; j < NJ; ++j) {
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        if (!full) {
                            const int kpos = kps[j * 8 + 2 * tig + e];
                            if (kpos > qa[t] || kpos <= wla[t]) s[t][j][e] = NEG_INF;
                            if (kpos > qb[t] || kpos <= wlb[t]) s[t][j][2 + e] = NEG_INF;
                        }
                        mxa = fmaxf(mxa, s[t][j][e]);
                        mxb = fmaxf(mxb, s[t][j][2 + e]);
                    }
                }
                float ba, bb;
                const float ca = fl_new_max(mxa, ma[t], scaleLog2, ba), cb = fl_new_max(mxb, mb[t], scaleLog2, bb);
                float sa = 0.f, sb = 0.f;
#pragma unroll
                for (int j = 0; j < NJ; ++j) {
                    s[t][j][0] = fl_exp2(fmaf(s[t][j][0], scaleLog2, -ba));
                    s[t][j][1] = fl_exp2(fmaf(s[t][j][1], scaleLog2, -ba));
                    s[t][j][2] = fl_exp2(fmaf(s[t][j][2], scaleLog2, -bb));
                    s[t][j][3] = fl_exp2(fmaf(s[t][j][3], scaleLog2, -bb));
                    sa += s[t][j][0] + s[t][j][1];
                    sb += s[t][j][2] + s[t][j][3];
                }
                la[t] = la[t] * ca + sa;
                lb[t] = lb[t] * cb + sb;
#pragma unroll
                for (int n = 0; n < NO; ++n) {
                    o[t][n][0] *= ca;
                    o[t][n][1] *= ca;
                    o[t][n][2] *= cb;
                    o[t][n][3] *= cb;
                }
#pragma unroll
                for (int kk = 0; kk < BN / 16; ++kk) {
                    pf[t][kk][0] = fl_pack2(s[t][2 * kk][0], s[t][2 * kk][1]);
                    pf[t][kk][1] = fl_pack2(s[t][2 * kk][2], s[t][2 * kk][3]);
                    pf[t][kk][2] = fl_pack2(s[t][2 * kk + 1][0], s[t][2 * kk + 1][1]);
                    pf[t][kk][3] = fl_pack2(s[t][2 * kk + 1][2], s[t][2 * kk + 1][3]);
                }
            }
            // O += P V.
#pragma unroll
            for (int kk = 0; kk < BN / 16; ++kk) {
#pragma unroll
                for (int n = 0; n < NO; n += 2) {
                    // Matrices: (keys 0-7, ch n*8..), (keys 8-15, ch n*8..),
                    // (keys 0-7, ch (n+1)*8..), (keys 8-15, ch (n+1)*8..).
                    u32 bv[4];
                    fl_ldsm4t(bv, vs + (kk * 16 + (mi & 1) * 8 + rr) * RS + (n + (mi >> 1)) * 8);
#pragma unroll
                    for (int t = 0; t < MT; ++t) {
                        fl_mma(o[t][n], pf[t][kk], bv[0], bv[1]);
                        fl_mma(o[t][n + 1], pf[t][kk], bv[2], bv[3]);
                    }
                }
            }
        }
        __syncthreads();  // the buffer is restaged two tiles on
    }

#pragma unroll
    for (int t = 0; t < MT; ++t) {
        const float sa = fl_quad_sum(la[t]), sb = fl_quad_sum(lb[t]);
        const float ia = sa > 0.f ? 1.f / sa : 0.f, ib = sb > 0.f ? 1.f / sb : 0.f;
        const int ra = wr + 16 * t + gid, rb = ra + 8;
        if (ra < rows) {
            float* pa = out + ((long long)ra * heads + h) * D + 2 * tig;
#pragma unroll
            for (int n = 0; n < NO; ++n) *(float2*)(pa + n * 8) = make_float2(o[t][n][0] * ia, o[t][n][1] * ia);
            if (lse && tig == 0) lse[(long long)ra * heads + h] = sa > 0.f ? ma[t] * scaleLog2 + log2f(sa) : NEG_INF;
        }
        if (rb < rows) {
            float* pb = out + ((long long)rb * heads + h) * D + 2 * tig;
#pragma unroll
            for (int n = 0; n < NO; ++n) *(float2*)(pb + n * 8) = make_float2(o[t][n][2] * ib, o[t][n][3] * ib);
            if (lse && tig == 0) lse[(long long)rb * heads + h] = sb > 0.f ? mb[t] * scaleLog2 + log2f(sb) : NEG_INF;
        }
    }
#endif
}

// FL_SMEM is the dynamic shared memory of flash_prefill<D, NW, MT, BN>.
#define FL_SMEM(D, NW, MT, BN) ((16 * (NW) * (MT) + 4 * (BN)) * ((D) + 8) * 2 + 2 * (BN) * 4)

#define FLASH_KERNEL(D, NW, MT, BN)                                                                            \
    extern "C" __global__ void __launch_bounds__(32 * NW) flash_prefill_d##D##_w##NW##_m##MT##_n##BN(          \
        float* out, const float* q, const u64* ptrs, const int* ints, int heads, int kvHeads, float scaleLog2, \
        int rowOff, int rows, int kvt, int sorted, int psShift, float* lse, int window) {                      \
        flash_prefill<D, NW, MT, BN>(out, q, ptrs, ints, heads, kvHeads, scaleLog2, rowOff, rows, kvt, sorted, \
                                     psShift, lse, window);                                                    \
    }

// The variants KVBENCH_FLASH chooses among (wNW mMT nBN).
#if KVB_IN(0)
FLASH_KERNEL(64, 4, 1, 64)
FLASH_KERNEL(64, 4, 2, 64)
FLASH_KERNEL(64, 8, 1, 64)
FLASH_KERNEL(64, 4, 2, 32)
FLASH_KERNEL(128, 4, 1, 64)
FLASH_KERNEL(128, 4, 2, 64)
FLASH_KERNEL(128, 8, 1, 64)
FLASH_KERNEL(128, 4, 2, 32)
#endif
