/* SPDX-License-Identifier: MIT */
/*
 * recovery.c: what a worker does to a table before and while it serves it,
 * after a clean hand-back or after a crash at any instruction:
 *
 *  1. Walk everything reachable from the buckets: key slots, value blocks
 *     (and the `prev` blocks of pending dispatches), observer lists. Check
 *     every index and offset; cut a chain at the first bad link (counted as
 *     a repair, logged).
 *  2. Rebuild the allocators from what was reached: anything allocated but
 *     not yet linked when the previous worker died is free again.
 *  3. Repair what a crash can leave half-done: odd seqlocks, observer
 *     `prev` links, unreachable slots still marked used, counters.
 *  4. Rebuild the process-local endpoint view; endpoints whose process is
 *     gone are cleaned as usual.
 *  5. Finish pending dispatches (new value with prev/PENDING_NEW set, or a
 *     deleted key still holding its old value): deliver to observers whose
 *     delivered_rev is behind, then drop the old value.
 *  6. Resolve the request each shard thread was applying when the previous
 *     worker died (resolve_in_flight()): applied, by its done record or by
 *     the commit's evidence, is answered and consumed; anything else is
 *     left in its ring and applied by the shard threads for the first time
 *     (shard.c). This runs before any dispatch or request, which could
 *     erase the evidence.
 *
 * In two parts, so that a publish after a crash waits only for the first:
 *  - hl_w_recover_begin() (main thread, no other thread yet): key chains,
 *    values, heap, key pool, endpoint states, pending dispatches;
 *  - hl_w_recover_finish() (monitor thread, while shard threads serve
 *    publishes and deletes): the observer lists, the observer slots nobody
 *    reached, the observer pool, the endpoints' lists; then
 *    hl_w_recover_serve() lets everything else through.
 * A list is walked by one thread only, whichever claims it first: the
 * background pass, or a shard thread about to dispatch that key
 * (hl_w_rec_key_ready()). Observe, unobserve, close, the adoption of new
 * clients and endpoint cleanup wait for the end (shard.c, endpoint.c), so
 * observer slots, the observer pool and the endpoints' lists have no other
 * writer meanwhile. docs/architecture.md, "Recovery in two parts".
 *
 * The observer lists are walked 16 side by side (walk_lists()): a list is
 * a chain of cache misses, and walking one at a time costs one memory
 * latency per observer. The result does not depend on the order: an
 * observer is only accepted into the list of the key it names (o->key),
 * and at most once (obs_ep).
 *
 * hl_w_check() is the full invariant check used by tests and the torture
 * run: it walks the same structures and compares with the allocators.
 */
#include "recovery.h"

#include "dispatch.h"
#include "endpoint.h"
#include "heirloom/heirloom.h"
#include "history.h"
#include "keys.h"
#include "lock.h"
#include "request.h"
#include "ring.h"
#include "seqlock.h"
#include "util.h"
#include "wake.h"

#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <unistd.h>

#define LD_RLX(p)    atomic_load_explicit((p), memory_order_relaxed)
#define ST_RLX(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)

/* A key reached through its bucket chain, in chain order. */
struct rec_key {
	uint32_t idx;
	uint32_t pending; /* a dispatch is unfinished (new value, prev or delete) */
};

/* What one walker (thread) found: merged when the walks are over. */
struct rec_acc {
	uint64_t repairs;
	uint64_t max_obs_seq;
	uint32_t max_obs_slot; /* the highest observer slot accepted */
};

/* Per key slot, while the observer lists are walked (kstate[]). A key's
 * list is walked by exactly one thread: the background pass or a shard
 * thread about to dispatch it (hl_w_rec_key_ready()), whichever claims
 * it first (CAS TODO -> WALKING); DONE is stored with release once the
 * list is repaired, so whoever acquires DONE sees the repaired list. */
enum { KEY_TODO = 0, KEY_WALKING = 1, KEY_DONE = 2 };

struct hl_rec {
	uint8_t *key_seen; /* per key slot: 1 linked, 2 visited but unlinked (empty) */
	/* Per observer slot: 0 = not reached, else its endpoint + 1. One
	 * array for "seen" and the endpoint, so that the walk writes one
	 * random place per observer (hl_w_ep_build_lists() reads it in
	 * order). Slot s is only written by the walker of key o->key: no
	 * two threads write one entry. */
	uint32_t *obs_ep;
	_Atomic uint8_t *kstate; /* per key slot (index = slot): KEY_* */
	struct rec_key *keys;    /* keys linked after walk_keys(), chain order */
	uint32_t nkeys;
	uint32_t *pending; /* keys with a pending dispatch */
	uint32_t npending;
	uint64_t resolved; /* in-flight requests found applied (resolve_in_flight()) */
	uint32_t *emptied; /* keys the background walk left with nothing */
	uint32_t nemptied;
	struct rec_acc acc; /* the main thread's part, then the background pass's */
	/* The walks shard threads ran (any thread may add). */
	_Atomic uint64_t fg_repairs, fg_max_obs_seq;
	_Atomic uint32_t fg_max_obs_slot;
	uint64_t max_rev;
	uint64_t neps;
	uint32_t ep_mark; /* endpoints' mark part 1 trusted (rec_eps_mark()) */
	uint64_t t0, t_keys, t_served, t_lists, t_clear, t_pools, t_eps;
};

/* Mark value block OFF; 0 if fine, else a reason to drop it. */
static int
mark_value(struct hl_worker *w, uint64_t off)
{
	const struct hl_shm_header *h = w->seg.h;
	if (off < h->heap_off || off + sizeof(struct hl_shm_value) > h->heap_off + h->heap_bytes ||
	    (off & 63u))
		return -EINVAL;
	struct hl_shm_value *v = hl__val(&w->seg, off);
	if ((v->type & 0xffu) != HL_VAL_PUT || v->len > h->max_value || v->meta_len > HL_META_MAX)
		return -EINVAL;
	int k = hl__heap_class_for(&w->heap, sizeof(*v) + v->meta_len + v->len);
	if (k < 0 || (uint32_t)k != v->klass)
		return -EINVAL;
	return hl__heap_mark(&w->heap, off, (uint32_t)k);
}

/* Observer lists followed side by side. Each lane holds one list; a step
 * accepts one observer and prefetches what the lane's next step touches,
 * so up to WALK_LANES misses are in flight instead of one (a core has
 * 10-24 outstanding misses). The walk alone (AMD EPYC, KVM guest):
 * a million observers over 10,000 keys whose slots were allocated in turn
 * (bench/heirloom_reattach) 25 -> 17 ms, in random slots 190 -> 18 ms;
 * in the worker, with the pool marks, ~50 -> ~30 ms. */
