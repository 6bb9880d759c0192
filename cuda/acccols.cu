// Accumulated probabilities of a prompt chunk on the tensor cores: the sums
// (AttnArgs.Acc) of a call whose every row adds, H2O's prompt under the
// dense protocol. The chunk's outputs come from the tensor-core prefill
// (prefill.cu, prefill_wg.cu, prefill_tma.cu), which also writes each (row,
// head)'s lse: log2 of the sum of 2^(q.k * scaleLog2) over the keys the row
// sees. A row's probability of a key is then 2^(q.k * scaleLog2 - lse), and
// acc_cols adds it up by key, over the rows: the split-KV path kept every
// row's raw scores for that (rows x heads x tokens floats, in blocks of rows
// past 4 GiB) and summed them on CUDA cores.
//
// Block (key tile blockIdx.x of BN = 16*MT*NW tokens from the KV head's
// SD_LO, KV head blockIdx.y), NW warps of 16*MT keys each. The keys are
// staged in shared memory (rounded to bf16 where the pages are float32, as
// the prefill rounds them) and each warp keeps its keys as the A operand
// (MT m-tiles) of every k-step in registers; the room then takes the
// queries. The block
// walks the group's query heads and, for each, the chunk's rows in tiles of
// BM (queries in bf16, be_narrow's copy, brought two tiles deep by
// cp.async, with the rows' positions and lse). Per tile a warp computes S^T
// = K Q^T (mma.sync m16n8k16: 16 keys x 8 rows a product, bf16 in, float32
// accumulate: the prefill's scores), masks by position (causal and the
// model's sliding window, as the prefill does) and adds 2^(s * scaleLog2 -
// lse) into each key's sum in registers; at a head's end the four lanes
// that hold a key add theirs. With rows whose positions ascend (ascRows) a
// block reads only the rows that may see its keys; a warp skips a tile whose
// rows see none of its keys.
//
// acc [slices, astride]: with grp (AccGroup) slice g takes the group's sums
// added in head order in float32 (what the host and attn_rt_acc add),
// written over what it held; else slice h has head h's sums added to it.

// Variants (the runtime's KVBENCH_ACC_COLS_MT): MT m-tiles of 16 keys a
// warp (each query fragment read from shared memory feeds MT products, and
// each row's position and lse 2*MT keys), NW warps, BM rows a tile.
template <int D, int MT, int NW, int BM>
__device__ __forceinline__ void acc_cols(float* __restrict__ acc, int astride, const bf16* __restrict__ qb,
                                         const float* __restrict__ lse, const u64* __restrict__ ptrs,
                                         const int* __restrict__ ints, int heads, int kvHeads, float scaleLog2,
                                         int rowOff, int rows, int kvt, int ascRows, int psShift, int window, int grp) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int NT = 32 * NW, WK = 16 * MT, BN = WK * NW, RS = D + 8;  // RS: padded shared row, bf16
    constexpr int KS = D / 16;                                           // k-steps of S^T = K Q^T
    constexpr int NJ = BM / 8;                                           // 8-row tiles of S^T
    constexpr int CH = D / 8;                                            // 16-byte pieces of a bf16 row
    static_assert(BN * RS >= 2 * BM * RS, "the queries' two tiles fit the keys' room");
    static_assert(BM % 32 == 0 && NJ % 2 == 0 && BM <= NT, "a tile's rows: whole lanes' worth, pairs of 8-row tiles");
    extern __shared__ __align__(16) unsigned char ac_smem[];
    bf16* Ks = (bf16*)ac_smem;                  // [BN][RS], then the queries' tiles [2][BM][RS]
    bf16* Qs = Ks;
    int* rq = (int*)(ac_smem + BN * RS * 2);    // [2][BM] the tiles' row positions (-1: no row)
    float* rl = (float*)(rq + 2 * BM);          // [2][BM] their lse
    __shared__ int wk[NW][2];                   // each warp's smallest and largest key position
    __shared__ int rspan[2];                    // the rows the block reads: [rspan[0], rspan[1])

    const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
    const int mi = lane >> 3, rr = lane & 7;  // ldmatrix: this lane's matrix and row
    const int g = blockIdx.y, G = heads / kvHeads;
    const int* sd = ints + g * SD_WORDS;
    const int lo = sd[SD_LO], hi = sd[SD_HI], psMask = (1 << psShift) - 1, kOff = sd[SD_K];
    const int* pos = sd[SD_POS] >= 0 ? ints + sd[SD_POS] : 0;  // none: every token is visible to every row
    const int t0 = lo + blockIdx.x * BN;
    if (t0 >= hi) return;  // past this KV head's tokens (the grid spans the longest)

    // The keys, rounded to bf16 (zeros past hi).
    for (int i = tid; i < BN * CH; i += NT) {
        const int r = i / CH, c = (i % CH) * 8, t = t0 + r;
        const bool ok = t < hi;
        const int tt = ok ? t : t0;
        const char* kr = (const char*)ptrs[kOff + (tt >> psShift)];
        if (kvt == KV_BF16) {
            fl_cp16(Ks + r * RS + c, kr + ((long long)(tt & psMask) * D + c) * 2, ok);
        } else {
            uint4 kk = make_uint4(0u, 0u, 0u, 0u);
            if (ok) {
                const long long o = ((long long)(tt & psMask) * D + c) * 4;
                const float4 k0 = *(const float4*)(kr + o), k1 = *(const float4*)(kr + o + 16);
                kk = fl_pack8(k0, k1);
            }
            *(uint4*)(Ks + r * RS + c) = kk;
        }
    }
    fl_commit();
    fl_wait<0>();
    __syncthreads();

    // This warp's keys as the A operand (m-tile t: keys w*WK + 16t ..); this
    // lane's keys (rows gid and gid + 8 of each m-tile) and their positions.
    u32 kf[MT][KS][4];
    int ka[MT], kpa[MT], kpb[MT];
    bool oka[MT], okb[MT];
    int kmin = 0x7fffffff, kmax = -1;
