// Prefill attention on Hopper's warpgroup tensor cores (wgmma, sm_90a):
// the same contract as flash_prefill (prefill.cu: causal by position, GQA,
// head dim 64 or 128, the runtime's paged KV cache, a model's sliding
// window, the optional log-sum-exp), for bf16 pages. The runtime takes it on
// sm_90 devices (runtime/cuda's flashOK and attendFlash); elsewhere, and for
// float32 pages, flash_prefill serves.
//
// Block (row tile z, query head h): NWG warpgroups of 128 threads, each 64
// query rows (BM = 64*NWG), against the keys of KV head h/group in tiles of
// BN tokens staged two deep by cp.async. Per key tile a warpgroup computes
// S = Q K^T with both operands in shared memory (D/16 wgmma m64nBNk16), masks
// and exponentiates S in registers (FlashAttention-2's running max and sum,
// base 2), rounds P to bf16 in registers (the accumulator layout of S is the
// A-operand layout of P V) and adds P V with V from shared memory read
// transposed (BN/16 wgmma m64nDk16).
//
// Shared tiles (Q, K and V) come in two layouts (WGL): the 128-byte swizzle
// (SW 1, the variants the runtime picks by default; WGL says how) and 8x8
// core matrices without swizzle (SW 0), which follow. The
// 16 bytes of channels 8c..8c+7 of row r sit at wg_off(r, c), so that the
// eight rows of a core matrix are 128 contiguous bytes. Core matrices are
// then 128 bytes apart along the channels and D*16 bytes apart along the
// rows (tokens). A descriptor's leading byte offset (LBO) is the step along
// the reduction and its stride byte offset (SBO) the step along M or N; Q
// and K are K-major operands (the channels are the reduction): LBO 128, SBO
// D*16; V is read as an MN-major operand (the tokens are the reduction, the
// transpose bit set): LBO D*16, SBO 128.
// TestWGMMALayouts checks both against the CPU (the swizzled descriptors
// are checked through the kernels' tests).
//
// Writes by cp.async and st.shared are the generic proxy's; wgmma reads
// through the async proxy, hence fence.proxy.async before the barrier that
// publishes a tile.

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define KVB_WG 1
#else
#define KVB_WG 0
#endif

// wg_off is the byte offset of the 16-byte chunk c (channels 8c..8c+7) of
// row r in a tile of rows of D channels stored as 8x8 core matrices.
template <int D>
__device__ __forceinline__ int wg_off(int r, int c) {
    return (r >> 3) * (D * 16) + c * 128 + (r & 7) * 16;
}

#if KVB_WG
// wg_desc is a wgmma shared-memory matrix descriptor without swizzle:
// start address, leading and stride byte offsets (all in 16-byte units).
__device__ __forceinline__ u64 wg_desc(const void* p, u32 lbo, u32 sbo) {
    const u32 a = (u32)__cvta_generic_to_shared(p);
    return (u64)((a >> 4) & 0x3fffu) | ((u64)((lbo >> 4) & 0x3fffu) << 16) | ((u64)((sbo >> 4) & 0x3fffu) << 32);
}

