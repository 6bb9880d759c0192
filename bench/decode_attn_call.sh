#!/usr/bin/env bash
# Decode attention beside SDPA in one device call (issue 14, item 6): for each
# head shape, kvbench kernels (the runtime's Backend.Attend of one decode step
# on a bf16 cache built through runtime.KVCache) under each setting of ENVS,
# for each build given, then bench/sdpa.py, one line a run (tokens=median
# us). Build here (CGO_ENABLED=0 go build -ldflags="-s -w" -o C/kvbench
# ./cmd/kvbench; several variants of the kernels: bench/build_branches.sh), carry
# the folders, and run from the repository root on the GPU machine:
#   bash bench/decode_attn_call.sh C [C2 ...]
# (with several folders each line starts with the folder's name).
# SHAPES="32/8:128 32/32:128" LENGTHS=512,...,131072 ITERS=200 and
# ENVS="default KVBENCH_ATTN_SHORT=0 KVBENCH_ATTN_COMBINE=separate" (settings
# joined by commas in one word: "KVBENCH_ATTN_SHORT=0,KVBENCH_RT_BOX=off"; a "+"
# in a value is a space: "KVBENCH_NVRTC_OPTS=-DKVB_A=1+-DKVB_B=2", two candidate defines);
# POLICY=quest times that policy's step instead of full attention's (SDPA's
# rows stay full attention over every token);
# STREAMS=N times N streams' steps as one batch (kvbench kernels --streams N)
# beside SDPA over a batch of N (bench/sdpa.py --batch N);
# B2B=N times kvbench's runs N at a time back to back behind one spin
# (kvbench kernels --back-to-back N), as bench/sdpa.py times SDPA's (50);
# SDPA is timed over L keys (the "sdpa" line) and over L+1 (the "sdpa L+1
# keys" line, shown under L): kvbench kernels' step at length L attends
# the L-token prompt and the new token, so the second is the same work;
# SDPA's time steps up past a multiple of its 128-key tiles (H100, 32/32
# heads of 64: 9.6 µs over 512 keys, 11.6 over 513), so at such lengths the
# two lines differ by up to 2 µs (SDPA_SAME=0: the first alone).
# PLANS=1 shows each kvbench cell's plan on the device (chunks a row, merge,
# blocks a multiprocessor, the kernel's registers: see line below);
# NCU_LEN=131072 adds a line per run with ncu's view of one attention launch
# (a batch's, with STREAMS) at that length (its time, the L2 sectors it read, the DRAM's share; NCU_METRICS=a,b,... other
# metrics instead).
set -u
source bench/setting_args.sh
[ $# -eq 0 ] && set -- .gpucarry
DIRS=("$@")
export KVBENCH_CUDA_CACHE=/tmp/kc PYTHONUNBUFFERED=1
L=${LENGTHS:-512,1024,2048,4096,8192,16384,32768,65536,131072}
SA=(); BA=() # only where asked: builds from before --streams refuse it
[ "${STREAMS:-1}" != 1 ] && SA=(--streams "$STREAMS") BA=(--batch "$STREAMS")
[ "${B2B:-1}" != 1 ] && SA+=(--back-to-back "$B2B")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# line prints a run's medians (tokens=us; "(min M)" after one more than 10 %
# above its run's best: a spread of two kinds of steps, as a batch's
# uploaded metadata gave) and, for kvbench, the registers and
# local bytes of its tensor-core decode kernel for groups of 4 (a setting
# that changes them may change the blocks a multiprocessor holds, and so
# the chunks).
# With PLANS=1 (kvbench kernels -v) each kvbench cell also shows its plan on
# this device: [chunks a row, merge, blocks a multiprocessor, the kernel's
# registers], e.g. 511=7.7[8c polled 6/SM 128r].
line() { awk -v t="$1" -v off="${2:-0}" '
	function field(k) { return match($0, k ":[^ }]*") ? substr($0, RSTART + length(k) + 1, RLENGTH - length(k) - 1) : "" }
	$1 == "#" && $2 ~ /^attn_rt.*:$/ && $4 == "registers," {regs[substr($2, 1, length($2) - 1)] = $3}
	$1 == "#" && /\{Kernel:/ {k = field("Kernel"); p = "[" int(field("Blocks") / field("Rows")) "c " field("Merge") " " field("Resident") "/SM " regs[k] "r]"}
	$1 ~ /^(kvbench|sdpa)$/ && $4 ~ /^[0-9]+$/ {s = s " " ($4 - off) "=" $5; if ($6 + 0 > 0 && $5 > 1.1 * $6) s = s "(min " $6 ")"; if ($1 == "kvbench") s = s p; p = ""}
	$1 == "#" && $2 ~ /^attn_rt_d[0-9]+_g4_bf16_tc:$/ {r = " [tc: " $3 " regs, " $5 " B local]"}
	END {print t ":" s r}'; }
# sdpa LENGTHS runs bench/sdpa.py for the shape in h and d.
sdpa() { timeout 120 python3 bench/sdpa.py --heads $h --dim $d --backends default --iters ${ITERS:-200} --lengths "$1" "${BA[@]}" 2>&1; }
for sh in ${SHAPES:-32/8:128 32/16:128 32/32:128 32/8:64}; do
	h=${sh%%:*} d=${sh##*:}
	for C in "${DIRS[@]}"; do
		tag=""; [ ${#DIRS[@]} -gt 1 ] && tag="$(basename "$C") "
		for e in ${ENVS:-default KVBENCH_ATTN_SHORT=0}; do
			setting_args "$e"
			env "${ARGS[@]}" timeout 120 "$C/kvbench" kernels --policies ${POLICY:-full} --iters ${ITERS:-200} --check=false --lengths $L --heads $h --dim $d "${SA[@]}" ${PLANS:+-v} 2>&1 | line "$tag$h d$d $e"
			if [ -n "${NCU_LEN:-}" ]; then # one attention launch under ncu: its time, L2 sectors read, DRAM share
				env "${ARGS[@]}" timeout 120 ncu --profile-from-start on -k regex:'^attn_rtb?_d' --launch-skip 2 --launch-count 1 \
					--metrics "${NCU_METRICS:-gpu__time_duration.sum,lts__t_sectors_srcunit_tex_op_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed}" \
					"$C/kvbench" kernels --policies ${POLICY:-full} --iters 3 --check=false --lengths $NCU_LEN --heads $h --dim $d "${SA[@]}" 2>&1 |
					awk -v t="$tag$h d$d $e ncu $NCU_LEN" '/^  attn_rtb?_d/ {k = $1} $1 ~ /^[a-z0-9]+__[a-z0-9_.]+$/ && NF >= 2 {s = s " " $1 "=" $NF} END {print t ": " k s}'
			fi
		done
	done
	sdpa "$L" | line "$h d$d sdpa"
	# kvbench's step at length L attends L+1 keys (the prompt's and the new
	# token's); SDPA over L+1 keys, each shown under L, is the same work
	# (SDPA_SAME=0: not timed).
	[ "${SDPA_SAME:-1}" = 1 ] && sdpa "$(echo "$L" | tr ',' '\n' | awk '{print $1 + 1}' | paste -sd,)" | line "$h d$d sdpa L+1 keys" 1
done
