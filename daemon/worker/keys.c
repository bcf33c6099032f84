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

/*
 * The filter (struct hl_prefix_lens) holds two kinds of bits, both from a
 * running hash that a dispatch extends over its key in one pass, never
 * starting over per length as hl__hash() would:
 *
 *  - a word bit for each whole 8-byte word of each prefix entry: the
 *    state after the entry's first j words (one multiply per word),
 *    tagged with j. A key whose first j words have no word bit has no
 *    prefix of 8j bytes or more: the dispatch stops there. So a key that
 *    differs from every prefix in its first word costs one multiply and
 *    one filter load whatever the count of lengths in use;
 *  - an end bit per entry: the state after its whole words, with the
 *    bytes of its last partial word (the rest masked off) and their count
 *    absorbed (one more multiply). A dispatch tests it per length in use;
 *    only on a hit does it compute hl__hash() and probe the index.
 *
 * Only a filter: a collision costs a probe, never a wrong match, and bits
 * are never cleared while the worker runs (stale ones cost probes).
 *
 * The word holding a prefix's last bytes is loaded whole, up to 7 bytes
 * past the prefix: hl_w_prefix_match() reads them from the dispatched
 * key's slot (room for HL_KEY_MAX bytes rounded up to 8, asserted there),
 * pf_add() from a padded copy.
 */
#define PF_SEED 0x9e3779b97f4a7c15ull
#define PF_MUL  0xbf58476d1ce4e5b9ull
#define PF_WORD 0xd6e8feb86659fd93ull /* tags a word bit */

_Static_assert(HL_PREFIX_FILTER_BITS == 1u << 20, "pf_*() take 20 bits");

/* The product's top bits depend on every bit of its operand. */
static inline uint32_t
pf_top(uint64_t h)
{
	return (uint32_t)(h >> (64 - 20));
}

static inline uint64_t
pf_word(uint64_t ws, const uint8_t *at)
{
	uint64_t w;
	memcpy(&w, at, 8);
	return (ws ^ w) * PF_MUL;
}

/* The word bit of state WS after J words. */
static inline uint32_t
pf_word_bit(uint64_t ws, uint32_t j)
{
	return pf_top((ws ^ PF_WORD ^ j) * PF_MUL);
}

/* The end bit of a prefix of L bytes whose first L & ~7 are in state WS;
 * AT = its last partial word (when L % 8). */
static inline uint32_t
pf_end_bit(uint64_t ws, const uint8_t *at, uint32_t l)
{
	uint32_t rem = l & 7u;
	if (!rem)
		return pf_top(ws);
	uint64_t w;
	memcpy(&w, at, 8);
	w &= (1ull << (rem * 8)) - 1;
	return pf_top((ws ^ w ^ (uint64_t)rem << 56) * PF_MUL);
}

static inline int
pf_test(const struct hl_prefix_lens *pl, uint32_t fb)
{
	return (atomic_load_explicit(&pl->filter[fb / 64], memory_order_relaxed) >> (fb % 64)) & 1;
}

static inline void
pf_set(struct hl_prefix_lens *pl, uint32_t fb)
{
	atomic_fetch_or_explicit(&pl->filter[fb / 64], 1ull << (fb % 64), memory_order_relaxed);
}

/* A prefix entry of bytes P[0..LEN) is about to be linked (or was kept
 * by recovery): count it, and set its length's bit and its filter bits
 * before the link. */
static void
plens_add(struct hl_worker *w, const uint8_t *p, uint32_t len)
{
	struct hl_prefix_lens *pl = &w->plens;
	uint8_t buf[HL_KEY_MAX + 8] = { 0 };
	memcpy(buf, p, len);
	uint64_t ws = PF_SEED;
	uint32_t j = 0;
	for (; (j + 1) * 8 <= len; j++) {
		ws = pf_word(ws, buf + (size_t)j * 8);
		pf_set(pl, pf_word_bit(ws, j + 1));
	}
	pf_set(pl, pf_end_bit(ws, buf + (size_t)j * 8, len));
	if (atomic_fetch_add_explicit(&pl->count[len], 1, memory_order_relaxed) == 0)
		atomic_fetch_or_explicit(&pl->bits[len / 64], 1ull << (len % 64),
		                         memory_order_relaxed);
	atomic_fetch_add_explicit(&pl->total, 1, memory_order_relaxed);
}

