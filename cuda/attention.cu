// Split-KV decode attention ("flash decoding") for one query token, batch 1.
//
// Layout: q [heads, D] bf16; K and V [kvHeads, n, D] bf16 (a contiguous run
// of pages per KV head); out [heads, D] float32. Query head h reads KV head
// h / (heads / kvHeads).
//
// The work is split into rows and chunks. A row is a set of G query heads
// that read the same tokens of one KV head: dense attention and Quest with a
// selection shared by a GQA group have one row per KV head (G = the group
// size), so each K/V byte is read once for the whole group; Quest with a
// selection per query head has one row per query head (G = 1). Block
// (chunk c, row r) of attn_{dense,paged}_d{D}_g{G} handles `chunk` tokens of
// row r: a pass over K writes the scores of its tokens to shared memory, a
// softmax over them, and a pass over V accumulates p*v; it writes its
// partial (max, sum, unnormalised output). attn_combine_d{D} then merges the
// partials of each query head, many blocks in parallel (one per query head
// and 32 channels);
// or, when the host passes counters (its default for G = 1), the split
// kernel merges them itself in two levels of "last block to finish" merges
// (attn_merge), saving the second launch.
//
// Each token's D channels are read by L = D/8 threads with one 16-byte load
// each; a block of ATTN_NT threads covers ATTN_NT/L tokens per step and
// issues U steps of loads before using them. The host sizes the chunks so
// that the grid fills the GPU in one wave of resident blocks.
//
// Paged rows (Quest): virtual token i of row r is slot i % pageSize of page
// pages[r*nsel + i/pageSize]; tokens past n (a partial last page) are masked.

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
// 6 was slower (fewer resident blocks).
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
// (x) and the matching channels of G query heads (qf); it returns, in the
// lanes with lane % (L/G) == 0, the dot product of query head hh (set here)
// with the key.
template <int G, int L>
__device__ __forceinline__ float group_dot(const float (&qf)[G][8], const uint4 x, int lane, int& hh) {
    float kf[8];
    unpack8(x, kf);
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

// attn_merge: all NT threads of one block merge the nchunks partials of a
// row (G heads) into out [G, D]: out = sum_c 2^(m_c - M) o_c / sum_c
// 2^(m_c - M) l_c. Partials written by other blocks are read through L2
// (__ldcg). Each thread owns float4 columns of the G*D outputs; when there
// are fewer columns than threads, chunk groups split the chunks and are
// summed in shared memory sm (NT float4).
template <int D, int G, int NT>
__device__ __forceinline__ void attn_merge(const float* __restrict__ pO, const float* __restrict__ pML, int nchunks,
                                           float* __restrict__ out, float* __restrict__ outML, float* sm) {
    constexpr int NW = NT / 32;
    constexpr int Q = G * D / 4;
    constexpr int CG = Q >= NT ? 1 : NT / Q;
    constexpr int CPT = Q >= NT ? Q / NT : 1;
    __shared__ float sM[G], sInv[G], sMx[G], sL[G];
    const int tid = threadIdx.x, w = tid >> 5, ln = tid & 31;
    for (int g = w; g < G; g += NW) {
        float mx = NEG_INF;
        for (int c = ln; c < nchunks; c += 32) mx = fmaxf(mx, __ldcg(pML + (c * G + g) * 2));
        mx = warp_max(mx);
        const float M = mx == NEG_INF ? 0.f : mx;
        float l = 0.f;
        for (int c = ln; c < nchunks; c += 32) {
            const float2 ml = __ldcg(reinterpret_cast<const float2*>(pML) + c * G + g);
            l += exp2f(ml.x - M) * ml.y;
        }
        l = warp_sum(l);
        if (ln == 0) {
            sM[g] = M;
            sMx[g] = mx;
            sL[g] = l;
            // outML: a merged partial (unnormalised output, its max and sum).
            sInv[g] = outML != nullptr ? 1.f : (l > 0.f ? 1.f / l : 0.f);
        }
    }
    __syncthreads();
    if (outML != nullptr && tid < G) {
        outML[tid * 2] = sMx[tid];
        outML[tid * 2 + 1] = sL[tid];
    }
    const int cg = CG == 1 ? 0 : tid / Q;
    float4 acc[CPT];
    int col[CPT], gg[CPT];
    float Mg[CPT];
#pragma unroll
    for (int k = 0; k < CPT; ++k) {
        acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);
        col[k] = CG == 1 ? tid + k * NT : tid % Q;
        gg[k] = col[k] * 4 / D;
        Mg[k] = sM[gg[k]];
    }
    // Batches of MB chunks: all their loads are issued before any is used.
    constexpr int MB = 4;
    int c = cg;
    for (; c + (MB - 1) * CG < nchunks; c += MB * CG) {
        float wm[MB][CPT];
        float4 o[MB][CPT];
#pragma unroll
        for (int u = 0; u < MB; ++u)
#pragma unroll
            for (int k = 0; k < CPT; ++k) {
                wm[u][k] = __ldcg(pML + ((c + u * CG) * G + gg[k]) * 2);
                o[u][k] = __ldcg(reinterpret_cast<const float4*>(pO + (size_t)(c + u * CG) * (G * D)) + col[k]);
            }
#pragma unroll
        for (int u = 0; u < MB; ++u)
#pragma unroll
            for (int k = 0; k < CPT; ++k) {
                const float wc = exp2f(wm[u][k] - Mg[k]);
                acc[k].x = fmaf(wc, o[u][k].x, acc[k].x);
                acc[k].y = fmaf(wc, o[u][k].y, acc[k].y);
                acc[k].z = fmaf(wc, o[u][k].z, acc[k].z);
                acc[k].w = fmaf(wc, o[u][k].w, acc[k].w);
            }
    }
    for (; c < nchunks; c += CG) {
#pragma unroll
        for (int k = 0; k < CPT; ++k) {
            const float wc = exp2f(__ldcg(pML + (c * G + gg[k]) * 2) - Mg[k]);
            const float4 o = __ldcg(reinterpret_cast<const float4*>(pO + (size_t)c * (G * D)) + col[k]);
            acc[k].x = fmaf(wc, o.x, acc[k].x);
            acc[k].y = fmaf(wc, o.y, acc[k].y);
            acc[k].z = fmaf(wc, o.z, acc[k].z);
            acc[k].w = fmaf(wc, o.w, acc[k].w);
        }
    }
    if (CG == 1) {
#pragma unroll
        for (int k = 0; k < CPT; ++k) {
            const float inv = sInv[gg[k]];
            reinterpret_cast<float4*>(out)[col[k]] =
                make_float4(acc[k].x * inv, acc[k].y * inv, acc[k].z * inv, acc[k].w * inv);
        }
    } else {
        float4* red = reinterpret_cast<float4*>(sm);
        red[tid] = acc[0];
        __syncthreads();
        if (tid < Q) {
            float4 s = red[tid];
#pragma unroll
            for (int k = 1; k < CG; ++k) {
                const float4 t = red[k * Q + tid];
                s.x += t.x;
                s.y += t.y;
                s.z += t.z;
                s.w += t.w;
            }
            const float inv = sInv[gg[0]];
            reinterpret_cast<float4*>(out)[tid] = make_float4(s.x * inv, s.y * inv, s.z * inv, s.w * inv);
        }
    }
}

