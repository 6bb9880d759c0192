// The runtime's lean decode attention on the tensor cores:
// attn_rt_d{D}_g{G}_bf16_tc, G = 1, 2, 4, 8 virtual heads per split row.
// Same launch, parameters, partials and merge as attn_rt (attention_rt.cu);
// it serves only lean calls (RH_LEAN: no selection, no positions, every
// token visible) over bf16 pages of a power of two tokens, without
// re-positioned keys: the host (splitkv.go) checks that; raw scores and
// the items' maxima and sums (H2O's and TOVA's calls) are written as
// attn_rt writes them.
//
// Why: attn_rt spends ~125 warp instructions per token and KV head (the
// unpacks, G*8 FMAs and a butterfly per 16 bytes of K, the same for V), so
// at long contexts it is issue-bound below the memory's speed. Here a warp
// issues a few instructions per 16-byte piece: the copies (cp.async), one
// ldmatrix per 16 channels of 16 tokens, and mma.sync m16n8k16 (bf16 in,
// float32 accumulate).
//
// Each warp takes the chunk's tiles of 16 tokens in turn (tile w, w+NW,
// ...), TC_ST tiles of its own deep: a tile's K and V rows are copied to
// the warp's stage by cp.async (16 bytes a copy) while it computes on the
// tile TC_ST-1 before. A stage holds the rows as 128-byte halves with the
// 16-byte chunks XOR-swizzled by row (tc_at): every 128-byte line of the
// cache lands in one aligned 128-byte span of shared memory, and
// ldmatrix's eight row addresses fall in eight bank groups. How the layout
// moved the H200 (32/8 heads of 128, 128K tokens, ncu of one launch): rows
// padded by 16 bytes (a line of an odd row straddles two spans) had the L2
// serve 1.5x the cache's sectors in 2.6x the requests, DRAM at 76 %, 142 us;
// this layout 1.0x the sectors in 4-sector requests (as cuDNN's kernel),
// DRAM at 85 %, 132 us (SDPA 133). Swizzling 32-byte units instead (2-way
// ldmatrix conflicts) read as little and ran 1 % slower. One pass, online softmax
// per warp (FlashAttention-2's):
//
//   S^T = Q K^T: A = the queries (16 rows, the virtual heads 0..G-1, the
//   rest zero; float32 q pre-scaled by scale*log2 e and split into bf16
//   high and low halves, two products), B = K^T from the K stage by
//   ldmatrix (a row of K is a column of B). The accumulator gives lane
//   (gid, tig) head gid, tokens 2tig, 2tig+1 (first 8 tokens) and 8+2tig,
//   9+2tig (second): exactly the B operand of the next product.
//
//   O^T += V^T P^T: A = V^T from the V stage by ldmatrix.trans, B = P^T
//   (the probabilities split into bf16 high and low halves, two products,
//   so the output keeps float32 accuracy).
//
//   RH_NOLO (KVBENCH_ATTN_TC_LO=off) drops both low halves' products: q
//   and p in bf16 alone, as SDPA takes them, half the products a tile; a
//   setting to time what float32 accuracy costs, not a default. The accumulator gives lane
//   (gid, tig) channels 16j + gid and 16j + gid + 8, heads 2tig, 2tig+1.
//
// At the end the warps' maxima, sums and outputs meet in shared memory,
// rescaled to the block's maximum (each lane forms and stores only its own
// two heads'), and attn_finish writes the partial (and runs the fused
// merge) as attn_rt's blocks do; or, in the _tcc kernels,
// the row's blocks, one cluster, merge their partials through distributed
// shared memory (tc_cluster_merge).

#ifndef TC_ST
#define TC_ST 2  // tiles in a warp's stages: TC_ST-1 in flight while it computes on one ($KVBENCH_ATTN_TC_ST)
#endif


