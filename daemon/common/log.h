/* SPDX-License-Identifier: MIT */
/*
 * log.h: the daemons' one log: one line per event on stderr, "PROG[PID]:
 * text", no timestamp (journald adds its own). Shared by the keeper and
 * the worker; tests read these lines, so their shape does not change.
 * Thread-safe (one fprintf per line); never writes the segment (for the
 * segment's own log see lib/seglog.c).
 */
#ifndef HL_LOG_H
#define HL_LOG_H

/* Name the lines after PROG ("heirloom-worker"), a string that lives for
 * the whole process. Call once in main(), before any thread starts; until
 * then lines say "heirloom". */
void hl__log_init(const char *prog);

/* One line (at most 511 bytes of text; longer is cut). */
void hl__log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* HL_LOG_H */
