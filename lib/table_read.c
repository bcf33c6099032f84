/* SPDX-License-Identifier: MIT */
/*
 * table_read.c: lock-free, bounds-checked reads of keys and values (see
 * table_read.h). Owns no state and never writes to the segment.
 */
#include "table_read.h"

#include "heirloom/heirloom.h"
#include "seqlock.h"
#include "util.h"

#include <sched.h>

#define READ_RETRIES 1000

int
hl__key_lookup(const struct hl_seg *s, const void *key, size_t len, uint64_t hash, uint32_t *idx)
{
	const struct hl_shm_header *h = s->h;
	struct hl_shm_bucket *b = hl__bucket(s, hl__bucket_of(h, hash));
	for (int tries = 0; tries < READ_RETRIES; tries++) {
		uint32_t seq = atomic_load_explicit(&b->seq, memory_order_acquire);
		if (seq & 1u) {
			sched_yield();
			continue;
		}
		uint32_t i = atomic_load_explicit(&b->head, memory_order_acquire);
		uint32_t found = 0, steps = 0;
		int bad = 0;
		while (i != HL_NIL) {
			if (i > h->max_keys || ++steps > h->max_keys) {
				bad = 1;
				break;
			}
			struct hl_shm_key *k = hl__key(s, i);
			uint64_t kh = __atomic_load_n(&k->hash, __ATOMIC_RELAXED);
			uint32_t kl = __atomic_load_n(&k->key_len, __ATOMIC_RELAXED);
			if (kh == hash && kl == len) {
				uint8_t tmp[HL_KEY_MAX];
				hl__racy_copy_out(tmp, hl__key_bytes(k), len);
				if (memcmp(tmp, key, len) == 0) {
					found = i;
					break;
				}
			}
			i = atomic_load_explicit(&k->next, memory_order_acquire);
		}
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&b->seq, memory_order_relaxed) != seq)
			continue; /* the chain changed under us: the walk proves nothing */
		if (bad)
			return HL_ECORRUPT;
		if (!found)
			return -ENOENT;
		*idx = found;
		return 0;
	}
	return -EBUSY;
}

int
hl__value_ok(const struct hl_seg *s, uint64_t off, uint32_t len, uint32_t meta_len)
{
	const struct hl_shm_header *h = s->h;
	if (off < h->heap_off || off >= h->heap_off + h->heap_bytes || (off & 63u))
		return 0;
	if (len > h->max_value || meta_len > HL_META_MAX)
		return 0;
	uint64_t end = off + sizeof(struct hl_shm_value) + meta_len + len;
	return end <= h->heap_off + h->heap_bytes;
}

int
hl__value_read(const struct hl_seg *s, uint32_t idx, void *buf, size_t cap, size_t *len,
               uint64_t *rev)
{
	if (idx < 1 || idx > s->h->max_keys)
		return HL_ECORRUPT;
	struct hl_shm_key *k = hl__key(s, idx);
	for (int tries = 0; tries < READ_RETRIES; tries++) {
		uint64_t seq = hl__seq_read_begin(&k->seq);
		if (seq & 1u) {
			sched_yield();
			continue;
		}
		uint64_t off = atomic_load_explicit(&k->val, memory_order_relaxed);
		uint64_t r = atomic_load_explicit(&k->rev, memory_order_relaxed);
		if (off == 0 || (off & HL_VAL_DELETED)) {
			if (hl__seq_read_retry(&k->seq, seq))
				continue;
			/* No value, but the slot lives (observers keep it): its
			 * revision is the delete's (0 if it never had a value). */
			if (rev)
				*rev = r;
			return -ENOENT;
		}
		struct hl_shm_value vh;
		if (off < s->h->heap_off || off + sizeof(vh) > s->h->heap_off + s->h->heap_bytes) {
			if (hl__seq_read_retry(&k->seq, seq))
				continue;
			return HL_ECORRUPT;
		}
		hl__racy_copy_out(&vh, hl__val(s, off), sizeof(vh));
		int ok = (vh.type & 0xffu) == HL_VAL_PUT &&
		         hl__value_ok(s, off, vh.len, vh.meta_len);
		if (ok && buf && cap)
			hl__racy_copy_out(buf,
			                  (uint8_t *)hl__val(s, off) + sizeof(vh) + vh.meta_len,
			                  vh.len < cap ? vh.len : cap);
		if (hl__seq_read_retry(&k->seq, seq))
			continue;
		if (!ok)
			return HL_ECORRUPT;
		if (len)
			*len = vh.len;
		if (rev)
			*rev = r;
		return 0;
	}
	return -EBUSY;
}