#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
// tc_mma accumulates d += A B for one m16n8k16 product (bf16 in, float32
// accumulate). Not volatile: a product only reads and writes registers, so
// the compiler may order the independent ones as their inputs arrive.
__device__ __forceinline__ void tc_mma(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// tc_pack is two float32 values as bf16 (lo in the lower half), rounded.
__device__ __forceinline__ u32 tc_pack(float lo, float hi) { return (u32)bf16_from_f32(lo) | ((u32)bf16_from_f32(hi) << 16); }

// tc_split packs x0, x1 as bf16 high halves (h) and what they leave (l).
__device__ __forceinline__ void tc_split(float x0, float x1, u32& h, u32& l) {
    const bf16 a = bf16_from_f32(x0), b = bf16_from_f32(x1);
    h = (u32)a | ((u32)b << 16);
    l = tc_pack(x0 - f32_from_bf16(a), x1 - f32_from_bf16(b));
}
#endif

// TC_STAGE_BYTES is the dynamic shared memory of a block before the page
// pointers: NW warps' TC_ST stages of a 16-token tile's K and V rows
// (tcSmem in splitkv.go: the same).
#define TC_STAGE_BYTES(D) (ATTN_NT / 32 * TC_ST * 2 * 16 * (D) * 2)

// tc_at is the byte offset of the 16-byte piece pc of row i (0-15) in a
// tile's K or V in a stage: the rows as 128-byte halves, [D/64 halves][16
// rows][128 bytes], the piece's chunk c = pc % 8 at c ^ (i % 8) of its half
// row: a 128-byte line of a row lands in one aligned 128-byte span of
// shared memory, and ldmatrix's eight rows of a piece fall in eight
// different 16-byte bank groups.
__device__ __forceinline__ int tc_at(int i, int pc) { return (pc >> 3) * (16 * 128) + i * 128 + (((pc & 7) ^ (i & 7)) << 4); }

// tc_cluster_sync is a barrier of every thread of the block's cluster:
// what each wrote to its shared memory before it is seen by all after.
__device__ __forceinline__ void tc_cluster_sync() {
#if KVB_WG
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}

// tc_cluster_ld reads the float at p in the shared memory of the block of
// rank rank in this block's cluster.
__device__ __forceinline__ float tc_cluster_ld(const float* p, int rank) {
    float v = 0.f;
#if KVB_WG
    u32 a;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(a) : "r"((u32)__cvta_generic_to_shared(p)), "r"(rank));
    asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(a) : "memory");
#endif
    return v;
}

// tc_cluster_merge ends a block of a launch whose row's chunks are one
// cluster (CL: the cluster spans grid x, rank = chunk; sm_90a): the warps'
// outputs (red [NW][G][PD], rescaled to the block's maxima; head g's D
// channels at g*PD) are summed into the block's partial (after them, [G][D]),
// the cluster meets, and each block merges its share of the row's G*D outputs
// from every block's partial and maxima and sums (cML [G][max, sum], written
// before the barrier before this), read through distributed shared memory,
// writing head g's output at item[g]'s row of out. No partials in global
// memory, no counters, no combine launch. A second barrier keeps every
// block's shared memory until all have read it. (sm_80+, as its caller:
// fl_exp2 is prefill.cu's.)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
template <int D, int G, int PD>
__device__ __forceinline__ void tc_cluster_merge(float* red, const float* cML, const int* item, float* __restrict__ out) {
    constexpr int NT = ATTN_NT, NW = NT / 32, N = G * D;
    const int tid = threadIdx.x;
    float* part = red + NW * G * PD;
    for (int idx = tid; idx < N; idx += NT) {
        const int at = (idx / D) * PD + idx % D;
        float x = 0.f;
#pragma unroll
        for (int k = 0; k < NW; ++k) x += red[k * G * PD + at];
        part[idx] = x;
    }
    tc_cluster_sync();
    const int n = gridDim.x, rank = blockIdx.x, per = (N + n - 1) / n;
    for (int idx = rank * per + tid; idx < min(N, (rank + 1) * per); idx += NT) {
        const int g = idx / D;
        float M = NEG_INF;
        for (int k = 0; k < n; ++k) M = fmaxf(M, tc_cluster_ld(&cML[2 * g], k));
        float L = 0.f, acc = 0.f;
        for (int k = 0; k < n; ++k) {
            const float mk = tc_cluster_ld(&cML[2 * g], k);
            const float wk = mk == NEG_INF ? 0.f : fl_exp2(mk - M);
            L += wk * tc_cluster_ld(&cML[2 * g + 1], k);
            acc += wk * tc_cluster_ld(&part[idx], k);
        }
        if (item[g] >= 0) out[(size_t)item[g] * D + (idx - g * D)] = L > 0.f ? acc / L : 0.f;
    }
    tc_cluster_sync();
}
#endif

