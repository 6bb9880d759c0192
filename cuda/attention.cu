// Split-KV decode attention ("flash decoding") over the runtime's paged KV
// cache (Backend.Attend and AttendBatch, runtime/cuda): the CUDA-core
// kernels attn_rt_* and attn_rtb_* here, the tensor-core ones in
// attention_tc.cu. The CUDA-core kernels are instantiations of one template
// (attn_core) that a "source" (RtSrc below) tells where a block finds its
// tokens, queries, masks and outputs.
//
// The work is split into rows and chunks. A row is a set of G query heads
// (virtual heads) that read the same tokens of one KV head, so each K/V byte
// is read once for the whole row: a GQA group (dense attention, a selection
// shared by the group), one query head (a selection per query head), and
// also several query rows of a prompt chunk (the virtual heads are then
// rows x heads). Block (chunk c, row r) handles `chunk` tokens of row r: a
// pass over K writes the scores of its tokens to shared memory, a softmax
// over them, and a pass over V accumulates p*v; it writes its partial (max,
// sum, unnormalised output). A combine kernel (attn_rt_combine) then merges
// the partials of each virtual head, many blocks in parallel (one per
// virtual head and 32 channels); or, when the host passes counters (its
// default for G = 1), the split kernel merges them itself in two levels of
// "last block to finish" merges (attn_merge), saving the second launch.
//
// Each token's D channels are read by L = D/8 threads with one 16-byte load
// each (two for float32 pages); a block of ATTN_NT threads covers ATTN_NT/L
// tokens per step and issues U steps of loads before using them. The host
// sizes the chunks so that the grid fills the GPU in one wave of resident
// blocks. Scores are in base 2: the queries are pre-scaled by softmax scale
// * log2(e).
//
// Layout (attn_rt_*, the descriptors of be_attend in backend.cu):
// q and out [rows, heads, D] float32; each KV head's keys and values in
// pages of float32 or bf16 (a pointer list in ptrs), its positions,
// re-positioning shifts and the range of token indices to read; a
// selection of token indices per query head (Quest, the oracle); the
// model's sliding window. See RtSrc.

#define ATTN_NT 128
#define COMB_NT 256
// ATTN_MINB: minimum resident blocks per multiprocessor asked of the
// compiler for groups of 4 heads (a register cap: 128 registers at 4).
#ifndef ATTN_MINB
#define ATTN_MINB 4
#endif
// ATTN_U1, ATTN_U, ATTN_U8: steps of loads each thread has in flight (twice
// that while it computes on the previous ones) for rows of one query head,
// of 2 or 4, and of 8. Measured on the H100 (2026-11-24): 6 for one head is
// 0.5-1.1 % faster than 4 at 32K-128K tokens (MHA 32/32); for groups of 4,
// 6 steps under the 128-register cap is 1.5-2 % faster than 4 uncapped at
// 32K-128K (51.9 vs 53.0 us at 32K) and 1 us slower at 4K; without the cap
// 6 was slower (fewer resident blocks). Float32 pages take half as many
// steps (each step is two loads: the same bytes in flight).
#ifndef ATTN_U1
#define ATTN_U1 6
#endif
#ifndef ATTN_U
#define ATTN_U 6
#endif
#ifndef ATTN_U8
#define ATTN_U8 4
#endif
// MERGE_S: chunks per first-level group of the fused merge.
#ifndef MERGE_S
#define MERGE_S 16
#endif
// MERGE_R: chunks whose partials attn_merge asks for in one batch, where a
// thread's loads stay within 16 float4s (batches of 4 chunks left a GQA row
// of 9 chunks waiting on the L2 three times: 0.2-0.6 µs of its fused merge
// on the H100, 2026-12-06).
#ifndef MERGE_R
#define MERGE_R 16
#endif

// Halve sums G per-head partial dot products over the L lanes of a token
// group with a butterfly reduce-scatter: each of the first log2(G) steps
// exchanges half of the remaining values (lanes with the offset's bit set
// keep the upper half), then plain butterfly steps finish the sums. Lane l
// ends with the total of head h = l / (L/G) in v[0]: G = 4, L = 16 takes 5
// shuffles instead of 16.
template <int N, int OFF>
struct Halve {
    template <int G>
    __device__ __forceinline__ static void run(float (&v)[G], int lane, int& h) {
        const bool up = (lane & OFF) != 0;
#pragma unroll
        for (int i = 0; i < N / 2; ++i) {
            const float send = up ? v[i] : v[i + N / 2];
            const float keep = up ? v[i + N / 2] : v[i];
            v[i] = keep + __shfl_xor_sync(FULL_MASK, send, OFF);
        }
        if (up) h += N / 2;
        Halve<N / 2, OFF / 2>::run(v, lane, h);
    }
};
template <int OFF>
struct Halve<1, OFF> {
    template <int G>
    __device__ __forceinline__ static void run(float (&v)[G], int, int&) {
#pragma unroll
        for (int o = OFF; o > 0; o >>= 1) v[0] += __shfl_xor_sync(FULL_MASK, v[0], o);
    }
};

