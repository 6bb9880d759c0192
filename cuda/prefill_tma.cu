// Prefill attention on Hopper with the key and value tiles brought in by the
// tensor memory accelerator (TMA): flash_wg's contract and arithmetic
// (prefill_wg.cu: wg_scores, wg_pv, the 128-byte swizzled layout WGL SW 1),
// with the copies taken off the warpgroups that compute. One producer warp
// per block, beside NWG consumer warpgroups, walks the key tiles NS stages
// ahead: it waits for a stage to be released (the stage's "empty"
// mbarrier: every consumer warp arrives once it is done with it), writes the
// tile's key positions, and has its lane 0 ask the TMA for the tile's K and
// V, a box of R tokens by 64 channels per page piece and channel block,
// completing on the stage's "full" mbarrier by byte count. A consumer
// warpgroup waits for "full" and computes as flash_wg's MODE 0 does; the
// warpgroups no longer meet at a barrier every tile (flash_wg's
// __syncthreads), and no consumer issues a copy.
//
// The TMA reads through one tensor map of the whole KV page range: a 2D
// bf16 tensor of rows of D channels (a token's K or V), based at the lowest
// KV page the runtime has allocated (the host's tmaBase), box R rows by 64
// channels with the 128-byte swizzle, which is WGL's SW 1 layout when the
// destination is 1024-byte aligned. A page's row is its address less the
// base over D*2 bytes; a page below the base or past the map's rows traps
// (the runtime allocates every page through AllocKV, which keeps the base).
//
// Keys past the sequence's last (kend) in the last tile: their positions are
// written as hidden, so their scores never count, but a hidden key's value
// still meets a zero in P V, and whatever bits the page or the stage held
// there (a NaN among them) would turn 0 x NaN into NaN. Without PIPE the
// consumers therefore zero those value rows of the last tile once it has
// landed, all of them together behind a named barrier (consumers only),
// before any uses it; with PIPE the producer fills every row of the tile,
// boxes past the last key again from the last key's box (rows of a page
// hold bf16 values or AllocKV's zeros, all finite).

// TmaMap is a CUtensorMap (128 bytes, 64-byte aligned), passed by value as a
// __grid_constant__ kernel parameter.
struct __align__(64) TmaMap {
    u64 w[16];
};

#if KVB_WG
// mbarriers: initialised by one thread before a __syncthreads; arrive
// (release semantics); arrive with an expected transaction count (the
// TMA's bytes complete the phase); wait for the phase of the given parity
// to complete (acquire).
__device__ __forceinline__ void tm_init(u64* bar, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"((u32)__cvta_generic_to_shared(bar)), "r"(count)
                 : "memory");
}

__device__ __forceinline__ void tm_arrive(u64* bar) {
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}" ::"r"(
                     (u32)__cvta_generic_to_shared(bar))
                 : "memory");
}

__device__ __forceinline__ void tm_expect(u64* bar, u32 bytes) {
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}" ::"r"(
                     (u32)__cvta_generic_to_shared(bar)),
                 "r"(bytes)
                 : "memory");
}

__device__ __forceinline__ void tm_wait(u64* bar, int parity) {
    const u32 a = (u32)__cvta_generic_to_shared(bar);
    u32 done = 0;
    while (!done) {
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}"
            : "=r"(done)
            : "r"(a), "r"(parity)
            : "memory");
    }
}

// tm_load asks the TMA for the box at (c0 channels, c1 rows) of map m into
// dst (shared memory), completing on bar.
__device__ __forceinline__ void tm_load(void* dst, const TmaMap* m, int c0, int c1, u64* bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(
            (u32)__cvta_generic_to_shared(dst)),
        "l"((u64)m), "r"(c0), "r"(c1), "r"((u32)__cvta_generic_to_shared(bar))
        : "memory");
}

