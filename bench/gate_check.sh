#!/usr/bin/env bash
# gate_check.sh: the experiment that shows kvbench compare is a CI gate this
# machine can trust. It builds kvbench, then for each of TRIALS trials runs
# configs/ci-gate.yaml RUNS times on each of three sides, interleaved run by
# run (the order rotating):
#   A and B: the same binary, nothing changed;
#   S:       the same binary with attention slowed by SLOWDOWN (the test-only
#            knob KVBENCH_TEST_ATTN_SLOWDOWN of runtime/cpu/attention.go),
# and compares A with B (must pass) and A with S (must fail on latency_p50).
# It prints one line per trial and the totals, and exits 1 unless no A/B
# comparison failed and every A/S comparison did.
#
# Usage: bench/gate_check.sh [TRIALS [RUNS]]   (defaults 20 and 6)
# Environment: SLOWDOWN (default 1.25), KEEP=1 keeps the runs (their folder
# is printed), KVBENCH_FLAGS (extra compare flags).
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-20}
runs=${2:-6}
slow=${SLOWDOWN:-1.25}
work=$(mktemp -d "${TMPDIR:-/tmp}/kvbench-gate.XXXXXX")
if [[ "${KEEP:-}" != 1 ]]; then
	trap 'rm -rf "$work"' EXIT
fi
bin="$work/kvbench"
CGO_ENABLED=0 go build -o "$bin" ./cmd/kvbench
suite=configs/ci-gate.yaml

run_side() { # side trial run
	local out="$work/t$2/$1/$3"
	if [[ $1 == S ]]; then
		KVBENCH_TEST_ATTN_SLOWDOWN=$slow "$bin" run "$suite" --out "$out" --quiet >/dev/null
	else
		"$bin" run "$suite" --out "$out" --quiet >/dev/null
	fi
}

# compare trial BASE NEW -> prints "pass" or "FAIL (n regressions: cells)"
compare() {
	local log="$work/t$1/$2-$3.txt" rc=0
	# shellcheck disable=SC2086
	"$bin" compare "$work/t$1/$2" "$work/t$1/$3" --max-regress latency_p50=0.10 ${KVBENCH_FLAGS:-} >"$log" 2>&1 || rc=$?
	if [[ $rc == 0 ]]; then
		echo pass
	elif [[ $rc == 1 ]]; then
		echo "FAIL ($(grep -c '^regression:' "$log") regressions, $(grep -c '^problem:' "$log") problems)"
	else
		echo "ERROR (exit $rc): $(tail -1 "$log")" >&2
		exit 2
	fi
}

start=$(date +%s)
same_failed=0 slow_failed=0
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ //'); $trials trials x $runs runs a side; slowdown $slow"
for t in $(seq 1 "$trials"); do
	for r in $(seq 1 "$runs"); do
		case $(((r + t) % 3)) in
		0) order="A B S" ;;
		1) order="B S A" ;;
		*) order="S A B" ;;
		esac
		for side in $order; do
			run_side "$side" "$t" "$r"
		done
	done
	same=$(compare "$t" A B)
	slowed=$(compare "$t" A S)
	[[ $same == pass ]] || same_failed=$((same_failed + 1))
	[[ $slowed == pass ]] || slow_failed=$((slow_failed + 1))
	echo "trial $t: same binary: $same; attention x$slow: $slowed"
done
echo "same binary: $same_failed of $trials comparisons failed (want 0)"
echo "attention x$slow: $slow_failed of $trials comparisons failed (want $trials)"
echo "took $(($(date +%s) - start)) s"
if [[ "${KEEP:-}" == 1 ]]; then
	echo "runs kept in $work"
fi
[[ $same_failed == 0 && $slow_failed == "$trials" ]]