#pragma unroll
    for (int t = 0; t < MT; ++t) {
#pragma unroll
        for (int k = 0; k < KS; ++k)
            fl_ldsm4(kf[t][k], Ks + (w * WK + 16 * t + (mi & 1) * 8 + rr) * RS + k * 16 + (mi >> 1) * 8);
        ka[t] = t0 + w * WK + 16 * t + gid;
        oka[t] = ka[t] < hi, okb[t] = ka[t] + 8 < hi;
        kpa[t] = oka[t] && pos ? pos[ka[t]] : 0, kpb[t] = okb[t] && pos ? pos[ka[t] + 8] : 0;
        if (oka[t]) kmin = min(kmin, kpa[t]), kmax = max(kmax, kpa[t]);
        if (okb[t]) kmin = min(kmin, kpb[t]), kmax = max(kmax, kpb[t]);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        kmin = min(kmin, __shfl_xor_sync(FULL_MASK, kmin, o));
        kmax = max(kmax, __shfl_xor_sync(FULL_MASK, kmax, o));
    }
    if (lane == 0) wk[w][0] = kmin, wk[w][1] = kmax;
    __syncthreads();  // also: every warp's keys are in registers, the room is the queries'
    if (tid == 0) {
        int r0 = 0, r1 = rows;
        if (pos && ascRows) {
            int bmin = wk[0][0], bmax = wk[0][1];
            for (int i = 1; i < NW; ++i) bmin = min(bmin, wk[i][0]), bmax = max(bmax, wk[i][1]);
            int a = 0, b = rows;  // the first row at or past the smallest key
            while (a < b) {
                const int mid = (a + b) >> 1;
                if (ints[rowOff + 2 * mid] < bmin) a = mid + 1; else b = mid;
            }
            r0 = a;
            if (window > 0) {  // the first row whose window hides the largest key
                b = rows;
                while (a < b) {
                    const int mid = (a + b) >> 1;
                    if (be_win_lo(ints[rowOff + 2 * mid], window) < bmax) a = mid + 1; else b = mid;
                }
                r1 = a;
            }
        }
        rspan[0] = r0, rspan[1] = r1;
    }
    __syncthreads();
    const int r0 = rspan[0], r1 = rspan[1];
    const int nrt = r1 > r0 ? (r1 - r0 + BM - 1) / BM : 0, items = G * nrt;

    // Bring item it (query head g*G + it/nrt, row tile it%nrt) into buffer it&1.
    auto load = [&](int it) {
        const int h = g * G + it / nrt, rs = r0 + (it % nrt) * BM, b = it & 1;
        bf16* qs = Qs + b * BM * RS;
        for (int i = tid; i < BM * CH; i += NT) {
            const int r = i / CH, c = (i % CH) * 8, row = rs + r;
            const bool ok = row < r1;
            fl_cp16(qs + r * RS + c, qb + ((long long)(ok ? row : rs) * heads + h) * D + c, ok);
        }
        if (tid < BM) {
            const int row = rs + tid;
            const bool ok = row < r1;
            rq[b * BM + tid] = ok ? ints[rowOff + 2 * row] : -1;
            rl[b * BM + tid] = ok ? lse[(long long)row * heads + h] : 0.f;
        }
        fl_commit();
    };

    float ca[MT], cb[MT];  // this lane's share of the head's sums of its keys
    float ta[MT], tb[MT];  // the group's sums so far (grp)
