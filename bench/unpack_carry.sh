# Sourced at the start of a device call's script (bench/pack_carry.sh packed
# .gpucarry): unpacks the binaries into $B (/tmp/gpubin), the variants into
# .gpucarry/b and the fixtures into .gpucarry/shared, and sets the
# environment kvbench's GPU runs and tests expect; stamp NAME prints a
# part's heading with the seconds since then and the time of day; sm LOG
# sums up a test log;
# setting_args (bench/setting_args.sh) turns a setting into env's words.
B=/tmp/gpubin
mkdir -p $B
tar -C $B -xJf .gpucarry/gpubin.txz
[ -f .gpucarry/b.txz ] && tar -C .gpucarry -xJf .gpucarry/b.txz
[ -f .gpucarry/shared.txz ] && tar -C .gpucarry -xJf .gpucarry/shared.txz
export KVBENCH_CUDA_CACHE=/tmp/kc PYTHONUNBUFFERED=1 KVBENCH_SHARED=$PWD/.gpucarry/shared
t0=$(date +%s)
stamp() { echo "## $1 ($(($(date +%s) - t0)) s, $(date -u +%H:%M:%S) UTC)"; }
# sm LOG sums up a test binary's -test.v log: its results counted, then the
# failures and panics with their lines around.
sm() { grep -E "^--- (FAIL|PASS|SKIP)|^(FAIL|ok|PASS)$|^panic" $1 | awk '{print $1,$2}' | sort | uniq -c; grep -B3 -A12 -- "--- FAIL\|^panic" $1 | head -40; }
source bench/setting_args.sh