// WGL is flash_wg's shared-memory layout of Q (BM rows), K and V (BN
// tokens) of head dim D: SW 0 the 8x8 core matrices without swizzle (the
// file's header); SW 1 the 128-byte swizzle: rows of 64 channels (128
// bytes) in blocks of 64 channels, the 16-byte chunk c of row r at chunk
// (c ^ r) & 7 of its row, tiles 1024-byte aligned; Q and K are K-major
// (leading offset unused, stride 1024 bytes: eight rows), V is MN-major
// with the step between blocks of 64 channels as the leading offset and
// 1024 (eight tokens) as the stride (the two swapped fault on the H200).
// Without the swizzle, wgmma's shared-memory reads conflict: the H200 ran
// d128 32/8 at 32K in 34.7 ms with SW 0 and 23.5 with SW 1 (ncu: shared
// memory 70 % busy at a tensor pipe 25 % busy, SW 0). A descriptor step is
// in 16-byte units.
template <int D, int BM, int BN, int SW>
struct WGL {
    static constexpr u64 SWZ = SW ? (1ull << 62) : 0ull;
    // off is the byte offset of chunk c (channels 8c..8c+7) of row r in a
    // tile of R rows.
    template <int R>
    static __device__ __forceinline__ int off(int r, int c) {
        if constexpr (SW != 0) return (c >> 3) * (R * 128) + r * 128 + (((c ^ r) & 7) << 4);
        return wg_off<D>(r, c);
    }
    // rc maps the i-th chunk a block copies to its row and chunk: with the
    // swizzle consecutive chunks of a row (coalesced reads, conflict-free
    // stores either way), without it the eight rows of a core matrix.
    static __device__ __forceinline__ void rc(int i, int& r, int& c) {
        constexpr int CH = D / 8;
        if constexpr (SW != 0) {
            r = i / CH;
            c = i % CH;
        } else {
            const int rest = i >> 3;
            r = (rest / CH) * 8 + (i & 7);
            c = rest % CH;
        }
    }
    static __device__ __forceinline__ u64 qdesc(const unsigned char* qs, int wg) {
        if constexpr (SW != 0) return wg_desc(qs + wg * 64 * 128, 16, 1024) | SWZ;
        return wg_desc(qs + wg * 64 * D * 2, 128, D * 16);
    }
    static __device__ __forceinline__ u64 kdesc(const unsigned char* ks) {
        if constexpr (SW != 0) return wg_desc(ks, 16, 1024) | SWZ;
        return wg_desc(ks, 128, D * 16);
    }
    static __device__ __forceinline__ u64 vdesc(const unsigned char* vs) {
        if constexpr (SW != 0) return wg_desc(vs, BN * 128, 1024) | SWZ;
        return wg_desc(vs, D * 16, 128);
    }
    // qstep and kstep: to channels 16k..16k+15 of Q and K; vstep: to
    // tokens 16kk..16kk+15 of V.
    static __device__ __forceinline__ u64 qstep(int k) { return SW ? (k & 3) * 2 + (k >> 2) * (BM * 8) : 16 * k; }
    static __device__ __forceinline__ u64 kstep(int k) { return SW ? (k & 3) * 2 + (k >> 2) * (BN * 8) : 16 * k; }
    static __device__ __forceinline__ u64 vstep(int kk) { return SW ? 128 * kk : 2 * D * kk; }
};

__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }
// wg_pack2 rounds two floats to bf16 (to nearest even) and packs them, lo
// in the low half: one instruction for fl_pack2's eight.
__device__ __forceinline__ u32 wg_pack2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ void wg_proxy_fence() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// wg_hold keeps the compiler from moving reads or writes of accumulator
// registers across the asynchronous wgmma's issue and wait.
template <int N>
__device__ __forceinline__ void wg_hold(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// wg_ss: d (+)= A B, m64nNk16, A and B K-major in shared memory.
// wg_rs: d += A B, m64nNk16, A (four registers a lane, the mma.sync
// m16n8k16 A layout per warp) and B MN-major in shared memory.
__device__ __forceinline__ void wg_ss(float (&d)[32], u64 da, u64 db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(da), "l"(db), "r"(accumulate));
}

__device__ __forceinline__ void wg_ss(float (&d)[64], u64 da, u64 db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(da), "l"(db), "r"(accumulate));
}

__device__ __forceinline__ void wg_rs(float (&d)[32], const u32 (&a)[4], u64 db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

__device__ __forceinline__ void wg_rs(float (&d)[64], const u32 (&a)[4], u64 db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

#endif

// wg_cp16 copies 16 bytes global -> shared asynchronously; ok false
// writes zeros and reads nothing.
__device__ __forceinline__ void wg_cp16(void* dst, const void* src, bool ok) {
#if KVB_WG
    const u32 d = (u32)__cvta_generic_to_shared(dst);
    const int n = ok ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(n));
#endif
}

// wg_cp8 and wg_cp4 copy 8 and 4 bytes global -> shared asynchronously
// (wg_cp8: ok false writes zeros and reads nothing).
__device__ __forceinline__ void wg_cp8(void* dst, const void* src, bool ok) {
#if KVB_WG
    const u32 d = (u32)__cvta_generic_to_shared(dst);
    const int n = ok ? 8 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;" ::"r"(d), "l"(src), "r"(n));
#endif
}

__device__ __forceinline__ void wg_cp4(void* dst, const void* src) {
#if KVB_WG
    const u32 d = (u32)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(d), "l"(src));
#endif
}

