/* SPDX-License-Identifier: MIT */
/*
 * dispatch.c: delivering a key's change to every observer behind it
 * (dispatch.h): the event records in each observer endpoint's ring for the
 * key's shard, delivered_rev, lag reporting, and the per-key list copy.
 *
 * Context: runs on the key's shard thread without shard.mu, inside an RCU
 * read-side critical section, because endpoint cleanup may unlink
 * observers concurrently; unlinked observer slots are reused only after a
 * grace period (observers.c). A pending dispatch is recorded in the table
 * itself (apply.c): a new value block keeps `prev` until every observer
 * has the event; a deleted key keeps its old value with HL_VAL_DELETED.
 */
#include "dispatch.h"

#include "endpoint.h"
#include "history.h"
#include "keys.h"
#include "lock.h"
#include "observers.h"
#include "recovery.h"
#include "ring.h"
#include "seqlock.h"
#include "util.h"
#include "wake.h"

#include <assert.h>
#include <stdlib.h>
#include <urcu/urcu-memb.h>

#define LD_RLX(p)    atomic_load_explicit((p), memory_order_relaxed)
#define ST_RLX(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)

/*
 * The dispatch's copy of a key's observer list (struct hl_obs_cache).
 * Walking the list itself is a chain of dependent loads: the next slot's
 * index is in the current slot, so with 100,000 observers (6.4 MB of
 * slots, beyond L2) every step waited for one cache miss (perf: 62% of
 * dispatch() on the load of o->id), and the slots were fetched a second
 * time to mark them delivered after the ring commits (10%). From the copy
 * every address is known ahead, so the misses overlap (PREFETCH_DIST slots
 * ahead: 48 measured better than 16 at 100,000 observers), and dispatch
 * goes one endpoint at a time (the copy is grouped by endpoint), marking an
 * endpoint's slots while they are still in cache. Lists shorter than
 * OCACHE_MIN are walked: a few steps, and no private memory per key.
 *
 * Validity. Every change of a key's list bumps its gen after the change
 * (hl_w_obs_list_changed(), release, under the key's shard.mu): apply_observe
 * after linking, hl_w_remove_observer() after unlinking and before
 * call_rcu() of the slot. dispatch() reads gen (acquire) inside its RCU
 * read-side section, before it reads anything of the list, and uses the
 * copy only if it was built at that gen. Then:
 *  - a slot unlinked before that read bumped gen first: the copy is not
 *    used, and the walk that replaces it sees the unlink (the acquire pairs
 *    with the release bump, which follows the unlink);
 *  - a slot unlinked after that read is handed to call_rcu() after our
 *    read-side section began: it is not reused before dispatch() returns,
 *    and reads as id 0 (skipped) or as the observer it was, whose endpoint
 *    is being cleaned up (as a walk that passed it before the unlink would);
 *  - observers are linked only by the shard thread that dispatches, so
 *    none joins during a dispatch.
 * recovery.c repairs a key's list before this process dispatches it
 * (hl_w_rec_key_ready() at the top of dispatch()), so no copy predates a
 * repair; any other code that changes a list must call
 * hl_w_obs_list_changed() (the check of the head against the copy's first slot
 * is only a cheap second guard). tests/test_fanout.c fails when an unlink
 * does not bump gen.
 *
 * Memory: 4 bytes per observer (+ 8 per endpoint) of each key with a long
 * list, in the worker's heap. A copy is resized or dropped when it is
 * rebuilt; the copy of a key that goes away is kept until its slot's next
 * dispatch or the worker's exit: freeing it then would race with the
 * shard thread, which alone may touch it.
 */
#define OCACHE_MIN    64u
#define PREFETCH_DIST 48u

int
hl_w_dispatch_init(struct hl_worker *w)
{
	if (!w->ocache)
		w->ocache = calloc((size_t)w->seg.h->max_keys + 1, sizeof(*w->ocache));
	return w->ocache ? 0 : -ENOMEM;
}

