#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# run_example.sh BIN_DIR EXAMPLE...: start a standalone worker on a fresh
# segment, run EXAMPLE... NAME KEY 3, publish three values with heirloomctl
# once it says "ready", and check it printed all three and exited 0.
set -euo pipefail
bin=$1; shift
name="ex$$"
tmp=$(mktemp -d)
cleanup() {
	[ -n "${wpid:-}" ] && kill -9 "$wpid" 2>/dev/null || true
	[ -n "${xpid:-}" ] && kill -9 "$xpid" 2>/dev/null || true
	rm -f "/dev/shm/heirloom.$name"
	rm -rf "$tmp"
}
trap cleanup EXIT
"$bin/heirloom-worker" --standalone --name "$name" --max-keys 1024 --max-observers 1024 \
	--max-endpoints 16 --heap 1048576 --req-ring 16384 --ev-ring 32768 2>"$tmp/worker.log" &
wpid=$!
for _ in $(seq 100); do "$bin/heirloomctl" --name "$name" status >/dev/null 2>&1 && break; sleep 0.1; done
"$@" "$name" greeting 3 >"$tmp/out" 2>"$tmp/err" &
xpid=$!
for _ in $(seq 100); do grep -q ready "$tmp/out" && break; sleep 0.1; done
for v in one two three; do "$bin/heirloomctl" --name "$name" set greeting "$v"; done
rc=0
for _ in $(seq 200); do kill -0 "$xpid" 2>/dev/null || break; sleep 0.1; done
wait "$xpid" || rc=$?
xpid=
cat "$tmp/out"
cat "$tmp/err" >&2
[ "$rc" -eq 0 ] || { echo "example exited $rc" >&2; exit 1; }
for v in one two three; do grep -q "greeting = $v" "$tmp/out" || { echo "missing $v" >&2; exit 1; }; done
echo "example ok"
