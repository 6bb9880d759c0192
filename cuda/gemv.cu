// Matrix-vector products of a decode step: one activation row x [in] (in %
// 8 == 0) times weights stored as bf16, f16 or f32 [out, in], with the
// epilogues the forward pass would otherwise run as kernels of their own.
// A decode step reads every weight once, so these run at the memory's
// speed when enough loads are in flight: a block of up to 256 threads
// computes R outputs (be_mv_r4, be_mv_r8; MV_ROWS of each matrix for
// be_mv_swiglu), every thread asking for its 16-byte piece of all R rows
// before it uses the first and reusing its x values across them; weights
// are read past L1 (they are not read again in the step). Every kernel here
// is launched as a programmatic dependent of the one before it.
//
// After backend.cu (be_bf16, be_f16, WT_*, warp_sum) and common.cu
// (ld_stream, pdl_wait, pdl_trigger).

#define MV_ROWS 4
#define MV_MAX_WARPS 8

// mv_ld reads 16 bytes of a weight, not kept in L1 (common.cu's ld_stream).
__device__ __forceinline__ uint4 mv_ld(const void* p) { return ld_stream((const bf16*)p); }

// mv_fetch reads weight elements i..i+7 as stored: one 16-byte piece for
// bf16 and f16, two for f32 (b unused otherwise).
__device__ __forceinline__ void mv_fetch(const void* w, int wt, long long i, uint4* a, uint4* b) {
    if (wt == WT_F32) {
        *a = mv_ld((const float*)w + i);
        *b = mv_ld((const float*)w + i + 4);
    } else {
        *a = mv_ld((const u16*)w + i);
    }
}

__device__ __forceinline__ float mv_lo(int wt, u32 u) { return wt == WT_BF16 ? be_bf16((u16)(u & 0xffffu)) : be_f16((u16)(u & 0xffffu)); }
__device__ __forceinline__ float mv_hi(int wt, u32 u) { return wt == WT_BF16 ? be_bf16((u16)(u >> 16)) : be_f16((u16)(u >> 16)); }

// mv_dot is the dot product of the 8 weights fetched into (a, b) with x[0..7].
__device__ __forceinline__ float mv_dot(int wt, uint4 a, uint4 b, const float x[8]) {
    if (wt == WT_F32)
        return __uint_as_float(a.x) * x[0] + __uint_as_float(a.y) * x[1] + __uint_as_float(a.z) * x[2] + __uint_as_float(a.w) * x[3] +
               __uint_as_float(b.x) * x[4] + __uint_as_float(b.y) * x[5] + __uint_as_float(b.z) * x[6] + __uint_as_float(b.w) * x[7];
    return mv_lo(wt, a.x) * x[0] + mv_hi(wt, a.x) * x[1] + mv_lo(wt, a.y) * x[2] + mv_hi(wt, a.y) * x[3] +
           mv_lo(wt, a.z) * x[4] + mv_hi(wt, a.z) * x[5] + mv_lo(wt, a.w) * x[6] + mv_hi(wt, a.w) * x[7];
}

// mv_fetch_rows asks for the pieces at column i of rows row0.. of w0 (and
// w1): piece j = m*R + r of row row0+r of matrix m, rows past nrows
// re-reading the last.
template <int NM, int R, int WT>
__device__ __forceinline__ void mv_fetch_rows(const void* w0, const void* w1, long long row0, int nrows, int in, int i,
                                              uint4 (&a)[NM * R], uint4 (&b)[NM * R]) {
#pragma unroll
    for (int m = 0; m < NM; m++)
#pragma unroll
        for (int r = 0; r < R; r++)
            mv_fetch(m == 0 ? w0 : w1, WT, (row0 + min(r, nrows - 1)) * in + i, &a[m * R + r], &b[m * R + r]);
}