template <int D, int G, bool CL>
__device__ __forceinline__ void attn_tc_row(const float* __restrict__ q, const u64* __restrict__ ptrs, const int* __restrict__ ints,
                                            int hdr, int chunk, int pgw, float scaleLog2, float* __restrict__ partO,
                                            float* __restrict__ partML, int* __restrict__ counters, float* __restrict__ out,
                                            float* __restrict__ raw, float* __restrict__ ml, int r, int rg, int nsg) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int NT = ATTN_NT, NW = NT / 32;
    constexpr int RB = D * 2;           // bytes of a K or V row
    constexpr int PC = RB / 16;         // its 16-byte pieces
    constexpr int TB = 16 * RB;         // bytes of a tile's K (or V) in a stage
    constexpr int KS = D / 16;          // k steps of S^T, channel groups of O^T
    constexpr int CP = 16 * PC / 32;    // copies a lane issues per tile, of K and of V each
    static_assert(G == 1 || G == 2 || G == 4 || G == 8, "1, 2, 4 or 8 virtual heads");
    // smem: the stages [NW][TC_ST][K, V][tc_at's layout], then the range's key
    // and value page pointers [pgw] each. After the loop: the warps'
    // outputs [NW][G][D + 4] from offset 0 (attn_finish, tc_cluster_merge).
    extern __shared__ __align__(128) unsigned char tsm[];
    __shared__ int sItem[G];
    __shared__ float wM[NW][8], wL[NW][8];
    __shared__ __align__(16) float cML[G * 2];  // the block's maxima and sums for the cluster's merge (CL)

    const int* H = ints + hdr;
    const int c = blockIdx.x, tid = threadIdx.x, w = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
    // The source words of split row r's KV head are asked for beside the
    // header's, for KV head r: that head is r's in a call of one query row
    // whose groups are whole (a decode step's), and the words are read again
    // only where the header names another. One round of loads comes before
    // the page pointers instead of two (header, then the head's words).
    const int gs = r * SD_WORDS < hdr ? r : 0;
    const int* sg = ints + gs * SD_WORDS;
    int sLo = sg[SD_LO], sHi = sg[SD_HI], sPs = sg[SD_PS], sK = sg[SD_K], sV = sg[SD_V];
    const int* sdh = sg;  // the KV head's descriptor (SD_KO, SD_VO, SD_PST: sd_page)
    const int nsrows = H[RH_SROWS];
    const int rawStride = H[RH_STRIDE];
    const bool single = nsg < 0;
    const int kvh = rt_kvh(H, r);
    if (nsg < 0) {  // a single call's launch: blocks past its split rows return (every load above is in bounds)
        if (r >= nsrows) return;
        nsg = nsrows;
    }
    if (kvh != gs) {
        const int* sd = ints + kvh * SD_WORDS;
        sLo = sd[SD_LO], sHi = sd[SD_HI], sPs = sd[SD_PS], sK = sd[SD_K], sV = sd[SD_V];
        sdh = sd;
    }
    // Pages one stride apart (SD_PST): a page's address is arithmetic, not
    // a load of its pointer before its tiles' loads.
    const bool arith = sdh[SD_PST] != 0;
    const int lo = sLo, total = sHi - lo;
    const int c0 = c * chunk, len = max(0, min(chunk, total - c0));
    const int ps = sPs, psh = __ffs(ps) - 1;  // a power of two (the host checks)
    const u64* kp = ptrs + sK;
    const u64* vp = ptrs + sV;
    u64* spk = reinterpret_cast<u64*>(tsm + TC_STAGE_BYTES(D));
    u64* spv = spk + pgw;
    if (tid < G) sItem[tid] = rt_item(H, r, tid);
    u64* tr = rt_trace_block(H, rg, c);  // a traced launch: this block's words (attention_rt.cu, TR_WORDS)
    const u64 tStart = tr != nullptr ? gtime() : 0;
    // The call's ints are ready. The page tables, q and the keys may be
    // written by the kernels just before this one; with RH_EARLY the host
    // says that no kernel still running writes the page pointers, nor the
    // keys and values of any token but each KV head's last
    // (Backend.earlyReads): the pointers and the tiles before that token
    // are asked for before the wait, while the kernel ahead finishes.
    const bool early = H[RH_EARLY] != 0;
    const bool lows = H[RH_NOLO] == 0;  // the low halves' products (float32 accuracy), unless asked off
    if (!early) pdl_wait();
    // A tile whose 16 tokens lie in one page (pages of 16 tokens or more,
    // the range's first token at a multiple of 16) is 16 consecutive rows:
    // one page pointer, copies at fixed offsets.
    const bool whole = psh >= 4 && ((lo + c0) & 15) == 0;
    // Every tile whole (the range's length a multiple of 16 too): a warp
    // reads the page pointers of its first stages' tiles itself as it issues
    // them (one word for all its lanes), with no barrier before them; the
    // later tiles' come from shared memory. (Every tile's pointer read by
    // its warp was a dependent load in every issue: 2 µs slower for heads
    // of 64 at 32K on the H200, 2026-12-06.)
    const bool fast = whole && (len & 15) == 0;
    int pg0 = 0;
    if (len > 0) {
        const int t0 = lo + c0, t1 = t0 + len - 1;
        pg0 = t0 >> psh;
        const int npg = (t1 >> psh) - pg0 + 1;
        for (int j = tid; j < npg; j += NT) {
            spk[j] = arith ? sd_page(H, sdh, false, pg0 + j) : kp[pg0 + j];
            spv[j] = arith ? sd_page(H, sdh, true, pg0 + j) : vp[pg0 + j];
        }
    }
    if (!fast) __syncthreads();
    tr_staged(tr, tStart, len);

    unsigned char* stages = tsm + w * (TC_ST * 2 * TB);
    // Where this lane's copies go in a stage (tc_at: piece pc of row i).
    int at[CP];
