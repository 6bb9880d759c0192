// Quest page selection (Tang et al., 2024): each page of pageSize tokens
// keeps the channel-wise minimum m and maximum M of its keys; the upper
// bound of a query's score on the page is sum_i max(q_i m_i, q_i M_i); each
// head attends to the K pages of highest bound.
//
// quest_score_d{D}_g{G}: grid (ceil(P / ppb), kvHeads), block QS_NT threads.
// Block (b, h) scores pages [b*ppb, b*ppb + ppb) of KV head h for the G query
// heads of its group: with perHead, one score per query head, scores
// [heads, P]; otherwise the maximum over the group, scores [kvHeads, P] (one
// selection shared by the group, so the group reads each selected byte
// once). quest_topk then selects, one block per row of scores, the K pages
// of highest score and writes their indices in ascending order to
// sel [rows, K].

#define QS_NT 128
#define TK_NT 512

// kpad spreads the keys of shared memory so that threads reading runs of
// consecutive keys hit different banks.
__device__ __forceinline__ int kpad(int i) { return i + (i >> 5); }

// topk_row writes the indices of the K largest of scores[0, P) to sel in
// ascending order; ties at the K-th value go to the lowest indices. Scores
// are read from L2 (other blocks of the launch wrote them). A radix select
// over the order-preserving integer image of the floats finds the K-th
// largest key 8 bits at a time, starting at the highest bit on which the
// keys differ (scores share their sign and most exponent bits), then an
// ordered compaction writes the selection. Histogram updates are aggregated
// per warp over lanes with the same bin. All NT threads call it. With SM,
// keys is kpad(P) + 1 words of shared memory holding the keys; without, every
// pass reads the scores again (through L1: they were written by an earlier
// launch), for rows too long for shared memory (oracle's token scores).
template <int NT, bool SM>
__device__ void topk_row(const float* __restrict__ scores, int P, int K, int* __restrict__ sel, u32* keys) {
    __shared__ u32 hist[256];
    __shared__ u32 ws[NT / 32];
    __shared__ u32 wmin[NT / 32], wmax[NT / 32];
    __shared__ u32 sBin, sNeed;
    __shared__ int sDone;
    const int tid = threadIdx.x, lane = tid & 31;
    if (K >= P) {
        for (int i = tid; i < P; i += NT) sel[i] = i;
        return;
    }
    // key maps a score to an unsigned integer of the same order.
    auto key = [](float f) -> u32 {
        u32 u = __float_as_uint(f);
        if (u == 0x80000000u) u = 0u;  // -0 ties with +0
        return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    };
    auto at = [&](int i) -> u32 { return SM ? keys[kpad(i)] : key(__ldg(scores + i)); };
    u32 kmin = 0xffffffffu, kmax = 0;
#pragma unroll 8
    for (int i = tid; i < P; i += NT) {
        const u32 k = key(SM ? __ldcg(scores + i) : __ldg(scores + i));
        if (SM) keys[kpad(i)] = k;
        kmin = min(kmin, k);
        kmax = max(kmax, k);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        kmin = min(kmin, __shfl_xor_sync(FULL_MASK, kmin, o));
        kmax = max(kmax, __shfl_xor_sync(FULL_MASK, kmax, o));
    }
    if (lane == 0) {
        wmin[tid >> 5] = kmin;
        wmax[tid >> 5] = kmax;
    }
    __syncthreads();
#pragma unroll
    for (int w = 0; w < NT / 32; ++w) {
        kmin = min(kmin, wmin[w]);
        kmax = max(kmax, wmax[w]);
    }
    // Bits above `top` are the same in every key.
    int top = kmin == kmax ? -1 : 31 - __clz(kmin ^ kmax);
    u32 mask = top < 0 ? 0xffffffffu : (top == 31 ? 0u : ~((2u << top) - 1u));
    u32 prefix = kmin & mask, need = (u32)K;
    while (top >= 0) {
        const int bits = min(8, top + 1), shift = top - bits + 1;
        const u32 dmask = (1u << bits) - 1u;
        for (int i = tid; i < 256; i += NT) hist[i] = 0;
        __syncthreads();
        for (int base = 0; base < P; base += NT) {
            const int i = base + tid;
            const u32 k = i < P ? at(i) : 0u;
            const bool in = i < P && (k & mask) == prefix;
            const u32 bin = in ? (k >> shift) & dmask : 0xffffffffu;
            const u32 peers = __match_any_sync(FULL_MASK, bin);
            if (in && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], (u32)__popc(peers));
        }
        __syncthreads();
        if (tid < 32) {
            // Lane l holds bins 255-8l down to 248-8l: counts from the top.
            u32 cnt[8], tot = 0;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                cnt[j] = hist[255 - tid * 8 - j];
                tot += cnt[j];
            }
            u32 incl = tot;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const u32 t = __shfl_up_sync(FULL_MASK, incl, o);
                if (tid >= o) incl += t;
            }
            const u32 excl = incl - tot;
            const u32 hit = __ballot_sync(FULL_MASK, excl < need && need <= incl);
            if (tid == __ffs(hit) - 1) {
                u32 above = excl;
                bool found = false;
#pragma unroll
                for (int j = 0; j < 8; ++j) {
                    if (!found) {
                        if (above + cnt[j] >= need) {
                            found = true;
                            sBin = 255u - (u32)(tid * 8 + j);
                            sNeed = need - above;
                            sDone = cnt[j] == need - above;
                        } else {
                            above += cnt[j];
                        }
                    }
                }
            }
        }
        __syncthreads();
        prefix |= sBin << shift;
        mask |= dmask << shift;
        need = sNeed;
        const int done = sDone;
        __syncthreads();
        top = shift - 1;
        if (done) break;
    }
    // Selected: keys whose masked value is above prefix, and the first `need`
    // (in index order) of those equal to it.
    const int E = (P + NT - 1) / NT;
    const int b = min(P, tid * E), e = min(P, b + E);
    u32 eq = 0;
    for (int i = b; i < e; ++i) eq += (at(i) & mask) == prefix;
    const u32 eqBefore = block_excl_scan<NT>(eq, ws);
    u32 cnt = 0, rank = eqBefore;
    for (int i = b; i < e; ++i) {
        const u32 km = at(i) & mask;
        if (km > prefix) {
            ++cnt;
        } else if (km == prefix) {
            cnt += rank < need;
            ++rank;
        }
    }
    u32 pos = block_excl_scan<NT>(cnt, ws);
    rank = eqBefore;
    for (int i = b; i < e; ++i) {
        const u32 km = at(i) & mask;
        bool take = false;
        if (km > prefix) {
            take = true;
        } else if (km == prefix) {
            take = rank < need;
            ++rank;
        }
        if (take) sel[pos++] = i;
    }
    __syncthreads();  // keys and ws are reused by the next row
}

