/* SPDX-License-Identifier: MIT */
/*
 * resources.h: what the daemons check about the machine's resources before
 * they serve (issue 21): the descriptor limit and the space in /dev/shm.
 * Only measures and words messages; the daemon decides what to do.
 */
#ifndef HL_DAEMON_RESOURCES_H
#define HL_DAEMON_RESOURCES_H

#include <stddef.h>
#include <stdint.h>

/* Exit status of both daemons when the segment does not fit in /dev/shm
 * (listed in their --help and in the README). */
#define HL_EXIT_NOSPACE 5

/* Exit status of both daemons when the segment was truncated or replaced
 * under them: it cannot be served again (docs/architecture.md, Decisions). */
#define HL_EXIT_DAMAGED 6

/* Exit status of both daemons when the state directory (durability) is
 * unusable or its files do not check: nothing was loaded. */
#define HL_EXIT_STATE 7

/* From now on a SIGBUS at an address in [BASE, BASE + SIZE) (a page of a
 * segment truncated under us) writes LINE (LEN bytes, a log line made
 * beforehand: the handler may only make async-signal-safe calls) to
 * stderr and ends the whole process with HL_EXIT_DAMAGED at once; any
 * other SIGBUS is re-raised as it was. One range per process: a second
 * call replaces it. */
void hl__seg_sigbus_exit(const void *base, size_t size, const char *line, size_t len);

/* Descriptors a daemon needs for itself besides one pidfd per client:
 * the segment, the socket, epoll, eventfds, /proc reads, stdio. */
#define HL_OWN_FDS 64u

/* Raise the soft RLIMIT_NOFILE to the hard limit (a no-op when they are
 * equal or the limit cannot be read). Returns the soft limit in force. */
uint64_t hl__nofile_raise(void);

/* The message for a segment of NEED bytes that /dev/shm cannot hold: the
 * size, what is free there, and the ways out. Always NUL-terminated. */
void hl__nospace_msg(char *buf, size_t len, const char *name, uint64_t need);

#endif /* HL_DAEMON_RESOURCES_H */
