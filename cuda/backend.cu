// Kernels of the runtime.Backend on CUDA (runtime/cuda/backend.go): the ops
// of the forward pass in float32 over float32 activations and KV pages, with
// weights read as stored (bf16, f16, f32). Compiled by NVRTC with no headers.
// The semantics are those of the CPU backend (runtime/cpu), the oracle.

// After common.cu (u32, u64, FULL_MASK, NEG_INF, warp_sum, warp_max).

typedef unsigned short u16;

// Weight types, as runtime.DType: F32 0, BF16 1, F16 2.
#define WT_F32 0
#define WT_BF16 1
#define WT_F16 2

__device__ __forceinline__ float be_f16(u16 h) {
    float f;
    asm("{cvt.f32.f16 %0, %1;}" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ float be_bf16(u16 h) { return __uint_as_float(((u32)h) << 16); }

// be_w returns element i of a weight of type wt.
__device__ __forceinline__ float be_w(const void* w, int wt, long long i) {
    if (wt == WT_F32) return ((const float*)w)[i];
    u16 h = ((const u16*)w)[i];
    return wt == WT_BF16 ? be_bf16(h) : be_f16(h);
}



__device__ __forceinline__ double be_warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// Block reductions for blocks of a multiple of 32 threads (at most 1024);
// every thread gets the result. red holds 32 slots.
__device__ float be_block_max(float v, float* red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : NEG_INF;
    return warp_max(v);
}

__device__ float be_block_sum(float v, float* red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.f;
    return warp_sum(v);
}

__device__ double be_block_sum_d(double v, double* red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = be_warp_sum_d(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0;
    return be_warp_sum_d(v);
}

// be_zero_many clears buffer i of list (pointer, float32 words at 2i, 2i+1)
// in block i. Grid (buffers), block 256.
extern "C" __global__ void be_zero_many(const u64* list) {
    float* p = (float*)list[2 * blockIdx.x];
    const long long n = (long long)list[2 * blockIdx.x + 1];
    for (long long i = threadIdx.x; i < n; i += blockDim.x) p[i] = 0.f;
}

extern "C" __global__ void be_zero(float* p, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        p[i] = 0.f;
}

// be_embed: dst[r, :] = table[tokens[r], :]. Grid (rows), block 256.
extern "C" __global__ void be_embed(float* dst, const void* table, int wt, const int* tokens, int dim) {
    int r = blockIdx.x;
    long long base = (long long)tokens[r] * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[(long long)r * dim + i] = be_w(table, wt, base + i);
}

// be_embed_slot: dst [dim] = table[slot[0], :], zeros where slot[0] is no
// row of the table [0, vocab) (a greedy step's token, written on the device
// by be_argmax). Grid 1, block 256.
extern "C" __global__ void be_embed_slot(float* dst, const void* table, int wt, const int* slot, int dim, int vocab) {
    const int t = slot[0];
    const bool ok = t >= 0 && t < vocab;
    const long long base = (long long)(ok ? t : 0) * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = ok ? be_w(table, wt, base + i) : 0.f;
}

// be_argmax: slot[0] = the index of the largest finite value of logits
// [0, n), the first on ties (-1: none finite); slot[1] = how many are not
// finite, slot[2] the first such index and slot[3] its bits (both 0 when
// none: a zeroed slot reads as finite logits) (runtime.DeviceArgmax, a
// greedy step's next token). One block of ARGMAX_THREADS; a programmatic
// dependent (LaunchAfter) of the product that writes the logits.
#define ARGMAX_THREADS 1024
extern "C" __global__ void __launch_bounds__(ARGMAX_THREADS) be_argmax(int* slot, const float* logits, int n) {
    __shared__ float bv[ARGMAX_THREADS / 32];
    __shared__ int bi[ARGMAX_THREADS / 32], bb[ARGMAX_THREADS / 32], bc[ARGMAX_THREADS / 32];
    pdl_wait();
    float v = 0.f;
    int best = -1, bad = -1, count = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float x = logits[i];
        if ((__float_as_uint(x) & 0x7f800000u) == 0x7f800000u) {  // NaN or infinite
            if (bad < 0) bad = i;
            count++;
        } else if (best < 0 || x > v) {
            best = i, v = x;
        }
    }
    // The warp's, then the block's: the larger value, the lower index on
    // ties; the lowest non-finite index (-1 as none: compared unsigned).
    for (int o = 16; o > 0; o >>= 1) {
        const float v2 = __shfl_xor_sync(FULL_MASK, v, o);
        const int b2 = __shfl_xor_sync(FULL_MASK, best, o), d2 = __shfl_xor_sync(FULL_MASK, bad, o);
        if (b2 >= 0 && (best < 0 || v2 > v || (v2 == v && b2 < best))) best = b2, v = v2;
        if ((unsigned)d2 < (unsigned)bad) bad = d2;
        count += __shfl_xor_sync(FULL_MASK, count, o);
    }
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) bv[w] = v, bi[w] = best, bb[w] = bad, bc[w] = count;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < (int)(blockDim.x >> 5); k++) {
            if (bi[k] >= 0 && (best < 0 || bv[k] > v || (bv[k] == v && bi[k] < best))) best = bi[k], v = bv[k];
            if ((unsigned)bb[k] < (unsigned)bad) bad = bb[k];
            count += bc[k];
        }
        slot[0] = best;
        slot[1] = count;
        slot[2] = bad >= 0 ? bad : 0;
        slot[3] = bad >= 0 ? (int)__float_as_uint(logits[bad]) : 0;
    }
}