void
hl_w_dispatch_fini(struct hl_worker *w)
{
	if (!w->ocache)
		return;
	for (uint32_t i = 0; i <= w->seg.h->max_keys; i++) {
		free(w->ocache[i].slots);
		free(w->ocache[i].groups);
	}
	free(w->ocache);
	w->ocache = NULL;
}

static int
fan_reserve(struct hl_shard *sh, uint32_t n)
{
	if (n <= sh->fan_cap)
		return 0;
	uint32_t cap = sh->fan_cap ? sh->fan_cap : 64;
	while (cap < n)
		cap *= 2;
	/* sh->ids runs parallel to sh->fan (both halves): the id of each
	 * collected observer, read once by the list walk. A failure leaves
	 * fan_cap as it was, which both arrays still cover. */
	uint64_t *ids = realloc(sh->ids, (size_t)cap * 2 * sizeof(*ids));
	if (!ids)
		return -ENOMEM;
	sh->ids = ids;
	struct hl_fan *f = realloc(sh->fan, (size_t)cap * 2 * sizeof(*f));
	if (!f)
		return -ENOMEM;
	sh->fan = f;
	sh->fan_cap = cap;
	return 0;
}

static unsigned
hist_bucket(uint64_t ns)
{
	unsigned b = 0;
	ns >>= 7;
	while (ns && b < 15) {
		ns >>= 1;
		b++;
	}
	return b;
}

struct dispatch_src {
	uint16_t type; /* HL_EVR_PUT / HL_EVR_DELETE */
	uint64_t rev, ts;
	uint32_t pub_pid;
	const uint8_t *key;
	uint32_t key_len;
	const uint8_t *meta;
	uint32_t meta_len;
	const uint8_t *old; /* NULL = none */
	uint32_t old_len;
	const uint8_t *nw; /* NULL = none */
	uint32_t new_len;
	int sys; /* a HL_SYS_PREFIX key: kept out of the counters */
};

/* Write the events for endpoint EP's observers fan[0..n), whose ids are
 * ids[0..n), into its ring for this shard. Returns events delivered. */
