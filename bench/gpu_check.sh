#!/usr/bin/env bash
# The GPU correctness pass of one device call: every GPU test of the packages
# that have them, then the prefill-attention and decode-host timings beside
# SDPA. Build here first (no Go there), stripped and packed to fit the carry:
#   PKGS="runtime/cuda policies tasks" bash bench/pack_carry.sh
# then, with .gpucarry carried: bash bench/gpu_check.sh   (logs in $OUT;
# SANITIZE=0 skips compute-sanitizer, TIMING=0 the timings; a package whose
# test binary was not packed is skipped: the carry's 64 MiB may not hold all
# five, so "runtime/cuda policies tasks" in one call and "bench cmd/kvbench"
# in another)
set -u
source bench/unpack_carry.sh # $B, the fixtures in $KVBENCH_SHARED
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
summ() { grep -E "^(--- FAIL|FAIL|ok|PASS)|^panic|--- SKIP" "$1" | sort | uniq -c | sort -rn | head -${2:-12}; }
run() { # package-dir binary pattern timeout log
	[ -x "$B/$2" ] || { echo "== $1: $2 not packed (PKGS)"; return; }
	(cd "$1" && timeout "$4" $B/$2 -test.count=1 -test.v -test.timeout "$(( $4 - 5 ))s" -test.run "$3" > "$OUT/$5" 2>&1)
	echo "== $1 ($3): rc $?"; grep -E "^--- (FAIL|PASS)|^(FAIL|ok|PASS)$|^panic" "$OUT/$5" | grep -v "^--- PASS" | head -20
	grep -c "^--- PASS" "$OUT/$5" | sed 's/^/passed: /'; grep -c "^--- SKIP" "$OUT/$5" | sed 's/^/skipped: /'
}
run runtime/cuda runtime_cuda.test . 300 cuda.log; el
run policies policies.test GPU 150 policies.log; el
run tasks tasks.test GPU 60 tasks.log; el
run bench bench.test 'GPU|BF16' 120 bench.log; el
run cmd/kvbench cmd_kvbench.test 'Kernel' 60 cmd.log; el
if [ "${SANITIZE:-1}" = 1 ]; then # memcheck of the forward pass's kernels and the attention
	(cd runtime/cuda && timeout 240 compute-sanitizer --tool memcheck --print-limit 20 $B/runtime_cuda.test -test.count=1 \
		-test.run 'TestBackendMatVec$|TestBackendOps|TestBackendModels$|TestAttend|TestFlashPrefill$' > "$OUT/sanitizer.log" 2>&1)
	echo "== compute-sanitizer memcheck: rc $?"; grep -E "ERROR SUMMARY|^--- FAIL|^(FAIL|ok|PASS)$" "$OUT/sanitizer.log" | head -5; el
	# The tensor-core decode kernels' stages (cp.async rings a warp refills
	# as it computes): shared-memory races and barrier misuse.
	for tool in racecheck synccheck; do
		(cd runtime/cuda && timeout 120 compute-sanitizer --tool $tool --print-limit 20 $B/runtime_cuda.test -test.count=1 \
			-test.run 'TestAttendTCKernels|TestAttendBatchTCGPU' > "$OUT/$tool.log" 2>&1)
		echo "== compute-sanitizer $tool: rc $?"; grep -E "SUMMARY|^--- FAIL|^(FAIL|ok|PASS)$" "$OUT/$tool.log" | head -5; el
	done
fi
[ "${TIMING:-1}" = 0 ] && exit 0 # the tests only (timings perturbed by other work on the device)
echo "== decode host time (TestDecodeHostTime)"; sed -n '/=== RUN   TestDecodeHostTime/,/--- /p' $OUT/cuda.log | head -20
echo "== prefill attention: kvbench flash_prefill, then SDPA"
(cd runtime/cuda && KVBENCH_FLASH_BENCH=${LENGTHS:-4096,16384,32768} timeout 60 $B/runtime_cuda.test -test.run TestFlashPrefillTiming -test.count=1 2>&1 | grep "^|")
timeout 60 python3 bench/e2e.py sdpa --lengths ${LENGTHS:-4096,16384,32768} 2>&1 | grep "^|"; el