// bf16 of a float, rounded to nearest even (NaN kept a NaN).
__device__ __forceinline__ u16 be_to_bf16(float f) {
    u32 x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (u16)((x >> 16) | 0x40);
    return (u16)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// be_kv_put writes x as element i of the KV page slot at p: bf16 in mode 1,
// else float32 (a store's mode, word 4 of a be_kv_op copy).
__device__ __forceinline__ void be_kv_put(u64 p, u64 mode, long long i, float x) {
    if (mode == 1)
        ((u16*)p)[i] = be_to_bf16(x);
    else
        ((float*)p)[i] = x;
}

// be_narrow1 rounds f to type wt (bf16 or f16, to nearest even).
__device__ __forceinline__ u16 be_narrow1(float f, int wt) {
    if (wt == WT_BF16) return be_to_bf16(f);
    u16 h;
    asm("{cvt.rn.f16.f32 %0, %1;}" : "=h"(h) : "f"(f));
    return h;
}

// rmsnorm_row writes RMSNorm of row blockIdx.x of x [rows, dim] to dst:
// float32, or (NARROW) rounded to type nt (bf16 or f16) as be_narrow rounds
// the float32 values, for the GEMMs that read it. About dim/4 threads (the
// host's choice: a decode step's one row is then one load per thread, not a
// chain of dependent ones); the sum of squares in double as the CPU. dst may
// be x (float32). A programmatic dependent (LaunchAfter) that lets its own
// start early.
template <bool NARROW>
__device__ __forceinline__ void rmsnorm_row(void* dst, const float* x, const void* w, int wt, int dim, float eps, int nt) {
    __shared__ double red[32];
    pdl_trigger();
    const long long r = blockIdx.x;
    const float* row = x + r * dim;
    float* out = (float*)dst + r * dim;
    u16* nout = (u16*)dst + r * dim;
    const bool vec = (dim & 3) == 0 && (((unsigned long long)row | (NARROW ? 0ull : (unsigned long long)out)) & 15) == 0 &&
                     (!NARROW || ((unsigned long long)nout & 7) == 0);
    // The weights of the first float4 a thread scales, read before the
    // wait (the kernel before writes x, never w).
    const int i0 = threadIdx.x * 4;
    float w0[4] = {0.f, 0.f, 0.f, 0.f};
    if (vec && i0 < dim)
        for (int j = 0; j < 4; j++) w0[j] = be_w(w, wt, i0 + j);
    pdl_wait();
    double ss = 0;
    if (vec) {
        for (int i = threadIdx.x * 4; i < dim; i += blockDim.x * 4) {
            float4 v = *(const float4*)(row + i);
            ss += (double)v.x * (double)v.x + (double)v.y * (double)v.y + (double)v.z * (double)v.z + (double)v.w * (double)v.w;
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += (double)row[i] * (double)row[i];
    }
    ss = be_block_sum_d(ss, red);
    const float inv = (float)(1.0 / sqrt(ss / (double)dim + (double)eps));
    if (vec) {
        for (int i = i0; i < dim; i += blockDim.x * 4) {
            float4 v = *(const float4*)(row + i);
            const bool first = i == i0;
            v.x = __fmul_rn(first ? w0[0] : be_w(w, wt, i), __fmul_rn(v.x, inv));
            v.y = __fmul_rn(first ? w0[1] : be_w(w, wt, i + 1), __fmul_rn(v.y, inv));
            v.z = __fmul_rn(first ? w0[2] : be_w(w, wt, i + 2), __fmul_rn(v.z, inv));
            v.w = __fmul_rn(first ? w0[3] : be_w(w, wt, i + 3), __fmul_rn(v.w, inv));
            if (NARROW) {
                uint2 o;
                o.x = (u32)be_narrow1(v.x, nt) | ((u32)be_narrow1(v.y, nt) << 16);
                o.y = (u32)be_narrow1(v.z, nt) | ((u32)be_narrow1(v.w, nt) << 16);
                *(uint2*)(nout + i) = o;
            } else {
                *(float4*)(out + i) = v;
            }
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            const float v = __fmul_rn(be_w(w, wt, i), __fmul_rn(row[i], inv));
            if (NARROW)
                nout[i] = be_narrow1(v, nt);
            else
                out[i] = v;
        }
    }
}

// be_rmsnorm: dst [rows, dim] float32 = RMSNorm(x) (rmsnorm_row); grid
// (rows).
extern "C" __global__ void be_rmsnorm(float* dst, const float* x, const void* w, int wt, int dim, float eps) {
    rmsnorm_row<false>(dst, x, w, wt, dim, eps, 0);
}

// be_rmsnorm_narrow: dst [rows, dim] of type nt (bf16 or f16) = RMSNorm(x)
// rounded, the input of the GEMMs after it (no float32 row, no be_narrow);
// grid (rows).
extern "C" __global__ void be_rmsnorm_narrow(u16* dst, const float* x, const void* w, int wt, int dim, float eps, int nt) {
    rmsnorm_row<true>(dst, x, w, wt, dim, eps, nt);
}

// load8 widens 8 consecutive weights starting at element i (8-aligned).
__device__ __forceinline__ void be_load8(const void* w, int wt, long long i, float f[8]) {
    if (wt == WT_F32) {
        float4 a = *(const float4*)((const float*)w + i), b = *(const float4*)((const float*)w + i + 4);
        f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w; f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
        return;
    }
    uint4 v = *(const uint4*)((const u16*)w + i);
    u32 u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
        u16 lo = (u16)(u[j] & 0xffffu), hi = (u16)(u[j] >> 16);
        if (wt == WT_BF16) {
            f[2 * j] = be_bf16(lo);
            f[2 * j + 1] = be_bf16(hi);
        } else {
            f[2 * j] = be_f16(lo);
            f[2 * j + 1] = be_f16(hi);
        }
    }
}

#define MM_ROWS 8
#define MM_WARPS 8

// be_matmul: dst[r, o] = sum_i x[r, i] * w[o, i]. Block of MM_WARPS warps;
// warp w of block (bx, by) computes output bx*MM_WARPS+w for the MM_ROWS
// rows from by*MM_ROWS, reading each weight once for those rows. Lanes read
// 8 consecutive channels at a time (16- or 32-byte loads) when in % 8 == 0
// and x is 16-byte aligned.
extern "C" __global__ void be_matmul(float* dst, const float* x, const void* w, int wt, int rows, int in, int out) {
    int lane = threadIdx.x & 31;
    int o = blockIdx.x * MM_WARPS + (threadIdx.x >> 5);
    int r0 = blockIdx.y * MM_ROWS;
    if (o >= out) return;
    int nr = min(MM_ROWS, rows - r0);
    float acc[MM_ROWS];
#pragma unroll
    for (int j = 0; j < MM_ROWS; j++) acc[j] = 0.f;
    long long wrow = (long long)o * in;
    // 16-byte loads of x and of the weights: in % 8 == 0 and x aligned (a
    // view of a buffer may not be; the weight types' rows then are).
    if ((in & 7) == 0 && ((unsigned long long)x & 15) == 0) {
        for (int i = lane * 8; i < in; i += 256) {
            float f[8];
            be_load8(w, wt, wrow + i, f);
#pragma unroll
            for (int j = 0; j < MM_ROWS; j++) {
                if (j < nr) {
                    const float* xr = x + (long long)(r0 + j) * in + i;
                    float4 a = *(const float4*)xr, b = *(const float4*)(xr + 4);
                    acc[j] += f[0] * a.x + f[1] * a.y + f[2] * a.z + f[3] * a.w + f[4] * b.x + f[5] * b.y + f[6] * b.z + f[7] * b.w;
                }
            }
        }
    } else {
        for (int i = lane; i < in; i += 32) {
            float f = be_w(w, wt, wrow + i);
#pragma unroll
            for (int j = 0; j < MM_ROWS; j++)
                if (j < nr) acc[j] += f * x[(long long)(r0 + j) * in + i];
        }
    }
#pragma unroll
    for (int j = 0; j < MM_ROWS; j++) {
        float s = warp_sum(acc[j]);
        if (lane == 0 && j < nr) dst[(long long)(r0 + j) * out + o] = s;
    }
}

extern "C" __global__ void be_add_bias(float* x, const void* b, int wt, int rows, int n) {
    long long total = (long long)rows * n;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x)
        x[i] = __fadd_rn(x[i], be_w(b, wt, i % n));
}

