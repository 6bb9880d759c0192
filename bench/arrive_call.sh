#!/usr/bin/env bash
# The combine waiting on each row's arrivals (KVBENCH_ATTN_ARRIVE=on) against
# the default (its blocks wait for the whole split kernel's end, pdl_wait), in
# one device call: the GPU tests under the setting, decode attention beside
# SDPA in two rounds, the trace of both and the 8B decode. Pack here, carry
# [".gpucarry"], run from the repository root on the GPU machine:
#   PKGS="runtime/cuda" bash bench/pack_carry.sh   # here
#   bash bench/arrive_call.sh                      # there (about 7 minutes)
# PARTS (default "tests floor kernels trace decode") picks the parts, ROUNDS
# (2) the rounds of the kernels' A/B; floor is
# the read floor in each step's split shape, merged each way (kvbench kernels
# --floor), beside the step with and without arrivals.
set -u
source bench/unpack_carry.sh
export B
t0=$(date +%s)
stamp() { echo "## $1 ($(($(date +%s) - t0)) s, $(date -u +%H:%M:%S) UTC)"; }
parts=" ${PARTS:-tests floor kernels trace decode} "
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
if [[ $parts == *" tests "* ]]; then
	stamp tests
	(cd runtime/cuda && KVBENCH_ATTN_ARRIVE=on timeout 240 $B/runtime_cuda.test -test.count=1 \
		-test.run 'TestSplitFloor|TestAttendArrivalsGPU|TestAttnTraceGPU|TestAttendOnePassMergeGPU|TestPoliciesSplitKernelsGPU' 2>&1 |
		grep -E "^(--- FAIL|FAIL|ok|PASS)|panic|error" | head -20)
	echo "# memcheck and synccheck of the arrivals' test (one case a check)"
	for tool in memcheck synccheck; do
		(cd runtime/cuda && KVBENCH_ATTN_ARRIVE=on timeout 90 compute-sanitizer --tool $tool $B/runtime_cuda.test -test.count=1 \
			-test.run 'TestAttendArrivalsGPU/bf16/32x8/rows1/plain/chunk32' 2>&1 | grep -E "ERROR SUMMARY|^(--- FAIL|FAIL|ok|PASS)" | sed "s/^/$tool: /" | head -4)
	done
fi
if [[ $parts == *" kernels "* ]]; then
	stamp kernels
	for r in $(seq 1 "${ROUNDS:-2}"); do
		echo "# round $r"
		shapes="32/8:128"; [ $r = 1 ] && shapes="32/8:128 32/8:64"
		SHAPES="$shapes" LENGTHS=512,1024,2048,4096,8192,16384,32768,65536 \
			ENVS="default KVBENCH_ATTN_ARRIVE=on" bash bench/decode_attn_call.sh "$B" | grep -v "^NVIDIA"
		[ $r = 1 ] && SHAPES="32/32:128" LENGTHS=512,1024,2048,4096,8192,16384,32768 \
			ENVS="default KVBENCH_ATTN_COMBINE=separate KVBENCH_ATTN_COMBINE=separate,KVBENCH_ATTN_ARRIVE=on" \
			bash bench/decode_attn_call.sh "$B" | grep -v "^NVIDIA"
	done
fi
if [[ $parts == *" decode "* ]]; then
	stamp decode
	VARIANTS="main=$B/kvbench arrive=$B/kvbench@KVBENCH_ATTN_ARRIVE=on" REPS=${REPS:-1} bash bench/decode_call.sh
fi
if [[ $parts == *" floor "* ]]; then
	stamp floor
	for e in default KVBENCH_ATTN_ARRIVE=on; do
		set -- ; [ "$e" != default ] && set -- $e
		env "$@" timeout 150 $B/kvbench kernels --policies full --iters 200 --check=false --floor --lengths 1024,8192,32768,65536 --heads 32/8 --dim 128 2>&1 |
			grep -E "^kvbench|error" | sed "s|^|32/8 $e: |"
	done
	timeout 100 $B/kvbench kernels --policies full --iters 200 --check=false --floor --lengths 16384 --heads 32/32 --dim 128 2>&1 |
		grep -E "^kvbench|error" | sed "s|^|32/32: |"
fi
if [[ $parts == *" trace "* ]]; then
	stamp trace
	trace_at() { # settings heads lengths
		local e=$1 h=$2 l=$3
		set -- ; [ "$e" != default ] && set -- $(echo "$e" | tr , ' ')
		env "$@" timeout 120 $B/kvbench kernels --policies full --iters 50 --check=false --trace -v --lengths "$l" --heads "$h" --dim 128 2>&1 |
			grep -E "^# trace|^kvbench|error" | sed "s|^|$h $e: |"
	}
	trace_at default 32/8 1024,32768
	trace_at KVBENCH_ATTN_ARRIVE=on 32/8 1024,32768
fi
stamp done
