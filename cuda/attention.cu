// Split-KV decode attention ("flash decoding") over the runtime's paged KV
// cache (Backend.Attend and AttendBatch, runtime/cuda): the CUDA-core
// kernels' shared device code here (loads, dot products, softmax, merges
// and attn_core, the work of one block), the one-call kernels attn_rt_* and
// their combine in attention_rt.cu, the batched ones attn_rtb_* in
// attention_rtb.cu, the tensor-core ones in attention_tc.cu. The CUDA-core
// kernels are instantiations of one template (attn_core) that a "source"
// (RtSrc, attention_rt.cu) tells where a block finds its tokens, queries,
// masks and outputs.
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
// model's sliding window. See RtSrc (attention_rt.cu).

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
