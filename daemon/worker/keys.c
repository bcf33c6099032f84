/* SPDX-License-Identifier: MIT */
/*
 * keys.c: the key index (keys.h): hash buckets of key slots, each chain
 * changed under its bucket's seqlock so that clients walk it without a
 * lock. Every change follows apply.c's pattern: prepare where nobody can
 * see, then one release store (COMMIT), so that a SIGKILL leaves either
 * an unreachable slot (recovery frees it) or a complete change.
 *
 * Prefix entries (docs/architecture.md, "Prefix observers") are key slots
 * too, told apart by HL_HASH_PREFIX in their hash; this file also keeps
 * the summary of their lengths (struct hl_prefix_lens) that lets a
 * dispatch find the ones matching its key, and defers the reuse of a
 * freed entry's slot past an RCU grace period, because dispatches of
 * every shard read prefix entries without their shard.mu.
 */
#include "keys.h"

#include "lock.h"
#include "observers.h" /* rcu_tsan_*() only */
#include "seqlock.h"
#include "table_read.h"
#include "util.h"

#include <assert.h>
#include <sched.h>
#include <stdlib.h>
#include <urcu/urcu-memb.h>

#define LD_RLX(p)    atomic_load_explicit((p), memory_order_relaxed)
#define ST_RLX(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)

uint32_t
hl_w_key_shard(struct hl_worker *w, uint32_t key)
{
	const struct hl_shm_header *h = w->seg.h;
	return hl__shard_of_bucket(h, hl__bucket_of(h, hl__key(&w->seg, key)->hash));
}

/* Store VAL into LINK (the bucket's head or a slot's next) of bucket B:
 * the one change a chain ever sees, under the bucket's seqlock, so that a
 * client walking the chain retries (lib/table_read.c). The store is the
 * commit of the caller's change (release: the slot is complete first). */
