#!/usr/bin/env bash
# The prompt calls whose last rows alone accumulate (SnapKV's and
# PyramidKV's observation window, TOVA's last row; issue 14, fifty-ninth
# session) in one device call: their GPU tests, then passkey cells with
# KVBENCH_ACC_TAIL=off and on from one binary (time, KV held, the device's
# KV and peak memory), the 1B shape at 8K and 32K, H2O's cells at 8K and
# 32K with KVBENCH_ACC_COLS=on and off (every row accumulates: the prefill
# and acc_cols, sixty-first session), the prompt's last chunk of 8192 rows
# per policy (kvbench kernels --rows) beside SDPA's (bench/sdpa.py --rows),
# on an H200 item 6's decode table,
# then, if under 330 s have passed, the 8B shape at 32K beside transformers'
# passkey trial. Pack here:
#   PKGS="runtime/cuda policies bench cmd/kvbench" bash bench/pack_carry.sh
# carry .gpucarry/gpubin.txz and .gpucarry/shared.txz, and run from the
# repository root on the GPU machine: bash bench/acctail_call.sh
source bench/unpack_carry.sh
exec > >(tee $OUT/log) 2>&1
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
stamp tests
(cd runtime/cuda && timeout 150 $B/runtime_cuda.test -test.count=1 -test.v -test.run 'AccTail|AccCols|AttendRows|AttendKernelChoice|PoliciesSplitKernels|TestCompileKernels' > $OUT/cuda.log 2>&1; echo "rc $?"); sm $OUT/cuda.log
(cd policies && timeout 120 $B/policies.test -test.count=1 -test.v -test.run 'GPU' > $OUT/pol.log 2>&1; echo "rc $?"); sm $OUT/pol.log
(cd cmd/kvbench && timeout 150 $B/cmd_kvbench.test -test.count=1 -test.v -test.run 'TestKernelsCommand' > $OUT/cmd.log 2>&1; echo "rc $?"); sm $OUT/cmd.log; grep -A12 "rows 300" $OUT/cmd.log | grep "kvbench \|impl" | cut -c1-150
(cd bench && timeout 150 $B/bench.test -test.count=1 -test.v -test.run "TestPasskeyAnswersBF16" > $OUT/bench.log 2>&1; echo "rc $?"); sm $OUT/bench.log; grep -E "accuracy" $OUT/bench.log | cut -c1-160
cells() { # shape lengths policies trials [variants]; the switch in $VAR (KVBENCH_ACC_TAIL)
VAR=${VAR:-KVBENCH_ACC_TAIL}
for v in ${5:-off on}; do
out=/tmp/pko-$1-$v-$RANDOM
cat > /tmp/pk-$1-$v.yaml <<YAML
name: pk-$1-$v
backend: cuda
kv_dtype: bf16
models: [{name: m, path: /tmp/m$1}]
policies: [$3]
tasks: [{name: passkey, lengths: [$2], depths: [0.5], trials: $4, decode_tail: 0}]
YAML
stamp "passkey $1 $VAR=$v"
env $VAR=$v timeout 150 $B/kvbench run /tmp/pk-$1-$v.yaml --out $out --quiet 2>&1 | tail -1
python3 - $1 $v $out $VAR <<'PY'
import json, sys
from datetime import datetime as D
t = lambda s: D.fromisoformat(s.replace('Z', '+00:00'))
for l in open(sys.argv[3] + "/results.jsonl"):
    r = json.loads(l); m = r.get('memory') or {}; kv = r.get('kv') or {}
    print('|', sys.argv[1], '|', sys.argv[4], sys.argv[2], '|', r['policy'], '|', r.get('task_params', {}).get('lengths'), '|', r['status'], '|', round((t(r['meta']['end']) - t(r['meta']['start'])).total_seconds(), 2),
          's |', r.get('metrics'), '| KV', round(kv.get('max_resident_bytes', 0)/2**20, 1), 'MiB | device KV', round(m.get('kv_bytes', 0)/2**20, 1), 'MiB | device peak', round(m.get('peak_bytes', 0)/2**30, 2), 'GiB |', r.get('error', '')[:100])
PY
done
}
stamp "make 1b"
timeout 60 python3 bench/e2e.py make --shape 1b --out /tmp/m1b --tokenizer $B/tokenizer.model 2>&1 | tail -1
# warm the kernel cache (first cell compiles)
KVBENCH_ACC_TAIL=on timeout 100 $B/kvbench e2e --model /tmp/m1b --backend cuda --lengths 4096 --decode 0 2>&1 | tail -2
cells 1b "8192, 32768" "full, {name: snapkv, budget: 1024}, {name: pyramidkv, budget: 1024}, {name: tova, budget: 1024}" 2
VAR=KVBENCH_ACC_COLS cells 1b "8192" "{name: h2o, budget: 1024}" 2 "on off"
VAR=KVBENCH_ACC_COLS cells 1b "32768" "{name: h2o, budget: 1024}" 1 "on off"
stamp "prompt chunks (kvbench kernels --rows 8192 beside sdpa.py --rows 8192)"
for d in 64 128; do
timeout 150 $B/kvbench kernels --rows 8192 --lengths 8192,32768 --heads 32/8 --dim $d --policies full,snapkv,tova,h2o --budget 1024 --iters 20 2>&1 | grep -v "registers\|^# kernels"
timeout 100 python3 bench/sdpa.py --rows 8192 --lengths 8192,32768 --heads 32/8 --dim $d --iters 20 --backends default,flash 2>&1 | grep -v "^# device"
done
KVBENCH_ACC_COLS=off timeout 100 $B/kvbench kernels --rows 8192 --lengths 8192,32768 --heads 32/8 --dim 128 --policies h2o --budget 1024 --iters 5 2>&1 | grep -v "registers\|^# kernels" | sed 's/^/ACC_COLS=off /'
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
stamp table
SHAPES="32/8:128 32/32:64 32/8:64 32/32:128" LENGTHS=255,511,1023,2047,32767 ENVS="default" ITERS=200 PLANS=1 timeout 150 bash bench/decode_attn_call.sh $B
fi
if [ $(($(date +%s) - t0)) -lt 330 ]; then
stamp "make 8b"
timeout 200 python3 bench/e2e.py make --shape 8b --out /tmp/m8b --tokenizer $B/tokenizer.model 2>&1 | tail -1
stamp "hf 8b"
timeout 120 python3 bench/e2e.py time --model /tmp/m8b --lengths 32768 --nll 0 --decode 0 --passkey 32768 --passkey-tail 0 2>&1 | grep "^|\|^trans"
cells 8b "32768" "full, {name: snapkv, budget: 1024}, {name: tova, budget: 1024}" 2
fi
stamp done