// group_dot: the L lanes of a token group each hold 8 of a key's channels
// (kf) and the matching channels of G query heads (qf); it returns, in the
// lanes with lane % (L/G) == 0, the dot product of query head hh (set here)
// with the key.
template <int G, int L>
__device__ __forceinline__ float group_dot(const float (&qf)[G][8], const float (&kf)[8], int lane, int& hh) {
    float s[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        float a = 0.f;
#pragma unroll
        for (int j = 0; j < 8; ++j) a = fmaf(qf[g][j], kf[j], a);
        s[g] = a;
    }
    hh = 0;
    Halve<G, L / 2>::run(s, lane, hh);
    return s[0];
}

// KFrag is one lane's 8 channels of a key or value row: one 16-byte word of
// bf16 values (KV_BF16) or two of float32 (KV_F32).
template <int KT>
struct KFrag {
    uint4 a;
};
template <>
struct KFrag<KV_F32> {
    uint4 a, b;
};

// kf_load loads channels lane*8 .. lane*8+7 of a row; where ok is false it
// reads nothing and the fragment is zeros.
__device__ __forceinline__ void kf_load(KFrag<KV_BF16>& f, const void* row, int lane, bool ok) {
    f.a = ld_stream_if(reinterpret_cast<const bf16*>(row) + lane * 8, ok);
}

__device__ __forceinline__ void kf_load(KFrag<KV_F32>& f, const void* row, int lane, bool ok) {
    const float* p = reinterpret_cast<const float*>(row) + lane * 8;
    f.a = ld_stream_if(reinterpret_cast<const bf16*>(p), ok);
    f.b = ld_stream_if(reinterpret_cast<const bf16*>(p + 4), ok);
}

// kf_unpack widens a fragment to float32.
__device__ __forceinline__ void kf_unpack(const KFrag<KV_BF16>& f, float (&x)[8]) { unpack8(f.a, x); }

__device__ __forceinline__ void kf_unpack(const KFrag<KV_F32>& f, float (&x)[8]) {
    x[0] = __uint_as_float(f.a.x);
    x[1] = __uint_as_float(f.a.y);
    x[2] = __uint_as_float(f.a.z);
    x[3] = __uint_as_float(f.a.w);
    x[4] = __uint_as_float(f.b.x);
    x[5] = __uint_as_float(f.b.y);
    x[6] = __uint_as_float(f.b.z);
    x[7] = __uint_as_float(f.b.w);
}

// rope_cs is the cosine and sine of the RoPE angle d * invf as the CPU
// computes them: the angle in float32, cos and sin in double rounded to
// float. Not inlined: the re-positioned path is rare, and double cos and
// sin at every unrolled call site would multiply the kernels' code.
__device__ __noinline__ float2 rope_cs(int d, float invf) {
    const double an = (double)__fmul_rn((float)d, invf);
    return make_float2((float)cos(an), (float)sin(an));
}

// rot_group_dot is group_dot with the query of virtual head g rotated by
// the distance src.delta(i, g) of token i (RoPE of re-positioned keys,
// StreamingLLM): the key is turned back instead, R(a) q . k = q . R(-a) k,
// with each channel pair's angle as the CPU computes it (the distance times
// the inverse frequency in float32, cos and sin in double rounded to
// float); a distance of 0 leaves the key as it is. The partner channel of a
// pair is L/2 lanes away (rotate-half pairs) or in the lane itself
// (interleaved pairs). Every lane of the warp calls it (ok: the lane's
// token is real). Called once a kernel, from rot_scores, outside the
// unrolled steps of pass 1.
template <int G, int L, class Src>
__device__ __forceinline__ float rot_group_dot(const float (&qf)[G][8], const float (&kf)[8], int lane, int& hh,
                                               const Src& src, int i, bool ok) {
    constexpr int D = 8 * L;
    const bool inter = src.interleaved();
    float kp[8], kr[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const float o = __shfl_xor_sync(FULL_MASK, kf[j], L / 2);
        kp[j] = inter ? kf[j ^ 1] : o;
        kr[j] = kf[j];
    }
    float s[G];
    int dprev = 0;
#pragma unroll
    for (int g = 0; g < G; ++g) {
        const int dd = ok ? src.delta(i, g) : 0;
        if (dd != dprev) {
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const int ch = lane * 8 + j;
                const int f = inter ? ch >> 1 : (ch < D / 2 ? ch : ch - D / 2);
                const bool first = inter ? (j & 1) == 0 : ch < D / 2;
                const float2 cs = rope_cs(dd, src.invf(f));
                kr[j] = first ? __fadd_rn(__fmul_rn(kf[j], cs.x), __fmul_rn(kp[j], cs.y))
                              : __fsub_rn(__fmul_rn(kf[j], cs.x), __fmul_rn(kp[j], cs.y));
            }
            dprev = dd;
        }
        float a = 0.f;
#pragma unroll
        for (int j = 0; j < 8; ++j) a = fmaf(qf[g][j], kr[j], a);
        s[g] = a;
    }
    hh = 0;
    Halve<G, L / 2>::run(s, lane, hh);
    return s[0];
}

