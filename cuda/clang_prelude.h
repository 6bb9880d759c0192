// Declarations for a syntax and type check of the kernel source by clang in
// CUDA mode, without the CUDA toolkit (cuda/syntax_test.go): NVRTC knows
// these built-ins; clang, run with -nocudainc, needs them declared. Only
// declarations: nothing is generated, so the bodies do not matter. Add a
// declaration here when the kernels start using another built-in.
#include <__clang_cuda_builtin_vars.h>

#define __device__ __attribute__((device))
#define __global__ __attribute__((global))
#define __shared__ __attribute__((shared))
#define __constant__ __attribute__((constant))
#define __host__ __attribute__((host))
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __launch_bounds__(...) __attribute__((launch_bounds(__VA_ARGS__)))
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__
#define __cluster_dims__(...)

typedef unsigned long size_t;
struct __attribute__((aligned(16))) uint4 { unsigned x, y, z, w; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(16))) double2 { double x, y; };
struct __attribute__((aligned(8))) float2 { float x, y; };
struct __attribute__((aligned(8))) uint2 { unsigned x, y; };
struct __attribute__((aligned(8))) int2 { int x, y; };

#define D __device__
typedef unsigned long long ull;
D float fmaf(float, float, float); D float fmaxf(float, float); D float fminf(float, float); D float expf(float); D float exp2f(float); D float log2f(float);
D double sin(double); D double cos(double); D double sqrt(double); D double log(double); D double exp(double); D double fmax(double, double);
D void sincos(double, double*, double*); D void sincosf(float, float*, float*); D float sqrtf(float); D float rsqrtf(float); D float logf(float); D float fabsf(float); D double fabs(double);
D float __shfl_xor_sync(unsigned, float, int, int = 32); D int __shfl_xor_sync(unsigned, int, int, int = 32); D unsigned __shfl_xor_sync(unsigned, unsigned, int, int = 32); D double __shfl_xor_sync(unsigned, double, int, int = 32);
D float __shfl_sync(unsigned, float, int, int = 32); D int __shfl_sync(unsigned, int, int, int = 32); D unsigned __shfl_sync(unsigned, unsigned, int, int = 32); D unsigned long long __shfl_sync(unsigned, unsigned long long, int, int = 32);
D float __shfl_up_sync(unsigned, float, unsigned, int = 32); D int __shfl_up_sync(unsigned, int, unsigned, int = 32); D unsigned __shfl_up_sync(unsigned, unsigned, unsigned, int = 32);
D float __shfl_down_sync(unsigned, float, unsigned, int = 32); D int __shfl_down_sync(unsigned, int, unsigned, int = 32);
D int __any_sync(unsigned, int); D int __all_sync(unsigned, int); D unsigned __ballot_sync(unsigned, int); D unsigned __match_any_sync(unsigned, unsigned); D unsigned __match_any_sync(unsigned, int);
D float __int_as_float(int); D float __uint_as_float(unsigned); D unsigned __float_as_uint(float); D int __float_as_int(float); D long long __double_as_longlong(double); D double __longlong_as_double(long long);
D int min(int, int); D int max(int, int); D long long min(long long, long long); D long long max(long long, long long); D unsigned min(unsigned, unsigned); D unsigned max(unsigned, unsigned); D float min(float, float); D float max(float, float);
D unsigned long long min(unsigned long long, unsigned long long); D unsigned long long max(unsigned long long, unsigned long long);
D float __fmul_rn(float, float); D float __fadd_rn(float, float); D float __fsub_rn(float, float); D float __fdiv_rn(float, float); D float __fmaf_rn(float, float, float); D double __dadd_rn(double, double); D double __dmul_rn(double, double); D double __fma_rn(double, double, double);
D unsigned __byte_perm(unsigned, unsigned, unsigned); D int __ffs(int); D int __popc(unsigned); D int __clz(int); D int __clzll(long long); D int __ffsll(long long); D int __popcll(unsigned long long);
D uint4 make_uint4(unsigned, unsigned, unsigned, unsigned); D float4 make_float4(float, float, float, float); D float2 make_float2(float, float); D uint2 make_uint2(unsigned, unsigned);
D float atomicAdd(float*, float); D int atomicAdd(int*, int); D unsigned atomicAdd(unsigned*, unsigned); D unsigned long long atomicAdd(unsigned long long*, unsigned long long); D double atomicAdd(double*, double); D unsigned atomicOr(unsigned*, unsigned);
D int atomicMin(int*, int); D unsigned atomicMin(unsigned*, unsigned); D int atomicExch(int*, int); D unsigned atomicExch(unsigned*, unsigned); D int atomicMax(int*, int); D int atomicCAS(int*, int, int); D unsigned atomicCAS(unsigned*, unsigned, unsigned);
D void __threadfence(); D void __threadfence_block(); D void __syncwarp(unsigned = 0xffffffffu); D void __syncthreads(); D int __syncthreads_or(int); D int __syncthreads_and(int); D int __syncthreads_count(int);
D uint4 __ldcg(const uint4*); D float __ldcg(const float*); D float4 __ldcg(const float4*); D unsigned __ldcg(const unsigned*); D int __ldcg(const int*); D float2 __ldcg(const float2*);
D uint4 __ldg(const uint4*); D float __ldg(const float*); D float4 __ldg(const float4*); D int __ldg(const int*); D unsigned long long __ldg(const unsigned long long*); D unsigned __ldg(const unsigned*);
D size_t __cvta_generic_to_shared(const void*); D unsigned __activemask(); D long long clock64(); D unsigned __nanosleep(unsigned);
D void __trap();
D ull atomicMin(ull*, ull); D ull atomicExch(ull*, ull);
D long long __shfl_xor_sync(unsigned, long long, int, int = 32); D ull __shfl_xor_sync(unsigned, ull, int, int = 32);
#undef D
