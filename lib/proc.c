/* SPDX-License-Identifier: MIT */
/*
 * proc.c: process identity (pid + start time) and the abort path. Owns the
 * parsing of /proc/PID/stat; must never be called on a hot path.
 */
#include "util.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

/* The start time of PID (+1), 0 when there is no such process, or -errno
 * in *err when /proc could not be read for another reason (EMFILE: out of
 * descriptors), which says nothing about the process. */
static uint64_t
start_time(int pid, int *err)
{
	char path[64], buf[1024];
	*err = 0;
	if (pid <= 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ENOENT && errno != ESRCH)
			*err = -errno;
		return 0;
	}
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	/* comm (field 2) may contain spaces and parentheses: skip to the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p)
		return 0;
	p++;
	/* After ')' come fields 3..; start time is field 22, i.e. the 20th
	 * space-separated token after ')'. */
	for (int field = 3; field < 22; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return 0;
	}
	char *end;
	unsigned long long v = strtoull(p + 1, &end, 10);
	if (end == p + 1)
		return 0;
	/* A zombie still has its stat file: treat it as gone. */
	char *st = strrchr(buf, ')');
	if (st && st[1] == ' ' && (st[2] == 'Z' || st[2] == 'X'))
		return 0;
	return (uint64_t)v + 1; /* +1 so that 0 always means "no such process" */
}

uint64_t
hl__proc_start_time(int pid)
{
	int err;
	return start_time(pid, &err);
}

int
hl__proc_start_time_r(int pid, uint64_t *out)
{
	int err;
	*out = start_time(pid, &err);
	return err;
}

int
hl__proc_check(int pid, uint64_t start)
{
	int err;
	uint64_t now = start_time(pid, &err);
	if (err)
		return err;
	return now != 0 && now == start;
}

int
hl__proc_alive(int pid, uint64_t start)
{
	uint64_t now = hl__proc_start_time(pid);
	return now != 0 && now == start;
}

_Noreturn void
hl__die_at(const char *file, const char *func, int line, const char *msg)
{
	fprintf(stderr, "heirloom: internal error at %s:%s:%d: %s\n", file, func, line, msg);
	abort();
}

void
hl__racy_copy_out(void *dst, const void *src, size_t n)
{
	uint8_t *d = dst;
	const uint8_t *s = src;
	/* src is 8-byte aligned in every caller (value blocks, event records). */
	while (n >= 8) {
		uint64_t w = __atomic_load_n((const uint64_t *)(const void *)s, __ATOMIC_RELAXED);
		memcpy(d, &w, 8);
		d += 8;
		s += 8;
		n -= 8;
	}
	while (n--)
		*d++ = __atomic_load_n(s++, __ATOMIC_RELAXED);
}

void
hl__racy_copy_in(void *dst, const void *src, size_t n)
{
	uint8_t *d = dst;
	const uint8_t *s = src;
	while (n >= 8) {
		uint64_t w;
		memcpy(&w, s, 8);
		__atomic_store_n((uint64_t *)(void *)d, w, __ATOMIC_RELAXED);
		d += 8;
		s += 8;
		n -= 8;
	}
	while (n--)
		__atomic_store_n(d++, *s++, __ATOMIC_RELAXED);
}
