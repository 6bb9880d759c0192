#!/usr/bin/env bash
# Batch-step throughput on the GPU machine in one device call (issue 15),
# with each step's parts (KVBENCH_PHASES): kvbench streams, 64 streams of
# 1,024-token prompts under a budget of 1,024, for the 1B and 8B shapes made
# by bench/e2e.py; then an 8B prefill and decode part by part (kvbench e2e),
# the GPU tests of the batched paths, and the decode attention on pages of
# KV_PAGES slots beside SDPA. Build here: kvbench and the test binaries of
# policies and tasks (go test -c), with the Llama-2 tokenizer.model and
# shared/models/{kvbench-ref-13m,stories260K}, packed as .gpucarry/p.tgz;
# carry .gpucarry and run from the repository root:
#   bash bench/throughput_call.sh 2>&1 | tee $OUT/throughput.log
# POLS1B, POLS8B: the policies; KERNELS=0, TESTS=0, E2E=0 skip those parts.
set -u
P=/tmp/p; mkdir -p $P && tar -C $P -xzf ${CARRY:-.gpucarry}/p.tgz
export KVBENCH_CUDA_CACHE=/tmp/kc PYTHONUNBUFFERED=1 KVBENCH_SHARED=$P/shared
T0=$(date +%s); el() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
[ -f $P/REV ] && echo "rev $(cat $P/REV)"
st() { # shape policy steps: one streams run, its rows prefixed
	KVBENCH_PHASES=${PH:-1} timeout 90 $P/kvbench streams --model /tmp/m$1 --backend cuda --streams 64 --policy $2 --budget 1024 --prompt 1024 --tokens $3 --alone 0 2>&1 |
		grep -E "decode|a batch step|^\| 64 |^\| (lanes|attention)|error|panic" | sed "s/^/$1 $2 /"; el streams $1 $2
}
timeout 60 python3 bench/e2e.py make --shape 1b --out /tmp/m1b --tokenizer $P/tokenizer.model 2>&1 | tail -1
PH=0 st 1b window 256 # once without the timing: the number to quote
for p in ${POLS1B:-window streamingllm h2o}; do st 1b $p 256; done
rm -rf /tmp/m1b
timeout 100 python3 bench/e2e.py make --shape 8b --out /tmp/m8b --tokenizer $P/tokenizer.model 2>&1 | tail -1; el make 8b
for p in ${POLS8B:-window streamingllm}; do st 8b $p 128; done
if [ "${E2E:-1}" = 1 ]; then
	KVBENCH_PHASES=1 timeout 60 $P/kvbench e2e --model /tmp/m8b --backend cuda --lengths 32768 --decode 128 2>&1 | grep -E "^\||error|panic"; el e2e 8b
fi
rm -rf /tmp/m8b
if [ "${TESTS:-1}" = 1 ]; then
	(cd policies && timeout 60 $P/policies.test -test.count=1 -test.run 'BatchMatchesAloneGPU|BatchWideGPU|BatchMixedGPU' -test.v 2>&1 | grep -E "^(--- |ok|FAIL|panic)"); el policies
	(cd tasks && timeout 60 $P/tasks.test -test.count=1 -test.run 'TrialsBatchedMatchAloneGPU|PerplexityBatchedMatchesStreamsGPU' -test.v 2>&1 | grep -E "^(--- |ok|FAIL|panic)"); el tasks
fi
if [ "${KERNELS:-1}" = 1 ]; then
	for pg in ${KV_PAGES:-16 64}; do
		timeout 60 $P/kvbench kernels --policies full --lengths 4096,32768,131072 --iters 100 --kv-page $pg 2>&1 | grep -E "^kvbench|FAIL|error|panic" | sed "s/^/page $pg /"; el kernels $pg
	done
	timeout 60 python3 bench/sdpa.py --lengths 4096,32768,131072 --backends default --iters 100 2>&1 | grep -vE "^#|^$" | tail -4; el sdpa
fi