static void
plens_del(struct hl_worker *w, uint32_t len)
{
	struct hl_prefix_lens *pl = &w->plens;
	/* The bits stay (struct hl_prefix_lens): a stale one costs a probe. */
	atomic_fetch_sub_explicit(&pl->count[len], 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&pl->total, 1, memory_order_relaxed);
}

void
hl_w_prefix_recount(struct hl_worker *w, uint32_t idx)
{
	struct hl_shm_key *k = hl__key(&w->seg, idx);
	if (k->hash & HL_HASH_PREFIX)
		plens_add(w, hl__key_bytes(k), k->key_len);
}

uint32_t
hl_w_prefix_match(struct hl_worker *w, const uint8_t *key, uint32_t len, uint32_t *out)
{
	struct hl_prefix_lens *pl = &w->plens;
	uint32_t n = 0;
	if (atomic_load_explicit(&pl->total, memory_order_relaxed) == 0)
		return 0;
	/* The dispatched key is in its slot (dispatch.c): pf_end_bit() may
	 * read up to 7 bytes past its end, within the slot. */
	_Static_assert((size_t)(HL_KEY_MAX + 7) / 8 * 8 <=
	                       (sizeof(struct hl_shm_key) + HL_KEY_MAX + HL_CACHELINE - 1) /
	                                       HL_CACHELINE * HL_CACHELINE -
	                               sizeof(struct hl_shm_key),
	               "a key slot (key_stride, lib/segment.c) holds the key's last word");
	/* Lengths ascending (the bits in order): one pass over the key, the
	 * state WS covering its first J words. */
	uint64_t ws = PF_SEED;
	uint32_t j = 0;
	for (uint32_t wi = 0; wi * 64 <= len && wi < sizeof(pl->bits) / sizeof(pl->bits[0]); wi++) {
		uint64_t bits = atomic_load_explicit(&pl->bits[wi], memory_order_relaxed);
		while (bits) {
			uint32_t l = wi * 64 + (uint32_t)__builtin_ctzll(bits);
			bits &= bits - 1;
			if (l == 0 || l > len)
				continue;
			while ((j + 1) * 8 <= l) {
				ws = pf_word(ws, key + (size_t)j * 8);
				if (!pf_test(pl, pf_word_bit(ws, ++j)))
					return n; /* no prefix of 8j bytes or more */
			}
			if (!pf_test(pl, pf_end_bit(ws, key + (size_t)j * 8, l)))
				continue; /* no entry of this prefix: no probe */
			/* The entry's bucket belongs to the shard of its bytes,
			 * which may be another: a lock-free read under the
			 * bucket's seqlock, as a client's hl_get() does. -EBUSY
			 * (the chain kept changing) is retried: its writer is a
			 * thread of this process between two stores. A damaged
			 * chain (HL_ECORRUPT; recovery repaired it, so only a
			 * bug) matches nothing. */
			uint64_t hash = hl__hash_prefix(key, l);
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
		plens_add(w, key, len);
	/* COMMIT: linking the slot into its bucket. Before it, the slot is
	 * unreachable and recovery returns it to the pool. */
	bucket_store(b, &b->head, idx);
	atomic_fetch_add_explicit(hash & HL_HASH_PREFIX ? &w->seg.h->prefixes_used
	                                                : &w->seg.h->keys_used,
	                          1, memory_order_relaxed);
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
	if (!(k->hash & HL_HASH_PREFIX)) {
		atomic_fetch_sub_explicit(&w->seg.h->keys_used, 1, memory_order_relaxed);
		hl__pool_free(&w->keys, idx);
		return;
	}
	/* A prefix entry: a dispatch of another shard that found it before
	 * the unlink may still read its obs_head (HL_NIL now) and key bytes;
	 * the slot is reused only after those read-side sections end. A
	 * crash before the callback leaves an unreachable slot, which
	 * recovery frees. */
	plens_del(w, k->key_len);
	atomic_fetch_sub_explicit(&w->seg.h->prefixes_used, 1, memory_order_relaxed);
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