// rope_rows is be_rope's work: grid (rows, pair blocks), a pair a thread;
// x [rows, heads*hd], and x2 [rows, heads2*hd] when heads2 > 0 (a layer's
// queries and keys in one launch); invf [hd/2]. cos and sin, in double as
// the CPU's, depend on the row and the pair's index only: a block first puts
// its row's into shared memory (hd/2 of them) for every head it turns. A
// prompt's rows take one block a row; a decode step's one row is spread over
// blocks (many blocks then compute the same table; past hd 512 every pair
// its own). With ops (one row), key head j's rotated pair also goes to the
// KV page slot of copy j of ops (be_kv_op's 5 words, mode 0 or 1, its
// source that head's key), and the same pair of that copy's value.
__device__ __forceinline__ void rope_rows(float* x, const int* pos, const float* invf, int heads, int hd, int interleaved, float* x2,
                                          int heads2, const u64* ops) {
    __shared__ float cs[2][256];
    pdl_trigger();
    // The angles before the wait: pos and invf are uploaded (a copy the
    // stream finishes before the kernel ahead), never written by a kernel.
    const int r = blockIdx.x, half = hd / 2;
    const float p = (float)pos[r];
    const bool table = half <= 256;  // else each pair computes its own
    for (int i = threadIdx.x; table && i < half; i += blockDim.x) {
        double s, c;
        sincos((double)__fmul_rn(p, invf[i]), &s, &c);
        cs[0][i] = (float)c;
        cs[1][i] = (float)s;
    }
    __syncthreads();
    pdl_wait();
    for (int k = blockIdx.y * blockDim.x + threadIdx.x; k < (heads + heads2) * half; k += gridDim.y * blockDim.x) {
        const int h = k / half, i = k % half;
        float* v = h < heads ? x + ((long long)r * heads + h) * hd : x2 + ((long long)r * heads2 + h - heads) * hd;
        const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
        float c, s;
        if (table) {
            c = cs[0][i], s = cs[1][i];
        } else {
            double sd, cd;
            sincos((double)__fmul_rn(p, invf[i]), &sd, &cd);
            c = (float)cd, s = (float)sd;
        }
        const float a = v[ia], b = v[ib];
        float na, nb;
        if (interleaved) {
            na = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
            nb = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
        } else {
            na = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
            nb = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
        }
        v[ia] = na;
        v[ib] = nb;
        if (ops != nullptr && h >= heads) {
            const u64* op = ops + 5 * (h - heads);
            const float* sv = (const float*)op[3];
            be_kv_put(op[0], op[4], ia, na);
            be_kv_put(op[0], op[4], ib, nb);
            be_kv_put(op[1], op[4], ia, sv[ia]);
            be_kv_put(op[1], op[4], ib, sv[ib]);
        }
    }
}

