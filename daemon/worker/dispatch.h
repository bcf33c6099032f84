/* SPDX-License-Identifier: MIT */
/*
 * dispatch.h: delivering a key's change to its observers' event rings,
 * with the list copy that makes long lists fast. Calls keys.c, endpoint.c
 * (a ring it cannot write bans its client), wake.c, and one named upward
 * call into recovery.c (a list is repaired before its first dispatch).
 */
#ifndef HL_W_DISPATCH_H
#define HL_W_DISPATCH_H

#include "worker.h"

/* The per-key list copies (w->ocache), made once for the worker. */
int hl_w_dispatch_init(struct hl_worker *w);
void hl_w_dispatch_fini(struct hl_worker *w);
/* Finish the pending dispatch of key IDX (after a crash or right after a
 * commit): deliver to observers still behind, then drop the old value.
 * Called without shard.mu, on the key's shard thread (or recovery before
 * threads run). */
void hl_w_dispatch_pending(struct hl_shard *sh, uint32_t idx);

#endif /* HL_W_DISPATCH_H */
