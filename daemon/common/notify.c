/* SPDX-License-Identifier: MIT */
/*
 * notify.c: systemd's notify protocol through libsystemd (notify.h).
 * Owns nothing; never fails its caller.
 */
#include "notify.h"

#include <systemd/sd-daemon.h>

void
hl__sd_notify(const char *msg)
{
	(void)sd_notify(0, msg);
}

uint64_t
hl__sd_watchdog_usec(void)
{
	uint64_t usec = 0;
	return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}
