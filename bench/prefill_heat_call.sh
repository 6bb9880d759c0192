#!/usr/bin/env bash
# Where a 128K prefill's attention loses its speed (issue 14): inside a whole
# 8B prefill kvbench's flash_tma ran at 276 ms a layer (the kernel clock)
# against ~256 ms timed alone (TestFlashPrefillTiming), while cuDNN's was
# timed alone only (248). One device call, the SM clock and power sampled
# every 0.2 s throughout and averaged by phase:
#   1. TestFlashPrefillTiming at 131,072 tokens (kvbench's kernel alone);
#   2. bench/e2e.py sdpa at 131,072, cuDNN (SDPA's default) alone;
#   3. kvbench e2e, one pass of 131,072 rows, kernel clock on: the kernel
#      inside a prefill, one launch a layer;
#   4. bench/e2e.py time --profile 131072: cuDNN's attention inside
#      transformers' prefill (torch's profiler).
# Build here: PKGS="runtime/cuda" bash bench/pack_carry.sh, then from the
# repository root on the GPU machine (carry .gpucarry):
#   bash bench/prefill_heat_call.sh
# (the 8B model made in /tmp/m8b when absent; L=131072 by default).
set -u
source bench/unpack_carry.sh
export KVBENCH_CUDA_CACHE=/tmp/kc PYTHONUNBUFFERED=1
L=${L:-131072}
[ -f /tmp/m8b/config.json ] || timeout 200 python3 bench/e2e.py make --shape 8b --out /tmp/m8b --tokenizer $B/tokenizer.model > /tmp/mk.log 2>&1
smi=$OUT/smi.txt phases=$OUT/phases.txt
: > "$phases"
(while :; do echo "$(date +%s.%N) $(nvidia-smi --query-gpu=clocks.sm,power.draw,temperature.gpu --format=csv,noheader,nounits | tr -d ,)"; sleep 0.2; done) > "$smi" &
sampler=$!
phase() { echo "$1 $(date +%s.%N)" >> "$phases"; }
phase flash-alone
(cd runtime/cuda && KVBENCH_FLASH_BENCH=$L timeout 150 $B/runtime_cuda.test -test.run 'TestFlashPrefillTiming$' -test.v -test.count=1 2>&1 | grep -E "^\| 8B|FAIL|panic|error")
phase cudnn-alone
timeout 150 python3 bench/e2e.py sdpa --lengths $L --backends default 2>&1 | grep -E "^\| SDPA|Error"
phase flash-in-prefill
KVBENCH_KERNEL_TIMES=1 timeout 150 $B/kvbench e2e --model /tmp/m8b --backend cuda --lengths $L --chunk $L --nll=false --decode 0 2>&1 | grep -E "^\| (prefill|flash|cublas)|^kernels"
phase cudnn-in-prefill
timeout 200 python3 bench/e2e.py time --model /tmp/m8b --lengths $L --nll 0 --decode 0 --profile $L 2>&1 | grep -E "^\| HF prefill|^HF prefill|^  " | head -10
phase end
kill $sampler 2>/dev/null
# Mean SM clock (MHz), power (W) and the hottest temperature of each phase.
awk 'NR == FNR { name[NR] = $1; at[NR] = $2; n = NR; next }
	{ for (i = 1; i < n; i++) if ($1 >= at[i] && $1 < at[i + 1]) { c[i] += $2; p[i] += $3; if ($4 > t[i]) t[i] = $4; k[i]++ } }
	END { printf "| phase | samples | SM MHz | W | max C |\n|---|---:|---:|---:|---:|\n"
		for (i = 1; i < n; i++) if (k[i]) printf "| %s | %d | %.0f | %.0f | %d |\n", name[i], k[i], c[i] / k[i], p[i] / k[i], t[i] }' "$phases" "$smi"