template <int D, int G>
__device__ __forceinline__ void quest_score(const bf16* __restrict__ q, const bf16* __restrict__ mn,
                                            const bf16* __restrict__ mx, int P, int ppb, int perHead,
                                            float* __restrict__ scores) {
    constexpr int NT = QS_NT;
    constexpr int L = D / 8;
    constexpr int TG = NT / L;
    constexpr int U = 4;
    const int h = blockIdx.y, tid = threadIdx.x, lane = tid % L, tg = tid / L;
    const int p0 = blockIdx.x * ppb, len = min(ppb, P - p0);

    float qf[G][8];
#pragma unroll
    for (int g = 0; g < G; ++g) unpack8(*reinterpret_cast<const uint4*>(q + (size_t)(h * G + g) * D + lane * 8), qf[g]);
    const bf16* mnh = mn + ((size_t)h * P + p0) * D + lane * 8;
    const bf16* mxh = mx + ((size_t)h * P + p0) * D + lane * 8;

    for (int base = 0; base < len; base += TG * U) {
        uint4 a[U], bb[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int i = base + u * TG + tg;
            a[u] = ld_stream_if(mnh + (size_t)min(i, len - 1) * D, i < len);
            bb[u] = ld_stream_if(mxh + (size_t)min(i, len - 1) * D, i < len);
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            float lo[8], hi[8];
            unpack8(a[u], lo);
            unpack8(bb[u], hi);
            float s[G];
#pragma unroll
            for (int g = 0; g < G; ++g) {
                float x = 0.f;
#pragma unroll
                for (int j = 0; j < 8; ++j) x += fmaxf(qf[g][j] * lo[j], qf[g][j] * hi[j]);
                s[g] = x;
            }
            int hh = 0;
            Halve<G, L / 2>::run(s, lane, hh);  // lane holds head hh's bound
            const int i = base + u * TG + tg;
            if (perHead) {
                if (lane % (L / G) == 0 && i < len) scores[(size_t)(h * G + hh) * P + p0 + i] = s[0];
            } else {
                float x = s[0];
#pragma unroll
                for (int o = L / G; o < L; o <<= 1) x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, o));
                if (lane == 0 && i < len) scores[(size_t)h * P + p0 + i] = x;
            }
        }
    }
}

