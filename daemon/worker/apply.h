/* SPDX-License-Identifier: MIT */
/*
 * apply.h: applying one validated request to the table (publish, delete,
 * observe, unobserve), then its dispatch. Calls keys.c, endpoint.c,
 * observers.c, dispatch.c and wake.c.
 */
#ifndef HL_W_APPLY_H
#define HL_W_APPLY_H

#include "worker.h"

int hl_w_apply(struct hl_shard *sh, uint32_t ep, uint64_t pos, const struct hl_req *r, uint32_t len,
               int64_t *result);

#endif /* HL_W_APPLY_H */
