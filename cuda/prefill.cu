// Prefill attention on the tensor cores (FlashAttention-2 style): causal,
// GQA, head dim 64 or 128, over the runtime's paged KV cache (float32 or
// bf16 pages), queries float32 rounded to bf16, scores and the output
// accumulated in float32. The runtime's Attend (runtime/cuda) takes this
// path for prompt chunks of 16 rows or more without a policy option
// (selection, re-positioning, accumulation, recall).
//
// Block (row tile z, query head h): BM = 16*NW query rows, each warp 16 of
// them, against the keys of KV head h/group in tiles of FL_BN tokens. Keys
// and values are staged in shared memory two tiles deep (cp.async for bf16
// pages; float32 pages are read, rounded and stored). Per key tile a warp
// computes S = Q K^T (mma.sync m16n8k16, bf16 in, float32 accumulate), masks
// keys whose position is past the row's, updates the running max and sum
// (base 2: scores scaled by scale*log2 e), and adds P V with P rounded to
// bf16 straight from S's registers (the accumulator layout of two adjacent
// 8-key tiles is the A operand layout of one 16-key step).
//
// Operands: A fragments of Q are loaded once from global memory (float32,
// rounded); B fragments of K with ldmatrix (keys are rows of 8 channels);
// B fragments of V with ldmatrix.trans. Shared rows are padded by 8 bf16
// so that the 8 row addresses of an ldmatrix fall in different banks.
//
// Runtime metadata (the Attend descriptors, backend.cu): ints holds per KV
// head SD_WORDS words (N, page size, K and V page offsets into ptrs, the
// positions' offset) and per query row (qpos, qshift) at rowOff. When sorted
// is set the KV head's positions ascend, so a tile of rows never needs keys
// past the last position <= its largest query position (a binary search);
// the mask itself is always by position.

#define FL_BN 64

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

__device__ __forceinline__ void fl_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void fl_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }
#endif

// fl_pack2 rounds two floats to bf16 and packs them, lo in the low half.
__device__ __forceinline__ u32 fl_pack2(float lo, float hi) {
    return (u32)bf16_from_f32(lo) | ((u32)bf16_from_f32(hi) << 16);
}

template <int D, int NW>
__device__ __forceinline__ void flash_prefill(float* __restrict__ out, const float* __restrict__ q,
                                              const u64* __restrict__ ptrs, const int* __restrict__ ints, int heads,
                                              int kvHeads, float scaleLog2, int rowOff, int rows, int kvt, int sorted,
                                              float* __restrict__ lse) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int BM = 16 * NW, NT = 32 * NW, RS = D + 8;  // RS: padded shared row, bf16
    constexpr int KS = D / 16;                              // k-steps of S = Q K^T
    constexpr int NO = D / 8;                               // 8-channel tiles of O
    extern __shared__ __align__(16) unsigned char fl_smem[];
    bf16* Ks = (bf16*)fl_smem;           // [2][FL_BN][RS]
    bf16* Vs = Ks + 2 * FL_BN * RS;      // [2][FL_BN][RS]
    int* kp = (int*)(Vs + 2 * FL_BN * RS);  // [2][FL_BN] key positions
    __shared__ int qmaxs;

    const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
    const int z = gridDim.x - 1 - blockIdx.x;  // the longest row tiles first
    const int h = blockIdx.y, group = heads / kvHeads;
    const int* sd = ints + (h / group) * SD_WORDS;
    const int N = sd[SD_N], ps = sd[SD_PS], kOff = sd[SD_K], vOff = sd[SD_V];
    const int* pos = ints + sd[SD_POS];
    const int r0 = z * BM;

    // Largest query position of the tile, and the keys it may need.
    if (tid == 0) {
        int m = -1;
        for (int i = 0; i < BM && r0 + i < rows; ++i) m = max(m, ints[rowOff + 2 * (r0 + i)]);
        qmaxs = m;
    }
    __syncthreads();
    const int qmax = qmaxs;
    int kend = N;
    if (sorted) {  // first index whose position exceeds qmax
        int lo = 0, hi = N;
        while (lo < hi) {
            int mid = (lo + hi) >> 1;
            if (pos[mid] <= qmax) lo = mid + 1; else hi = mid;
        }
        kend = lo;
    }
    const int ntiles = (kend + FL_BN - 1) / FL_BN;

    // This warp's rows: gid and gid+8 of its 16.
    const int ra = r0 + w * 16 + gid, rb = ra + 8;
    const int qa = ra < rows ? ints[rowOff + 2 * ra] : -1;
    const int qb = rb < rows ? ints[rowOff + 2 * rb] : -1;

    // Q as A fragments, rounded to bf16.
    u32 qf[KS][4];
    {
        const float* pa = q + ((long long)ra * heads + h) * D;
        const float* pb = q + ((long long)rb * heads + h) * D;
#pragma unroll
        for (int k = 0; k < KS; ++k) {
            const int c = k * 16 + 2 * tig;
            float2 a0 = ra < rows ? *(const float2*)(pa + c) : make_float2(0.f, 0.f);
            float2 a1 = rb < rows ? *(const float2*)(pb + c) : make_float2(0.f, 0.f);
            float2 a2 = ra < rows ? *(const float2*)(pa + c + 8) : make_float2(0.f, 0.f);
            float2 a3 = rb < rows ? *(const float2*)(pb + c + 8) : make_float2(0.f, 0.f);
            qf[k][0] = fl_pack2(a0.x, a0.y);
            qf[k][1] = fl_pack2(a1.x, a1.y);
            qf[k][2] = fl_pack2(a2.x, a2.y);
            qf[k][3] = fl_pack2(a3.x, a3.y);
        }
    }

    // Stage key/value tile it into buffer it&1.
    auto stage = [&](int it) {
        const int b = it & 1, t0 = it * FL_BN;
        bf16* ks = Ks + b * FL_BN * RS;
        bf16* vs = Vs + b * FL_BN * RS;
        constexpr int CH = D / 8;  // 16-byte pieces of a bf16 row
        for (int i = tid; i < FL_BN * CH; i += NT) {
            const int r = i / CH, c = (i % CH) * 8, t = t0 + r;
            const bool ok = t < kend;
            const int tt = ok ? t : 0;
            const char* kr = (const char*)ptrs[kOff + tt / ps];
            const char* vr = (const char*)ptrs[vOff + tt / ps];
            if (kvt == KV_BF16) {
                const long long o = ((long long)(tt % ps) * D + c) * 2;
                fl_cp16(ks + r * RS + c, kr + o, ok);
                fl_cp16(vs + r * RS + c, vr + o, ok);
            } else {
                const long long o = ((long long)(tt % ps) * D + c) * 4;
                uint4 kk = make_uint4(0u, 0u, 0u, 0u), vv = kk;
                if (ok) {
                    const float4 k0 = *(const float4*)(kr + o), k1 = *(const float4*)(kr + o + 16);
                    const float4 v0 = *(const float4*)(vr + o), v1 = *(const float4*)(vr + o + 16);
                    kk = make_uint4(fl_pack2(k0.x, k0.y), fl_pack2(k0.z, k0.w), fl_pack2(k1.x, k1.y), fl_pack2(k1.z, k1.w));
                    vv = make_uint4(fl_pack2(v0.x, v0.y), fl_pack2(v0.z, v0.w), fl_pack2(v1.x, v1.y), fl_pack2(v1.z, v1.w));
                }
                *(uint4*)(ks + r * RS + c) = kk;
                *(uint4*)(vs + r * RS + c) = vv;
            }
        }
        for (int i = tid; i < FL_BN; i += NT) {
            const int t = t0 + i;
            kp[b * FL_BN + i] = t < kend ? pos[t] : 0x7fffffff;
        }
        fl_commit();
    };

    float o[NO][4];
