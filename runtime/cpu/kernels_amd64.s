//go:build amd64

// AVX2/FMA (and F16C) matmul and vector kernels; see kernels_amd64.go for
// the Go declarations and the driver that tiles a matmul onto them.
//
// tile4xR<T> computes R (1..3) rows of x against 4 consecutive weight
// rows, each row of n elements: for r < R, k < 4:
//
//	out[r*os+k] = sum_i x[r*xs+i] * float32(w[k*ws+i])
//
// Weights are converted to float32 8 at a time (VPMOVZXWD+VPSLLD for
// bfloat16, VCVTPH2PS for float16) and each converted vector is reused
// by all R x rows; x vectors are loaded once per 4 weight rows. The main
// loop runs over multiples of 8 elements (16 with two accumulators per
// weight row when R == 1); the accumulators are then reduced to one
// xmm per x row holding the 4 sums, and the last n%8 elements are added
// one element at a time (4 weight rows in the lanes of one xmm).
//
// The main loops also prefetch the weight stream linearly, at the rate
// they consume it, max(8192 bytes, one group of 4 rows) ahead of the
// group: the matrix is read in consecutive groups, so this runs ahead
// into the next groups, past 4 KiB page boundaries where the hardware
// prefetchers stop (about 2x on matrices streamed from memory).
//
// tile1x1<T> is the single-row, single-weight-row dot product.
// Strides xs, ws, os are in elements. No bounds are checked here.

#include "textflag.h"

// ZERO4 and ZERO8 clear the accumulators Y0-Y3 and Y0-Y7.
#define ZERO4 VXORPS Y0, Y0, Y0; VXORPS Y1, Y1, Y1; VXORPS Y2, Y2, Y2; VXORPS Y3, Y3, Y3
#define ZERO8 ZERO4; VXORPS Y4, Y4, Y4; VXORPS Y5, Y5, Y5; VXORPS Y6, Y6, Y6; VXORPS Y7, Y7, Y7

// The single dot product's pieces, shared by tile1x1<T> and dotsAVX2 so
// that their sums are formed alike: DOT32F32 adds 32 elements of x (DI)
// times w (R8) from element AX into the accumulators Y0-Y3 (Y4-Y7 taken);
// SUM4 adds the accumulators into Y0; HSUM sums Y0's eight lanes into
// X0's lowest (X1 taken).
#define DOT32F32 \
	VMOVUPS (DI)(AX*4), Y4; VFMADD231PS (R8)(AX*4), Y4, Y0; \
	VMOVUPS 32(DI)(AX*4), Y5; VFMADD231PS 32(R8)(AX*4), Y5, Y1; \
	VMOVUPS 64(DI)(AX*4), Y6; VFMADD231PS 64(R8)(AX*4), Y6, Y2; \
	VMOVUPS 96(DI)(AX*4), Y7; VFMADD231PS 96(R8)(AX*4), Y7, Y3
#define SUM4 VADDPS Y1, Y0, Y0; VADDPS Y3, Y2, Y2; VADDPS Y2, Y0, Y0
#define HSUM VEXTRACTF128 $1, Y0, X1; VADDPS X1, X0, X0; VHADDPS X0, X0, X0; VHADDPS X0, X0, X0

// LOADY4 and STOREY4 move 32 elements of y (DI) from element AX into and
// out of Y1-Y4: axpyAVX2's and axpysAVX2's accumulators.
#define LOADY4 VMOVUPS (DI)(AX*4), Y1; VMOVUPS 32(DI)(AX*4), Y2; VMOVUPS 64(DI)(AX*4), Y3; VMOVUPS 96(DI)(AX*4), Y4
#define STOREY4 VMOVUPS Y1, (DI)(AX*4); VMOVUPS Y2, 32(DI)(AX*4); VMOVUPS Y3, 64(DI)(AX*4); VMOVUPS Y4, 96(DI)(AX*4)

// func tile4x1F32(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)
TEXT ·tile4x1F32(SB), NOSPLIT, $0-56
	MOVQ x+0(FP), DI
	MOVQ w+16(FP), R8
	MOVQ ws+24(FP), BX
	SHLQ $2, BX
	LEAQ (R8)(BX*1), R9
	LEAQ (R9)(BX*1), R10
	LEAQ (R10)(BX*1), R11
	MOVQ BX, SI
	SHLQ $2, SI
	CMPQ SI, $8192
	JAE pfset
	MOVQ $8192, SI
pfset:
	ADDQ R8, SI
	MOVQ n+32(FP), CX
	MOVQ out+40(FP), R13
	XORQ AX, AX
	ZERO8
	MOVQ CX, BX
	ANDQ $-16, BX
	JZ loop8pre
loop16:
	VMOVUPS (DI)(AX*4), Y8
	VMOVUPS 32(DI)(AX*4), Y9
	PREFETCHT0 0(SI)
	PREFETCHT0 64(SI)
	PREFETCHT0 128(SI)
	PREFETCHT0 192(SI)
	ADDQ $256, SI
	VFMADD231PS (R8)(AX*4), Y8, Y0
	VFMADD231PS 32(R8)(AX*4), Y9, Y4
	VFMADD231PS (R9)(AX*4), Y8, Y1
	VFMADD231PS 32(R9)(AX*4), Y9, Y5
	VFMADD231PS (R10)(AX*4), Y8, Y2
	VFMADD231PS 32(R10)(AX*4), Y9, Y6
	VFMADD231PS (R11)(AX*4), Y8, Y3
	VFMADD231PS 32(R11)(AX*4), Y9, Y7
	ADDQ $16, AX
	CMPQ AX, BX
	JB loop16
	VADDPS Y4, Y0, Y0
	VADDPS Y5, Y1, Y1
	VADDPS Y6, Y2, Y2
	VADDPS Y7, Y3, Y3
loop8pre:
	MOVQ CX, BX
	ANDQ $-8, BX
	CMPQ AX, BX
	JAE reduce
loop8:
	VMOVUPS (DI)(AX*4), Y8
	VFMADD231PS (R8)(AX*4), Y8, Y0
	VFMADD231PS (R9)(AX*4), Y8, Y1
	VFMADD231PS (R10)(AX*4), Y8, Y2
	VFMADD231PS (R11)(AX*4), Y8, Y3
	ADDQ $8, AX
	CMPQ AX, BX
	JB loop8