// be_rope: RoPE of x (and x2), rope_rows without stores. A programmatic
// dependent (LaunchAfter).
extern "C" __global__ void be_rope(float* x, const int* pos, const float* invf, int heads, int hd, int interleaved, float* x2,
                                   int heads2) {
    rope_rows(x, pos, invf, heads, hd, interleaved, x2, heads2, nullptr);
}

extern "C" __global__ void be_swiglu(float* g, const float* u, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v = g[i];
        g[i] = __fmul_rn(__fdiv_rn(v, __fadd_rn(1.f, expf(-v))), u[i]);
    }
}

extern "C" __global__ void be_add(float* d, const float* x, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        d[i] = __fadd_rn(d[i], x[i]);
}

// KV page element types, as the kvt arguments: float32 0, bf16 1.
#define KV_F32 0
#define KV_BF16 1

// be_kv_op runs one key/value copy of a batch (StoreKV, MoveKV): op is 5
// words: destination key and value, source key and value, mode (0 f32->f32,
// 1 f32->bf16, 2 bf16->bf16), hd channels, a block's threads in turn.
__device__ __forceinline__ void be_kv_op(const u64* op, int hd) {
    int mode = (int)op[4];
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        if (mode == 0) {
            ((float*)op[0])[i] = ((const float*)op[2])[i];
            ((float*)op[1])[i] = ((const float*)op[3])[i];
        } else if (mode == 1) {
            ((u16*)op[0])[i] = be_to_bf16(((const float*)op[2])[i]);
            ((u16*)op[1])[i] = be_to_bf16(((const float*)op[3])[i]);
        } else {
            ((u16*)op[0])[i] = ((const u16*)op[2])[i];
            ((u16*)op[1])[i] = ((const u16*)op[3])[i];
        }
    }
}

