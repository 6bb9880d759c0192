// Quest page selection (Tang et al., 2024) over the runtime's cache
// (runtime.PageChooser, runtime/cuda/backend_quest.go): each page of
// pageSize tokens keeps the channel-wise minimum m and maximum M of its keys;
// the upper bound of a query's score on the page is sum_i max(q_i m_i, q_i
// M_i); each head attends to the K pages of highest bound.
//
// The runtime's Quest (policies/quest.go) scores pages in double
// (be_quest_score) and attends, for each query head whose KV head holds more
// than K pages, the K-1 best pages but the last, ties to the lower page,
// plus the last page. be_quest_choose_batch makes that choice on the device, so
// that neither the scores nor the selection cross to the host.

// QC_NT and QC_E: blocks of 512 threads, up to 16 keys a thread in registers,
// were the fastest on the H100 at 4K-128K tokens (32/8 heads of 128, 255 to
// 8,191 pages) against 256 threads reading keys from memory (slower past
// 2,000 pages), 256 with up to 32 keys in registers, and 1,024 with up to 8
// (2.5x the warp instructions of 256 under ncu at 2,047 pages). With runs
// fitted to the pages (qc_select<E>), 1,024 threads with up to 8 keys were
// level with 512 at 4K-128K; a warp's histogram atomics added once a bin
// (__match_any_sync) cost 0.7-7.9 µs (H100, 2026-12-07).
#define QC_NT 512
#define QC_BITS 2048  // the most pages a group's count marks in shared memory, over 32 (65,536 pages)

// qc_key maps a double to an unsigned integer of the same order (-0 ties
// with +0).
__device__ __forceinline__ u64 qc_key(double d) {
    u64 u = (u64)__double_as_longlong(d);
    if (u == 0x8000000000000000ull) u = 0ull;
    return (u >> 63) ? ~u : (u | 0x8000000000000000ull);
}

#define QC_E 16  // the most keys a thread of qc_select holds in registers (M up to 16 * QC_NT)

// QC_EACH runs its body for each key x of the thread's run, j its place in
// the run (index b + j): from registers r where the block holds them (E >
// 0), else loaded from s and mapped again.
#define QC_EACH(...)                                                         \
    if (E > 0) {                                                             \
        _Pragma("unroll") for (int j = 0; j < (E > 0 ? E : 1); ++j) {        \
            if (j < n) {                                                     \
                const u64 x = r[j];                                          \
                __VA_ARGS__                                                  \
            }                                                                \
        }                                                                    \
    } else {                                                                 \
        for (int j = 0; j < n; ++j) {                                        \
            const u64 x = qc_key(s[b + j]);                                  \
            __VA_ARGS__                                                      \
        }                                                                    \
    }

// qc_select writes to out, ascending, the indices of the k largest of the M
// doubles s (0 < k < M), ties to the lower index: a radix select over the
// keys (qc_key), 8 bits a pass from the highest bit on which the keys
// differ, then an ordered compaction. All QC_NT threads call it; thread t
// takes the run of keys from t * ceil(M / QC_NT) on, held in registers
// where E > 0 (M <= E * QC_NT), so that the passes read no memory but the
// histogram (each pass's loads from the L2 were a latency in series a key).
template <int E>
__device__ void qc_select(const double* __restrict__ s, int M, int k, int* __restrict__ out) {
    // Two histograms and two slots for warp 0's verdict, a pass's in
    // [pass & 1]: while warp 0 scans one histogram, warps 1+ clear the
    // other for the next pass, so a pass takes two barriers, not four.
    __shared__ u32 hist[2][256];
    __shared__ u32 ws[QC_NT / 32];
    __shared__ u64 wlo[QC_NT / 32], whi[QC_NT / 32];
    __shared__ u32 sBin[2], sNeed[2];
    __shared__ int sDone[2];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int per = (M + QC_NT - 1) / QC_NT, b = min(M, tid * per), n = min(M, b + per) - b;
    u64 r[E > 0 ? E : 1];
    if (E > 0) {
#pragma unroll
        for (int j = 0; j < (E > 0 ? E : 1); ++j) r[j] = j < n ? qc_key(s[b + j]) : 0ull;
    }
    u64 lo = ~0ull, hi = 0ull;
    QC_EACH(lo = min(lo, x); hi = max(hi, x);)
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        lo = min(lo, __shfl_xor_sync(FULL_MASK, lo, o));
        hi = max(hi, __shfl_xor_sync(FULL_MASK, hi, o));
    }
    if (lane == 0) {
        wlo[warp] = lo;
        whi[warp] = hi;
    }
    for (int i = tid; i < 256; i += QC_NT) hist[0][i] = 0;
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
    for (int pass = 0; top >= 0; ++pass) {
        const int bits = min(8, top + 1), shift = top - bits + 1, hb = pass & 1;
        const u64 dmask = (1ull << bits) - 1ull;
        u32* h = hist[hb];
        // h was cleared before the barrier that ended the last pass.
        QC_EACH(if ((x & mask) == prefix) atomicAdd(&h[(u32)((x >> shift) & dmask)], 1u);)
        __syncthreads();
        if (warp != 0) {
            // The other histogram's last reader was warp 0, in the pass
            // before, ahead of the barrier above.
            for (int i = tid - 32; i < 256; i += QC_NT - 32) hist[hb ^ 1][i] = 0;
        } else {
            // Lane l holds bins 255-8l down to 248-8l: counts from the top.
            u32 cnt[8], tot = 0;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                cnt[j] = h[255 - lane * 8 - j];
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
                        sBin[hb] = 255u - (u32)(lane * 8 + j);
                        sNeed[hb] = need - above;
                        sDone[hb] = cnt[j] == need - above;
                        break;
                    }
                    above += cnt[j];
                }
            }
        }
        __syncthreads();
        // Slot hb is written again two passes on, after a barrier every
        // thread reaches only once it has read it here.
        prefix |= (u64)sBin[hb] << shift;
        mask |= dmask << shift;
        need = sNeed[hb];
        top = shift - 1;
        if (sDone[hb]) break;
    }
    // Taken: keys whose masked value is above prefix, and the first `need`
    // (by index) of those equal to it.
    u32 eq = 0;
    QC_EACH(eq += (x & mask) == prefix;)
    const u32 eqBefore = block_excl_scan<QC_NT>(eq, ws);
    u32 cnt = 0, rank = eqBefore;
    QC_EACH(const u64 y = x & mask; if (y > prefix) { ++cnt; } else if (y == prefix) { cnt += rank < need; ++rank; })
    u32 pos = block_excl_scan<QC_NT>(cnt, ws);
    rank = eqBefore;
    QC_EACH(const u64 y = x & mask; bool take = y > prefix; if (y == prefix) { take = rank < need; ++rank; } if (take) out[pos++] = b + j;)
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

