#define __device__
#define __global__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))
#define __CUDA_ARCH__ 900
#define __CUDA_ARCH_FEAT_SM90_ALL 1
#define ASMX(...) ((void)0)
struct uint4 {unsigned x,y,z,w;}; struct float4 {float x,y,z,w;}; struct float2 {float x,y;}; struct uint2 {unsigned x,y;};
struct int4 {int x,y,z,w;}; struct int2{int x,y;};
inline uint4 make_uint4(unsigned a,unsigned b,unsigned c,unsigned d){return {a,b,c,d};}
inline float2 make_float2(float a,float b){return {a,b};}
inline float4 make_float4(float a,float b,float c,float d){return {a,b,c,d};}
struct dim3v {unsigned x,y,z;}; extern dim3v threadIdx, blockIdx, gridDim, blockDim;
void __syncthreads(); void __syncwarp(unsigned m=0xffffffff); void __trap();
template<class T> T __shfl_xor_sync(unsigned, T, int, int w=32); template<class T> T __shfl_sync(unsigned, T, int, int w=32);
template<class T> T __shfl_down_sync(unsigned, T, int, int w=32); template<class T> T __shfl_up_sync(unsigned, T, int, int w=32);
unsigned __ballot_sync(unsigned,int); unsigned __activemask(); int __popc(unsigned); int __ffs(int); int __clz(int);
unsigned __float_as_uint(float); float __uint_as_float(unsigned); float __int_as_float(int); int __float_as_int(float);
unsigned long long __cvta_generic_to_shared(const void*);
float fmaxf(float,float); float fminf(float,float); float fmaf(float,float,float); float log2f(float); float expf(float); float exp2f(float); float sqrtf(float); float rsqrtf(float); float fabsf(float); float logf(float); float __expf(float); float __logf(float); float tanhf(float); float powf(float,float); float sinf(float); float cosf(float); void sincosf(float,float*,float*); float __fdividef(float,float); float floorf(float); float ceilf(float); float __saturatef(float); float erff(float); float roundf(float);
double exp(double);
using std_int = int;
template<class T> T min(T a, T b){return a<b?a:b;} template<class T> T max(T a, T b){return a>b?a:b;}
float atomicAdd(float*, float); int atomicAdd(int*, int); unsigned atomicAdd(unsigned*, unsigned); unsigned long long atomicAdd(unsigned long long*, unsigned long long); int atomicMax(int*,int); int atomicMin(int*,int); unsigned atomicOr(unsigned*,unsigned); int atomicCAS(int*,int,int); unsigned atomicCAS(unsigned*,unsigned,unsigned); unsigned long long atomicCAS(unsigned long long*,unsigned long long,unsigned long long); int atomicExch(int*,int);
long long clock64(); unsigned __nanosleep(unsigned);
void __threadfence(); void __threadfence_block();
template<class T> T __ldg(const T*);
typedef unsigned long size_t; double sqrt(double); double cos(double); double sin(double); void sincos(double,double*,double*); double log(double); double pow(double,double);
float __fmul_rn(float,float); float __fadd_rn(float,float); float __fsub_rn(float,float); float __fdiv_rn(float,float); float __frcp_rn(float); float __fsqrt_rn(float); float __fmaf_rn(float,float,float);
double fmax(double,double);
#define __noinline__ __attribute__((noinline))
template<class T> T __ldcg(const T*); template<class T> T __ldca(const T*); template<class T> T __ldcs(const T*); template<class T> void __stcs(T*, T); template<class T> void __stcg(T*, T);
unsigned __byte_perm(unsigned, unsigned, unsigned); int __mul24(int,int); unsigned __umulhi(unsigned,unsigned);
unsigned __match_any_sync(unsigned, int); unsigned __match_any_sync(unsigned, unsigned); int __any_sync(unsigned, int); int __all_sync(unsigned, int);
long long __double_as_longlong(double); double __longlong_as_double(long long); int __clzll(long long); int __popcll(unsigned long long); int __ffsll(long long);
unsigned long long atomicMax(unsigned long long*, unsigned long long); unsigned long long atomicMin(unsigned long long*, unsigned long long); unsigned long long atomicExch(unsigned long long*, unsigned long long); unsigned atomicMax(unsigned*, unsigned); unsigned atomicMin(unsigned*, unsigned); unsigned long long atomicOr(unsigned long long*, unsigned long long);