// wg_probe computes D = A B for one m64nNk16 step through the same layouts
// and descriptors as flash_wg, for TestWGMMALayouts: mode 0 reads A [64][16]
// and B given as [N][16] (K-major, as K) from shared memory; mode 1 takes A
// from registers and B given as [16][N] (MN-major, as V). lbo and sbo are
// the shared operands' offsets (the test also tries them swapped). out is
// [64][N] float32.
template <int N>
__device__ __forceinline__ void wg_probe(float* out, const bf16* a, const bf16* b, int mode, int lbo, int sbo) {
#if KVB_WG
    // bs has room for reads at wrong strides (the test's swapped offsets).
    __shared__ __align__(128) unsigned char as[64 * 16 * 2], bs[16384];
    const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
    for (int i = tid; i < 64 * 2; i += 128) {
        const int r = i >> 1, c = i & 1;
        *(uint4*)(as + wg_off<16>(r, c)) = *(const uint4*)(a + r * 16 + c * 8);
    }
    for (int i = tid; i < N * 2; i += 128) {
        if (mode == 0) {  // rows n, channels k
            const int r = i >> 1, c = i & 1;
            *(uint4*)(bs + wg_off<16>(r, c)) = *(const uint4*)(b + r * 16 + c * 8);
        } else {  // rows k (16), channels n
            const int r = i / (N / 8), c = i % (N / 8);
            *(uint4*)(bs + wg_off<N>(r, c)) = *(const uint4*)(b + r * N + c * 8);
        }
    }
    wg_proxy_fence();
    __syncthreads();
    float d[N / 2];
#pragma unroll
    for (int i = 0; i < N / 2; ++i) d[i] = 0.f;
    wg_fence();
    wg_hold(d);
    if (mode == 0) {
        wg_ss(d, wg_desc(as, lbo, sbo), wg_desc(bs, lbo, sbo), 0);  // A and B alike
    } else {
        const int ra = w * 16 + gid, rb = ra + 8;
        const u32* a32 = (const u32*)a;
        const u32 af[4] = {a32[(ra * 16 + 2 * tig) / 2], a32[(rb * 16 + 2 * tig) / 2], a32[(ra * 16 + 2 * tig + 8) / 2],
                           a32[(rb * 16 + 2 * tig + 8) / 2]};
        wg_rs(d, af, wg_desc(bs, lbo, sbo));
    }
    wg_commit();
    wg_wait0();
    wg_hold(d);
    const int ra = w * 16 + gid, rb = ra + 8;
#pragma unroll
    for (int j = 0; j < N / 8; ++j) {
        out[ra * N + j * 8 + 2 * tig] = d[j * 4];
        out[ra * N + j * 8 + 2 * tig + 1] = d[j * 4 + 1];
        out[rb * N + j * 8 + 2 * tig] = d[j * 4 + 2];
        out[rb * N + j * 8 + 2 * tig + 1] = d[j * 4 + 3];
    }
#endif
}

#if KVB_WG
template <int N>
__device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

