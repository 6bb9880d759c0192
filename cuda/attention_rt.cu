// The runtime's split-KV decode attention of one call (Backend.Attend) on
// CUDA cores: the call's descriptors and header, its trace, the source
// RtSrc, the kernels attn_rt_*, their combine and the probabilities' sums
// (rt_acc, attn_rt_acc). Its shared device code (attn_core, the merges) is
// in attention.cu, before this file in the source (cuda.go).

// ---- the runtime's attention (Backend.Attend) ----
//
// ints (uploaded per call by backend_attention.go) holds the SD_WORDS
// descriptor of each KV head (backend.cu: token count, page size, key and
// value page lists in ptrs, positions (-1: every token visible to every
// row), shifts (-1: none), and the range [SD_LO, SD_HI) of token indices a
// row without a selection reads), each query row's (position, shift), each
// query head's (selection offset, count; -1: none), the RoPE inverse
// frequencies, and the call's header at hdr (RH_*). A split row is
// (KV head kvh, head subgroup s, row tile): the GR query heads kvh*G +
// s*GR .. +GR-1 of the RT query rows tile*RT .. +RT-1 as GH virtual heads
// a row, RT*GH virtual heads read together (GR = GH, but for a group of 3,
// 5, 6 or 7 heads read as one subgroup of GH = 4 or 8, whose virtual heads
// past GR are empty); split row r = (kvh*(G/GR) + s)*tiles + tile. A
// selection is the token list of the subgroup's first head (GR = G: the
// group shares it; GR = 1: per head). Keys are masked by position where
// positions are given (causal, and the sliding window).

#define RH_ROWS 0    // query rows
#define RH_HEADS 1   // query heads
#define RH_G 2       // query heads per KV head
#define RH_GH 3      // virtual heads of a row's subgroup in a split row (a power of two)
#define RH_RT 4      // query rows per split row
#define RH_TILES 5   // row tiles: ceil(rows / RT)
#define RH_WIN 6     // sliding window (0: none)
#define RH_ROWOFF 7  // offset of the rows' (position, shift)
#define RH_HEADOFF 8 // offset of the heads' (selection offset, count)
#define RH_INVOFF 9  // offset of the RoPE inverse frequencies [D/2] (float bits)
#define RH_STRIDE 10 // raw scores per (row, head)
#define RH_INTER 11  // interleaved RoPE pairs (else rotate-half)
#define RH_SROWS 12  // split rows (launches span them in grid y and z: at most 65535 in y)
#define RH_LEAN 13   // 1: no head selects and every token is visible (no token ids or positions staged)
#define RH_EARLY 14  // 1: every KV head's tokens but its last were written before an operation that serialised the stream ahead of this launch (the tensor-core kernel reads them before pdl_wait)
#define RH_GR 15     // query heads of a subgroup (RH_GH virtual heads of which the first RH_GR are real; sub = G / GR)
#define RH_NOLO 16   // 1: the tensor-core kernel takes q and p in bf16 alone (no low halves; KVBENCH_ATTN_TC_LO=off)
#define RH_TRACE 17  // (2 words, low first) the device address of the launch's trace (rt_trace), 0: none
#define RH_SEL 19    // (2 words, low first) where a selecting head's offsets count from, as an address (rt_sel); 0: the call's ints
#define RH_PBASE 21  // (2 words, low first) the address the descriptors' SD_KO and SD_VO count from
#define RH_EPOCH 23  // the polled merge's epoch (attn_merge_poll; 0: merged by a count, or not in the kernel)
#define RH_WORDS 24

// sd_page is the address of page pg of the key (isV false) or value list
// of a KV head whose descriptor sd gives its pages' stride (SD_PST not 0),
// in a call of header H: arithmetic, no load.
__device__ __forceinline__ u64 sd_page(const int* __restrict__ H, const int* __restrict__ sd, bool isV, int pg) {
    const u64 base = ((u64)(u32)H[RH_PBASE + 1] << 32) | (u32)H[RH_PBASE];
    return base + 16ull * (u32)sd[isV ? SD_VO : SD_KO] + (u64)((long long)pg * sd[SD_PST]);
}

// rt_sel is where the selection at offset off of a call's head table lies:
// in the call's ints, or where RH_SEL says (a device selection read where
// its kernel left it, Quest's choice: no copy into the ints ahead of the
// launch, and the ints can go by value). RH_SEL holds that selection's
// address less 4 bytes a word of the offsets' base, so that the same
// offsets serve either way. Read only after pdl_wait: the kernel ahead may
// be the one that writes it.
__device__ __forceinline__ const int* rt_sel(const int* __restrict__ ints, const int* __restrict__ H, int off) {
    const u64 a = ((u64)(u32)H[RH_SEL + 1] << 32) | (u32)H[RH_SEL];
    return a != 0 ? reinterpret_cast<const int*>(a + 4ull * (u32)off) : ints + off;
}