reduce:
	VHADDPS Y1, Y0, Y0
	VHADDPS Y3, Y2, Y2
	VHADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	CMPQ AX, CX
	JAE store
tail:
	VMOVSS (R8)(AX*4), X10
	VINSERTPS $0x10, (R9)(AX*4), X10, X10
	VINSERTPS $0x20, (R10)(AX*4), X10, X10
	VINSERTPS $0x30, (R11)(AX*4), X10, X10
	VBROADCASTSS (DI)(AX*4), X8
	VFMADD231PS X8, X10, X0
	INCQ AX
	CMPQ AX, CX
	JB tail
store:
	VMOVUPS X0, (R13)
	VZEROUPPER
	RET

// func tile4x2F32(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)
TEXT ·tile4x2F32(SB), NOSPLIT, $0-56
	MOVQ x+0(FP), DI
	MOVQ xs+8(FP), BX
	SHLQ $2, BX
	LEAQ (DI)(BX*1), DX
	MOVQ w+16(FP), R8
	MOVQ ws+24(FP), BX
	SHLQ $2, BX
	LEAQ (R8)(BX*1), R9
	LEAQ (R9)(BX*1), R10
	LEAQ (R10)(BX*1), R11
	MOVQ BX, SI
	SHLQ $2, SI
	CMPQ SI, $8192
	JAE pfset
	MOVQ $8192, SI
pfset:
	ADDQ R8, SI
	MOVQ n+32(FP), CX
	MOVQ out+40(FP), R13
	XORQ AX, AX
	ZERO8
	MOVQ CX, BX
	ANDQ $-8, BX
	CMPQ AX, BX
	JAE reduce
loop8:
	PREFETCHT0 0(SI)
	PREFETCHT0 64(SI)
	ADDQ $128, SI
	VMOVUPS (DI)(AX*4), Y8
	VMOVUPS (DX)(AX*4), Y9
	VMOVUPS (R8)(AX*4), Y10
	VFMADD231PS Y8, Y10, Y0
	VFMADD231PS Y9, Y10, Y4
	VMOVUPS (R9)(AX*4), Y11
	VFMADD231PS Y8, Y11, Y1
	VFMADD231PS Y9, Y11, Y5
	VMOVUPS (R10)(AX*4), Y12
	VFMADD231PS Y8, Y12, Y2
	VFMADD231PS Y9, Y12, Y6
	VMOVUPS (R11)(AX*4), Y13
	VFMADD231PS Y8, Y13, Y3
	VFMADD231PS Y9, Y13, Y7
	ADDQ $8, AX
	CMPQ AX, BX
	JB loop8
reduce:
	VHADDPS Y1, Y0, Y0
	VHADDPS Y3, Y2, Y2
	VHADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS Y5, Y4, Y4
	VHADDPS Y7, Y6, Y6
	VHADDPS Y6, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VADDPS X5, X4, X4
	CMPQ AX, CX
	JAE store
tail:
	VMOVSS (R8)(AX*4), X10
	VINSERTPS $0x10, (R9)(AX*4), X10, X10
	VINSERTPS $0x20, (R10)(AX*4), X10, X10
	VINSERTPS $0x30, (R11)(AX*4), X10, X10
	VBROADCASTSS (DI)(AX*4), X8
	VFMADD231PS X8, X10, X0
	VBROADCASTSS (DX)(AX*4), X8
	VFMADD231PS X8, X10, X4
	INCQ AX
	CMPQ AX, CX
	JB tail
store:
	VMOVUPS X0, (R13)
	MOVQ os+48(FP), SI
	SHLQ $2, SI
	VMOVUPS X4, (R13)(SI*1)
	VZEROUPPER
	RET

// func tile4x3F32(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)
TEXT ·tile4x3F32(SB), NOSPLIT, $0-56
	MOVQ x+0(FP), DI
	MOVQ xs+8(FP), BX
	SHLQ $2, BX
	LEAQ (DI)(BX*1), DX
	LEAQ (DX)(BX*1), R12
	MOVQ w+16(FP), R8
	MOVQ ws+24(FP), BX
	SHLQ $2, BX
	LEAQ (R8)(BX*1), R9
	LEAQ (R9)(BX*1), R10
	LEAQ (R10)(BX*1), R11
	MOVQ BX, SI
	SHLQ $2, SI
	CMPQ SI, $8192
	JAE pfset
	MOVQ $8192, SI
pfset:
	ADDQ R8, SI
	MOVQ n+32(FP), CX
	MOVQ out+40(FP), R13
	XORQ AX, AX
	ZERO8
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	MOVQ CX, BX
	ANDQ $-8, BX
	CMPQ AX, BX
	JAE reduce
loop8:
	PREFETCHT0 0(SI)
	PREFETCHT0 64(SI)
	ADDQ $128, SI
	VMOVUPS (DI)(AX*4), Y12
	VMOVUPS (DX)(AX*4), Y13
	VMOVUPS (R12)(AX*4), Y14
	VMOVUPS (R8)(AX*4), Y15
	VFMADD231PS Y12, Y15, Y0
	VFMADD231PS Y13, Y15, Y4
	VFMADD231PS Y14, Y15, Y8
	VMOVUPS (R9)(AX*4), Y15
	VFMADD231PS Y12, Y15, Y1
	VFMADD231PS Y13, Y15, Y5
	VFMADD231PS Y14, Y15, Y9
	VMOVUPS (R10)(AX*4), Y15
	VFMADD231PS Y12, Y15, Y2
	VFMADD231PS Y13, Y15, Y6
	VFMADD231PS Y14, Y15, Y10
	VMOVUPS (R11)(AX*4), Y15
	VFMADD231PS Y12, Y15, Y3
	VFMADD231PS Y13, Y15, Y7
	VFMADD231PS Y14, Y15, Y11
	ADDQ $8, AX
	CMPQ AX, BX
	JB loop8
reduce:
	VHADDPS Y1, Y0, Y0
	VHADDPS Y3, Y2, Y2
	VHADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS Y5, Y4, Y4
	VHADDPS Y7, Y6, Y6
	VHADDPS Y6, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VADDPS X5, X4, X4
	VHADDPS Y9, Y8, Y8
	VHADDPS Y11, Y10, Y10
	VHADDPS Y10, Y8, Y8
	VEXTRACTF128 $1, Y8, X9
	VADDPS X9, X8, X8
	CMPQ AX, CX
	JAE store
