#!/usr/bin/env bash
# A syntax and template check of the kernel sources without NVRTC: g++
# -fsyntax-only over cuda/*.cu in Source's order, with stand-ins for CUDA's
# keywords and built-ins (stand_ins.h) and the inline assembly left out,
# for the host pass and for sm_90. It
# catches C++ mistakes (names, types, template instantiation) before a device
# call; NVRTC's own rules (execution spaces, e.g. generic lambdas in device
# code) and the PTX in asm statements are checked only by NVRTC and ptxas.
# Run from the repository root: bash bench/cudasyntax/check.sh
set -eu
d=$(dirname "$0")
src=$(for f in common backend gemv prefill prefill_wg prefill_tma attention attention_mma attention_tc quest policies; do cat cuda/$f.cu; echo; done |
	sed -E 's/\basm volatile\(/ASMX(/g; s/\basm\(/ASMX(/g; s/extern __shared__/extern/g')
# Twice: as the host pass sees it, and as sm_90's (the code behind
# __CUDA_ARCH__ >= 800 guards: the tensor-core kernels).
for arch in "" -D__CUDA_ARCH__=900; do
	echo "$src" | g++ -std=c++17 -fsyntax-only -x c++ $arch -include "$d/stand_ins.h" -
done
echo "cuda sources: syntax ok"
