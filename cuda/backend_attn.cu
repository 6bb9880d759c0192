// The general attention kernel of the runtime.Backend on CUDA (be_attend:
// recall, head dims the split-KV kernels are not built for), its one-row
// helpers (be_qk, be_key_bounds) and the descriptors every attention kernel
// reads (runtime/cuda/backend_attention.go). After backend.cu (be_w, be_bf16).

// ---- attention ----

// Per KV head descriptor, ints: N, pageSize, kOff, vOff (into ptrs), posOff
// (-1: no positions, every token is visible to every row), shiftOff (-1:
// none) (into ints), refN, refPageSize, refKOff, refPosOff, and the range
// [lo, hi) of token indices that a row without a selection needs to read
// (the split-KV kernels of attention_rt.cu; the others read every token), and
// the number of shifts given (a token past them has shift 0: be_shift);
// where every page of both lists lies a stride from the one before (SD_PST
// not 0), the first key and value pages' offsets from the call's base
// (RH_PBASE, attention_rt.cu) and that stride: the split-KV kernels then find
// a page with no load of its pointer (sd_page).
#define SD_N 0
#define SD_PS 1
#define SD_K 2
#define SD_V 3
#define SD_POS 4
#define SD_SHIFT 5
#define SD_RN 6
#define SD_RPS 7
#define SD_RK 8
#define SD_RPOS 9
#define SD_LO 10
#define SD_HI 11
#define SD_SHN 12
#define SD_KO 13   // the first key page's address, as 16-byte units past the call's RH_PBASE, where SD_PST is not 0
#define SD_VO 14   // the first value page's, alike
#define SD_PST 15  // bytes from each page of both lists to the next (0: read the page pointers)
#define SD_WORDS 16

// be_shift is token t's shift: shift[t] for the first sd[SD_SHN] tokens,
// else 0 (the host sends only the shifts that may be nonzero).
__device__ __forceinline__ int be_shift(const int* shift, const int* sd, int t) {
    return t < sd[SD_SHN] ? shift[t] : 0;
}

// be_row is the address of token t's row in a page list; be_ld reads its
// channel c as float.
__device__ __forceinline__ const void* be_row(const u64* ptrs, int off, int ps, int hd, int t, int kvt) {
    return (const char*)ptrs[off + t / ps] + (long long)(t % ps) * hd * (kvt == KV_BF16 ? 2 : 4);
}

__device__ __forceinline__ float be_ld(const void* row, int c, int kvt) {
    return kvt == KV_BF16 ? be_bf16(((const u16*)row)[c]) : ((const float*)row)[c];
}

// be_win_lo is the highest key position a model's sliding window of
// window tokens hides from a query at qpos (keys at positions <= it are
// masked), or the lowest int when there is no window (window <= 0).
__device__ __forceinline__ int be_win_lo(int qpos, int window) {
    return window > 0 ? qpos - window : (int)0x80000000;
}