// A traced launch (Backend.SetAttnTrace; kvbench kernels --trace) has
// each block (chunk c, split row r) of attn_rt and the tensor-core kernel
// write TR_WORDS words at (r * chunks + c) * TR_WORDS of the trace: [0] its
// start, [1] its page pointers staged, [2] warp 0's first tile landed (the
// tensor-core kernel; attn_rt's two passes leave it 0), [3] every warp's
// tiles done, [4] its partial written, after the fused merge where it ran
// one (globaltimer, ns), [5] its multiprocessor, [6] warp 0's tiles (the
// tensor-core kernel), [7] its tokens, and inside [3]..[4] (the tensor-core
// kernel; attn_rt leaves them 0) [8] thread 0's block maxima and sums
// formed (no barrier: the compiler may move some of that arithmetic past
// it) and [9] the warps' outputs in shared memory (after the barrier
// before attn_finish); and the combine's block b (grid x fastest) two words
// after the split blocks': [0] its start, [1] its end. The kernels write
// nothing else there; the batched launches none.
#define TR_WORDS 10

// KVB_TRACE: the kernels built for the trace (KVBENCH_ATTN_TRACE=1 adds
// -DKVB_TRACE=1). Without it rt_trace is nullptr, a constant: every stamp,
// and the barriers that guard them, are compiled out, and the kernels are
// what they would be without the trace's code.
#ifndef KVB_TRACE
#define KVB_TRACE 0
#endif

// rt_trace is the trace of the call whose header is H (nullptr: none, and
// always in a build without KVB_TRACE).
__device__ __forceinline__ u64* rt_trace(const int* H) {
#if KVB_TRACE
    return reinterpret_cast<u64*>(((u64)(u32)H[RH_TRACE + 1] << 32) | (u32)H[RH_TRACE]);
#else
    return nullptr;
#endif
}

// rt_trace_block is block (chunk c, split row rg)'s words of the trace of
// the call whose header is H (nullptr: none).
__device__ __forceinline__ u64* rt_trace_block(const int* H, int rg, int c) {
    u64* t = rt_trace(H);
    return t != nullptr ? t + ((size_t)rg * gridDim.x + c) * TR_WORDS : t;
}

// tr_staged has thread 0 stamp the block's start t0, its page pointers
// staged (now), its multiprocessor and its tokens (after the staging's
// barrier).
__device__ __forceinline__ void tr_staged(u64* tr, u64 t0, int len) {
    if (tr != nullptr && threadIdx.x == 0) {
        tr[0] = t0;
        tr[1] = gtime();
        tr[5] = sm_id();
        tr[7] = len;
    }
}

// tr_stamp has thread 0 stamp word i once the whole block is there (a
// barrier: every thread of the block calls it).
__device__ __forceinline__ void tr_stamp(u64* tr, int i) {
    if (tr != nullptr) {
        __syncthreads();
        if (threadIdx.x == 0) tr[i] = gtime();
    }
}

// rt_item returns row*heads + head of virtual head v of split row r, or -1
// past the last query row or past a subgroup's real heads (a group of 3, 5,
// 6 or 7 heads padded to 4 or 8 virtual ones: RH_GR of RH_GH are real).
__device__ __forceinline__ int rt_item(const int* __restrict__ H, int r, int v) {
    const int T = H[RH_TILES], GH = H[RH_GH], GR = H[RH_GR], sub = H[RH_G] / GR;
    const int tile = r % T, q2 = r / T, s = q2 % sub, kvh = q2 / sub;
    const int row = tile * H[RH_RT] + v / GH;
    if (row >= H[RH_ROWS] || v % GH >= GR) return -1;
    return row * H[RH_HEADS] + kvh * H[RH_G] + s * GR + v % GH;
}

// rt_kvh is the KV head of split row r.
__device__ __forceinline__ int rt_kvh(const int* __restrict__ H, int r) { return r / H[RH_TILES] / (H[RH_G] / H[RH_GR]); }

