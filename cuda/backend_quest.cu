// Quest's page bounds and scores on CUDA (runtime/cuda/backend_quest.go,
// questbatch.go). After backend_attn.cu (be_row, be_ld).

// ---- Quest page bounds (runtime.PageBounds, backend_quest.go) ----
//
// The bounds of one KV head are [pages][2][hd] of the cache's page type
// (kvt): page p's per-channel minimum of its keys at p*2*hd, its maximum at
// p*2*hd + hd. The minimum and maximum of bf16 keys are bf16 values, so bf16
// bounds hold them exactly, in half the bytes the scores read.

// be_st_bound stores bound value v (a value of type kvt) at element c of row.
__device__ __forceinline__ void be_st_bound(void* row, int c, int kvt, float v) {
    if (kvt == KV_BF16) ((u16*)row)[c] = (u16)(__float_as_uint(v) >> 16);  // exact: v came from bf16 keys
    else ((float*)row)[c] = v;
}

// Per KV head descriptor of be_quest_extend, ints: tokens folded n0, tokens
// now n1, kOff (index in ptrs of the cache page holding token n0, whose first
// token is n0 - n0 % ps), ps (the cache's page size), bOff (index in ptrs of
// the bounds).
#define QX_N0 0
#define QX_N1 1
#define QX_K 2
#define QX_PS 3
#define QX_B 4
#define QX_WORDS 5

// quest_extend_block is block (x, .) of be_quest_extend for descriptor d,
// its threads over the channels (any number of them: be_quest_choose_batch
// runs it in its own blocks too, quest.cu).
__device__ __forceinline__ void quest_extend_block(const u64* ptrs, const int* d, int page, int hd, int kvt, int x) {
    const int n0 = d[QX_N0], n1 = d[QX_N1], ps = d[QX_PS], koff = d[QX_K];
    const int p = n0 / page + x;
    const int t0 = max(n0, p * page), t1 = min(n1, (p + 1) * page);
    if (t0 >= t1) return;
    const int first = n0 - n0 % ps;
    char* b = (char*)ptrs[d[QX_B]] + (long long)p * 2 * hd * (kvt == KV_BF16 ? 2 : 4);
    const bool fresh = t0 == p * page;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        int t = t0;
        float lo, hi;
        if (fresh) {
            lo = be_ld(be_row(ptrs, koff, ps, hd, t - first, kvt), c, kvt);
            hi = lo;
            t++;
        } else {
            lo = be_ld(b, c, kvt);
            hi = be_ld(b, hd + c, kvt);
        }
        for (; t < t1; t++) {
            const float v = be_ld(be_row(ptrs, koff, ps, hd, t - first, kvt), c, kvt);
            lo = fminf(lo, v);
            hi = fmaxf(hi, v);
        }
        be_st_bound(b, c, kvt, lo);
        be_st_bound(b, hd + c, kvt, hi);
    }
}

// be_quest_extend folds tokens [n0, n1) of every KV head into its bounds:
// grid (most bounds pages touched by a head, kvHeads), block min(max(hd, 32),
// 256), a thread per channel. Block (x, g) updates bounds page n0/page + x of
// head g: a page already holding tokens (n0 inside it) takes the minimum and
// maximum with its new keys, a fresh page starts from its first key.
extern "C" __global__ void be_quest_extend(const u64* ptrs, const int* ints, int page, int hd, int kvt) {
    quest_extend_block(ptrs, ints + blockIdx.y * QX_WORDS, page, hd, kvt, blockIdx.x);
}

// be_quest_score: the score of every page p of query head h (row 0 of q
// [heads*hd]) against the bounds of its KV head h/group (at bounds[h/group]):
// sum over channels in order, in double, of max(q_i lo_i, q_i hi_i), the sum
// of the host (runtime.NewHostPageBounds) bit for bit: products of two floats
// are exact in double, so contraction cannot change them, and the maximum of
// two equal-but-for-sign zeros adds as zero either way. As lo_i <= hi_i,
// the maximum is q_i hi_i where q_i >= 0 and q_i lo_i otherwise, and an
// exact product added to the sum rounds once whether fused or not: the
// kernel takes one bound by q_i's sign and adds it with one fma, one
// conversion to double a channel where the maximum took three (the
// conversions were most of its time: 22.5 µs under ncu for 32/8 heads of
// 128 at 32K on the H100). ints [2*heads]: pages of head h (0: skipped)
// and the offset of its scores in out.
// quest_score_block is block (bx, g) of a grid (ceil(most pages /
// qs_pages(hd, kvt)), kvHeads) of QS_NT threads: the qs_pages(hd, kvt) pages
// from bx*qs_pages(hd, kvt) on of KV head g, for every query head of its
// group, but the last drop pages of each head (be_quest_score_batch drops
// the last page, which Quest's choice takes unscored: its bounds may be
// being extended meanwhile). A page's bounds are 2*hd values of type kvt in
// a row and the block's pages are one run of memory: the block copies it into shared
// memory at once, eight 16-byte loads a thread in flight (a thread a page,
// reading its own row in order, had one load at a time in flight: 113 µs
// under ncu for 32/8 heads of 128 at 32K on the H100), then sums each
// (page, head) in channel order. Float32 bounds are staged as they are, in
// rows of 2*hd+1 floats; bf16 bounds as bf16, in rows of 2*hd+2 (hd+1
// words: odd, so a warp's 32 pages fall in 32 banks), twice the pages in
// the same shared memory, so that a group of 4 heads of 128 gives each of
// the block's threads a sum (staged as floats, half of them sat idle).
// qs_val is a staged bound as a float: bf16 (u16) or float32.
__device__ __forceinline__ float qs_val(u16 v) { return be_bf16(v); }
__device__ __forceinline__ float qs_val(float v) { return v; }

