// The runtime's split-KV decode attention of many calls in one launch
// (Backend.AttendBatch) on CUDA cores: the probabilities' sums of a batch
// (attn_rtb_acc), the call table, the boxes, the kernels attn_rtb_*, their
// combine and attn_rtb_put. Builds on attention.cu and attention_rt.cu,
// before this file in the source (cuda.go).

// AccCall is one call of attn_rtb_acc: its sums (astride a query head), its
// raw scores and (row, head) maxima and sums as a batched launch of
// attn_rtb left them, its ints (at base in the batch's) and header, and
// the first query position whose probabilities count.
struct AccCall {
    float* acc;
    const float* raw;
    const float* ml;
    int base, hdr, astride, accFrom;
    int grp, pad;
};

// attn_rtb_acc is rt_acc over the calls of tab: grid (ceil(longest list /
// 128), most heads (KV heads of a grp call), calls), block 128.
extern "C" __global__ void attn_rtb_acc(const AccCall* __restrict__ tab, const int* __restrict__ ints) {
    pdl_wait();
    const AccCall e = tab[blockIdx.z];
    rt_acc(e.acc, e.astride, e.raw, e.ml, ints + e.base, e.hdr, e.accFrom, e.grp, blockIdx.y, blockIdx.x * blockDim.x + threadIdx.x);
}

// ---- the runtime's attention of many calls in one launch (Backend.AttendBatch) ----
//
// A batched launch runs the split rows of several calls (the streams of a
// batch, each over its own cache, descriptors and header) as one grid: the
// calls' ints lie one after another in ints, each with offsets relative to
// its own start, and tab [calls] says where each call starts among the
// launch's split rows (ascending), where its ints and header lie, and its
// queries and outputs. Every call has the same head dim, virtual heads per
// split row, page type and re-positioning; page lists come from the
// backend's device tables (ptrs, shared by every call).
struct RtbCall {
    int srow0;  // the call's first split row in the launch
    int base;   // the call's ints start at ints + base
    int hdr;    // its header, from its ints
    int pad;
    const float* q;
    float* out;
    float* raw;  // a call with accumulated probabilities (H2O, TOVA): its base-2 scores (attn_rt's raw); else null
    float* ml;   // and each (row, head)'s max and sum; else null
};

// RtbBox carries a batched launch's table and ints by value, as RtBox a
// single call's: n > 0 words, the launch's nst table entries (RTB_CALL_WORDS
// each) and then the batch's ints; n = 0: both were uploaded (tab, ints).
// The host sends a box only where nothing after the launch reads them from
// memory (no accumulated probabilities, one launch; a device selection is
// read where its kernel left it, rt_sel), and gives the launch's combine
// the same box. 8-aligned: the entries hold pointers. RTB_BOX_WORDS is RT_BOX_WORDS (parameters under 4 KB: 4
// streams of 32/8 heads, 201 words a call) unless the host defines more
// (rtbBoxWords: 2,048 where NVRTC and the driver take CUDA 12.1's 32 KB of
// parameters, 8 streams of 32/8).
#define RTB_CALL_WORDS 12
#ifndef RTB_BOX_WORDS
#define RTB_BOX_WORDS RT_BOX_WORDS
#endif
struct __align__(8) RtbBox {
    int n;
    int pad;
    int w[RTB_BOX_WORDS];
};

// RtbXBox is the larger box of the batched kernels and the combine, whose
// entry points taking it end in _xb (attn_rtb_d*_xb, attn_rtb_d*_tc_xb,
// attn_rtb_combine_d*_xb): a batch whose metadata RtbBox cannot hold
// (more than 8 streams of 32/8) goes by value in it (rtbXBoxWords:
// RTB_XBOX_WORDS, up to 8,000 words where CUDA 12.1's parameters are
// taken; its bytes cost every launch that takes it, so small batches keep
// RtbBox). Without RTB_XBOX_WORDS it is RtbBox's size and the host does
// not use it.
#ifndef RTB_XBOX_WORDS
#define RTB_XBOX_WORDS RTB_BOX_WORDS
#endif
struct __align__(8) RtbXBox {
    int n;
    int pad;
    int w[RTB_XBOX_WORDS];
};