// RtSrc is the runtime's source for attn_core: token i of the chunk is
// stok[i] (a selection) or lo + c0 + i (a range); rows are found through the
// KV head's page lists (kp, vp; a range's pages staged in spk, spv from
// page pg0); positions spos and shifts ssh are staged per token where given;
// sQ, sLo, sQs, sItem are each virtual head's query position, the highest
// position its window hides, its shift and its row*heads + head (-1: none).
// LEAN: a range whose tokens are all visible, in pages of a power of two
// tokens (a lean call's, RH_LEAN): the token, its page and its visibility
// cost the fewest instructions (the loops issue about as many as over a
// contiguous cache, which matters at the few warps a multiprocessor holds).
template <int D, int G, int KT, bool LEAN = false>
struct RtSrc {
    const u64* kp;
    const u64* vp;
    const u64* spk;
    const u64* spv;
    const int* stok;
    const int* spos;
    const int* ssh;
    const float* sinv;
    const int* sQ;
    const int* sLo;
    const int* sQs;
    const int* sItem;
    float* raw;
    int stride, pg0, psh, ps, lo, c0, nvalid;
    bool selMode, hasPos, hasShift, inter;
    int nrot;  // tokens [0, nrot) of the chunk may have their key turned; none past them
    __device__ int token(int i) const { return !LEAN && selMode ? stok[i] : lo + c0 + i; }
    __device__ const void* row(bool isV, int t) const {
        if (t < 0) return kp;  // not read
        if (LEAN) {
            const u64 base = (isV ? spv : spk)[(t >> psh) - pg0];
            return reinterpret_cast<const char*>(base) + (size_t)(t & (ps - 1)) * (D * (KT == KV_F32 ? 4 : 2));
        }
        const int pg = psh >= 0 ? t >> psh : t / ps;
        const int sl = t - pg * ps;
        const u64 base = selMode ? __ldg(isV ? vp + pg : kp + pg) : (isV ? spv : spk)[pg - pg0];
        return reinterpret_cast<const char*>(base) + (size_t)sl * (D * (KT == KV_F32 ? 4 : 2));
    }
    __device__ bool visible(int i, int h) const {
        if (LEAN || !hasPos) return true;
        const int p = spos[i];
        return p <= sQ[h] && p > sLo[h];
    }
    __device__ bool needs_rot(int i) const {
        if (LEAN || !hasShift) return false;
        const int s = ssh[i];
#pragma unroll
        for (int g = 0; g < G; ++g)
            if (g < nvalid && s != sQs[g]) return true;
        return false;
    }
    __device__ int rot_limit() const { return nrot; }
    __device__ int delta(int i, int g) const { return hasShift ? ssh[i] - sQs[g] : 0; }
    __device__ float invf(int f) const { return sinv[f]; }
    __device__ bool interleaved() const { return inter; }
    __device__ void put_raw(int h, int i, float x) const {
        if (raw != nullptr && sItem[h] >= 0) raw[(size_t)sItem[h] * stride + c0 + i] = x;
    }
};

// attn_rt_row is block (chunk blockIdx.x, split row r of the call whose
// ints and header are ints and hdr) of the runtime's attention; its partials
// go to split row rg of nsg in partO, partML and counters (rg = r, nsg the
// call's split rows, for one call; the split row among every call's for a
// batched launch, attn_rtb). The caller has checked r < the call's split
// rows; the ints must be readable before the kernel ahead finishes (by value,
// or uploaded ahead of the launch): attn_rt_row reads them, then waits for
// that kernel (pdl_wait) before the page tables, q and the keys. LEANOK: a
// lean call (RH_LEAN) over pages of a power of two tokens runs the loops of
// the lean source (RtSrc's LEAN), compiled in only where asked (attn_rt
// without re-positioned keys). UX: steps of loads in flight (0: attn_core's
// default for G and KT). ONE: a single call's launch (attn_rt), whose rows
// may merge polled (RH_EPOCH).
template <int D, int G, int KT, bool SH, bool LEANOK = false, int UX = 0, bool ONE = false>
__device__ __forceinline__ void attn_rt_row(const float* __restrict__ q, const u64* __restrict__ ptrs, const int* __restrict__ ints,
                                            int hdr, int chunk, int pgw, float scaleLog2, float* __restrict__ partO,
                                            float* __restrict__ partML, int* __restrict__ counters, float* __restrict__ out,
                                            float* __restrict__ raw, float* __restrict__ ml, int r, int rg, int nsg);

// RtBox carries a small call's ints by value (n > 0 words; n = 0: the ints
// were uploaded): no copy ahead of the kernel on the stream, and the
// header and descriptors are read from the launch's parameters instead of
// memory the copy engine just wrote. RtHead is a call's header alone, for
// the combine. 960 words hold a decode call of 32 KV heads (MHA: 13
// descriptor words a KV head) and keep the kernel's parameters under the 4
// KB every CUDA version takes (3,844 bytes of box, 88 of the rest); 384
// words, which held 32/8 alone, left MHA calls uploading their ints (H200,
// 32/32 at 512 tokens: 20.4 us against 12.3 by value).
#define RT_BOX_WORDS 960
struct RtBox {
    int n;
    int w[RT_BOX_WORDS];
};
struct RtHead {
    int w[RH_WORDS];
};

// rt_ints returns a call's ints: box's where it holds them (block 0 then
// writes them to ints, where the kernels after this one, attn_rt_acc, read
// them), else ints.
__device__ __forceinline__ const int* rt_ints(const int* __restrict__ ints, const RtBox& box) {
    if (box.n <= 0) return ints;
    if (blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0)
        for (int i = threadIdx.x; i < box.n; i += blockDim.x) const_cast<int*>(ints)[i] = box.w[i];
    return box.w;
}

