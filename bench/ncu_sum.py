#!/usr/bin/env python3
"""Sums an ncu CSV (--metrics gpu__time_duration.sum --csv) by kernel.

Usage: python3 bench/ncu_sum.py ncu.csv [--per N]
Prints each kernel's launches, total and mean device time, its share, and the
total; --per N divides the totals by N (the layers, say, for a time a layer).
ncu's own lines before the CSV header (==PROF== ...) are skipped.
"""
import csv
import io
import signal
import sys
from collections import defaultdict


def main():
    args = sys.argv[1:]
    per = 1.0
    if '--per' in args:
        i = args.index('--per')
        per = float(args[i + 1])
        del args[i:i + 2]
    if len(args) != 1:
        sys.exit(__doc__)
    lines = open(args[0]).read().splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    if start is None:
        sys.exit('%s: no ncu CSV header ("ID", ...)' % args[0])
    rows = csv.DictReader(io.StringIO('\n'.join(lines[start:])))
    tot, cnt = defaultdict(float), defaultdict(int)
    for r in rows:
        if r.get('Metric Name') != 'gpu__time_duration.sum':
            continue
        v = float(r['Metric Value'].replace(',', ''))
        unit = r.get('Metric Unit', 'nsecond')
        ns = v * {'nsecond': 1, 'usecond': 1e3, 'msecond': 1e6, 'second': 1e9}.get(unit, 1)
        name = r['Kernel Name'].split('(')[0][:60]
        tot[name] += ns
        cnt[name] += 1
    all_ns = sum(tot.values())
    print('| kernel | launches | total us | mean us | share |')
    print('|---|---:|---:|---:|---:|')
    # The total first: callers keep the table's head (| head -14).
    print('| total | %g | %.1f | | |' % (sum(cnt.values()) / per, all_ns / 1e3 / per))
    for k in sorted(tot, key=tot.get, reverse=True):
        print('| %s | %g | %.1f | %.2f | %.1f %% |' % (k, cnt[k] / per, tot[k] / 1e3 / per, tot[k] / 1e3 / cnt[k], 100 * tot[k] / max(all_ns, 1)))


if __name__ == '__main__':
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # a reader that stops early (head) ends it quietly
    main()
