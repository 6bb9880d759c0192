#!/usr/bin/env bash
# A million tokens per policy on the GPU machine (issue 15): configs/million.yaml
# (kvbench-ref-13m, 7 policies, the four held-out novels, 16 streams of 16,384
# tokens a cell), resumable across device calls. Build here and carry
# .millioncarry:
#   mkdir -p .millioncarry/shared/models .millioncarry/shared/data/gutenberg
#   CGO_ENABLED=0 go build -ldflags="-s -w" -o .millioncarry/kvbench ./cmd/kvbench
#   cp -r ../shared/models/kvbench-ref-13m .millioncarry/shared/models/
#   cp ../shared/data/gutenberg/{Moby-Dick--Or-The-Whale_2701,Dracula_345,Pride-and-Prejudice_1342,A-Tale-of-Two-Cities_98}.txt .millioncarry/shared/data/gutenberg/
# and, to resume, an earlier call's results.jsonl and manifest.json (from $OUT)
# in .millioncarry/out. Then, from the repository root there:
#   bash bench/million_call.sh      (LIMIT=seconds, default 540)
# The records and the report come back in $OUT; a cell cut by the limit is
# run again by the next call.
set -u
C=${CARRY:-.millioncarry}
export KVBENCH_CUDA_CACHE=/tmp/kc KVBENCH_SHARED=$PWD/$C/shared
mkdir -p $C/out
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout ${LIMIT:-540} $C/kvbench run configs/million.yaml --out $C/out --quiet 2>&1 | tail -3
echo "run: rc $?"
cp $C/out/results.jsonl $C/out/manifest.json "$OUT"/ 2>/dev/null
$C/kvbench report $C/out > /dev/null 2>&1 && cp $C/out/report.md "$OUT"/ 2>/dev/null
python3 - "$C/out/results.jsonl" <<'PY'
import json, sys
from datetime import datetime as D
t = lambda s: D.fromisoformat(s.replace('Z', '+00:00'))
print('| policy | text | status | seconds | tokens/min | ppl | KV max resident MB |')
print('|---|---|---|---:|---:|---:|---:|')
for l in open(sys.argv[1]):
    r = json.loads(l)
    p, m, meta = r['task_params'], r.get('metrics') or {}, r.get('meta') or {}
    sec = (t(meta['end']) - t(meta['start'])).total_seconds() if 'end' in meta else float('nan')
    toks = p.get('tokens', 0) * p.get('streams', 1)
    kv = (r.get('kv') or {}).get('max_resident_bytes', 0) / 1e6
    print('| %s %s | %s | %s | %.1f | %.0f | %s | %.1f |' % (r['policy'], r.get('policy_params') or '', str(p.get('text', '')).split('/')[-1][:24],
          r['status'], sec, toks / sec * 60 if sec > 0 else 0, round(m.get('ppl', float('nan')), 2), kv))
PY