// ml_join is the (max, sum) pair of two base-2 softmax partials' pairs:
// M = max(a.x, b.x), sum = a.y 2^(a.x - M) + b.y 2^(b.x - M); (-inf, 0)
// where both are empty.
__device__ __forceinline__ float2 ml_join(float2 a, float2 b) {
    const float M = fmaxf(a.x, b.x);
    if (M == NEG_INF) return make_float2(NEG_INF, 0.f);
    return make_float2(M, fmaf(a.y, exp2f(a.x - M), b.y * exp2f(b.x - M)));
}

// merge_loads issues attn_merge's loads of chunks c, c + step, ...,
// c + (MB-1) step: each chunk's max for the thread's heads gg and its
// output columns col (float4s). With GUARD a chunk from nchunks on is not
// read: it weighs 2^-inf = 0.
template <int G, int D, bool GUARD, int MB, int CPT>
__device__ __forceinline__ void merge_loads(const float* __restrict__ pO, const float* __restrict__ pML, int c, int step,
                                            int nchunks, const int (&col)[CPT], const int (&gg)[CPT], float (&wm)[MB][CPT],
                                            float4 (&o)[MB][CPT]) {
#pragma unroll
    for (int u = 0; u < MB; ++u)
#pragma unroll
        for (int k = 0; k < CPT; ++k) {
            const int cu = c + u * step;
            const bool in = !GUARD || cu < nchunks;
            wm[u][k] = in ? __ldcg(pML + (cu * G + gg[k]) * 2) : NEG_INF;
            o[u][k] = in ? __ldcg(reinterpret_cast<const float4*>(pO + (size_t)cu * (G * D)) + col[k])
                         : make_float4(0.f, 0.f, 0.f, 0.f);
        }
}

// group_sum is column col's sum over the CG chunk groups' float4s in red
// [CG][Q] (shared memory, written before a barrier): the merges' last step
// where chunk groups split a row's chunks.
template <int CG, int Q>
__device__ __forceinline__ float4 group_sum(const float4* red, int col) {
    float4 s = red[col];
#pragma unroll
    for (int k = 1; k < CG; ++k) {
        const float4 t = red[k * Q + col];
        s.x += t.x;
        s.y += t.y;
        s.z += t.z;
        s.w += t.w;
    }
    return s;
}

// attn_merge: all NT threads of one block merge the nchunks partials of a
// row (G virtual heads) into the outputs: out_g = sum_c 2^(m_c - M) o_c /
// sum_c 2^(m_c - M) l_c, written at outp(g) (D floats; nullptr: not
// written). Partials written by other blocks are read through L2 (__ldcg).
// With outML the result is itself a partial (unnormalised output, its max
// and sum into outML); without, mlp(g) (nullptr: none) receives each head's
// M (0 where every token was masked) and sum, so that probabilities 2^(s -
// M) / sum can be formed later. Each thread owns float4 columns of the G*D
// outputs; when there are fewer columns than threads, chunk groups split the
// chunks and are summed in shared memory sm (NT float4).
template <int D, int G, int NT, class OutF, class MLF>
__device__ __forceinline__ void attn_merge(const float* __restrict__ pO, const float* __restrict__ pML, int nchunks,
                                           OutF outp, float* __restrict__ outML, MLF mlp, float* sm) {
    constexpr int NW = NT / 32;
    constexpr int Q = G * D / 4;
    constexpr int CG = Q >= NT ? 1 : NT / Q;
    constexpr int CPT = Q >= NT ? Q / NT : 1;
    __shared__ float sM[G], sInv[G], sMx[G], sL[G];
    const int tid = threadIdx.x, w = tid >> 5, ln = tid & 31;
    const int cg = CG == 1 ? 0 : tid / Q;
    float4 acc[CPT];
    int col[CPT], gg[CPT];
    float Mg[CPT];
#pragma unroll
    for (int k = 0; k < CPT; ++k) {
        acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);
        col[k] = CG == 1 ? tid + k * NT : tid % Q;
        gg[k] = col[k] * 4 / D;
    }
    // Batches of MB chunks: all their loads are issued before any is used.
    // The first batch's go out now, to land while the heads' maxima and sums
    // are formed, in one pass of running (max, sum) pairs (ml_join): one
    // wait on the L2 where a pass for the maxima, one for the sums and the
    // outputs' loads made three (a missing chunk weighs 2^-inf = 0). For
    // groups of 4, whose rows the host merges here by default over up to 16
    // chunks (fusedFor), a batch covers MERGE_R chunks where a thread's loads
    // stay within 16 float4s (CPT columns a chunk), so that such a row waits
    // on the L2 once; else 16 / CPT chunks a batch, and never fewer than 4.
    // Other groups take batches of 4: the larger batch's registers (176 ->
    // 207 for the tensor-core kernels of heads of 128) cost rows of 8 heads,
    // which the combine merges, 0.1-0.2 µs at 512 tokens.
    constexpr int MBR = (MERGE_R + CG - 1) / CG;
    constexpr int MB0 = G != 4 ? 4 : CPT * MBR <= 16 ? MBR : 16 / CPT;
    constexpr int MB = MB0 > 4 ? MB0 : 4;
    int c = cg;
    float wm0[MB][CPT];
    float4 o0[MB][CPT];
    merge_loads<G, D, true>(pO, pML, c, CG, nchunks, col, gg, wm0, o0);
    // Warp w forms heads w, w + NW, ...: the first 32 chunks' pairs of all
    // its heads are asked for before any is joined.
    constexpr int HW = (G + NW - 1) / NW;
    float2 ml0[HW];
