#!/usr/bin/env bash
# Builds kvbench once per variant of the source, for timing variants of the
# kernels side by side in one device call (bench/decode_attn_call.sh takes
# the folders): each variant is HEAD with a patch applied (git apply; "-"
# for none), built in a scratch worktree into OUT/NAME/kvbench. Run from the
# repository root here:
#   bash bench/variants.sh OUT base:- pad32:/tmp/pad32.patch
# then carry OUT (64 MiB a call: about 12 MB a build) and run
#   bash bench/decode_attn_call.sh OUT/base OUT/pad32
set -eu
[ $# -ge 2 ] || { echo "usage: bash bench/variants.sh OUT NAME:PATCH|- ..." >&2; exit 2; }
out=$1; shift
mkdir -p "$out"
root=$(git rev-parse --show-toplevel)
for v in "$@"; do
	name=${v%%:*} patch=${v#*:}
	case "$name" in "" | *[!A-Za-z0-9_.-]*) echo "variants: bad name in '$v'" >&2; exit 2 ;; esac
	wt=$(mktemp -d)
	git -C "$root" worktree add -q --detach "$wt" HEAD
	if [ "$patch" != - ]; then
		git -C "$wt" apply "$(realpath "$patch")" || { git -C "$root" worktree remove --force "$wt"; echo "variants: $patch does not apply to HEAD" >&2; exit 1; }
	fi
	mkdir -p "$out/$name"
	(cd "$wt" && CGO_ENABLED=0 go build -ldflags="-s -w" -o "$(realpath "$out")/$name/kvbench" ./cmd/kvbench)
	git -C "$root" worktree remove --force "$wt"
	note=""; [ "$patch" != - ] && note=" + $patch"
	echo "$out/$name/kvbench: HEAD $(git -C "$root" rev-parse --short HEAD)$note"
done