#pragma unroll
    for (int k = 0; k < CP; ++k) {
        const int idx = lane + 32 * k, row = idx / PC, pc = idx % PC;
        at[k] = tc_at(row, pc);
    }
    // issue copies tile ti's K and V rows into stage s; tokens past the
    // chunk are zero (nothing read).
    auto issue = [&](int ti, int s, bool direct) {
        unsigned char* dk = stages + s * (2 * TB);
        const int tb = ti * 16;
        if (whole && tb + 16 <= len) {
            const int t0 = lo + c0 + tb, pj = (t0 >> psh) - pg0;
            const size_t off = (size_t)(t0 & (ps - 1)) * RB;
            const u64 kpg = !direct ? spk[pj] : arith ? sd_page(H, sdh, false, pg0 + pj) : __ldg(kp + pg0 + pj);
            const u64 vpg = !direct ? spv[pj] : arith ? sd_page(H, sdh, true, pg0 + pj) : __ldg(vp + pg0 + pj);
            const char* ks = reinterpret_cast<const char*>(kpg) + off;
            const char* vs = reinterpret_cast<const char*>(vpg) + off;
#pragma unroll
            for (int k = 0; k < CP; ++k) {
                fl_cp16(dk + at[k], ks + (lane + 32 * k) * 16, true);
                fl_cp16(dk + TB + at[k], vs + (lane + 32 * k) * 16, true);
            }
            return;
        }
#pragma unroll
        for (int k = 0; k < CP; ++k) {
            const int idx = lane + 32 * k, row = idx / PC, pc = idx % PC;
            const int i = tb + row;
            const bool ok = i < len;
            const int t = lo + c0 + (ok ? i : 0);
            const int pj = (t >> psh) - pg0;
            const size_t off = (size_t)(t & (ps - 1)) * RB + pc * 16;
            fl_cp16(dk + at[k], reinterpret_cast<const char*>(spk[pj]) + off, ok);
            fl_cp16(dk + TB + at[k], reinterpret_cast<const char*>(spv[pj]) + off, ok);
        }
    };
    const int ntiles = (len + 15) / 16;
    const int mine = ntiles > w ? (ntiles - w + NW - 1) / NW : 0;  // this warp's tiles
    // The first TC_ST-1 stages, one commit group each, in order: before the
    // wait those whose tile ends before the KV head's last token (tile ti's
    // last token c0 + min(16ti + 16, len) - 1 of the range), after it the rest.
    int pre = 0;
    if (early) {
        for (; pre < TC_ST - 1 && pre < mine; ++pre) {
            const int ti = w + pre * NW;
            if (c0 + min(16 * ti + 16, len) >= total) break;
            issue(ti, pre, fast);
            fl_commit();
        }
        pdl_wait();
    }
    if (fast) {  // the first stages, then the barrier the pointers (and sItem) wait for otherwise
        for (int s = pre; s < TC_ST - 1; ++s) {
            if (s < mine) issue(w + s * NW, s, true);
            fl_commit();
        }
        pre = TC_ST - 1;
        __syncthreads();
    }

    // The queries as A fragments: row gid (virtual head gid, zero past G),
    // channels 16j + 2tig, +1 (qa[j][0]) and 16j + 8 + 2tig, +1 (qa[j][1]);
    // rows gid + 8 are zero.
    u32 qh[KS][2], ql[KS][2];
    {
        const int it = gid < G ? sItem[gid] : -1;
        const float* qr = q + (size_t)max(it, 0) * D + 2 * tig;
#pragma unroll
        for (int j = 0; j < KS; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                float2 v = make_float2(0.f, 0.f);
                if (it >= 0) v = *reinterpret_cast<const float2*>(qr + 16 * j + 8 * e);
                tc_split(v.x * scaleLog2, v.y * scaleLog2, qh[j][e], ql[j][e]);
            }
    }

    // ldmatrix's addresses: lane's matrix mi = lane / 8 is rows (mi / 2)*8
    // .. +7 of 8 channels 8*(mi % 2) past the step's first; its row rr.
    const int mrow = ((lane >> 3) >> 1) * 8 + (lane & 7), mhalf = (lane >> 3) & 1;

    for (int s = pre; s < TC_ST - 1; ++s) {
        if (s < mine) issue(w + s * NW, s, false);
        fl_commit();
    }
    float o[KS][4];
