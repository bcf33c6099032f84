/* SPDX-License-Identifier: MIT */
/*
 * seglog.c: appending to the segment's small log ring (worker exits,
 * hand-backs, recoveries, bad clients). Both daemons append, so a writer
 * claims its slot first (fetch_add on log_head) and fills it after; `kind`
 * is cleared while the record is filled and stored last with release. A
 * reader takes a record only when an acquire load of `kind` is non-zero
 * (and copies it racily: a record overwritten under it is a diagnostic
 * glitch, never a crash). A crash mid-record leaves kind 0: a skipped slot.
 */
#include "layout.h"
#include "util.h"

#include <stdio.h>

void
hl__seglog(struct hl_shm_header *h, uint32_t kind, int32_t code, uint32_t pid, uint64_t epoch,
           const char *text)
{
	uint64_t at = atomic_fetch_add_explicit(&h->log_head, 1, memory_order_acq_rel);
	struct hl_shm_logrec *r = &h->log[at % HL_ERRLOG_LEN];
	__atomic_store_n(&r->kind, 0u, __ATOMIC_RELAXED);
	r->time_ns = hl__wall_ns();
	r->code = code;
	r->pid = pid;
	r->pad = 0;
	r->epoch = epoch;
	snprintf(r->text, sizeof(r->text), "%s", text ? text : "");
	__atomic_store_n(&r->kind, kind, __ATOMIC_RELEASE);
}