#pragma unroll
    for (int n = 0; n < NO; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float ma = NEG_INF, mb = NEG_INF, la = 0.f, lb = 0.f;

    if (ntiles > 0) stage(0);
    for (int it = 0; it < ntiles; ++it) {
        if (it + 1 < ntiles) {
            stage(it + 1);
            fl_wait<1>();
        } else {
            fl_wait<0>();
        }
        __syncthreads();
        const int b = it & 1;
        const bf16* ks = Ks + b * FL_BN * RS;
        const bf16* vs = Vs + b * FL_BN * RS;
        const int* kps = kp + b * FL_BN;

        // S = Q K^T: 16 rows x FL_BN keys, 8 tiles of 8 keys.
        float s[FL_BN / 8][4];
#pragma unroll
        for (int j = 0; j < FL_BN / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
        for (int k = 0; k < KS; ++k) {
#pragma unroll
            for (int j = 0; j < FL_BN / 8; j += 2) {
                // Matrices: (tile j, channels 0-7), (j, 8-15), (j+1, 0-7), (j+1, 8-15).
                const int mi = lane >> 3, rr = lane & 7;
                const bf16* p = ks + ((j + (mi >> 1)) * 8 + rr) * RS + k * 16 + (mi & 1) * 8;
                u32 bq[4];
                fl_ldsm4(bq, p);
                fl_mma(s[j], qf[k], bq[0], bq[1]);
                fl_mma(s[j + 1], qf[k], bq[2], bq[3]);
            }
        }

        // Mask by position, scale, running max.
        float mxa = ma, mxb = mb;
#pragma unroll
        for (int j = 0; j < FL_BN / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int kpos = kps[j * 8 + 2 * tig + e];
                s[j][e] = kpos <= qa ? s[j][e] * scaleLog2 : NEG_INF;
                s[j][2 + e] = kpos <= qb ? s[j][2 + e] * scaleLog2 : NEG_INF;
                mxa = fmaxf(mxa, s[j][e]);
                mxb = fmaxf(mxb, s[j][2 + e]);
            }
        }
        mxa = fmaxf(mxa, __shfl_xor_sync(FULL_MASK, mxa, 1));
        mxa = fmaxf(mxa, __shfl_xor_sync(FULL_MASK, mxa, 2));
        mxb = fmaxf(mxb, __shfl_xor_sync(FULL_MASK, mxb, 1));
        mxb = fmaxf(mxb, __shfl_xor_sync(FULL_MASK, mxb, 2));
        // A row with every key masked so far keeps max -inf: use 0 as the
        // reference so that exp2 gives 0, not NaN.
        const float ba = mxa == NEG_INF ? 0.f : mxa, bb = mxb == NEG_INF ? 0.f : mxb;
        const float ca = exp2f(ma - ba), cb = exp2f(mb - bb);
        ma = mxa;
        mb = mxb;
        la *= ca;
        lb *= cb;
#pragma unroll
        for (int n = 0; n < NO; ++n) {
            o[n][0] *= ca;
            o[n][1] *= ca;
            o[n][2] *= cb;
            o[n][3] *= cb;
        }
        // P (bf16 A fragments) and O += P V.
#pragma unroll
        for (int kk = 0; kk < FL_BN / 16; ++kk) {
            u32 pa[4];
            {
                float* s0 = s[2 * kk];
                float* s1 = s[2 * kk + 1];
                s0[0] = exp2f(s0[0] - ba);
                s0[1] = exp2f(s0[1] - ba);
                s0[2] = exp2f(s0[2] - bb);
                s0[3] = exp2f(s0[3] - bb);
                s1[0] = exp2f(s1[0] - ba);
                s1[1] = exp2f(s1[1] - ba);
                s1[2] = exp2f(s1[2] - bb);
                s1[3] = exp2f(s1[3] - bb);
                la += s0[0] + s0[1] + s1[0] + s1[1];
                lb += s0[2] + s0[3] + s1[2] + s1[3];
                pa[0] = fl_pack2(s0[0], s0[1]);
                pa[1] = fl_pack2(s0[2], s0[3]);
                pa[2] = fl_pack2(s1[0], s1[1]);
                pa[3] = fl_pack2(s1[2], s1[3]);
            }
#pragma unroll
            for (int n = 0; n < NO; n += 2) {
                // Matrices: (keys 0-7, ch n*8..), (keys 8-15, ch n*8..),
                // (keys 0-7, ch (n+1)*8..), (keys 8-15, ch (n+1)*8..).
                const int mi = lane >> 3, rr = lane & 7;
                const bf16* p = vs + (kk * 16 + (mi & 1) * 8 + rr) * RS + (n + (mi >> 1)) * 8;
                u32 bv[4];
                fl_ldsm4t(bv, p);
                fl_mma(o[n], pa, bv[0], bv[1]);
                fl_mma(o[n + 1], pa, bv[2], bv[3]);
            }
        }
        __syncthreads();  // the buffer is restaged two tiles on
    }

    la += __shfl_xor_sync(FULL_MASK, la, 1);
    la += __shfl_xor_sync(FULL_MASK, la, 2);
    lb += __shfl_xor_sync(FULL_MASK, lb, 1);
    lb += __shfl_xor_sync(FULL_MASK, lb, 2);
    const float ia = la > 0.f ? 1.f / la : 0.f, ib = lb > 0.f ? 1.f / lb : 0.f;
    if (ra < rows) {
        float* pa = out + ((long long)ra * heads + h) * D + 2 * tig;
#pragma unroll
        for (int n = 0; n < NO; ++n) *(float2*)(pa + n * 8) = make_float2(o[n][0] * ia, o[n][1] * ia);
        if (lse && tig == 0) lse[(long long)ra * heads + h] = la > 0.f ? ma + log2f(la) : NEG_INF;
    }
    if (rb < rows) {
        float* pb = out + ((long long)rb * heads + h) * D + 2 * tig;
#pragma unroll
        for (int n = 0; n < NO; ++n) *(float2*)(pb + n * 8) = make_float2(o[n][2] * ib, o[n][3] * ib);
        if (lse && tig == 0) lse[(long long)rb * heads + h] = lb > 0.f ? mb + log2f(lb) : NEG_INF;
    }
#endif
}

// fl_smem_bytes is the dynamic shared memory of flash_prefill<D, *>.
#define FL_SMEM(D) (4 * FL_BN * ((D) + 8) * 2 + 2 * FL_BN * 4)

#define FLASH_KERNEL(D, NW)                                                                                    \
    extern "C" __global__ void __launch_bounds__(32 * NW) flash_prefill_d##D##_w##NW(                          \
        float* out, const float* q, const u64* ptrs, const int* ints, int heads, int kvHeads, float scaleLog2, \
        int rowOff, int rows, int kvt, int sorted, float* lse) {                                               \
        flash_prefill<D, NW>(out, q, ptrs, ints, heads, kvHeads, scaleLog2, rowOff, rows, kvt, sorted, lse);   \
    }

FLASH_KERNEL(64, 4)
FLASH_KERNEL(128, 4)
FLASH_KERNEL(64, 8)
FLASH_KERNEL(128, 8)