tail:
	VMOVSS (R8)(AX*4), X15
	VINSERTPS $0x10, (R9)(AX*4), X15, X15
	VINSERTPS $0x20, (R10)(AX*4), X15, X15
	VINSERTPS $0x30, (R11)(AX*4), X15, X15
	VBROADCASTSS (DI)(AX*4), X12
	VFMADD231PS X12, X15, X0
	VBROADCASTSS (DX)(AX*4), X12
	VFMADD231PS X12, X15, X4
	VBROADCASTSS (R12)(AX*4), X12
	VFMADD231PS X12, X15, X8
	INCQ AX
	CMPQ AX, CX
	JB tail
store:
	VMOVUPS X0, (R13)
	MOVQ os+48(FP), SI
	SHLQ $2, SI
	VMOVUPS X4, (R13)(SI*1)
	VMOVUPS X8, (R13)(SI*2)
	VZEROUPPER
	RET

// func tile1x1F32(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)
TEXT ·tile1x1F32(SB), NOSPLIT, $0-56
	MOVQ x+0(FP), DI
	MOVQ w+16(FP), R8
	MOVQ n+32(FP), CX
	MOVQ out+40(FP), R13
	XORQ AX, AX
	ZERO4
	MOVQ CX, BX
	ANDQ $-32, BX
	JZ loop8pre
loop32:
	DOT32F32
	ADDQ $32, AX
	CMPQ AX, BX
	JB loop32
	SUM4
loop8pre:
	MOVQ CX, BX
	ANDQ $-8, BX
	CMPQ AX, BX
	JAE reduce
loop8:
	VMOVUPS (DI)(AX*4), Y4
	VFMADD231PS (R8)(AX*4), Y4, Y0
	ADDQ $8, AX
	CMPQ AX, BX
	JB loop8
reduce:
	HSUM
	CMPQ AX, CX
	JAE store
tail:
	VMOVSS (R8)(AX*4), X2
	VFMADD231SS (DI)(AX*4), X2, X0
	INCQ AX
	CMPQ AX, CX
	JB tail
store:
	VMOVSS X0, (R13)
	VZEROUPPER
	RET

// func tile4x1BF16(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)
TEXT ·tile4x1BF16(SB), NOSPLIT, $0-56
	MOVQ x+0(FP), DI
	MOVQ w+16(FP), R8
	MOVQ ws+24(FP), BX
	SHLQ $1, BX
	LEAQ (R8)(BX*1), R9
	LEAQ (R9)(BX*1), R10
	LEAQ (R10)(BX*1), R11
	MOVQ BX, SI
	SHLQ $2, SI
	CMPQ SI, $8192
	JAE pfset
	MOVQ $8192, SI
pfset:
	ADDQ R8, SI
	MOVQ n+32(FP), CX
	MOVQ out+40(FP), R13
	XORQ AX, AX
	ZERO8
	MOVQ CX, BX
	ANDQ $-16, BX
	JZ loop8pre
loop16:
	VMOVUPS (DI)(AX*4), Y8
	VMOVUPS 32(DI)(AX*4), Y9
	PREFETCHT0 0(SI)
	PREFETCHT0 64(SI)
	ADDQ $128, SI
	VPMOVZXWD (R8)(AX*2), Y10
	VPSLLD $16, Y10, Y10
	VPMOVZXWD 16(R8)(AX*2), Y11
	VPSLLD $16, Y11, Y11
	VFMADD231PS Y8, Y10, Y0
	VFMADD231PS Y9, Y11, Y4
	VPMOVZXWD (R9)(AX*2), Y12
	VPSLLD $16, Y12, Y12
	VPMOVZXWD 16(R9)(AX*2), Y13
	VPSLLD $16, Y13, Y13
	VFMADD231PS Y8, Y12, Y1
	VFMADD231PS Y9, Y13, Y5
	VPMOVZXWD (R10)(AX*2), Y10
	VPSLLD $16, Y10, Y10
	VPMOVZXWD 16(R10)(AX*2), Y11
	VPSLLD $16, Y11, Y11
	VFMADD231PS Y8, Y10, Y2
	VFMADD231PS Y9, Y11, Y6
	VPMOVZXWD (R11)(AX*2), Y12
	VPSLLD $16, Y12, Y12
	VPMOVZXWD 16(R11)(AX*2), Y13
	VPSLLD $16, Y13, Y13
	VFMADD231PS Y8, Y12, Y3
	VFMADD231PS Y9, Y13, Y7
	ADDQ $16, AX
	CMPQ AX, BX
	JB loop16
	VADDPS Y4, Y0, Y0
	VADDPS Y5, Y1, Y1
	VADDPS Y6, Y2, Y2
	VADDPS Y7, Y3, Y3
loop8pre:
	MOVQ CX, BX
	ANDQ $-8, BX
	CMPQ AX, BX
	JAE reduce
loop8:
	VMOVUPS (DI)(AX*4), Y8
	VPMOVZXWD (R8)(AX*2), Y10
	VPSLLD $16, Y10, Y10
	VFMADD231PS Y8, Y10, Y0
	VPMOVZXWD (R9)(AX*2), Y11
	VPSLLD $16, Y11, Y11
	VFMADD231PS Y8, Y11, Y1
	VPMOVZXWD (R10)(AX*2), Y12
	VPSLLD $16, Y12, Y12
	VFMADD231PS Y8, Y12, Y2
	VPMOVZXWD (R11)(AX*2), Y13
	VPSLLD $16, Y13, Y13
	VFMADD231PS Y8, Y13, Y3
	ADDQ $8, AX
	CMPQ AX, BX
	JB loop8
reduce:
	VHADDPS Y1, Y0, Y0
	VHADDPS Y3, Y2, Y2
	VHADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	CMPQ AX, CX
	JAE store
tail:
	VPXOR X10, X10, X10
	VPINSRW $1, (R8)(AX*2), X10, X10
	VPINSRW $3, (R9)(AX*2), X10, X10
	VPINSRW $5, (R10)(AX*2), X10, X10
	VPINSRW $7, (R11)(AX*2), X10, X10
	VBROADCASTSS (DI)(AX*4), X8
	VFMADD231PS X8, X10, X0
	INCQ AX
	CMPQ AX, CX
	JB tail
