/* SPDX-License-Identifier: MIT */
/*
 * notify.h: systemd's notify protocol (sd_notify(3)) for both daemons:
 * readiness, stopping and the service watchdog (WatchdogSec=), through
 * Debian's libsystemd. Without $NOTIFY_SOCKET (no systemd) every call is a
 * no-op. These wrappers exist so that callers never see libsystemd's
 * return conventions: a failed send is ignored (systemd notices what it
 * missed), and nothing here blocks or allocates on our behalf.
 *
 * Call from one thread (each daemon's main loop).
 */
#ifndef HL_NOTIFY_H
#define HL_NOTIFY_H

#include <stdint.h>

/* Send MSG ("READY=1", "WATCHDOG=1", ...) to $NOTIFY_SOCKET, if set. */
void hl__sd_notify(const char *msg);

/* The service watchdog's period in microseconds: $WATCHDOG_USEC when it is
 * set, valid, and meant for this process ($WATCHDOG_PID unset or equal to
 * getpid()), else 0 (no watchdog): sd_watchdog_enabled(3). systemd kills
 * the service when no WATCHDOG=1 arrives within it; we ping every half. */
uint64_t hl__sd_watchdog_usec(void);

#endif /* HL_NOTIFY_H */