static uint64_t
deliver_ep(struct hl_shard *sh, uint32_t ep, const struct hl_fan *fan, const uint64_t *ids,
           uint32_t n, const struct dispatch_src *d)
{
	struct hl_worker *w = sh->w;
	struct hl_shm_epw_shard *ws = hl__epw_shard(&w->seg, ep, sh->id);
	struct hl_ring ring = { .head = &ws->ev_head,
		                .tail = &hl__epc_shard(&w->seg, ep, sh->id)->ev_tail,
		                .data = hl__ev_ring(&w->seg, ep, sh->id),
		                .size = w->seg.h->ev_ring_bytes };
	uint64_t head = LD_RLX(&ws->ev_head), delivered = 0;
	/* One record serves every observer of this endpoint: it carries the
	 * old value if any of them wants it (the client leaves it out for
	 * those with HL_OBSERVE_NOOLD); if none does, it costs no ring space.
	 * Usually the first observer wants it and the scan stops there. */
	const uint8_t *old = NULL;
	for (uint32_t j = 0; d->old && j < n; j++)
		if (!(fan[j].slot & HL_FAN_NOOLD)) {
			old = d->old;
			break;
		}
	uint32_t old_len = old ? d->old_len : 0;
	uint32_t payload = d->key_len + d->meta_len + old_len + d->new_len;
	uint32_t i = 0;
	int lagged = 0, bad = 0;
	/* Events were dropped since the last flagged record: the first record
	 * written now says so (HL_EVRF_LAG_BEFORE), so that the client resyncs
	 * before it hands out anything written after the drop. */
	uint64_t lseq = LD_RLX(&ws->lag_seq);
	uint16_t evflags = lseq != LD_RLX(&ws->lag_marked) ? HL_EVRF_LAG_BEFORE : 0;
	while (i < n) {
		uint32_t cnt = n - i < HL_EV_IDS_MAX ? n - i : HL_EV_IDS_MAX;
		uint32_t size =
		        hl__rec_align((uint32_t)sizeof(struct hl_evrec) + 8u * cnt + payload);
		void *p;
		uint64_t next;
		int rc = hl__ring_reserve(&ring, head, size, &p, &next);
		if (rc == -EAGAIN && cnt > 1) {
			/* Not room for the whole batch: try what fits, so that a
			 * partly full ring still takes some observers' events. */
			uint64_t fr = hl__ring_free(&ring, head);
			uint64_t fixed = sizeof(struct hl_evrec) + payload + 8;
			if (fr > fixed + 8) {
				uint64_t fit = (fr - fixed) / 8;
				cnt = fit < cnt ? (uint32_t)fit : cnt;
				size = hl__rec_align((uint32_t)sizeof(struct hl_evrec) + 8u * cnt +
				                     payload);
				rc = hl__ring_reserve(&ring, head, size, &p, &next);
			}
		}
		if (rc == -EPROTO) {
			bad = 1;
			break;
		}
		if (rc == -EAGAIN) {
			lagged = 1;
			break;
		}
		struct hl_evrec r = {
			.h = { .size = size, .type = d->type, .key_len = (uint16_t)d->key_len },
			.nobs = cnt,
			.pub_pid = d->pub_pid,
			.old_len = old ? old_len : HL_NO_LEN,
			.new_len = d->nw ? d->new_len : HL_NO_LEN,
			.meta_len = (uint16_t)d->meta_len,
			.flags = evflags,
			.rev = d->rev,
			.ts_ns = d->ts
		};
		uint8_t *q = p;
		memcpy(q, &r, sizeof(r));
		q += sizeof(r);
		/* The ids the list walk read: a second read of each slot was a
		 * third of dispatch() with 100,000 observers (its cache line
		 * is long gone by now). An observer unlinked since by endpoint
		 * cleanup belongs to a dead or closed endpoint, whose events
		 * nobody reads. */
		memcpy(q, ids + i, 8ull * cnt);
		q += 8ull * cnt;
		memcpy(q, d->key, d->key_len);
		q += d->key_len;
		if (d->meta_len)
			memcpy(q, d->meta, d->meta_len);
		q += d->meta_len;
		if (old && old_len)
			memcpy(q, old, old_len);
		q += old_len;
		if (d->nw && d->new_len)
			memcpy(q, d->nw, d->new_len);
		head = next;
		delivered += cnt;
		i += cnt;
		evflags = 0;
	}
	/* COMMIT of this endpoint's events (release: record bytes first).
	 * delivered_rev moves only after it: a crash in between makes
	 * recovery send these events again, and the client library drops the
	 * duplicates by revision; the other order could lose them. */
	hl__ring_commit(&ring, head);
	if (delivered)
		hl_w_crash_point(w); /* events in the ring, delivered_rev not yet moved */
	if (delivered && lseq != LD_RLX(&ws->lag_marked))
		ST_RLX(&ws->lag_marked, lseq); /* a crash before it flags one more: harmless */
	/* The slots were read by pass 1, but 100,000 of them no longer fit
	 * in L2: fetch ahead (for writing), as pass 1 does. */
	for (uint32_t j = 0; j < delivered; j++) {
		if (j + PREFETCH_DIST < delivered)
			__builtin_prefetch(hl__obs(&w->seg, HL_FAN_SLOT(fan[j + PREFETCH_DIST])),
			                   1);
		/* A prefix observer's delivered_rev is its start revision: it
		 * stays (several shards deliver to it, in no common order). */
		if (!(fan[j].slot & HL_FAN_PREFIX))
			ST_RLX(&hl__obs(&w->seg, HL_FAN_SLOT(fan[j]))->delivered_rev, d->rev);
	}
	if (lagged) {
		for (; i < n; i++)
			atomic_fetch_add_explicit(&hl__obs(&w->seg, HL_FAN_SLOT(fan[i]))->dropped,
			                          1, memory_order_relaxed);
		if (!d->sys)
			atomic_fetch_add_explicit(&sh->c->lagged_drops, n - (uint32_t)delivered,
			                          memory_order_relaxed);
		/* Release: the dropped counts are visible before lag_seq moves
		 * (pairs with the acquire in hl_next()'s collect_lag()). */
		atomic_fetch_add_explicit(&ws->lag_seq, 1, memory_order_release);
	}
	if (bad)
		hl_w_ep_kill(w, ep, HL_W_KILL_EV_TAIL);
	else
		hl_w_wake_soon(sh, ep);
	return delivered;
}

