/* SPDX-License-Identifier: MIT */
/*
 * log.h: the daemons' one log: one line per event on stderr, with a level
 * (syslog's priorities: err, warning, info, debug), no timestamp (journald
 * and terminals' users add their own). Shared by the keeper and the
 * worker. Never writes the segment (for the segment's own log see
 * lib/seglog.c).
 *
 * A line looks like one of (log-format):
 *   plain    heirloom-worker[42]: warning: text   (no word for info)
 *   syslog   <4>heirloom-worker[42]: text         (RFC 3164's <PRI>, on request)
 *   journal  <4>text                              (sd-daemon.h's SD_WARNING:
 *            journald reads the priority and adds name and pid itself)
 * "auto" (the default) is journal when $JOURNAL_STREAM names our stderr
 * (the service's stderr is journald's stream), else plain. Tests read
 * these lines: keep their text stable.
 *
 * Thread-safe: one fprintf per line; the level and format are atomics, so
 * hl__log_configure() may run while other threads log (SIGHUP).
 */
#ifndef HL_LOG_H
#define HL_LOG_H

#include <stddef.h>

/* syslog(3)'s priorities, the values journald and <PRI> use. */
enum hl_log_level { HL_LOG_ERR = 3, HL_LOG_WARNING = 4, HL_LOG_INFO = 6, HL_LOG_DEBUG = 7 };

/* The words --log-level and --log-format accept, NULL-terminated (the
 * config module checks values against them). */
extern const char *const hl__log_levels[];
extern const char *const hl__log_formats[];

struct hl_cfg_opt;
/* The two options every daemon takes for its log, --log-level and
 * --log-format (choices hl__log_levels, hl__log_formats; SIGHUP re-reads
 * both), written into O[0] and O[1] with LEVEL and FORMAT as their
 * destinations. Returns 2, the number of entries written. */
unsigned hl__log_cfg_opts(struct hl_cfg_opt *o, char **level, char **format);

/* Name the lines after PROG ("heirloom-worker"), a string that lives for
 * the whole process; level info, format auto. Call once in main(), before
 * any thread starts; until then lines say "heirloom". */
void hl__log_init(const char *prog);

/* Set the level and the format by their words (NULL keeps the current
 * one). Returns 0, or -EINVAL for a word not in the lists (nothing
 * changed). Resolves "auto" against $JOURNAL_STREAM and stderr now. */
int hl__log_configure(const char *level, const char *format);

/* The current level's word (for a message saying what SIGHUP changed). */
const char *hl__log_level_name(void);

/* Whether a line of LEVEL would be written now. */
int hl__log_enabled(int level);

/* One line of LEVEL (at most 511 bytes of text; longer is cut), dropped
 * when LEVEL is above the configured one. */
void hl__logl(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Format one whole line of LEVEL, prefix and newline included, into BUF
 * (cut to fit; always terminated) as hl__logl() would write it; returns
 * its length. For a line written later where hl__logl() cannot run (a
 * signal handler writes it with write(2)). */
size_t hl__log_line(char *buf, size_t len, int level, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

#define hl__log(...)       hl__logl(HL_LOG_INFO, __VA_ARGS__)
#define hl__log_err(...)   hl__logl(HL_LOG_ERR, __VA_ARGS__)
#define hl__log_warn(...)  hl__logl(HL_LOG_WARNING, __VA_ARGS__)
#define hl__log_debug(...) hl__logl(HL_LOG_DEBUG, __VA_ARGS__)

#endif /* HL_LOG_H */
