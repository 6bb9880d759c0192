#!/usr/bin/env bash
# Times token-by-token decode (kvbench e2e --decode, the 8B shape of
# bench/e2e.py after a 512-token prompt) for several builds and settings side
# by side in one device call, interleaved REPS times (the clocks drift between
# runs; the order of each round is the same). Run from the repository root on
# the GPU machine after `source bench/unpack_carry.sh`:
#   VARIANTS="main=$B/kvbench box384=.gpucarry/b/box384/kvbench" \
#   ENVS="- KVBENCH_KV_BOX=off KVBENCH_GRAPHS=off" REPS=2 bash bench/decode_call.sh
# An ENVS entry is "-" (none) or VAR=value[,VAR=value...]; a VARIANTS entry
# may carry settings of its own after an @ (noearly=$B/kvbench@KVBENCH_ATTN_EARLY=off),
# so that one build under two settings sits in each round beside the others.
# A build whose e2e also times the stepwise loop (the logits read back each
# step; builds with Runner.Greedy) shows it in the last column. SHAPE (8b) and
# MODEL (/tmp/m<shape>, made if absent), PROMPT (512), STEPS (128) as named.
set -u
shape=${SHAPE:-8b}; model=${MODEL:-/tmp/m$shape}
if [ ! -f "$model/config.json" ]; then
	# $B is the unpacked carry (bench/unpack_carry.sh sets it, unexported).
	if ! timeout 200 python3 bench/e2e.py make --shape "$shape" --out "$model" --tokenizer "${B:-/tmp/gpubin}/tokenizer.model" > /tmp/decode_make.log 2>&1; then
		tail -3 /tmp/decode_make.log
		rm -rf "$model" # a half-made model would be taken next time
		exit 1
	fi
	tail -1 /tmp/decode_make.log
fi
echo "| round | build | settings | tok/s | stepwise tok/s |"
echo "|---|---|---|---:|---:|"
for r in $(seq 1 "${REPS:-2}"); do
	for v in ${VARIANTS:-main=${B:-/tmp/gpubin}/kvbench}; do
		name=${v%%=*} bin=${v#*=} own=
		case $bin in *@*) own=${bin#*@} bin=${bin%%@*} ;; esac
		for e in ${ENVS:--}; do
			envs=()
			[ -n "$own" ] && IFS=, read -ra envs <<< "$own"
			[ "$e" != - ] && IFS=, read -ra more <<< "$e" && envs+=("${more[@]}")
			line=$(env "${envs[@]}" timeout 120 "$bin" e2e --model "$model" --backend cuda --lengths "${PROMPT:-512}" --nll=false \
				--decode "${STEPS:-128}" 2>&1 | grep -E "^\| (stepwise )?decode|error|panic" | head -3)
			tok=$(echo "$line" | awk -F'|' '/^\| decode/ {gsub(/ /, "", $5); print $5}')
			step=$(echo "$line" | awk -F'|' '/^\| stepwise decode/ {gsub(/ /, "", $5); print $5}')
			echo "| $r | $name | ${own:+$own }$e | ${tok:-$line} | ${step:--} |"
		done
	done
done