// mv_rows computes the NM*R dot products of x with rows row0.. of w0 (and
// of w1 when NM == 2) into red[j] (the block's sums, in smem): row row0+r of
// matrix m is j = m*R + r. Rows past nrows re-read the last row; their sums
// are not used. The next piece of each row is asked for before the current
// one is used, and the first before pdl_wait: the weights are never
// written, so a block launched early (LaunchAfter) has its first loads in
// flight while the kernel before it finishes; x is read after; pre() runs
// between the two (work of the epilogue that reads nothing the kernel
// before writes). Ends with the block synchronised.
template <int NM, int R, int WT, class Pre>
__device__ __forceinline__ void mv_rows_t(float* red, const float* x, int in, const void* w0, const void* w1, long long row0,
                                          int nrows, Pre pre) {
    float acc[NM * R];
#pragma unroll
    for (int j = 0; j < NM * R; j++) acc[j] = 0.f;
    uint4 a[NM * R], b[NM * R];
    const int stride = blockDim.x * 8;
    int i = threadIdx.x * 8;
    bool has = i < in;
    if (has) mv_fetch_rows<NM, R, WT>(w0, w1, row0, nrows, in, i, a, b);
    pdl_trigger();
    pre();
    pdl_wait();
    while (has) {
        const float4 x0 = *(const float4*)(x + i), x1 = *(const float4*)(x + i + 4);
        const float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
        const int nx = i + stride;
        const bool more = nx < in;
        uint4 a2[NM * R], b2[NM * R];
        if (more) mv_fetch_rows<NM, R, WT>(w0, w1, row0, nrows, in, nx, a2, b2);
#pragma unroll
        for (int j = 0; j < NM * R; j++) acc[j] += mv_dot(WT, a[j], b[j], xv);
#pragma unroll
        for (int j = 0; j < NM * R; j++) a[j] = a2[j], b[j] = b2[j];
        i = nx;
        has = more;
    }
    __shared__ float part[NM * R][MV_MAX_WARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int j = 0; j < NM * R; j++) {
        float s = warp_sum(acc[j]);
        if (lane == 0) part[j][warp] = s;
    }
    __syncthreads();
    if (threadIdx.x < NM * R) {
        float s = 0.f;
        for (int k = 0; k < nw; k++) s += part[threadIdx.x][k];
        red[threadIdx.x] = s;
    }
    __syncthreads();
}

// mv_rows is mv_rows_t for the weight type wt (a constant in the loop).
template <int NM, int R, class Pre>
__device__ __forceinline__ void mv_rows(float* red, const float* x, int in, int wt, const void* w0, const void* w1, long long row0,
                                        int nrows, Pre pre) {
    if (wt == WT_BF16)
        mv_rows_t<NM, R, WT_BF16>(red, x, in, w0, w1, row0, nrows, pre);
    else if (wt == WT_F16)
        mv_rows_t<NM, R, WT_F16>(red, x, in, w0, w1, row0, nrows, pre);
    else
        mv_rows_t<NM, R, WT_F32>(red, x, in, w0, w1, row0, nrows, pre);
}

// mv_rows with nothing before the wait.
template <int NM, int R>
__device__ __forceinline__ void mv_rows(float* red, const float* x, int in, int wt, const void* w0, const void* w1, long long row0,
                                        int nrows) {
    mv_rows<NM, R>(red, x, in, wt, w0, w1, row0, nrows, [] {});
}

#define MV_STORE 0
#define MV_ADD 1

// be_mv_r{R}: dst_m = W_m x (mode MV_STORE) or dst_m += W_m x (MV_ADD,
// rounded as be_add) for up to three matrices m of one input (the query,
// key and value projections are one launch). Grid: ceil(o0/R) blocks for
// matrix 0, then those of matrix 1 and 2 (o1, o2 zero when absent); block
// a multiple of 32 threads up to 256 (two blocks a multiprocessor: the
// float32 weights' loop would take more registers). A programmatic
// dependent (LaunchAfter).
// The biases bs_m (nullptr: none; of type bwt) are added to MV_STORE's
// products as be_add_bias adds them (the host sends none with MV_ADD).
template <int R>
__device__ __forceinline__ void mv_kernel(const float* x, int in, int wt, int mode, float* d0, const void* w0, int o0, float* d1,
                                          const void* w1, int o1, float* d2, const void* w2, int o2, const void* bs0,
                                          const void* bs1, const void* bs2, int bwt) {
    __shared__ float red[R];
    int b = blockIdx.x;
    int n0 = (o0 + R - 1) / R, n1 = (o1 + R - 1) / R;
    float* d = d0;
    const void* w = w0;
    const void* bs = bs0;
    int out = o0;
    if (b >= n0 + n1) {
        b -= n0 + n1;
        d = d2, w = w2, out = o2, bs = bs2;
    } else if (b >= n0) {
        b -= n0;
        d = d1, w = w1, out = o1, bs = bs1;
    }
    const int row0 = b * R, nrows = min(R, out - row0);
    if (nrows <= 0) return;
    mv_rows<1, R>(red, x, in, wt, w, w, row0, nrows);
    if (threadIdx.x < nrows) {
        float s = red[threadIdx.x];
        if (bs != nullptr) s = __fadd_rn(s, be_w(bs, bwt, row0 + threadIdx.x));
        float* p = d + row0 + threadIdx.x;
        *p = mode == MV_ADD ? __fadd_rn(*p, s) : s;
    }
}

#define MV_KERNEL(R)                                                                                                       \
    extern "C" __global__ void __launch_bounds__(256, 2) be_mv_r##R(const float* x, int in, int wt, int mode, float* d0, const void* w0, int o0,      \
                                          float* d1, const void* w1, int o1, float* d2, const void* w2, int o2,            \
                                          const void* bs0, const void* bs1, const void* bs2, int bwt) {                    \
        mv_kernel<R>(x, in, wt, mode, d0, w0, o0, d1, w1, o1, d2, w2, o2, bs0, bs1, bs2, bwt);                              \
    }
MV_KERNEL(4)
MV_KERNEL(8)