// split_bf16 packs p as two bf16 halves, high | low: hi = bf16(p) in the
// upper 16 bits, lo = bf16(p - hi) in the lower (hi + lo is p within about
// 2^-17 relative), for tensor-core products that keep float32 accuracy.
__device__ __forceinline__ u32 split_bf16(float p) {
    const bf16 hi = bf16_from_f32(p);
    return ((u32)hi << 16) | bf16_from_f32(p - f32_from_bf16(hi));
}

// chunk_softmax turns the base-2 scores s[g*stride + i] (i < len) of the
// block's G heads into p = 2^(s - m_g) in place and returns each head's max
// m and sum l. With PACK the probabilities are stored as split_bf16 words
// and entries len..padTo-1 are zeroed (the tensor-core kernels read whole
// tiles of 16 tokens). All NT threads must call it.
template <int G, int NT, bool PACK>
__device__ __forceinline__ void chunk_softmax(float* s, int stride, int len, int padTo, float (&m)[G], float (&l)[G]) {
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
            if (PACK)
                reinterpret_cast<u32*>(s)[g * stride + i] = split_bf16(p);
            else
                s[g * stride + i] = p;
            x += p;
        }
        if (PACK)
            for (int i = len + tid; i < padTo; i += NT) s[g * stride + i] = 0.f;
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

