/* SPDX-License-Identifier: MIT */
/*
 * notify.h: systemd's notify protocol (sd_notify(3)), for both daemons:
 * readiness, stopping and the service watchdog (WatchdogSec=). The
 * protocol is one datagram on the AF_UNIX socket named by $NOTIFY_SOCKET;
 * we speak it ourselves rather than link libsystemd for three messages
 * (libsystemd would pull its whole dependency set into a daemon that must
 * start on a minimal machine; the format is stable, documented, and
 * already what the keeper sent for READY=1).
 *
 * Not thread-safe: call from one thread (each daemon's main loop). No
 * allocation; a failed send is ignored (systemd notices what it missed).
 */
#ifndef HL_NOTIFY_H
#define HL_NOTIFY_H

#include <stdint.h>

/* Send MSG ("READY=1", "WATCHDOG=1", ...) to $NOTIFY_SOCKET, if set. */
void hl__sd_notify(const char *msg);

/* The service watchdog's period in microseconds: $WATCHDOG_USEC when it is
 * set, valid, and meant for this process ($WATCHDOG_PID unset or equal to
 * getpid()), else 0 (no watchdog). systemd kills the service when no
 * WATCHDOG=1 arrives within it; we ping every half of it. */
uint64_t hl__sd_watchdog_usec(void);

#endif /* HL_NOTIFY_H */
