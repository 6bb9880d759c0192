#!/usr/bin/env bash
# One device call over the refs bench/build_branches.sh built into
# .gpucarry/b/<ref>/: per ref, bench/prefill_call.sh on that ref's test binary
# (NVRTC's compile, the prefill and window tests against the CPU plus the
# one-row products', the prefill attention timed; VARIANTS and LENGTHS as
# there), its logs under $OUT/<ref>/; SDPA once at the end; with E2E_MODEL
# set to a model directory (bench/e2e.py make), `kvbench e2e` at 4K and 32K
# with decode for each ref built with kvbench. Carry .gpucarry/b; run from
# the repository root: bash bench/branches_call.sh 2>&1 | tee $OUT/branches.log
set -u
export KVBENCH_CUDA_CACHE=/tmp/kc PYTHONUNBUFFERED=1
ALL=$OUT
for dir in .gpucarry/b/*/; do
	ref=$(basename "$dir")
	echo "== $ref ($(cat "$dir/commit" 2>/dev/null))"
	mkdir -p "$ALL/$ref"
	OUT=$ALL/$ref CARRY=${dir%/} NCU=0 SDPA=0 EXTRA_TESTS='TestBackendMatVec$' bash bench/prefill_call.sh 2>&1 |
		grep -vE "entry function|ptxas  |Used " | sed "s/^/$ref /"
	if [ -n "${E2E_MODEL:-}" ] && [ -x "$dir/kvbench" ]; then
		timeout 150 "$dir/kvbench" e2e --model "$E2E_MODEL" --backend cuda --lengths 4096,32768 --decode 128 2>&1 |
			grep -E "^\||weights|error|panic" | sed "s/^/$ref /"
	fi
done
timeout 150 python3 bench/e2e.py sdpa --lengths ${LENGTHS:-4096,16384,32768} --backends ${SDPA_BACKENDS:-flash} 2>&1 | grep -E "^\| SDPA|Error"