static void
bucket_store(struct hl_shm_bucket *b, _Atomic uint32_t *link, uint32_t val)
{
	atomic_fetch_add_explicit(&b->seq, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(link, val, memory_order_release);
	atomic_fetch_add_explicit(&b->seq, 1, memory_order_release);
}

uint32_t
hl_w_key_find(struct hl_worker *w, const uint8_t *key, uint32_t len, uint64_t hash)
{
	assert(hl_w_rank_held(HL_W_RANK_SHARD));
	struct hl_shm_bucket *b = hl__bucket(&w->seg, hl__bucket_of(w->seg.h, hash));
	for (uint32_t i = LD_RLX(&b->head); i != HL_NIL;) {
		struct hl_shm_key *k = hl__key(&w->seg, i);
		if (k->hash == hash && k->key_len == len && memcmp(hl__key_bytes(k), key, len) == 0)
			return i;
		i = LD_RLX(&k->next);
	}
	return 0;
}

/* The filter bit of a prefix entry's hash (struct hl_prefix_lens): bits
 * 40..59, apart from the bucket's low bits and from HL_HASH_PREFIX. */
static inline uint32_t
filter_bit(uint64_t hash)
{
	return (uint32_t)(hash >> 40) & (HL_PREFIX_FILTER_BITS - 1);
}

/* A prefix entry of LEN bytes and hash HASH is about to be linked (or was
 * kept by recovery): count it, and set its length's bit and its filter
 * bit before the link. */
static void
plens_add(struct hl_worker *w, uint32_t len, uint64_t hash)
{
	struct hl_prefix_lens *pl = &w->plens;
	uint32_t fb = filter_bit(hash);
	atomic_fetch_or_explicit(&pl->filter[fb / 64], 1ull << (fb % 64), memory_order_relaxed);
	if (atomic_fetch_add_explicit(&pl->count[len], 1, memory_order_relaxed) == 0)
		atomic_fetch_or_explicit(&pl->bits[len / 64], 1ull << (len % 64),
		                         memory_order_relaxed);
	atomic_fetch_add_explicit(&pl->total, 1, memory_order_relaxed);
}

static void
plens_del(struct hl_worker *w, uint32_t len)
{
	struct hl_prefix_lens *pl = &w->plens;
	/* The bit stays (struct hl_prefix_lens): a stale one costs a probe. */
	atomic_fetch_sub_explicit(&pl->count[len], 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&pl->total, 1, memory_order_relaxed);
}

void
hl_w_prefix_recount(struct hl_worker *w, uint32_t idx)
{
	struct hl_shm_key *k = hl__key(&w->seg, idx);
	if (k->hash & HL_HASH_PREFIX)
		plens_add(w, k->key_len, k->hash);
}

uint32_t
hl_w_prefix_match(struct hl_worker *w, const uint8_t *key, uint32_t len, uint32_t *out)
{
	struct hl_prefix_lens *pl = &w->plens;
	uint32_t n = 0;
	if (atomic_load_explicit(&pl->total, memory_order_relaxed) == 0)
		return 0;
	for (uint32_t wi = 0; wi * 64 <= len && wi < sizeof(pl->bits) / sizeof(pl->bits[0]); wi++) {
		uint64_t bits = atomic_load_explicit(&pl->bits[wi], memory_order_relaxed);
		while (bits) {
			uint32_t l = wi * 64 + (uint32_t)__builtin_ctzll(bits);
			bits &= bits - 1;
			if (l == 0 || l > len)
				continue;
			/* The entry's bucket belongs to the shard of its bytes,
			 * which may be another: a lock-free read under the
			 * bucket's seqlock, as a client's hl_get() does. -EBUSY
			 * (the chain kept changing) is retried: its writer is a
			 * thread of this process between two stores. A damaged
			 * chain (HL_ECORRUPT; recovery repaired it, so only a
			 * bug) matches nothing. */
			uint64_t hash = hl__hash_prefix(key, l);
			uint32_t fb = filter_bit(hash);
			if (!(atomic_load_explicit(&pl->filter[fb / 64], memory_order_relaxed) &
			      (1ull << (fb % 64))))
				continue; /* no entry of this hash: no probe */
			uint32_t idx = 0;
			int rc;
			while ((rc = hl__key_lookup(&w->seg, key, l, hash, &idx)) == -EBUSY)
				sched_yield();
			if (rc == 0)
				out[n++] = idx;
		}
	}
	return n;
}

struct deferred_key {
	struct rcu_head rh;
	struct hl_worker *w;
	uint32_t idx;
};

static void
free_key_slot_cb(struct rcu_head *head)
{
	struct deferred_key *d = caa_container_of(head, struct deferred_key, rh);
	rcu_tsan_acquire();
	hl__pool_free(&d->w->keys, d->idx);
	free(d);
}

static uint32_t
key_create(struct hl_worker *w, const uint8_t *key, uint32_t len, uint64_t hash)
{
	uint32_t idx = hl__pool_alloc(&w->keys);
	if (!idx)
		return 0;
	struct hl_shm_key *k = hl__key(&w->seg, idx);
	struct hl_shm_bucket *b = hl__bucket(&w->seg, hl__bucket_of(w->seg.h, hash));
	/* The slot may be read by a client that still holds its old index:
	 * change it under its seqlock so that such a read retries. */
	hl__seq_write_begin(&k->seq);
	ST_RLX(&k->val, 0);
	ST_RLX(&k->rev, 0);
	ST_RLX(&k->obs_head, HL_NIL);
	ST_RLX(&k->nobs, 0);
	__atomic_store_n(&k->hash, hash, __ATOMIC_RELAXED);
	__atomic_store_n(&k->key_len, len, __ATOMIC_RELAXED);
	hl__racy_copy_in(hl__key_bytes(k), key, len);
	ST_RLX(&k->next, LD_RLX(&b->head));
	ST_RLX(&k->used, 1);
	hl__seq_write_end(&k->seq);
	if (hash & HL_HASH_PREFIX)
		plens_add(w, len, hash);
	/* COMMIT: linking the slot into its bucket. Before it, the slot is
	 * unreachable and recovery returns it to the pool. */
	bucket_store(b, &b->head, idx);
	atomic_fetch_add_explicit(&w->seg.h->keys_used, 1, memory_order_relaxed);
	return idx;
}

uint32_t
hl_w_key_get(struct hl_worker *w, const uint8_t *key, uint32_t len, uint64_t hash, int *created)
{
	assert(len >= 1 && len <= HL_KEY_MAX); /* request.c checked the request */
	uint32_t idx = hl_w_key_find(w, key, len, hash);
	*created = 0;
	if (idx)
		return idx;
	idx = key_create(w, key, len, hash);
	if (!idx) {
		/* Key pool full: counted for heirloomctl (issue 21). */
		atomic_fetch_add_explicit(&w->seg.h->keys_full, 1, memory_order_relaxed);
		return 0;
	}
	*created = 1;
	return idx;
}

void
hl_w_maybe_free_key(struct hl_shard *sh, uint32_t idx)
{
	struct hl_worker *w = sh->w;
	assert(hl_w_rank_held(HL_W_RANK_SHARD));
	struct hl_shm_key *k = hl__key(&w->seg, idx);
	if (LD_RLX(&k->val) != 0 || LD_RLX(&k->obs_head) != HL_NIL)
		return;
	struct hl_shm_bucket *b = hl__bucket(&w->seg, hl__bucket_of(w->seg.h, k->hash));
	_Atomic uint32_t *link = &b->head;
	while (LD_RLX(link) != HL_NIL && LD_RLX(link) != idx)
		link = &hl__key(&w->seg, LD_RLX(link))->next;
	if (LD_RLX(link) != idx)
		hl__die("key slot not in its bucket");
	/* COMMIT: unlinking. A crash after it leaves an unreachable slot,
	 * which recovery frees; readers walking the chain retry on seq. */
	bucket_store(b, link, LD_RLX(&k->next));
	ST_RLX(&k->used, 0);
	atomic_fetch_sub_explicit(&w->seg.h->keys_used, 1, memory_order_relaxed);
	if (!(k->hash & HL_HASH_PREFIX)) {
		hl__pool_free(&w->keys, idx);
		return;
	}
	/* A prefix entry: a dispatch of another shard that found it before
	 * the unlink may still read its obs_head (HL_NIL now) and key bytes;
	 * the slot is reused only after those read-side sections end. A
	 * crash before the callback leaves an unreachable slot, which
	 * recovery frees. */
	plens_del(w, k->key_len);
	struct deferred_key *d = malloc(sizeof(*d));
	if (d) {
		d->w = w;
		d->idx = idx;
		rcu_tsan_release();
		urcu_memb_call_rcu(&d->rh, free_key_slot_cb);
	} else {
		urcu_memb_synchronize_rcu(); /* no memory for the deferral */
		rcu_tsan_acquire();
		hl__pool_free(&w->keys, idx);
	}
}