#pragma unroll
    for (int k = 0; k < HW; ++k) {
        const int g = w + k * NW;
        ml0[k] = g < G && ln < nchunks ? __ldcg(reinterpret_cast<const float2*>(pML) + ln * G + g) : make_float2(NEG_INF, 0.f);
    }
#pragma unroll
    for (int k = 0; k < HW; ++k) {
        const int g = w + k * NW;
        if (g >= G) break;
        float2 ml = ml0[k];
        for (int i = ln + 32; i < nchunks; i += 32) ml = ml_join(ml, __ldcg(reinterpret_cast<const float2*>(pML) + i * G + g));
#pragma unroll
        for (int s = 16; s > 0; s >>= 1)
            ml = ml_join(ml, make_float2(__shfl_xor_sync(0xffffffffu, ml.x, s), __shfl_xor_sync(0xffffffffu, ml.y, s)));
        const float mx = ml.x, l = ml.y;
        const float M = mx == NEG_INF ? 0.f : mx;
        if (ln == 0) {
            sM[g] = M;
            sMx[g] = mx;
            sL[g] = l;
            // outML: a merged partial (unnormalised output, its max and sum).
            sInv[g] = outML != nullptr ? 1.f : (l > 0.f ? 1.f / l : 0.f);
        }
    }
    __syncthreads();
    if (tid < G) {
        if (outML != nullptr) {
            outML[tid * 2] = sMx[tid];
            outML[tid * 2 + 1] = sL[tid];
        } else if (float* p = mlp(tid)) {
            p[0] = sM[tid];
            p[1] = sL[tid];
        }
    }
#pragma unroll
    for (int k = 0; k < CPT; ++k) Mg[k] = sM[gg[k]];
#pragma unroll
    for (int u = 0; u < MB; ++u)
#pragma unroll
        for (int k = 0; k < CPT; ++k) fma4(acc[k], exp2f(wm0[u][k] - Mg[k]), o0[u][k]);
    c += MB * CG;
    for (; c + (MB - 1) * CG < nchunks; c += MB * CG) {
        float wm[MB][CPT];
        float4 o[MB][CPT];
        merge_loads<G, D, false>(pO, pML, c, CG, nchunks, col, gg, wm, o);
#pragma unroll
        for (int u = 0; u < MB; ++u)
#pragma unroll
            for (int k = 0; k < CPT; ++k) fma4(acc[k], exp2f(wm[u][k] - Mg[k]), o[u][k]);
    }
    for (; c < nchunks; c += CG) {
#pragma unroll
        for (int k = 0; k < CPT; ++k) {
            const float wc = exp2f(__ldcg(pML + (c * G + gg[k]) * 2) - Mg[k]);
            fma4(acc[k], wc, __ldcg(reinterpret_cast<const float4*>(pO + (size_t)c * (G * D)) + col[k]));
        }
    }
    if (CG == 1) {
#pragma unroll
        for (int k = 0; k < CPT; ++k) {
            const float inv = sInv[gg[k]];
            if (float* o = outp(gg[k]))
                *reinterpret_cast<float4*>(o + col[k] * 4 - gg[k] * D) =
                    make_float4(acc[k].x * inv, acc[k].y * inv, acc[k].z * inv, acc[k].w * inv);
        }
    } else {
        float4* red = reinterpret_cast<float4*>(sm);
        red[tid] = acc[0];
        __syncthreads();
        if (tid < Q) {
            const float4 s = group_sum<CG, Q>(red, tid);
            const float inv = sInv[gg[0]];
            if (float* o = outp(gg[0]))
                *reinterpret_cast<float4*>(o + tid * 4 - gg[0] * D) = make_float4(s.x * inv, s.y * inv, s.z * inv, s.w * inv);
        }
    }
}

