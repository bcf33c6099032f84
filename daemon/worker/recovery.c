/*
 * recovery.c: what a worker does to a table before serving it, after a
 * clean hand-back or after a crash at any instruction:
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
 * Requests still in the rings are replayed by the shard threads (shard.c).
 *
 * Step 1 walks the key chains first and the observer lists after, several
 * lists side by side (walk_lists()): a list is a chain of cache misses, and
 * walking one at a time costs one memory latency per observer. The result
 * does not depend on the order: an observer is only accepted into the list
 * of the key it names (o->key), and at most once (obs_ep).
 *
 * hl_w_check() is the full invariant check used by tests and the torture
 * run: it walks the same structures and compares with the allocators.
 */
#include "worker.h"

#include "heirloom/heirloom.h"
#include "seqlock.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define LD_RLX(p) atomic_load_explicit((p), memory_order_relaxed)
#define ST_RLX(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)

/* A key reached through its bucket chain, in chain order. */
struct rec_key {
	uint32_t idx;
	uint32_t pending; /* a dispatch is unfinished (new value, prev or delete) */
};

struct rec_state {
	uint8_t *key_seen;  /* per key slot: 1 linked, 2 visited but unlinked (empty) */
	/* Per observer slot: 0 = not reached, else its endpoint + 1. One
	 * array for "seen" and the endpoint, so that the walk writes one
	 * random place per observer (hl_w_ep_build_lists() reads it in order). */
	uint32_t *obs_ep;
	struct rec_key *keys; /* keys linked after walk_keys(), chain order */
	uint32_t nkeys;
	uint32_t *pending;  /* keys with a pending dispatch */
	uint32_t npending;
	uint32_t *ep_count; /* per endpoint: observers reached (for hl_w_ep_build_lists) */
	uint32_t emptied;   /* keys left with neither value nor observer by walk_lists() */
	uint64_t repairs;
	uint64_t max_obs_seq;
	uint64_t max_rev;
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
	uint32_t key;            /* 0 = idle */
	_Atomic uint32_t *link;  /* where the next observer's index is read */
	uint32_t prev, n;        /* the last accepted observer, how many so far */
};

/* What accepting observer slot I touches: the slot and its obs_ep entry.
 * always_inline: GCC 12 found a static function that only
 * prefetches free of side effects and dropped every call to it. */
static inline __attribute__((always_inline)) void
prefetch_obs(struct hl_worker *w, const struct rec_state *st, uint32_t i)
{
	if (i != HL_NIL && i <= w->seg.h->max_observers) {
		__builtin_prefetch(hl__obs(&w->seg, i));
		__builtin_prefetch(&st->obs_ep[i - 1], 1);
	}
}

static void
lane_start(struct hl_worker *w, const struct rec_state *st, struct obs_lane *l, uint32_t kidx)
{
	struct hl_shm_key *k = hl__key(&w->seg, kidx);
	l->key = kidx;
	l->link = &k->obs_head;
	l->prev = HL_NIL;
	l->n = 0;
	prefetch_obs(w, st, LD_RLX(&k->obs_head));
}

/* Accept the observer at *l->link into key l->key's list, or cut the list
 * there. Returns 0 at the end of the list (or at the cut). */
static int
lane_step(struct hl_worker *w, struct rec_state *st, struct obs_lane *l)
{
	const struct hl_shm_header *h = w->seg.h;
	uint32_t i = LD_RLX(l->link);
	if (i == HL_NIL)
		return 0;
	struct hl_shm_observer *o = i <= h->max_observers ? hl__obs(&w->seg, i) : NULL;
	uint64_t id = o ? LD_RLX(&o->id) : 0;
	uint32_t ep = o ? o->endpoint : 0;
	if (!o || st->obs_ep[i - 1] || id == 0 || (uint32_t)(id & 0xffffffu) != i ||
	    (id >> 24) == 0 || (id >> 24) >= HL_OBS_SEQ_LIMIT || o->key != l->key ||
	    ep >= h->max_endpoints) {
		/* Bad link (or a loop): cut the list here. */
		ST_RLX(l->link, HL_NIL);
		st->repairs++;
		return 0;
	}
	st->obs_ep[i - 1] = ep + 1; /* the pool is rebuilt from this (hl__pool_rebuild) */
	st->ep_count[ep]++;
	if (LD_RLX(&o->prev) != l->prev) {
		ST_RLX(&o->prev, l->prev); /* half-done link or unlink */
		st->repairs++;
	}
	if (id >> 24 > st->max_obs_seq)
		st->max_obs_seq = id >> 24;
	l->prev = i;
	l->n++;
	l->link = &o->next;
	prefetch_obs(w, st, LD_RLX(&o->next));
	return 1;
}