// be_kv_ops runs a batch of key/value copies that do not depend on each
// other: op i is be_kv_op's 5 words at ops[5i] (uploaded). Grid (ops), block
// min(hd, 128).
extern "C" __global__ void be_kv_ops(const u64* ops, int hd) { be_kv_op(ops + 5 * (long long)blockIdx.x, hd); }

// KvBox holds a batch of at most KV_BOX_OPS copies by value (a decode
// step's store of one row: a copy a KV head): no upload ahead of the launch.
// 32 copies are 1,280 bytes of parameters.
#define KV_BOX_OPS 32
struct KvBox {
    u64 w[5 * KV_BOX_OPS];
};

// be_kv_box is be_kv_ops with the copies in box, a programmatic dependent
// (LaunchAfter): it reads only its parameters before pdl_wait.
extern "C" __global__ void be_kv_box(const __grid_constant__ KvBox box, int hd) {
    pdl_trigger();
    pdl_wait();
    be_kv_op(box.w + 5 * blockIdx.x, hd);
}

// be_rope_kv is be_rope of one row's queries and keys (x2, heads2 of them)
// with the store of each key head and its value into the KV pages: copy j of
// box (mode 0 or 1) is key head j's (rope_rows). No launch between the
// rotation and the store. A programmatic dependent (LaunchAfter).
extern "C" __global__ void be_rope_kv(float* x, const int* pos, const float* invf, int heads, int hd, int interleaved, float* x2,
                                      int heads2, const __grid_constant__ KvBox box) {
    rope_rows(x, pos, invf, heads, hd, interleaved, x2, heads2, box.w);
}