/* Add observer SLOT (O) to the dispatch if it is live, behind d->rev and
 * wants this type of event; N is the count collected so far. Returns the
 * new count.
 *
 * A prefix observer (HL_OBSERVE_PREFIX) is "behind" when d->rev is past
 * its start revision (its delivered_rev, never moved): after a crash it
 * gets a pending change again, and the client drops the copy by
 * revision, per shard (lib/client.c): a shard dispatches in revision
 * order, which is what makes per-shard deduplication exact.
 *
 * Filters (HL_OBSERVE_NOPUT / NODELETE, hl_shm_observer.flags, on the line
 * of `id`, set before `id` was released and immutable while linked) are
 * applied here, before any ring space is taken: a filtered observer is
 * skipped as if it already had the event. Its delivered_rev stays where
 * it was (it is "last written to its ring"); a redelivery after a crash
 * skips it the same way, so it never sees the filtered type. */
static uint32_t
collect(struct hl_shard *sh, struct hl_shm_observer *o, uint32_t slot, uint32_t n,
        const struct dispatch_src *d)
{
	struct hl_worker *w = sh->w;
	uint64_t id = atomic_load_explicit(&o->id, memory_order_acquire);
	if (id == 0 || LD_RLX(&o->delivered_rev) >= d->rev)
		return n;
	uint32_t of = o->flags;
	if (of & (d->type == HL_EVR_PUT ? HL_OBSERVE_NOPUT : HL_OBSERVE_NODELETE))
		return n;
	if (n == sh->fan_cap && fan_reserve(sh, n + 1)) {
		/* Out of memory: the rest lag; the clients resync (lag_seq
		 * tells them to look; release pairs with the acquire in
		 * collect_lag()). */
		atomic_fetch_add_explicit(&o->dropped, 1, memory_order_relaxed);
		if (!d->sys)
			atomic_fetch_add_explicit(&sh->c->lagged_drops, 1, memory_order_relaxed);
		if (o->endpoint < w->seg.h->max_endpoints)
			atomic_fetch_add_explicit(
			        &hl__epw_shard(&w->seg, o->endpoint, sh->id)->lag_seq, 1,
			        memory_order_release);
		return n;
	}
	sh->ids[n] = id;
	sh->fan[n] = (struct hl_fan){ .ep = o->endpoint,
		                      .slot = slot | (of & HL_OBSERVE_NOOLD ? HL_FAN_NOOLD : 0) |
		                              (of & HL_OBSERVE_PREFIX ? HL_FAN_PREFIX : 0) };
	return n + 1;
}

static void
copy_drop(struct hl_obs_cache *oc)
{
	/* Field by field: gen is another thread's to bump meanwhile. */
	free(oc->slots);
	free(oc->groups);
	oc->slots = NULL;
	oc->groups = NULL;
	oc->built = 0;
	oc->n = oc->cap = oc->ngroups = oc->gcap = 0;
}

/* Build KEY's copy from the walk's (endpoint << 32 | slot) pairs, in list
 * order, made at GEN: a stable counting sort by endpoint (the shard's
 * ep_count/ep_start/touched scratch, all zero again on return). On failure
 * there is no copy (the next dispatch walks again). */