store:
	VMOVUPS X0, (R13)
	VZEROUPPER
	RET

// func tile4x2BF16(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)
TEXT ·tile4x2BF16(SB), NOSPLIT, $0-56
	MOVQ x+0(FP), DI
	MOVQ xs+8(FP), BX
	SHLQ $2, BX
	LEAQ (DI)(BX*1), DX
	MOVQ w+16(FP), R8
	MOVQ ws+24(FP), BX
	SHLQ $1, BX
	LEAQ (R8)(BX*1), R9
	LEAQ (R9)(BX*1), R10
	LEAQ (R10)(BX*1), R11
	MOVQ BX, SI
	SHLQ $2, SI
	CMPQ SI, $8192
	JAE pfset
	MOVQ $8192, SI
pfset:
	ADDQ R8, SI
	MOVQ n+32(FP), CX
	MOVQ out+40(FP), R13
	XORQ AX, AX
	ZERO8
	MOVQ CX, BX
	ANDQ $-8, BX
	CMPQ AX, BX
	JAE reduce
loop8:
	PREFETCHT0 0(SI)
	ADDQ $64, SI
	VMOVUPS (DI)(AX*4), Y8
	VMOVUPS (DX)(AX*4), Y9
	VPMOVZXWD (R8)(AX*2), Y10
	VPSLLD $16, Y10, Y10
	VFMADD231PS Y8, Y10, Y0
	VFMADD231PS Y9, Y10, Y4
	VPMOVZXWD (R9)(AX*2), Y11
	VPSLLD $16, Y11, Y11
	VFMADD231PS Y8, Y11, Y1
	VFMADD231PS Y9, Y11, Y5
	VPMOVZXWD (R10)(AX*2), Y12
	VPSLLD $16, Y12, Y12
	VFMADD231PS Y8, Y12, Y2
	VFMADD231PS Y9, Y12, Y6
	VPMOVZXWD (R11)(AX*2), Y13
	VPSLLD $16, Y13, Y13
	VFMADD231PS Y8, Y13, Y3
	VFMADD231PS Y9, Y13, Y7
	ADDQ $8, AX
	CMPQ AX, BX
	JB loop8
reduce:
	VHADDPS Y1, Y0, Y0
	VHADDPS Y3, Y2, Y2
	VHADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS Y5, Y4, Y4
	VHADDPS Y7, Y6, Y6
	VHADDPS Y6, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VADDPS X5, X4, X4
	CMPQ AX, CX
	JAE store
tail:
	VPXOR X10, X10, X10
	VPINSRW $1, (R8)(AX*2), X10, X10
	VPINSRW $3, (R9)(AX*2), X10, X10
	VPINSRW $5, (R10)(AX*2), X10, X10
	VPINSRW $7, (R11)(AX*2), X10, X10
	VBROADCASTSS (DI)(AX*4), X8
	VFMADD231PS X8, X10, X0
	VBROADCASTSS (DX)(AX*4), X8
	VFMADD231PS X8, X10, X4
	INCQ AX
	CMPQ AX, CX
	JB tail
store:
	VMOVUPS X0, (R13)
	MOVQ os+48(FP), SI
	SHLQ $2, SI
	VMOVUPS X4, (R13)(SI*1)
	VZEROUPPER
	RET

// func tile4x3BF16(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)
TEXT ·tile4x3BF16(SB), NOSPLIT, $0-56
	MOVQ x+0(FP), DI
	MOVQ xs+8(FP), BX
	SHLQ $2, BX
	LEAQ (DI)(BX*1), DX
	LEAQ (DX)(BX*1), R12
	MOVQ w+16(FP), R8
	MOVQ ws+24(FP), BX
	SHLQ $1, BX
	LEAQ (R8)(BX*1), R9
	LEAQ (R9)(BX*1), R10
	LEAQ (R10)(BX*1), R11
	MOVQ BX, SI
	SHLQ $2, SI
	CMPQ SI, $8192
	JAE pfset
	MOVQ $8192, SI
pfset:
	ADDQ R8, SI
	MOVQ n+32(FP), CX
	MOVQ out+40(FP), R13
	XORQ AX, AX
	ZERO8
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	MOVQ CX, BX
	ANDQ $-8, BX
	CMPQ AX, BX
	JAE reduce
loop8:
	PREFETCHT0 0(SI)
	ADDQ $64, SI
	VMOVUPS (DI)(AX*4), Y12
	VMOVUPS (DX)(AX*4), Y13
	VMOVUPS (R12)(AX*4), Y14
	VPMOVZXWD (R8)(AX*2), Y15
	VPSLLD $16, Y15, Y15
	VFMADD231PS Y12, Y15, Y0
	VFMADD231PS Y13, Y15, Y4
	VFMADD231PS Y14, Y15, Y8
	VPMOVZXWD (R9)(AX*2), Y15
	VPSLLD $16, Y15, Y15
	VFMADD231PS Y12, Y15, Y1
	VFMADD231PS Y13, Y15, Y5
	VFMADD231PS Y14, Y15, Y9
	VPMOVZXWD (R10)(AX*2), Y15
	VPSLLD $16, Y15, Y15
	VFMADD231PS Y12, Y15, Y2
	VFMADD231PS Y13, Y15, Y6
	VFMADD231PS Y14, Y15, Y10
	VPMOVZXWD (R11)(AX*2), Y15
	VPSLLD $16, Y15, Y15
	VFMADD231PS Y12, Y15, Y3
	VFMADD231PS Y13, Y15, Y7
	VFMADD231PS Y14, Y15, Y11
	ADDQ $8, AX
	CMPQ AX, BX
	JB loop8
reduce:
	VHADDPS Y1, Y0, Y0
	VHADDPS Y3, Y2, Y2
	VHADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS Y5, Y4, Y4
	VHADDPS Y7, Y6, Y6
	VHADDPS Y6, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VADDPS X5, X4, X4
	VHADDPS Y9, Y8, Y8
	VHADDPS Y11, Y10, Y10
	VHADDPS Y10, Y8, Y8
	VEXTRACTF128 $1, Y8, X9
	VADDPS X9, X8, X8
	CMPQ AX, CX
	JAE store