#pragma unroll
    for (int t = 0; t < MT; ++t) ca[t] = cb[t] = ta[t] = tb[t] = 0.f;
    if (items > 0) load(0);
    for (int it = 0; it < items; ++it) {
        if (it + 1 < items) {
            load(it + 1);
            fl_wait<1>();
        } else {
            fl_wait<0>();
        }
        __syncthreads();
        const int b = it & 1;
        const bf16* qs = Qs + b * BM * RS;
        const int* qp = rq + b * BM;
        const float* ql = rl + b * BM;
        bool any = true;
        if (pos) {  // some row of the tile sees some key of the warp
            bool sees = false;
#pragma unroll
            for (int r = lane; r < BM; r += 32) {
                const int p = qp[r];
                sees = sees || (p >= 0 && p >= kmin && be_win_lo(p, window) < kmax);
            }
            any = __any_sync(FULL_MASK, sees);
        }
        if (any) {
            float s[MT][NJ][4];
#pragma unroll
            for (int t = 0; t < MT; ++t)
#pragma unroll
                for (int j = 0; j < NJ; ++j) s[t][j][0] = s[t][j][1] = s[t][j][2] = s[t][j][3] = 0.f;
#pragma unroll
            for (int k = 0; k < KS; ++k) {
#pragma unroll
                for (int j = 0; j < NJ; j += 2) {
                    // Matrices: (rows 8j.., channels 0-7), (8j.., 8-15), (8(j+1).., 0-7), (8(j+1).., 8-15).
                    u32 bq[4];
                    fl_ldsm4(bq, qs + ((j + (mi >> 1)) * 8 + rr) * RS + k * 16 + (mi & 1) * 8);
#pragma unroll
                    for (int t = 0; t < MT; ++t) {
                        fl_mma(s[t][j], kf[t][k], bq[0], bq[1]);
                        fl_mma(s[t][j + 1], kf[t][k], bq[2], bq[3]);
                    }
                }
            }
#pragma unroll
            for (int j = 0; j < NJ; ++j) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int row = j * 8 + 2 * tig + e, p = qp[row];
                    const float l = ql[row];
                    const int wl = be_win_lo(p, window);
#pragma unroll
                    for (int t = 0; t < MT; ++t) {
                        const bool va = oka[t] && p >= 0 && (!pos || (kpa[t] <= p && kpa[t] > wl));
                        const bool vb = okb[t] && p >= 0 && (!pos || (kpb[t] <= p && kpb[t] > wl));
                        ca[t] += va ? fl_exp2(fmaf(s[t][j][e], scaleLog2, -l)) : 0.f;
                        cb[t] += vb ? fl_exp2(fmaf(s[t][j][2 + e], scaleLog2, -l)) : 0.f;
                    }
                }
            }
        }
        if (it % nrt == nrt - 1) {  // the head's last tile: its sums
            const int k = it / nrt;
#pragma unroll
            for (int t = 0; t < MT; ++t) {
                const float sa = fl_quad_sum(ca[t]), sb = fl_quad_sum(cb[t]);
                ca[t] = cb[t] = 0.f;
                if (grp) {
                    ta[t] = k == 0 ? sa : __fadd_rn(ta[t], sa);
                    tb[t] = k == 0 ? sb : __fadd_rn(tb[t], sb);
                } else if (tig == 0) {
                    float* out = acc + (size_t)(g * G + k) * astride;
                    if (oka[t]) out[ka[t]] += sa;
                    if (okb[t]) out[ka[t] + 8] += sb;
                }
            }
        }
        __syncthreads();  // buffer b is brought again at it + 2
    }
    if (grp && tig == 0) {  // every slice's tokens [lo, hi) written (zeros where no row sees them)
        float* out = acc + (size_t)g * astride;
#pragma unroll
        for (int t = 0; t < MT; ++t) {
            if (oka[t]) out[ka[t]] = ta[t];
            if (okb[t]) out[ka[t] + 8] = tb[t];
        }
    }
#endif
}

// AC_SMEM is the dynamic shared memory of acc_cols<D, MT, NW, BM>.
#define AC_SMEM(D, MT, NW, BM) (16 * (MT) * (NW) * ((D) + 8) * 2 + 2 * (BM) * 8)

#define ACC_COLS_KERNEL(NAME, D, MT, NW, BM)                                                                       \
    extern "C" __global__ void __launch_bounds__(32 * NW) NAME(                                                    \
        float* acc, int astride, const bf16* qb, const float* lse, const u64* ptrs, const int* ints, int heads,    \
        int kvHeads, float scaleLog2, int rowOff, int rows, int kvt, int ascRows, int psShift, int window, int grp) { \
        acc_cols<D, MT, NW, BM>(acc, astride, qb, lse, ptrs, ints, heads, kvHeads, scaleLog2, rowOff, rows, kvt, \
                                ascRows, psShift, window, grp);                                                    \
    }

// acc_cols_d{D}: 8 warps of 16 keys, rows in tiles of 64; acc_cols_d{D}_m2:
// 4 warps of 32 keys, rows in tiles of 32 (a query fragment feeds 4 products).
#if KVB_IN(0)
ACC_COLS_KERNEL(acc_cols_d64, 64, 1, 8, 64)
ACC_COLS_KERNEL(acc_cols_d128, 128, 1, 8, 64)
ACC_COLS_KERNEL(acc_cols_d64_m2, 64, 2, 4, 32)
ACC_COLS_KERNEL(acc_cols_d128_m2, 128, 2, 4, 32)
#endif