#define WALK_LANES 16

struct obs_lane {
	uint32_t key;           /* 0 = idle */
	_Atomic uint32_t *link; /* where the next observer's index is read */
	uint32_t prev, n;       /* the last accepted observer, how many so far */
};

/* What accepting observer slot I touches: the slot and its obs_ep entry.
 * always_inline: GCC 12 found a static function that only
 * prefetches free of side effects and dropped every call to it. */
static inline __attribute__((always_inline)) void
prefetch_obs(struct hl_worker *w, const struct hl_rec *rec, uint32_t i)
{
	if (i != HL_NIL && i <= w->seg.h->max_observers) {
		__builtin_prefetch(hl__obs(&w->seg, i));
		__builtin_prefetch(&rec->obs_ep[i - 1], 1);
	}
}

static void
lane_start(struct hl_worker *w, const struct hl_rec *rec, struct obs_lane *l, uint32_t kidx)
{
	struct hl_shm_key *k = hl__key(&w->seg, kidx);
	l->key = kidx;
	l->link = &k->obs_head;
	l->prev = HL_NIL;
	l->n = 0;
	prefetch_obs(w, rec, LD_RLX(&k->obs_head));
}

/* Accept the observer at *l->link into key l->key's list, or cut the list
 * there. Returns 0 at the end of the list (or at the cut).
 *
 * o->key is compared before obs_ep[] is read: a slot is accepted only by
 * the walker of the key it names, which is then the only thread that
 * reads or writes its obs_ep entry (another walker reaching it through a
 * bad link cuts there on the key alone). Observer slots do not change
 * while lists are walked, except o->prev and o->next, which only the
 * walker of their own key writes (observe, unobserve and cleanup wait for
 * the walks: shard.c). */
static int
lane_step(struct hl_worker *w, struct hl_rec *rec, struct rec_acc *acc, struct obs_lane *l)
{
	const struct hl_shm_header *h = w->seg.h;
	uint32_t i = LD_RLX(l->link);
	if (i == HL_NIL)
		return 0;
	struct hl_shm_observer *o = i <= h->max_observers ? hl__obs(&w->seg, i) : NULL;
	uint64_t id = o ? LD_RLX(&o->id) : 0;
	uint32_t ep = o ? o->endpoint : 0;
	if (!o || o->key != l->key || rec->obs_ep[i - 1] || id == 0 ||
	    (uint32_t)(id & 0xffffffu) != i || (id >> 24) == 0 || (id >> 24) >= HL_OBS_SEQ_LIMIT ||
	    ep >= h->max_endpoints) {
		/* Bad link (or a loop): cut the list here. */
		ST_RLX(l->link, HL_NIL);
		acc->repairs++;
		return 0;
	}
	rec->obs_ep[i - 1] = ep + 1; /* the pool is rebuilt from this (hl__pool_rebuild) */
	if (LD_RLX(&o->prev) != l->prev) {
		ST_RLX(&o->prev, l->prev); /* half-done link or unlink */
		acc->repairs++;
	}
	if (id >> 24 > acc->max_obs_seq)
		acc->max_obs_seq = id >> 24;
	if (i > acc->max_obs_slot)
		acc->max_obs_slot = i;
	l->prev = i;
	l->n++;
	l->link = &o->next;
	prefetch_obs(w, rec, LD_RLX(&o->next));
	return 1;
}

/* The list of l->key is walked: fix its count, publish it (DONE). Returns
 * 1 when the key has nothing left (its only observers were damage). */
static int
lane_finish(struct hl_worker *w, struct hl_rec *rec, struct obs_lane *l)
{
	struct hl_shm_key *k = hl__key(&w->seg, l->key);
	if (LD_RLX(&k->nobs) != l->n)
		ST_RLX(&k->nobs, l->n);
	int empty = l->n == 0 && LD_RLX(&k->val) == 0;
	atomic_store_explicit(&rec->kstate[l->key], KEY_DONE, memory_order_release);
	l->key = 0;
	return empty;
}

static int
claim_key(struct hl_rec *rec, uint32_t idx)
{
	uint8_t v = KEY_TODO;
	return atomic_compare_exchange_strong_explicit(&rec->kstate[idx], &v, KEY_WALKING,
	                                               memory_order_acq_rel, memory_order_acquire);
}

/* The background pass: walk the observer list of every key walk_keys()
 * kept that no shard thread claimed first. */
static void
walk_lists(struct hl_worker *w, struct hl_rec *rec)
{
	struct obs_lane lane[WALK_LANES] = { 0 };
	uint32_t next = 0;
	for (;;) {
		int busy = 0;
		for (int j = 0; j < WALK_LANES; j++) {
			struct obs_lane *l = &lane[j];
			while (!l->key && next < rec->nkeys) {
				uint32_t idx = rec->keys[next++].idx;
				if (claim_key(rec, idx))
					lane_start(w, rec, l, idx);
			}
			if (!l->key)
				continue;
			busy = 1;
			if (!lane_step(w, rec, &rec->acc, l)) {
				uint32_t idx = l->key;
				if (lane_finish(w, rec, l))
					rec->emptied[rec->nemptied++] = idx;
			}
		}
		if (!busy)
			return;
	}
}

void
hl_w_rec_key_ready(struct hl_worker *w, uint32_t idx)
{
	/* Acquire: pairs with the release that ends the recovery (every
	 * list was DONE before it). */
	if (!atomic_load_explicit(&w->recovering, memory_order_acquire))
		return;
	struct hl_rec *rec = w->rec;
	if (atomic_load_explicit(&rec->kstate[idx], memory_order_acquire) == KEY_DONE)
		return;
	if (claim_key(rec, idx)) {
		struct rec_acc acc = { 0 };
		struct obs_lane l;
		lane_start(w, rec, &l, idx);
		while (lane_step(w, rec, &acc, &l))
			;
		/* What the walk found goes in before DONE (release, in
		 * lane_finish()): the background pass reads these totals once
		 * every list is DONE, and the highest live id keeps ids
		 * unique (next_observer_seq). */
		if (acc.repairs)
			atomic_fetch_add_explicit(&rec->fg_repairs, acc.repairs,
			                          memory_order_relaxed);
		uint64_t m = atomic_load_explicit(&rec->fg_max_obs_seq, memory_order_relaxed);
		while (acc.max_obs_seq > m && !atomic_compare_exchange_weak_explicit(
		                                      &rec->fg_max_obs_seq, &m, acc.max_obs_seq,
		                                      memory_order_relaxed, memory_order_relaxed))
			;
		uint32_t mslot = atomic_load_explicit(&rec->fg_max_obs_slot, memory_order_relaxed);
		while (acc.max_obs_slot > mslot &&
		       !atomic_compare_exchange_weak_explicit(
		               &rec->fg_max_obs_slot, &mslot, acc.max_obs_slot,
		               memory_order_relaxed, memory_order_relaxed))
			;
		/* Never empty here: the caller dispatches a value or a delete,
		 * so the key holds one (k->val != 0) until after this returns. */
		(void)lane_finish(w, rec, &l);
		return;
	}
	/* The background pass has it in one of its lanes: one list, soon done. */
	while (atomic_load_explicit(&rec->kstate[idx], memory_order_acquire) != KEY_DONE)
		sched_yield();
}