// rtb_meta points tab and ints at box's where it holds them.
template <class Box>
__device__ __forceinline__ void rtb_meta(const Box& box, int nst, const RtbCall* __restrict__& tab, const int* __restrict__& ints) {
    if (box.n <= 0) return;
    tab = reinterpret_cast<const RtbCall*>(box.w);
    ints = box.w + nst * RTB_CALL_WORDS;
}

// rtb_call finds the call of split row rg among nst calls (the last whose
// first split row is <= rg).
__device__ __forceinline__ int rtb_call(const RtbCall* __restrict__ tab, int nst, int rg) {
    int lo = 0, hi = nst - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (tab[mid].srow0 <= rg) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// rtb_row finds a batched launch's block's split row: rg in the launch
// (grid y and z), its call e (ints ci) and r in that call; it reports
// whether the block has one (rg past the launch's or r past its call's
// split rows: none).
__device__ __forceinline__ bool rtb_row(const RtbCall* __restrict__ tab, int nst, int nsg, const int* __restrict__ ints, int& rg,
                                        RtbCall& e, const int*& ci, int& r) {
    rg = blockIdx.y + blockIdx.z * gridDim.y;
    if (rg >= nsg) return false;
    e = tab[rtb_call(tab, nst, rg)];
    ci = ints + e.base;
    r = rg - e.srow0;
    return r < ci[e.hdr + RH_SROWS];
}

// attn_rtb_d{D}_g{G}_{bf16,f32}[_sh] is attn_rt over the nsg split rows of
// nst calls (tab): block (chunk blockIdx.x, split row blockIdx.y + blockIdx.z
// * gridDim.y of the launch); partials (and the fused merge's counters) are
// indexed by the launch's split row. The same names ending _xb take the
// larger box, RtbXBox (parts 13-16).
#define ATTN_RTB_KERNEL(D, G, KT, KN, SH, SN, BOX, BN)                                                               \
    extern "C" __global__ void __launch_bounds__(ATTN_NT, ((G) == 4 && (KT) == KV_BF16 ? ATTN_MINB : 1))            \
        attn_rtb_d##D##_g##G##_##KN##SN##BN(const RtbCall* __restrict__ tab, int nst, int nsg, const u64* __restrict__ ptrs, \
                                       const int* __restrict__ ints, int chunk, int pgw, float scaleLog2,             \
                                       float* __restrict__ partO, float* __restrict__ partML, int* __restrict__ counters, \
                                       const __grid_constant__ BOX box) {                                            \
        pdl_trigger();                                                                                                \
        pdl_wait();                                                                                                   \
        rtb_meta(box, nst, tab, ints);                                                                                \
        int rg, r;                                                                                                    \
        RtbCall e;                                                                                                    \
        const int* ci;                                                                                                \
        if (!rtb_row(tab, nst, nsg, ints, rg, e, ci, r)) return;                                                      \
        attn_rt_row<D, G, KT, SH>(e.q, ptrs, ci, e.hdr, chunk, pgw, scaleLog2, partO, partML, counters, e.out,         \
                                  e.raw, e.ml, r, rg, nsg);                                                           \
    }
#define ATTN_RTB_KERNELS(D, G, BOX, BN)                            \
    ATTN_RTB_KERNEL(D, G, KV_BF16, bf16, false, , BOX, BN)         \
    ATTN_RTB_KERNEL(D, G, KV_BF16, bf16, true, _sh, BOX, BN)       \
    ATTN_RTB_KERNEL(D, G, KV_F32, f32, false, , BOX, BN)           \
    ATTN_RTB_KERNEL(D, G, KV_F32, f32, true, _sh, BOX, BN)

