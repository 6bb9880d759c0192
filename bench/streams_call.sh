#!/usr/bin/env bash
# Batched streams on the GPU machine in one device call (issue 15): the GPU
# tests of the code a batch step runs, then `kvbench streams` (64 streams,
# 1B and 8B shapes made by bench/e2e.py) under three policies, and one decode
# step of each shape under ncu (KVBENCH_PROFILE_STEP), summed by kernel
# (bench/ncu_sum.py). Build here: kvbench, and the test binaries of
# runtime/cuda, policies and bench (go test -c), with the Llama-2
# tokenizer.model, packed as .e2ecarry/p.tgz; carry .e2ecarry.
# TESTS=0 skips the tests; SHAPES="1b 8b" picks the shapes; POLS1B and POLS8B
# the policies (each run prints its step part by part: KVBENCH_PHASES); LANES_CMP=1 also runs each with KVBENCH_LANES=off (the host's
# work one stream after another: the lanes' and batchMeta's gain, same call);
# GRAPHS_CMP=1 also runs each with KVBENCH_GRAPHS=off (a batch step's
# products launched one by one: the graphs' gain, same call); DEFER_CMP=1 also
# runs each with KVBENCH_ACC_DEFER=off (H2O's and TOVA's sums read once a
# layer instead of once a step: the deferral's gain, same call). A package's
# failed tests run again with KVBENCH_BATCH_ATTN=off and with
# KVBENCH_GRAPHS=off (BISECT=0: not), to tell which path a failure follows.
set -u
P=/tmp/p; mkdir -p $P && tar -C $P -xf ${CARRY:-.e2ecarry}/p.t*z
export KVBENCH_CUDA_CACHE=/tmp/kc PYTHONUNBUFFERED=1 KVBENCH_SHARED=${KVBENCH_SHARED:-$P/shared}
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
run() { # package-dir binary pattern timeout log
	(cd "$1" && timeout "$4" $P/$2 -test.count=1 -test.v -test.timeout "$(( $4 - 5 ))s" -test.run "$3" -test.skip 'Timing|Speed|Profile|HostTime|ReadFloor' > "$OUT/$5" 2>&1)
	echo "== $1 ($3): rc $? passed $(grep -c '^--- PASS' "$OUT/$5") skipped $(grep -c '^--- SKIP' "$OUT/$5")"
	grep -E "^--- FAIL|^panic" "$OUT/$5" | head -10
	grep -m3 -iE "nvrtc|compil.*error|error:" "$OUT/$5"
	# The failed tests again with one batching path off at a time: which
	# one a failure follows (KVBENCH_BATCH_ATTN: batched attention, H2O's
	# sums, Quest's queued work; KVBENCH_GRAPHS: replayed products).
	local failed; failed=$(grep -oE '^--- FAIL: [A-Za-z0-9_]+' "$OUT/$5" | awk '{print $3}' | sort -u | paste -sd'|')
	if [ -n "$failed" ] && [ "${BISECT:-1}" = 1 ]; then
		for v in KVBENCH_BATCH_ATTN=off KVBENCH_GRAPHS=off; do
			local log=/tmp/bisect-$5-${v%%=*}
			(cd "$1" && env $v timeout 120 $P/$2 -test.count=1 -test.v -test.timeout 115s -test.run "^($failed)\$" > "$log" 2>&1)
			echo "   again with $v: rc $?, $(grep -c '^--- FAIL' "$log") failing"; grep -E '^--- FAIL' "$log" | head -5
		done
	fi
}
if [ "${TESTS:-1}" = 1 ]; then
	run runtime/cuda runtime_cuda.test . 240 cuda.log; el
	run policies policies.test GPU 150 policies.log; el
	run bench bench.test 'GPU|BF16' 120 bench.log; el
	[ -x $P/tasks.test ] && { run tasks tasks.test 'GPU' 90 tasks.log; el; }
fi
for s in ${SHAPES-1b 8b}; do # SHAPES= (empty) runs none
	timeout 100 python3 bench/e2e.py make --shape $s --out /tmp/m$s --tokenizer $P/tokenizer.model 2>&1 | tail -1
	pols=${POLS1B:-full window streamingllm h2o}; n=128; [ $s = 8b ] && pols=${POLS8B:-streamingllm h2o} && n=64
	for p in $pols; do
		for v in lanes=on $([ "${LANES_CMP:-0}" = 1 ] && echo lanes=off) $([ "${GRAPHS_CMP:-0}" = 1 ] && echo graphs=off) \
			$([ "${DEFER_CMP:-0}" = 1 ] && echo accdefer=off); do
			lanes=on graphs=on accdefer=on; eval "$v"
			KVBENCH_PHASES=1 KVBENCH_LANES=$lanes KVBENCH_GRAPHS=$graphs KVBENCH_ACC_DEFER=$accdefer timeout 90 $P/kvbench streams --model /tmp/m$s --backend cuda --streams 64 --policy $p --budget 1024 --prompt 1024 --tokens $n --alone 0 2>&1 | grep -E "decode|a batch step|device memory|^\| streams a pass|^\| [0-9]+ \| [0-9]+ \|" | sed "s/^/$v /"; el streams $s $p $v
		done
	done
	for p in full streamingllm; do
		[ $s = 8b ] && [ $p = full ] && continue
		KVBENCH_PROFILE_STEP=2 timeout 150 ncu --profile-from-start off --clock-control none --metrics gpu__time_duration.sum --csv \
			$P/kvbench streams --model /tmp/m$s --backend cuda --streams 64 --policy $p --budget 1024 --prompt 1024 --tokens 3 --alone 0 > $OUT/ncu-$s-$p.csv 2>/dev/null
		echo "== one decode step of 64 streams, $s $p, device time by kernel (ncu):"; python3 bench/ncu_sum.py $OUT/ncu-$s-$p.csv | head -14; el ncu $s $p
	done
	rm -rf /tmp/m$s
done
