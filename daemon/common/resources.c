/* SPDX-License-Identifier: MIT */
/*
 * resources.c: the descriptor limit and the "segment does not fit"
 * message the daemons share (resources.h). Never exits or logs.
 */
#include "resources.h"

#include "segment.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/resource.h>

uint64_t
hl__nofile_raise(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 0;
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t want = rl.rlim_max;
		rl.rlim_cur = want;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
}

void
hl__nospace_msg(char *buf, size_t len, const char *name, uint64_t need)
{
	uint64_t free_b = 0;
	char freebuf[64];
	if (hl__shm_free_bytes(&free_b) == 0)
		snprintf(freebuf, sizeof(freebuf), "%.1f MiB free", (double)free_b / 1048576.0);
	else
		snprintf(freebuf, sizeof(freebuf), "free space unknown");
	snprintf(buf, len,
	         "segment /heirloom.%s needs %llu bytes (%.1f MiB), all reserved at creation, "
	         "and /dev/shm has %s. Ways out: smaller capacities (--max-keys, "
	         "--max-observers, --max-endpoints, --heap, --req-ring, --ev-ring, --shards; "
	         "'heirloomctl size' prints the size for given options), a bigger /dev/shm "
	         "('docker run --shm-size=256m', or 'mount -o remount,size=... /dev/shm'), "
	         "or removing what else fills /dev/shm",
	         name, (unsigned long long)need, (double)need / 1048576.0, freebuf);
}

static struct {
	uintptr_t lo, hi;
	char msg[512];
	size_t len;
} bus;

static void
on_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	uintptr_t a = (uintptr_t)si->si_addr;
	if (a >= bus.lo && a < bus.hi) {
		ssize_t n = write(STDERR_FILENO, bus.msg, bus.len);
		(void)n;
		/* The raw exit_group, not _exit(): ThreadSanitizer intercepts
		 * _exit() to finish up and report threads not joined (which
		 * may have stopped on the same damage), and nothing more may
		 * run in a process whose segment is gone. */
		syscall(SYS_exit_group, HL_EXIT_DAMAGED);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

void
hl__seg_sigbus_exit(const void *base, size_t size, const char *line, size_t len)
{
	if (len > sizeof(bus.msg))
		len = sizeof(bus.msg);
	memcpy(bus.msg, line, len);
	bus.len = len;
	bus.lo = (uintptr_t)base;
	bus.hi = bus.lo + size;
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
}