// chunk_softmax turns the base-2 scores s[g*stride + i] (i < len) of the
// block's G heads into p = 2^(s - m_g) in place and returns each head's max
// m and sum l. All NT threads must call it.
template <int G, int NT>
__device__ __forceinline__ void chunk_softmax(float* s, int stride, int len, float (&m)[G], float (&l)[G]) {
    constexpr int NW = NT / 32;
    __shared__ float red[NW][G];
    const int tid = threadIdx.x, w = tid >> 5;
#pragma unroll
    for (int g = 0; g < G; ++g) {
        float x = NEG_INF;
        for (int i = tid; i < len; i += NT) x = fmaxf(x, s[g * stride + i]);
        x = warp_max(x);
        if ((tid & 31) == 0) red[w][g] = x;
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < G; ++g) {
        float x = red[0][g];
#pragma unroll
        for (int k = 1; k < NW; ++k) x = fmaxf(x, red[k][g]);
        m[g] = x;
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < G; ++g) {
        const float mm = m[g] == NEG_INF ? 0.f : m[g];
        float x = 0.f;
        for (int i = tid; i < len; i += NT) {
            const float p = exp2f(s[g * stride + i] - mm);
            s[g * stride + i] = p;
            x += p;
        }
        x = warp_sum(x);
        if ((tid & 31) == 0) red[w][g] = x;
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < G; ++g) {
        float x = 0.f;
#pragma unroll
        for (int k = 0; k < NW; ++k) x += red[k][g];
        l[g] = x;
    }
}

// attn_ml_at is where block (chunk c, row r) of a launch of nchunks x rows
// blocks writes its heads' maxima and sums in partML: [G][max, sum].
template <int G>
__device__ __forceinline__ float* attn_ml_at(float* partML, int r, int c, int nchunks) {
    return partML + ((size_t)r * nchunks + c) * (G * 2);
}

// attn_put_ml writes block (chunk c, row r)'s max m and sum l of virtual
// head g where attn_ml_at puts them: as floats, or with ep != 0 as tagged
// words at the same index of a u64 array (the polled merge).
template <int G>
__device__ __forceinline__ void attn_put_ml(float* partML, int r, int c, int nchunks, int g, float m, float l, u32 ep) {
    if (ep != 0) {
        st_tag2(reinterpret_cast<u64*>(partML) + ((size_t)r * nchunks + c) * (G * 2) + 2 * g, m, l, ep);
        return;
    }
    float* p = attn_ml_at<G>(partML, r, c, nchunks) + 2 * g;
    *reinterpret_cast<float2*>(p) = make_float2(m, l);
}

