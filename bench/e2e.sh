#!/usr/bin/env bash
# End-to-end and prefill-attention timings of kvbench beside transformers and
# SDPA, in one call on the GPU machine. Build here first (no Go there):
#   CGO_ENABLED=0 go build -o .devcarry/kvbench ./cmd/kvbench
#   CGO_ENABLED=0 go test -c -o .devcarry/cuda.test ./runtime/cuda
#   cp ../shared/models/kvbench-ref-13m/tokenizer.model .devcarry/
# then run with .devcarry carried:  bash bench/e2e.sh STAGES
# STAGES (comma-separated): test, attn, 1b, 8b, passkey8b. Logs go to $OUT.
set -uo pipefail
stages=",${1:-test,attn,1b},"
C=${CARRY:-.devcarry}
OUT=${OUT:-/tmp/e2e-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 KVBENCH_CUDA_CACHE=/tmp/kvbench-cuda-cache
L=${LENGTHS:-4096,16384,32768}
has() { [[ $stages == *",$1,"* ]]; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
if has test; then
	echo "== runtime/cuda tests"
	(cd runtime/cuda && KVBENCH_SHARED=$PWD/../../$C/shared timeout 300 ../../$C/cuda.test -test.count=1 -test.timeout 290s \
		-test.run "${TESTS:-.}" 2>&1 | tee "$OUT/cuda-test.log" | grep -E "^(=== RUN|--- FAIL|FAIL|ok|PASS)|flash|bf16|differ|panic" | grep -v "^=== RUN" | head -60)
fi
if has attn; then
	echo "== prefill attention: kvbench (flash_prefill) and SDPA (flash)"
	for v in ${FLASH_VARIANTS:-w4m2n64}; do
		echo "KVBENCH_FLASH=$v"
		(cd runtime/cuda && KVBENCH_FLASH=$v KVBENCH_FLASH_BENCH=$L ../../$C/cuda.test -test.run TestFlashPrefillTiming -test.count=1 2>&1 | grep "^|")
	done
	python3 bench/e2e.py sdpa --lengths "$L" 2>&1 | grep -v Warning
fi
for shape in 1b 8b; do
	has $shape || continue
	d=/tmp/model-$shape
	[ -d $d ] || python3 bench/e2e.py make --shape $shape --out $d --tokenizer $C/tokenizer.model 2>&1 | tail -1
	echo "== $shape: transformers"
	python3 bench/e2e.py time --model $d --lengths "$L" --decode 128 --passkey ${PASSKEY:-0} 2>&1 | grep -v -i warn | tail -12
	echo "== $shape: kvbench"
	/usr/bin/time -f "kvbench e2e: %e s wall, %M KB max RSS" $C/kvbench e2e --model $d --backend cuda --lengths "$L" --decode 128 2>&1 | tail -14
	if [ "${PASSKEY:-0}" -gt 0 ]; then
		echo "== $shape: kvbench passkey cells at $PASSKEY tokens (one trial each)"
		cat >/tmp/pk-$shape.yaml <<YAML
name: e2e-passkey-$shape
backend: cuda
kv_dtype: bf16
models: [{name: $shape, path: $d}]
policies:
  - full
  - {name: quest, budget: 1024, page: 16}
  - {name: streamingllm, sinks: 4, recent: 1020}
tasks:
  - {name: passkey, lengths: [$PASSKEY], depths: [0.5], trials: 1}
YAML
		rm -rf /tmp/pk-out-$shape
		$C/kvbench run /tmp/pk-$shape.yaml --out /tmp/pk-out-$shape --quiet 2>&1 | tail -3
		python3 - /tmp/pk-out-$shape/results.jsonl <<'PY'
import json, sys
from datetime import datetime
for line in open(sys.argv[1]):
    r = json.loads(line)
    t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
    el = (t(r["meta"]["end"]) - t(r["meta"]["start"])).total_seconds()
    print(f'| passkey cell {r["policy"]} {r.get("policy_params") or ""} | {r["status"]} | {el:.2f} s | {r.get("error", "")[:200]}')
PY
	fi
done
