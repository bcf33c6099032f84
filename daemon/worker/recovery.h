/* SPDX-License-Identifier: MIT */
/*
 * recovery.h: rebuilding the allocators and repairing the segment at
 * attach, in two parts (see recovery.c), the replay check of requests in
 * flight, and the full invariant check. Calls keys.c, endpoint.c,
 * dispatch.c and wake.c. worker.c runs part 1 then hl_w_recover_kick();
 * the monitor (monitor.c) runs part 2 and hl_w_recover_serve().
 */
#ifndef HL_W_RECOVERY_H
#define HL_W_RECOVERY_H

#include "worker.h"

int hl_w_recover_begin(struct hl_worker *w);
void hl_w_recover_kick(struct hl_worker *w);
int hl_w_recover_finish(struct hl_worker *w);
void hl_w_recover_serve(struct hl_worker *w);
/* Before a shard thread reads key IDX's observer list: returns once that
 * list is repaired (at once when recovery is over). */
void hl_w_rec_key_ready(struct hl_worker *w, uint32_t idx);
int hl_w_check(struct hl_worker *w, char *msg, size_t len);

#endif /* HL_W_RECOVERY_H */