#define QUEST_KERNELS(D, G)                                                                          \
    extern "C" __global__ void __launch_bounds__(QS_NT) quest_score_d##D##_g##G(                     \
        const bf16* __restrict__ q, const bf16* __restrict__ mn, const bf16* __restrict__ mx, int P, \
        int ppb, int perHead, float* __restrict__ scores) {                                          \
        quest_score<D, G>(q, mn, mx, P, ppb, perHead, scores);                                       \
    }

#if KVB_IN(0)
QUEST_KERNELS(64, 1)
QUEST_KERNELS(64, 2)
QUEST_KERNELS(64, 4)
QUEST_KERNELS(64, 8)
QUEST_KERNELS(128, 1)
QUEST_KERNELS(128, 2)
QUEST_KERNELS(128, 4)
QUEST_KERNELS(128, 8)
#endif

// quest_topk: grid (rows), block TK_NT threads, dynamic shared memory
// kpad(P) + 1 words. Row r selects min(K, P) pages of scores [rows, P] into
// sel [rows, min(K, P)].
extern "C" __global__ void __launch_bounds__(TK_NT) quest_topk(const float* __restrict__ scores, int P, int K,
                                                                int* __restrict__ sel) {
    extern __shared__ u32 keys[];
    pdl_wait();
    const int r = blockIdx.x;
    topk_row<TK_NT, true>(scores + (size_t)r * P, P, K, sel + (size_t)r * min(K, P), keys);
}

// ---- Quest's choice over the runtime's cache (runtime.PageChooser, runtime/cuda/backend_quest.go) ----
//
// The runtime's Quest (policies/quest.go) scores pages in double
// (be_quest_score) and attends, for each query head whose KV head holds more
// than K pages, the K-1 best pages but the last, ties to the lower page,
// plus the last page. be_quest_choose makes that choice on the device, so
// that neither the scores nor the selection cross to the host.

#define QC_NT 256

// qc_key maps a double to an unsigned integer of the same order (-0 ties
// with +0).
__device__ __forceinline__ u64 qc_key(double d) {
    u64 u = (u64)__double_as_longlong(d);
    if (u == 0x8000000000000000ull) u = 0ull;
    return (u >> 63) ? ~u : (u | 0x8000000000000000ull);
}