// tma_consume_pipe is a consumer warpgroup's loop over the key tiles
// [it0, ntiles) with the products of one tile beside the softmax of the
// next (FlashAttention-3's intra-warpgroup pipelining): S of tile k+1 is
// issued, then P V of tile k; once S has landed its softmax is computed in
// place (float32 in S's registers) while P V runs; after P V, O is rescaled
// by tile k+1's factors and P rounded from S, which the next S = Q K^T then
// overwrites. Registers: O, one S and one P (D/2 + BN/2 + BN/8 a thread).
// No branch lies between a wgmma's issue and its wait (ptxas serialised the
// wgmmas of a first version that had one, C7514). Every tile is computed (no
// skips: a tile hidden from the whole warpgroup only costs its products).
template <int D, int BN, int NS, class L>
__device__ __forceinline__ void tma_consume_pipe(float (&o)[D / 2], u64* full, u64* empty, const int* kp,
                                                 unsigned char* Ks, unsigned char* Vs, u64 qdesc, int it0, int ntiles,
                                                 int lane, int tig, int sorted, int window, int qa, int qb, int wla,
                                                 int wlb, int wmin, int wmax, float scaleLog2, float& ma, float& mb,
                                                 float& la, float& lb) {
    constexpr int KT = BN * D * 2;
    float s[BN / 2];
    u32 p[BN / 16][4];
    // land waits for tile it and issues its S = Q K^T. (The producer fills
    // every row of a PIPE tile from a page: no value row to zero here.)
    auto land = [&](int it) {
        const int k = it - it0, b = k % NS;
        tm_wait(&full[b], (k / NS) & 1);
        wg_fence();
        wg_hold(s);
        const u64 kdesc = L::kdesc(Ks + b * KT);
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) wg_ss(s, qdesc + L::qstep(kk), kdesc + L::kstep(kk), kk);
        wg_commit();
    };
    // soft computes tile it's softmax in place in s (landed); ca, cb: the
    // factors for what O holds.
    auto soft = [&](int it, float& ca, float& cb) {
        wg_hold(s);
        const int* kps = kp + ((it - it0) % NS) * BN;
        const bool fullTile = sorted && kps[BN - 1] <= wmin && kps[0] > be_win_lo(wmax, window);
        if (fullTile) {
            wg_softmax<BN, true, true>(s, kps, tig, qa, qb, wla, wlb, scaleLog2, ma, mb, la, lb, p, ca, cb);
        } else {
            wg_softmax<BN, false, true>(s, kps, tig, qa, qb, wla, wlb, scaleLog2, ma, mb, la, lb, p, ca, cb);
        }
    };
    // pv issues O += P V for tile it.
    auto pv = [&](int it) {
        wg_fence();
        wg_hold(o);
        const u64 vdesc = L::vdesc(Vs + ((it - it0) % NS) * KT);
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) wg_rs(o, p[kk], vdesc + L::vstep(kk));
        wg_commit();
    };
    // retire waits for P V of tile it and releases its stage.
    auto retire = [&](int it) {
        wg_wait<0>();
        wg_hold(o);
        __syncwarp();
        if (lane == 0) tm_arrive(&empty[(it - it0) % NS]);
    };
    if (it0 >= ntiles) return;
    float ca, cb;
    land(it0);
    wg_wait<0>();
    soft(it0, ca, cb);  // O is zero: its factors do not matter
    wg_pack_p<BN>(s, p);
    for (int it = it0; it + 1 < ntiles; ++it) {
        land(it + 1);
        pv(it);
        wg_wait<1>();  // S of tile it+1 (the older group)
        soft(it + 1, ca, cb);
        retire(it);
        if (!__all_sync(FULL_MASK, ca == 1.f && cb == 1.f)) wg_scale<D>(o, ca, cb);
        wg_pack_p<BN>(s, p);
    }
    pv(ntiles - 1);
    retire(ntiles - 1);
}
#endif