tail:
	VPXOR X15, X15, X15
	VPINSRW $1, (R8)(AX*2), X15, X15
	VPINSRW $3, (R9)(AX*2), X15, X15
	VPINSRW $5, (R10)(AX*2), X15, X15
	VPINSRW $7, (R11)(AX*2), X15, X15
	VBROADCASTSS (DI)(AX*4), X12
	VFMADD231PS X12, X15, X0
	VBROADCASTSS (DX)(AX*4), X12
	VFMADD231PS X12, X15, X4
	VBROADCASTSS (R12)(AX*4), X12
	VFMADD231PS X12, X15, X8
	INCQ AX
	CMPQ AX, CX
	JB tail
store:
	VMOVUPS X0, (R13)
	MOVQ os+48(FP), SI
	SHLQ $2, SI
	VMOVUPS X4, (R13)(SI*1)
	VMOVUPS X8, (R13)(SI*2)
	VZEROUPPER
	RET

// func tile1x1BF16(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)
TEXT ·tile1x1BF16(SB), NOSPLIT, $0-56
	MOVQ x+0(FP), DI
	MOVQ w+16(FP), R8
	MOVQ n+32(FP), CX
	MOVQ out+40(FP), R13
	XORQ AX, AX
	ZERO4
	MOVQ CX, BX
	ANDQ $-32, BX
	JZ loop8pre
loop32:
	VPMOVZXWD (R8)(AX*2), Y4
	VPSLLD $16, Y4, Y4
	VFMADD231PS (DI)(AX*4), Y4, Y0
	VPMOVZXWD 16(R8)(AX*2), Y5
	VPSLLD $16, Y5, Y5
	VFMADD231PS 32(DI)(AX*4), Y5, Y1
	VPMOVZXWD 32(R8)(AX*2), Y6
	VPSLLD $16, Y6, Y6
	VFMADD231PS 64(DI)(AX*4), Y6, Y2
	VPMOVZXWD 48(R8)(AX*2), Y7
	VPSLLD $16, Y7, Y7
	VFMADD231PS 96(DI)(AX*4), Y7, Y3
	ADDQ $32, AX
	CMPQ AX, BX
	JB loop32
	SUM4
loop8pre:
	MOVQ CX, BX
	ANDQ $-8, BX
	CMPQ AX, BX
	JAE reduce
loop8:
	VPMOVZXWD (R8)(AX*2), Y4
	VPSLLD $16, Y4, Y4
	VFMADD231PS (DI)(AX*4), Y4, Y0
	ADDQ $8, AX
	CMPQ AX, BX
	JB loop8
reduce:
	HSUM
	CMPQ AX, CX
	JAE store
tail:
	VPXOR X2, X2, X2
	VPINSRW $1, (R8)(AX*2), X2, X2
	VFMADD231SS (DI)(AX*4), X2, X0
	INCQ AX
	CMPQ AX, CX
	JB tail
store:
	VMOVSS X0, (R13)
	VZEROUPPER
	RET

// func tile4x1F16(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)
TEXT ·tile4x1F16(SB), NOSPLIT, $0-56
	MOVQ x+0(FP), DI
	MOVQ w+16(FP), R8
	MOVQ ws+24(FP), BX
	SHLQ $1, BX
	LEAQ (R8)(BX*1), R9
	LEAQ (R9)(BX*1), R10
	LEAQ (R10)(BX*1), R11
	MOVQ BX, SI
	SHLQ $2, SI
	CMPQ SI, $8192
	JAE pfset
	MOVQ $8192, SI
pfset:
	ADDQ R8, SI
	MOVQ n+32(FP), CX
	MOVQ out+40(FP), R13
	XORQ AX, AX
	ZERO8
	MOVQ CX, BX
	ANDQ $-16, BX
	JZ loop8pre
loop16:
	VMOVUPS (DI)(AX*4), Y8
	VMOVUPS 32(DI)(AX*4), Y9
	PREFETCHT0 0(SI)
	PREFETCHT0 64(SI)
	ADDQ $128, SI
	VCVTPH2PS (R8)(AX*2), Y10
	VCVTPH2PS 16(R8)(AX*2), Y11
	VFMADD231PS Y8, Y10, Y0
	VFMADD231PS Y9, Y11, Y4
	VCVTPH2PS (R9)(AX*2), Y12
	VCVTPH2PS 16(R9)(AX*2), Y13
	VFMADD231PS Y8, Y12, Y1
	VFMADD231PS Y9, Y13, Y5
	VCVTPH2PS (R10)(AX*2), Y10
	VCVTPH2PS 16(R10)(AX*2), Y11
	VFMADD231PS Y8, Y10, Y2
	VFMADD231PS Y9, Y11, Y6
	VCVTPH2PS (R11)(AX*2), Y12
	VCVTPH2PS 16(R11)(AX*2), Y13
	VFMADD231PS Y8, Y12, Y3
	VFMADD231PS Y9, Y13, Y7
	ADDQ $16, AX
	CMPQ AX, BX
	JB loop16
	VADDPS Y4, Y0, Y0
	VADDPS Y5, Y1, Y1
	VADDPS Y6, Y2, Y2
	VADDPS Y7, Y3, Y3
loop8pre:
	MOVQ CX, BX
	ANDQ $-8, BX
	CMPQ AX, BX
	JAE reduce
loop8:
	VMOVUPS (DI)(AX*4), Y8
	VCVTPH2PS (R8)(AX*2), Y10
	VFMADD231PS Y8, Y10, Y0
	VCVTPH2PS (R9)(AX*2), Y11
	VFMADD231PS Y8, Y11, Y1
	VCVTPH2PS (R10)(AX*2), Y12
	VFMADD231PS Y8, Y12, Y2
	VCVTPH2PS (R11)(AX*2), Y13
	VFMADD231PS Y8, Y13, Y3
	ADDQ $8, AX
	CMPQ AX, BX
	JB loop8
reduce:
	VHADDPS Y1, Y0, Y0
	VHADDPS Y3, Y2, Y2
	VHADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	CMPQ AX, CX
	JAE store
tail:
	VPINSRW $0, (R8)(AX*2), X10, X10
	VPINSRW $1, (R9)(AX*2), X10, X10
	VPINSRW $2, (R10)(AX*2), X10, X10
	VPINSRW $3, (R11)(AX*2), X10, X10
	VCVTPH2PS X10, X10
	VBROADCASTSS (DI)(AX*4), X8
	VFMADD231PS X8, X10, X0
	INCQ AX
	CMPQ AX, CX
	JB tail
