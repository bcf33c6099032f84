/* SPDX-License-Identifier: MIT */
/*
 * log.c: the daemons' stderr log (log.h). Owns the program name, the
 * level and the format; never allocates.
 */
#include "log.h"

#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum fmt { FMT_AUTO, FMT_PLAIN, FMT_SYSLOG, FMT_JOURNAL };

const char *const hl__log_levels[] = { "err", "warning", "info", "debug", NULL };
const char *const hl__log_formats[] = { "auto", "plain", "syslog", "journal", NULL };
static const int level_of[] = { HL_LOG_ERR, HL_LOG_WARNING, HL_LOG_INFO, HL_LOG_DEBUG };

static const char *prog = "heirloom";
static _Atomic int cur_level = HL_LOG_INFO;
static _Atomic int cur_fmt = FMT_PLAIN; /* never FMT_AUTO: resolved when set */

static int
word_index(const char *const *list, const char *w)
{
	for (int i = 0; list[i]; i++)
		if (!strcmp(list[i], w))
			return i;
	return -1;
}

/* sd_journal_stream_fd(3)'s rule (sd-daemon.h): $JOURNAL_STREAM is
 * "DEVICE:INODE" of the stream journald gave us; it counts only if stderr
 * is still that stream (not redirected by whoever started us). */
static int
stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char tail;
	if (!e || sscanf(e, "%llu:%llu%c", &dev, &ino, &tail) != 2)
		return 0;
	return fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

void
hl__log_init(const char *name)
{
	prog = name;
	hl__log_configure("info", "auto");
}

int
hl__log_configure(const char *level, const char *format)
{
	int l = level ? word_index(hl__log_levels, level) : -2;
	int f = format ? word_index(hl__log_formats, format) : -2;
	if (l == -1 || f == -1)
		return -EINVAL;
	if (f == FMT_AUTO)
		f = stderr_is_journal() ? FMT_JOURNAL : FMT_PLAIN;
	if (l >= 0)
		atomic_store_explicit(&cur_level, level_of[l], memory_order_relaxed);
	if (f >= 0)
		atomic_store_explicit(&cur_fmt, f, memory_order_relaxed);
	return 0;
}

const char *
hl__log_level_name(void)
{
	int l = atomic_load_explicit(&cur_level, memory_order_relaxed);
	for (int i = 0; hl__log_levels[i]; i++)
		if (level_of[i] == l)
			return hl__log_levels[i];
	return "?";
}

int
hl__log_enabled(int level)
{
	return level <= atomic_load_explicit(&cur_level, memory_order_relaxed);
}

static size_t
vline(char *buf, size_t len, int level, const char *fmt, va_list ap)
{
	char text[512];
	vsnprintf(text, sizeof(text), fmt, ap);
	const char *word = level <= HL_LOG_ERR       ? "error: "
	                   : level == HL_LOG_WARNING ? "warning: "
	                   : level >= HL_LOG_DEBUG   ? "debug: "
	                                             : "";
	int n, f = atomic_load_explicit(&cur_fmt, memory_order_relaxed);
	if (f == FMT_JOURNAL) /* journald adds SYSLOG_IDENTIFIER and _PID */
		n = snprintf(buf, len, "<%d>%s\n", level, text);
	else if (f == FMT_SYSLOG)
		n = snprintf(buf, len, "<%d>%s[%d]: %s\n", level, prog, (int)getpid(), text);
	else
		n = snprintf(buf, len, "%s[%d]: %s%s\n", prog, (int)getpid(), word, text);
	if (n < 0)
		n = 0;
	if ((size_t)n >= len && len > 1) {
		buf[len - 2] = '\n'; /* cut, but still one whole line */
		n = (int)len - 1;
	}
	return len ? (size_t)n : 0;
}

size_t
hl__log_line(char *buf, size_t len, int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	size_t n = vline(buf, len, level, fmt, ap);
	va_end(ap);
	return n;
}

void
hl__logl(int level, const char *fmt, ...)
{
	char buf[640];
	if (!hl__log_enabled(level))
		return;
	va_list ap;
	va_start(ap, fmt);
	vline(buf, sizeof(buf), level, fmt, ap);
	va_end(ap);
	fputs(buf, stderr);
}

unsigned
hl__log_cfg_opts(struct hl_cfg_opt *o, char **level, char **format)
{
	o[0] = (struct hl_cfg_opt){ .name = "log-level",
		                    .type = HL_CFG_STR,
		                    .def = "info",
		                    .metavar = "LEVEL",
		                    .choices = hl__log_levels,
		                    .help = "Log lines of this level and more urgent (SIGHUP "
		                            "re-reads it).",
		                    .dst = level };
	o[1] = (struct hl_cfg_opt){
		.name = "log-format",
		.type = HL_CFG_STR,
		.def = "auto",
		.metavar = "FORMAT",
		.choices = hl__log_formats,
		.help = "Line prefix: 'name[pid]: ', syslog '<N>name[pid]: ', journal '<N>' "
		        "(auto: journal under journald).",
		.dst = format
	};
	return 2;
}