// flash_tma: flash_wg's arguments, then base (the map's first row's
// address), maxRows (the map's rows) and the map m; box rows R = min(page
// tokens, BN). PIPE: the producer is a warpgroup (its warp 0 works) that
// gives its registers to the consumers (setmaxnreg), which pipeline
// (tma_consume_pipe); else one producer warp and flash_wg's MODE 0 order.
template <int D, int NWG, int BN, int NS, bool PIPE>
__device__ __forceinline__ void flash_tma(float* __restrict__ out, const float* __restrict__ q,
                                          const u64* __restrict__ ptrs, const int* __restrict__ ints, int heads,
                                          int kvHeads, float scaleLog2, int rowOff, int rows, int sorted, int psShift,
                                          float* __restrict__ lse, int window, u64 base, long long maxRows,
                                          const TmaMap* m) {
#if KVB_WG
    constexpr int BM = 64 * NWG, NC = 128 * NWG, NT = NC + (PIPE ? 128 : 32), CH = D / 8;
    static_assert(!PIPE || NWG == 2, "setmaxnreg's budget: two consumer warpgroups");
    constexpr int KT = BN * D * 2;  // bytes of a K or V tile
    using L = WGL<D, BM, BN, 1>;
    extern __shared__ __align__(1024) unsigned char wg_smem[];
    unsigned char* Qs = wg_smem;          // [BM rows] of D channels
    unsigned char* Ks = Qs + BM * D * 2;  // [NS] tiles of BN keys
    unsigned char* Vs = Ks + NS * KT;     // [NS] tiles of BN values
    int* kp = (int*)(Vs + NS * KT);       // [NS][BN] key positions
    u64* full = (u64*)(kp + NS * BN);     // [NS]: the stage's tile has landed
    u64* empty = full + NS;               // [NS]: every consumer warp is done with the stage
    int* misc = (int*)(empty + NS);
    int &qmaxs = misc[0], &qmins = misc[1];
    int(*wgb)[2] = (int(*)[2])(misc + 2);  // [NWG * 4]: each consumer warp's lowest and highest row position
    if ((u32)__cvta_generic_to_shared(wg_smem) & 1023u) __trap();

    const int tid = threadIdx.x, wg = tid >> 7, wq = (tid >> 5) & 3, lane = tid & 31, tig = lane & 3;
    const int z = gridDim.x - 1 - blockIdx.x;  // the longest row tiles first
    const int h = blockIdx.y, group = heads / kvHeads;
    const int* sd = ints + (h / group) * SD_WORDS;
    const int N = sd[SD_N], psMask = (1 << psShift) - 1, kOff = sd[SD_K], vOff = sd[SD_V];
    const int* pos = sd[SD_POS] >= 0 ? ints + sd[SD_POS] : 0;  // none: every token is visible
    const int r0 = z * BM;
    const bool consumer = tid < NC;

    if (tid == 0) {
        fl_row_span(ints, rowOff, r0, BM, rows, qmaxs, qmins);
        for (int i = 0; i < NS; ++i) {
            tm_init(&full[i], 1);
            tm_init(&empty[i], NWG * 4);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    wg_load_q<D, BM, L>(Qs, q, r0, rows, heads, h, tid, NT);
    const int ra = r0 + wg * 64 + wq * 16 + (lane >> 2), rb = ra + 8;
    const int qa = consumer && ra < rows ? ints[rowOff + 2 * ra] : -1;
    const int qb = consumer && rb < rows ? ints[rowOff + 2 * rb] : -1;
    const int wla = be_win_lo(qa, window), wlb = be_win_lo(qb, window);
    if (consumer) wg_warp_bounds(wgb[wg * 4 + wq], qa, qb, lane);
    wg_proxy_fence();
    __syncthreads();  // the block's last: the producer leaves the consumers after it
    const int qmax = qmaxs, qmin = qmins;
    int kstart, kend;
    fl_key_range(pos, N, sorted, qmin, qmax, window, kstart, kend);
    const int it0 = kstart / BN, ntiles = (kend + BN - 1) / BN;

    if (!consumer) {
        if constexpr (PIPE) {  // 168 registers a thread at launch (384 threads): 40 here, 232 a consumer
            asm volatile("setmaxnreg.dec.sync.aligned.u32 40;" ::: "memory");
            if (wq != 0) return;
        }
        // The producer warp. A tile's positions are read by every lane and
        // its boxes asked for by one lane each (box j by lane j), after lane
        // 0 has set the stage's expected bytes; the positions and page
        // pointers of the next tile are read before the wait for this
        // one's stage, so that their latency is hidden (one lane reading
        // every page pointer, one after the other, held the consumers up:
        // the H200 ran t2n128 at 27.6 ms for d128 32K).
        const int R = min(1 << psShift, BN), rowBytes = D * 2;
        auto boxes = [&](int it) {  // PIPE: every box, those past the last key from the last key's box
            const int t0 = it * BN;  // (its rows are bf16 values or AllocKV's zeros: finite)
            return PIPE ? BN / R : (min(t0 + BN, kend) - t0 + R - 1) / R;
        };
        int pc[BN / 32], pn[BN / 32], tc = 0, tn = 0;
        u64 kc = 0, vc = 0, kn = 0, vn = 0;
        auto fetch = [&](int it, int(&pv)[BN / 32], int& t, u64& kpg, u64& vpg) {
            const int t0 = it * BN;
#pragma unroll
            for (int i = 0; i < BN / 32; ++i) {
                const int u = t0 + lane + 32 * i;
                pv[i] = u < kend ? (pos ? pos[u] : 0) : 0x7fffffff;
            }
            if (lane < boxes(it)) {
                t = t0 + lane * R < kend ? t0 + lane * R : (kend - 1) / R * R;
                kpg = ptrs[kOff + (t >> psShift)];
                vpg = ptrs[vOff + (t >> psShift)];
            }
        };
        if (it0 < ntiles) fetch(it0, pc, tc, kc, vc);
        for (int it = it0, k = 0; it < ntiles; ++it, ++k) {
            const int b = k % NS;
            if (it + 1 < ntiles) fetch(it + 1, pn, tn, kn, vn);
            if (k >= NS) tm_wait(&empty[b], ((k / NS) - 1) & 1);
#pragma unroll
            for (int i = 0; i < BN / 32; ++i) kp[b * BN + lane + 32 * i] = pc[i];
            const int nb = boxes(it);
            __syncwarp();
            if (lane == 0) tm_expect(&full[b], (u32)(nb * (D / 64) * 2 * R * 128));
            __syncwarp();
            if (lane < nb) {
                const long long kr = (long long)(kc - base) / rowBytes, vr = (long long)(vc - base) / rowBytes;
                if (kc < base || vc < base || kr + psMask >= maxRows || vr + psMask >= maxRows) __trap();
                const int ko = (int)kr + (tc & psMask), vo = (int)vr + (tc & psMask);
#pragma unroll
                for (int cb = 0; cb < D / 64; ++cb) {
                    tm_load(Ks + b * KT + cb * BN * 128 + lane * R * 128, m, cb * 64, ko, &full[b]);
                    tm_load(Vs + b * KT + cb * BN * 128 + lane * R * 128, m, cb * 64, vo, &full[b]);
                }
            }
#pragma unroll
            for (int i = 0; i < BN / 32; ++i) pc[i] = pn[i];
            tc = tn, kc = kn, vc = vn;
        }
        return;
    }

    if constexpr (PIPE) asm volatile("setmaxnreg.inc.sync.aligned.u32 232;" ::: "memory");
    int wmin, wmax;
    wg_group_bounds(wgb + wg * 4, wmin, wmax);
    const u64 qdesc = L::qdesc(Qs, wg);
    float ma = NEG_INF, mb = NEG_INF, la = 0.f, lb = 0.f;  // running max (raw scores) and sum
    if constexpr (PIPE) {
        float o[D / 2];
#pragma unroll
        for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
        tma_consume_pipe<D, BN, NS, L>(o, full, empty, kp, Ks, Vs, qdesc, it0, ntiles, lane, tig, sorted, window, qa, qb,
                                       wla, wlb, wmin, wmax, scaleLog2, ma, mb, la, lb);
        wg_store<D>(out, lse, o, ra, rb, rows, heads, h, tig, ma, mb, la, lb, scaleLog2);
    } else {  // one branch or the other compiled (NVRTC warns of a loop after a return)
        float o[D / 2], s[BN / 2];
#pragma unroll
        for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) s[i] = 0.f;
        u32 p[BN / 16][4];
        for (int it = it0, k = 0; it < ntiles; ++it, ++k) {
            const int b = k % NS, t0 = it * BN;
            tm_wait(&full[b], (k / NS) & 1);
            if (t0 + BN > kend) {
                // The last tile, partial: its value rows from kend on to zero
                // (the file's header), by every consumer thread, then published.
                const int from = kend - t0;
                for (int i = tid; i < (BN - from) * CH; i += NC)
                    *(uint4*)(Vs + b * KT + L::template off<BN>(from + i / CH, i % CH)) = make_uint4(0u, 0u, 0u, 0u);
                wg_proxy_fence();
                asm volatile("bar.sync 1, %0;" ::"n"(NC) : "memory");
            }
            const int* kps = kp + b * BN;
            const bool skip = sorted && (kps[0] > wmax || kps[BN - 1] <= be_win_lo(wmin, window));
            if (!skip) {
                const bool fullTile = sorted && kps[BN - 1] <= wmin && kps[0] > be_win_lo(wmax, window);
                wg_scores<D, BN, L>(s, o, p, qdesc, L::kdesc(Ks + b * KT), fullTile, kps, tig, qa, qb, wla, wlb, scaleLog2, ma,
                                    mb, la, lb);
                wg_pv<D, BN, L>(o, p, L::vdesc(Vs + b * KT));
            }
            __syncwarp();
            if (lane == 0) tm_arrive(&empty[b]);
        }
        wg_store<D>(out, lse, o, ra, rb, rows, heads, h, tig, ma, mb, la, lb, scaleLog2);
    }
#endif
}

// TMA_SMEM is the dynamic shared memory of flash_tma<D, NWG, BN, NS>: Q, NS
// stages of K, V and positions, 2*NS mbarriers, two row bounds and a
// consumer warp's two.
#define TMA_SMEM(D, NWG, BN, NS) (64 * (NWG) * (D) * 2 + (NS) * (BN) * ((D) * 4 + 4) + (NS) * 2 * 8 + (2 + (NWG) * 8) * 4)

#define TMA_KERNEL_AS(NAME, D, NWG, BN, NS, PIPE)                                                                    \
    extern "C" __global__ void __launch_bounds__(128 * NWG + (PIPE ? 128 : 32), 1)                                     \
        NAME(float* out, const float* q, const u64* ptrs, const int* ints, int heads, int kvHeads, float scaleLog2,   \
             int rowOff, int rows, int sorted, int psShift, float* lse, int window, u64 base, long long maxRows,     \
             const __grid_constant__ TmaMap m) {                                                                     \
        flash_tma<D, NWG, BN, NS, PIPE>(out, q, ptrs, ints, heads, kvHeads, scaleLog2, rowOff, rows, sorted, psShift, \
                                        lse, window, base, maxRows, &m);                                             \
    }
#define TMA_KERNEL(D, NWG, BN, NS) TMA_KERNEL_AS(flash_tma_d##D##_g##NWG##_n##BN##_s##NS, D, NWG, BN, NS, false)
#define TMA_KERNEL_PIPE(D, NWG, BN, NS) TMA_KERNEL_AS(flash_tma_d##D##_g##NWG##_n##BN##_s##NS##_p, D, NWG, BN, NS, true)

// The variants KVBENCH_FLASH chooses among (tNWG nBN, NS stages).
#if KVB_IN(10)
TMA_KERNEL(64, 2, 64, 4)
TMA_KERNEL(128, 2, 64, 4)
TMA_KERNEL(64, 3, 64, 4)
TMA_KERNEL(128, 3, 64, 4)
TMA_KERNEL(64, 2, 128, 3)
TMA_KERNEL(128, 2, 128, 3)
TMA_KERNEL_PIPE(64, 2, 64, 4)
TMA_KERNEL_PIPE(128, 2, 64, 4)
TMA_KERNEL_PIPE(64, 2, 128, 3)
TMA_KERNEL_PIPE(128, 2, 128, 3)
#endif