// attn_merge_poll is attn_merge over tagged partials (st_tag): block 0 of a
// row merges the row's nchunks partials (tO [nchunks][G*D], tML
// [nchunks][G][2] words) as they arrive, each word read again until it
// carries this launch's epoch ep, with no count of arrivals and no fence:
// the last partial's stores reach the merger in one trip through the L2,
// where the counted merge pays the arrival's atomic and then a round of
// loads. Each thread takes float4 column col of chunks cg, cg + CG, ...
// (the host sends a row here only where that is at most PM chunks a
// thread: one round of loads), joins them in running (max, sum, output),
// and the CG chunk groups meet in shared memory sm (NT float4). Outputs,
// maxima and sums as attn_merge writes them without outML.
#define PM 4
template <int D, int G, int NT, class OutF, class MLF>
__device__ __forceinline__ void attn_merge_poll(const u64* __restrict__ tO, const u64* __restrict__ tML, int nchunks, u32 ep,
                                                OutF outp, MLF mlp, float* sm) {
    constexpr int Q = G * D / 4;
    constexpr int CG = Q >= NT ? 1 : NT / Q;
    constexpr int CPT = Q >= NT ? Q / NT : 1;
    const int tid = threadIdx.x;
    const int cg = CG == 1 ? 0 : tid / Q;
    int col[CPT], gg[CPT];
    u64 w[PM][CPT][6];  // a chunk's four output words, then its max and sum
#pragma unroll
    for (int k = 0; k < CPT; ++k) {
        col[k] = CG == 1 ? tid + k * NT : tid % Q;
        gg[k] = col[k] * 4 / D;
    }
    // ask loads chunk cu's words for column k into x.
    auto ask = [&](int cu, int k, u64(&x)[6]) {
        const u64* o = tO + (size_t)cu * (G * D) + col[k] * 4;
        ld_tag2(o, x[0], x[1]);
        ld_tag2(o + 2, x[2], x[3]);
        ld_tag2(tML + (cu * G + gg[k]) * 2, x[4], x[5]);
    };
#pragma unroll
    for (int u = 0; u < PM; ++u) {
        const int cu = cg + u * CG;
        if (cu >= nchunks) break;
#pragma unroll
        for (int k = 0; k < CPT; ++k) ask(cu, k, w[u][k]);
    }
    float mr[CPT], lr[CPT];
    float4 acc[CPT];
#pragma unroll
    for (int k = 0; k < CPT; ++k) {
        mr[k] = NEG_INF;
        lr[k] = 0.f;
        acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int u = 0; u < PM; ++u) {
        const int cu = cg + u * CG;
        if (cu >= nchunks) break;
#pragma unroll
        for (int k = 0; k < CPT; ++k) {
            u64(&x)[6] = w[u][k];
            // Words not yet this launch's: ask again until they are.
            while (!(tag_is(x[0], ep) && tag_is(x[1], ep) && tag_is(x[2], ep) && tag_is(x[3], ep) && tag_is(x[4], ep) &&
                     tag_is(x[5], ep)))
                ask(cu, k, x);
            const float mc = tag_value(x[4]), M = fmaxf(mr[k], mc);
            if (M == NEG_INF) continue;  // both empty
            const float a = exp2f(mr[k] - M), b = exp2f(mc - M);
            lr[k] = fmaf(lr[k], a, tag_value(x[5]) * b);
            acc[k] = make_float4(fmaf(acc[k].x, a, tag_value(x[0]) * b), fmaf(acc[k].y, a, tag_value(x[1]) * b),
                                 fmaf(acc[k].z, a, tag_value(x[2]) * b), fmaf(acc[k].w, a, tag_value(x[3]) * b));
            mr[k] = M;
        }
    }
    if (CG == 1) {
#pragma unroll
        for (int k = 0; k < CPT; ++k) {
            const float inv = lr[k] > 0.f ? 1.f / lr[k] : 0.f;
            if (float* o = outp(gg[k]))
                *reinterpret_cast<float4*>(o + col[k] * 4 - gg[k] * D) =
                    make_float4(acc[k].x * inv, acc[k].y * inv, acc[k].z * inv, acc[k].w * inv);
            if (col[k] * 4 % D == 0)
                if (float* p = mlp(gg[k])) {
                    p[0] = mr[k] == NEG_INF ? 0.f : mr[k];
                    p[1] = lr[k];
                }
        }
        return;
    }
    // The chunk groups' (max, sum) pairs, then their outputs scaled to the
    // column's maximum, through sm.
    float2* sml = reinterpret_cast<float2*>(sm);
    sml[tid] = make_float2(mr[0], lr[0]);
    __syncthreads();
    const int cl = tid % Q;
    float M = NEG_INF;
#pragma unroll
    for (int k = 0; k < CG; ++k) M = fmaxf(M, sml[k * Q + cl].x);
    float L = 0.f;
#pragma unroll
    for (int k = 0; k < CG; ++k) {
        const float2 e = sml[k * Q + cl];
        if (e.x != NEG_INF) L = fmaf(e.y, exp2f(e.x - M), L);
    }
    const float s = mr[0] == NEG_INF ? 0.f : exp2f(mr[0] - M);
    __syncthreads();
    float4* red = reinterpret_cast<float4*>(sm);
    red[tid] = make_float4(acc[0].x * s, acc[0].y * s, acc[0].z * s, acc[0].w * s);
    __syncthreads();
    if (tid < Q) {
        const float4 t = group_sum<CG, Q>(red, tid);
        const float inv = L > 0.f ? 1.f / L : 0.f;
        if (float* o = outp(gg[0])) *reinterpret_cast<float4*>(o + tid * 4 - gg[0] * D) = make_float4(t.x * inv, t.y * inv, t.z * inv, t.w * inv);
        if (tid * 4 % D == 0)
            if (float* p = mlp(gg[0])) {
                p[0] = M == NEG_INF ? 0.f : M;
                p[1] = L;
            }
    }
}

