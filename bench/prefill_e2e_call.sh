#!/usr/bin/env bash
# One device call for issue 14's prefill: the prefill kernels checked and
# timed (bench/prefill_call.sh with TESTS, VARIANTS and LENGTHS as there),
# the fastest variant that passed its tests at d128 32K chosen, then the 8B
# shape end to end beside transformers with it (bench/e2e_call.sh with
# E2E_1B=0, E2E_STREAMS=0). Build here: the runtime/cuda test binary into
# .gpucarry (as bench/prefill_call.sh says) and kvbench with the Llama-2
# tokenizer.model into .e2ecarry/lean; carry both and run from the
# repository root: bash bench/prefill_e2e_call.sh 2>&1 | tee $OUT/all.log
set -u
bash bench/prefill_call.sh > $OUT/prefill.log 2>&1
grep -vE "entry function|ptxas  |Used " $OUT/prefill.log | tail -60
# The variants whose BF16-page tests all passed, the fastest of them at d128 32K.
best=$(python3 - $OUT/tests.log $OUT/prefill.log <<'PY'
import re, sys
tests, timing = open(sys.argv[1]).read(), open(sys.argv[2]).read()
bad = set(re.findall(r'--- FAIL: TestFlashPrefillBF16Pages/flash=(\w+)', tests))
t = {}
for v, ms in re.findall(r'^(\w+) \| 8B 32/8 d128 \| 32768 \| ([0-9.]+)', timing, re.M):
    if v not in bad and v.startswith('g'):
        t[v] = float(ms)
print(min(t, key=t.get) if t else '')
PY
)
echo "chosen: KVBENCH_FLASH=$best"
[ -n "$best" ] && export KVBENCH_FLASH=$best
CARRY=.e2ecarry/lean E2E_1B=0 E2E_STREAMS=0 bash bench/e2e_call.sh 2>&1
