#!/usr/bin/env bash
# The end-to-end measurement of one device call (issues 14 and 15): per shape a
# random-weight model made by bench/e2e.py, transformers beside kvbench (prefill,
# full-logit NLL, decode, host memory), the passkey cell at 32K under three
# policies, batched streams (kvbench streams) and the decode kernels. Build the
# binary here (CGO_ENABLED=0 go build -ldflags="-s -w" -o .e2ecarry/kvbench
# ./cmd/kvbench; cp the Llama-2 tokenizer.model beside it), carry .e2ecarry, and
# run from the repository root on the GPU machine: bash bench/e2e_call.sh. With
# the packed carry of bench/streams_call.sh (.e2ecarry/p.txz): mkdir -p /tmp/p &&
# tar -C /tmp/p -xJf .e2ecarry/p.txz && CARRY=/tmp/p bash bench/e2e_call.sh
set -u
C=${CARRY:-.e2ecarry}; K=$C/kvbench
export KVBENCH_CUDA_CACHE=/tmp/kc PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
# PROFILE=1: the batched streams runs write CPU profiles to $OUT/cpu-<shape>-<policy>.pprof.
# PK_PHASES=1: the streamingllm passkey cell once more, timed part by part (KVBENCH_PHASES).
# E2E_QWEN=1: Qwen2.5-7B's shape too (bench/e2e.py make --shape qwen7b), after the 8B's.
prof() { [ "${PROFILE:-0}" = 1 ] && echo "$OUT/cpu-$1.pprof"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
pk() { # shape: one passkey cell per policy at 32K, 2 trials, under the task's protocol (the last
# 100 prompt tokens fed one at a time: decode_tail 100) and as a prefill and 10 tokens (decode_tail 0);
# transformers' trials of both protocols are bench/e2e.py time --passkey's two rows.
for tail in 100 0; do
cat > /tmp/pk-$1-$tail.yaml <<YAML
name: pk-$1-$tail
backend: cuda
kv_dtype: bf16
models: [{name: m, path: /tmp/m$1}]
policies: [full, {name: quest, budget: 1024, page: 16}, {name: streamingllm, sinks: 4, recent: 1020}]
tasks: [{name: passkey, lengths: [32768], depths: [0.5], trials: 2, decode_tail: $tail}]
YAML
timeout 120 $K run /tmp/pk-$1-$tail.yaml --out /tmp/pko-$1-$tail --quiet 2>&1 | tail -1
python3 - "$1" $tail <<'PY'
import json, sys
from datetime import datetime as D
t = lambda s: D.fromisoformat(s.replace('Z', '+00:00'))
for l in open('/tmp/pko-%s-%s/results.jsonl' % (sys.argv[1], sys.argv[2])):
    r = json.loads(l); m = r.get('memory') or {}
    print('| passkey cell 32K, decode_tail', sys.argv[2], r['policy'], '|', r['status'], '|', round((t(r['meta']['end']) - t(r['meta']['start'])).total_seconds(), 2),
          's (2 trials) |', r.get('metrics'), '| host peak', m.get('host_peak_rss_bytes'), '| uploaded', m.get('weights_uploaded'), r.get('error', '')[:200])
PY
done
}
s=8b
timeout 150 python3 bench/e2e.py make --shape $s --out /tmp/m$s --tokenizer $C/tokenizer.model 2>&1 | tail -1; el make $s
timeout 150 python3 bench/e2e.py time --model /tmp/m$s --lengths 4096,16384,32768 --decode 64 --passkey 32768 --passkey-tail 100 2>&1 | grep "^|\|^trans"; el hf $s
timeout 120 $K e2e --model /tmp/m$s --backend cuda --lengths 4096,16384,32768 --decode 128 2>&1 | grep -E "^\||^model|error|panic|memory|host|weights"; el kvbench e2e $s
# DECODE_MIN_CHUNKS="32 64 128 256": decode after a 512-token prompt again per KVBENCH_ATTN_MIN_CHUNK
# (the least tokens a block of the split-KV decode attention takes; 32 by default).
for mc in ${DECODE_MIN_CHUNKS:-}; do
KVBENCH_ATTN_MIN_CHUNK=$mc timeout 60 $K e2e --model /tmp/m$s --backend cuda --lengths 4096 --decode 128 2>&1 | grep -E "^\| decode|error|panic" | sed "s/^/min chunk $mc /"; el kvbench decode min chunk $mc
done
# E2E_CHUNKS="4096 16384": the 32K prefill again with other prefill chunks (kvbench e2e's default is 8192,
# moved to the rows that fill the GPU's waves: its "model" line says which).
for ch in ${E2E_CHUNKS:-}; do
timeout 90 $K e2e --model /tmp/m$s --backend cuda --lengths 32768 --decode 0 --chunk $ch 2>&1 | grep -E "^\||error|panic" | sed "s/^/chunk $ch /"; el kvbench e2e chunk $ch
done
# 128K (issue 14): the prefill and the NLL pass alone, each side (set E2E_128K=0 to skip).
if [ "${E2E_128K:-1}" = 1 ]; then
timeout 150 python3 bench/e2e.py time --model /tmp/m$s --lengths 131072 --decode 0 2>&1 | grep "^|\|^trans"; el hf 128K $s
timeout 150 $K e2e --model /tmp/m$s --backend cuda --lengths 131072 --decode 0 2>&1 | grep -E "^\||error|panic|memory|host|weights"; el kvbench 128K $s
fi
pk $s; el passkey $s
# PK_PHASES=1: the streamingllm cell again with KVBENCH_PHASES (the host's wall time a pass, part by
# part, and the waits for the device: how much of the cell the device leaves to the host).
if [ "${PK_PHASES:-0}" = 1 ]; then
sed -e 's/^policies: .*/policies: [{name: streamingllm, sinks: 4, recent: 1020}]/' -e 's/^name: pk-/name: pkp-/' /tmp/pk-$s.yaml > /tmp/pkp-$s.yaml
KVBENCH_PHASES=1 timeout 120 $K run /tmp/pkp-$s.yaml --out /tmp/pkpo-$s --quiet > $OUT/phases-$s.txt 2>&1
tail -40 $OUT/phases-$s.txt; el passkey phases $s
fi
if [ "${E2E_STREAMS:-1}" = 1 ]; then # E2E_STREAMS=0 skips the batched streams
KVBENCH_CPUPROFILE=$(prof $s-streamingllm) timeout 90 $K streams --model /tmp/m$s --backend cuda --streams 64 --policy streamingllm --param sinks=4 --budget 1024 --prompt 1024 --tokens 64 --alone 2 2>&1 | grep -v "^$" | tail -12; el streams $s
fi
rm -rf /tmp/m8b
# E2E_QWEN=1: Qwen2.5-7B's shape (q/k/v biases, 28 heads over 4): transformers beside kvbench.
if [ "${E2E_QWEN:-0}" = 1 ]; then
s=qwen7b
timeout 150 python3 bench/e2e.py make --shape $s --out /tmp/m$s --tokenizer $C/tokenizer.model 2>&1 | tail -1; el make $s
timeout 150 python3 bench/e2e.py time --model /tmp/m$s --lengths 4096,16384,32768 --decode 64 2>&1 | grep "^|\|^trans"; el hf $s
timeout 120 $K e2e --model /tmp/m$s --backend cuda --lengths 4096,16384,32768 --decode 128 2>&1 | grep -E "^\||^model|error|panic|memory|host|weights"; el kvbench e2e $s
rm -rf /tmp/m$s
fi
# E2E_1B=0 stops here: the 1B shape, the decode kernels and SDPA are skipped.
[ "${E2E_1B:-1}" = 1 ] || exit 0
s=1b
timeout 60 python3 bench/e2e.py make --shape $s --out /tmp/m$s --tokenizer $C/tokenizer.model 2>&1 | tail -1; el make $s
timeout 90 python3 bench/e2e.py time --model /tmp/m$s --lengths 4096,16384,32768 --decode 64 2>&1 | grep "^|\|^trans"; el hf $s
timeout 60 $K e2e --model /tmp/m$s --backend cuda --lengths 4096,16384,32768 --decode 128 2>&1 | grep -E "^\||^model|error|panic|memory|host|weights"; el kvbench e2e $s
if [ "${E2E_STREAMS:-1}" = 1 ]; then
for p in streamingllm window; do
KVBENCH_CPUPROFILE=$(prof $s-$p) timeout 60 $K streams --model /tmp/m$s --backend cuda --streams 64 --policy $p --budget 1024 --prompt 1024 --tokens 128 --alone 2 2>&1 | grep -v "^$" | tail -10; el streams $s $p
done
fi
# Decode attention of the runtime beside SDPA's, short contexts to long.
timeout 90 $K kernels --lengths 512,2048,4096,8192,32768,131072 --policies full,quest 2>&1 | grep -E "^#|^kvbench|^impl"; el kernels
timeout 60 python3 bench/sdpa.py --heads 32/8 --lengths 512,2048,4096,8192,32768,131072 --backends default --iters 100 2>&1 | grep -E "^sdpa|copy"; el sdpa