// wg_softmax masks the scores s of one key tile (an m64nBN accumulator: this
// thread's rows qa and qb, keys by their positions kps; FULL: no key of the
// tile is hidden from any row of the warpgroup, nothing to mask), updates the running max
// (ma, mb, raw scores) and sums (la, lb), writes P = exp2(s*scaleLog2 - max)
// rounded to bf16 in the A layout of P V, and returns the factors (ca, cb)
// that rescale what was accumulated under the old max. INPLACE: P is left
// in s as float32 (wg_pack_p rounds it into p later) and p is not written.
template <int BN, bool FULL, bool INPLACE = false>
__device__ __forceinline__ void wg_softmax(float (&s)[BN / 2], const int* kps, int tig, int qa, int qb,
                                           int wla, int wlb, float scaleLog2, float& ma, float& mb, float& la, float& lb,
                                           u32 (&p)[BN / 16][4], float& ca, float& cb) {
    // s is only read: the wgmma writing P V may still be running, and no
    // other instruction may define a wgmma's accumulators meanwhile (ptxas
    // would serialize the wgmmas). Hidden keys are bits of hid.
    static_assert(BN / 2 <= 64, "one bit a score");
    unsigned long long hid = 0;
    // Four running maxima a row and two sums: chains a quarter and a half
    // as long (the scheduler waits on each link of a chain).
    float mxa[4] = {ma, ma, ma, ma}, mxb[4] = {mb, mb, mb, mb};
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            bool ha = false, hb = false;
            if (!FULL) {
                const int kpos = kps[j * 8 + 2 * tig + e];
                ha = kpos > qa || kpos <= wla;
                hb = kpos > qb || kpos <= wlb;
                hid |= (unsigned long long)ha << (j * 4 + e);
                hid |= (unsigned long long)hb << (j * 4 + 2 + e);
            }
            const int q = (2 * j + e) & 3;
            mxa[q] = ha ? mxa[q] : fmaxf(mxa[q], s[j * 4 + e]);
            mxb[q] = hb ? mxb[q] : fmaxf(mxb[q], s[j * 4 + 2 + e]);
        }
    }
    float ba, bb;
    ca = fl_new_max(fmaxf(fmaxf(mxa[0], mxa[1]), fmaxf(mxa[2], mxa[3])), ma, scaleLog2, ba);
    cb = fl_new_max(fmaxf(fmaxf(mxb[0], mxb[1]), fmaxf(mxb[2], mxb[3])), mb, scaleLog2, bb);
    float sa2[2] = {0.f, 0.f}, sb2[2] = {0.f, 0.f};
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
        float e[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int k = 8 * kk + i;
            const float x = fl_exp2(fmaf(s[k], scaleLog2, (i & 2) ? -bb : -ba));
            e[i] = !FULL && (hid >> k) & 1 ? 0.f : x;
        }
        sa2[kk & 1] += (e[0] + e[1]) + (e[4] + e[5]);
        sb2[kk & 1] += (e[2] + e[3]) + (e[6] + e[7]);
        if constexpr (INPLACE) {
#pragma unroll
            for (int i = 0; i < 8; ++i) s[8 * kk + i] = e[i];
        } else {
            p[kk][0] = wg_pack2(e[0], e[1]);
            p[kk][1] = wg_pack2(e[2], e[3]);
            p[kk][2] = wg_pack2(e[4], e[5]);
            p[kk][3] = wg_pack2(e[6], e[7]);
        }
    }
    la = la * ca + (sa2[0] + sa2[1]);
    lb = lb * cb + (sb2[0] + sb2[1]);
}

// wg_pack_p rounds P, left in s by wg_softmax's INPLACE, to bf16 in the A
// layout of P V.
template <int BN>
__device__ __forceinline__ void wg_pack_p(const float (&s)[BN / 2], u32 (&p)[BN / 16][4]) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
        p[kk][0] = wg_pack2(s[8 * kk + 0], s[8 * kk + 1]);
        p[kk][1] = wg_pack2(s[8 * kk + 2], s[8 * kk + 3]);
        p[kk][2] = wg_pack2(s[8 * kk + 4], s[8 * kk + 5]);
        p[kk][3] = wg_pack2(s[8 * kk + 6], s[8 * kk + 7]);
    }
}

// wg_scale multiplies the output rows by the softmax's factors.
template <int D>
__device__ __forceinline__ void wg_scale(float (&o)[D / 2], float ca, float cb) {
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
        o[n * 4 + 0] *= ca;
        o[n * 4 + 1] *= ca;
        o[n * 4 + 2] *= cb;
        o[n * 4 + 3] *= cb;
    }
}