// be_mv_swiglu: dst = silu(Wg x) * (Wu x) over out outputs (as be_swiglu):
// a block computes the same MV_ROWS rows of both matrices. A programmatic
// dependent (LaunchAfter).
extern "C" __global__ void __launch_bounds__(256, 2) be_mv_swiglu(const float* x, int in, int wt, float* dst, const void* wg, const void* wu, int out) {
    __shared__ float red[2 * MV_ROWS];
    const int row0 = blockIdx.x * MV_ROWS, nrows = min(MV_ROWS, out - row0);
    if (nrows <= 0) return;
    mv_rows<2, MV_ROWS>(red, x, in, wt, wg, wu, row0, nrows);
    if (threadIdx.x < nrows) {
        float g = red[threadIdx.x], u = red[MV_ROWS + threadIdx.x];
        dst[row0 + threadIdx.x] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.f, expf(-g))), u);
    }
}

// be_mv_qkv_rope is a decode step's query, key and value products (be_mv_r8
// of the three matrices, MV_STORE) with RoPE of the queries and keys in the
// products' epilogue and, when stores is set, each key head's rotated key
// and its value written to its KV page slot (copy j of box, mode 0 or 1, for
// key head j, as be_rope_kv): no launch between the products, the rotation
// and the stores. The queries and keys are in interleaved RoPE order (pairs
// of adjacent rows: a model's own, or reordered at upload where it has
// half-split pairs, runtime.QKInterleaver), so a block's 8 adjacent rows of
// a head hold 4 whole pairs. The rotation and the values are rope_rows' to
// the bit: the same products, the same angles (pos[0] times invf, sin and
// cos in double, computed while the first weights arrive) and arithmetic.
// The biases bq, bk, bv (nullptr: none; of type bwt, in the rows' order)
// are added to the products before the rotation, as be_add_bias adds them.
// Grid: heads*hd/8 blocks of queries, then kvheads*hd/8 of keys, then of
// values (hd a multiple of 8); block 256. A programmatic dependent
// (LaunchAfter): pos and invf are uploads, read before the wait.
extern "C" __global__ void __launch_bounds__(256, 2) be_mv_qkv_rope(const float* x, int in, int wt, float* q, const void* wq, int heads,
                                                                    float* k, const void* wk, float* v, const void* wv, int kvheads,
                                                                    int hd, const int* pos, const float* invf, int stores,
                                                                    const void* bq, const void* bk, const void* bv, int bwt,
                                                                    const __grid_constant__ KvBox box) {
    __shared__ float red[8];
    const int per = hd / 8, nq = heads * per, nk = kvheads * per;
    int b = blockIdx.x, m = 0;  // m: 0 queries, 1 keys, 2 values
    if (b >= nq + nk) {
        b -= nq + nk;
        m = 2;
    } else if (b >= nq) {
        b -= nq;
        m = 1;
    }
    const int h = b / per, c = b % per;
    const long long row0 = (long long)h * hd + c * 8;
    float* out = (m == 0 ? q : m == 1 ? k : v) + (long long)h * hd;
    const void* w = m == 0 ? wq : m == 1 ? wk : wv;
    const void* bs = m == 0 ? bq : m == 1 ? bk : bv;
    // Thread t < 4 of a query or key block turns pair i = c*4 + t: the
    // block's rows 2t and 2t+1, channels 2i and 2i+1 of the head.
    const int t = threadIdx.x, i = c * 4 + t;
    float cs = 0.f, sn = 0.f;
    mv_rows<1, 8>(red, x, in, wt, w, w, row0, 8, [&] {
        if (m < 2 && t < 4) {
            double sd, cd;
            sincos((double)__fmul_rn((float)pos[0], invf[i]), &sd, &cd);
            cs = (float)cd, sn = (float)sd;
        }
    });
    if (m == 2) {
        if (t < 8) {
            const int e = c * 8 + t;
            const float val = bs != nullptr ? __fadd_rn(red[t], be_w(bs, bwt, row0 + t)) : red[t];
            out[e] = val;
            if (stores) be_kv_put(box.w[5 * h + 1], box.w[5 * h + 4], e, val);
        }
        return;
    }
    if (t >= 4) return;
    float a = red[2 * t], bb = red[2 * t + 1];
    if (bs != nullptr) {
        a = __fadd_rn(a, be_w(bs, bwt, row0 + 2 * t));
        bb = __fadd_rn(bb, be_w(bs, bwt, row0 + 2 * t + 1));
    }
    const float na = __fsub_rn(__fmul_rn(a, cs), __fmul_rn(bb, sn)), nb = __fadd_rn(__fmul_rn(a, sn), __fmul_rn(bb, cs));
    out[2 * i] = na;
    out[2 * i + 1] = nb;
    if (m == 1 && stores) {
        const u64* op = box.w + 5 * h;
        be_kv_put(op[0], op[4], 2 * i, na);
        be_kv_put(op[0], op[4], 2 * i + 1, nb);
    }
}
