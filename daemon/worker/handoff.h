/* SPDX-License-Identifier: MIT */
/*
 * handoff.h: getting the segment from the keeper and giving it back
 * (handoff.c). Main thread only.
 */
#ifndef HL_W_HANDOFF_H
#define HL_W_HANDOFF_H

#include "worker.h"

int hl_w_acquire(struct hl_worker *w);
void hl_w_release(struct hl_worker *w, int clean);
int hl_w_acquire_standalone(struct hl_worker *w);

#endif /* HL_W_HANDOFF_H */