// attn_finish ends split-KV block (chunk c, row r) of a launch of nchunks x
// rows blocks: the warps' partial outputs are in smem [NW][G][PD] (head g's
// D channels at g*PD: PD > D pads the rows against bank conflicts), written
// before a barrier, as are the block's maxima and sums at attn_ml_at; it
// sums the outputs into the block's partial (partO) and, with counters,
// runs the fused merge, which writes virtual head g's output at outp(g) and
// its max and sum at mlp(g) (see attn_merge).
template <int D, int G, int PD, class OutF, class MLF>
__device__ __forceinline__ void attn_finish(float* smem, int r, int c, int nchunks, int rows, float* __restrict__ partO,
                                            float* __restrict__ partML, int* __restrict__ counters, OutF outp, MLF mlp,
                                            u32 ep = 0) {
    constexpr int NT = ATTN_NT, NW = NT / 32;
    const int tid = threadIdx.x;
    const size_t prow = (size_t)r * nchunks;
    // With ep the polled merge (RH_EPOCH): the partial as tagged words (its
    // maxima and sums went so, attn_put_ml), and block 0 of the row merges.
    u64* tO = reinterpret_cast<u64*>(partO);
    for (int idx = tid; idx < G * D; idx += NT) {
        const int at = (idx / D) * PD + idx % D;
        float x = 0.f;
#pragma unroll
        for (int k = 0; k < NW; ++k) x += smem[k * G * PD + at];
        if (ep != 0)
            st_tag(tO + (prow + c) * (G * D) + idx, x, ep);
        else
            partO[(prow + c) * (G * D) + idx] = x;
    }
    if (ep != 0) {
        if (c != 0) return;
        __syncthreads();  // smem is free for the merge
        attn_merge_poll<D, G, NT>(tO + prow * (G * D), reinterpret_cast<const u64*>(partML) + prow * (G * 2), nchunks, ep, outp,
                                  mlp, smem);
        return;
    }
    if (counters == nullptr) {
        if (nchunks != 1) return;  // a combine kernel merges the partials
        // One chunk a row (a batch of many streams): this block holds the
        // whole row, and its own partial, normalised, is the output; the
        // host launches no combine. (The partial stays written: a combine
        // launched all the same writes the same outputs.)
        __syncthreads();  // the partial (global, this block's) is seen; smem is free for the merge
        attn_merge<D, G, NT>(partO + prow * (G * D), partML + prow * (G * 2), 1, outp, nullptr, mlp, smem);
        return;
    }
    // Fused merge, two levels (a counter a group, arrive_last; each counter is
    // reset by the block that saw it complete, for the next launch): the
    // last block to finish among a group of MERGE_S consecutive chunks
    // merges the group's partials into a group partial (after the chunk
    // partials: [rows, ngroups, ...]); the last group merger of the row
    // merges the group partials into the outputs. With one group, the group
    // merge writes the outputs. Counters: [rows, ngroups] then [rows].
    constexpr int S = MERGE_S;
    const int ngroups = (nchunks + S - 1) / S, grp = c / S;
    const int gsize = min(S, nchunks - grp * S);
    __shared__ int sLast;
    __syncthreads();
    if (tid == 0) sLast = arrive_last(&counters[r * ngroups + grp], gsize);
    __syncthreads();
    if (!sLast) return;
    if (tid == 0) counters[r * ngroups + grp] = 0;
    float* gO = partO + (size_t)rows * nchunks * (G * D) + (size_t)r * ngroups * (G * D);
    float* gML = partML + (size_t)rows * nchunks * (G * 2) + (size_t)r * ngroups * (G * 2);
    const float* pO = partO + (prow + grp * S) * (G * D);
    const float* pML = partML + (prow + grp * S) * (G * 2);
    if (ngroups == 1) {
        attn_merge<D, G, NT>(pO, pML, gsize, outp, nullptr, mlp, smem);
        return;
    }
    float* gOg = gO + (size_t)grp * (G * D);
    attn_merge<D, G, NT>(pO, pML, gsize, [=](int g) { return gOg + (size_t)g * D; }, gML + (size_t)grp * (G * 2), mlp, smem);
    __syncthreads();
    if (tid == 0) sLast = arrive_last(&counters[rows * ngroups + r], ngroups);
    __syncthreads();
    if (!sLast) return;
    if (tid == 0) counters[rows * ngroups + r] = 0;
    attn_merge<D, G, NT>(gO, gML, ngroups, outp, nullptr, mlp, smem);
}

// rot_scores scores again, with their keys turned (rot_group_dot), the
// chunk's tokens [0, src.rot_limit()) whose key was re-positioned, after
// pass 1 scored every token as if none were and the block synchronised:
// a separate loop keeps the rotation out of pass 1's unrolled steps (where
// it cost StreamingLLM's decode 3x the time of plain attention, for the
// four sinks it turns), and reads the few keys it needs again. A warp's
// step turns its tokens only where one of them needs it, as pass 1 did
// before. rot_limit() is the block's, so every warp runs the same steps;
// the block synchronises again after it.
template <int D, int G, int KT, class Src>
__device__ __forceinline__ void rot_scores(const Src& src, const float (&qf)[G][8], int chunk, float* smem) {
    constexpr int L = D / 8;
    constexpr int TG = ATTN_NT / L;
    const int nr = src.rot_limit();
    if (nr <= 0) return;
    const int lane = threadIdx.x % L, tg = threadIdx.x / L;
    for (int base = 0; base < nr; base += TG) {
        const int i = base + tg;
        const int t = i < nr ? src.token(i) : -1;
        if (!__any_sync(FULL_MASK, t >= 0 && src.needs_rot(i))) continue;
        KFrag<KT> x;
        kf_load(x, src.row(false, t), lane, t >= 0);
        float kf[8];
        kf_unpack(x, kf);
        int h;
        const float d = rot_group_dot<G, L>(qf, kf, lane, h, src, i, t >= 0);
        if (lane % (L / G) == 0 && t >= 0) {
            const float v = src.visible(i, h) ? d : NEG_INF;
            smem[h * chunk + i] = v;
            src.put_raw(h, i, v);
        }
    }
    __syncthreads();
}

