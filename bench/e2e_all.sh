#!/usr/bin/env bash
# The one-call GPU measurement of docs/benchmarks.md (issue 14, "Last call of the day"):
# the runtime/cuda tests, prefill attention beside SDPA, then per shape (8B, 1B) a random-weight
# model made by bench/e2e.py, transformers timings, kvbench e2e (and with cuBLAS decode), and a
# passkey suite of three cells under KVBENCH_CPUPROFILE. Build here first (see bench/e2e.sh), carry
# .devcarry, and run from the repository root on the GPU machine; logs and profiles go to $OUT.
C=.devcarry; export KVBENCH_CUDA_CACHE=/tmp/kc PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s]"; }
(python3 bench/golden_arch.py /tmp/arch > $OUT/arch.log 2>&1 && tar -C /tmp -czf $OUT/arch.tgz arch && echo "arch goldens made") &
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
(cd runtime/cuda && KVBENCH_SHARED=$PWD/../../$C/shared timeout 200 ../../$C/cuda.test -test.count=1 -test.v 2>&1 > $OUT/cuda-test.log; grep -E "^(--- FAIL|FAIL|ok|PASS)|panic" $OUT/cuda-test.log | head; grep -E "bf16 vs float32|greedy|hd128_8x2_rows48|rows1_" $OUT/cuda-test.log | head)
(cd runtime/cuda && KVBENCH_FLASH_BENCH=4096,16384,32768 ../../$C/cuda.test -test.run TestFlashPrefillTiming -test.count=1 2>&1 | grep "^|")
python3 bench/e2e.py sdpa --lengths 4096,16384,32768 2>&1 | grep "^|"; el
pk() { cat > /tmp/pk-$1.yaml <<YAML
name: pk-$1
backend: cuda
kv_dtype: bf16
models: [{name: m, path: /tmp/m$1}]
policies: [full, {name: quest, budget: 1024, page: 16}, {name: streamingllm, sinks: 4, recent: 1020}]
tasks: [{name: passkey, lengths: [32768], depths: [0.5], trials: 2}]
YAML
KVBENCH_CPUPROFILE=$OUT/pk-$1.prof $C/kvbench run /tmp/pk-$1.yaml --out /tmp/pko-$1 --quiet 2>&1 | tail -1
python3 -c "
import json
from datetime import datetime as D
for l in open('/tmp/pko-$1/results.jsonl'):
    r=json.loads(l); t=lambda s: D.fromisoformat(s.replace('Z','+00:00'))
    print('| passkey cell', r['policy'], '|', r['status'], '|', round((t(r['meta']['end'])-t(r['meta']['start'])).total_seconds(),2), 's (2 trials) |', r.get('metrics'), r.get('error','')[:200])
"; }
for s in 8b 1b; do
python3 bench/e2e.py make --shape $s --out /tmp/m$s --tokenizer $C/tokenizer.model 2>&1 | tail -1; el
python3 bench/e2e.py time --model /tmp/m$s --lengths 4096,16384,32768 --decode 128 --passkey 32768 2>&1 | grep "^|\|^trans"; el
$C/kvbench e2e --model /tmp/m$s --backend cuda --lengths 4096,16384,32768 --decode 128 2>&1 | grep -E "^\||error|panic|memory"
KVBENCH_GEMM_MIN_ROWS=1 $C/kvbench e2e --model /tmp/m$s --backend cuda --lengths 4096 --nll=false --decode 128 2>&1 | grep -E "decode|error|panic" | sed 's/^/cuBLAS decode: /'
pk $s; el
done
wait; el