// attn_rt is split-KV block (chunk blockIdx.x, split row blockIdx.y +
// blockIdx.z * gridDim.y; past the last split row a block does nothing) of the
// runtime's attention: q, out [rows, heads, D] float32; pages of type KT;
// SH: re-positioned keys (shifts) may occur. pgw is the room for staged page
// pointers per list (pages a chunk's range spans at most). Outputs as
// attn_finish writes them (ATTN_RT_PARAMS), indexed by split row; raw
// (nullptr: none) receives the base-2 scores at [(row*heads +
// head)*stride + index in the row's token list], and ml (nullptr: none;
// fused merge only) each (row, head)'s max and sum at [(row*heads +
// head)*2]. The call's ints are box's where it
// holds them (block 0 then writes them to ints, where the kernels after
// this one, attn_rt_acc, read them), else at ints.
template <int D, int G, int KT, bool SH, int UX = 0>
__device__ __forceinline__ void attn_rt(const float* __restrict__ q, const u64* __restrict__ ptrs, const int* __restrict__ ints,
                                        int hdr, int chunk, int pgw, float scaleLog2, float* __restrict__ partO,
                                        float* __restrict__ partML, int* __restrict__ counters, float* __restrict__ out,
                                        float* __restrict__ raw, float* __restrict__ ml, const RtBox& box) {
    pdl_trigger();
    const int* I = rt_ints(ints, box);
    const int r = blockIdx.y + blockIdx.z * gridDim.y;
    const int nsrows = I[hdr + RH_SROWS];
    if (r >= nsrows) return;
    attn_rt_row<D, G, KT, SH, !SH, UX, true>(q, ptrs, I, hdr, chunk, pgw, scaleLog2, partO, partML, counters, out, raw, ml, r, r,
                                             nsrows);
}

