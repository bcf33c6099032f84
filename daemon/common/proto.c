/* SPDX-License-Identifier: MIT */
/*
 * proto.c: the mechanics of the heir protocol (proto.h): socket paths,
 * sending and receiving one fixed-size message with or without a
 * descriptor, and the names of roles (the owner record's sequence lock is
 * lib/owner.c). It holds no state and makes no decision about who may own
 * the table; and it must never trust a byte or a descriptor a peer sent
 * before checking it.
 */
#include "proto.h"

#include "util.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

_Static_assert(sizeof(((struct sockaddr_un *)0)->sun_path) == HL_SOCK_PATH_MAX,
               "HL_SOCK_PATH_MAX is sun_path's size");

#define MAX_PASSED_FDS 16 /* more than any message carries: extras are closed */

void
hl__msg_init(struct hl_msg *m, enum hl_msg_type type)
{
	memset(m, 0, sizeof(*m));
	m->magic = HL_PROTO_MAGIC;
	m->version = HL_PROTO_VERSION;
	m->type = (uint16_t)type;
	m->pid = (uint32_t)getpid();
	m->start = hl__proc_start_time(getpid());
}

const char *
hl__msg_text(struct hl_msg *m)
{
	m->text[sizeof(m->text) - 1] = '\0';
	return m->text;
}

/* The same rule as hl__seg_path(): printable ASCII, no '/', 1..64 bytes.
 * Both names come from one --name, so they must agree on what is valid. */
static int
valid_name(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > 64)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)name[i] < 0x21 || (unsigned char)name[i] > 0x7e ||
		    name[i] == '/')
			return 0;
	return 1;
}

int
hl__sock_path(const char *name, const char *override, char *buf, size_t len, int *dir_is_ours)
{
	char dir[PATH_MAX];
	const char *env;
	int ours = 0, w;

	if (dir_is_ours)
		*dir_is_ours = 0;
	if (override && *override) {
		size_t n = strlen(override);
		if (n >= len || n >= HL_SOCK_PATH_MAX)
			return -ENAMETOOLONG;
		memcpy(buf, override, n + 1);
		return 0;
	}
	if (!valid_name(name))
		return -EINVAL;
	if ((env = getenv("RUNTIME_DIRECTORY")) && *env) {
		/* systemd lists one directory per RuntimeDirectory= entry,
		 * separated by ':'; ours is the first. */
		size_t n = strcspn(env, ":");
		if (n >= sizeof(dir))
			return -ENAMETOOLONG;
		memcpy(dir, env, n);
		dir[n] = '\0';
	} else if (geteuid() == 0) {
		snprintf(dir, sizeof(dir), "/run/heirloom");
		ours = 1;
	} else if ((env = getenv("XDG_RUNTIME_DIR")) && *env) {
		if (strlen(env) >= sizeof(dir))
			return -ENAMETOOLONG;
		snprintf(dir, sizeof(dir), "%s", env);
	} else {
		snprintf(dir, sizeof(dir), "/tmp/heirloom-%u", (unsigned)geteuid());
		ours = 1;
	}
	w = snprintf(buf, len, "%s/heirloom-%s.sock", dir, name);
	if (w < 0 || (size_t)w >= len || w >= HL_SOCK_PATH_MAX)
		return -ENAMETOOLONG;
	if (dir_is_ours)
		*dir_is_ours = ours;
	return 0;
}

/* The directory part of PATH into DIR ("/" for "/x.sock"). */
static int
dir_of(const char *path, char *dir, size_t len)
{
	const char *slash = strrchr(path, '/');
	if (!slash || (size_t)(slash - path) >= len)
		return -EINVAL;
	if (slash == path) {
		snprintf(dir, len, "/");
		return 0;
	}
	memcpy(dir, path, (size_t)(slash - path));
	dir[slash - path] = '\0';
	return 0;
}

/* In /tmp anyone may have made the directory first: listen only in one
 * that we (or root) own and that nobody else can write into (or that is
 * sticky, where nobody else can remove or replace our socket). */
static int
dir_safe(const char *dir)
{
	struct stat st;
	if (lstat(dir, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode) || (st.st_uid != geteuid() && st.st_uid != 0) ||
	    ((st.st_mode & 022) && !(st.st_mode & S_ISVTX)))
		return -EPERM;
	return 0;
}

int
hl__sock_dir_check(const char *path)
{
	char dir[HL_SOCK_PATH_MAX];
	int rc = dir_of(path, dir, sizeof(dir));
	return rc ? rc : dir_safe(dir);
}

