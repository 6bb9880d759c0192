#!/usr/bin/env bash
# Packs what a device call needs into .gpucarry/ (git-ignored; run with carry
# [".gpucarry"]) and checks the size against the device's limit: 64 MiB for
# the tracked files plus everything carried (a tree of 66.8 MB was refused,
# 61.0 MB taken: this script stops at 63 MB). Run from the repository root:
#   bash bench/pack_carry.sh [NAME:PATCH | ref ...]
# - gpubin.txz: kvbench and the test binaries of the packages PKGS names
#   (default "runtime/cuda bench"; bench/gpu_check.sh runs those of
#   "runtime/cuda policies tasks bench cmd/kvbench" it finds, which do not
#   fit one carry together; TESTS=0: kvbench alone), as
#   <package with / as _>.test, and Llama-2's tokenizer.model (for
#   bench/e2e.py make);
# - shared.txz (SHARED=1, the default): ../shared's kvbench-ref-13m,
#   stories260K and tokenizers, for the tests that read $KVBENCH_SHARED (cached in /tmp);
# - b.txz: the variants named, built by bench/build_branches.sh (kvbench
#   alone; BTESTS=1: their runtime/cuda test binaries too), for
#   bench/decode_attn_call.sh $B .gpucarry/b/NAME ... (the working tree's
#   own kvbench is $B/kvbench: name only the others); a patch waiting for a
#   GPU is named NAME:bench/variants/NAME.patch.
# On the device a call script starts with: source bench/unpack_carry.sh
# (binaries in $B, variants in .gpucarry/b, $KVBENCH_SHARED set).
set -eu
# txz DIR NAME OUT: DIR/NAME as a tar in xz with a dictionary of 192 MiB, so
# that the binaries' shared code (every build holds the same runtime) is
# stored once: four builds of kvbench took 7.1 MB where -J's 8 MiB window
# took 21.4.
txz() { tar -C "$1" -cf - "$2" | xz -T1 --lzma2=preset=6,dict=192MiB > "$3"; }
shared=${KVBENCH_SHARED:-../shared}
limit=63000000
rm -rf .gpucarry/gpubin.txz .gpucarry/b.txz .gpucarry/shared.txz .gpucarry/b
mkdir -p .gpucarry
tmp=$(mktemp -d)
CGO_ENABLED=0 go build -ldflags="-s -w" -o "$tmp/kvbench" ./cmd/kvbench
if [ "${TESTS:-1}" = 1 ]; then
	for p in ${PKGS:-runtime/cuda bench}; do
		CGO_ENABLED=0 go test -c -ldflags="-s -w" -o "$tmp/$(echo "$p" | tr / _).test" "./$p"
	done
fi
[ -f "$shared/tokenizers/llama2/tokenizer.model" ] && cp "$shared/tokenizers/llama2/tokenizer.model" "$tmp/"
txz "$tmp" . .gpucarry/gpubin.txz
rm -rf "$tmp"
if [ "${SHARED:-1}" = 1 ]; then
	if [ ! -d "$shared/models/kvbench-ref-13m" ]; then
		echo "pack_carry: $shared/models/kvbench-ref-13m not found (SHARED=0 to pack without it)" >&2
		exit 1
	fi
	cache=/tmp/kvbench-shared-$(cat "$shared/models/kvbench-ref-13m/config.json" "$shared/models/stories260K"/* "$shared/tokenizers"/*/* 2>/dev/null | sha256sum | cut -c1-12).txz
	if [ ! -f "$cache" ]; then
		s=$(mktemp -d)
		mkdir -p "$s/shared/models"
		cp -r "$shared/models/kvbench-ref-13m" "$s/shared/models/"
		[ -d "$shared/models/stories260K" ] && cp -r "$shared/models/stories260K" "$s/shared/models/"
		cp -r "$shared/tokenizers" "$s/shared/"
		tar -C "$s" -cJf "$cache" shared
		rm -rf "$s"
	fi
	cp "$cache" .gpucarry/shared.txz
fi
if [ $# -gt 0 ]; then
	TESTS=${BTESTS:-0} bash bench/build_branches.sh "$@" > /dev/null
	txz .gpucarry b .gpucarry/b.txz
	rm -rf .gpucarry/b
fi
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
carried=$(du -cb .gpucarry | tail -1 | cut -f1)
total=$((tracked + carried))
printf 'pack_carry: %s MB tracked + %s MB in .gpucarry = %s MB (this script stops at %s)\n' \
	$((tracked / 1000000)) $((carried / 1000000)) $((total / 1000000)) $((limit / 1000000))
ls -la .gpucarry
if [ $total -gt $limit ]; then
	echo "pack_carry: too close to the limit: pack fewer variants, TESTS=0 or SHARED=0" >&2
	exit 1
fi
