#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# mkseeds.sh: regenerate every seed corpus. The hand-made ones come from
# mkseeds.py; fuzz_attach's are dumped from real segments: a worker with the
# capacities of fuzz_seg.h serves a scripted client (mkseed_attach drive),
# once cleanly and once per --crash-at-step point (so that seeds hold the
# half-done states recovery repairs), then mkseed_attach dump writes the
# segment in the target's input format.
#   tests/fuzz/mkseeds.sh [BUILD_DIR_WITH_WORKER] [FUZZ_BUILD_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build}
fbuild=${2:-$root/build-fuzz}
worker=$build/bin/heirloom-worker
mkseed=$fbuild/bin/mkseed_attach
python3 "$here/mkseeds.py"
[ -x "$worker" ] || { echo "mkseeds: build the worker first ($worker)" >&2; exit 1; }
[ -x "$mkseed" ] || { echo "mkseeds: build mkseed_attach first (scripts/fuzz builds it)" >&2; exit 1; }
out=$here/corpus/attach
mkdir -p "$out"
args=(--max-keys 8 --max-observers 16 --max-endpoints 2 --max-value 64 --shards 2
      --heap 4096 --req-ring 2048 --ev-ring 2048 --history 2048 --prune-interval 0)
for step in 0 1 2 3 4 5 6 7 8 9 10 12 14 16 20; do
	name=fzseed$$_$step
	rm -f "/dev/shm/heirloom.$name"
	crash=()
	[ "$step" -gt 0 ] && crash=(--crash-at-step "$step")
	"$worker" --standalone --name "$name" "${args[@]}" "${crash[@]}" 2>/dev/null &
	wpid=$!
	for _ in $(seq 100); do [ -e "/dev/shm/heirloom.$name" ] && break; sleep 0.05; done
	sleep 0.2
	ASAN_OPTIONS=detect_leaks=0 "$mkseed" drive "$name" || true
	kill -KILL "$wpid" 2>/dev/null || true
	wait "$wpid" 2>/dev/null || true
	ASAN_OPTIONS=detect_leaks=0 "$mkseed" dump "$name" "$out/seg_step$step" "$out/hdr_step$step"
	rm -f "/dev/shm/heirloom.$name"
done
# One header seed is enough per distinct header: they only differ in size.
for f in "$out"/hdr_step*; do [ "$f" = "$out/hdr_step0" ] || rm -f "$f"; done
echo "mkseeds: $(ls "$out" | wc -l) attach seeds in $out"