#pragma unroll
    for (int j = 0; j < KS; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float m = NEG_INF, lsum = 0.f;  // head gid's running max and this lane's share of its sum
    for (int k = 0; k < mine; ++k) {
        __syncwarp();  // the stage written next was read by every lane (iteration k-1)
        if (k + TC_ST - 1 < mine) issue(w + (k + TC_ST - 1) * NW, (k + TC_ST - 1) % TC_ST, false);
        fl_commit();
        fl_wait<TC_ST - 1>();
        __syncwarp();  // every lane's copies of tile k are in
        if (tr != nullptr && k == 0 && tid == 0) tr[2] = gtime();
        const unsigned char* sk = stages + (k % TC_ST) * (2 * TB);
        const unsigned char* sv = sk + TB;
        const int ti = w + k * NW;

        // The tile's K fragments, all asked for before the first product.
        u32 kb[KS][4];
#pragma unroll
        for (int j = 0; j < KS; ++j) {
            const int pc = 2 * j + mhalf;
            fl_ldsm4(kb[j], sk + tc_at(mrow, pc));
        }
        // S^T for tokens 0-7 (n = 0) and 8-15 (n = 1) of the tile, with
        // the queries' high and low halves (x = 0, 1) and even and odd k
        // steps in separate sums: eight independent chains of KS/2.
        float sa[2][2][2][4];
#pragma unroll
        for (int a = 0; a < 2; ++a)
#pragma unroll
            for (int x = 0; x < 2; ++x)
#pragma unroll
                for (int n = 0; n < 2; ++n) sa[a][x][n][0] = sa[a][x][n][1] = sa[a][x][n][2] = sa[a][x][n][3] = 0.f;
#pragma unroll
        for (int j = 0; j < KS; ++j) {
            const u32 ah[4] = {qh[j][0], 0u, qh[j][1], 0u}, al[4] = {ql[j][0], 0u, ql[j][1], 0u};
#pragma unroll
            for (int n = 0; n < 2; ++n) {
                tc_mma(sa[j & 1][0][n], ah, kb[j][2 * n], kb[j][2 * n + 1]);
                if (lows) tc_mma(sa[j & 1][1][n], al, kb[j][2 * n], kb[j][2 * n + 1]);
            }
        }
        // The V fragments (A = V^T: matrices (tokens 0-7, ch 16j), (0-7,
        // 16j+8), (8-15, 16j), (8-15, 16j+8) transposed), asked for before
        // the softmax so that it hides their latency.
        u32 va[KS][4];
#pragma unroll
        for (int j = 0; j < KS; ++j) {
            const int pc = 2 * j + mhalf;
            fl_ldsm4t(va[j], sv + tc_at(mrow, pc));
        }
        // Online softmax of head gid over the tile's 16 tokens (the four
        // lanes tig hold them all); tokens past the chunk are masked.
        const int i0 = ti * 16 + 2 * tig;
        float x[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int n = e >> 1, c = e & 1;
            x[e] = (sa[0][0][n][c] + sa[1][0][n][c]) + (sa[0][1][n][c] + sa[1][1][n][c]);
        }
        x[0] = i0 < len ? x[0] : NEG_INF;
        x[1] = i0 + 1 < len ? x[1] : NEG_INF;
        x[2] = i0 + 8 < len ? x[2] : NEG_INF;
        x[3] = i0 + 9 < len ? x[3] : NEG_INF;
        // A call with accumulated probabilities (H2O, TOVA): its base-2
        // scores [item, RH_STRIDE] by token index, as attn_rt writes them.
        if (raw != nullptr && gid < G && sItem[gid] >= 0) {
            float* rr = raw + (size_t)sItem[gid] * rawStride + c0;
            if (i0 < len) rr[i0] = x[0];
            if (i0 + 1 < len) rr[i0 + 1] = x[1];
            if (i0 + 8 < len) rr[i0 + 8] = x[2];
            if (i0 + 9 < len) rr[i0 + 9] = x[3];
        }
        float mx = fmaxf(fmaxf(x[0], x[1]), fmaxf(x[2], x[3]));
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
        const float mn = fmaxf(m, mx);  // finite: a tile's first token is in the chunk
        const float alpha = fl_exp2(m - mn);
        m = mn;
        float p[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) p[e] = fl_exp2(x[e] - mn);
        lsum = lsum * alpha + ((p[0] + p[1]) + (p[2] + p[3]));
        // Rescale the outputs of heads 2tig, 2tig+1 (held by lanes 8tig..)
        // where a head's max moved (mostly in the first tiles).
        if (__any_sync(FULL_MASK, alpha != 1.f)) {
            const float a0 = __shfl_sync(FULL_MASK, alpha, 8 * tig), a1 = __shfl_sync(FULL_MASK, alpha, 8 * tig + 4);
#pragma unroll
            for (int j = 0; j < KS; ++j) {
                o[j][0] *= a0;
                o[j][1] *= a1;
                o[j][2] *= a0;
                o[j][3] *= a1;
            }
        }
        u32 bh0, bl0, bh1, bl1;
        tc_split(p[0], p[1], bh0, bl0);
        tc_split(p[2], p[3], bh1, bl1);
        // O^T += V^T P^T: the high halves' products, then the low halves'
        // (no product waits for the one before it).
#pragma unroll
        for (int j = 0; j < KS; ++j) tc_mma(o[j], va[j], bh0, bh1);
        if (lows) {
#pragma unroll
            for (int j = 0; j < KS; ++j) tc_mma(o[j], va[j], bl0, bl1);
        }
    }
    fl_wait<0>();

    // The warps' maxima and sums (head gid: lanes 4gid..4gid+3), then the
    // block's; each warp's outputs rescaled to the block's maximum.
    lsum += __shfl_xor_sync(FULL_MASK, lsum, 1);
    lsum += __shfl_xor_sync(FULL_MASK, lsum, 2);
    if (tig == 0) {
        wM[w][gid] = m;
        wL[w][gid] = lsum;
    }
    __syncthreads();  // the stages are free: the outputs go there
    if (tr != nullptr && tid == 0) {
        tr[3] = gtime();
        tr[6] = mine;
    }
    // Heads g0 = 2tig and g0 + 1 are this lane's outputs: the block's maxima
    // and sums of those two only, and this warp's scales to the block's
    // maxima. (wM holds 8 heads: those past G are the zero queries', finite
    // and unused.) Each lane taking all G heads (G x NW exp2 and twice as
    // many loads) took 0.48 µs a block for 28/4's 8 heads, against 0.16
    // now (H100, traced).
    const int g0 = 2 * tig;
    float bm[2], bl[2], sc[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
        const int g = g0 + e;
        float x = NEG_INF;
#pragma unroll
        for (int v = 0; v < NW; ++v) x = fmaxf(x, wM[v][g]);
        float y = 0.f;
#pragma unroll
        for (int v = 0; v < NW; ++v) y += wM[v][g] == NEG_INF ? 0.f : wL[v][g] * fl_exp2(wM[v][g] - x);
        bm[e] = x;
        bl[e] = y;
        sc[e] = wM[w][g] == NEG_INF ? 0.f : fl_exp2(wM[w][g] - x);
    }
    if (tr != nullptr && tid == 0) tr[8] = gtime();
    // The outputs to red [NW][G][PD]: a row of D channels padded by 4 floats
    // puts heads g0 of the four tig at banks 8 apart, so a store of the
    // warp's 32 lanes (8 gid x 4 tig) meets no conflict. (Each head in turn,
    // its lanes alone, was G/2 x 2KS stores of 8 lanes a warp.)
    constexpr int PD = D + 4;
    static_assert((NW * G * PD + G * D) * 4 <= TC_STAGE_BYTES(D), "the outputs fit the stages");
    // The polled merge (attn_merge_poll): a single call's launch only (a
    // batched launch, nsg given, merges counted or by the combine).
    const u32 ep = !CL && single && counters != nullptr ? (u32)H[RH_EPOCH] : 0u;
    float* red = reinterpret_cast<float*>(tsm);
    if (g0 < G) {
        float* d0 = red + (w * G + g0) * PD + gid;
#pragma unroll
        for (int j = 0; j < KS; ++j) {
            d0[16 * j] = o[j][0] * sc[0];
            d0[16 * j + 8] = o[j][2] * sc[0];
        }
        if (G > 1) {
            float* d1 = d0 + PD;
#pragma unroll
            for (int j = 0; j < KS; ++j) {
                d1[16 * j] = o[j][1] * sc[1];
                d1[16 * j + 8] = o[j][3] * sc[1];
            }
        }
        // The block's maxima and sums, by warp 0's lanes of gid 0: one
        // store of heads g0 and g0 + 1 each.
        if (w == 0 && gid == 0) {
            if (ep != 0) {  // the polled merge's tagged words (attn_put_ml)
                attn_put_ml<G>(partML, rg, c, gridDim.x, g0, bm[0], bl[0], ep);
                if (G > 1) attn_put_ml<G>(partML, rg, c, gridDim.x, g0 + 1, bm[1], bl[1], ep);
            } else {
                float* bml = CL ? cML + 2 * g0 : attn_ml_at<G>(partML, rg, c, gridDim.x) + 2 * g0;
                if (G > 1)
                    *reinterpret_cast<float4*>(bml) = make_float4(bm[0], bl[0], bm[1], bl[1]);
                else
                    *reinterpret_cast<float2*>(bml) = make_float2(bm[0], bl[0]);
            }
        }
    }
    __syncthreads();
    if (tr != nullptr && tid == 0) tr[9] = gtime();
    if (CL) {
        tc_cluster_merge<D, G, PD>(red, cML, sItem, out);
    } else {
        attn_finish<D, G, PD>(
            red, rg, c, gridDim.x, nsg, partO, partML, counters,
            [&](int g) { return sItem[g] >= 0 ? out + (size_t)sItem[g] * D : nullptr; },
            [&](int g) { return ml != nullptr && sItem[g] >= 0 ? ml + (size_t)sItem[g] * 2 : nullptr; }, ep);
    }
    tr_stamp(tr, 4);  // every thread gets here (attn_finish's returns are the whole block's)
#endif
}