// attn_finish ends a split-KV block: the warps' partial outputs are in
// smem [NW][G][D] (written after a barrier); it sums them into the block's
// partial (partO, with each head's max m and sum l in partML) and, with
// counters, runs the fused merge.
template <int D, int G>
__device__ __forceinline__ void attn_finish(float* smem, const float (&m)[G], const float (&l)[G], float* __restrict__ partO,
                                            float* __restrict__ partML, int* __restrict__ counters, float* __restrict__ out) {
    constexpr int NT = ATTN_NT, NW = NT / 32;
    const int r = blockIdx.y, c = blockIdx.x, nchunks = gridDim.x, tid = threadIdx.x;
    const size_t prow = (size_t)r * nchunks;
    for (int idx = tid; idx < G * D; idx += NT) {
        float x = 0.f;
#pragma unroll
        for (int k = 0; k < NW; ++k) x += smem[k * G * D + idx];
        partO[(prow + c) * (G * D) + idx] = x;
    }
    if (tid == 0) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
            partML[((prow + c) * G + g) * 2 + 0] = m[g];
            partML[((prow + c) * G + g) * 2 + 1] = l[g];
        }
    }
    if (counters == nullptr) return;  // attn_combine merges the partials
    // Fused merge, two levels (threadFenceReduction pattern; each counter is
    // reset by the block that saw it complete, for the next launch): the
    // last block to finish among a group of MERGE_S consecutive chunks
    // merges the group's partials into a group partial (after the chunk
    // partials: [rows, ngroups, ...]); the last group merger of the row
    // merges the group partials into out. With one group, the group merge
    // writes out. Counters: [rows, ngroups] then [rows].
    constexpr int S = MERGE_S;
    const int rows = gridDim.y, ngroups = (nchunks + S - 1) / S, grp = c / S;
    const int gsize = min(S, nchunks - grp * S);
    __shared__ int sLast;
    __threadfence();
    __syncthreads();
    if (tid == 0) sLast = atomicAdd(&counters[r * ngroups + grp], 1) == gsize - 1;
    __syncthreads();
    if (!sLast) return;
    __threadfence();
    if (tid == 0) counters[r * ngroups + grp] = 0;
    float* gO = partO + (size_t)rows * nchunks * (G * D) + (size_t)r * ngroups * (G * D);
    float* gML = partML + (size_t)rows * nchunks * (G * 2) + (size_t)r * ngroups * (G * 2);
    const float* pO = partO + (prow + grp * S) * (G * D);
    const float* pML = partML + (prow + grp * S) * (G * 2);
    if (ngroups == 1) {
        attn_merge<D, G, NT>(pO, pML, gsize, out + (size_t)r * G * D, nullptr, smem);
        return;
    }
    attn_merge<D, G, NT>(pO, pML, gsize, gO + (size_t)grp * (G * D), gML + (size_t)grp * (G * 2), smem);
    __threadfence();
    __syncthreads();
    if (tid == 0) sLast = atomicAdd(&counters[rows * ngroups + r], 1) == ngroups - 1;
    __syncthreads();
    if (!sLast) return;
    __threadfence();
    if (tid == 0) counters[rows * ngroups + r] = 0;
    attn_merge<D, G, NT>(gO, gML, ngroups, out + (size_t)r * G * D, nullptr, smem);
}

// stage_pages: for a paged row (Quest, the oracle), the NT threads copy the
// page ids of the chunk's tokens c0 .. c0+len-1 of row r into spg and
// return the first page's index; dense rows stage nothing.
template <bool PAGED, int NT>
__device__ __forceinline__ int stage_pages(int* spg, const int* __restrict__ pages, int r, int nsel, int pageSize,
                                           int c0, int len) {
    if (!PAGED) return 0;
    const int pg0 = c0 / pageSize, npg = (c0 + len - 1) / pageSize - pg0 + 1;
    for (int j = threadIdx.x; j < npg; j += NT) spg[j] = pages[(size_t)r * nsel + pg0 + j];
    __syncthreads();
    return pg0;
}

// chunk_token maps the chunk's i-th token to its index in the KV head, or
// -1 when it is masked (past n on a partial last page).
template <bool PAGED>
__device__ __forceinline__ int chunk_token(const int* spg, int pg0, int c0, int i, int pageSize, int n) {
    if (!PAGED) return c0 + i;
    const int v = c0 + i;
    const int t = spg[v / pageSize - pg0] * pageSize + v % pageSize;
    return t < n ? t : -1;
}