// quest_choose_block is block h of a choice over a grid of (heads) blocks
// of QC_NT threads. ints: [2*heads] the pages P of query head h (0: not
// scored) and the offset of its scores in scores (the layout of
// be_quest_score), then [kvHeads] the tokens n of each KV head. Block h
// chooses the K-1 pages of highest score among pages [0, P-1), ties to the
// lower page, and page P-1; it writes the first ones, ascending, to pages
// [heads, max(K-1, 1)], and the tokens of every chosen page, in page order,
// to sel [heads, cap]: page p's tokens p*page ... p*page+page-1, the last
// page's up to n-1. The last block of each KV head's group to finish writes
// to cov[g] the number of distinct tokens the group chose, and sets its
// counter done[g] back to 0 (done is 0 between launches). Where lists >= 0
// it also writes, from pool offset lists on, each head's page lists for the
// split-KV kernels (Backend.listCall): head h's key pages at lists + 2*h*K,
// its value pages K words later, the chosen ones ascending and page P-1
// last, copied from its KV head's lists in the pool (their offsets kv[2g],
// kv[2g+1]). A head that is not scored writes none.
__device__ __forceinline__ void quest_choose_block(const double* __restrict__ scores, const int* __restrict__ ints, int heads,
                                                   int group, int K, int page, int cap, int* pages, int* sel, int* cov, int* done,
                                                   u64* __restrict__ pool, int lists, const int* __restrict__ kv, int h) {
    __shared__ int sLast;
    __shared__ u32 sCount;
    __shared__ u32 sBits[QC_BITS];
    const int tid = threadIdx.x, g = h / group;
    const int P = ints[2 * h], n = ints[2 * heads + g], k = K - 1, kr = max(k, 1);
    if (P > 0) {
        int* chosen = pages + (size_t)h * kr;
        if (k > 0) {
            // Registers for the thread's run of keys, the fewest that hold it:
            // every pass walks all E of them (guarded), so E = 16 where runs
            // are of 4 keys (2,047 pages) made each pass four times the work.
            const double* s = scores + ints[2 * h + 1];
            const int M = P - 1, per = (M + QC_NT - 1) / QC_NT;
            if (per <= 1) qc_select<1>(s, M, k, chosen);
            else if (per <= 2) qc_select<2>(s, M, k, chosen);
            else if (per <= 4) qc_select<4>(s, M, k, chosen);
            else if (per <= 8) qc_select<8>(s, M, k, chosen);
            else if (per <= QC_E) qc_select<QC_E>(s, M, k, chosen);
            else qc_select<0>(s, M, k, chosen);
        }
        __syncthreads();  // the block's chosen pages, written to global memory, visible to the block
        int* o = sel + (size_t)h * cap;
        for (int i = tid; i < k * page; i += QC_NT) o[i] = chosen[i / page] * page + i % page;
        const int first = (P - 1) * page;  // the last page's first token
        for (int t = first + tid; t < n; t += QC_NT) o[k * page + t - first] = t;
        if (lists >= 0) {
            u64* lk = pool + lists + (size_t)2 * h * K;
            const u64* rk = pool + kv[2 * g];
            const u64* rv = pool + kv[2 * g + 1];
            for (int i = tid; i < K; i += QC_NT) {
                const int pg = i < k ? chosen[i] : P - 1;
                lk[i] = rk[pg];
                lk[K + i] = rv[pg];
            }
        }
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
        const int words = (P + 31) / 32;
        u32 c = 0;
        if (words <= QC_BITS) {
            // A bit a page: the group's chosen pages set theirs, then the set
            // bits are counted (7-8 µs of the choice at 4K-32K went to the
            // binary searches below, a load from the L2 a step).
            for (int i = tid; i < words; i += QC_NT) sBits[i] = 0;
            __syncthreads();
            for (int x = tid; x < group * k; x += QC_NT) {
                const int v = __ldcg(first + (size_t)(x / k) * kr + x % k);
                atomicOr(&sBits[v >> 5], 1u << (v & 31));
            }
            __syncthreads();
            for (int i = tid; i < words; i += QC_NT) c += __popc(sBits[i]);
        } else {
            for (int x = tid; x < group * k; x += QC_NT) {
                const int j = x / k, v = __ldcg(first + (size_t)j * kr + x % k);
                bool seen = false;
                for (int i = 0; i < j && !seen; ++i) seen = qc_in(first + (size_t)i * kr, k, v);
                c += !seen;
            }
        }
        if (c > 0) atomicAdd(&sCount, c);
        __syncthreads();
    }
    if (tid == 0) {
        cov[g] = P > 0 ? (int)sCount * page + n - (P - 1) * page : n;
        done[g] = 0;
    }
}

