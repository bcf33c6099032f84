/* SPDX-License-Identifier: MIT */
/*
 * faultfs.c: an LD_PRELOAD shim that makes the file system fail under the
 * keeper's durability writer (tests/test_durability.c). It intercepts
 * write, pwrite, fsync, fdatasync, rename and renameat, and only for
 * files under $HL_FAULT_DIR; what it does is read, at every such call,
 * from the file $HL_FAULT_CTL (so that a test turns faults on and off
 * while the keeper runs):
 *   ""        nothing: every call goes through
 *   enospc    writes fail with ENOSPC
 *   eio       writes fail with EIO
 *   short     writes write half of what they were given (a full disk
 *             that fills up: 0 bytes in the end)
 *   fsync     fsync and fdatasync fail with EIO
 *   rename    rename and renameat fail with EIO
 * Never in a shipped binary: the tests build it as a module.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* The fault now ("" when none), without touching errno. */
static void
mode(char *buf, size_t len)
{
	int saved = errno;
	buf[0] = 0;
	const char *ctl = getenv("HL_FAULT_CTL");
	if (ctl) {
		int fd = open(ctl, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			ssize_t n = read(fd, buf, len - 1);
			buf[n > 0 ? n : 0] = 0;
			buf[strcspn(buf, "\n")] = 0;
			close(fd);
		}
	}
	errno = saved;
}

static int
under_dir(const char *path)
{
	const char *dir = getenv("HL_FAULT_DIR");
	return dir && path && strncmp(path, dir, strlen(dir)) == 0;
}

/* Whether FD is a file under $HL_FAULT_DIR (or that directory). */
static int
fd_in_dir(int fd)
{
	int saved = errno;
	char link[64], path[PATH_MAX];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, sizeof(path) - 1);
	errno = saved;
	if (n <= 0)
		return 0;
	path[n] = 0;
	return under_dir(path);
}

/* 0: go through; else the errno to fail with, or -1: write half. */
static int
write_fault(int fd)
{
	if (!fd_in_dir(fd))
		return 0;
	char m[32];
	mode(m, sizeof(m));
	if (strcmp(m, "enospc") == 0)
		return ENOSPC;
	if (strcmp(m, "eio") == 0)
		return EIO;
	if (strcmp(m, "short") == 0)
		return -1;
	return 0;
}

EXPORT ssize_t
write(int fd, const void *buf, size_t n)
{
	static ssize_t (*real)(int, const void *, size_t);
	if (!real)
		real = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
	int f = write_fault(fd);
	if (f > 0) {
		errno = f;
		return -1;
	}
	if (f < 0)
		n /= 2;
	return n || !f ? real(fd, buf, n) : 0;
}

EXPORT ssize_t
pwrite(int fd, const void *buf, size_t n, off_t off)
{
	static ssize_t (*real)(int, const void *, size_t, off_t);
	if (!real)
		real = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
	int f = write_fault(fd);
	if (f > 0) {
		errno = f;
		return -1;
	}
	if (f < 0)
		n /= 2;
	return n || !f ? real(fd, buf, n, off) : 0;
}

static int
sync_fault(int fd)
{
	if (!fd_in_dir(fd))
		return 0;
	char m[32];
	mode(m, sizeof(m));
	return strcmp(m, "fsync") == 0;
}

EXPORT int
fsync(int fd)
{
	static int (*real)(int);
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	if (sync_fault(fd)) {
		errno = EIO;
		return -1;
	}
	return real(fd);
}

EXPORT int
fdatasync(int fd)
{
	static int (*real)(int);
	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	if (sync_fault(fd)) {
		errno = EIO;
		return -1;
	}
	return real(fd);
}

static int
rename_fault(int dirfd, const char *path)
{
	if (path && path[0] == '/' ? !under_dir(path) : !fd_in_dir(dirfd))
		return 0;
	char m[32];
	mode(m, sizeof(m));
	return strcmp(m, "rename") == 0;
}

EXPORT int
rename(const char *from, const char *to)
{
	static int (*real)(const char *, const char *);
	if (!real)
		real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
	if (rename_fault(AT_FDCWD, to)) {
		errno = EIO;
		return -1;
	}
	return real(from, to);
}

EXPORT int
renameat(int fromfd, const char *from, int tofd, const char *to)
{
	static int (*real)(int, const char *, int, const char *);
	if (!real)
		real = (int (*)(int, const char *, int, const char *))dlsym(RTLD_NEXT, "renameat");
	if (rename_fault(tofd, to)) {
		errno = EIO;
		return -1;
	}
	return real(fromfd, from, tofd, to);
}