template <int D, int G, int KT, bool SH, bool LEANOK, int UX, bool ONE>
__device__ __forceinline__ void attn_rt_row(const float* __restrict__ q, const u64* __restrict__ ptrs, const int* __restrict__ ints,
                                            int hdr, int chunk, int pgw, float scaleLog2, float* __restrict__ partO,
                                            float* __restrict__ partML, int* __restrict__ counters, float* __restrict__ out,
                                            float* __restrict__ raw, float* __restrict__ ml, int r, int rg, int nsg) {
    constexpr int NT = ATTN_NT;
    constexpr int L = D / 8;
    // smem: scores/probabilities [G][chunk]; the chunk's token ids and
    // positions [chunk] each (none in a lean call, RH_LEAN: no selection, no
    // positions), (SH) its shifts [chunk]; (SH) the inverse frequencies
    // [D/2]; the range's key and value page pointers [pgw] each. After pass 2
    // the warps' partial outputs [NW][G][D] from offset 0.
    extern __shared__ float smem[];
    __shared__ int sQ[G], sLo[G], sQs[G], sItem[G];

    const int* H = ints + hdr;
    const int staged = H[RH_LEAN] != 0 ? 0 : chunk;  // room for the token ids and for the positions
    const int c = blockIdx.x, tid = threadIdx.x, lane = tid % L;
    const int heads = H[RH_HEADS];
    const int kvh = rt_kvh(H, r);
    const int* sd = ints + kvh * SD_WORDS;
    const int h0 = rt_item(H, r, 0) % heads;  // the subgroup's first head (row 0 of a tile always exists)
    const int selCount = ints[H[RH_HEADOFF] + 2 * h0 + 1];
    const bool selMode = selCount >= 0;
    const int* sel = selMode ? rt_sel(ints, H, ints[H[RH_HEADOFF] + 2 * h0]) : nullptr;
    const int lo = sd[SD_LO], total = selMode ? selCount : sd[SD_HI] - lo;
    const int c0 = c * chunk, len = max(0, min(chunk, total - c0));
    const int ps = sd[SD_PS], psh = (ps & (ps - 1)) == 0 ? __ffs(ps) - 1 : -1;
    const int* pos = sd[SD_POS] >= 0 ? ints + sd[SD_POS] : nullptr;
    const int* shift = SH && sd[SD_SHIFT] >= 0 ? ints + sd[SD_SHIFT] : nullptr;
    const u64* kp = ptrs + sd[SD_K];
    const u64* vp = ptrs + sd[SD_V];
    int* stok = reinterpret_cast<int*>(smem + G * chunk);
    int* spos = stok + staged;
    int* ssh = spos + staged;
    float* sinv = reinterpret_cast<float*>(ssh + chunk);
    u64* spk = reinterpret_cast<u64*>(SH ? reinterpret_cast<int*>(sinv + D / 2) : ssh);
    u64* spv = spk + pgw;

    if (tid < G) {
        const int it = rt_item(H, r, tid);
        sItem[tid] = it;
        const int row = it >= 0 ? it / heads : 0;
        const int qp = it >= 0 ? ints[H[RH_ROWOFF] + 2 * row] : (int)0x80000000;  // none: every key hidden
        sQ[tid] = qp;
        sLo[tid] = it >= 0 ? be_win_lo(qp, H[RH_WIN]) : (int)0x80000000;
        sQs[tid] = it >= 0 ? ints[H[RH_ROWOFF] + 2 * row + 1] : 0;
    }
    u64* tr = rt_trace_block(H, rg, c);  // a traced launch: this block's words (TR_WORDS)
    const u64 tStart = tr != nullptr ? gtime() : 0;
    // The call's ints are ready (uploaded before the launch, or by value);
    // the page tables, q and the keys may be written by the kernels just
    // before this one.
    pdl_wait();
    int pg0 = 0;
    if (len > 0) {
        if (selMode) {
            for (int i = tid; i < len; i += NT) stok[i] = sel[c0 + i];
        } else {
            const int t0 = lo + c0, t1 = lo + c0 + len - 1;
            pg0 = psh >= 0 ? t0 >> psh : t0 / ps;
            const int npg = (psh >= 0 ? t1 >> psh : t1 / ps) - pg0 + 1;
            const bool arith = sd[SD_PST] != 0;  // pages one stride apart: their addresses, no pointer loaded
            for (int j = tid; j < npg; j += NT) {
                spk[j] = arith ? sd_page(H, sd, false, pg0 + j) : kp[pg0 + j];
                spv[j] = arith ? sd_page(H, sd, true, pg0 + j) : vp[pg0 + j];
            }
        }
        if (pos != nullptr || shift != nullptr) {
            for (int i = tid; i < len; i += NT) {
                const int t = selMode ? sel[c0 + i] : lo + c0 + i;
                if (pos != nullptr) spos[i] = pos[t];
                if (SH && shift != nullptr) ssh[i] = be_shift(shift, sd, t);
            }
        }
    }
    if (SH)
        for (int j = tid; j < D / 2; j += NT) sinv[j] = __int_as_float(ints[H[RH_INVOFF] + j]);
    __syncthreads();
    tr_staged(tr, tStart, len);  // no first tile stamped: the two passes count from here

    int nvalid = 0;
#pragma unroll
    for (int g = 0; g < G; ++g) nvalid += sItem[g] >= 0;
    // SH: the chunk's tokens [0, nrot) may need their key turned. With every
    // query's shift 0, a range's tokens past the shifts given (SD_SHN: a
    // token past them has shift 0) need none (StreamingLLM: only the sinks,
    // in the first slots, are re-positioned).
    int nrot = 0;
    if (SH && shift != nullptr) {
        bool q0 = true;
#pragma unroll
        for (int g = 0; g < G; ++g) q0 = q0 && (sItem[g] < 0 || sQs[g] == 0);
        nrot = q0 && !selMode ? max(0, min(len, sd[SD_SHN] - (lo + c0))) : len;
    }
    auto qinit = [&](float(&qf)[G][8]) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
            const int it = sItem[g];
            float4 a = make_float4(0.f, 0.f, 0.f, 0.f), b = a;
            if (it >= 0) {
                const float* p = q + (size_t)it * D + lane * 8;
                a = *reinterpret_cast<const float4*>(p);
                b = *reinterpret_cast<const float4*>(p + 4);
            }
            qf[g][0] = a.x * scaleLog2;
            qf[g][1] = a.y * scaleLog2;
            qf[g][2] = a.z * scaleLog2;
            qf[g][3] = a.w * scaleLog2;
            qf[g][4] = b.x * scaleLog2;
            qf[g][5] = b.y * scaleLog2;
            qf[g][6] = b.z * scaleLog2;
            qf[g][7] = b.w * scaleLog2;
        }
    };
    float m[G], l[G];
    if (LEANOK && staged == 0 && psh >= 0 && !selMode && pos == nullptr) {
        // A lean call (no selection, no positions) over pages of a power of
        // two tokens: the lean source's loops.
        const RtSrc<D, G, KT, true> src{kp, vp, spk, spv, stok, spos, ssh, sinv, sQ, sLo, sQs, sItem, raw, H[RH_STRIDE],
                                        pg0, psh, ps, lo, c0, nvalid, false, false, false, H[RH_INTER] != 0, 0};
        attn_core<D, G, KT, SH, UX>(src, qinit, len, chunk, smem, m, l);
    } else {
        const RtSrc<D, G, KT> src{kp, vp, spk, spv, stok, spos, ssh, sinv, sQ, sLo, sQs, sItem, raw, H[RH_STRIDE],
                                  pg0, psh, ps, lo, c0, nvalid, selMode, pos != nullptr, shift != nullptr, H[RH_INTER] != 0, nrot};
        attn_core<D, G, KT, SH, UX>(src, qinit, len, chunk, smem, m, l);
    }
    tr_stamp(tr, 3);
    // The polled merge (attn_merge_poll): a single call's launch only (ONE;
    // a batched launch merges counted or by the combine).
    const u32 ep = ONE && counters != nullptr ? (u32)H[RH_EPOCH] : 0u;
    if (threadIdx.x == 0) {
#pragma unroll
        for (int g = 0; g < G; ++g) attn_put_ml<G>(partML, rg, c, gridDim.x, g, m[g], l[g], ep);
    }
    attn_finish<D, G, D>(
        smem, rg, c, gridDim.x, nsg, partO, partML, counters,
        [&](int g) { return sItem[g] >= 0 ? out + (size_t)sItem[g] * D : nullptr; },
        [&](int g) { return ml != nullptr && sItem[g] >= 0 ? ml + (size_t)sItem[g] * 2 : nullptr; }, ep);
    tr_stamp(tr, 4);  // every thread gets here (attn_finish's returns are the whole block's)
}

