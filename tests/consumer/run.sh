#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tests/consumer/run.sh BUILD_DIR [--man]: install BUILD_DIR into a temporary
# prefix, move the prefix elsewhere (an install must be relocatable), and
# build and run the consumer in this directory against it, with CMake
# (find_package(heirloom CONFIG), shared and static targets) and with
# pkg-config (shared, and static with --static). Also: a version that does
# not match is refused, the static programs do not need libheirloom.so, and
# (--man, when the build made them) every man page is installed where man
# finds it. Run by ctest
# (install_consumer); removes everything it made.
# tests/consumer/run.sh --prefix PREFIX: the same against an existing
# install (scripts/deb-test: the unpacked libheirloom-dev package).
set -euo pipefail
SRC=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/heirloom-consumer.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
fail() {
	echo "consumer: FAIL: $*" >&2
	exit 1
}
if [[ $1 == --prefix ]]; then
	P=$(cd "$2" && pwd)
	MAN=
else
	BUILD=$(cd "$1" && pwd)
	MAN=${2:-}
	# Everything but the Python package (whose directory is absolute).
	cmake --install "$BUILD" --prefix "$TMP/installed" --component Unspecified >/dev/null
	mv "$TMP/installed" "$TMP/moved"
	P=$TMP/moved
	echo "consumer: installed, then moved to $P"
fi

cmake -S "$SRC" -B "$TMP/cmake" -DCMAKE_PREFIX_PATH="$P" >"$TMP/cmake.log" 2>&1 ||
	{ cat "$TMP/cmake.log" >&2; fail "find_package(heirloom 0.1 CONFIG REQUIRED)"; }
cmake --build "$TMP/cmake" >"$TMP/build.log" 2>&1 || { cat "$TMP/build.log" >&2; fail "cmake build"; }
"$TMP/cmake/consumer_shared" || fail "consumer_shared"
"$TMP/cmake/consumer_static" || fail "consumer_static"
if cmake -S "$SRC" -B "$TMP/cmake-v" -DCMAKE_PREFIX_PATH="$P" -DHL_CONSUMER_WANT=9.0 >/dev/null 2>&1; then
	fail "find_package(heirloom 9.0) accepted version 0.x"
fi

pcdir=$(dirname "$(find "$P" -name heirloom.pc)")
mkdir -p "$TMP/pc"
PKG_CONFIG_PATH=$pcdir make -s -C "$SRC" OUT="$TMP/pc" >"$TMP/pc.log" 2>&1 ||
	{ cat "$TMP/pc.log" >&2; fail "pkg-config build"; }
[[ $(PKG_CONFIG_PATH=$pcdir pkg-config --variable=prefix heirloom) -ef $P ]] ||
	fail "heirloom.pc's prefix is not the install's"
LD_LIBRARY_PATH=$(dirname "$pcdir") "$TMP/pc/pc_shared" || fail "pc_shared"
"$TMP/pc/pc_static" || fail "pc_static"

for exe in "$TMP/cmake/consumer_shared" "$TMP/pc/pc_shared"; do
	readelf -d "$exe" | grep -q 'NEEDED.*libheirloom\.so' || fail "$exe does not use libheirloom.so"
done
for exe in "$TMP/cmake/consumer_static" "$TMP/pc/pc_static"; do
	if readelf -d "$exe" | grep -q 'NEEDED.*libheirloom'; then
		fail "$exe needs libheirloom.so"
	fi
done

[[ $MAN == --man ]] || { echo "consumer: find_package and pkg-config, shared and static: ok"; exit 0; }
for page in man1/heirloomctl.1 man3/heirloom.3 man5/heirloom.conf.5 \
	man8/heirloom-keeper.8 man8/heirloom-worker.8; do
	[[ -s $P/share/man/$page ]] || fail "share/man/$page is not installed"
done
if command -v man >/dev/null; then
	[[ $(MANPATH=$P/share/man man -w heirloomctl) == "$P/share/man/man1/heirloomctl.1" ]] ||
		fail "man -w heirloomctl does not find the installed page"
fi
echo "consumer: find_package and pkg-config, shared and static, man pages: ok"