static void
copy_build(struct hl_shard *sh, struct hl_obs_cache *oc, const uint64_t *pairs, uint32_t len,
           uint64_t gen)
{
	uint32_t ng = 0;
	for (uint32_t j = 0; j < len; j++) {
		uint32_t ep = (uint32_t)(pairs[j] >> 32);
		if (sh->ep_count[ep]++ == 0)
			sh->touched[ng++] = ep;
	}
	int ok = 1;
	if (oc->cap < len || oc->cap > 2 * len + OCACHE_MIN) {
		uint32_t *ns = realloc(oc->slots, (size_t)len * sizeof(*ns));
		ok = ns != NULL;
		if (ok) {
			oc->slots = ns;
			oc->cap = len;
		}
	}
	if (ok && (oc->gcap < ng || oc->gcap > 2 * ng + 8)) {
		struct hl_obs_group *ng_ = realloc(oc->groups, (size_t)ng * sizeof(*ng_));
		ok = ng_ != NULL;
		if (ok) {
			oc->groups = ng_;
			oc->gcap = ng;
		}
	}
	uint32_t at = 0;
	for (uint32_t t = 0; t < ng; t++) {
		uint32_t ep = sh->touched[t];
		if (ok)
			oc->groups[t] = (struct hl_obs_group){ .ep = ep, .n = sh->ep_count[ep] };
		sh->ep_start[ep] = at;
		at += sh->ep_count[ep];
		sh->ep_count[ep] = 0;
	}
	if (!ok) {
		copy_drop(oc);
		return;
	}
	for (uint32_t j = 0; j < len; j++)
		oc->slots[sh->ep_start[pairs[j] >> 32]++] = (uint32_t)pairs[j];
	oc->n = len;
	oc->ngroups = ng;
	oc->built = gen + 1;
}

/* Pass 1 from the list itself (no valid copy): collect every observer
 * behind d->rev into sh->fan/ids. When the list is long enough to deserve
 * a copy, *pairs gets (endpoint << 32 | slot) of every live observer in
 * list order (malloc'ed, *npairs of them; NULL when none is wanted or
 * memory is short). Returns the count collected. */
static uint32_t
collect_walk(struct hl_shard *sh, struct hl_shm_key *k, uint32_t head, const struct dispatch_src *d,
             uint64_t **pairs, uint32_t *npairs)
{
	struct hl_worker *w = sh->w;
	const uint32_t max_obs = w->seg.h->max_observers;
	/* nobs only sizes the buffer: a wrong count costs a realloc. */
	uint32_t n = 0, len = 0, steps = 0,
	         cap = atomic_load_explicit(&k->nobs, memory_order_relaxed);
	uint64_t *pr = cap >= OCACHE_MIN ? malloc((size_t)cap * sizeof(*pr)) : NULL;
	for (uint32_t i = head; i != HL_NIL;) {
		struct hl_shm_observer *o = hl__obs(&w->seg, i);
		if (++steps > max_obs)
			hl__die("observer list longer than the table");
		if (pr && atomic_load_explicit(&o->id, memory_order_relaxed) != 0) {
			if (len == cap) {
				uint64_t *np = realloc(pr, (size_t)cap * 2 * sizeof(*np));
				if (!np) {
					free(pr);
					pr = NULL; /* no copy this time: only slower */
				} else {
					pr = np;
					cap *= 2;
				}
			}
			if (pr)
				pr[len++] = (uint64_t)o->endpoint << 32 | i;
		}
		n = collect(sh, o, i, n, d);
		i = atomic_load_explicit(&o->next, memory_order_acquire);
	}
	*pairs = pr;
	*npairs = len;
	return n;
}

/* Pass 1 over prefix entry PIDX's list (any shard's: read-only here,
 * following `next` with acquire, as any walk under RCU): collect every
 * observer behind d->rev after the N already collected. Returns the new
 * count. */
static uint32_t
collect_list(struct hl_shard *sh, uint32_t pidx, uint32_t n, const struct dispatch_src *d)
{
	struct hl_worker *w = sh->w;
	const uint32_t max_obs = w->seg.h->max_observers;
	uint32_t steps = 0;
	struct hl_shm_key *p = hl__key(&w->seg, pidx);
	for (uint32_t i = atomic_load_explicit(&p->obs_head, memory_order_acquire); i != HL_NIL;) {
		if (i > max_obs || ++steps > max_obs)
			hl__die("prefix observer list longer than the table");
		struct hl_shm_observer *o = hl__obs(&w->seg, i);
		n = collect(sh, o, i, n, d);
		i = atomic_load_explicit(&o->next, memory_order_acquire);
	}
	return n;
}