static void
lane_finish(struct hl_worker *w, struct rec_state *st, struct obs_lane *l)
{
	struct hl_shm_key *k = hl__key(&w->seg, l->key);
	if (LD_RLX(&k->nobs) != l->n)
		ST_RLX(&k->nobs, l->n);
	/* Its only observers were damage: it now has nothing left. */
	if (l->n == 0 && LD_RLX(&k->val) == 0)
		st->emptied++;
	l->key = 0;
}

/* Walk the observer list of every key walk_keys() kept. */
static void
walk_lists(struct hl_worker *w, struct rec_state *st)
{
	struct obs_lane lane[WALK_LANES] = { 0 };
	uint32_t next = 0;
	for (;;) {
		int busy = 0;
		for (int j = 0; j < WALK_LANES; j++) {
			struct obs_lane *l = &lane[j];
			if (!l->key && next < st->nkeys)
				lane_start(w, st, l, st->keys[next++].idx);
			if (!l->key)
				continue;
			busy = 1;
			if (!lane_step(w, st, l))
				lane_finish(w, st, l);
		}
		if (!busy)
			return;
	}
}

/* Key slot I, linked at *LINK in bucket B's chain: checked, its value and
 * pending dispatch looked at. Returns 0 to keep it, -1 when the chain is
 * cut here (bad slot), 1 when the slot was unlinked (nothing left in it). */