store:
	VMOVUPS X0, (R13)
	VZEROUPPER
	RET

// func tile4x2F16(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)
TEXT ·tile4x2F16(SB), NOSPLIT, $0-56
	MOVQ x+0(FP), DI
	MOVQ xs+8(FP), BX
	SHLQ $2, BX
	LEAQ (DI)(BX*1), DX
	MOVQ w+16(FP), R8
	MOVQ ws+24(FP), BX
	SHLQ $1, BX
	LEAQ (R8)(BX*1), R9
	LEAQ (R9)(BX*1), R10
	LEAQ (R10)(BX*1), R11
	MOVQ BX, SI
	SHLQ $2, SI
	CMPQ SI, $8192
	JAE pfset
	MOVQ $8192, SI
pfset:
	ADDQ R8, SI
	MOVQ n+32(FP), CX
	MOVQ out+40(FP), R13
	XORQ AX, AX
	ZERO8
	MOVQ CX, BX
	ANDQ $-8, BX
	CMPQ AX, BX
	JAE reduce
loop8:
	PREFETCHT0 0(SI)
	ADDQ $64, SI
	VMOVUPS (DI)(AX*4), Y8
	VMOVUPS (DX)(AX*4), Y9
	VCVTPH2PS (R8)(AX*2), Y10
	VFMADD231PS Y8, Y10, Y0
	VFMADD231PS Y9, Y10, Y4
	VCVTPH2PS (R9)(AX*2), Y11
	VFMADD231PS Y8, Y11, Y1
	VFMADD231PS Y9, Y11, Y5
	VCVTPH2PS (R10)(AX*2), Y12
	VFMADD231PS Y8, Y12, Y2
	VFMADD231PS Y9, Y12, Y6
	VCVTPH2PS (R11)(AX*2), Y13
	VFMADD231PS Y8, Y13, Y3
	VFMADD231PS Y9, Y13, Y7
	ADDQ $8, AX
	CMPQ AX, BX
	JB loop8
reduce:
	VHADDPS Y1, Y0, Y0
	VHADDPS Y3, Y2, Y2
	VHADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS Y5, Y4, Y4
	VHADDPS Y7, Y6, Y6
	VHADDPS Y6, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VADDPS X5, X4, X4
	CMPQ AX, CX
	JAE store
tail:
	VPINSRW $0, (R8)(AX*2), X10, X10
	VPINSRW $1, (R9)(AX*2), X10, X10
	VPINSRW $2, (R10)(AX*2), X10, X10
	VPINSRW $3, (R11)(AX*2), X10, X10
	VCVTPH2PS X10, X10
	VBROADCASTSS (DI)(AX*4), X8
	VFMADD231PS X8, X10, X0
	VBROADCASTSS (DX)(AX*4), X8
	VFMADD231PS X8, X10, X4
	INCQ AX
	CMPQ AX, CX
	JB tail
store:
	VMOVUPS X0, (R13)
	MOVQ os+48(FP), SI
	SHLQ $2, SI
	VMOVUPS X4, (R13)(SI*1)
	VZEROUPPER
	RET

// func tile4x3F16(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)
TEXT ·tile4x3F16(SB), NOSPLIT, $0-56
	MOVQ x+0(FP), DI
	MOVQ xs+8(FP), BX
	SHLQ $2, BX
	LEAQ (DI)(BX*1), DX
	LEAQ (DX)(BX*1), R12
	MOVQ w+16(FP), R8
	MOVQ ws+24(FP), BX
	SHLQ $1, BX
	LEAQ (R8)(BX*1), R9
	LEAQ (R9)(BX*1), R10
	LEAQ (R10)(BX*1), R11
	MOVQ BX, SI
	SHLQ $2, SI
	CMPQ SI, $8192
	JAE pfset
	MOVQ $8192, SI
pfset:
	ADDQ R8, SI
	MOVQ n+32(FP), CX
	MOVQ out+40(FP), R13
	XORQ AX, AX
	ZERO8
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	MOVQ CX, BX
	ANDQ $-8, BX
	CMPQ AX, BX
	JAE reduce
loop8:
	PREFETCHT0 0(SI)
	ADDQ $64, SI
	VMOVUPS (DI)(AX*4), Y12
	VMOVUPS (DX)(AX*4), Y13
	VMOVUPS (R12)(AX*4), Y14
	VCVTPH2PS (R8)(AX*2), Y15
	VFMADD231PS Y12, Y15, Y0
	VFMADD231PS Y13, Y15, Y4
	VFMADD231PS Y14, Y15, Y8
	VCVTPH2PS (R9)(AX*2), Y15
	VFMADD231PS Y12, Y15, Y1
	VFMADD231PS Y13, Y15, Y5
	VFMADD231PS Y14, Y15, Y9
	VCVTPH2PS (R10)(AX*2), Y15
	VFMADD231PS Y12, Y15, Y2
	VFMADD231PS Y13, Y15, Y6
	VFMADD231PS Y14, Y15, Y10
	VCVTPH2PS (R11)(AX*2), Y15
	VFMADD231PS Y12, Y15, Y3
	VFMADD231PS Y13, Y15, Y7
	VFMADD231PS Y14, Y15, Y11
	ADDQ $8, AX
	CMPQ AX, BX
	JB loop8
reduce:
	VHADDPS Y1, Y0, Y0
	VHADDPS Y3, Y2, Y2
	VHADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS Y5, Y4, Y4
	VHADDPS Y7, Y6, Y6
	VHADDPS Y6, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VADDPS X5, X4, X4
	VHADDPS Y9, Y8, Y8
	VHADDPS Y11, Y10, Y10
	VHADDPS Y10, Y8, Y8
	VEXTRACTF128 $1, Y8, X9
	VADDPS X9, X8, X8
	CMPQ AX, CX
	JAE store
tail:
	VPINSRW $0, (R8)(AX*2), X15, X15
	VPINSRW $1, (R9)(AX*2), X15, X15
	VPINSRW $2, (R10)(AX*2), X15, X15
	VPINSRW $3, (R11)(AX*2), X15, X15
	VCVTPH2PS X15, X15
	VBROADCASTSS (DI)(AX*4), X12
	VFMADD231PS X12, X15, X0
	VBROADCASTSS (DX)(AX*4), X12
	VFMADD231PS X12, X15, X4
	VBROADCASTSS (R12)(AX*4), X12
	VFMADD231PS X12, X15, X8
	INCQ AX
	CMPQ AX, CX
	JB tail