/* Passes 2 and 3 after a walk: group sh->fan[0..n) by endpoint (counting
 * sort into the upper half, stable) and deliver each group. Returns the
 * events delivered. */
static uint64_t
deliver_sorted(struct hl_shard *sh, uint32_t n, const struct dispatch_src *d)
{
	struct hl_worker *w = sh->w;
	uint32_t ntouched = 0;
	for (uint32_t j = 0; j < n; j++)
		if (sh->ep_count[sh->fan[j].ep]++ == 0)
			sh->touched[ntouched++] = sh->fan[j].ep;
	uint32_t at = 0;
	for (uint32_t t = 0; t < ntouched; t++) {
		sh->ep_start[sh->touched[t]] = at;
		at += sh->ep_count[sh->touched[t]];
	}
	struct hl_fan *sorted = sh->fan + sh->fan_cap;
	uint64_t *sorted_ids = sh->ids + sh->fan_cap;
	for (uint32_t j = 0; j < n; j++) {
		uint32_t to = sh->ep_start[sh->fan[j].ep]++;
		sorted[to] = sh->fan[j];
		sorted_ids[to] = sh->ids[j];
	}
	uint64_t delivered = 0;
	at = 0;
	for (uint32_t t = 0; t < ntouched; t++) {
		uint32_t ep = sh->touched[t], cnt = sh->ep_count[ep];
		if (atomic_load_explicit(&hl__epw(&w->seg, ep)->state, memory_order_acquire) ==
		    HL_EP_ACTIVE)
			delivered += deliver_ep(sh, ep, sorted + at, sorted_ids + at, cnt, d);
		at += cnt;
		sh->ep_count[ep] = 0;
	}
	return delivered;
}

/* All passes from a valid copy, one endpoint at a time: collect its
 * observers behind d->rev (prefetching ahead, across groups), write and
 * commit its events, mark its slots, which are still in cache (12,500
 * slots of one endpoint: 800 KB, within L2; a pass over all 100,000
 * before marking any had to fetch every slot twice). Same order of
 * endpoints and of observers as deliver_sorted(). Returns the events
 * delivered. */
static uint64_t
dispatch_copy(struct hl_shard *sh, const struct hl_obs_cache *oc, const struct dispatch_src *d)
{
	struct hl_worker *w = sh->w;
	const uint32_t *slots = oc->slots, len = oc->n;
	uint64_t delivered = 0;
	for (uint32_t g = 0, at = 0; g < oc->ngroups; at += oc->groups[g++].n) {
		uint32_t ep = oc->groups[g].ep, end = at + oc->groups[g].n, n = 0;
		if (atomic_load_explicit(&hl__epw(&w->seg, ep)->state, memory_order_acquire) !=
		    HL_EP_ACTIVE)
			continue;
		for (uint32_t j = at; j < end; j++) {
			if (j + PREFETCH_DIST < len)
				__builtin_prefetch(hl__obs(&w->seg, slots[j + PREFETCH_DIST]));
			n = collect(sh, hl__obs(&w->seg, slots[j]), slots[j], n, d);
		}
		if (n)
			delivered += deliver_ep(sh, ep, sh->fan, sh->ids, n, d);
	}
	return delivered;
}

/* Dispatch change D of key IDX (slot K) to every observer whose
 * delivered_rev is below d->rev. Called without shard.mu; takes the RCU
 * read lock. */
