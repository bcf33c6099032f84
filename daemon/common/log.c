/* SPDX-License-Identifier: MIT */
/*
 * log.c: the daemons' stderr log (log.h). Owns only the program name.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

static const char *prog = "heirloom";

void
hl__log_init(const char *name)
{
	prog = name;
}

void
hl__log(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* One line per event, no timestamp: journald adds its own. */
	fprintf(stderr, "%s[%d]: %s\n", prog, (int)getpid(), buf);
}