store:
	VMOVUPS X0, (R13)
	MOVQ os+48(FP), SI
	SHLQ $2, SI
	VMOVUPS X4, (R13)(SI*1)
	VMOVUPS X8, (R13)(SI*2)
	VZEROUPPER
	RET

// func tile1x1F16(x *float32, xs int, w unsafe.Pointer, ws int, n int, out *float32, os int)
TEXT ·tile1x1F16(SB), NOSPLIT, $0-56
	MOVQ x+0(FP), DI
	MOVQ w+16(FP), R8
	MOVQ n+32(FP), CX
	MOVQ out+40(FP), R13
	XORQ AX, AX
	ZERO4
	MOVQ CX, BX
	ANDQ $-32, BX
	JZ loop8pre
loop32:
	VCVTPH2PS (R8)(AX*2), Y4
	VFMADD231PS (DI)(AX*4), Y4, Y0
	VCVTPH2PS 16(R8)(AX*2), Y5
	VFMADD231PS 32(DI)(AX*4), Y5, Y1
	VCVTPH2PS 32(R8)(AX*2), Y6
	VFMADD231PS 64(DI)(AX*4), Y6, Y2
	VCVTPH2PS 48(R8)(AX*2), Y7
	VFMADD231PS 96(DI)(AX*4), Y7, Y3
	ADDQ $32, AX
	CMPQ AX, BX
	JB loop32
	SUM4
loop8pre:
	MOVQ CX, BX
	ANDQ $-8, BX
	CMPQ AX, BX
	JAE reduce
loop8:
	VCVTPH2PS (R8)(AX*2), Y4
	VFMADD231PS (DI)(AX*4), Y4, Y0
	ADDQ $8, AX
	CMPQ AX, BX
	JB loop8
reduce:
	HSUM
	CMPQ AX, CX
	JAE store
tail:
	VPINSRW $0, (R8)(AX*2), X2, X2
	VCVTPH2PS X2, X2
	VFMADD231SS (DI)(AX*4), X2, X0
	INCQ AX
	CMPQ AX, CX
	JB tail
store:
	VMOVSS X0, (R13)
	VZEROUPPER
	RET

// func axpyAVX2(y *float32, a float32, x *float32, n int)
TEXT ·axpyAVX2(SB), NOSPLIT, $0-32
	MOVQ y+0(FP), DI
	VBROADCASTSS a+8(FP), Y0
	MOVQ x+16(FP), SI
	MOVQ n+24(FP), CX
	XORQ AX, AX
	MOVQ CX, BX
	ANDQ $-32, BX
	JZ loop8pre
loop32:
	LOADY4
	VFMADD231PS (SI)(AX*4), Y0, Y1
	VFMADD231PS 32(SI)(AX*4), Y0, Y2
	VFMADD231PS 64(SI)(AX*4), Y0, Y3
	VFMADD231PS 96(SI)(AX*4), Y0, Y4
	STOREY4
	ADDQ $32, AX
	CMPQ AX, BX
	JB loop32
loop8pre:
	MOVQ CX, BX
	ANDQ $-8, BX
	CMPQ AX, BX
	JAE tailpre
loop8:
	VMOVUPS (DI)(AX*4), Y1
	VFMADD231PS (SI)(AX*4), Y0, Y1
	VMOVUPS Y1, (DI)(AX*4)
	ADDQ $8, AX
	CMPQ AX, BX
	JB loop8
tailpre:
	CMPQ AX, CX
	JAE done
tail:
	VMOVSS (DI)(AX*4), X1
	VFMADD231SS (SI)(AX*4), X0, X1
	VMOVSS X1, (DI)(AX*4)
	INCQ AX
	CMPQ AX, CX
	JB tail
done:
	VZEROUPPER
	RET

// func dotsAVX2(q *float32, k *float32, ks int, n int, cnt int, out *float32)
//
// out[s] = sum_i q[i] * k[s*ks+i] for s < cnt, i < n; n a positive
// multiple of 32. Each sum is one chain of fused multiply-adds a lane
// (lane j adds elements j, j+8, j+16, ... in order), its eight lanes then
// added as ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)). Rows go eight at a time,
// the query 64 elements at a time in Y8-Y15 and each row's chain in Y0-Y7,
// the eight sums formed together by VHADDPS; the rows left (fewer than
// eight) go one at a time with the same chain and sums, so that a row's
// score does not depend on the rows beside it.
#define FMA8(off, qy) \
	VFMADD231PS off(R14), qy, Y0; VFMADD231PS off(R14)(R9*1), qy, Y1; \
	VFMADD231PS off(R14)(R9*2), qy, Y2; VFMADD231PS off(R14)(R10*1), qy, Y3; \
	VFMADD231PS off(R12), qy, Y4; VFMADD231PS off(R12)(R9*1), qy, Y5; \
	VFMADD231PS off(R12)(R9*2), qy, Y6; VFMADD231PS off(R12)(R10*1), qy, Y7
// QUERY32 loads 32 of the query's elements, from byte BX plus the offsets
// a-d, into ya-yd; ROWS8 points R14 and R12 at byte BX of rows 0 and 4;
// FMA8X4 is FMA8 for four groups of 8 elements.
#define QUERY32(a, b, c, d, ya, yb, yc, yd) \
	VMOVUPS a(DI)(BX*1), ya; VMOVUPS b(DI)(BX*1), yb; VMOVUPS c(DI)(BX*1), yc; VMOVUPS d(DI)(BX*1), yd
#define ROWS8 LEAQ (R8)(BX*1), R14; LEAQ (R14)(R9*4), R12
#define FMA8X4(a, b, c, d, ya, yb, yc, yd) FMA8(a, ya); FMA8(b, yb); FMA8(c, yc); FMA8(d, yd)
TEXT ·dotsAVX2(SB), NOSPLIT, $0-48
	MOVQ q+0(FP), DI
	MOVQ k+8(FP), R8
	MOVQ ks+16(FP), R9
	SHLQ $2, R9
	MOVQ n+24(FP), CX
	SHLQ $2, CX // n in bytes
	MOVQ cnt+32(FP), DX
	MOVQ out+40(FP), R13
	LEAQ (R9)(R9*2), R10 // 3 rows
	LEAQ (R9*8), R11     // 8 rows
	CMPQ DX, $8
	JB tail
