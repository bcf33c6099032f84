/* SPDX-License-Identifier: MIT */
/*
 * table_read.h: lock-free readers of the key index and the value blocks,
 * used by clients (hl_get, hl_inspect_key, hl_keys) and by the worker. The
 * segment is written concurrently by shard threads of another process and
 * may be corrupt, so every index and offset read here is bounds-checked
 * before use and every walk is bounded.
 */
#ifndef HL_TABLE_READ_H
#define HL_TABLE_READ_H

#include "segment.h"

#include <stddef.h>
#include <stdint.h>

/* Find KEY's slot (1-based) in its bucket: 0 and *idx, -ENOENT, -EBUSY (the
 * chain kept changing), HL_ECORRUPT (an index out of range or a loop). */
int hl__key_lookup(const struct hl_seg *s, const void *key, size_t len, uint64_t hash,
                   uint32_t *idx);

/* Whether value-block offset OFF with header V lies wholly inside the heap. */
int hl__value_ok(const struct hl_seg *s, uint64_t off, uint32_t len, uint32_t meta_len);

/* Read slot IDX's current value under its seqlock. Copies up to CAP bytes;
 * *len = full length, *rev = revision; -ENOENT when the key has no value
 * (then *rev is the revision of its delete, 0 if it never had a value). */
int hl__value_read(const struct hl_seg *s, uint32_t idx, void *buf, size_t cap, size_t *len,
                   uint64_t *rev);

/* Call CB for every key that has a value, read consistently under its
 * seqlock (the walk of hl_keys() and heirloomctl keys). A non-zero return
 * from CB stops the walk and is returned. Best effort under change. */
int hl__keys_walk(const struct hl_seg *s,
                  int (*cb)(const void *key, size_t len, uint64_t rev, void *arg), void *arg);

/* The observers of key slot IDX, as hl_inspect_key() and heirloomctl
 * inspect give them: fills up to CAP entries of OUT and returns how many
 * observers the list holds (which may exceed CAP), or HL_ECORRUPT (an index
 * out of range or a loop). ALIVE judges an endpoint's pid and start time:
 * the library and heirloomctl judge a pid differently. */
struct hl_observer_info;
int hl__observers_read(const struct hl_seg *s, uint32_t idx, struct hl_observer_info *out,
                       size_t cap, int (*alive)(uint32_t pid, uint64_t start));

/* The counters in header H summed over shards, as hl_stats() gives them
 * (lib/client.c); for readers with no client, such as heirloomctl. */
struct hl_stats;
void hl__stats_from_header(const struct hl_shm_header *h, struct hl_stats *st);

#endif /* HL_TABLE_READ_H */
