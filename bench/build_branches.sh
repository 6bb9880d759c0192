#!/usr/bin/env bash
# Builds, for each git ref named (branches waiting for the device) or each
# NAME:PATCH (HEAD with a patch applied by git apply: a variant of the
# kernels not worth a branch), the runtime/cuda test binary and kvbench into
# .gpucarry/b/<name>/ (through a temporary git worktree), for
# bench/branches_call.sh to check and time them side by side in one device
# call, or bench/decode_attn_call.sh to time their decode attention. Run
# from the repository root:
#   bash bench/build_branches.sh main prefill-next decode-norm-fold
#   bash bench/build_branches.sh main pad32:/tmp/pad32.patch
# then carry .gpucarry/b (64 MiB at most: a build is 6 MB of test binary and
# 18 MB of kvbench; KVBENCH=0 builds the test binaries only, TESTS=0
# kvbench only).
set -eu
out=$PWD/.gpucarry/b
mkdir -p "$out"
for arg in "$@"; do
	ref=$arg patch=""
	case "$arg" in *:*) ref=${arg%%:*} patch=$(realpath "${arg#*:}") ;; esac
	case "$ref" in "" | *[!A-Za-z0-9_./-]*) echo "build_branches: bad name in '$arg'" >&2; exit 2 ;; esac
	wt=$(mktemp -d)
	git worktree add -q --detach "$wt" "$([ -n "$patch" ] && echo HEAD || echo "$ref")"
	if [ -n "$patch" ] && ! git -C "$wt" apply "$patch"; then
		git worktree remove --force "$wt"
		echo "build_branches: $patch does not apply to HEAD" >&2
		exit 1
	fi
	mkdir -p "$out/$ref"
	if [ "${TESTS:-1}" = 1 ]; then
		(cd "$wt" && CGO_ENABLED=0 go test -c -ldflags="-s -w" -o "$out/$ref/runtime_cuda.test" ./runtime/cuda)
	fi
	if [ "${KVBENCH:-1}" = 1 ]; then
		(cd "$wt" && CGO_ENABLED=0 go build -ldflags="-s -w" -o "$out/$ref/kvbench" ./cmd/kvbench)
	fi
	echo "$(git -C "$wt" rev-parse --short HEAD)${patch:+ + $(basename "$patch")}" > "$out/$ref/commit"
	git worktree remove --force "$wt"
	echo "$ref: $(cat "$out/$ref/commit") -> $out/$ref"
done
du -sh "$out"