// be_scatter64 writes n words: dst[pairs[2i]] = pairs[2i+1] (the page
// tables' updates of many sequences in one launch). Grid ceil(n/256), block
// 256. A plain launch without pdl_trigger: the kernels after it start once
// its words are written (the decode attention reads page pointers before
// its pdl_wait, RH_EARLY, on that promise).
extern "C" __global__ void be_scatter64(u64* dst, const u64* pairs, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[pairs[2 * i]] = pairs[2 * i + 1];
}

// ---- conversions around cuBLAS (MatMul of many rows) ----

// be_widen: dst [n] float32 = w [n] of weight type wt.
extern "C" __global__ void be_widen(float* dst, const void* w, int wt, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dst[i] = be_w(w, wt, i);
}

// be_swiglu_bf16: g[i] = bf16(silu(g[i]) * u[i]) over bf16 g and u (the
// products of a prompt's MLP, as the GEMMs rounded them), eight a thread
// at a time; n a multiple of 8 and both 16-byte aligned.
extern "C" __global__ void be_swiglu_bf16(u16* g, const u16* u, long long n) {
    for (long long i = (blockIdx.x * (long long)blockDim.x + threadIdx.x) * 8; i < n;
         i += (long long)gridDim.x * blockDim.x * 8) {
        uint4 gv = *reinterpret_cast<const uint4*>(g + i);
        const uint4 uv = *reinterpret_cast<const uint4*>(u + i);
        u32* gw = reinterpret_cast<u32*>(&gv);
        const u32* uw = reinterpret_cast<const u32*>(&uv);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const float g0 = be_bf16((u16)(gw[j] & 0xffffu)), g1 = be_bf16((u16)(gw[j] >> 16));
            const float u0 = be_bf16((u16)(uw[j] & 0xffffu)), u1 = be_bf16((u16)(uw[j] >> 16));
            const float r0 = __fmul_rn(__fdiv_rn(g0, __fadd_rn(1.f, expf(-g0))), u0);
            const float r1 = __fmul_rn(__fdiv_rn(g1, __fadd_rn(1.f, expf(-g1))), u1);
            gw[j] = (u32)be_to_bf16(r0) | ((u32)be_to_bf16(r1) << 16);
        }
        *reinterpret_cast<uint4*>(g + i) = gv;
    }
}

// be_narrow: dst [n] of type wt (bf16 or f16, round to nearest even) = x [n];
// four a thread where dst and x allow 8- and 16-byte accesses (a prompt's
// activations: a quarter of the loads and stores).
extern "C" __global__ void be_narrow(u16* dst, const float* x, int wt, long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x, first = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    long long done = 0;
    if (((u64)dst & 7) == 0 && ((u64)x & 15) == 0) {
        done = n & ~3LL;
        for (long long i = first * 4; i < done; i += stride * 4) {
            const float4 v = *reinterpret_cast<const float4*>(x + i);
            uint2 o;
            o.x = (u32)be_narrow1(v.x, wt) | ((u32)be_narrow1(v.y, wt) << 16);
            o.y = (u32)be_narrow1(v.z, wt) | ((u32)be_narrow1(v.w, wt) << 16);
            *reinterpret_cast<uint2*>(dst + i) = o;
        }
    }
    for (long long i = done + first; i < n; i += stride) dst[i] = be_narrow1(x[i], wt);
}

