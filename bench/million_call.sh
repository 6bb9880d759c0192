#!/usr/bin/env bash
# A million tokens per policy on the GPU machine (issue 15): configs/million.yaml
# (kvbench-ref-13m, 7 policies, the four held-out novels, 16 streams of 16,384
# tokens a cell), one kvbench process per policy side by side on the one GPU
# (the 13M model leaves the device mostly idle: a step is host work), and
# resumable across device calls. Build here and carry the folder ($C):
#   mkdir -p C/shared/models C/shared/data/gutenberg
#   CGO_ENABLED=0 go build -ldflags="-s -w" -o C/kvbench ./cmd/kvbench
#   cp -r ../shared/models/kvbench-ref-13m C/shared/models/
#   cp ../shared/data/gutenberg/{Moby-Dick--Or-The-Whale_2701,Dracula_345,Pride-and-Prejudice_1342,A-Tale-of-Two-Cities_98}.txt C/shared/data/gutenberg/
# and, to resume, an earlier call's million-out.tgz (from $OUT) extracted in C. Then,
# from the repository root there:
#   C=folder bash bench/million_call.sh      (LIMIT=seconds, default 540;
#   PROCS=GOMAXPROCS of each process, default 2; KVBENCH=binary)
# Each policy's records (out/pN) and the merged report (out/all) come back in
# $OUT/million-out.tgz. A cell cut by the limit is run again by the next call.
set -u
C=${C:-.millioncarry}; case $C in /*) ;; *) C=$PWD/$C ;; esac; K=${KVBENCH:-$C/kvbench}
export KVBENCH_CUDA_CACHE=/tmp/kc KVBENCH_SHARED=$C/shared
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
S=${SUITE:-configs/million.yaml}; T0=$(date +%s)
# one suite per policy: every line of the suite but the other policies' lines
mapfile -t POL < <(sed -n '/^policies:/,/^tasks:/p' $S | grep '^  - ')
i=0; for pol in "${POL[@]}"; do
	i=$((i + 1)); mkdir -p $C/out/p$i
	awk -v keep="$pol" '/^policies:/{inp=1; print; next} /^tasks:/{inp=0} inp && /^  - / && $0 != keep {next} {print}' $S > /tmp/million-p$i.yaml
	(GOMAXPROCS=${PROCS:-2} timeout ${LIMIT:-540} $K run /tmp/million-p$i.yaml --out $C/out/p$i --quiet > $C/out/p$i/log 2>&1
	 echo "p$i ($pol): rc $? after $(( $(date +%s) - T0 ))s") &
done
wait
mkdir -p $C/out/all; : > $C/out/all/results.jsonl
for d in $C/out/p*; do
	cat $d/results.jsonl >> $C/out/all/results.jsonl 2>/dev/null; tail -2 $d/log
done
$K report $C/out/all > /dev/null 2>&1
# one file back (a call returns 8 at most): extract it in C to resume
(cd $C && tar -czf "$OUT/million-out.tgz" out/p*/results.jsonl out/p*/manifest.json out/p*/log out/all/report.md out/all/*.svg out/all/*.csv 2>/dev/null)
python3 - "$C/out/all/results.jsonl" <<'PY'
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
