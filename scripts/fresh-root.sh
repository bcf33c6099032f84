# SPDX-License-Identifier: MIT
# scripts/fresh-root.sh: sourced (not run) by scripts/fresh-debian and
# scripts/deb-test. A fresh Debian 12 root made by
# `debootstrap --variant=minbase bookworm`, as the debian:12 image has it,
# with the mounts a build and the daemons need, undone by fresh_root_cleanup
# whatever happens (the callers trap EXIT).
#
# Cache (HEIRLOOM_FRESH_CACHE, default /var/cache/heirloom-fresh, outside
# the repository):
#   bookworm-minbase.tar  the pristine root as debootstrap left it, made on
#                         the first run and never run in; each run unpacks a
#                         new copy (a few seconds instead of a debootstrap).
#   archives/             bind-mounted on the root's /var/cache/apt/archives:
#                         the .debs apt downloads are kept between runs (apt
#                         still runs `apt-get update` and installs them).
# The mirror is the machine's own (its apt sources, read at run time, or
# HEIRLOOM_MIRROR); none is written in the repository.
# Needs root and the repository's root as the working directory (for
# scripts/deps debootstrap); HEIRLOOM_FRESH_REFRESH=1 remakes the tarball.

FRESH_CACHE=${HEIRLOOM_FRESH_CACHE:-/var/cache/heirloom-fresh}
FRESH_TAR=$FRESH_CACHE/bookworm-minbase.tar
FRESH_ROOT=
FRESH_MOUNTS=()

fresh_log() { echo "${FRESH_WHO:-fresh}: $*" >&2; }

# The URI of the machine's bookworm main repository, from apt itself (both
# sources.list formats), unless HEIRLOOM_MIRROR names one.
fresh_mirror() {
	if [[ -n ${HEIRLOOM_MIRROR:-} ]]; then
		echo "$HEIRLOOM_MIRROR"
		return
	fi
	local uri
	uri=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' \
		'Identifier: Packages' | awk '$2 == "bookworm" && $3 == "main" { print $1; exit }')
	if [[ -z $uri ]]; then
		fresh_log "no bookworm main repository in this machine's apt sources; set HEIRLOOM_MIRROR"
		return 1
	fi
	echo "$uri"
}

# Makes the cached tarball if missing (one debootstrap, a few minutes).
fresh_tarball() {
	if [[ -s $FRESH_TAR && -z ${HEIRLOOM_FRESH_REFRESH:-} ]]; then
		return
	fi
	command -v debootstrap >/dev/null || scripts/deps debootstrap
	local mirror tmp
	mirror=$(fresh_mirror)
	mkdir -p "$FRESH_CACHE"
	tmp=$(mktemp -d "$FRESH_CACHE/debootstrap.XXXXXX")
	fresh_log "debootstrap --variant=minbase bookworm from $mirror (cached in $FRESH_TAR)"
	if ! debootstrap --variant=minbase bookworm "$tmp" "$mirror" >"$tmp.log" 2>&1; then
		tail -20 "$tmp.log" >&2
		rm -rf "$tmp"
		return 1
	fi
	chmod 755 "$tmp" # mktemp's 0700 would shut every other uid out of /
	tar -C "$tmp" --numeric-owner -cf "$FRESH_TAR.new" .
	mv "$FRESH_TAR.new" "$FRESH_TAR"
	rm -rf "$tmp" "$tmp.log"
}

fresh_mount() { # fresh_mount ARGS... TARGET (relative to the root)
	local target=$FRESH_ROOT/${*: -1}
	mkdir -p "$target"
	mount "${@:1:$#-1}" "$target"
	FRESH_MOUNTS+=("$target")
}

# A new root in a temporary directory, mounted and ready for chroot.
fresh_root_new() {
	fresh_tarball
	FRESH_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/heirloom-fresh.XXXXXX")
	tar -C "$FRESH_ROOT" --numeric-owner -xf "$FRESH_TAR"
	# mktemp's 0700 would shut every uid but root out of the root's /
	# (the tests drop to nobody).
	chmod 755 "$FRESH_ROOT"
	cp /etc/resolv.conf "$FRESH_ROOT/etc/resolv.conf"
	fresh_mount -t proc proc /proc
	fresh_mount -t sysfs sys /sys
	fresh_mount --rbind /dev /dev
	mount --make-rslave "$FRESH_ROOT/dev"
	# The segments live here: a tmpfs of the root's own, sized as on a
	# Debian machine (half the RAM) unless HEIRLOOM_FRESH_SHM_SIZE says
	# otherwise (64m: Docker's default; the daemons' defaults fit in it,
	# but not every test's segment does).
	fresh_mount -t tmpfs -o "size=${HEIRLOOM_FRESH_SHM_SIZE:-50%},mode=1777" tmpfs /dev/shm
	fresh_mount -t tmpfs -o mode=755 tmpfs /run
	mkdir -p "$FRESH_CACHE/archives/partial"
	fresh_mount --bind "$FRESH_CACHE/archives" /var/cache/apt/archives
	# apt downloads as _apt: let it write the shared partial/ directory.
	local apt_uid
	apt_uid=$(awk -F: '$1 == "_apt" { print $3 }' "$FRESH_ROOT/etc/passwd")
	[[ -z $apt_uid ]] || chown "$apt_uid:root" "$FRESH_CACHE/archives/partial"
}

# Runs a command in the root as root, with a clean environment.
fresh_chroot() {
	chroot "$FRESH_ROOT" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

# Kills what still runs in the root, unmounts in reverse order and
# removes it (HEIRLOOM_FRESH_KEEP=1 keeps the directory, unmounted).
fresh_root_cleanup() {
	[[ -n $FRESH_ROOT ]] || return 0
	local pid link i
	for link in /proc/[0-9]*/root; do
		pid=${link#/proc/}
		pid=${pid%/root}
		[[ $(readlink "$link" 2>/dev/null) == "$FRESH_ROOT" ]] && kill -KILL "$pid" 2>/dev/null
	done
	for ((i = ${#FRESH_MOUNTS[@]} - 1; i >= 0; i--)); do
		umount -R "${FRESH_MOUNTS[i]}" 2>/dev/null || umount -Rl "${FRESH_MOUNTS[i]}" || true
	done
	FRESH_MOUNTS=()
	if findmnt -rn -o TARGET | grep -q "^$FRESH_ROOT"; then
		fresh_log "still mounted under $FRESH_ROOT; not removing it"
	elif [[ -n ${HEIRLOOM_FRESH_KEEP:-} ]]; then
		fresh_log "kept $FRESH_ROOT"
	else
		rm -rf --one-file-system "$FRESH_ROOT"
	fi
	FRESH_ROOT=
}
