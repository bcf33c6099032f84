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

/* A restored change (restore.c, before any thread serves): set KEY to
 * META + VAL at revision REV, or delete it (DEL). ONLY_NEWER (a log
 * record): leave a key whose revision is REV or above. Takes the key's
 * shard.mu; no dispatch, no history (nobody observes yet). 0, or -ENOSPC
 * when the key pool or the heap is full (nothing changed). */
int hl_w_apply_restored(struct hl_worker *w, int del, int only_newer, const uint8_t *key,
                        uint32_t key_len, const uint8_t *meta, uint32_t meta_len,
                        const uint8_t *val, uint32_t val_len, uint64_t rev);

#endif /* HL_W_APPLY_H */