/* Key slot I, linked at *LINK in bucket B's chain: checked, its value and
 * pending dispatch looked at. Returns 0 to keep it, -1 when the chain is
 * cut here (bad slot), 1 when the slot was unlinked (nothing left in it). */
static int
visit_key(struct hl_worker *w, struct hl_rec *st, uint32_t b, _Atomic uint32_t *link, uint32_t i)
{
	const struct hl_shm_header *h = w->seg.h;
	struct hl_shm_key *k = i <= h->max_keys ? hl__key(&w->seg, i) : NULL;
	if (!k || st->key_seen[i - 1] || k->key_len == 0 || k->key_len > HL_KEY_MAX ||
	    hl__bucket_of(h, k->hash) != b ||
	    ((k->hash & HL_HASH_PREFIX) ? hl__hash_prefix(hl__key_bytes(k), k->key_len)
	                                : hl__hash(hl__key_bytes(k), k->key_len)) != k->hash) {
		ST_RLX(link, HL_NIL);
		st->acc.repairs++;
		return -1;
	}
	st->key_seen[i - 1] = 1;
	st->acc.repairs += (uint64_t)hl__seq_repair(&k->seq);
	uint64_t val = LD_RLX(&k->val);
	uint64_t off = val & ~(uint64_t)HL_VAL_DELETED;
	uint32_t pending = 0;
	if (val && mark_value(w, off) != 0) {
		/* An impossible value: the key loses it (logged). */
		hl__seq_write_begin(&k->seq);
		ST_RLX(&k->val, 0);
		hl__seq_write_end(&k->seq);
		st->acc.repairs++;
		val = 0;
	}
	if (val & HL_VAL_DELETED) {
		pending = 1;
	} else if (val) {
		struct hl_shm_value *v = hl__val(&w->seg, val);
		uint64_t prev = LD_RLX(&v->prev);
		if (prev && mark_value(w, prev) != 0) {
			ST_RLX(&v->prev, 0);
			st->acc.repairs++;
			prev = 0;
		}
		pending = prev != 0 || (v->type & HL_VAL_PENDING_NEW);
	}
	if (LD_RLX(&k->rev) > st->max_rev)
		st->max_rev = LD_RLX(&k->rev);
	if (val == 0 && LD_RLX(&k->obs_head) == HL_NIL) {
		/* Nothing left (damage cost it its value and its observers):
		 * a slot with neither is unlinked, as hl_w_maybe_free_key()
		 * would have. Still marked as visited, so that a chain looping
		 * back to this slot is cut there. Clearing the mark let a cycle
		 * through an empty slot spin recovery forever (fuzz_attach,
		 * regress_empty_key_cycle). */
		if (LD_RLX(&k->nobs) != 0)
			ST_RLX(&k->nobs, 0);
		ST_RLX(link, LD_RLX(&k->next));
		st->key_seen[i - 1] = 2;
		st->acc.repairs++;
		return 1;
	}
	st->keys[st->nkeys++] = (struct rec_key){ .idx = i, .pending = pending };
	return 0;
}

static void
walk_keys(struct hl_worker *w, struct hl_rec *st)
{
	const struct hl_shm_header *h = w->seg.h;
	for (uint32_t b = 0; b < h->nbuckets; b++) {
		struct hl_shm_bucket *bk = hl__bucket(&w->seg, b);
		uint32_t seq = LD_RLX(&bk->seq);
		if (seq & 1u) {
			ST_RLX(&bk->seq, seq + 1);
			st->acc.repairs++;
		}
		_Atomic uint32_t *link = &bk->head;
		for (;;) {
			uint32_t i = LD_RLX(link);
			if (i == HL_NIL)
				break;
			int rc = visit_key(w, st, b, link, i);
			if (rc < 0)
				break;
			if (rc == 0)
				link = &hl__key(&w->seg, i)->next;
		}
	}
}

/* The keys that stay: allocated, marked used, pending dispatches noted
 * (chain order, as they are dispatched). A key whose observers all turn
 * out to be damage is freed after the walk (free_emptied()). */
static void
keep_keys(struct hl_worker *w, struct hl_rec *st)
{
	/* The prefix lengths in use are counted again from the kept prefix
	 * entries (worker memory: a new process starts from zero anyway). */
	struct hl_prefix_lens *pl = &w->plens;
	ST_RLX(&pl->total, 0);
	for (size_t i = 0; i < sizeof(pl->bits) / sizeof(pl->bits[0]); i++)
		ST_RLX(&pl->bits[i], 0);
	for (size_t i = 0; i <= HL_KEY_MAX; i++)
		ST_RLX(&pl->count[i], 0);
	for (size_t i = 0; i < HL_PREFIX_FILTER_BITS / 64; i++)
		ST_RLX(&pl->filter[i], 0);
	for (uint32_t j = 0; j < st->nkeys; j++) {
		uint32_t i = st->keys[j].idx;
		hl__pool_mark(&w->keys, i);
		hl_w_prefix_recount(w, i);
		ST_RLX(&hl__key(&w->seg, i)->used, 1);
		if (st->keys[j].pending)
			st->pending[st->npending++] = i;
	}
}

/* After the walks: free the keys the background walk left with neither
 * value nor observer (their only observers were damage), under their
 * shard's mutex as any unlink is. Shard threads may have served such a
 * key since: published to it (it has a value now: kept) or deleted it
 * (freed already: `used` is 0). Observe waits for the end of recovery, so
 * a used slot with neither value nor observer is one of ours. */
static void
free_if_empty(struct hl_worker *w, struct hl_rec *rec, uint32_t i)
{
	struct hl_shm_key *k = hl__key(&w->seg, i);
	struct hl_shard *sh = &w->shards[hl_w_key_shard(w, i)];
	hl_w_lock(&sh->mu, HL_W_RANK_SHARD);
	if (LD_RLX(&k->used) && LD_RLX(&k->val) == 0 && LD_RLX(&k->obs_head) == HL_NIL) {
		hl_w_maybe_free_key(sh, i);
		rec->acc.repairs++;
	}
	hl_w_unlock(&sh->mu, HL_W_RANK_SHARD);
}