int
hl__sock_dir_prepare(const char *path, gid_t gid)
{
	char dir[HL_SOCK_PATH_MAX];
	int rc = dir_of(path, dir, sizeof(dir));

	if (rc || strcmp(dir, "/") == 0)
		return -EINVAL;
	if (mkdir(dir, 0750) == 0) {
		/* mkdir applied the umask; 0750 is the contract. A crash
		 * between these lines leaves a directory that is stricter or
		 * has the wrong group: the next start fixes neither, and the
		 * check below still accepts it (it is ours and not writable by
		 * others), so peers may be refused until an operator looks. */
		if (chmod(dir, 0750) < 0 || (gid != (gid_t)-1 && chown(dir, (uid_t)-1, gid) < 0))
			return -errno;
	} else if (errno != EEXIST) {
		return -errno;
	}
	return dir_safe(dir);
}

int
hl__sock_connect(const char *path, int *fd_out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(path);
	int fd, rc;

	if (n == 0 || n >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, n + 1);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	do
		rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	*fd_out = fd;
	return 0;
}

int
hl__msg_send(int fd, const struct hl_msg *m, int passfd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { .iov_base = (void *)m, .iov_len = sizeof(*m) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	memset(&cbuf, 0, sizeof(cbuf));
	if (passfd >= 0) {
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = sizeof(cbuf.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &passfd, sizeof(int));
	}
	do
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == (ssize_t)sizeof(*m) ? 0 : -EIO;
}

static int
wait_readable(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint64_t end = timeout_ms > 0 ? hl__now_ns() + (uint64_t)timeout_ms * 1000000ull : 0;
	for (;;) {
		int r = poll(&p, 1, timeout_ms);
		if (r > 0)
			return 0;
		if (r == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
		if (timeout_ms > 0) {
			uint64_t now = hl__now_ns();
			if (now >= end)
				return -ETIMEDOUT;
			timeout_ms = (int)((end - now + 999999) / 1000000);
		}
	}
}

int
hl__msg_recv(int fd, struct hl_msg *m, int *passfd, int timeout_ms)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * MAX_PASSED_FDS)];
		struct cmsghdr align;
	} cbuf;
	char data[sizeof(*m) + 1]; /* one more: a longer packet shows as longer */
	struct iovec iov = { .iov_base = data, .iov_len = sizeof(data) };
	struct msghdr mh = { .msg_iov = &iov,
		             .msg_iovlen = 1,
		             .msg_control = cbuf.buf,
		             .msg_controllen = sizeof(cbuf.buf) };
	int fds[MAX_PASSED_FDS], nfds = 0, bad;
	ssize_t n;

	if (passfd)
		*passfd = -1;
	if (timeout_ms >= 0) {
		int rc = wait_readable(fd, timeout_ms);
		if (rc)
			return rc;
	}
	do
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | (timeout_ms >= 0 ? MSG_DONTWAIT : 0));
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == ECONNRESET) {
		/* A peer that closed with our request unread leaves a reset
		 * that Linux reports before the packets still queued for us
		 * (the reply it sent before closing, e.g. why it refused us).
		 * The error is consumed now: look once more for the reply. */
		do
			n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			return -EPIPE;
	}
	if (n < 0)
		return -errno;
	/* Take every descriptor out first, so that each path below can close
	 * what it does not keep. */
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k && nfds < MAX_PASSED_FDS; i++)
			memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
	}
	if (n == 0 && nfds == 0)
		return -EPIPE; /* orderly close (or an empty packet: the same to us) */
	bad = n != (ssize_t)sizeof(*m) || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC));
	memcpy(m, data, n < (ssize_t)sizeof(*m) ? (size_t)n : sizeof(*m));
	if (!bad)
		bad = m->magic != HL_PROTO_MAGIC || m->version != HL_PROTO_VERSION;
	if (!bad && nfds > 0 && (!passfd || nfds > 1))
		bad = 1;
	if (!bad && nfds == 1 && passfd) {
		*passfd = fds[0];
		return 0;
	}
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	return bad ? -EPROTO : 0;
}

const char *
hl__role_name(uint32_t role)
{
	switch (role) {
	case HL_ROLE_NONE: return "none";
	case HL_ROLE_KEEPER: return "keeper";
	case HL_ROLE_WORKER: return "worker";
	default: return "unknown";
	}
}
