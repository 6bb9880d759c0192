#!/usr/bin/env bash
# The prefill attention kernels on the GPU machine in one device call (issue
# 14 item 3): NVRTC with ptxas' register report for the prefill kernels, the
# wgmma layout probe, the prefill tests of every variant against the CPU and
# the sliding-window tests, then TestFlashPrefillTiming for each
# KVBENCH_FLASH variant beside SDPA (bench/e2e.py sdpa) on the same shapes.
# Build here:
#   CGO_ENABLED=0 go test -c -ldflags="-s -w" -o .gpucarry/runtime_cuda.test ./runtime/cuda
# then carry .gpucarry and run from the repository root:
#   bash bench/prefill_call.sh 2>&1 | tee $OUT/prefill.log
# VARIANTS (default "g2n128w g2n128kw g2n64kw g2n128s w4m2n64"), LENGTHS
# (4096,16384,32768); TESTS=0 skips the tests, NCU=0 the profiles
# (NCU_VARIANTS, default "g2n128w"); SASS=1 writes the d128 wgmma
# kernels' SASS to $OUT; SDPA_BACKENDS (default flash; also cudnn, default)
# the PyTorch backends timed beside, SDPA=0 none; EXTRA_TESTS (a -test.run
# alternation) more tests; CARRY the folder of the test binary.
set -u
B=$PWD/${CARRY:-.gpucarry}
export KVBENCH_CUDA_CACHE=/tmp/kc PYTHONUNBUFFERED=1 KVBENCH_NVRTC_OPTS="-lineinfo --ptxas-options=-v"
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
L=${LENGTHS:-4096,16384,32768}
cd runtime/cuda
timeout 240 $B/runtime_cuda.test -test.run 'TestCompileKernels$' -test.v -test.count=1 > $OUT/compile.log 2>&1
echo "compile rc $?"; grep -E "^(--- |ok|FAIL)|error" $OUT/compile.log | head -20
grep -E "entry function '(flash_wg|flash_prefill_d128_w4_m2_n64|wg_probe)" -A3 $OUT/compile.log | grep -E "entry|spill|Used" | sed 's/ptxas info *: //' | head -30
grep -iE "warn|serializ|performance loss" $OUT/compile.log | sort | uniq -c | head -10; el compile
if [ "${TESTS:-1}" = 1 ]; then
	timeout 240 $B/runtime_cuda.test -test.run "TestWGMMALayouts|TestFlashPrefill\$|TestFlashPrefillBF16Pages|TestAttendWindowGPU|TestArchWindowGPU|TestChooseFlash|TestBackendModelsBF16${EXTRA_TESTS:+|$EXTRA_TESTS}" \
		-test.v -test.count=1 > $OUT/tests.log 2>&1
	echo "tests rc $?"; grep -E "^\s*--- FAIL|^(ok|FAIL)$|^panic|wgmma_test|worst absolute" $OUT/tests.log | head -40
	grep -c -- "--- PASS" $OUT/tests.log | sed 's/^/passed (with subtests): /'; el tests
fi
if [ "${SASS:-0}" = 1 ]; then # the SASS of the d128 wgmma kernels, from NVRTC's cache (after a run)
	F=$(grep -l flash_wg_d128 $(find $KVBENCH_CUDA_CACHE -name '*.cubin') | head -1)
	for k in $(cuobjdump -symbols $F 2>/dev/null | grep -oE 'flash_wg_d128_g2_n(64|128)_m[0-2](_w1)?' | sort -u); do
		cuobjdump -sass -fun $k $F > $OUT/sass_$k.txt 2>&1
		echo "$k: $(grep -cE '^\s+/\*[0-9a-f]{4}\*/' $OUT/sass_$k.txt) instructions"
	done
fi
for v in ${VARIANTS:-g2n128w g2n128kw g2n64kw g2n128s w4m2n64}; do
	KVBENCH_FLASH=$v KVBENCH_FLASH_BENCH=$L timeout 120 $B/runtime_cuda.test -test.run 'TestFlashPrefillTiming$' -test.v -test.count=1 2>&1 |
		grep -E "^\| [18]B|FAIL|panic|error" | sed "s/^/$v /"; el timing $v
done
if [ "${NCU:-1}" = 1 ]; then # one d128 launch at 16K a variant, under Nsight Compute
	for v in ${NCU_VARIANTS:-g2n128w}; do
		KVBENCH_FLASH=$v KVBENCH_FLASH_BENCH=16384 timeout 200 ncu --clock-control none -k regex:flash_wg_d128 --launch-skip 1 --launch-count 1 \
			--section SpeedOfLight --section ComputeWorkloadAnalysis --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \
			--metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' \
			$B/runtime_cuda.test -test.run 'TestFlashPrefillTiming$' -test.count=1 > $OUT/ncu_$v.txt 2>&1
		echo "ncu $v rc $?"; grep -E "Duration|SM Busy|Compute \(SM\) Throughput|Memory Throughput|Executed Ipc A|Issue Slots Busy|Achieved Occupancy|Warp Cycles Per Issued|Bank|L2 Hit|stalled_[a-z_]*_per_issue_active.ratio +[a-z]* +[0-9.]*[1-9]" $OUT/ncu_$v.txt |
			awk '{$1=$1};1' | grep -vE " 0(\.0+)?$" | head -40; el ncu $v
	done
fi
cd ../..
[ "${SDPA:-1}" = 1 ] || exit 0
timeout 150 python3 bench/e2e.py sdpa --lengths $L --backends ${SDPA_BACKENDS:-flash} 2>&1 | grep -E "^\| SDPA|Error"; el sdpa
