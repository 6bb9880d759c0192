#!/usr/bin/env bash
# Issue 14 item 6 in one device call: decode attention's candidate settings
# beside SDPA, their GPU tests, the split kernel's trace and the 8B decode,
# all from the one build of the working tree (every candidate is a setting).
# Pack here, carry [".gpucarry"], run from the repository root on the GPU
# machine (about 8 minutes):
#   PKGS="runtime/cuda" bash bench/pack_carry.sh   # here (the fixtures too: TestBackendModelsBF16)
#   bash bench/attn_knobs_call.sh                  # there
# PARTS (default "tests kernels trace decode") picks the parts; ROUNDS (2)
# the rounds of the kernels' table, each with SDPA beside it; KNOBS the
# candidate settings, space-separated, each a comma-separated list of
# VAR=value, a "+" within a value a space (default: three stages a warp,
# KVBENCH_ATTN_TC_ST=3, the one form of the tensor-core decode kernel still
# a setting; give the candidates to time). Timed here and settled (see
# docs/gpu-notes.md): the merge's forced forms (KVBENCH_ATTN_COMBINE),
# KVBENCH_ATTN_TC_UNIT=16, -DKVB_MERGE_MB=8, three blocks a multiprocessor
# (all removed); the first stages' page pointers read by the warps and the
# KV head's words asked for with the header (defaults since the thirty-sixth
# session); KVBENCH_ATTN_TC_MIN=128 (lost at 512,
# 2026-12-06; chunks of 128 for heads of 128 where they still give half a
# block a multiprocessor are the default since, tcLeast).
# TestDeviceMemRateGPU checks the memory figures that choose the MHA rows'
# kernel. A candidate becomes the default only if it gains in the kernels'
# table without a loss there or in the 8B decode.
set -u
source bench/unpack_carry.sh
export B
parts=" ${PARTS:-tests kernels trace decode} "
knobs=${KNOBS:-"KVBENCH_ATTN_TC_ST=3"}
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
if [[ $parts == *" tests "* ]]; then
	stamp tests
	# The trace's build (bit-identical outputs, stamps in order), the one-pass
	# merge against the CPU, and the split kernels under the chunk of 64.
	(cd runtime/cuda && timeout 240 $B/runtime_cuda.test -test.count=1 \
		-test.run 'TestAttnTraceGPU|TestAttendOnePassMergeGPU|TestAttendTCKernels|TestPoliciesSplitKernelsGPU|TestDeviceMemRateGPU' 2>&1 |
		grep -E "^(--- FAIL|FAIL|ok|PASS)|panic|attn_trace|error" | head -20)
	for e in $knobs; do # the policies' sums and the models through each candidate
		echo "# tests under $e"
		setting_args "$e"
		(cd runtime/cuda && env "${ARGS[@]}" timeout 150 $B/runtime_cuda.test -test.count=1 \
			-test.run 'TestAttendTCKernels|TestAttendOnePassMergeGPU|TestEarlyReadsGPU|TestPoliciesSplitKernelsGPU|TestBackendModelsBF16' 2>&1 | grep -E "^(--- FAIL|FAIL|ok|PASS)|panic" | head -10)
	done
fi
if [[ $parts == *" kernels "* ]]; then
	stamp kernels
	for r in $(seq 1 "${ROUNDS:-2}"); do
		echo "# round $r"
		SHAPES="32/8:128 32/8:64 32/32:128" LENGTHS=512,1024,2048,4096,8192,16384,32768,65536 ENVS="default $knobs" \
			bash bench/decode_attn_call.sh "$B" | grep -v "^NVIDIA"
	done
fi
if [[ $parts == *" trace "* ]]; then
	stamp trace
	trace_at() { # settings heads lengths
		local e=$1 h=$2 l=$3
		setting_args "$e"
		env "${ARGS[@]}" timeout 120 $B/kvbench kernels --policies full --iters 50 --check=false --trace -v --lengths "$l" --heads "$h" --dim 128 2>&1 |
			grep -E "^# trace|^# full|^kvbench|error" | sed "s|^|$h $e: |"
	}
	trace_at default 32/8 1024,2048,32768,65536
	for e in $knobs; do trace_at "$e" 32/8 1024,2048,32768,65536; done
fi
if [[ $parts == *" decode "* ]]; then
	stamp decode
	v="main=$B/kvbench"
	i=0
	for e in $knobs; do i=$((i + 1)) v="$v k$i=$B/kvbench@$e"; done # the table's settings column names each
	VARIANTS="$v" \
		REPS=2 bash bench/decode_call.sh
fi
stamp done