group:
	ZERO8
	XORQ BX, BX
block64:
	LEAQ 256(BX), AX
	CMPQ AX, CX
	JA block32
	QUERY32(0, 32, 64, 96, Y8, Y9, Y10, Y11)
	QUERY32(128, 160, 192, 224, Y12, Y13, Y14, Y15)
	ROWS8
	FMA8X4(0, 32, 64, 96, Y8, Y9, Y10, Y11)
	FMA8X4(128, 160, 192, 224, Y12, Y13, Y14, Y15)
	MOVQ AX, BX
	JMP block64
block32:
	CMPQ BX, CX
	JAE sums
	QUERY32(0, 32, 64, 96, Y8, Y9, Y10, Y11)
	ROWS8
	FMA8X4(0, 32, 64, 96, Y8, Y9, Y10, Y11)
sums:
	// Y0 = [r0 l0+l1, l2+l3, r1 l0+l1, l2+l3 | r0 l4+l5, l6+l7, r1 ...]
	VHADDPS Y1, Y0, Y0
	VHADDPS Y3, Y2, Y2
	VHADDPS Y5, Y4, Y4
	VHADDPS Y7, Y6, Y6
	// Y0 = [r0..r3 (l0+l1)+(l2+l3) | r0..r3 (l4+l5)+(l6+l7)], Y4 r4..r7
	VHADDPS Y2, Y0, Y0
	VHADDPS Y6, Y4, Y4
	VPERM2F128 $0x20, Y4, Y0, Y1
	VPERM2F128 $0x31, Y4, Y0, Y2
	VADDPS Y2, Y1, Y1
	VMOVUPS Y1, (R13)
	ADDQ $32, R13
	ADDQ R11, R8
	SUBQ $8, DX
	CMPQ DX, $8
	JAE group
tail:
	TESTQ DX, DX
	JZ done
row:
	VXORPS Y0, Y0, Y0
	XORQ BX, BX
chain:
	VMOVUPS (R8)(BX*1), Y1
	VFMADD231PS (DI)(BX*1), Y1, Y0
	ADDQ $32, BX
	CMPQ BX, CX
	JB chain
	VHADDPS Y0, Y0, Y0
	VHADDPS Y0, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDSS X1, X0, X0
	VMOVSS X0, (R13)
	ADDQ $4, R13
	ADDQ R9, R8
	DECQ DX
	JNZ row
done:
	VZEROUPPER
	RET

// WEIGHT loads row BX's weight e[BX] (R10) into X0 and goes to add unless
// it is zero (X8 holds zero; a NaN is added), else to next. FMA4ROW adds
// X0's broadcast (Y0) times four groups of 8 elements of the row (R8) at
// the byte offsets a-d into the accumulators ya-yd.
#define WEIGHT(add, next) VMOVSS (R10)(BX*4), X0; VUCOMISS X8, X0; JNE add; JPS add; JMP next
#define FMA4ROW(a, b, c, d, ya, yb, yc, yd) \
	VFMADD231PS a(R8), Y0, ya; VFMADD231PS b(R8), Y0, yb; \
	VFMADD231PS c(R8), Y0, yc; VFMADD231PS d(R8), Y0, yd

// func axpysAVX2(y *float32, e *float32, x *float32, xs int, n int, cnt int)
//
// y[i] += e[s] * x[s*xs+i] for s = 0..cnt-1 in order, i < n; n a positive
// multiple of 32; a row whose e[s] is zero is skipped (a NaN is not). y is
// held in four registers 32 columns at a time while every row is added:
// each element sees the same fused multiply-adds in the same order as cnt
// calls of axpyAVX2 (skipping the zeros), so the results are bit for bit
// theirs.
TEXT ·axpysAVX2(SB), NOSPLIT, $0-48
	MOVQ y+0(FP), DI
	MOVQ e+8(FP), R10
	MOVQ x+16(FP), SI
	MOVQ xs+24(FP), R9
	SHLQ $2, R9
	MOVQ n+32(FP), CX
	MOVQ cnt+40(FP), DX
	TESTQ DX, DX
	JZ done
	VXORPS X8, X8, X8
	XORQ AX, AX
	TESTQ $63, CX
	JZ cols64
cols:
	LOADY4
	LEAQ (SI)(AX*4), R8
	XORQ BX, BX
rows:
	WEIGHT(add, next)
add:
	VBROADCASTSS X0, Y0
	FMA4ROW(0, 32, 64, 96, Y1, Y2, Y3, Y4)
next:
	ADDQ R9, R8
	INCQ BX
	CMPQ BX, DX
	JB rows
	STOREY4
	ADDQ $32, AX
	CMPQ AX, CX
	JB cols
done:
	VZEROUPPER
	RET
cols64:
	// n a multiple of 64 (heads of 64, 128, ...): y held 64 columns at a
	// time in Y1-Y7 and Y9, so that each row's weight is read, tested and
	// broadcast once for 64 columns. Every element still sees the same
	// fused multiply-adds in order.
c64:
	LOADY4
	VMOVUPS 128(DI)(AX*4), Y5
	VMOVUPS 160(DI)(AX*4), Y6
	VMOVUPS 192(DI)(AX*4), Y7
	VMOVUPS 224(DI)(AX*4), Y9
	LEAQ (SI)(AX*4), R8
	XORQ BX, BX
r64:
	WEIGHT(add64, next64)
add64:
	VBROADCASTSS X0, Y0
	FMA4ROW(0, 32, 64, 96, Y1, Y2, Y3, Y4)
	FMA4ROW(128, 160, 192, 224, Y5, Y6, Y7, Y9)
next64:
	ADDQ R9, R8
	INCQ BX
	CMPQ BX, DX
	JB r64
	STOREY4
	VMOVUPS Y5, 128(DI)(AX*4)
	VMOVUPS Y6, 160(DI)(AX*4)
	VMOVUPS Y7, 192(DI)(AX*4)
	VMOVUPS Y9, 224(DI)(AX*4)
	ADDQ $64, AX
	CMPQ AX, CX
	JB c64
	VZEROUPPER
	RET
