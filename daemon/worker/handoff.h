/* SPDX-License-Identifier: MIT */
/*
 * handoff.h: getting the segment from the keeper and giving it back
 * (handoff.c). Main thread only.
 */
#ifndef HL_W_HANDOFF_H
#define HL_W_HANDOFF_H

#include "worker.h"

#include <stdbool.h>

int hl_w_acquire(struct hl_worker *w);
void hl_w_release(struct hl_worker *w, int clean);
int hl_w_acquire_standalone(struct hl_worker *w);

/* What the old worker of an upgrade does after hl_w_handover(). */
enum hl_w_after { HL_W_AFTER_EXIT, HL_W_AFTER_REEXEC };

/*
 * The old worker's side of an upgrade, after YIELD (w->yield) and with
 * every thread joined: send HANDOVER, then wait, parked, for the keeper's
 * verdict. HL_W_AFTER_EXIT: the new worker serves (RETIRE), or the table
 * is no longer ours; exit 0. HL_W_AFTER_REEXEC: the upgrade failed and the
 * table is ours to serve again (RESUME, or the keeper cancelled before
 * giving it away): run this binary again (hl_w_reexec()).
 */
enum hl_w_after hl_w_handover(struct hl_worker *w);

/* Execute this process's own binary (/proc/self/exe, which stays the old
 * file even after a package replaced the path) with ARGV. Returns only on
 * failure (logged). */
void hl_w_reexec(char **argv);

/* Whether the keeper started this worker for an upgrade
 * (HEIRLOOM_UPGRADE=1, read once at start). */
bool hl_w_upgrading(void);

#endif /* HL_W_HANDOFF_H */