// Kernel parameters of attn_rt_*: q, ptrs, ints, hdr, chunk, pgw,
// scaleLog2, partO [split rows, chunks, G, D], partML [split rows, chunks,
// G, 2] (with counters: the fused merge's group partials after them),
// counters [split rows * (groups + 1)] (zero between launches; null:
// attn_rt_combine merges), out, raw, ml, box (the ints by value, or n = 0).
#define ATTN_RT_PARAMS                                                                                              \
    const float *__restrict__ q, const u64 *__restrict__ ptrs, const int *__restrict__ ints, int hdr, int chunk,  \
        int pgw, float scaleLog2, float *__restrict__ partO, float *__restrict__ partML, int *__restrict__ counters, \
        float *__restrict__ out, float *__restrict__ raw, float *__restrict__ ml, const __grid_constant__ RtBox box
#define ATTN_RT_ARGS q, ptrs, ints, hdr, chunk, pgw, scaleLog2, partO, partML, counters, out, raw, ml, box

// attn_rt_d{D}_g{G}_{bf16,f32}[_sh]: G virtual heads per split row, pages of
// bf16 or float32, _sh with re-positioned keys.
#define ATTN_RT_KERNEL(D, G, KT, KN, SH, SN)                                                                   \
    extern "C" __global__ void __launch_bounds__(ATTN_NT, ((G) == 4 && (KT) == KV_BF16 ? ATTN_MINB : 1))      \
        attn_rt_d##D##_g##G##_##KN##SN(ATTN_RT_PARAMS) {                                                       \
        attn_rt<D, G, KT, SH>(ATTN_RT_ARGS);                                                                   \
    }
// attn_rt_d{D}_g{G}_bf16_short: the bf16 kernel with ATTN_US steps of loads
// in flight, for chunks of a few steps (short contexts): a chunk of 32
// tokens is one step of 4 for head dim 128, where the default 6 leaves a
// third of the step's loads and sums masked off.
#ifndef ATTN_US
#define ATTN_US 4
#endif
#define ATTN_RT_SHORT(D, G)                                                                                    \
    extern "C" __global__ void __launch_bounds__(ATTN_NT, ((G) == 4 ? ATTN_MINB : 1))                         \
        attn_rt_d##D##_g##G##_bf16_short(ATTN_RT_PARAMS) {                                                     \
        attn_rt<D, G, KV_BF16, false, ATTN_US>(ATTN_RT_ARGS);                                                  \
    }
#define ATTN_RT_KERNELS(D, G)                            \
    ATTN_RT_KERNEL(D, G, KV_BF16, bf16, false, )         \
    ATTN_RT_KERNEL(D, G, KV_BF16, bf16, true, _sh)       \
    ATTN_RT_KERNEL(D, G, KV_F32, f32, false, )           \
    ATTN_RT_KERNEL(D, G, KV_F32, f32, true, _sh)

#if KVB_IN(1)
ATTN_RT_KERNELS(64, 1)
ATTN_RT_KERNELS(64, 2)
ATTN_RT_SHORT(64, 2)
#endif
#if KVB_IN(2)
ATTN_RT_KERNELS(64, 4)
ATTN_RT_KERNELS(64, 8)
ATTN_RT_SHORT(64, 4)
#endif
#if KVB_IN(3)
ATTN_RT_KERNELS(128, 1)
ATTN_RT_KERNELS(128, 2)
ATTN_RT_SHORT(128, 2)
#endif
#if KVB_IN(4)
ATTN_RT_KERNELS(128, 4)
ATTN_RT_KERNELS(128, 8)
ATTN_RT_SHORT(128, 4)
#endif

