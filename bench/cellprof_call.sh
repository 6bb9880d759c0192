#!/usr/bin/env bash
# Where an evicting policy's passkey cell spends its time past full
# attention's (issue 14, sixty-first session: SnapKV's 32K cell of the 1B
# shape 3.64 s, H2O's 3.03, TOVA's 1.88, full's 0.88, its prompt chunks
# only 0.15-0.4 s of that), in one device call: the GPU tests of the
# acc tail, acc_cols and attendRows (a deferring pass's views, sixty-second
# session), TestKernelsCommand, the policies' GPU tests and
# TestPasskeyAnswersBF16 (H2O's prompt chunks now late: the same answers as
# the CPU), then the 1B shape's 32K cell under full, SnapKV, TOVA and H2O
# (budget 1,024, two trials; each evicting one also with its hooks at their
# layer, KVBENCH_LAG_HOOKS=off, and H2O with KVBENCH_LATE_PROMPT=off too) with
# KVBENCH_PHASES=device (each pass part's time on the host and on the
# device: where the device waits) and KVBENCH_CPUPROFILE ($OUT/NAME.prof;
# read here with go tool pprof); then H2O's prompt chunk under acc_cols's
# two variants (KVBENCH_ACC_COLS_MT).
# Pack here:
#   PKGS="runtime/cuda cmd/kvbench policies bench" bash bench/pack_carry.sh
# carry .gpucarry/gpubin.txz and .gpucarry/shared.txz, and run from the
# repository root on the GPU machine: bash bench/cellprof_call.sh
source bench/unpack_carry.sh
exec > >(tee $OUT/log) 2>&1
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
stamp tests
(cd runtime/cuda && timeout 180 $B/runtime_cuda.test -test.count=1 -test.v -test.run 'AccCols|AccTail|AttendRows|AttendKernelChoice|PoliciesSplitKernels|TestCompileKernels' > $OUT/cuda.log 2>&1; echo "rc $?"); sm $OUT/cuda.log
(cd cmd/kvbench && timeout 150 $B/cmd_kvbench.test -test.count=1 -test.v -test.run 'TestKernelsCommand' > $OUT/cmd.log 2>&1; echo "rc $?"); sm $OUT/cmd.log
(cd policies && timeout 100 $B/policies.test -test.count=1 -test.v -test.run 'GPU' > $OUT/pol.log 2>&1; echo "rc $?"); sm $OUT/pol.log
(cd bench && timeout 120 $B/bench.test -test.count=1 -test.v -test.run 'TestPasskeyAnswersBF16' > $OUT/bench.log 2>&1; echo "rc $?"); sm $OUT/bench.log; grep -E "accuracy" $OUT/bench.log | cut -c1-160
stamp "make 1b"
timeout 60 python3 bench/e2e.py make --shape 1b --out /tmp/m1b --tokenizer $B/tokenizer.model 2>&1 | tail -1
KVBENCH_ACC_TAIL=on timeout 100 $B/kvbench e2e --model /tmp/m1b --backend cuda --lengths 4096 --decode 0 2>&1 | tail -1
# TAG|ENV|POLICY: each cell alone in a process of its own (its time includes
# the model's load and upload: full's cell is the reference for that),
# two trials, so that a variant's switch applies to it alone.
while IFS='|' read -r name envs p; do
out=/tmp/prof-$name
cat > /tmp/prof-$name.yaml <<YAML
name: prof-$name
backend: cuda
kv_dtype: bf16
models: [{name: m, path: /tmp/m1b}]
policies: [$p]
tasks: [{name: passkey, lengths: [32768], depths: [0.5], trials: 2, decode_tail: 0}]
YAML
stamp "cell $name ($envs)"
env $envs KVBENCH_PHASES=device KVBENCH_CPUPROFILE=$OUT/$name.prof timeout 120 $B/kvbench run /tmp/prof-$name.yaml --out $out --quiet < /dev/null > $OUT/$name.phases 2>&1
tail -40 $OUT/$name.phases | cut -c1-160
python3 - $out <<'PY'
import json, sys
from datetime import datetime as D
t = lambda s: D.fromisoformat(s.replace('Z', '+00:00'))
for l in open(sys.argv[1] + "/results.jsonl"):
    r = json.loads(l)
    print('| cell', r['policy'], '|', r['status'], '|', round((t(r['meta']['end']) - t(r['meta']['start'])).total_seconds(), 2), 's |', {k: v for k, v in r.items() if k in ('timing', 'latency')})
PY
done <<'CELLS'
full||full
snapkv||{name: snapkv, budget: 1024}
snapkv-lagoff|KVBENCH_LAG_HOOKS=off|{name: snapkv, budget: 1024}
tova||{name: tova, budget: 1024}
tova-lagoff|KVBENCH_LAG_HOOKS=off|{name: tova, budget: 1024}
h2o||{name: h2o, budget: 1024}
h2o-old|KVBENCH_LATE_PROMPT=off KVBENCH_LAG_HOOKS=off|{name: h2o, budget: 1024}
CELLS
stamp "acc_cols variants (kvbench kernels --rows 8192, H2O)"
for mt in 1 2; do for d in 128; do
KVBENCH_ACC_COLS_MT=$mt timeout 60 $B/kvbench kernels --rows 8192 --lengths 8192,32768 --heads 32/8 --dim $d --policies full,h2o --budget 1024 --iters 10 2>&1 | grep "^kvbench" | sed "s/^/MT=$mt d=$d /"
done; done
stamp done