// qc_select writes to out, ascending, the indices of the k largest of the M
// doubles s (0 < k < M), ties to the lower index: a radix select over the
// keys (qc_key), 8 bits a pass from the highest bit on which the keys
// differ, then an ordered compaction. All QC_NT threads call it.
__device__ void qc_select(const double* __restrict__ s, int M, int k, int* __restrict__ out) {
    __shared__ u32 hist[256];
    __shared__ u32 ws[QC_NT / 32];
    __shared__ u64 wlo[QC_NT / 32], whi[QC_NT / 32];
    __shared__ u32 sBin, sNeed;
    __shared__ int sDone;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    u64 lo = ~0ull, hi = 0ull;
    for (int i = tid; i < M; i += QC_NT) {
        const u64 x = qc_key(s[i]);
        lo = min(lo, x);
        hi = max(hi, x);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        lo = min(lo, __shfl_xor_sync(FULL_MASK, lo, o));
        hi = max(hi, __shfl_xor_sync(FULL_MASK, hi, o));
    }
    if (lane == 0) {
        wlo[warp] = lo;
        whi[warp] = hi;
    }
    __syncthreads();
#pragma unroll
    for (int w = 0; w < QC_NT / 32; ++w) {
        lo = min(lo, wlo[w]);
        hi = max(hi, whi[w]);
    }
    // Bits above top are the same in every key; prefix holds the bits of the
    // k-th largest key decided so far, mask says which.
    int top = lo == hi ? -1 : 63 - __clzll((long long)(lo ^ hi));
    u64 mask = top < 0 ? ~0ull : (top == 63 ? 0ull : ~((2ull << top) - 1ull));
    u64 prefix = lo & mask;
    u32 need = (u32)k;  // keys still to take among those matching prefix
    while (top >= 0) {
        const int bits = min(8, top + 1), shift = top - bits + 1;
        const u64 dmask = (1ull << bits) - 1ull;
        for (int i = tid; i < 256; i += QC_NT) hist[i] = 0;
        __syncthreads();
        for (int i = tid; i < M; i += QC_NT) {
            const u64 x = qc_key(s[i]);
            if ((x & mask) == prefix) atomicAdd(&hist[(u32)((x >> shift) & dmask)], 1u);
        }
        __syncthreads();
        if (warp == 0) {
            // Lane l holds bins 255-8l down to 248-8l: counts from the top.
            u32 cnt[8], tot = 0;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                cnt[j] = hist[255 - lane * 8 - j];
                tot += cnt[j];
            }
            u32 incl = tot;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const u32 t = __shfl_up_sync(FULL_MASK, incl, o);
                if (lane >= o) incl += t;
            }
            const u32 excl = incl - tot;
            const u32 hit = __ballot_sync(FULL_MASK, excl < need && need <= incl);
            if (lane == __ffs(hit) - 1) {
                u32 above = excl;
                for (int j = 0; j < 8; ++j) {
                    if (above + cnt[j] >= need) {
                        sBin = 255u - (u32)(lane * 8 + j);
                        sNeed = need - above;
                        sDone = cnt[j] == need - above;
                        break;
                    }
                    above += cnt[j];
                }
            }
        }
        __syncthreads();
        prefix |= (u64)sBin << shift;
        mask |= dmask << shift;
        need = sNeed;
        const int done = sDone;
        __syncthreads();
        top = shift - 1;
        if (done) break;
    }
    // Taken: keys whose masked value is above prefix, and the first `need`
    // (by index) of those equal to it.
    const int E = (M + QC_NT - 1) / QC_NT;
    const int b = min(M, tid * E), e = min(M, b + E);
    u32 eq = 0;
    for (int i = b; i < e; ++i) eq += (qc_key(s[i]) & mask) == prefix;
    const u32 eqBefore = block_excl_scan<QC_NT>(eq, ws);
    u32 cnt = 0, rank = eqBefore;
    for (int i = b; i < e; ++i) {
        const u64 x = qc_key(s[i]) & mask;
        if (x > prefix) {
            ++cnt;
        } else if (x == prefix) {
            cnt += rank < need;
            ++rank;
        }
    }
    u32 pos = block_excl_scan<QC_NT>(cnt, ws);
    rank = eqBefore;
    for (int i = b; i < e; ++i) {
        const u64 x = qc_key(s[i]) & mask;
        bool take = x > prefix;
        if (x == prefix) {
            take = rank < need;
            ++rank;
        }
        if (take) out[pos++] = i;
    }
}

// qc_in says whether sorted list l [n] holds x.
__device__ __forceinline__ bool qc_in(const int* l, int n, int x) {
    int a = 0, b = n;
    while (a < b) {
        const int m = (a + b) >> 1;
        const int v = __ldcg(l + m);
        if (v == x) return true;
        if (v < x) a = m + 1;
        else b = m;
    }
    return false;
}

