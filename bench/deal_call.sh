#!/usr/bin/env bash
# The tensor-core decode kernels' near-equal shares of a row (the default)
# and tiles dealt from a row's counter (KVBENCH_ATTN_DEAL=on) against
# main's fixed chunks in one device call: the GPU tests under each (memcheck
# on a few cases), decode attention beside SDPA, and the split kernel's
# trace. Pack here, carry [".gpucarry"], run from the repository root on the
# GPU machine:
#   PKGS="runtime/cuda" bash bench/pack_carry.sh before   # here (a branch of the build to time against; VARIANT names it there)
#   bash bench/deal_call.sh                             # there
# PARTS (default "tests kernels trace"), ROUNDS (2).
set -u
source bench/unpack_carry.sh
export B
t0=$(date +%s)
stamp() { echo "## $1 ($(($(date +%s) - t0)) s, $(date -u +%H:%M:%S) UTC)"; }
parts=" ${PARTS:-tests kernels trace} "
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
if [[ $parts == *" tests "* ]]; then
	stamp tests
	# The fixed chunks' near-equal shares (the default) through every test
	# of the tensor-core decode kernels, alone and batched; then dealt.
	(cd runtime/cuda && timeout 300 $B/runtime_cuda.test -test.count=1 \
		-test.run 'TestAttendDealtGPU|TestAttendTCKernels|TestAttnTraceGPU|TestPoliciesSplitKernelsGPU|TestBackendModelsBF16|TestAttendTCLowHalvesGPU|TestAttendBatchTCGPU|TestAttendBatchGPU' 2>&1 |
		grep -E "^(--- FAIL|FAIL|ok|PASS)|panic|error|deal_test" | head -20)
	echo "# tests under KVBENCH_ATTN_DEAL=on"
	(cd runtime/cuda && KVBENCH_ATTN_DEAL=on timeout 200 $B/runtime_cuda.test -test.count=1 \
		-test.run 'TestAttendTCKernels|TestAttnTraceGPU|TestPoliciesSplitKernelsGPU' 2>&1 |
		grep -E "^(--- FAIL|FAIL|ok|PASS)|panic|error" | head -20)
	echo "# memcheck: dealt and fixed"
	(cd runtime/cuda && timeout 200 compute-sanitizer --tool memcheck --print-limit 10 $B/runtime_cuda.test -test.count=1 \
		-test.run 'TestAttendDealtGPU/hd128/32x8/ps16/n20000|TestAttendDealtGPU/hd64/8x1/ps64/n5000|TestAttendTCKernels/tc/hd128/8x2' 2>&1 |
		grep -E "ERROR SUMMARY|^--- FAIL|^(FAIL|ok|PASS)$|Invalid" | head -8)
fi
if [[ $parts == *" kernels "* ]]; then
	stamp kernels
	# This build (near-equal shares; dealt) and the one before (chunks of the chosen
	# size), SDPA beside, in turn.
	for r in $(seq 1 "${ROUNDS:-2}"); do
		echo "# round $r"
		SHAPES="32/8:128" LENGTHS=512,1024,2048,4096,8192,16384,32768,65536,131072 \
			ENVS="default KVBENCH_ATTN_DEAL=on" bash bench/decode_attn_call.sh "$B" .gpucarry/b/${VARIANT:-before} | grep -v "^NVIDIA"
		SHAPES="32/32:128 32/8:64" LENGTHS=512,1024,2048,4096,8192,16384,32768 \
			ENVS="default KVBENCH_ATTN_DEAL=on" bash bench/decode_attn_call.sh "$B" .gpucarry/b/${VARIANT:-before} | grep -v "^NVIDIA"
	done
fi
if [[ $parts == *" trace "* ]]; then
	stamp trace
	trace_at() { # settings heads lengths
		local e=$1 h=$2 l=$3
		set -- ; [ "$e" != default ] && set -- $(echo "$e" | tr , ' ')
		env "$@" timeout 120 $B/kvbench kernels --policies full --iters 50 --check=false --trace -v --lengths "$l" --heads "$h" --dim 128 2>&1 |
			grep -E "^# trace|^kvbench|error" | sed "s|^|$h $e: |"
	}
	for e in default KVBENCH_ATTN_DEAL=on; do
		trace_at $e 32/8 4096,32768,65536
		trace_at $e 32/32 16384
	done
	# The cache's page size (tokens): does a tile's place in the pool cost?
	for kp in 16 64 256; do
		timeout 60 $B/kvbench kernels --policies full --iters 200 --check=false --lengths 32768 --heads 32/8 --dim 128 --kv-page $kp 2>&1 |
			grep -E "^kvbench|error" | sed "s|^|kv-page $kp: |"
	done
fi
stamp done