static void
dispatch(struct hl_shard *sh, uint32_t idx, struct hl_shm_key *k, const struct dispatch_src *d)
{
	struct hl_worker *w = sh->w;
	struct hl_obs_cache *oc = &w->ocache[idx];
	uint64_t delivered;
	/* Never under shard.mu: endpoint cleanup takes it to unlink while we
	 * walk, and a ring we cannot write kills its client (ep.mu). */
	assert(!hl_w_rank_held(HL_W_RANK_SHARD));
	/* Right after a restart, the list may not be repaired yet. Upward
	 * call: dispatch -> recovery (hl_w_rec_key_ready()), the lazy repair
	 * of a list by its first user while part 2 runs (recovery.c). */
	hl_w_rec_key_ready(w, idx);
	urcu_memb_read_lock();
	/* The acquire on gen pairs with the release in hl_w_obs_list_changed();
	 * see above for why a copy built at this gen names only slots we may
	 * read. The list's head is the copy's first slot (the first group is
	 * the head's endpoint). */
	uint64_t gen = atomic_load_explicit(&oc->gen, memory_order_acquire);
	uint32_t head = atomic_load_explicit(&k->obs_head, memory_order_acquire);
	/* The prefix entries matching the key: none, at the cost of one load,
	 * while no prefix observer exists; else one probe per prefix length
	 * in use (keys.c). Found inside the read-side section: an entry freed
	 * meanwhile is not reused before it ends. */
	uint32_t np = hl_w_prefix_match(w, d->key, d->key_len, sh->pmatch);
	if (np) {
		/* Their observers join the key's own in one fan, so that an
		 * endpoint gets one record per change whoever of its observers
		 * asked (exact, prefix, several prefixes). The walk path
		 * groups by endpoint; the copy holds the key's list only. */
		uint64_t *pairs;
		uint32_t npairs;
		uint32_t n = collect_walk(sh, k, head, d, &pairs, &npairs);
		free(pairs);
		for (uint32_t j = 0; j < np; j++) {
			/* Upward call, as above: right after a restart, the
			 * entry's list may not be repaired yet. */
			hl_w_rec_key_ready(w, sh->pmatch[j]);
			n = collect_list(sh, sh->pmatch[j], n, d);
		}
		delivered = n ? deliver_sorted(sh, n, d) : 0;
	} else if (oc->built == gen + 1 && oc->n && oc->slots[0] == head) {
		delivered = dispatch_copy(sh, oc, d);
	} else {
		uint64_t *pairs;
		uint32_t npairs;
		uint32_t n = collect_walk(sh, k, head, d, &pairs, &npairs);
		delivered = n ? deliver_sorted(sh, n, d) : 0;
		if (pairs && npairs >= OCACHE_MIN)
			copy_build(sh, oc, pairs, npairs, gen);
		else if (oc->slots)
			copy_drop(oc); /* the list is short now */
		else
			oc->built = 0;
		free(pairs);
	}
	if (!d->sys)
		atomic_fetch_add_explicit(&sh->c->notifications, delivered, memory_order_relaxed);
	rcu_tsan_release();
	urcu_memb_read_unlock();
}

static void
fill_src(struct hl_worker *w, struct hl_shm_key *k, uint64_t old_off, uint64_t new_off,
         uint16_t type, uint64_t rev, struct dispatch_src *d)
{
	memset(d, 0, sizeof(*d));
	d->type = type;
	d->rev = rev;
	d->key = hl__key_bytes(k);
	d->key_len = k->key_len;
	d->sys = hl_w_is_sys_key(d->key, d->key_len);
	if (old_off) {
		struct hl_shm_value *ov = hl__val(&w->seg, old_off);
		d->old = (const uint8_t *)(ov + 1) + ov->meta_len;
		d->old_len = ov->len;
	}
	if (type == HL_EVR_DELETE) {
		d->pub_pid = k->del_pid;
		d->ts = k->del_ts;
	}
	if (new_off) {
		struct hl_shm_value *nv = hl__val(&w->seg, new_off);
		d->meta = (const uint8_t *)(nv + 1);
		d->meta_len = nv->meta_len;
		d->nw = d->meta + nv->meta_len;
		d->new_len = nv->len;
		d->ts = nv->ts_ns;
		d->pub_pid = nv->pub_pid;
	}
}

