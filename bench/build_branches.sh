#!/usr/bin/env bash
# Builds, for each git ref named (branches waiting for the device), the
# runtime/cuda test binary and kvbench into .gpucarry/b/<ref>/ (through a
# temporary git worktree), for bench/branches_call.sh to check and time them
# side by side in one device call. Run from the repository root:
#   bash bench/build_branches.sh main prefill-next decode-norm-fold
# then carry .gpucarry/b (64 MiB at most: a ref is 6 MB of test binary and
# 18 MB of kvbench; KVBENCH=0 builds the test binaries only).
set -eu
out=$PWD/.gpucarry/b
mkdir -p "$out"
for ref in "$@"; do
	wt=$(mktemp -d)
	git worktree add -q --detach "$wt" "$ref"
	mkdir -p "$out/$ref"
	(cd "$wt" && CGO_ENABLED=0 go test -c -ldflags="-s -w" -o "$out/$ref/runtime_cuda.test" ./runtime/cuda)
	if [ "${KVBENCH:-1}" = 1 ]; then
		(cd "$wt" && CGO_ENABLED=0 go build -ldflags="-s -w" -o "$out/$ref/kvbench" ./cmd/kvbench)
	fi
	git -C "$wt" rev-parse --short HEAD > "$out/$ref/commit"
	git worktree remove --force "$wt"
	echo "$ref: $(cat "$out/$ref/commit") -> $out/$ref"
done
du -sh "$out"