static void
free_emptied(struct hl_worker *w, struct hl_rec *rec)
{
	for (uint32_t j = 0; j < rec->nemptied; j++)
		free_if_empty(w, rec, rec->emptied[j]);
	/* A prefix entry's list may have been walked first by a dispatch of
	 * any shard (hl_w_rec_key_ready()), which reports no emptied list
	 * (a dispatched key holds a value; a prefix entry never does). So
	 * every kept prefix entry is looked at too. Its slot cannot have
	 * become another prefix entry since: observe waits for the end of
	 * recovery; a key reusing it has HL_HASH_PREFIX clear (the hash is
	 * stored with an atomic builtin, and read again under the lock by
	 * hl_w_key_shard()). Test: test_prefix_entry_emptied_by_damage_is_
	 * freed_after_a_dispatch_walked_it (tests/test_recovery.c). */
	for (uint32_t j = 0; j < rec->nkeys; j++) {
		uint32_t i = rec->keys[j].idx;
		if (__atomic_load_n(&hl__key(&w->seg, i)->hash, __ATOMIC_RELAXED) & HL_HASH_PREFIX)
			free_if_empty(w, rec, i);
	}
}

/* The high-water mark *HWM (layout.h) clamped to the capacity N and raised
 * to REACHED, the highest slot a walk accepted; stored back when it moved.
 * Slots above the result were never written: zero, nothing to clear. */
static uint32_t
slot_hwm(_Atomic uint32_t *hwm, uint32_t n, uint32_t reached)
{
	uint32_t m = LD_RLX(hwm), was = m;
	if (m > n)
		m = n; /* damage */
	if (reached > m)
		m = reached; /* damage, or a mark a crash kept from being raised */
	if (m != was)
		ST_RLX(hwm, m);
	return m;
}

/* The endpoints' high-water mark (layout.h, eps_hwm) recovery trusts: the
 * header's, clamped, and raised past every endpoint whose claim word was
 * ever written (no endpoint is adopted before it is claimed, and a claim's
 * gen never returns to 0). Two records, one of them client-writable: a
 * damaged claim only makes the pass longer, and hiding an endpoint takes
 * damage to the header too. Claims are one line each, 64 of them a page:
 * cheap beside the endpoints' own lines. Stored back when it moved. */
static uint32_t
rec_eps_mark(struct hl_worker *w)
{
	const struct hl_shm_header *h = w->seg.h;
	uint32_t m = hl_w_eps_hwm(w);
	for (uint32_t ep = h->max_endpoints; ep > m; ep--)
		if (LD_RLX(&hl__claim(&w->seg, ep - 1)->word)) {
			m = ep;
			break;
		}
	if (m != LD_RLX(&h->eps_hwm))
		ST_RLX(&w->seg.h->eps_hwm, m);
	return m;
}

static void
rec_free(struct hl_rec *rec)
{
	if (!rec)
		return;
	free(rec->key_seen);
	free(rec->obs_ep);
	free(rec->kstate);
	free(rec->keys);
	free(rec->pending);
	free(rec->emptied);
	free(rec);
}

static double
ms(uint64_t a, uint64_t b)
{
	return (double)(b - a) / 1e6;
}

/* Is observer SLOT linked in its key's list? Caller holds shard.mu. */
static int
obs_linked(struct hl_worker *w, uint32_t slot)
{
	uint32_t key = hl__obs(&w->seg, slot)->key;
	if (key < 1 || key > w->seg.h->max_keys)
		return 0;
	uint32_t steps = 0;
	for (uint32_t i = LD_RLX(&hl__key(&w->seg, key)->obs_head);
	     i != HL_NIL && i <= w->seg.h->max_observers && steps++ <= w->seg.h->max_observers;
	     i = LD_RLX(&hl__obs(&w->seg, i)->next))
		if (i == slot)
			return 1;
	return 0;
}

/*
 * Recovery's replay check (recovery.c, resolve_in_flight()): did the
 * previous worker commit request R, at ring position POS of endpoint EP
 * (incarnation GEN), before it died without a done record? 1 with the
 * request's outcome in *result, else 0 (it was not applied: it is applied
 * later, for the first time).
 *
 * The answer is read from the record each commit publishes together with
 * its effect, never from values (another client may have written the same
 * value meanwhile):
 *  PUBLISH    the key's current value block names (EP, GEN, POS) as origin;
 *  DELETE     the key is deleted, dispatch pending, and its old block names
 *             (EP, GEN, POS) (stored just before the commit);
 *  PUBLISH_IF, DELETE_IF  as PUBLISH and DELETE; the answer is the key's
 *             revision (the commit's). A conflict commits nothing: it
 *             leaves no evidence, so without its done record it is not
 *             found here and is decided again, for the first time (its
 *             answer was never given: it is given after the done record);

 *  OBSERVE    an observer of this endpoint incarnation with req_pos == POS
 *             is linked in the key's list;
 *  UNOBSERVE  the observer R names carries req_pos == POS (stored just
 *             before the unlink) and is no longer linked.
 * Valid only while that evidence cannot have been erased: recovery calls
 * it before anything else is applied or dispatched, and a worker erases it
 * only after the done record (hl_w_req_done()). Caller: recovery's part 1, no
 * other thread running; the key's list is repaired first.
 */
