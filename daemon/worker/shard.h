/* SPDX-License-Identifier: MIT */
/*
 * shard.h: the shard threads: each drains its rings of every endpoint,
 * applies (apply.c), answers, and drains a killed endpoint's ring before
 * it signs off (endpoint.c). Calls apply.c, endpoint.c, telemetry.c,
 * wake.c and dispatch.c (its scratch).
 */
#ifndef HL_W_SHARD_H
#define HL_W_SHARD_H

#include "worker.h"

int hl_w_shard_init(struct hl_shard *sh);
void hl_w_shard_fini(struct hl_shard *sh);
int hl_w_shards_start(struct hl_worker *w);
void hl_w_shards_join(struct hl_worker *w);

#endif /* HL_W_SHARD_H */
