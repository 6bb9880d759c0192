#!/usr/bin/env bash
# A million tokens per policy on the GPU machine (issue 15): configs/million.yaml
# (kvbench-ref-13m, 7 policies, one cell each: 64 streams of 16,384 tokens over
# the four held-out novels), resumable across device calls. One process: kvbench
# processes side by side on one GPU time-slice it (seven of them ran a step in
# 23 ms where one takes a few). Build here and carry the folder C:
#   mkdir -p C/shared/models C/shared/data/gutenberg
#   CGO_ENABLED=0 go build -ldflags="-s -w" -o C/kvbench ./cmd/kvbench
#   cp -r ../shared/models/kvbench-ref-13m C/shared/models/
#   cp ../shared/data/gutenberg/{Moby-Dick--Or-The-Whale_2701,Dracula_345,Pride-and-Prejudice_1342,A-Tale-of-Two-Cities_98}.txt C/shared/data/gutenberg/
# (pack it as C/mc.txz to fit the carry) and, to resume, an earlier call's
# million-out.tgz (from $OUT) extracted in C. Then, from the repository root:
#   C=folder bash bench/million_call.sh      (LIMIT=seconds, default 540;
#   KVBENCH=binary, SUITE=another suite, PROFILE=1 a CPU profile, FORCE=1
#   to resume with records of an earlier binary)
# The records, the log and the report come back in $OUT/million-out.tgz. A
# cell cut by the limit is run again by the next call.
set -u
C=${C:-.millioncarry}; case $C in /*) ;; *) C=$PWD/$C ;; esac; K=${KVBENCH:-$C/kvbench}
export KVBENCH_CUDA_CACHE=/tmp/kc KVBENCH_SHARED=$C/shared
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
mkdir -p $C/out
# SIGINT at the limit: kvbench stops the cell, keeps the records and writes
# the CPU profile (PROFILE=1: out/cpu.pprof, read with go tool pprof).
prof=; [ "${PROFILE:-0}" = 1 ] && prof=$C/out/cpu.pprof
force=; [ "${FORCE:-0}" = 1 ] && force=--force-resume # keep records of another binary (the manifest notes it)
KVBENCH_CPUPROFILE=$prof timeout -s INT -k 30 ${LIMIT:-540} $K run ${SUITE:-configs/million.yaml} --out $C/out $force > $C/out/log 2>&1
echo "run: rc $?"; tail -4 $C/out/log
$K report $C/out > /dev/null 2>&1
# one file back (a call returns 8 at most): extract it in C to resume
(cd $C && tar -czf "$OUT/million-out.tgz" out/results.jsonl out/manifest.json out/log out/report.md out/*.svg out/*.csv out/cpu.pprof 2>/dev/null)
python3 - "$C/out/results.jsonl" <<'PY'
import json, sys
from datetime import datetime as D
t = lambda s: D.fromisoformat(s.replace('Z', '+00:00'))
print('| policy | status | seconds | tokens/min | ppl | KV max resident MB |')
print('|---|---|---:|---:|---:|---:|')
import os
for l in (open(sys.argv[1]) if os.path.exists(sys.argv[1]) else []):
    r = json.loads(l)
    p, m, meta = r['task_params'], r.get('metrics') or {}, r.get('meta') or {}
    sec = (t(meta['end']) - t(meta['start'])).total_seconds() if 'end' in meta else float('nan')
    toks = p.get('tokens', 0) * p.get('streams', 1)
    kv = (r.get('kv') or {}).get('max_resident_bytes', 0) / 1e6
    print('| %s %s | %s | %.1f | %.0f | %s | %.1f |' % (r['policy'], r.get('policy_params') or '',
          r['status'], sec, toks / sec * 60 if sec > 0 and r['status'] == 'ok' else 0, round(m.get('ppl', float('nan')), 2), kv))
PY
