#!/usr/bin/env bash
# Issue 14 item 6 in one device call: what a split-KV decode step's merge
# costs and whether the cluster merge (KVBENCH_ATTN_CLUSTER, rows up to that
# many tokens as one thread block cluster, merged in distributed shared
# memory) now pays inside a decode step. Pack here, carry [".gpucarry"], run
# from the repository root on the GPU machine:
#   PKGS="runtime/cuda" bash bench/pack_carry.sh   # here
#   bash bench/merge_call.sh                       # there
# PARTS (default "tests floor kernels decode"):
# - tests: the floors' and the cluster kernel's GPU tests;
# - floor: kvbench kernels --floor for 32/8 d128 (the step, its grid-wide
#   read floor, the split floors: merged by a combine, by the last block,
#   not merged) at FLOOR_LENGTHS under each setting of FLOOR_ENVS (the
#   split floors take the step's shape: KVBENCH_ATTN_WAVES=4 gives them four
#   times the chunks); FLOOR_SDPA=1 adds SDPA at those lengths;
# - kernels: the step by default and with clusters for rows up to 1,024
#   and 2,048 tokens beside SDPA, 512-4,096 tokens, ROUNDS (2) rounds
#   (LENGTHS and ENVS as bench/decode_attn_call.sh takes them);
# - decode: the 8B shape's decode under the same three settings, REPS (2).
set -u
source bench/unpack_carry.sh
export B
parts=" ${PARTS:-tests floor kernels decode} "
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
if [[ $parts == *" tests "* ]]; then
	stamp tests
	(cd runtime/cuda && timeout 120 $B/runtime_cuda.test -test.count=1 -test.run 'TestSplitFloor|TestReadFloor|TestAttnTraceGPU' -test.v 2>&1 |
		grep -E "^(--- |FAIL|ok|PASS)|panic" | head -10)
	echo "# under KVBENCH_ATTN_CLUSTER=2048"
	(cd runtime/cuda && KVBENCH_ATTN_CLUSTER=2048 timeout 200 $B/runtime_cuda.test -test.count=1 \
		-test.run 'TestAttendTCKernels|TestPoliciesSplitKernelsGPU|TestBackendModelsBF16' 2>&1 | grep -E "^(--- FAIL|FAIL|ok|PASS)|panic" | head -10)
fi
if [[ $parts == *" floor "* ]]; then
	stamp floor
	for e in ${FLOOR_ENVS:-default}; do
		echo "# floor under $e"
		setting_args "$e"
		env "${ARGS[@]}" timeout 200 $B/kvbench kernels --policies full --iters 200 --check=false --floor \
			--lengths ${FLOOR_LENGTHS:-1024,4096,32768,65536} --heads 32/8 --dim 128 2>&1 | grep -v "^$" | head -40
	done
	[ -n "${FLOOR_SDPA:-}" ] && timeout 120 python3 bench/sdpa.py --heads 32/8 --dim 128 --backends default --iters 200 \
		--lengths ${FLOOR_LENGTHS:-1024,4096,32768,65536} 2>&1 | grep -v "^$" | head -20
fi
if [[ $parts == *" kernels "* ]]; then
	stamp kernels
	for r in $(seq 1 "${ROUNDS:-2}"); do
		echo "# round $r"
		SHAPES="32/8:128 32/8:64 32/32:128" LENGTHS=${LENGTHS:-512,1024,2048,4096} \
			ENVS=${ENVS:-"default KVBENCH_ATTN_CLUSTER=1024 KVBENCH_ATTN_CLUSTER=2048"} \
			bash bench/decode_attn_call.sh "$B" | grep -v "^NVIDIA"
	done
fi
if [[ $parts == *" decode "* ]]; then
	stamp decode
	VARIANTS="main=$B/kvbench cl1024=$B/kvbench@KVBENCH_ATTN_CLUSTER=1024 cl2048=$B/kvbench@KVBENCH_ATTN_CLUSTER=2048" \
		REPS=${REPS:-2} bash bench/decode_call.sh
fi
stamp done