// be_quest_choose: grid (heads), block QC_NT. ints: [2*heads] the pages P of
// query head h (0: not scored) and the offset of its scores in scores (the
// layout of be_quest_score), then [kvHeads] the tokens n of each KV head.
// Block h chooses the K-1 pages of highest score among pages [0, P-1), ties
// to the lower page, and page P-1; it writes the first ones, ascending, to
// pages [heads, max(K-1, 1)], and the tokens of every chosen page, in page
// order, to sel [heads, cap]: page p's tokens p*page ... p*page+page-1, the
// last page's up to n-1. The last block of each KV head's group to finish
// writes to cov[g] the number of distinct tokens the group chose, and sets
// its counter done[g] back to 0 (done is 0 between launches).
__device__ __forceinline__ void quest_choose_block(const double* __restrict__ scores, const int* __restrict__ ints, int heads,
                                                   int group, int K, int page, int cap, int* pages, int* sel, int* cov, int* done,
                                                   int h) {
    __shared__ int sLast;
    __shared__ u32 sCount;
    const int tid = threadIdx.x, g = h / group;
    const int P = ints[2 * h], n = ints[2 * heads + g], k = K - 1, kr = max(k, 1);
    if (P > 0) {
        int* chosen = pages + (size_t)h * kr;
        if (k > 0) qc_select(scores + ints[2 * h + 1], P - 1, k, chosen);
        __syncthreads();  // the block's chosen pages, written to global memory, visible to the block
        int* o = sel + (size_t)h * cap;
        for (int i = tid; i < k * page; i += QC_NT) o[i] = chosen[i / page] * page + i % page;
        const int first = (P - 1) * page;  // the last page's first token
        for (int t = first + tid; t < n; t += QC_NT) o[k * page + t - first] = t;
    }
    // The group's last block counts the distinct tokens it chose
    // (arrive_last: the blocks' chosen pages seen through the L2).
    __syncthreads();
    if (tid == 0) {
        sLast = arrive_last(done + g, group);
        sCount = 0;
    }
    __syncthreads();
    if (!sLast) return;
    if (P > 0) {
        const int* first = pages + (size_t)g * group * kr;
        u32 c = 0;
        for (int x = tid; x < group * k; x += QC_NT) {
            const int j = x / k, v = __ldcg(first + (size_t)j * kr + x % k);
            bool seen = false;
            for (int i = 0; i < j && !seen; ++i) seen = qc_in(first + (size_t)i * kr, k, v);
            c += !seen;
        }
        if (c > 0) atomicAdd(&sCount, c);
        __syncthreads();
    }
    if (tid == 0) {
        cov[g] = P > 0 ? (int)sCount * page + n - (P - 1) * page : n;
        done[g] = 0;
    }
}

extern "C" __global__ void __launch_bounds__(QC_NT) be_quest_choose(const double* __restrict__ scores, const int* __restrict__ ints,
                                                                    int heads, int group, int K, int page, int cap, int* pages,
                                                                    int* sel, int* cov, int* done) {
    quest_choose_block(scores, ints, heads, group, K, page, cap, pages, sel, cov, done, blockIdx.x);
}

// QuestCall is one Choose of a batch of them (Backend.flushQuest): its
// query row, its scores, its choice's buffers (as be_quest_choose takes
// them), where its ints (be_quest_score's and be_quest_choose's layout) and
// its KV heads' bounds (in ptrs) start, and its shape.
struct QuestCall {
    const float* q;
    double* scores;
    int* pages;
    int* sel;
    int* cov;
    int* done;
    int ints, bounds, heads, group, K, cap;
};

// be_quest_score_batch is be_quest_score over the calls of tab: grid
// (ceil(most pages / 128), most heads, calls), block 128.
extern "C" __global__ void be_quest_score_batch(const QuestCall* __restrict__ tab, const int* __restrict__ ints,
                                                const u64* __restrict__ ptrs, int hd) {
    const QuestCall e = tab[blockIdx.z];
    const int h = blockIdx.y;
    if (h >= e.heads) return;
    quest_score_page(e.scores, e.q, ptrs + e.bounds, ints + e.ints, e.group, hd, h, blockIdx.x * blockDim.x + threadIdx.x);
}

// be_quest_choose_batch is be_quest_choose over the calls of tab: grid (most
// heads, calls), block QC_NT; a block past its call's heads does nothing.
extern "C" __global__ void __launch_bounds__(QC_NT) be_quest_choose_batch(const QuestCall* __restrict__ tab,
                                                                          const int* __restrict__ ints, int page) {
    const QuestCall e = tab[blockIdx.y];
    if ((int)blockIdx.x >= e.heads) return;
    quest_choose_block(e.scores, ints + e.ints, e.heads, e.group, e.K, page, e.cap, e.pages, e.sel, e.cov, e.done, blockIdx.x);
}