// qs_sum is a page's score for query qh (doubles held in shared memory, or
// the floats of q): the sum in channel order of qh[i] times bound i (lo[i]
// where qh[i] < 0, lo[hd + i] otherwise), one fma a channel.
template <typename Q, typename T>
__device__ __forceinline__ double qs_sum(const Q* qh, const T* lo, int hd) {
    double s = 0.0;
    for (int i = 0; i < hd; i++) {
        const Q x = qh[i];
        s = __fma_rn((double)x, (double)qs_val(lo[i + (x >= (Q)0 ? hd : 0)]), s);
    }
    return s;
}

#define QS_NT 256
#define QS_FLOATS 8192  // the bounds a block stages, in 4-byte words (and QS_NT words of the rows' padding)
#define QS_QD 1024      // the group's query channels a block holds as doubles (more: converted as read)
__device__ __forceinline__ int qs_pages(int hd, int kvt) { return min(QS_NT, (kvt == KV_BF16 ? 2 : 1) * QS_FLOATS / (2 * hd)); }
__device__ __forceinline__ void quest_score_block(double* out, const float* q, const u64* bounds, const int* ints, int drop, int group, int hd,
                                                  int kvt, int g, int bx) {
    __shared__ float sb[QS_FLOATS + QS_NT];
    __shared__ double sq[QS_QD];
    const bool b16 = kvt == KV_BF16;
    const int tid = threadIdx.x, h0 = g * group, w = 2 * hd, pages = qs_pages(hd, kvt), p0 = bx * pages;
    const int pitch = b16 ? w + 2 : w + 1;  // a row's values in shared memory
    u16* sh = reinterpret_cast<u16*>(sb);
    int most = 0;  // the most pages a head of the group scores (0: none asked)
    for (int j = 0; j < group; ++j) most = max(most, ints[2 * (h0 + j)] - drop);
    if (most <= p0) return;  // the whole block
    const int rows = min(pages, most - p0);
    // The group's query loaded into registers first, stored after the
    // bounds' loads are issued: its loads overlap theirs (they were issued
    // after the bounds had landed in shared memory).
    const bool held = group * hd <= QS_QD;
    float qv[QS_QD / QS_NT];
#pragma unroll
    for (int k = 0; k < QS_QD / QS_NT; ++k) {
        const int i = tid + k * QS_NT;
        if (held && i < group * hd) qv[k] = __ldg(q + (long long)h0 * hd + i);
    }
    // 16 bytes hold 4 float32 bounds or 8 bf16 ones; w (2*hd, hd a multiple
    // of 4) is a multiple of 8, so no 16 bytes straddle two rows.
    const int per = b16 ? 8 : 4;
    const uint4* src = reinterpret_cast<const uint4*>((const char*)bounds[g] + (long long)p0 * w * (b16 ? 2 : 4));
    const int n16 = rows * w / per;
    for (int x0 = 0; x0 < n16; x0 += 8 * QS_NT) {
        uint4 v[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) {
            const int x = x0 + u * QS_NT + tid;
            if (x < n16) v[u] = __ldg(src + x);
        }
#pragma unroll
        for (int u = 0; u < 8; ++u) {
            const int x = x0 + u * QS_NT + tid;
            if (x < n16) {
                const int e = per * x, r = e / w;
                if (b16) {
                    // 8 bf16 of one row: 4 words (a row starts on a word:
                    // pitch is even, and e - r*w a multiple of 8).
                    u32* d = reinterpret_cast<u32*>(sh + r * pitch + (e - r * w));
                    d[0] = v[u].x;
                    d[1] = v[u].y;
                    d[2] = v[u].z;
                    d[3] = v[u].w;
                } else {
                    float* d = sb + r * pitch + (e - r * w);
                    d[0] = __uint_as_float(v[u].x);
                    d[1] = __uint_as_float(v[u].y);
                    d[2] = __uint_as_float(v[u].z);
                    d[3] = __uint_as_float(v[u].w);
                }
            }
        }
    }
#pragma unroll
    for (int k = 0; k < QS_QD / QS_NT; ++k) {
        const int i = tid + k * QS_NT;
        if (held && i < group * hd) sq[i] = (double)qv[k];
    }
    __syncthreads();
    for (int x = tid; x < rows * group; x += QS_NT) {
        const int r = x % rows, j = x / rows, h = h0 + j, p = p0 + r;
        if (p >= ints[2 * h] - drop) continue;
        const double s = b16 ? (held ? qs_sum(sq + j * hd, sh + r * pitch, hd) : qs_sum(q + (long long)h * hd, sh + r * pitch, hd))
                             : (held ? qs_sum(sq + j * hd, sb + r * pitch, hd) : qs_sum(q + (long long)h * hd, sb + r * pitch, hd));
        out[ints[2 * h + 1] + p] = s;
    }
}

extern "C" __global__ void __launch_bounds__(QS_NT) be_quest_score(double* out, const float* q, const u64* bounds, const int* ints,
                                                                  int group, int hd, int kvt) {
    quest_score_block(out, q, bounds, ints, 0, group, hd, kvt, blockIdx.y, blockIdx.x);
}