// wg_scores computes a tile's S = Q K^T (and waits for it), its softmax
// into P (p), and rescales o by the softmax's factors.
template <int D, int BN, class L>
__device__ __forceinline__ void wg_scores(float (&s)[BN / 2], float (&o)[D / 2], u32 (&p)[BN / 16][4], u64 qdesc,
                                          u64 kdesc, bool full, const int* kps, int tig, int qa, int qb, int wla,
                                          int wlb, float scaleLog2, float& ma, float& mb, float& la, float& lb) {
    wg_fence();
    wg_hold(s);
#pragma unroll
    for (int k = 0; k < D / 16; ++k) wg_ss(s, qdesc + L::qstep(k), kdesc + L::kstep(k), k);
    wg_commit();
    wg_wait<0>();
    wg_hold(s);
    float ca, cb;
    if (full) {
        wg_softmax<BN, true>(s, kps, tig, qa, qb, wla, wlb, scaleLog2, ma, mb, la, lb, p, ca, cb);
    } else {
        wg_softmax<BN, false>(s, kps, tig, qa, qb, wla, wlb, scaleLog2, ma, mb, la, lb, p, ca, cb);
    }
    // The factors are exactly 1 where a row's maximum held (most tiles, once
    // a row has met its largest scores): a warp whose rows all held skips
    // the D/2 products.
    if (!__all_sync(FULL_MASK, ca == 1.f && cb == 1.f)) wg_scale<D>(o, ca, cb);
}

// wg_pv adds P V (P in p, V at vdesc) to o and waits for it.
template <int D, int BN, class L>
__device__ __forceinline__ void wg_pv(float (&o)[D / 2], const u32 (&p)[BN / 16][4], u64 vdesc) {
    wg_fence();
    wg_hold(o);
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) wg_rs(o, p[kk], vdesc + L::vstep(kk));
    wg_commit();
    wg_wait<0>();
    wg_hold(o);
}

// wg_load_q stages the BM query rows of head h from row r0 (rows of them
// exist; zeros past the last) in shared memory, rounded to bf16, in L's
// layout and the order of L::rc, thread tid of nt.
template <int D, int BM, class L>
__device__ __forceinline__ void wg_load_q(unsigned char* Qs, const float* q, int r0, int rows, int heads, int h, int tid,
                                          int nt) {
    for (int i = tid; i < BM * (D / 8); i += nt) {
        int r, c;
        L::rc(i, r, c);
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (r0 + r < rows) {
            const float* p = q + ((long long)(r0 + r) * heads + h) * D + c * 8;
            const float4 a = *(const float4*)p, b = *(const float4*)(p + 4);
            v = make_uint4(wg_pack2(a.x, a.y), wg_pack2(a.z, a.w), wg_pack2(b.x, b.y), wg_pack2(b.z, b.w));
        }
        *(uint4*)(Qs + L::template off<BM>(r, c)) = v;
    }
}

// wg_warp_bounds writes the warp's lowest and highest row position (of
// this thread's qa and qb) to wb; wg_group_bounds reads its warpgroup's
// four (after a barrier): a warpgroup decides its skips together (a wgmma
// is the whole warpgroup's).
__device__ __forceinline__ void wg_warp_bounds(int* wb, int qa, int qb, int lane) {
    int wmin = min(qa, qb), wmax = max(qa, qb);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        wmin = min(wmin, __shfl_xor_sync(FULL_MASK, wmin, o));
        wmax = max(wmax, __shfl_xor_sync(FULL_MASK, wmax, o));
    }
    if (lane == 0) {
        wb[0] = wmin;
        wb[1] = wmax;
    }
}

__device__ __forceinline__ void wg_group_bounds(const int (*wb)[2], int& wmin, int& wmax) {
    wmin = min(min(wb[0][0], wb[1][0]), min(wb[2][0], wb[3][0]));
    wmax = max(max(wb[0][1], wb[1][1]), max(wb[2][1], wb[3][1]));
}

// wg_store writes this thread's rows ra and rb of the output (o over the
// row's sum; rows past rows are not written) and, with lse, their
// log-sum-exp (base 2).
template <int D>
__device__ __forceinline__ void wg_store(float* out, float* lse, const float (&o)[D / 2], int ra, int rb, int rows, int heads,
                                         int h, int tig, float ma, float mb, float la, float lb, float scaleLog2) {
    const float sa = fl_quad_sum(la), sb = fl_quad_sum(lb);
    const float ia = sa > 0.f ? 1.f / sa : 0.f, ib = sb > 0.f ? 1.f / sb : 0.f;
    if (ra < rows) {
        float* pa = out + ((long long)ra * heads + h) * D + 2 * tig;
#pragma unroll
        for (int n = 0; n < D / 8; ++n) *(float2*)(pa + n * 8) = make_float2(o[n * 4] * ia, o[n * 4 + 1] * ia);
        if (lse && tig == 0) lse[(long long)ra * heads + h] = sa > 0.f ? ma * scaleLog2 + log2f(sa) : NEG_INF;
    }
    if (rb < rows) {
        float* pb = out + ((long long)rb * heads + h) * D + 2 * tig;
#pragma unroll
        for (int n = 0; n < D / 8; ++n) *(float2*)(pb + n * 8) = make_float2(o[n * 4 + 2] * ib, o[n * 4 + 3] * ib);
        if (lse && tig == 0) lse[(long long)rb * heads + h] = sb > 0.f ? mb * scaleLog2 + log2f(sb) : NEG_INF;
    }
}
#endif

