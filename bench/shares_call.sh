#!/usr/bin/env bash
# The tensor-core decode kernels' near-equal shares of a row against the
# build before them (fixed chunks) in one device call: their GPU tests,
# decode attention beside SDPA, the split kernel's trace. Pack here, carry
# [".gpucarry"], run from the repository root on the GPU machine:
#   git branch -f before 03ecf28                                 # here: the build to time against
#   PKGS="runtime/cuda" bash bench/pack_carry.sh before          # here
#   bash bench/shares_call.sh                                    # there
# PARTS (default "tests kernels trace"), ROUNDS (1), SHAPES and LENGTHS (bench/decode_attn_call.sh's).
set -u
source bench/unpack_carry.sh
export B
t0=$(date +%s)
stamp() { echo "## $1 ($(($(date +%s) - t0)) s, $(date -u +%H:%M:%S) UTC)"; }
parts=" ${PARTS:-tests kernels trace} "
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
if [[ $parts == *" tests "* ]]; then
	stamp tests
	(cd runtime/cuda && timeout 200 $B/runtime_cuda.test -test.count=1 \
		-test.run 'TestAttendTCKernels|TestAttnTraceGPU|TestPoliciesSplitKernelsGPU|TestAttendBatchTCGPU' 2>&1 |
		grep -E "^(--- FAIL|FAIL|ok|PASS)|panic|error" | head -20)
fi
if [[ $parts == *" kernels "* ]]; then
	stamp kernels
	for r in $(seq 1 "${ROUNDS:-1}"); do
		echo "# round $r"
		SHAPES="${SHAPES:-32/8:128 32/32:128 32/8:64}" LENGTHS=${LENGTHS:-512,1024,2048,4096,8192,16384,32768,65536} \
			ENVS="default" bash bench/decode_attn_call.sh "$B" .gpucarry/b/${VARIANT:-before} "$B" .gpucarry/b/${VARIANT:-before} | grep -v "^NVIDIA"
	done
fi
if [[ $parts == *" trace "* ]]; then
	stamp trace
	timeout 120 $B/kvbench kernels --policies full --iters 50 --check=false --trace -v --lengths 32768,65536 --heads 32/8 --dim 128 2>&1 |
		grep -E "^# trace|^kvbench|error"
fi
stamp done