// be_logprob: out[r] = log softmax(logits[r, :])[targets[r]] in double, as
// runtime.LogProb: the maximum, then the sum of exp(v - max) in double.
// Grid (rows), block 256.
extern "C" __global__ void be_logprob(double* out, const float* logits, const int* targets, int vocab) {
    __shared__ float red[32];
    __shared__ double redd[32];
    const float* x = logits + (long long)blockIdx.x * vocab;
    float m = NEG_INF;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) m = fmaxf(m, x[i]);
    m = be_block_max(m, red);
    double s = 0.0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) s += exp((double)x[i] - (double)m);
    s = be_block_sum_d(s, redd);
    if (threadIdx.x == 0) out[blockIdx.x] = (double)x[targets[blockIdx.x]] - (double)m - log(s);
}

// be_kv_append4 is be_kv_append four channels a thread, for a head whose
// channels, row stride and offset are multiples of 4 and whose rows and
// pages are 16-byte aligned (the caller checks): a float4 read and an
// 8-byte (bf16) or 16-byte (float32) store a thread, hd/4 threads a row,
// blockDim.x/(hd/4) rows a block; grid ceil(rows / that).
extern "C" __global__ void be_kv_append4(const u64* kp, const u64* vp, int first, int ps, const float* k, const float* v,
                                         int rows, int off, int kvDim, int hd, int kvt) {
    const int q = hd >> 2, per = blockDim.x / q;
    const int r = blockIdx.x * per + (int)threadIdx.x / q, c = ((int)threadIdx.x % q) * 4;
    if ((int)threadIdx.x >= per * q || r >= rows) return;
    const int t = first + r, p = t / ps - first / ps, slot = t % ps;
    const float4 kx = *(const float4*)(k + (long long)r * kvDim + off + c);
    const float4 vx = *(const float4*)(v + (long long)r * kvDim + off + c);
    const long long at = (long long)slot * hd + c;
    if (kvt == KV_BF16) {
        uint2 kb, vb;
        kb.x = (u32)be_to_bf16(kx.x) | ((u32)be_to_bf16(kx.y) << 16);
        kb.y = (u32)be_to_bf16(kx.z) | ((u32)be_to_bf16(kx.w) << 16);
        vb.x = (u32)be_to_bf16(vx.x) | ((u32)be_to_bf16(vx.y) << 16);
        vb.y = (u32)be_to_bf16(vx.z) | ((u32)be_to_bf16(vx.w) << 16);
        *(uint2*)((u16*)kp[p] + at) = kb;
        *(uint2*)((u16*)vp[p] + at) = vb;
    } else {
        *(float4*)((float*)kp[p] + at) = kx;
        *(float4*)((float*)vp[p] + at) = vx;
    }
}

// be_kv_append stores rows rows of keys and values of one KV head (k, v
// [rows, kvDim] float32, the head's channels from off) into consecutive
// slots of a page list: row r goes to token first+r, page (first+r)/ps -
// first/ps of kp/vp, slot (first+r)%ps. kvt is the pages' type. Grid (rows),
// block min(hd, 128).
extern "C" __global__ void be_kv_append(const u64* kp, const u64* vp, int first, int ps, const float* k, const float* v,
                                        int off, int kvDim, int hd, int kvt) {
    const int r = blockIdx.x, t = first + r, p = t / ps - first / ps, slot = t % ps;
    const float* ks = k + (long long)r * kvDim + off;
    const float* vs = v + (long long)r * kvDim + off;
    if (kvt == KV_BF16) {
        u16* kd = (u16*)kp[p] + (long long)slot * hd;
        u16* vd = (u16*)vp[p] + (long long)slot * hd;
        for (int i = threadIdx.x; i < hd; i += blockDim.x) {
            kd[i] = be_to_bf16(ks[i]);
            vd[i] = be_to_bf16(vs[i]);
        }
    } else {
        float* kd = (float*)kp[p] + (long long)slot * hd;
        float* vd = (float*)vp[p] + (long long)slot * hd;
        for (int i = threadIdx.x; i < hd; i += blockDim.x) {
            kd[i] = ks[i];
            vd[i] = vs[i];
        }
    }
}