// attn_rt_d{D}_g{G}_bf16_tc: attn_rt's parameters (ATTN_RT_PARAMS); raw
// (the base-2 scores) and ml (each item's max and sum) as attn_rt writes
// them for a call with accumulated probabilities; the _tcc variant merges
// in the cluster and writes no ml (the host sends it no such call).
// Blocks past the call's split rows return inside attn_tc_row (nsg -1), once
// their first loads are out.
#define ATTN_TC_ENTRY(D, G, CL)                                                                                 \
    pdl_trigger();                                                                                              \
    const int* I = rt_ints(ints, box);                                                                          \
    const int r = blockIdx.y + blockIdx.z * gridDim.y;                                                          \
    attn_tc_row<D, G, CL>(q, ptrs, I, hdr, chunk, pgw, scaleLog2, partO, partML, counters, out, raw, ml, r, r, -1);
#define ATTN_TC_KERNEL_AS(D, G, CL, SUF)                                                                          \
    extern "C" __global__ void __launch_bounds__(ATTN_NT) attn_rt_d##D##_g##G##_bf16_##SUF(ATTN_RT_PARAMS) { \
        ATTN_TC_ENTRY(D, G, CL)                                                                                   \
    }
// attn_rtb_d{D}_g{G}_bf16_tc is the tensor-core kernel over the split rows
// of a batched launch's calls (attn_rtb's parameters and table; lean calls
// over bf16 pages of a power of two tokens, no raw scores: the host checks
// every call); partials are indexed by the launch's split row.
// attn_rtb_d{D}_g{G}_bf16_tc_xb is the same with the larger box, RtbXBox
// (part 12).
#define ATTN_TCB_KERNEL_AS(D, G, BOX, SUF)                                                                          \
    extern "C" __global__ void __launch_bounds__(ATTN_NT) attn_rtb_d##D##_g##G##_bf16_tc##SUF( \
        const RtbCall* __restrict__ tab, int nst, int nsg, const u64* __restrict__ ptrs, const int* __restrict__ ints, \
        int chunk, int pgw, float scaleLog2, float* __restrict__ partO, float* __restrict__ partML,                  \
        int* __restrict__ counters, const __grid_constant__ BOX box) {                                              \
        pdl_trigger();                                                                                              \
        pdl_wait();                                                                                                 \
        rtb_meta(box, nst, tab, ints);                                                                              \
        int rg, r;                                                                                                  \
        RtbCall e;                                                                                                  \
        const int* ci;                                                                                              \
        if (!rtb_row(tab, nst, nsg, ints, rg, e, ci, r)) return;                                                    \
        attn_tc_row<D, G, false>(e.q, ptrs, ci, e.hdr, chunk, pgw, scaleLog2, partO, partML, counters, e.out, e.raw, e.ml, r, \
                                 rg, nsg);                                                                          \
    }
