/* SPDX-License-Identifier: MIT */
/*
 * notify.c: systemd's notify protocol without libsystemd (notify.h says
 * why). Owns nothing but a socket per message; never blocks (datagram,
 * MSG_DONTWAIT) and never fails its caller.
 */
#include "notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

void
hl__sd_notify(const char *msg)
{
	const char *p = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = p ? strlen(p) : 0;
	if (n == 0 || n >= sizeof(sa.sun_path) || (p[0] != '/' && p[0] != '@'))
		return;
	memcpy(sa.sun_path, p, n);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract namespace */
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	sendto(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&sa,
	       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
	close(fd);
}

uint64_t
hl__sd_watchdog_usec(void)
{
	const char *u = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	char *end;
	if (!u || !*u)
		return 0;
	if (pid && *pid) {
		errno = 0;
		unsigned long long p = strtoull(pid, &end, 10);
		if (errno || *end || p != (unsigned long long)getpid())
			return 0; /* meant for another process (our parent) */
	}
	errno = 0;
	unsigned long long v = strtoull(u, &end, 10);
	if (errno || *end || v == 0)
		return 0;
	return (uint64_t)v;
}
