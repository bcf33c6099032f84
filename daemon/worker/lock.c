/* SPDX-License-Identifier: MIT */
/*
 * lock.c: the lock-order witness's per-thread state (lock.h). Debug
 * builds only; empty otherwise.
 */
#include "lock.h"

#ifdef HL_W_WITNESS
#include <stdio.h>
#include <stdlib.h>

_Thread_local unsigned hl_w_held;

void
hl_w_rank_violation(enum hl_w_rank rank, unsigned held)
{
	fprintf(stderr,
	        "heirloom-worker: lock order violated: taking rank %d while holding ranks 0x%x\n",
	        (int)rank, held);
	abort();
}
#else
/* ISO C wants something in a translation unit. */
typedef int hl_w_lock_empty;
#endif