int
hl__keys_walk(const struct hl_seg *s,
              int (*cb)(const void *key, size_t len, uint64_t rev, void *arg), void *arg)
{
	const struct hl_shm_header *h = s->h;
	/* No slot above the high-water mark was ever used (layout.h). A key
	 * created during the scan may be missed, as with any scan. */
	uint32_t n = atomic_load_explicit(&h->keys_hwm, memory_order_acquire);
	if (n > h->max_keys)
		n = h->max_keys;
	for (uint32_t i = 1; i <= n; i++) {
		struct hl_shm_key *k = hl__key(s, i);
		if (!atomic_load_explicit(&k->used, memory_order_acquire))
			continue;
		uint8_t key[HL_KEY_MAX];
		uint32_t kl = __atomic_load_n(&k->key_len, __ATOMIC_RELAXED);
		if (kl == 0 || kl > HL_KEY_MAX)
			continue;
		hl__racy_copy_out(key, hl__key_bytes(k), kl);
		size_t len;
		uint64_t rev;
		/* Only keys with a value are listed; the value read checks the
		 * slot is consistent under its seqlock. */
		if (hl__value_read(s, i, NULL, 0, &len, &rev) != 0)
			continue;
		int r = cb(key, kl, rev, arg);
		if (r)
			return r;
	}
	return 0;
}

int
hl__observers_read(const struct hl_seg *s, uint32_t idx, struct hl_observer_info *out, size_t cap,
                   int (*alive)(uint32_t pid, uint64_t start))
{
	const struct hl_shm_header *h = s->h;
	struct hl_shm_key *k = hl__key(s, idx);
	uint64_t hash = __atomic_load_n(&k->hash, __ATOMIC_RELAXED);
	uint32_t sh = hl__shard_of_bucket(h, hl__bucket_of(h, hash));
	uint64_t now = hl__wall_ns();
	size_t n = 0;
	uint32_t steps = 0;
	/* Readers follow only `next` (layout.h): a walk concurrent with an
	 * unlink may skip or repeat one observer, never leave the slots. The
	 * answer is a snapshot "as of roughly now", documented as such. */
	for (uint32_t i = atomic_load_explicit(&k->obs_head, memory_order_acquire); i != HL_NIL;) {
		if (i > h->max_observers || ++steps > h->max_observers)
			return HL_ECORRUPT;
		struct hl_shm_observer *o = hl__obs(s, i);
		uint64_t id = atomic_load_explicit(&o->id, memory_order_acquire);
		uint32_t ep = __atomic_load_n(&o->endpoint, __ATOMIC_RELAXED);
		if (id && n < cap && ep < h->max_endpoints) {
			struct hl_shm_epw *w = hl__epw(s, ep);
			uint32_t pid = atomic_load_explicit(&w->pid, memory_order_relaxed);
			uint64_t st = atomic_load_explicit(&w->start_time, memory_order_relaxed);
			uint64_t head = atomic_load_explicit(&hl__epw_shard(s, ep, sh)->ev_head,
			                                     memory_order_relaxed);
			uint64_t tail = atomic_load_explicit(&hl__epc_shard(s, ep, sh)->ev_tail,
			                                     memory_order_relaxed);
			uint64_t created = __atomic_load_n(&o->created_ns, __ATOMIC_RELAXED);
			out[n] = (struct hl_observer_info){
				.id = id,
				.pid = (pid_t)pid,
				.alive = alive(pid, st),
				.age_ns = now > created ? now - created : 0,
				.queue_depth = head - tail <= h->ev_ring_bytes ? head - tail : 0,
				.dropped = atomic_load_explicit(&o->dropped, memory_order_relaxed),
				.delivered_revision = atomic_load_explicit(&o->delivered_rev,
				                                           memory_order_relaxed),
			};
		}
		if (id)
			n++;
		i = atomic_load_explicit(&o->next, memory_order_acquire);
	}
	return n > INT32_MAX ? INT32_MAX : (int)n;
}