// attn_combine merges the partials of the chunks of a row, one virtual head
// and 32 channels per block: block (g, r, slice) writes outRow[slice*32 + j]
// = sum_c 2^(m_c - M) o_c[.] / sum_c 2^(m_c - M) l_c, M = max_c m_c (chunks
// with no unmasked token have m_c = -inf and count for nothing), where
// outRow is head g's output row (nullptr: none); block slice 0 writes M (0
// when every token was masked) and the sum to mlRow (nullptr: none). COMB_NT threads: 8 float4 columns times COMB_NT/8 chunk groups;
// each thread issues the loads of all its chunks before it uses them and
// keeps its own running max, so the kernel waits for memory once; the
// chunk groups are then merged in shared memory.
template <int D>
__device__ __forceinline__ void attn_combine(const float* __restrict__ partO, const float* __restrict__ partML,
                                             int nchunks, int r, int slice, float* __restrict__ outRow,
                                             float* __restrict__ mlRow) {
    constexpr int NT = COMB_NT, Q = 8, CG = NT / Q, B = 4;
    __shared__ float4 sAcc[CG][Q];
    __shared__ float sM[CG][Q], sL[CG][Q];
    pdl_wait();
    const int g = blockIdx.x, G = gridDim.x, tid = threadIdx.x;
    const int cg = tid / Q, col = slice * Q + tid % Q;
    const size_t row = (size_t)r * nchunks;
    float mt = NEG_INF, lt = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int c0 = cg; c0 < nchunks; c0 += B * CG) {
        float2 ml[B];
        float4 o[B];
#pragma unroll
        for (int u = 0; u < B; ++u) {
            const int c = c0 + u * CG;
            ml[u] = make_float2(NEG_INF, 0.f);
            if (c < nchunks) {
                ml[u] = __ldcg(reinterpret_cast<const float2*>(partML) + (row + c) * G + g);
                o[u] = __ldcg(reinterpret_cast<const float4*>(partO + ((row + c) * G + g) * D) + col);
            }
        }
#pragma unroll
        for (int u = 0; u < B; ++u) {
            if (ml[u].x == NEG_INF) continue;
            if (ml[u].x > mt) {
                const float k = mt == NEG_INF ? 0.f : exp2f(mt - ml[u].x);
                acc.x *= k, acc.y *= k, acc.z *= k, acc.w *= k, lt *= k;
                mt = ml[u].x;
            }
            const float w = exp2f(ml[u].x - mt);
            acc.x = fmaf(w, o[u].x, acc.x);
            acc.y = fmaf(w, o[u].y, acc.y);
            acc.z = fmaf(w, o[u].z, acc.z);
            acc.w = fmaf(w, o[u].w, acc.w);
            lt = fmaf(w, ml[u].y, lt);
        }
    }
    sAcc[cg][tid % Q] = acc;
    sM[cg][tid % Q] = mt;
    sL[cg][tid % Q] = lt;
    __syncthreads();
    if (tid >= Q) return;
    float M = NEG_INF;
#pragma unroll
    for (int k = 0; k < CG; ++k) M = fmaxf(M, sM[k][tid]);
    const float Ms = M == NEG_INF ? 0.f : M;
    float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
    float L = 0.f;
#pragma unroll 8
    for (int k = 0; k < CG; ++k) {
        const float w = exp2f(sM[k][tid] - Ms);
        const float4 a = sAcc[k][tid];
        s.x = fmaf(w, a.x, s.x);
        s.y = fmaf(w, a.y, s.y);
        s.z = fmaf(w, a.z, s.z);
        s.w = fmaf(w, a.w, s.w);
        L = fmaf(w, sL[k][tid], L);
    }
    const float inv = L > 0.f ? 1.f / L : 0.f;
    if (outRow != nullptr) reinterpret_cast<float4*>(outRow)[col] = make_float4(s.x * inv, s.y * inv, s.z * inv, s.w * inv);
    if (mlRow != nullptr && tid == 0 && slice == 0) {
        mlRow[0] = Ms;
        mlRow[1] = L;
    }
}