/* The change D into this shard's history, before any of its events: a
 * client that sees an event can find it there (catch-up), and one that
 * reads the history after an observe's answer finds every change
 * dispatched before it (resume). */
static void
hist_append(struct hl_shard *sh, const struct dispatch_src *d)
{
	struct hl_w_hist_src s = { .type = d->type,
		                   .rev = d->rev,
		                   .ts = d->ts,
		                   .pub_pid = d->pub_pid,
		                   .key = d->key,
		                   .key_len = d->key_len,
		                   .meta = d->meta,
		                   .meta_len = d->meta_len,
		                   .val = d->nw,
		                   .val_len = d->nw ? d->new_len : 0 };
	hl_w_hist_append(sh, &s);
}

/* Finish the pending dispatch of key IDX (after a crash or right after a
 * commit): append it to the history if it is not there, deliver to
 * observers still behind, then drop the old value. */
void
hl_w_dispatch_pending(struct hl_shard *sh, uint32_t idx)
{
	struct hl_worker *w = sh->w;
	assert(idx >= 1 && idx <= w->seg.h->max_keys);
	assert(hl_w_key_shard(w, idx) == sh->id); /* one writer per key: its shard */
	struct hl_shm_key *k = hl__key(&w->seg, idx);
	uint64_t val = LD_RLX(&k->val);
	uint64_t rev = LD_RLX(&k->rev);
	uint64_t t0 = hl__now_ns();
	hl_w_wake_clock(sh, t0);
	struct dispatch_src d = { .sys = 0 };
	if (val & HL_VAL_DELETED) {
		uint64_t old = val & ~(uint64_t)HL_VAL_DELETED;
		fill_src(w, k, old, 0, HL_EVR_DELETE, rev, &d);
		hist_append(sh, &d);
		dispatch(sh, idx, k, &d);
		hl_w_crash_point(w);
		hl_w_lock(&sh->mu, HL_W_RANK_SHARD);
		/* The delete is complete: the slot reads as absent either way;
		 * this store only lets the old block go. */
		hl__seq_write_begin(&k->seq);
		ST_RLX(&k->val, 0);
		hl__seq_write_end(&k->seq);
		hl__heap_free(&w->heap, old);
		atomic_store_explicit(&w->seg.h->heap_used, hl__heap_used(&w->heap),
		                      memory_order_relaxed);
		hl_w_maybe_free_key(sh, idx);
		hl_w_unlock(&sh->mu, HL_W_RANK_SHARD);
	} else if (val) {
		struct hl_shm_value *nv = hl__val(&w->seg, val);
		uint64_t old = LD_RLX(&nv->prev);
		if (!old && !(nv->type & HL_VAL_PENDING_NEW))
			return;
		fill_src(w, k, old, val, HL_EVR_PUT, rev, &d);
		hist_append(sh, &d);
		dispatch(sh, idx, k, &d);
		hl_w_crash_point(w);
		/* Dispatch done: forget the old value. A crash between these two
		 * lines leaves prev set to a block still marked in use; recovery
		 * re-dispatches to nobody (all delivered) and frees it. */
		__atomic_store_n(&nv->type, (uint16_t)HL_VAL_PUT, __ATOMIC_RELAXED);
		atomic_store_explicit(&nv->prev, 0, memory_order_release);
		if (old) {
			hl__heap_free(&w->heap, old);
			atomic_store_explicit(&w->seg.h->heap_used, hl__heap_used(&w->heap),
			                      memory_order_relaxed);
		}
	}
	uint64_t t1 = hl__now_ns(), dt = t1 - t0;
	hl_w_wake_clock(sh, t1);
	if (!d.sys) {
		atomic_fetch_add_explicit(&sh->c->dispatch_hist[hist_bucket(dt)], 1,
		                          memory_order_relaxed);
		atomic_fetch_add_explicit(&sh->c->dispatch_ns_sum, dt, memory_order_relaxed);
	}
}
