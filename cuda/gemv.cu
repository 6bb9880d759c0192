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

// mv_widen is the 8 values fetched into (a, b) (mv_fetch) as floats.
__device__ __forceinline__ void mv_widen(int wt, uint4 a, uint4 b, float f[8]) {
    if (wt == WT_F32) {
        f[0] = __uint_as_float(a.x), f[1] = __uint_as_float(a.y), f[2] = __uint_as_float(a.z), f[3] = __uint_as_float(a.w);
        f[4] = __uint_as_float(b.x), f[5] = __uint_as_float(b.y), f[6] = __uint_as_float(b.z), f[7] = __uint_as_float(b.w);
        return;
    }
    const u32 u[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
    for (int j = 0; j < 4; j++) f[2 * j] = mv_lo(wt, u[j]), f[2 * j + 1] = mv_hi(wt, u[j]);
}

// MvNorm is an RMSNorm folded into a product (mv_rows_t's NORM): the
// norm's weights nw of type nwt and eps. The product then reads the
// residual stream x itself: each block sums x's squares as it reads x (it
// reads all of it anyway), multiplies x by the weights (asked for before
// pdl_wait, with the block's first matrix pieces: weights are never
// written), and scales its sums by 1/rms at the end: W (g x) / rms, the
// norm's product without the norm's launch between.
struct MvNorm {
    const void* nw;
    int nwt;
    float eps;
};

// mv_rows computes the NM*R dot products of x with rows row0.. of w0 (and
// of w1 when NM == 2) into red[j] (the block's sums, in smem): row row0+r of
// matrix m is j = m*R + r. Rows past nrows re-read the last row; their sums
// are not used. The next piece of each row is asked for before the current
// one is used, and the first before pdl_wait: the weights are never
// written, so a block launched early (LaunchAfter) has its first loads in
// flight while the kernel before it finishes; x is read after. NORM: of
// RMSNorm(x) with nm's weights (MvNorm). Ends with the block synchronised.
template <int NM, int R, int WT, bool NORM>
__device__ __forceinline__ void mv_rows_t(float* red, const float* x, int in, const void* w0, const void* w1, long long row0,
                                          int nrows, MvNorm nm) {
    float acc[NM * R];
#pragma unroll
    for (int j = 0; j < NM * R; j++) acc[j] = 0.f;
    uint4 a[NM * R], b[NM * R];
    const int stride = blockDim.x * 8;
    int i = threadIdx.x * 8;
    bool has = i < in;
    if (has) mv_fetch_rows<NM, R, WT>(w0, w1, row0, nrows, in, i, a, b);
    // NORM: the norm's weights of the thread's first two pieces of x.
    uint4 g0a, g0b, g1a, g1b;
    if (NORM && has) mv_fetch(nm.nw, nm.nwt, i, &g0a, &g0b);
    if (NORM && i + stride < in) mv_fetch(nm.nw, nm.nwt, i + stride, &g1a, &g1b);
    double ss = 0;
    pdl_trigger();
    pdl_wait();
    for (int it = 0; has; it++) {
        const float4 x0 = *(const float4*)(x + i), x1 = *(const float4*)(x + i + 4);
        float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
        if (NORM) {
            uint4 ga = it == 0 ? g0a : g1a, gb = it == 0 ? g0b : g1b;
            if (it >= 2) mv_fetch(nm.nw, nm.nwt, i, &ga, &gb);
            float g[8];
            mv_widen(nm.nwt, ga, gb, g);
#pragma unroll
            for (int k = 0; k < 8; k++) {
                ss += (double)xv[k] * (double)xv[k];
                xv[k] = __fmul_rn(g[k], xv[k]);
            }
        }
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
    __shared__ double partSS[MV_MAX_WARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int j = 0; j < NM * R; j++) {
        float s = warp_sum(acc[j]);
        if (lane == 0) part[j][warp] = s;
    }
    if (NORM) {
        ss = be_warp_sum_d(ss);
        if (lane == 0) partSS[warp] = ss;
    }
    __syncthreads();
    if (threadIdx.x < NM * R) {
        float s = 0.f;
        for (int k = 0; k < nw; k++) s += part[threadIdx.x][k];
        if (NORM) {
            double t = 0;
            for (int k = 0; k < nw; k++) t += partSS[k];
            s = __fmul_rn(s, (float)(1.0 / sqrt(t / (double)in + (double)nm.eps)));
        }
        red[threadIdx.x] = s;
    }
    __syncthreads();
}

// mv_rows is mv_rows_t for the weight type wt (a constant in the loop).
template <int NM, int R, bool NORM = false>
__device__ __forceinline__ void mv_rows(float* red, const float* x, int in, int wt, const void* w0, const void* w1, long long row0,
                                        int nrows, MvNorm nm = MvNorm{nullptr, 0, 0.f}) {
    if (wt == WT_BF16)
        mv_rows_t<NM, R, WT_BF16, NORM>(red, x, in, w0, w1, row0, nrows, nm);
    else if (wt == WT_F16)
        mv_rows_t<NM, R, WT_F16, NORM>(red, x, in, w0, w1, row0, nrows, nm);
    else
        mv_rows_t<NM, R, WT_F32, NORM>(red, x, in, w0, w1, row0, nrows, nm);
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
template <int R, bool NORM = false>
__device__ __forceinline__ void mv_kernel(const float* x, int in, int wt, int mode, float* d0, const void* w0, int o0, float* d1,
                                          const void* w1, int o1, float* d2, const void* w2, int o2, MvNorm nm = MvNorm{nullptr, 0, 0.f}) {
    __shared__ float red[R];
    int b = blockIdx.x;
    int n0 = (o0 + R - 1) / R, n1 = (o1 + R - 1) / R;
    float* d = d0;
    const void* w = w0;
    int out = o0;
    if (b >= n0 + n1) {
        b -= n0 + n1;
        d = d2, w = w2, out = o2;
    } else if (b >= n0) {
        b -= n0;
        d = d1, w = w1, out = o1;
    }
    const int row0 = b * R, nrows = min(R, out - row0);
    if (nrows <= 0) return;
    mv_rows<1, R, NORM>(red, x, in, wt, w, w, row0, nrows, nm);
    if (threadIdx.x < nrows) {
        float s = red[threadIdx.x];
        float* p = d + row0 + threadIdx.x;
        *p = mode == MV_ADD ? __fadd_rn(*p, s) : s;
    }
}

#define MV_KERNEL(R)                                                                                                       \
    extern "C" __global__ void __launch_bounds__(256, 2) be_mv_r##R(const float* x, int in, int wt, int mode, float* d0, const void* w0, int o0,      \
                                          float* d1, const void* w1, int o1, float* d2, const void* w2, int o2) {           \
        mv_kernel<R>(x, in, wt, mode, d0, w0, o0, d1, w1, o1, d2, w2, o2);                                                  \
    }
MV_KERNEL(4)
MV_KERNEL(8)

// be_mv_r{R}_rms is be_mv_r{R} of RMSNorm(x) (the norm's weights nw of type
// nwt, eps; MvNorm): a decode step's query, key and value projections read
// the residual stream, with no be_rmsnorm launch before them.
#define MV_RMS_KERNEL(R)                                                                                                   \
    extern "C" __global__ void __launch_bounds__(256, 2) be_mv_r##R##_rms(const float* x, int in, int wt, int mode, float* d0, \
                                          const void* w0, int o0, float* d1, const void* w1, int o1, float* d2, const void* w2, \
                                          int o2, const void* nw, int nwt, float eps) {                                    \
        mv_kernel<R, true>(x, in, wt, mode, d0, w0, o0, d1, w1, o1, d2, w2, o2, MvNorm{nw, nwt, eps});                     \
    }
MV_RMS_KERNEL(4)
MV_RMS_KERNEL(8)

// be_mv_swiglu: dst = silu(Wg x) * (Wu x) over out outputs (as be_swiglu):
// a block computes the same MV_ROWS rows of both matrices. A programmatic
// dependent (LaunchAfter).
template <bool NORM>
__device__ __forceinline__ void mv_swiglu(const float* x, int in, int wt, float* dst, const void* wg, const void* wu, int out, MvNorm nm) {
    __shared__ float red[2 * MV_ROWS];
    const int row0 = blockIdx.x * MV_ROWS, nrows = min(MV_ROWS, out - row0);
    if (nrows <= 0) return;
    mv_rows<2, MV_ROWS, NORM>(red, x, in, wt, wg, wu, row0, nrows, nm);
    if (threadIdx.x < nrows) {
        float g = red[threadIdx.x], u = red[MV_ROWS + threadIdx.x];
        dst[row0 + threadIdx.x] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.f, expf(-g))), u);
    }
}

extern "C" __global__ void __launch_bounds__(256, 2) be_mv_swiglu(const float* x, int in, int wt, float* dst, const void* wg, const void* wu, int out) {
    mv_swiglu<false>(x, in, wt, dst, wg, wu, out, MvNorm{nullptr, 0, 0.f});
}

// be_mv_swiglu_rms is be_mv_swiglu of RMSNorm(x) (MvNorm, as be_mv_r{R}_rms).
extern "C" __global__ void __launch_bounds__(256, 2) be_mv_swiglu_rms(const float* x, int in, int wt, float* dst, const void* wg,
                                                                      const void* wu, int out, const void* nw, int nwt, float eps) {
    mv_swiglu<true>(x, in, wt, dst, wg, wu, out, MvNorm{nw, nwt, eps});
}