// flash_wg: the arguments of flash_prefill less kvt (pages are bf16).
// MODE orders a warpgroup's work on a key tile j: 0, scores, softmax, P V,
// one after another (two tiles staged); 2 runs the odd warpgroups half a
// tile behind the even ones (P V of tile j-1, then the scores and softmax
// of tile j; three tiles staged), so that one warpgroup's softmax meets the
// other's products. Orders measured slower on the H200 and removed
// (docs/gpu-notes.md): MODE 1, the softmax of tile j beside P V of tile j-1
// within a warpgroup (ptxas serialises its wgmmas, C7513; in 82f2d6d);
// MODE 3, one warpgroup staging K and the other V behind mbarriers with the
// warpgroups taking turns at the tensor cores (82f2d6d); a producer warp
// staging every tile (fed074e).
template <int D, int NWG, int BN, int MODE, int SW>
__device__ __forceinline__ void flash_wg(float* __restrict__ out, const float* __restrict__ q,
                                         const u64* __restrict__ ptrs, const int* __restrict__ ints, int heads,
                                         int kvHeads, float scaleLog2, int rowOff, int rows, int sorted, int psShift,
                                         float* __restrict__ lse, int window) {
#if KVB_WG
    constexpr int BM = 64 * NWG, NT = 128 * NWG, CH = D / 8, NS = MODE ? 3 : 2;
    constexpr int KT = BN * D * 2;  // bytes of a K or V tile
    using L = WGL<D, BM, BN, SW>;
    // Everything in dynamic shared memory (WG_SMEM), the tiles first: with
    // no static shared memory the block's dynamic shared memory starts on
    // 1024 bytes, which the swizzled layout needs (checked below).
    extern __shared__ __align__(1024) unsigned char wg_smem[];
    unsigned char* Qs = wg_smem;            // [BM rows] of D channels
    unsigned char* Ks = Qs + BM * D * 2;    // [NS] tiles of BN keys
    unsigned char* Vs = Ks + NS * KT;       // [NS] tiles of BN values
    int* kp = (int*)(Vs + NS * KT);         // [NS][BN] key positions
    constexpr int PG = 16;  // page pointers a tile's K or V holds in shared memory
    u64(*pg)[2][PG] = (u64(*)[2][PG])(kp + NS * BN);  // [NS][K, V][PG]
    int* misc = (int*)(pg + NS);
    int &qmaxs = misc[0], &qmins = misc[1];
    int(*wgb)[2] = (int(*)[2])(misc + 2);  // [NWG * 4]: each warp's lowest and highest row position
    if (SW && ((u32)__cvta_generic_to_shared(wg_smem) & 1023u)) __trap();

    const int tid = threadIdx.x, wg = tid >> 7, wq = (tid >> 5) & 3, lane = tid & 31, tig = lane & 3;
    const int z = gridDim.x - 1 - blockIdx.x;  // the longest row tiles first
    const int h = blockIdx.y, group = heads / kvHeads;
    const int* sd = ints + (h / group) * SD_WORDS;
    const int N = sd[SD_N], psMask = (1 << psShift) - 1, kOff = sd[SD_K], vOff = sd[SD_V];
    const int* pos = sd[SD_POS] >= 0 ? ints + sd[SD_POS] : 0;  // none: every token is visible
    const int r0 = z * BM;

    if (tid == 0) fl_row_span(ints, rowOff, r0, BM, rows, qmaxs, qmins);
    wg_load_q<D, BM, L>(Qs, q, r0, rows, heads, h, tid, NT);
    // This thread's rows, their window bounds, and the warp's extremes.
    const int ra = r0 + wg * 64 + wq * 16 + (lane >> 2), rb = ra + 8;
    const int qa = ra < rows ? ints[rowOff + 2 * ra] : -1, qb = rb < rows ? ints[rowOff + 2 * rb] : -1;
    const int wla = be_win_lo(qa, window), wlb = be_win_lo(qb, window);
    wg_warp_bounds(wgb[wg * 4 + wq], qa, qb, lane);
    wg_proxy_fence();
    __syncthreads();
    int wmin, wmax;
    wg_group_bounds(wgb + wg * 4, wmin, wmax);
    const int qmax = qmaxs, qmin = qmins;
    int kstart, kend;
    fl_key_range(pos, N, sorted, qmin, qmax, window, kstart, kend);
    const int it0 = kstart / BN, ntiles = (kend + BN - 1) / BN;

    // Stage key/value tile it into buffer it % NS (chunks in the order of
    // L::rc), with the keys' positions, all by cp.async: no thread waits
    // for a global load here.
    // The page pointers of a tile come from shared memory (pg, copied a tile
    // ahead) where its pages number at most PG, else from the page table.
    const bool pgOK = (BN >> psShift) + 1 <= PG;
    auto pages = [&](int it) {  // the page pointers of tile it, into pg[it % NS]
        if (!pgOK || it >= ntiles || tid >= 2 * PG) return;
        const int p0 = (it * BN) >> psShift, np = ((min(it * BN + BN, kend) - 1) >> psShift) - p0 + 1;
        const int j = tid % PG;
        const u64* src = ptrs + (tid < PG ? kOff : vOff) + p0 + (j < np ? j : 0);
        wg_cp8(&pg[it % NS][tid / PG][j], src, j < np);
    };
    auto stage = [&](int it) {
        const int b = it % NS, t0 = it * BN, p0 = t0 >> psShift;
        unsigned char* ks = Ks + b * KT;
        unsigned char* vs = Vs + b * KT;
#pragma unroll 4
        for (int i = tid; i < BN * CH; i += NT) {
            int r, c;
            L::rc(i, r, c);
            const int t = t0 + r;
            const bool ok = t < kend;
            const int tt = ok ? t : t0, page = tt >> psShift, so = L::template off<BN>(r, c);
            const long long o = ((long long)(tt & psMask) * D + c * 8) * 2;
            const char* kr = (const char*)(pgOK ? pg[b][0][page - p0] : ptrs[kOff + page]);
            const char* vr = (const char*)(pgOK ? pg[b][1][page - p0] : ptrs[vOff + page]);
            wg_cp16(ks + so, kr + o, ok);
            wg_cp16(vs + so, vr + o, ok);
        }
        for (int i = tid; i < BN; i += NT) {
            const int t = t0 + i;
            if (t < kend && pos) {
                wg_cp4(&kp[b * BN + i], pos + t);
            } else {
                kp[b * BN + i] = t < kend ? 0 : 0x7fffffff;
            }
        }
        pages(it + 1);
        fl_commit();
    };
    float o[D / 2], s[BN / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) s[i] = 0.f;
    float ma = NEG_INF, mb = NEG_INF, la = 0.f, lb = 0.f;  // running max (raw scores) and sum
    // Descriptors and their steps: WGL.
    const u64 qdesc = L::qdesc(Qs, wg);
    u32 pf[BN / 16][4];  // P of the tile whose P V runs (MODE 2's odd warpgroups; zero before the first)
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) pf[kk][0] = pf[kk][1] = pf[kk][2] = pf[kk][3] = 0u;

    pages(it0);
    fl_commit();
    fl_wait<0>();
    __syncthreads();
    if (it0 < ntiles) stage(it0);
    for (int it = it0; it < ntiles; ++it) {
        // Tile it has landed for every thread, and every warpgroup is done
        // with tile it - NS + 1, whose buffer is restaged now.
        const int b = it % NS;
        fl_wait<0>();
        wg_proxy_fence();
        __syncthreads();
        if (it + 1 < ntiles) stage(it + 1);
        const int* kps = kp + b * BN;
        const u64 kdesc = L::kdesc(Ks + b * KT);
        const bool full = sorted && kps[BN - 1] <= wmin && kps[0] > be_win_lo(wmax, window);
        if (MODE == 2 && (wg & 1)) {
            // P V of the previous tile (P zero at the first), then the
            // scores and softmax of this one.
            wg_pv<D, BN, L>(o, pf, L::vdesc(Vs + ((it > it0 ? it - 1 : it) % NS) * KT));
            wg_scores<D, BN, L>(s, o, pf, qdesc, kdesc, full, kps, tig, qa, qb, wla, wlb, scaleLog2, ma, mb, la, lb);
        } else {
            const bool skip = sorted && (kps[0] > wmax || kps[BN - 1] <= be_win_lo(wmin, window));
            if (!skip) {
                wg_scores<D, BN, L>(s, o, pf, qdesc, kdesc, full, kps, tig, qa, qb, wla, wlb, scaleLog2, ma, mb, la, lb);
                wg_pv<D, BN, L>(o, pf, L::vdesc(Vs + b * KT));
            }
        }
    }
    if (MODE == 2 && (wg & 1) && it0 < ntiles)  // P V of the last tile
        wg_pv<D, BN, L>(o, pf, L::vdesc(Vs + ((ntiles - 1) % NS) * KT));

    wg_store<D>(out, lse, o, ra, rb, rows, heads, h, tig, ma, mb, la, lb, scaleLog2);