#if KVB_IN(5)
ATTN_RTB_KERNELS(64, 1, RtbBox, )
ATTN_RTB_KERNELS(64, 2, RtbBox, )
#endif
#if KVB_IN(6)
ATTN_RTB_KERNELS(64, 4, RtbBox, )
ATTN_RTB_KERNELS(64, 8, RtbBox, )
#endif
#if KVB_IN(7)
ATTN_RTB_KERNELS(128, 1, RtbBox, )
ATTN_RTB_KERNELS(128, 2, RtbBox, )
#endif
#if KVB_IN(8)
ATTN_RTB_KERNELS(128, 4, RtbBox, )
ATTN_RTB_KERNELS(128, 8, RtbBox, )
#endif
#if KVB_IN(13)
ATTN_RTB_KERNELS(64, 1, RtbXBox, _xb)
ATTN_RTB_KERNELS(64, 2, RtbXBox, _xb)
#endif
#if KVB_IN(14)
ATTN_RTB_KERNELS(64, 4, RtbXBox, _xb)
ATTN_RTB_KERNELS(64, 8, RtbXBox, _xb)
#endif
#if KVB_IN(15)
ATTN_RTB_KERNELS(128, 1, RtbXBox, _xb)
ATTN_RTB_KERNELS(128, 2, RtbXBox, _xb)
#endif
#if KVB_IN(16)
ATTN_RTB_KERNELS(128, 4, RtbXBox, _xb)
ATTN_RTB_KERNELS(128, 8, RtbXBox, _xb)
#endif

// attn_rtb_combine_d{D} is attn_rt_combine over a batched launch's split
// rows (grid (G, up to 65535 split rows, D/32 slices times the split rows'
// blocks of 65535)); attn_rtb_combine_d{D}_xb the same with RtbXBox.
#define RTB_COMBINE_KERNEL(D, BOX, SUF)                                                                              \
    extern "C" __global__ void __launch_bounds__(COMB_NT) attn_rtb_combine_d##D##SUF(                                \
        const float* __restrict__ partO, const float* __restrict__ partML, int nchunks, const RtbCall* __restrict__ tab, \
        int nst, int nsg, const int* __restrict__ ints, const __grid_constant__ BOX box) {                           \
        const int rg = blockIdx.y + blockIdx.z / ((D) / 32) * gridDim.y;                                            \
        if (rg >= nsg) return;                                                                                       \
        rtb_meta(box, nst, tab, ints);                                                                               \
        const RtbCall e = tab[rtb_call(tab, nst, rg)];                                                               \
        const int* H = ints + e.base + e.hdr;                                                                        \
        const int r = rg - e.srow0;                                                                                  \
        if (r >= H[RH_SROWS]) return;                                                                                \
        const int it = rt_item(H, r, blockIdx.x);                                                                    \
        attn_combine<D>(partO, partML, nchunks, rg, blockIdx.z % ((D) / 32), it >= 0 ? e.out + (size_t)it * (D) : nullptr, \
                        e.ml != nullptr && it >= 0 ? e.ml + (size_t)it * 2 : nullptr);                               \
    }

RTB_COMBINE_KERNEL(64, RtbBox, )
RTB_COMBINE_KERNEL(128, RtbBox, )
RTB_COMBINE_KERNEL(64, RtbXBox, _xb)
RTB_COMBINE_KERNEL(128, RtbXBox, _xb)

// attn_rtb_put writes box's n words at dst: a batch's table and ints too
// long for one launch's box, carried in pieces by launches of one block
// instead of a copy on the stream. Its room is fresh (nothing ahead of it
// reads it), so it starts at once, beside the kernel ahead of it
// (programmatic dependent launch); it waits for that kernel last, so that
// a kernel waiting on this one sees both finished.
extern "C" __global__ void __launch_bounds__(256) attn_rtb_put(int* __restrict__ dst, const __grid_constant__ RtbBox box) {
    pdl_trigger();
    for (int i = threadIdx.x; i < box.n; i += blockDim.x) dst[i] = box.w[i];
    pdl_wait();
}