template <int D, int G, bool PAGED>
__device__ __forceinline__ void attn_split(
    const bf16* __restrict__ q, const bf16* __restrict__ K, const bf16* __restrict__ V,
    const int* __restrict__ pages, int n, int nsel, int pageSize, int rowsPerKV, int chunk,
    float scaleLog2, float* __restrict__ partO, float* __restrict__ partML, int* __restrict__ counters,
    float* __restrict__ out, float* __restrict__ raw) {
    constexpr int NT = ATTN_NT;
    constexpr int L = D / 8;    // threads per token
    constexpr int TG = NT / L;  // tokens per step
    constexpr int U = G == 1 ? ATTN_U1 : G >= 8 ? ATTN_U8 : ATTN_U;
    static_assert(G <= L, "group larger than the lanes of a token");
    // smem: scores/probabilities [G][chunk], then (paged) the chunk's page
    // ids; after pass 2 the warps' partial outputs [NW][G][D] from offset 0.
    extern __shared__ float smem[];

    pdl_trigger();
    pdl_wait();
    const int r = blockIdx.y, c = blockIdx.x;
    const int tid = threadIdx.x, lane = tid % L, tg = tid / L, w = tid >> 5;
    const int kvh = r / rowsPerKV;
    const int total = PAGED ? nsel * pageSize : n;
    const int c0 = c * chunk;
    const int len = min(chunk, total - c0);
    const bf16* Kh = K + (size_t)kvh * n * D + lane * 8;
    const bf16* Vh = V + (size_t)kvh * n * D + lane * 8;
    // The query is loaded first (its latency overlaps the page-list staging
    // and the first keys' loads) and used after the first keys are asked
    // for, pre-scaled by softmax scale * log2(e): scores are in base 2.
    uint4 qv[G];
#pragma unroll
    for (int g = 0; g < G; ++g) qv[g] = *reinterpret_cast<const uint4*>(q + (size_t)(r * G + g) * D + lane * 8);

    int* spg = reinterpret_cast<int*>(smem + G * chunk);
    const int pg0 = stage_pages<PAGED, NT>(spg, pages, r, nsel, pageSize, c0, len);
    auto token_of = [&](int i) -> int { return chunk_token<PAGED>(spg, pg0, c0, i, pageSize, n); };
    // fetch issues the loads of the U tokens of step `base` of this thread.
    auto fetch = [&](const bf16* base_ptr, int base, uint4(&x)[U], int(&t)[U]) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int i = base + u * TG + tg;
            t[u] = i < len ? token_of(i) : -1;
            x[u] = ld_stream_if(base_ptr + (size_t)max(t[u], 0) * D, t[u] >= 0);
        }
    };

    // Pass 1: scores, with the next step's loads in flight; the last step
    // asks for the first values instead, so that the loads stay in flight
    // across the softmax.
    uint4 xa[U], xb[U];
    int ta[U], tb[U];
    fetch(Kh, 0, xa, ta);
    float qf[G][8];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        unpack8(qv[g], qf[g]);