static int
visit_key(struct hl_worker *w, struct rec_state *st, uint32_t b, _Atomic uint32_t *link,
          uint32_t i)
{
	const struct hl_shm_header *h = w->seg.h;
	struct hl_shm_key *k = i <= h->max_keys ? hl__key(&w->seg, i) : NULL;
	if (!k || st->key_seen[i - 1] || k->key_len == 0 || k->key_len > HL_KEY_MAX ||
	    hl__bucket_of(h, k->hash) != b || hl__hash(hl__key_bytes(k), k->key_len) != k->hash) {
		ST_RLX(link, HL_NIL);
		st->repairs++;
		return -1;
	}
	st->key_seen[i - 1] = 1;
	st->repairs += (uint64_t)hl__seq_repair(&k->seq);
	uint64_t val = LD_RLX(&k->val);
	uint64_t off = val & ~(uint64_t)HL_VAL_DELETED;
	uint32_t pending = 0;
	if (val && mark_value(w, off) != 0) {
		/* An impossible value: the key loses it (logged). */
		hl__seq_write_begin(&k->seq);
		ST_RLX(&k->val, 0);
		hl__seq_write_end(&k->seq);
		st->repairs++;
		val = 0;
	}
	if (val & HL_VAL_DELETED) {
		pending = 1;
	} else if (val) {
		struct hl_shm_value *v = hl__val(&w->seg, val);
		uint64_t prev = LD_RLX(&v->prev);
		if (prev && mark_value(w, prev) != 0) {
			ST_RLX(&v->prev, 0);
			st->repairs++;
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
		st->repairs++;
		return 1;
	}
	st->keys[st->nkeys++] = (struct rec_key){ .idx = i, .pending = pending };
	return 0;
}

static void
walk_keys(struct hl_worker *w, struct rec_state *st)
{
	const struct hl_shm_header *h = w->seg.h;
	for (uint32_t b = 0; b < h->nbuckets; b++) {
		struct hl_shm_bucket *bk = hl__bucket(&w->seg, b);
		uint32_t seq = LD_RLX(&bk->seq);
		if (seq & 1u) {
			ST_RLX(&bk->seq, seq + 1);
			st->repairs++;
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

/* After walk_lists(): unlink the keys it left with neither value nor
 * observer (their only observers were damage). Rare: only then are the
 * chains, already checked and loop-free, walked again. */
static void
unlink_emptied(struct hl_worker *w, struct rec_state *st)
{
	const struct hl_shm_header *h = w->seg.h;
	for (uint32_t b = 0; b < h->nbuckets && st->emptied; b++) {
		_Atomic uint32_t *link = &hl__bucket(&w->seg, b)->head;
		for (uint32_t i = LD_RLX(link); i != HL_NIL; i = LD_RLX(link)) {
			struct hl_shm_key *k = hl__key(&w->seg, i);
			if (LD_RLX(&k->val) == 0 && LD_RLX(&k->obs_head) == HL_NIL) {
				ST_RLX(link, LD_RLX(&k->next));
				st->key_seen[i - 1] = 2;
				st->repairs++;
				st->emptied--;
				continue;
			}
			link = &k->next;
		}
	}
}

/* The keys that stay: allocated, marked used, pending dispatches noted
 * (chain order, as they are dispatched). */
static void
keep_keys(struct hl_worker *w, struct rec_state *st)
{
	for (uint32_t j = 0; j < st->nkeys; j++) {
		uint32_t i = st->keys[j].idx;
		if (st->key_seen[i - 1] != 1)
			continue;
		hl__pool_mark(&w->keys, i);
		ST_RLX(&hl__key(&w->seg, i)->used, 1);
		if (st->keys[j].pending)
			st->pending[st->npending++] = i;
	}
}

/*
 * Slots I.. of a region (N slots of SZ bytes at OFF, 1-based) that may hold
 * data: returns the first of them and sets *END past the last, or returns
 * and sets N + 1 when the rest is a hole. A hole (pages of the shm object
 * nobody wrote, SEEK_HOLE) reads as zero, so nothing in it needs clearing;
 * and reading it would allocate it: the first recovery of a new segment
 * read every observer slot and made the object 64 MB bigger at the default
 * million observers (63 ms, most of a fresh worker's start). A slot that
 * straddles the edge of a run is kept in it. tmpfs counts a page swapped
 * out as data, so a hole really is zeroes. Without a descriptor (the fuzz
 * target's in-memory segment) or if lseek fails, everything is data: that
 * costs time only.
 */
static uint32_t
data_run(const struct hl_worker *w, uint64_t off, uint32_t sz, uint32_t n, uint32_t i,
         uint32_t *end)
{
	*end = n + 1;
	if (w->seg.fd < 0)
		return i;
	off_t at = (off_t)(off + (uint64_t)(i - 1) * sz);
	off_t d = lseek(w->seg.fd, at, SEEK_DATA);
	if (d < 0)
		return errno == ENXIO ? n + 1 : i; /* ENXIO: only a hole from here */
	if (d > at)
		i = (uint32_t)(((uint64_t)d - off) / sz) + 1;
	if (i > n)
		return n + 1;
	off_t e = lseek(w->seg.fd, d, SEEK_HOLE);
	if (e > d) {
		uint64_t last = ((uint64_t)e - 1 - off) / sz + 1; /* the slot holding e - 1 */
		if (last < n)
			*end = (uint32_t)last + 1;
	}
	return i;
}

static void
rec_free(struct rec_state *st)
{
	free(st->key_seen);
	free(st->obs_ep);
	free(st->keys);
	free(st->pending);
	free(st->ep_count);
}

int
hl_w_recover(struct hl_worker *w)
{
	struct hl_shm_header *h = w->seg.h;
	uint64_t t0 = hl__now_ns();
	struct rec_state st = {0};
	st.key_seen = calloc(h->max_keys, 1);
	st.obs_ep = calloc(h->max_observers, sizeof(*st.obs_ep));
	st.keys = calloc(h->max_keys, sizeof(*st.keys));
	st.pending = calloc(h->max_keys, sizeof(uint32_t));
	st.ep_count = calloc(h->max_endpoints, sizeof(uint32_t));
	if (!st.key_seen || !st.obs_ep || !st.keys || !st.pending || !st.ep_count) {
		rec_free(&st);
		return -ENOMEM;
	}
	hl__heap_reset(&w->heap);
	hl__pool_reset(&w->keys);

	walk_keys(w, &st);
	walk_lists(w, &st);
	unlink_emptied(w, &st);
	keep_keys(w, &st);

	/* Slots not reached are free: clear what a crash left marked. Only
	 * where the object holds data (data_run()); the counts come from the
	 * walk's marks. */
	uint64_t nkeys = 0, nobs = 0;
	for (uint32_t i = 0; i < h->max_keys; i++)
		nkeys += st.key_seen[i] == 1;
	for (uint32_t ep = 0; ep < h->max_endpoints; ep++)
		nobs += st.ep_count[ep];
	for (uint32_t i = 1, end; i <= h->max_keys; i = end) {
		i = data_run(w, h->keys_off, h->key_stride, h->max_keys, i, &end);
		for (; i < end; i++) {
			struct hl_shm_key *k = hl__key(&w->seg, i);
			if (st.key_seen[i - 1] != 1 && LD_RLX(&k->used)) {
				ST_RLX(&k->used, 0);
				st.repairs++;
			}
		}
	}
	for (uint32_t i = 1, end; i <= h->max_observers; i = end) {
		i = data_run(w, h->observers_off, sizeof(struct hl_shm_observer), h->max_observers, i,
		             &end);
		for (; i < end; i++) {
			struct hl_shm_observer *o = hl__obs(&w->seg, i);
			if (!st.obs_ep[i - 1] && LD_RLX(&o->id)) {
				ST_RLX(&o->id, 0);
				st.repairs++;
			}
		}
	}
	hl__heap_finish(&w->heap);
	hl__pool_finish(&w->keys);
	hl__pool_rebuild(&w->obs, st.obs_ep);

	/* Ids and revisions only move forward. next_observer_seq == LIMIT is
	 * a real state: the id space is used up (an observer with sequence
	 * LIMIT - 1 may live) and observing answers -EOVERFLOW; apply_observe()
	 * puts the counter back to LIMIT when a refused observe pushed it past.
	 * Beyond LIMIT is damage (or a crash inside that refusal): restart
	 * right after the highest live id, which keeps every live id unique.
	 * Either way the result is at most LIMIT, so a second pass finds
	 * nothing to repair (fuzz_attach: regress_seq_limit_idempotent). */
	uint64_t nseq = LD_RLX(&h->next_observer_seq);
	if (nseq > HL_OBS_SEQ_LIMIT) {
		st.repairs++;
		ST_RLX(&h->next_observer_seq, st.max_obs_seq + 1);
	} else if (nseq <= st.max_obs_seq) {
		ST_RLX(&h->next_observer_seq, st.max_obs_seq + 1);
	}
	if (LD_RLX(&h->revision) < st.max_rev)
		ST_RLX(&h->revision, st.max_rev);
	ST_RLX(&h->keys_used, nkeys);
	ST_RLX(&h->observers_used, nobs);
	ST_RLX(&h->heap_used, hl__heap_used(&w->heap));

	/* Endpoints: rebuild each one's observer list from the observers. */
	for (uint32_t ep = 0; ep < h->max_endpoints; ep++) {
		struct hl_ep *e = &w->eps[ep];
		e->nobs = 0;
		e->gen = 0;
		e->pidfd = -1;
	}
	int rc = hl_w_ep_build_lists(w, st.obs_ep, st.ep_count);
	if (rc) {
		/* Nothing is served: the next worker recovers from scratch
		 * (every step above is safe to run again). */
		rec_free(&st);
		return rc;
	}
	uint64_t neps = 0;
	for (uint32_t ep = 0; ep < h->max_endpoints; ep++) {
		struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
		struct hl_ep *e = &w->eps[ep];
		uint32_t state = LD_RLX(&pw->state);
		if (state != HL_EP_FREE && state != HL_EP_ACTIVE && state != HL_EP_DEAD &&
		    state != HL_EP_BANNED) {
			/* Not a state we write: damage. Clean it like a dead one. */
			state = HL_EP_DEAD;
			ST_RLX(&pw->state, HL_EP_DEAD);
			st.repairs++;
		}
		if (state == HL_EP_FREE &&
		    HL_CLAIM_PID(LD_RLX(&hl__claim(&w->seg, ep)->word)) == 0) {
			st.repairs += (uint64_t)hl_w_ep_fix_positions(w, ep);
		}
		if (state == HL_EP_FREE) {
			if (e->nobs) {
				/* Observers of a freed endpoint: a crash in the
				 * middle of cleanup. Adopt it as dead to finish. */
				state = HL_EP_DEAD;
				ST_RLX(&pw->state, HL_EP_DEAD);
				ST_RLX(&pw->gen, HL_CLAIM_GEN(LD_RLX(&hl__claim(&w->seg, ep)->word)));
				st.repairs++;
			} else {
				continue;
			}
		}
		e->gen = LD_RLX(&pw->gen);
		e->pid = LD_RLX(&pw->pid);
		e->start = LD_RLX(&pw->start_time);
		neps++;
		/* Same process still there? Keep it (a new pidfd); else clean. */
		if (state == HL_EP_ACTIVE) {
			uint64_t word = LD_RLX(&hl__claim(&w->seg, ep)->word);
			if (HL_CLAIM_PID(word) == e->pid && HL_CLAIM_GEN(word) == e->gen &&
			    hl__proc_alive((int)e->pid, e->start)) {
				e->pidfd = (int)syscall(SYS_pidfd_open, (pid_t)e->pid, 0);
				continue;
			}
			ST_RLX(&pw->state, HL_EP_DEAD);
		}
	}
	ST_RLX(&h->endpoints_used, neps);

	/* Finish pending dispatches, shard by shard (no threads run yet). */
	for (uint32_t i = 0; i < st.npending; i++) {
		uint32_t k = st.pending[i];
		hl_w_dispatch_pending(&w->shards[hl_w_key_shard(w, k)], k);
	}

	uint64_t dt = hl__now_ns() - t0;
	ST_RLX(&h->last_recovery_ns, dt);
	ST_RLX(&h->last_recovery_repairs, st.repairs);
	atomic_fetch_add_explicit(&h->recoveries, 1, memory_order_relaxed);
	hl_w_log("recovery: %lu keys, %lu observers, %lu endpoints, %u pending dispatches, "
	         "%lu repairs, %.3f ms",
	         (unsigned long)nkeys, (unsigned long)nobs, (unsigned long)neps, st.npending,
	         (unsigned long)st.repairs, (double)dt / 1e6);
	if (st.repairs)
		hl_w_seglog(w, HL_LOG_RECOVERY, (int32_t)st.repairs, (uint32_t)getpid(), "repaired");
	rec_free(&st);
	return 0;
}

/* Endpoints found dead by recovery are cleaned once the monitor runs. */
void
hl_w_recover_kill_dead(struct hl_worker *w)
{
	for (uint32_t ep = 0; ep < w->seg.h->max_endpoints; ep++) {
		struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
		uint32_t st = LD_RLX(&pw->state);
		if (st == HL_EP_DEAD || st == HL_EP_BANNED) {
			/* Back to ACTIVE for one moment so kill() runs the usual
			 * path (it ignores non-active endpoints). */
			ST_RLX(&pw->state, HL_EP_ACTIVE);
			hl_w_ep_kill(w, ep, st == HL_EP_BANNED ? "banned (recovered)" : "gone (recovered)");
		} else if (st == HL_EP_ACTIVE) {
			hl_w_monitor_watch(w, ep); /* checks the pidfd under the lock */
		}
		/* The previous worker may have taken a pending bit and died
		 * before draining the ring: look at every claimed endpoint once. */
		if (HL_CLAIM_PID(LD_RLX(&hl__claim(&w->seg, ep)->word)) != 0)
			for (uint32_t s = 0; s < w->nshards; s++)
				atomic_fetch_or_explicit(hl__pending(&w->seg, s) + ep / 64,
				                         1ull << (ep % 64), memory_order_relaxed);
	}
	for (uint32_t s = 0; s < w->nshards; s++)
		hl_w_wake_shard(w, s);
	hl_w_prune(w);
}

int
hl_w_check(struct hl_worker *w, char *msg, size_t len)
{
	const struct hl_shm_header *h = w->seg.h;
	uint64_t heap_used = 0, keys = 0, obs = 0;
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
				if (!hl__heap_is_block(&w->heap, val, v->klass) || LD_RLX(&v->prev)) {
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
				if (o > h->max_observers || ++n > h->max_observers || ob->key != i ||
				    LD_RLX(&ob->prev) != prev || !LD_RLX(&ob->id) ||
				    !hl__pool_is_used(&w->obs, o)) {
					snprintf(msg, len, "key %u: bad observer %u", i, o);
					return -EPROTO;
				}
				prev = o;
			}
			if (n != LD_RLX(&k->nobs)) {
				snprintf(msg, len, "key %u: nobs %u, list %u", i, LD_RLX(&k->nobs), n);
				return -EPROTO;
			}
			obs += n;
		}
	}
	if (keys != hl__pool_used(&w->keys) || keys != LD_RLX(&h->keys_used)) {
		snprintf(msg, len, "keys: %lu reachable, %u allocated, %lu counted",
		         (unsigned long)keys, hl__pool_used(&w->keys),
		         (unsigned long)LD_RLX(&h->keys_used));
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
		         (unsigned long)hl__heap_free_bytes(&w->heap), (unsigned long)w->heap.bytes);
		return -EPROTO;
	}
	snprintf(msg, len, "ok: %lu keys, %lu observers, heap %lu/%lu bytes", (unsigned long)keys,
	         (unsigned long)obs, (unsigned long)heap_used, (unsigned long)w->heap.bytes);
	return 0;
}
