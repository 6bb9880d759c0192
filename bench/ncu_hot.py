#!/usr/bin/env python3
"""Where a kernel's time goes, from ncu's source counters at the SASS level.

On the GPU machine, profile with the source counters and export the source
page as CSV:

    ncu --profile-from-start on -k regex:NAME --launch-count 1 --import-source yes \
        --section SourceCounters --section WarpStateStats -o OUT kvbench kernels ...
    ncu -i OUT.ncu-rep --page source --csv --print-source sass > OUT.csv

then, here or there:

    python3 bench/ncu_hot.py OUT.csv [--kernel NAME] [--top 20] [--region 24]

For each kernel (its first launch in the file): the stall samples and warp
instructions in all, the stall reasons summed, the instructions with the most
samples (each with its two largest reasons and its execution count), and with
--region N the code in runs of N instructions (samples, the most executions
of one instruction, and the barriers, atomics, shuffles and memory
operations in the run): which phase of the kernel holds the samples.
"""
import argparse
import collections
import csv
import sys

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"
NOTABLE = ("BAR", "ATOMS", "ATOMG", "RED", "LDG", "STG", "LD", "ST", "LDS", "STS", "SHFL", "VOTE", "MATCH",
           "MEMBAR", "CCTL", "F2F", "DFMA", "DADD", "DMUL", "EXIT")


def kernels(path):
    """Yields (kernel name, header, rows) for each kernel's first launch."""
    name, header, rows, seen, done = None, None, [], set(), set()
    with open(path, newline="") as f:
        for r in csv.reader(f):
            if len(r) >= 2 and r[0] == "Kernel Name":
                if name is not None and rows and name not in done:
                    done.add(name)
                    yield name, header, rows
                name, header, rows, seen = r[1], None, [], set()
                continue
            if r and r[0] == "Address":
                header = r
                continue
            if header is None or name is None or len(r) != len(header):
                continue
            x = dict(zip(header, r))
            if x["Address"] in seen:  # a second launch's copy of the same code
                continue
            seen.add(x["Address"])
            rows.append(x)
    if name is not None and rows and name not in done:
        yield name, header, rows


def num(x, key):
    v = x.get(key, "") or "0"
    try:
        return int(float(v))
    except ValueError:
        return 0


def opcode(src):
    w = src.split()
    if w and w[0].startswith("@"):
        w = w[1:]
    return w[0] if w else ""


def report(name, header, rows, top, region, out):
    stalls = [c for c in header if c.startswith("stall_") and "Not Issued" not in c]
    total = sum(num(x, SAMPLES) for x in rows)
    insts = sum(num(x, EXECUTED) for x in rows)
    out.write(f"== {name}: {len(rows)} instructions, {total} stall samples, {insts} warp instructions executed\n")
    agg = collections.Counter()
    for x in rows:
        for c in stalls:
            agg[c[6:]] += num(x, c)
    out.write("   reasons: " + ", ".join(f"{k} {v}" for k, v in agg.most_common(8) if v) + "\n")
    for i, x in sorted(enumerate(rows), key=lambda p: -num(p[1], SAMPLES))[:top]:
        if num(x, SAMPLES) == 0:
            break
        why = sorted(((num(x, c), c[6:]) for c in stalls), reverse=True)[:2]
        reasons = " ".join(f"{c} {n}" for n, c in why if n)
        out.write(f"   #{i:<5d} {num(x, SAMPLES):5d} samples  {num(x, EXECUTED):7d} executed  {x['Source'].strip()[:56]:56s}  {reasons}\n")
    if region > 0:
        out.write(f"   by runs of {region} instructions:\n")
        for i in range(0, len(rows), region):
            run = rows[i:i + region]
            s = sum(num(x, SAMPLES) for x in run)
            ex = max(num(x, EXECUTED) for x in run)
            if s == 0 and ex == 0:
                continue
            ops = sorted({opcode(x["Source"]) for x in run if opcode(x["Source"]).split(".")[0] in NOTABLE})
            out.write(f"   #{i:<5d} {s:5d} samples  {ex:7d} executed at most  {' '.join(ops)}\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("csv", help="ncu -i REPORT --page source --csv --print-source sass > CSV")
    p.add_argument("--kernel", default="", help="only kernels whose name contains this")
    p.add_argument("--top", type=int, default=20, help="instructions with the most samples to list")
    p.add_argument("--region", type=int, default=0, help="also sum the code in runs of this many instructions")
    a = p.parse_args()
    found = False
    for name, header, rows in kernels(a.csv):
        if a.kernel in name:
            found = True
            report(name, header, rows, a.top, a.region, sys.stdout)
    if not found:
        sys.exit(f"ncu_hot: no kernel{' named like ' + repr(a.kernel) if a.kernel else ''} with source rows in {a.csv}")


if __name__ == "__main__":
    main()