#pragma unroll
        for (int j = 0; j < 8; ++j) qf[g][j] *= scaleLog2;
    }
    for (int base = 0; base < len; base += TG * U) {
        const bool more = base + TG * U < len;
        fetch(more ? Kh : Vh, more ? base + TG * U : 0, xb, tb);
#pragma unroll
        for (int u = 0; u < U; ++u) {
            int h;
            const float d = group_dot<G, L>(qf, xa[u], lane, h);
            const int i = base + u * TG + tg;
            if (lane % (L / G) == 0 && i < len) {
                const float x = ta[u] >= 0 ? d : NEG_INF;
                smem[h * chunk + i] = x;
                if (raw != nullptr) raw[(size_t)(r * G + h) * total + c0 + i] = x;
            }
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            xa[u] = xb[u];
            ta[u] = tb[u];
        }
    }
    __syncthreads();

    float m[G], l[G];
    chunk_softmax<G, NT, false>(smem, chunk, len, len, m, l);

    // Pass 2: acc[g] = sum_t p[g][t] * v[t] over this thread's tokens.
    float acc[G][8];
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[g][j] = 0.f;
    for (int base = 0; base < len; base += TG * U) {
        fetch(Vh, base + TG * U, xb, tb);
#pragma unroll
        for (int u = 0; u < U; ++u) {
            if (ta[u] < 0) continue;
            const int i = base + u * TG + tg;
            float vf[8];
            unpack8(xa[u], vf);
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
    attn_finish<D, G>(smem, m, l, partO, partML, counters, out);
}

// Kernel parameters, in order: q, K, V, pages, n, nsel, pageSize, rowsPerKV,
// chunk, scaleLog2, partO [rows, chunks, G, D], partML [rows, chunks, G, 2],
// counters [rows] (zero between launches; null: attn_combine merges, the
// default), out [rows*G, D] (with counters: the last block of each row
// merges into it), raw (null: none) [rows*G, tokens of a row] the base-2
// scores (q·k · scale · log2 e; -inf where masked), for the policies that
// score tokens by their attention (H2O, TOVA).
#define ATTN_PARAMS                                                                             \
    const bf16 *__restrict__ q, const bf16 *__restrict__ K, const bf16 *__restrict__ V,         \
        const int *__restrict__ pages, int n, int nsel, int pageSize, int rowsPerKV, int chunk, \
        float scaleLog2, float *__restrict__ partO, float *__restrict__ partML, int *__restrict__ counters, \
        float *__restrict__ out, float *__restrict__ raw
#define ATTN_ARGS q, K, V, pages, n, nsel, pageSize, rowsPerKV, chunk, scaleLog2, partO, partML, counters, out, raw

#define ATTN_KERNELS(D, G)                                                                \
    extern "C" __global__ void __launch_bounds__(ATTN_NT, ((G) == 4 ? ATTN_MINB : 1)) attn_dense_d##D##_g##G(ATTN_PARAMS) { \
        attn_split<D, G, false>(ATTN_ARGS);                                               \
    }                                                                                     \
    extern "C" __global__ void __launch_bounds__(ATTN_NT, ((G) == 4 ? ATTN_MINB : 1)) attn_paged_d##D##_g##G(ATTN_PARAMS) { \
        attn_split<D, G, true>(ATTN_ARGS);                                                \
    }

ATTN_KERNELS(64, 1)
ATTN_KERNELS(64, 2)
ATTN_KERNELS(64, 4)
ATTN_KERNELS(64, 8)
ATTN_KERNELS(128, 1)
ATTN_KERNELS(128, 2)
ATTN_KERNELS(128, 4)
ATTN_KERNELS(128, 8)

// attn_combine merges the partials of the chunks of a row, one query head
// and 32 channels per block: block (g, r, slice) writes out[(r*G + g)*D +
// slice*32 + j] = sum_c 2^(m_c - M) o_c[.] / sum_c 2^(m_c - M) l_c, M =
// max_c m_c (chunks with no unmasked token have m_c = -inf and count for
// nothing). COMB_NT threads: 8 float4 columns times COMB_NT/8 chunk groups;
// each thread issues the loads of all its chunks before it uses them and
// keeps its own running max, so the kernel waits for memory once; the
// chunk groups are then merged in shared memory.
template <int D>
__device__ __forceinline__ void attn_combine(const float* __restrict__ partO, const float* __restrict__ partML,
                                             int nchunks, float* __restrict__ out) {
    constexpr int NT = COMB_NT, Q = 8, CG = NT / Q, B = 4;
    __shared__ float4 sAcc[CG][Q];
    __shared__ float sM[CG][Q], sL[CG][Q];
    pdl_wait();
    const int g = blockIdx.x, G = gridDim.x, r = blockIdx.y, tid = threadIdx.x;
    const int cg = tid / Q, col = blockIdx.z * Q + tid % Q;
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
    reinterpret_cast<float4*>(out + ((size_t)r * G + g) * D)[col] = make_float4(s.x * inv, s.y * inv, s.z * inv, s.w * inv);
}

#define COMBINE_KERNEL(D)                                                                                  \
    extern "C" __global__ void __launch_bounds__(COMB_NT) attn_combine_d##D(                               \
        const float* __restrict__ partO, const float* __restrict__ partML, int nchunks, float* __restrict__ out) { \
        attn_combine<D>(partO, partML, nchunks, out);                                                      \
    }

COMBINE_KERNEL(64)
COMBINE_KERNEL(128)