// attn_core is the work of one split-KV block on the len tokens of its
// chunk (chunk: the row stride of the scores in smem), the source src
// telling where they are and which are visible: pass 1 writes the scores to
// smem [G][chunk] (and, where src keeps them, to the raw scores), a softmax
// gives each virtual head's max m and sum l, and pass 2 sums p*v; the warps'
// partial outputs are left in smem [NW][G][D] for attn_finish. qinit fills
// the pre-scaled queries; it runs once the first keys are asked for. With
// SH, the tokens whose key was re-positioned (src.needs_rot; none at or past
// src.rot_limit()) are scored again by rot_scores between pass 1 and the
// softmax. Every thread of the block calls it.
template <int D, int G, int KT, bool SH, int UX = 0, class Src, class QInit>
__device__ __forceinline__ void attn_core(const Src& src, QInit qinit, int len, int chunk, float* smem, float (&m)[G],
                                          float (&l)[G]) {
    constexpr int NT = ATTN_NT;
    constexpr int L = D / 8;    // threads per token
    constexpr int TG = NT / L;  // tokens per step
    constexpr int U0 = UX > 0 ? UX : G == 1 ? ATTN_U1 : G >= 8 ? ATTN_U8 : ATTN_U;
    constexpr int U = KT == KV_F32 ? (U0 + 1) / 2 : U0;
    static_assert(G <= L, "group larger than the lanes of a token");
    const int tid = threadIdx.x, lane = tid % L, tg = tid / L, w = tid >> 5;
    // fetch issues the loads of the U tokens of step `base` of this thread.
    auto fetch = [&](bool isV, int base, KFrag<KT>(&x)[U], int(&t)[U]) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int i = base + u * TG + tg;
            t[u] = i < len ? src.token(i) : -1;
            kf_load(x[u], src.row(isV, t[u]), lane, t[u] >= 0);
        }
    };

    // Pass 1: scores, with the next step's loads in flight; the last step
    // asks for the first values instead, so that the loads stay in flight
    // across the softmax.
    KFrag<KT> xa[U], xb[U];
    int ta[U], tb[U];
    fetch(false, 0, xa, ta);
    float qf[G][8];
    qinit(qf);
    for (int base = 0; base < len; base += TG * U) {
        const bool more = base + TG * U < len;
        fetch(!more, more ? base + TG * U : 0, xb, tb);
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int i = base + u * TG + tg;
            float kf[8];
            kf_unpack(xa[u], kf);
            int h;
            const float d = group_dot<G, L>(qf, kf, lane, h);
            if (lane % (L / G) == 0 && i < len) {
                const float x = ta[u] >= 0 && src.visible(i, h) ? d : NEG_INF;
                smem[h * chunk + i] = x;
                src.put_raw(h, i, x);
            }
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            xa[u] = xb[u];
            ta[u] = tb[u];
        }
    }
    __syncthreads();
    if (SH) rot_scores<D, G, KT>(src, qf, chunk, smem);

    chunk_softmax<G, NT>(smem, chunk, len, m, l);

    // Pass 2: acc[g] = sum_t p[g][t] * v[t] over this thread's tokens.
    float acc[G][8];
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[g][j] = 0.f;
    for (int base = 0; base < len; base += TG * U) {
        fetch(true, base + TG * U, xb, tb);
#pragma unroll
        for (int u = 0; u < U; ++u) {
            if (ta[u] < 0) continue;
            const int i = base + u * TG + tg;
            float vf[8];
            kf_unpack(xa[u], vf);
#pragma unroll
            for (int g = 0; g < G; ++g) {
                const float p = smem[g * chunk + i];
#pragma unroll
                for (int j = 0; j < 8; ++j) acc[g][j] = fmaf(p, vf[j], acc[g][j]);
            }
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            xa[u] = xb[u];
            ta[u] = tb[u];
        }
    }
    // Sum over the token groups: first within the warp, then across warps.
#pragma unroll
    for (int o = L; o < 32; o <<= 1) {
#pragma unroll
        for (int g = 0; g < G; ++g)
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[g][j] += __shfl_xor_sync(FULL_MASK, acc[g][j], o);
    }
    __syncthreads();  // every thread is done with the probabilities
    if ((tid & 31) < L) {
#pragma unroll
        for (int g = 0; g < G; ++g)
#pragma unroll
            for (int j = 0; j < 8; ++j) smem[(w * G + g) * D + lane * 8 + j] = acc[g][j];
    }
    __syncthreads();
}

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