static int
req_committed(struct hl_shard *sh, uint32_t ep, uint32_t gen, uint64_t pos, const struct hl_req *r,
              int64_t *result)
{
	struct hl_worker *w = sh->w;
	const uint8_t *key = (const uint8_t *)(r + 1);
	int found = 0;
	*result = 0;
	if (r->h.type == HL_REQ_UNOBSERVE) {
		uint32_t slot = (uint32_t)(r->arg & 0xffffffu);
		if (slot < 1 || slot > w->seg.h->max_observers)
			return 0;
		struct hl_shm_observer *o = hl__obs(&w->seg, slot);
		uint32_t key_idx = o->key;
		if (key_idx >= 1 && key_idx <= w->seg.h->max_keys)
			hl_w_rec_key_ready(w, key_idx);
		hl_w_lock(&sh->mu, HL_W_RANK_SHARD);
		found = o->endpoint == ep && o->ep_gen == gen && o->req_pos == pos &&
		        !obs_linked(w, slot);
		hl_w_unlock(&sh->mu, HL_W_RANK_SHARD);
		return found;
	}
	if (!hl__req_is_write(r->h.type) && r->h.type != HL_REQ_OBSERVE)
		return 0;
	hl_w_lock(&sh->mu, HL_W_RANK_SHARD);
	/* A prefix observe linked its observer to the prefix entry (the
	 * same bytes, HL_HASH_PREFIX set): its evidence is there. */
	uint64_t hash = r->h.type == HL_REQ_OBSERVE && (r->arg & HL_OBSERVE_PREFIX)
	                        ? hl__hash_prefix(key, r->h.key_len)
	                        : hl__hash(key, r->h.key_len);
	uint32_t idx = hl_w_key_find(w, key, r->h.key_len, hash);
	hl_w_unlock(&sh->mu, HL_W_RANK_SHARD);
	if (!idx)
		return 0;
	struct hl_shm_key *k = hl__key(&w->seg, idx);
	if (r->h.type == HL_REQ_OBSERVE)
		hl_w_rec_key_ready(w, idx);
	hl_w_lock(&sh->mu, HL_W_RANK_SHARD);
	uint64_t val = LD_RLX(&k->val);
	if (hl__req_is_write(r->h.type)) {
		int is_del = r->h.type == HL_REQ_DELETE || r->h.type == HL_REQ_DELETE_IF;
		int deleted = (val & HL_VAL_DELETED) != 0;
		uint64_t off = val & ~(uint64_t)HL_VAL_DELETED;
		if (off && deleted == is_del) {
			const struct hl_shm_value *v = hl__val(&w->seg, off);
			found = v->org_ep == ep && v->org_gen == gen && v->org_pos == pos;
		}
		/* A conditional request found committed was a success, and is
		 * answered with the revision its commit made, which is still
		 * the key's: nothing was applied to it since (the done
		 * record, missing here, comes before any further request).
		 * Its condition is NOT evaluated again: the key's revision is
		 * no longer the expected one, because of this very commit. */
		if (found && r->h.type != HL_REQ_PUBLISH && r->h.type != HL_REQ_DELETE)
			*result = (int64_t)LD_RLX(&k->rev);
	} else {
		uint32_t steps = 0;
		for (uint32_t i = LD_RLX(&k->obs_head); i != HL_NIL &&
		                                        i <= w->seg.h->max_observers &&
		                                        steps++ <= w->seg.h->max_observers;) {
			struct hl_shm_observer *o = hl__obs(&w->seg, i);
			uint64_t oid = LD_RLX(&o->id);
			if (oid && o->endpoint == ep && o->ep_gen == gen && o->req_pos == pos) {
				*result = (int64_t)oid;
				found = 1;
				break;
			}
			i = LD_RLX(&o->next);
		}
	}
	hl_w_unlock(&sh->mu, HL_W_RANK_SHARD);
	return found;
}

/*
 * Step 6 (see the top of this file). For each endpoint-shard pair whose
 * intent_pos names the record at its ring's tail, the previous worker was
 * applying that request when it died (each shard thread applies one
 * request at a time, so there is at most one per shard). Applied (done
 * record, or the evidence hl_w_req_committed() reads): answer it as the
 * first application did and consume it. Otherwise leave it: it was never
 * applied, and the shard thread applies it in ring order. A crash in here
 * leaves the same question to the next worker, with the same answers.
 * Returns how many were found applied.
 */
static uint64_t
resolve_in_flight(struct hl_worker *w)
{
	const struct hl_shm_header *h = w->seg.h;
	uint64_t resolved = 0;
	const uint32_t ep_mark = w->rec->ep_mark; /* above: FREE */
	for (uint32_t ep = 0; ep < ep_mark; ep++) {
		struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
		uint32_t state = LD_RLX(&pw->state);
		/* A banned endpoint's rings are garbage: nothing there is
		 * trusted, nothing is answered. */
		if (state != HL_EP_ACTIVE && state != HL_EP_DEAD)
			continue;
		uint32_t gen = LD_RLX(&pw->gen);
		for (uint32_t s = 0; s < w->nshards; s++) {
			struct hl_shard *sh = &w->shards[s];
			struct hl_shm_epw_shard *ws = hl__epw_shard(&w->seg, ep, s);
			struct hl_ring ring = { .head = &hl__epc_shard(&w->seg, ep, s)->req_head,
				                .tail = &ws->req_tail,
				                .data = hl__req_ring(&w->seg, ep, s),
				                .size = h->req_ring_bytes };
			uint64_t at = LD_RLX(&ws->req_tail), intent = LD_RLX(&ws->intent_pos);
			if (intent <= at)
				continue;
			const uint8_t *rec;
			uint32_t len;
			if (hl__ring_peek(&ring, &at, &rec, &len) != 1 || intent != at + 1)
				continue;
			/* One copy, validated (the client may write the ring);
			 * a bad record is left for the shard thread to refuse. */
			memcpy(sh->req, rec, len);
			const struct hl_req *r = (const struct hl_req *)sh->req;
			if (hl_w_check_req(h, s, r, len))
				continue;
			int64_t res = 0;
			int done = LD_RLX(&ws->done_pos) == at + 1;
			if (done)
				res = LD_RLX(&ws->done_result);
			else if (!req_committed(sh, ep, gen, at, r, &res))
				continue;
			if (!done) {
				ST_RLX(&ws->done_result, res);
				atomic_store_explicit(&ws->done_pos, at + 1, memory_order_release);
			}
			if (r->flags & HL_REQF_SYNC) {
				ST_RLX(&ws->result_rev, hl_w_answer_rev(w, r->h.type, res));
				ST_RLX(&ws->result, res);
				atomic_store_explicit(&ws->result_pos, at + 1,
				                      memory_order_release);
			} else if (res < 0 && LD_RLX(&ws->err_pos) != at + 1) {
				/* The report the dead worker did not finish. */
				ST_RLX(&ws->last_err, (int32_t)res);
				atomic_fetch_add_explicit(&ws->async_errs, 1, memory_order_release);
				ST_RLX(&ws->err_pos, at + 1);
			}
			hl__ring_consume(&ring, at + len);
			hl_w_wake_client(w, ep);
			resolved++;
		}
	}
	return resolved;
}

/*
 * Part 1, before any request is served: keys, values, the heap and the key
 * pool, endpoints' states, pending dispatches. After it, publishes and
 * deletes can be applied: their dispatch walks (repairs) the key's list
 * first if the background part has not yet (hl_w_rec_key_ready()).
 */
