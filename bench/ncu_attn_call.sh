#!/usr/bin/env bash
# Decode attention's kernels beside SDPA's under Nsight Compute, at the
# short lengths where item 6 of issue 14 trails (1K-2K): which kernels each
# side launches, their grids, registers and shared memory, their device time
# alone (no events, no launch gaps), and where their warps stall, with the
# caches flushed between replays (ncu's default) and without
# (--cache-control none: a decode step's kernels find the instructions and
# the page tables warm). Build here:
#   bash bench/pack_carry.sh   (or any kvbench binary carried)
# carry .gpucarry and run from the repository root on the GPU machine:
#   source bench/unpack_carry.sh; bash bench/ncu_attn_call.sh $B/kvbench 2>&1 | tee $OUT/ncu_attn.log
# NCU_LENS (default "1024 2048"), HEADS (32/8), DIM (128), CACHES ("all
# none"), SDPA=0 skips PyTorch's side. The whole ncu reports go to
# $OUT/ncu_<side>_<len>_<cache>.txt.
set -u
KVB=${1:-.gpucarry/kvbench}
export KVBENCH_CUDA_CACHE=/tmp/kc PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
H=${HEADS:-32/8} D=${DIM:-128}
OUTD=${OUT:-/tmp}
# One report's kernels, a line each: name, grid, block, registers, shared
# memory, duration and the stall reasons of at least 0.05 cycles an issue.
summary() {
	awk '
	match($0, /\([0-9]+, [0-9]+, [0-9]+\)x\([0-9]+, [0-9]+, [0-9]+\)/) && $0 ~ /Context/ {
		if (k != "") print k s
		name = substr($0, 1, RSTART - 1); gsub(/^ +| +$/, "", name)
		if (length(name) > 90) name = substr(name, 1, 90) "..."
		k = name " " substr($0, RSTART, RLENGTH); s = ""; next
	}
	$1 == "Duration" { s = s " dur=" $NF $(NF-1) }
	$1 == "Registers" && $2 == "Per" { s = s " regs=" $NF }
	$1 == "Dynamic" && $2 == "Shared" { s = s " dynsmem=" $NF $(NF-1) }
	$1 == "Achieved" && $2 == "Occupancy" { s = s " occ=" $NF "%" }
	$1 == "Warp" && $2 == "Cycles" && $3 == "Per" && $4 == "Issued" { s = s " cyc/issue=" $NF }
	$1 ~ /^smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio$/ && $NF + 0 >= 0.05 {
		n = $1; sub(/^smsp__average_warps_issue_stalled_/, "", n); sub(/_per_issue_active\.ratio$/, "", n)
		s = s " " n "=" $NF
	}
	END { if (k != "") print k s }' "$1"
}
profile() { # side, length, cache, kernel regex, skip, count, command...
	local side=$1 len=$2 cache=$3 re=$4 skip=$5 count=$6; shift 6
	local f=$OUTD/ncu_${side}_${len}_${cache}.txt
	timeout 240 ncu --cache-control $cache --clock-control none -k "regex:$re" --launch-skip $skip --launch-count $count \
		--section LaunchStats --section Occupancy --section SpeedOfLight --section WarpStateStats \
		--metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' "$@" > "$f" 2>&1
	echo "== $side $len tokens, --cache-control $cache (rc $?)"
	summary "$f"
}
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv,noheader
for len in ${NCU_LENS:-1024 2048}; do
	for cache in ${CACHES:-all none}; do
		# kvbench: the split kernel and its combine of two steps past the warm-up
		profile kvbench $len $cache '^attn_rt' 4 4 \
			"$KVB" kernels --policies full --iters 5 --check=false --lengths $len --heads $H --dim $D
		el kvbench $len $cache
		if [ "${SDPA:-1}" = 1 ]; then
			# SDPA: its attention kernels (flash's split and combine, or whatever
			# the dispatcher picks) of runs past the warm-up; the GPU sleeps and
			# copies of the timing harness are not matched
			profile sdpa $len $cache 'flash|fmha|attn|attention|combine|splitkv|cudnn|sm90' 6 4 \
				python3 bench/sdpa.py --heads $H --dim $D --backends default --iters 5 --lengths $len
			el sdpa $len $cache
		fi
	done
done
