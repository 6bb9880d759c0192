#include "textflag.h"

// Constants of expNeg (expf.go), as float32 bit patterns.
DATA expc<>+0(SB)/4, $0x3fb8aa3b  // log2(e)
DATA expc<>+4(SB)/4, $0x3f317200  // ln2 high part
DATA expc<>+8(SB)/4, $0x35bfbe8e  // ln2 low part
DATA expc<>+12(SB)/4, $0xc2ae999a // -87.3: below it the result is flushed to 0
DATA expc<>+16(SB)/4, $0x3f800000 // 1
DATA expc<>+20(SB)/4, $0x3f000000 // 1/2
DATA expc<>+24(SB)/4, $0x3e2aaaab // 1/6
DATA expc<>+28(SB)/4, $0x3d2aaaab // 1/24
DATA expc<>+32(SB)/4, $0x3c088889 // 1/120
DATA expc<>+36(SB)/4, $0x3ab60b61 // 1/720
DATA expc<>+40(SB)/4, $0x39500d01 // 1/5040
DATA expc<>+44(SB)/4, $127        // exponent bias (int32)
GLOBL expc<>(SB), RODATA|NOPTR, $48

// func expNegSumAVX2(x []float32, sub float32) float32
// x[i] = expNeg(x[i] - sub) for i < len(x) rounded down to a multiple of 8;
// returns the sum of those values.
TEXT ·expNegSumAVX2(SB), NOSPLIT, $0-36
	MOVQ x_base+0(FP), SI
	MOVQ x_len+8(FP), CX
	SHRQ $3, CX
	VBROADCASTSS sub+24(FP), Y15
	VBROADCASTSS expc<>+0(SB), Y14  // log2e
	VBROADCASTSS expc<>+4(SB), Y13  // ln2hi
	VBROADCASTSS expc<>+8(SB), Y12  // ln2lo
	VBROADCASTSS expc<>+12(SB), Y11 // limit
	VBROADCASTSS expc<>+16(SB), Y10 // 1
	VBROADCASTSS expc<>+44(SB), Y9  // 127
	VXORPS Y8, Y8, Y8               // sum
	TESTQ CX, CX
	JZ done

loop:
	VMOVUPS (SI), Y0
	VSUBPS Y15, Y0, Y0              // y = x - sub
	VCMPPS $14, Y11, Y0, Y7         // mask = y > limit
	VMULPS Y14, Y0, Y1              // t = y * log2e
	VROUNDPS $0, Y1, Y1             // n = round(t)
	VFNMADD231PS Y13, Y1, Y0        // r = y - n*ln2hi
	VFNMADD231PS Y12, Y1, Y0        // r -= n*ln2lo
	VBROADCASTSS expc<>+40(SB), Y2  // p = 1/5040
	VBROADCASTSS expc<>+36(SB), Y3
	VFMADD213PS Y3, Y0, Y2          // p = p*r + 1/720
	VBROADCASTSS expc<>+32(SB), Y3
	VFMADD213PS Y3, Y0, Y2
	VBROADCASTSS expc<>+28(SB), Y3
	VFMADD213PS Y3, Y0, Y2
	VBROADCASTSS expc<>+24(SB), Y3
	VFMADD213PS Y3, Y0, Y2
	VBROADCASTSS expc<>+20(SB), Y3
	VFMADD213PS Y3, Y0, Y2
	VFMADD213PS Y10, Y0, Y2         // p = p*r + 1
	VFMADD213PS Y10, Y0, Y2         // p = p*r + 1
	VCVTPS2DQ Y1, Y4                // n as int32
	VPADDD Y9, Y4, Y4
	VPSLLD $23, Y4, Y4              // 2^n
	VMULPS Y4, Y2, Y2
	VANDPS Y7, Y2, Y2               // flush below the limit (and -Inf, NaN)
	VMOVUPS Y2, (SI)
	VADDPS Y2, Y8, Y8
	ADDQ $32, SI
	DECQ CX
	JNZ loop

done:
	VEXTRACTF128 $1, Y8, X0
	VADDPS X0, X8, X0
	VMOVHLPS X0, X1, X1
	VADDPS X1, X0, X0
	VMOVSHDUP X0, X1
	VADDSS X1, X0, X0
	VZEROUPPER
	MOVSS X0, ret+32(FP)
	RET