int
hl_w_recover_begin(struct hl_worker *w)
{
	struct hl_shm_header *h = w->seg.h;
	/* A previous pass's state (hl_w_recover() run again, no thread). */
	rec_free(w->rec);
	w->rec = NULL;
	struct hl_rec *st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->t0 = hl__now_ns();
	st->key_seen = calloc(h->max_keys, 1);
	st->obs_ep = calloc(h->max_observers, sizeof(*st->obs_ep));
	st->kstate = calloc((size_t)h->max_keys + 1, sizeof(*st->kstate));
	st->keys = calloc(h->max_keys, sizeof(*st->keys));
	st->pending = calloc(h->max_keys, sizeof(uint32_t));
	st->emptied = calloc(h->max_keys, sizeof(uint32_t));
	if (!st->key_seen || !st->obs_ep || !st->kstate || !st->keys || !st->pending ||
	    !st->emptied) {
		rec_free(st);
		return -ENOMEM;
	}
	w->rec = st;
	atomic_store_explicit(&w->recovering, 1, memory_order_relaxed);
	hl__heap_reset(&w->heap);
	hl__pool_reset(&w->keys);

	walk_keys(w, st);
	keep_keys(w, st);
	/* Key slots not reached are free: clear what a crash left marked,
	 * up to the high-water mark (none above it was ever written). */
	uint32_t kmax = 0;
	for (uint32_t j = 0; j < st->nkeys; j++)
		if (st->keys[j].idx > kmax)
			kmax = st->keys[j].idx;
	kmax = slot_hwm(&h->keys_hwm, h->max_keys, kmax);
	for (uint32_t i = 1; i <= kmax; i++) {
		struct hl_shm_key *k = hl__key(&w->seg, i);
		if (st->key_seen[i - 1] != 1 && LD_RLX(&k->used)) {
			ST_RLX(&k->used, 0);
			st->acc.repairs++;
		}
	}
	hl__heap_finish(&w->heap);
	hl__pool_finish(&w->keys);
	/* Revisions only move forward. */
	if (LD_RLX(&h->revision) < st->max_rev)
		ST_RLX(&h->revision, st->max_rev);
	/* keep_keys() counted the prefix entries among them. */
	uint32_t nprefix = atomic_load_explicit(&w->plens.total, memory_order_relaxed);
	ST_RLX(&h->keys_used, st->nkeys - nprefix);
	ST_RLX(&h->prefixes_used, nprefix);
	ST_RLX(&h->heap_used, hl__heap_used(&w->heap));
	st->t_keys = hl__now_ns();

	/* Endpoints: states, and the incarnation of each one in use. A free
	 * endpoint that still holds observers (a crash in the middle of its
	 * cleanup) is known only after the walks: part 2 adopts it as dead
	 * (adopt_orphans()); until then no new client is adopted (endpoint.c). */
	ST_RLX(&h->endpoints_polled, 0); /* the last worker's; counted again below */
	/* Above the mark nothing was ever written (layout.h, eps_hwm): FREE,
	 * positions 0. Not reading those lines is most of this pass's cost
	 * in a fresh process, a page fault per endpoint. */
	const uint32_t ep_mark = st->ep_mark = rec_eps_mark(w);
	atomic_store_explicit(&w->ep_vetted, ep_mark, memory_order_relaxed);
	for (uint32_t ep = 0; ep < h->max_endpoints; ep++) {
		struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
		struct hl_ep *e = &w->eps[ep];
		e->nobs = 0;
		e->gen = 0;
		e->pidfd = -1;
		e->polled = 0;
		if (ep >= ep_mark)
			continue;
		uint32_t state = LD_RLX(&pw->state);
		if (state != HL_EP_FREE && state != HL_EP_ACTIVE && state != HL_EP_DEAD &&
		    state != HL_EP_BANNED) {
			/* Not a state we write: damage. Clean it like a dead one. */
			state = HL_EP_DEAD;
			ST_RLX(&pw->state, HL_EP_DEAD);
			st->acc.repairs++;
		}
		if (state == HL_EP_FREE) /* a client may claim it meanwhile */
			st->acc.repairs += (uint64_t)hl_w_ep_fix_free(w, ep, 0);
		if (state == HL_EP_FREE)
			continue;
		e->gen = LD_RLX(&pw->gen);
		e->pid = LD_RLX(&pw->pid);
		e->start = LD_RLX(&pw->start_time);
		st->neps++;
		/* Same process still there? Keep it (a new pidfd); else clean. */
		if (state == HL_EP_ACTIVE) {
			uint64_t word = LD_RLX(&hl__claim(&w->seg, ep)->word);
			/* "Cannot tell" (a /proc read or pidfd_open short of
			 * descriptors) keeps the client, watched by polling. */
			if (HL_CLAIM_PID(word) == e->pid && HL_CLAIM_GEN(word) == e->gen &&
			    hl__proc_check((int)e->pid, e->start) != 0) {
				e->pidfd = (int)syscall(SYS_pidfd_open, (pid_t)e->pid, 0);
				if (e->pidfd < 0 && errno != ESRCH)
					hl_w_ep_poll_instead(w, ep, errno);
				/* hl_fd(): the client's loop keeps its registration;
				 * we take the socket again and send once. */
				hl_w_ep_retake_wake(w, ep);
				continue;
			}
			ST_RLX(&pw->state, HL_EP_DEAD);
		}
	}
	ST_RLX(&h->endpoints_used, st->neps);

	/* Before the pending dispatches: finishing a delete's frees the key,
	 * which is the evidence resolve_in_flight() reads. */
	st->resolved = resolve_in_flight(w);

	/* The history rings: where each ends, before the pending dispatches
	 * append what a crash kept out of them (records: part 2). */
	st->acc.repairs += hl_w_hist_recover(w);

	/* Finish pending dispatches, shard by shard (no shard thread runs
	 * yet; each walks its key's list first). */
	for (uint32_t i = 0; i < st->npending; i++) {
		uint32_t k = st->pending[i];
		hl_w_dispatch_pending(&w->shards[hl_w_key_shard(w, k)], k);
	}
	st->t_served = hl__now_ns();
	return 0;
}

/* Endpoints that hold observers under no incarnation (gen 0): free ones (a
 * crash in the middle of a cleanup, or damage), and dead ones whose gen
 * is 0 (damage, or a crash of an older worker in the middle of this very
 * adoption): the cleanup skips gen 0. Adopted as dead under a claim of
 * their own, so that hl_w_recover_serve() cleans them. Under e->mu: shard
 * threads run; none adopts a free endpoint until recovery ends. */
