/* SPDX-License-Identifier: MIT */
/*
 * restore.h: loading the table from the state directory (durability,
 * issue 17) into a segment the keeper created and marked (header
 * dur_restore), before any thread of the worker serves. Calls apply.c
 * (hl_w_apply_restored) and the state-file reader (statefile.h).
 */
#ifndef HL_W_RESTORE_H
#define HL_W_RESTORE_H

#include "worker.h"

/* When the header asks for it, restore the table from its state_dir:
 * every file is checked first, then the snapshot's keys, then the logs'
 * changes (each over an older revision only); the revision counter and
 * each history floor are raised to the highest revision found, then
 * dur_restore is cleared (release). Call after recovery part 1, with no
 * thread running. 0 (also when there is nothing to do), or an error,
 * logged, with the table partly written: the caller exits and the next
 * worker restores again (every record overwrites). */
int hl_w_restore(struct hl_worker *w);

#endif /* HL_W_RESTORE_H */
