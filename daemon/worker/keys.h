/* SPDX-License-Identifier: MIT */
/*
 * keys.h: the key index in the segment: finding, creating and freeing key
 * slots in their hash buckets, and which shard owns a key. Calls nothing
 * else of the worker. Context: the caller holds the key's shard.mu for
 * every call but hl_w_key_shard() (checked in debug builds).
 */
#ifndef HL_W_KEYS_H
#define HL_W_KEYS_H

#include "heirloom/heirloom.h"
#include "worker.h"

#include <string.h>

/* The shard that owns key slot KEY (any thread, no lock). */
uint32_t hl_w_key_shard(struct hl_worker *w, uint32_t key);
/* Slot of KEY (LEN bytes, hash HASH), or 0. */
uint32_t hl_w_key_find(struct hl_worker *w, const uint8_t *key, uint32_t len, uint64_t hash);
/* Slot of KEY, created (empty, linked into its bucket: the commit) when
 * missing; *created says which. 0 when the key pool is full (counted in
 * the header's keys_full), and nothing changed. */
uint32_t hl_w_key_get(struct hl_worker *w, const uint8_t *key, uint32_t len, uint64_t hash,
                      int *created);
/* Unlink and free key slot IDX if it has no value and no observer. A
 * prefix entry's slot returns to the pool only after an RCU grace period:
 * other shards' dispatches read it without its shard.mu. */
void hl_w_maybe_free_key(struct hl_shard *sh, uint32_t idx);

/* Recovery, before any shard thread runs: count kept slot IDX in
 * w->plens if it is a prefix entry. */
void hl_w_prefix_recount(struct hl_worker *w, uint32_t idx);
/* The prefix entries matching KEY (LEN bytes): their slots into
 * out[0..HL_KEY_MAX), the count returned; 0 at the cost of one load when
 * there is no prefix entry. Any thread, no lock; call inside an RCU
 * read-side section and use the slots only inside it (a freed entry's
 * slot is reused only after a grace period). A prefix entry linked or
 * unlinked concurrently may or may not be found. */
uint32_t hl_w_prefix_match(struct hl_worker *w, const uint8_t *key, uint32_t len, uint32_t *out);

/* Keys under HL_SYS_PREFIX are the worker's own (telemetry.c): only it
 * writes them, and their traffic is not counted, so that telemetry about
 * dispatches and lag never reports (and feeds on) itself. */
static inline int
hl_w_is_sys_key(const uint8_t *key, uint32_t len)
{
	return len >= sizeof(HL_SYS_PREFIX) - 1 &&
	       memcmp(key, HL_SYS_PREFIX, sizeof(HL_SYS_PREFIX) - 1) == 0;
}

#endif /* HL_W_KEYS_H */