static void
adopt_orphans(struct hl_worker *w, struct hl_rec *st)
{
	const struct hl_shm_header *h = w->seg.h;
	uint64_t more = 0;
	for (uint32_t ep = 0; ep < h->max_endpoints; ep++) {
		struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
		struct hl_ep *e = &w->eps[ep];
		hl_w_lock(&e->mu, HL_W_RANK_EP);
		/* Above part 1's mark only damage links an observer: whatever
		 * its lines say, part 1 adopted nobody there. */
		uint32_t state = LD_RLX(&pw->state);
		/* Not counted in endpoints_used by part 1: free, or above its
		 * mark. */
		int uncounted = ep >= st->ep_mark || state == HL_EP_FREE;
		if (e->nobs && e->gen == 0 && (uncounted || state == HL_EP_DEAD)) {
			hl_w_ep_mark(w, ep); /* hl_w_ep_build_lists() did */
			/* The claim first (no client takes EP once we hold it),
			 * then the incarnation, DEAD last. A SIGKILL before DEAD
			 * leaves EP free in state (or DEAD under gen 0: a damaged
			 * state above the mark), its claim held by a dead pid
			 * and its observers linked: the next recovery finds the
			 * same orphan and takes that claim's gen. Once DEAD,
			 * part 1 reads the gen back and cleans it. */
			e->gen = hl_w_ep_take_orphan(w, ep, &e->pid, &e->start);
			ST_RLX(&pw->gen, e->gen);
			ST_RLX(&pw->pid, e->pid);
			ST_RLX(&pw->start_time, e->start);
			ST_RLX(&pw->state, HL_EP_DEAD);
			st->acc.repairs++;
			more += (uint64_t)uncounted;
		}
		hl_w_unlock(&e->mu, HL_W_RANK_EP);
	}
	if (more)
		atomic_fetch_add_explicit(&w->seg.h->endpoints_used, more, memory_order_relaxed);
	st->neps += more;
}

/*
 * Part 2, while shard threads may already serve publishes: every observer
 * list, the slots nobody reached, the observer pool, the endpoints' lists.
 * Nothing here races with a shard thread: it walks a list only after
 * claiming it (hl_w_rec_key_ready() does the same), and observe,
 * unobserve, new clients and cleanup wait until hl_w_recover_serve().
 * Returns -ENOMEM when an endpoint's list cannot be allocated: the worker
 * must stop then (monitor.c), and the next one recovers from scratch.
 */
int
hl_w_recover_finish(struct hl_worker *w)
{
	struct hl_shm_header *h = w->seg.h;
	struct hl_rec *st = w->rec;
	walk_lists(w, st);
	/* Lists a shard thread claimed first: wait for them (acquire DONE:
	 * their obs_ep entries and repairs are visible after it). */
	for (uint32_t j = 0; j < st->nkeys; j++)
		while (atomic_load_explicit(&st->kstate[st->keys[j].idx], memory_order_acquire) !=
		       KEY_DONE)
			sched_yield();
	st->acc.repairs += atomic_load_explicit(&st->fg_repairs, memory_order_relaxed);
	uint64_t fg_seq = atomic_load_explicit(&st->fg_max_obs_seq, memory_order_relaxed);
	if (fg_seq > st->acc.max_obs_seq)
		st->acc.max_obs_seq = fg_seq;
	uint32_t fg_slot = atomic_load_explicit(&st->fg_max_obs_slot, memory_order_relaxed);
	if (fg_slot > st->acc.max_obs_slot)
		st->acc.max_obs_slot = fg_slot;
	/* The history rings' records (part 1 only learned their ends). */
	st->acc.repairs += hl_w_hist_scan(w);
	st->t_lists = hl__now_ns();

	/* Observer slots not reached are free: clear what a crash left
	 * marked, up to the high-water mark. No observer is allocated until
	 * recovery ends (observe waits for it), so the mark is ours here. */
	uint32_t omax = slot_hwm(&h->obs_hwm, h->max_observers, st->acc.max_obs_slot);
	for (uint32_t i = 1; i <= omax; i++) {
		struct hl_shm_observer *o = hl__obs(&w->seg, i);
		if (!st->obs_ep[i - 1] && LD_RLX(&o->id)) {
			ST_RLX(&o->id, 0);
			st->acc.repairs++;
		}
	}
	st->t_clear = hl__now_ns();
	hl__pool_rebuild(&w->obs, st->obs_ep);
	st->t_pools = hl__now_ns();
	uint64_t nobs = 0;
	int rc = hl_w_ep_build_lists(w, st->obs_ep, &nobs);
	if (rc)
		return rc;
	st->t_eps = hl__now_ns();
	adopt_orphans(w, st);
	free_emptied(w, st);

	/* Ids only move forward. next_observer_seq == LIMIT is a real state:
	 * the id space is used up (an observer with sequence LIMIT - 1 may
	 * live) and observing answers -EOVERFLOW; apply_observe() puts the
	 * counter back to LIMIT when a refused observe pushed it past.
	 * Beyond LIMIT is damage (or a crash inside that refusal): restart
	 * right after the highest live id, which keeps every live id unique.
	 * Either way the result is at most LIMIT, so a second pass finds
	 * nothing to repair (fuzz_attach: regress_seq_limit_idempotent). */
	uint64_t nseq = LD_RLX(&h->next_observer_seq);
	if (nseq > HL_OBS_SEQ_LIMIT) {
		st->acc.repairs++;
		ST_RLX(&h->next_observer_seq, st->acc.max_obs_seq + 1);
	} else if (nseq <= st->acc.max_obs_seq) {
		ST_RLX(&h->next_observer_seq, st->acc.max_obs_seq + 1);
	}
	ST_RLX(&h->observers_used, nobs);

	uint64_t t1 = hl__now_ns(), dt = t1 - st->t0;
	ST_RLX(&h->last_recovery_ns, dt);
	ST_RLX(&h->last_recovery_repairs, st->acc.repairs);
	atomic_fetch_add_explicit(&h->recoveries, 1, memory_order_relaxed);
	hl__log("recovery: %lu keys, %lu observers, %lu endpoints, %u pending dispatches, "
	        "%lu in-flight requests found applied, %lu repairs, %.3f ms; publishes served "
	        "after %.1f ms (ms: keys %.1f, "
	        "dispatch %.1f, lists %.1f, clear %.1f, pool %.1f, endpoint lists %.1f, rest %.1f)",
	        (unsigned long)LD_RLX(&h->keys_used), (unsigned long)nobs, (unsigned long)st->neps,
	        st->npending, (unsigned long)st->resolved, (unsigned long)st->acc.repairs,
	        (double)dt / 1e6, ms(st->t0, st->t_served), ms(st->t0, st->t_keys),
	        ms(st->t_keys, st->t_served), ms(st->t_served, st->t_lists),
	        ms(st->t_lists, st->t_clear), ms(st->t_clear, st->t_pools),
	        ms(st->t_pools, st->t_eps), ms(st->t_eps, t1));
	if (st->acc.repairs)
		hl_w_seglog(w, HL_LOG_RECOVERY, (int32_t)st->acc.repairs, (uint32_t)getpid(),
		            "repaired");
	return 0;
}