// attn_rt_d{D}_g{G}_bf16_tc, attn_rtb_d{D}_g{G}_bf16_tc (batched), and _tcc (a row's chunks one cluster, merged
// in distributed shared memory; sm_90a only: elsewhere its merge does
// nothing, and the host does not choose it).
#define ATTN_TC_KERNEL(D, G)               \
    ATTN_TC_KERNEL_AS(D, G, false, tc)     \
    ATTN_TC_KERNEL_AS(D, G, true, tcc)     \
    ATTN_TCB_KERNEL_AS(D, G, RtbBox, )

#if KVB_IN(11)
ATTN_TC_KERNEL(64, 1)
ATTN_TC_KERNEL(64, 2)
ATTN_TC_KERNEL(64, 4)
ATTN_TC_KERNEL(64, 8)
ATTN_TC_KERNEL(128, 1)
ATTN_TC_KERNEL(128, 2)
ATTN_TC_KERNEL(128, 4)
ATTN_TC_KERNEL(128, 8)
#endif
#if KVB_IN(12)
ATTN_TCB_KERNEL_AS(64, 1, RtbXBox, _xb)
ATTN_TCB_KERNEL_AS(64, 2, RtbXBox, _xb)
ATTN_TCB_KERNEL_AS(64, 4, RtbXBox, _xb)
ATTN_TCB_KERNEL_AS(64, 8, RtbXBox, _xb)
ATTN_TCB_KERNEL_AS(128, 1, RtbXBox, _xb)
ATTN_TCB_KERNEL_AS(128, 2, RtbXBox, _xb)
ATTN_TCB_KERNEL_AS(128, 4, RtbXBox, _xb)
ATTN_TCB_KERNEL_AS(128, 8, RtbXBox, _xb)
#endif