// be_attend: grid (heads, rows), block 128 (hd <= 512).
// ints: [kvHeads*SD_WORDS] descriptors, then the arrays the offsets name.
// window: the model's sliding window (0: none): keys at positions <=
// qpos - window are masked like those past qpos.
// rowInfo at ints[rowOff + 2r] = qpos, qshift; headInfo at ints[headOff + 2h]
// = selOff, selCount (-1: all). invf [hd/2] (float bits) at ints[invOff].
// scores [rows*heads*stride]: on return the probabilities (e/sum) of the
// attended tokens, in attend order. full [rows*heads*fstride]: recall
// scratch. recall [rows*heads]: NaN where not written.
extern "C" __global__ void be_attend(float* out, const float* q, const u64* ptrs, const int* ints,
                                     int heads, int kvHeads, int hd, float scale,
                                     int rowOff, int headOff, int invOff, int shifted, int interleaved,
                                     float* scores, int stride, float* full, int fstride, float* recall, int doRecall, int kvt,
                                     int window) {
    __shared__ float qs[512];
    __shared__ float red[32];
    __shared__ double redd[32];
    int h = blockIdx.x, r = blockIdx.y, group = heads / kvHeads;
    const int* sd = ints + (h / group) * SD_WORDS;
    int N = sd[SD_N], ps = sd[SD_PS];
    const int* pos = sd[SD_POS] >= 0 ? ints + sd[SD_POS] : 0;  // none: every token is visible
    int qpos = ints[rowOff + 2 * r], qshift = ints[rowOff + 2 * r + 1];
    const int qlo = be_win_lo(qpos, window);
    int selOff = ints[headOff + 2 * h], count = ints[headOff + 2 * h + 1];
    const int* sel = count >= 0 ? ints + selOff : 0;
    if (count < 0) count = N;
    const float* invf = (const float*)(ints + invOff);
    const int* shift = (shifted && sd[SD_SHIFT] >= 0) ? ints + sd[SD_SHIFT] : 0;
    long long item = (long long)r * heads + h;
    const float* qv = q + item * hd;
    float* o = out + item * hd;
    float* sc = scores + item * stride;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) qs[i] = qv[i];
    __syncthreads();
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5, half = hd / 2;

    // Scores, one warp per token.
    float m = NEG_INF;
    for (int i = warp; i < count; i += nw) {
        int t = sel ? sel[i] : i;
        if (pos && (pos[t] > qpos || pos[t] <= qlo)) {
            if (lane == 0) sc[i] = NEG_INF;
            continue;
        }
        const void* k = be_row(ptrs, sd[SD_K], ps, hd, t, kvt);
        int d = shift ? be_shift(shift, sd, t) - qshift : 0;
        float s = 0.f;
        if (d == 0) {
            for (int c = lane; c < hd; c += 32) s += qs[c] * be_ld(k, c, kvt);
        } else {
            for (int j = lane; j < half; j += 32) {
                int ia = j, ib = j + half;
                if (interleaved) { ia = 2 * j; ib = 2 * j + 1; }
                float ang = __fmul_rn((float)d, invf[j]);
                double an = (double)ang;
                float c = (float)cos(an), sn = (float)sin(an);
                float x = qs[ia], y = qs[ib];
                float ra = __fsub_rn(__fmul_rn(x, c), __fmul_rn(y, sn));
                float rb = __fadd_rn(__fmul_rn(y, c), __fmul_rn(x, sn));
                s += ra * be_ld(k, ia, kvt) + rb * be_ld(k, ib, kvt);
            }
        }
        s = warp_sum(s) * scale;
        if (lane == 0) sc[i] = s;
        m = fmaxf(m, s);
    }
    __syncthreads();
    m = be_block_max(m, red);
    if (m == NEG_INF) {
        for (int c = threadIdx.x; c < hd; c += blockDim.x) o[c] = 0.f;
        for (int i = threadIdx.x; i < count; i += blockDim.x) sc[i] = 0.f;
        if (doRecall && threadIdx.x == 0) recall[item] = __int_as_float(0x7fffffff);
        return;
    }
    float sum = 0.f;
    for (int i = threadIdx.x; i < count; i += blockDim.x) {
        float s = sc[i];
        float e = s == NEG_INF ? 0.f : expf(s - m);
        sc[i] = e;
        sum += e;
    }
    sum = be_block_sum(sum, red);
    __syncthreads();
    float inv = 1.f / sum;
    const u64* vp = ptrs;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float acc = 0.f;
        for (int i = 0; i < count; i++) {
            float e = sc[i];
            if (e != 0.f) {
                int t = sel ? sel[i] : i;
                acc += e * be_ld(be_row(vp, sd[SD_V], ps, hd, t, kvt), c, kvt);
            }
        }
        o[c] = acc * inv;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < count; i += blockDim.x) sc[i] = sc[i] * inv;
    if (!doRecall) return;

    // Recall: full attention's mass over the reference tokens that falls on
    // the attended tokens (the unrotated query, as the CPU).
    int RN = sd[SD_RN], rps = sd[SD_RPS];
    const int* rpos = ints + sd[SD_RPOS];
    float* fl = full + item * fstride;
    float fm = NEG_INF;
    for (int t = warp; t < RN; t += nw) {
        if (rpos[t] > qpos || rpos[t] <= qlo) {
            if (lane == 0) fl[t] = NEG_INF;
            continue;
        }
        const void* k = be_row(ptrs, sd[SD_RK], rps, hd, t, kvt);
        float s = 0.f;
        for (int c = lane; c < hd; c += 32) s += qs[c] * be_ld(k, c, kvt);
        s = warp_sum(s) * scale;
        if (lane == 0) fl[t] = s;
        fm = fmaxf(fm, s);
    }
    __syncthreads();
    fm = be_block_max(fm, red);
    if (fm == NEG_INF) {
        if (threadIdx.x == 0) recall[item] = 1.f;
        return;
    }
    double total = 0;
    for (int t = threadIdx.x; t < RN; t += blockDim.x) {
        float x = fl[t];
        float e = x == NEG_INF ? 0.f : expf(x - fm);
        fl[t] = e;
        total += (double)e;
    }
    total = be_block_sum_d(total, redd);
    __syncthreads();
    double part = 0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) {
        int t = sel ? sel[i] : i;
        int p = pos[t];
        if (p < RN && p <= qpos && p > qlo) part += (double)fl[p];
    }
    part = be_block_sum_d(part, redd);
    if (threadIdx.x == 0) recall[item] = (float)(part / total);
}

// be_qk: scores of one query against every token of a sequence, -inf where
// the causal mask or the sliding window (window > 0) hides the token; grid
// (ceil(N/4)), block 128 (a warp per token).
extern "C" __global__ void be_qk(float* out, const float* q, const u64* kp, const int* pos, int N, int ps, int hd, int qpos, float scale, int kvt,
                                 int window) {
    int lane = threadIdx.x & 31;
    int t = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (t >= N) return;
    if (pos[t] > qpos || pos[t] <= be_win_lo(qpos, window)) {
        if (lane == 0) out[t] = NEG_INF;
        return;
    }
    const void* k = be_row(kp, 0, ps, hd, t, kvt);
    float s = 0.f;
    for (int c = lane; c < hd; c += 32) s += q[c] * be_ld(k, c, kvt);
    s = warp_sum(s) * scale;
    if (lane == 0) out[t] = s;
}

// be_key_bounds: per-channel min and max of keys [t0, t1); out [2*hd] = lo, hi.
extern "C" __global__ void be_key_bounds(float* out, const u64* kp, int ps, int hd, int t0, int t1, int kvt) {
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float lo = be_ld(be_row(kp, 0, ps, hd, t0, kvt), c, kvt), hi = lo;
        for (int t = t0 + 1; t < t1; t++) {
            float v = be_ld(be_row(kp, 0, ps, hd, t, kvt), c, kvt);
            lo = fminf(lo, v);
            hi = fmaxf(hi, v);
        }
        out[c] = lo;
        out[hd + c] = hi;
    }
}