/* Monitor thread, right after hl_w_recover_finish(): everything waits no
 * more. Then endpoints found dead are cleaned as usual (the monitor then
 * looks at every claimed endpoint once: hl_w_monitor_recover()). */
void
hl_w_recover_serve(struct hl_worker *w)
{
	/* Release: every list, pool and endpoint list is complete before a
	 * shard thread sees recovery over (acquire in hl_w_rec_key_ready()
	 * and shard.c). */
	atomic_store_explicit(&w->recovering, 0, memory_order_release);
	const uint32_t ep_mark = hl_w_eps_hwm(w); /* above: FREE */
	for (uint32_t ep = 0; ep < ep_mark; ep++) {
		uint32_t st =
		        atomic_load_explicit(&hl__epw(&w->seg, ep)->state, memory_order_acquire);
		if (st == HL_EP_DEAD || st == HL_EP_BANNED)
			hl_w_ep_kill_recovered(w, ep, st);
	}
	for (uint32_t s = 0; s < w->nshards; s++)
		hl_w_wake_shard(w, s);
}

/* Main thread, after hl_w_recover_begin(), before shard threads run:
 * watch the live endpoints' processes, and look at every claimed
 * endpoint's rings once: the previous worker may have taken a pending
 * bit and died before draining the ring. */
void
hl_w_recover_kick(struct hl_worker *w)
{
	const uint32_t ep_mark = hl_w_eps_hwm(w); /* above: FREE */
	for (uint32_t ep = 0; ep < w->seg.h->max_endpoints; ep++) {
		if (ep < ep_mark && LD_RLX(&hl__epw(&w->seg, ep)->state) == HL_EP_ACTIVE)
			hl_w_ep_watch(w, ep); /* checks the pidfd under the lock */
		if (HL_CLAIM_PID(LD_RLX(&hl__claim(&w->seg, ep)->word)) != 0)
			for (uint32_t s = 0; s < w->nshards; s++)
				atomic_fetch_or_explicit(hl__pending(&w->seg, s) + ep / 64,
				                         1ull << (ep % 64), memory_order_relaxed);
	}
}

int
hl_w_check(struct hl_worker *w, char *msg, size_t len)
{
	const struct hl_shm_header *h = w->seg.h;
	uint64_t heap_used = 0, keys = 0, obs = 0;
	if (hl_w_hist_check(w, msg, len))
		return -EPROTO;
	for (uint32_t b = 0; b < h->nbuckets; b++) {
		uint32_t steps = 0;
		for (uint32_t i = LD_RLX(&hl__bucket(&w->seg, b)->head); i != HL_NIL;
		     i = LD_RLX(&hl__key(&w->seg, i)->next)) {
			if (i > h->max_keys || ++steps > h->max_keys) {
				snprintf(msg, len, "bucket %u: bad chain", b);
				return -EPROTO;
			}
			struct hl_shm_key *k = hl__key(&w->seg, i);
			keys++;
			if (i > LD_RLX(&h->keys_hwm)) {
				snprintf(msg, len, "key %u above the high-water mark %u", i,
				         LD_RLX(&h->keys_hwm));
				return -EPROTO;
			}
			if (!hl__pool_is_used(&w->keys, i)) {
				snprintf(msg, len, "key %u reachable but free in the pool", i);
				return -EPROTO;
			}
			if (LD_RLX(&k->seq) & 1u) {
				snprintf(msg, len, "key %u: odd seqlock", i);
				return -EPROTO;
			}
			uint64_t val = LD_RLX(&k->val);
			if (val & HL_VAL_DELETED) {
				snprintf(msg, len, "key %u: delete still pending", i);
				return -EPROTO;
			}
			if (val) {
				struct hl_shm_value *v = hl__val(&w->seg, val);
				if (!hl__heap_is_block(&w->heap, val, v->klass) ||
				    LD_RLX(&v->prev)) {
					snprintf(msg, len, "key %u: bad or pending value", i);
					return -EPROTO;
				}
				heap_used += hl__class_size(v->klass);
			} else if (LD_RLX(&k->obs_head) == HL_NIL) {
				snprintf(msg, len, "key %u: neither value nor observer", i);
				return -EPROTO;
			}
			uint32_t prev = HL_NIL, n = 0;
			for (uint32_t o = LD_RLX(&k->obs_head); o != HL_NIL;
			     o = LD_RLX(&hl__obs(&w->seg, o)->next)) {
				struct hl_shm_observer *ob = hl__obs(&w->seg, o);
				if (o > h->max_observers || o > LD_RLX(&h->obs_hwm) ||
				    ++n > h->max_observers || ob->key != i ||
				    LD_RLX(&ob->prev) != prev || !LD_RLX(&ob->id) ||
				    !hl__pool_is_used(&w->obs, o)) {
					snprintf(msg, len, "key %u: bad observer %u", i, o);
					return -EPROTO;
				}
				prev = o;
			}
			if (n != LD_RLX(&k->nobs)) {
				snprintf(msg, len, "key %u: nobs %u, list %u", i, LD_RLX(&k->nobs),
				         n);
				return -EPROTO;
			}
			obs += n;
		}
	}
	if (keys != hl__pool_used(&w->keys) ||
	    keys != LD_RLX(&h->keys_used) + LD_RLX(&h->prefixes_used)) {
		snprintf(msg, len, "keys: %lu reachable, %u allocated, %lu + %lu prefixes counted",
		         (unsigned long)keys, hl__pool_used(&w->keys),
		         (unsigned long)LD_RLX(&h->keys_used),
		         (unsigned long)LD_RLX(&h->prefixes_used));
		return -EPROTO;
	}
	if (obs != hl__pool_used(&w->obs) || obs != LD_RLX(&h->observers_used)) {
		snprintf(msg, len, "observers: %lu reachable, %u allocated, %lu counted",
		         (unsigned long)obs, hl__pool_used(&w->obs),
		         (unsigned long)LD_RLX(&h->observers_used));
		return -EPROTO;
	}
	if (heap_used != hl__heap_used(&w->heap) || hl__heap_check(&w->heap) ||
	    hl__heap_used(&w->heap) + hl__heap_free_bytes(&w->heap) != w->heap.bytes) {
		snprintf(msg, len, "heap: %lu reachable, %lu used, %lu free, %lu capacity",
		         (unsigned long)heap_used, (unsigned long)hl__heap_used(&w->heap),
		         (unsigned long)hl__heap_free_bytes(&w->heap),
		         (unsigned long)w->heap.bytes);
		return -EPROTO;
	}
	snprintf(msg, len, "ok: %lu keys, %lu observers, heap %lu/%lu bytes", (unsigned long)keys,
	         (unsigned long)obs, (unsigned long)heap_used, (unsigned long)w->heap.bytes);
	return 0;
}