#endif
}

// WG_SMEM is the dynamic shared memory of flash_wg<D, NWG, BN, MODE, SW> (any SW):
// Q, NS stages of K, V and positions, NS stages of page pointers (16 for K
// and 16 for V), two row bounds and a warp's two.
#define WG_NS(MODE) ((MODE) ? 3 : 2)
#define WG_SMEM(D, NWG, BN, MODE) \
    (64 * (NWG) * (D) * 2 + WG_NS(MODE) * (BN) * ((D) * 4 + 4) + WG_NS(MODE) * 2 * 16 * 8 + (2 + (NWG) * 8) * 4)

#define WG_KERNEL_AS(NAME, D, NWG, BN, MODE, SW)                                                                     \
    extern "C" __global__ void __launch_bounds__(128 * NWG, 1)                                                       \
        NAME(float* out, const float* q, const u64* ptrs, const int* ints, int heads, int kvHeads, float scaleLog2,  \
             int rowOff, int rows, int sorted, int psShift, float* lse, int window) {                                \
        flash_wg<D, NWG, BN, MODE, SW>(out, q, ptrs, ints, heads, kvHeads, scaleLog2, rowOff, rows, sorted, psShift, \
                                       lse, window);                                                                 \
    }
#define WG_KERNEL(D, NWG, BN, MODE) WG_KERNEL_AS(flash_wg_d##D##_g##NWG##_n##BN##_m##MODE, D, NWG, BN, MODE, 0)
#define WG_KERNEL_SW(D, NWG, BN, MODE, SW) \
    WG_KERNEL_AS(flash_wg_d##D##_g##NWG##_n##BN##_m##MODE##_w##SW, D, NWG, BN, MODE, SW)

// The variants KVBENCH_FLASH chooses among (gNWG nBN; s: MODE 0, k: MODE 2;
// _w1: the swizzled layout).
#if KVB_IN(9)
extern "C" __global__ void __launch_bounds__(128) wg_probe64(float* out, const bf16* a, const bf16* b, int mode, int lbo,
                                                           int sbo) {
    wg_probe<64>(out, a, b, mode, lbo, sbo);
}
WG_KERNEL(64, 2, 128, 0)
WG_KERNEL(128, 2, 128, 0)
WG_KERNEL_SW(64, 2, 128, 0, 1)
WG_KERNEL_SW(128, 2, 128, 0, 1)
WG_KERNEL_SW(64, 2, 64, 2, 1)
WG_KERNEL_SW(128, 2, 64, 2, 1)
WG_KERNEL_SW(64, 2, 128, 2, 1)
WG_KERNEL_SW(128, 2, 128, 2, 1)
WG_KERNEL_SW(64, 3, 64, 0, 1)
WG_KERNEL_SW(128, 3, 64, 0, 1)
WG_KERNEL_SW(64, 3, 64, 2, 1)
WG_KERNEL_SW(128, 3, 64, 2, 1)
#endif