// QuestCall is one Choose of a batch of them (Backend.flushQuest): its
// query row, its scores, its choice's buffers (as quest_choose_block takes
// them), where its ints (be_quest_score's and quest_choose_block's layout) and
// its KV heads' bounds (in ptrs) start, and its shape.
struct QuestCall {
    const float* q;
    double* scores;
    int* pages;
    int* sel;
    int* cov;
    int* done;
    int ints, bounds, heads, group, K, cap;
    int lists, kv;  // the heads' page lists in the pool (-1: none), their KV heads' list offsets in ints
};

// be_quest_score_batch is be_quest_score over the calls of tab, but for the
// last page of each head, which the choice takes unscored: grid (ceil(most
// pages / qs_pages(hd, kvt)), most KV heads, calls), block QS_NT; every call's
// bounds of page type kvt.
extern "C" __global__ void __launch_bounds__(QS_NT) be_quest_score_batch(const QuestCall* __restrict__ tab,
                                                                        const int* __restrict__ ints,
                                                                        const u64* __restrict__ ptrs, int hd, int kvt) {
    const QuestCall e = tab[blockIdx.z];
    const int g = blockIdx.y;
    if (g * e.group >= e.heads) return;
    quest_score_block(e.scores, e.q, ptrs + e.bounds, ints + e.ints, 1, e.group, hd, kvt, g, blockIdx.x);
}

// be_quest_choose_batch is quest_choose_block over the calls of tab: grid (most
// heads, calls + xRows), block QC_NT; a block past its call's heads does
// nothing. pool: the device page tables (the calls' page lists, where they
// have them). The blocks of rows calls and later fold one token each into
// the bounds, as be_quest_extend does: block (x, calls + y) takes its
// descriptor y * gridDim.x + x of the nx at xInts (their pointers at xPtrs,
// of head dim xHd and page type xKvt), where every descriptor folds at most
// one token, into the last page of its KV head, which the calls' scores
// (be_quest_score_batch) leave out: one launch fewer in Quest's chain a
// layer (Backend.flushQuest).
extern "C" __global__ void __launch_bounds__(QC_NT) be_quest_choose_batch(const QuestCall* __restrict__ tab,
                                                                          const int* __restrict__ ints, int page, u64* pool, int calls,
                                                                          const u64* __restrict__ xPtrs, const int* __restrict__ xInts,
                                                                          int nx, int xHd, int xKvt) {
    if ((int)blockIdx.y >= calls) {
        const int d = ((int)blockIdx.y - calls) * (int)gridDim.x + (int)blockIdx.x;
        if (d < nx) quest_extend_block(xPtrs, xInts + d * QX_WORDS, page, xHd, xKvt, 0);
        return;
    }
    const QuestCall e = tab[blockIdx.y];
    if ((int)blockIdx.x >= e.heads) return;
    quest_choose_block(e.scores, ints + e.ints, e.heads, e.group, e.K, page, e.cap, e.pages, e.sel, e.cov, e.done, pool, e.lists,
                       ints + e.kv, blockIdx.x);
}
