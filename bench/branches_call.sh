#!/usr/bin/env bash
# One device call over the refs bench/build_branches.sh built into
# .gpucarry/b/<ref>/: per ref, NVRTC's compile of every kernel, the GPU tests
# of the prefill, window, one-row product and model paths against the CPU,
# then the prefill attention timed (TestFlashPrefillTiming, VARIANTS and
# LENGTHS as in bench/prefill_call.sh) and, with E2E_MODEL set to a model
# directory (bench/e2e.py make), `kvbench e2e` at 4K and 32K with decode.
# Carry .gpucarry/b; run from the repository root:
#   bash bench/branches_call.sh 2>&1 | tee $OUT/branches.log
set -u
export KVBENCH_CUDA_CACHE=/tmp/kc PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
L=${LENGTHS:-4096,16384,32768}
for dir in .gpucarry/b/*/; do
	ref=$(basename "$dir"); B=$PWD/$dir
	echo "== $ref ($(cat "$B/commit" 2>/dev/null))"
	(cd runtime/cuda &&
		timeout 300 "$B/runtime_cuda.test" -test.run 'TestCompileKernels$|TestWGMMALayouts|TestFlashPrefill$|TestFlashPrefillBF16Pages|TestAttendWindowGPU|TestArchWindowGPU|TestBackendMatVec$|TestBackendModelsBF16|TestChooseFlash' \
			-test.v -test.count=1 > "$OUT/tests-$ref.log" 2>&1
		echo "tests rc $?"; grep -E "^\s*--- FAIL|^panic|error:" "$OUT/tests-$ref.log" | head -20
		grep -c -- "--- PASS" "$OUT/tests-$ref.log" | sed 's/^/passed (with subtests): /')
	el "tests $ref"
	for v in ${VARIANTS:-g2n128w g2n64kw}; do
		(cd runtime/cuda && KVBENCH_FLASH=$v KVBENCH_FLASH_BENCH=$L timeout 120 "$B/runtime_cuda.test" -test.run 'TestFlashPrefillTiming$' -test.v -test.count=1 2>&1 |
			grep -E "^\| [18]B|FAIL|panic|error" | sed "s/^/$ref $v /")
	done
	el "timing $ref"
	if [ -n "${E2E_MODEL:-}" ] && [ -x "$B/kvbench" ]; then
		timeout 150 "$B/kvbench" e2e --model "$E2E_MODEL" --backend cuda --lengths 4096,32768 --decode 128 2>&1 |
			grep -E "^\||weights|error|panic" | sed "s/^/$ref /"
		el "e2e $ref"
	fi
done
