#!/usr/bin/env bash
# Issue 14 item 6: the tensor-core decode kernel with each row's tiles of 16
# tokens dealt to its blocks in turn (KVBENCH_ATTN_TILES=dealt) against
# contiguous chunks (chunks), in one device call. Pack here, carry
# [".gpucarry"], run from the repository root on the GPU machine:
#   PKGS="runtime/cuda" bash bench/pack_carry.sh   # here
#   bash bench/tiles_call.sh                       # there
# PARTS (default "tests kernels"; also "floor", "trace", "decode"):
# - tests: the GPU tests of the kernels under both (TestAttendTCKernels
#   runs both itself; the others under each setting) and compute-sanitizer
#   memcheck on the dealt kernels;
# - kernels: both settings beside SDPA, 32/8 d128 and d64, 32/32 d128, 512
#   to 64K tokens, ROUNDS (2) rounds;
# - floor: kvbench kernels --floor under both at 32K and 64K (32/8 d128);
# - trace: where a step's time goes under both (32/8 d128, 32K and 64K);
# - decode: the 8B shape's decode under both, REPS (2).
set -u
source bench/unpack_carry.sh
export B
t0=$(date +%s)
stamp() { echo "## $1 ($(($(date +%s) - t0)) s, $(date -u +%H:%M:%S) UTC)"; }
parts=" ${PARTS:-tests kernels} "
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
if [[ $parts == *" tests "* ]]; then
	stamp tests
	(cd runtime/cuda && timeout 300 $B/runtime_cuda.test -test.count=1 -test.run 'TestAttendTCKernels' 2>&1 |
		grep -E "^(--- FAIL|FAIL|ok|PASS)|panic|want" | head -10)
	for e in chunks dealt; do
		echo "# KVBENCH_ATTN_TILES=$e"
		(cd runtime/cuda && KVBENCH_ATTN_TILES=$e timeout 200 $B/runtime_cuda.test -test.count=1 \
			-test.run 'TestPoliciesSplitKernelsGPU|TestBackendModelsBF16|TestAttnTraceGPU|TestEarlyReadsGPU|TestAttendOnePassMergeGPU|TestAttendWindowGPU|TestAttendBatchTCGPU' 2>&1 |
			grep -E "^(--- FAIL|FAIL|ok|PASS)|panic" | head -10)
	done
	echo "# memcheck, dealt"
	(cd runtime/cuda && KVBENCH_ATTN_TILES=dealt timeout 240 compute-sanitizer --tool memcheck $B/runtime_cuda.test -test.count=1 \
		-test.run 'TestAttendTCKernels/tc/dealt/hd128/8x2|TestPoliciesSplitKernelsGPU' 2>&1 | grep -E "ERROR SUMMARY|^(--- FAIL|FAIL|ok|PASS)" | head -5)
fi
if [[ $parts == *" kernels "* ]]; then
	stamp kernels
	for r in $(seq 1 "${ROUNDS:-2}"); do
		echo "# round $r"
		SHAPES=${SHAPES:-"32/8:128 32/8:64 32/32:128"} LENGTHS=${LENGTHS:-512,1024,2048,4096,8192,16384,32768,65536} \
			ENVS="KVBENCH_ATTN_TILES=chunks KVBENCH_ATTN_TILES=dealt" \
			bash bench/decode_attn_call.sh "$B" | grep -v "^NVIDIA"
	done
fi
if [[ $parts == *" floor "* ]]; then
	stamp floor
	for e in chunks dealt; do
		KVBENCH_ATTN_TILES=$e timeout 200 $B/kvbench kernels --policies full --iters 200 --check=false --floor --lengths 32768,65536 \
			--heads 32/8 --dim 128 2>&1 | grep -E "^kvbench" | sed "s/^/$e /"
	done
fi
if [[ $parts == *" trace "* ]]; then
	stamp trace
	for e in chunks dealt; do
		KVBENCH_ATTN_TILES=$e timeout 120 $B/kvbench kernels --policies full --iters 50 --check=false --trace -v --lengths 32768,65536 \
			--heads 32/8 --dim 128 2>&1 | grep -E "^# trace|error" | sed "s/^/$e /"
	done
fi
if [[ $parts == *" decode "* ]]; then
	stamp decode
	VARIANTS="chunks=$B/kvbench@KVBENCH_ATTN_TILES=chunks dealt=$B/kvbench@KVBENCH_ATTN_TILES=dealt" \
		REPS=${REPS:-2} bash bench/decode_call.sh
fi
stamp done