// attn_rt_combine_d{D} is attn_combine for the runtime's split rows (grid
// (G, up to 65535 split rows, D/32 slices times the split rows' blocks of
// 65535)): the output and the max and sum (ml, nullptr: none) of virtual
// head g of split row r go to its (row, head).
#define RT_COMBINE_KERNEL(D)                                                                                       \
    extern "C" __global__ void __launch_bounds__(COMB_NT) attn_rt_combine_d##D(                                    \
        const float* __restrict__ partO, const float* __restrict__ partML, int nchunks, float* __restrict__ out,   \
        float* __restrict__ ml, const __grid_constant__ RtHead hd) {                                               \
        const int r = blockIdx.y + blockIdx.z / ((D) / 32) * gridDim.y;                                           \
        if (r >= hd.w[RH_SROWS]) return;                                                                           \
        const int it = rt_item(hd.w, r, blockIdx.x);                                                               \
        u64* tr = rt_trace(hd.w);                                                                                  \
        const u64 t0 = tr != nullptr ? gtime() : 0;                                                                \
        attn_combine<D>(partO, partML, nchunks, r, blockIdx.z % ((D) / 32),                                       \
                        it >= 0 ? out + (size_t)it * (D) : nullptr, ml != nullptr && it >= 0 ? ml + (size_t)it * 2 : nullptr); \
        if (tr != nullptr && threadIdx.x == 0) {                                                                   \
            u64* p = tr + (size_t)hd.w[RH_SROWS] * nchunks * TR_WORDS +                                            \
                     2 * (blockIdx.x + (size_t)gridDim.x * (blockIdx.y + (size_t)gridDim.y * blockIdx.z));         \
            p[0] = t0;                                                                                             \
            p[1] = gtime();                                                                                        \
        }                                                                                                          \
    }

RT_COMBINE_KERNEL(64)
RT_COMBINE_KERNEL(128)

// rt_acc_head is a + the softmax probabilities of token index i of query
// head h's token list for the query rows at positions >= accFrom, rows in
// order as the CPU adds them: p = 2^(raw - M) / sum with each (row,
// head)'s max and sum in ml [rows*heads*2] and its base-2 scores in raw
// (attn_rt).
__device__ __forceinline__ float rt_acc_head(float a, const float* __restrict__ raw, const float* __restrict__ ml,
                                             const int* __restrict__ ints, int rows, int heads, int stride, int rowOff,
                                             int accFrom, int h, int i) {
    for (int r = 0; r < rows; ++r) {
        if (ints[rowOff + 2 * r] < accFrom) continue;
        const size_t item = (size_t)r * heads + h;
        const float s = raw[item * stride + i];
        if (s != NEG_INF) a += exp2f(s - ml[2 * item]) * (1.f / ml[2 * item + 1]);
    }
    return a;
}

// rt_acc adds, for token index i of query head h's token list, the softmax
// probabilities of the query rows at positions >= accFrom to acc [heads,
// astride] (by token index) (rt_acc_head), index i of head h's token list
// being token sel[i] or lo + i; ints and hdr are the call's. With grp set
// (AttnArgs.AccGroup: every head's list is its KV head's lo + i, the sums
// start from zero), h is a KV head and acc [kvHeads, astride] takes its
// group's heads' sums added in head order (float32), as the host would add
// them.
__device__ __forceinline__ void rt_acc(float* __restrict__ acc, int astride, const float* __restrict__ raw,
                                       const float* __restrict__ ml, const int* __restrict__ ints, int hdr, int accFrom,
                                       int grp, int h, int i) {
    const int* H = ints + hdr;
    const int heads = H[RH_HEADS], rows = H[RH_ROWS], stride = H[RH_STRIDE], rowOff = H[RH_ROWOFF], G = H[RH_G];
    if (grp) {
        if (h >= heads / G) return;
        const int* sd = ints + h * SD_WORDS;
        const int n = sd[SD_HI] - sd[SD_LO];
        if (i >= n) return;
        float sum = rt_acc_head(0.f, raw, ml, ints, rows, heads, stride, rowOff, accFrom, h * G, i);
        for (int k = 1; k < G; ++k) sum = __fadd_rn(sum, rt_acc_head(0.f, raw, ml, ints, rows, heads, stride, rowOff, accFrom, h * G + k, i));
        acc[(size_t)h * astride + sd[SD_LO] + i] = sum;
        return;
    }
    if (h >= heads) return;
    const int* sd = ints + (h / G) * SD_WORDS;
    const int count = ints[H[RH_HEADOFF] + 2 * h + 1];
    const int* sel = count >= 0 ? rt_sel(ints, H, ints[H[RH_HEADOFF] + 2 * h]) : nullptr;
    const int n = sel != nullptr ? count : sd[SD_HI] - sd[SD_LO];
    if (i >= n) return;
    const int t = sel != nullptr ? sel[i] : sd[SD_LO] + i;
    acc[(size_t)h * astride + t] = rt_acc_head(acc[(size_t)h * astride + t], raw, ml, ints, rows, heads, stride, rowOff, accFrom, h, i);
}

// attn_rt_acc is rt_acc over one call: grid (ceil(longest list / 128),
// heads, or KV heads with grp), block 128.
extern "C" __global__ void attn_rt_acc(float* __restrict__ acc, int astride, const float* __restrict__ raw,
                                       const float* __restrict__ ml, const int* __restrict__ ints, int hdr, int accFrom, int grp) {
    pdl_wait();
    rt_acc(acc, astride, raw, ml, ints, hdr, accFrom, grp, blockIdx.y, blockIdx.x * blockDim.x + threadIdx.x);
}
