/*
 * table.c: applying requests to the table in the segment, and dispatching
 * the resulting events to observers' event rings.
 *
 * Every mutation follows one pattern: write everything the change needs
 * where nobody can see it yet, then make it visible with ONE release store
 * (the commit point, marked "COMMIT" below), then tidy up. A SIGKILL before
 * the commit leaves only unreachable bytes, which recovery frees because the
 * allocators are rebuilt from reachability; a SIGKILL after it leaves a
 * complete change whose tidy-up recovery finishes (see recovery.c for each
 * case). Pending dispatches are recorded in the table itself: a new value
 * block keeps `prev` until every observer has the event; a deleted key keeps
 * its old value with bit 0 of `val` set (HL_VAL_DELETED).
 *
 * Context: apply functions run on the shard thread that owns the key and
 * take shard.mu themselves. Dispatch runs on the same thread without
 * shard.mu, inside an RCU read-side critical section, because endpoint
 * cleanup may unlink observers concurrently; unlinked observer slots are
 * reused only after a grace period.
 */
#include "worker.h"

#include "heirloom/heirloom.h"
#include "ring.h"
#include "seqlock.h"
#include "util.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

/*
 * RCU orders a reader's last access to an observer slot, and the remover's,
 * before the slot's reuse: call_rcu() runs free_obs_slot_cb() only after
 * every read-side section that could see the slot has ended. liburcu does
 * that with code ThreadSanitizer does not instrument, so under TSan the two
 * ends are annotated: every read-side section and every remover releases a
 * token before it lets go, and the callback acquires it before the slot
 * goes back to the pool. Nothing in other builds.
 */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer) && !defined(__SANITIZE_THREAD__)
#define __SANITIZE_THREAD__ 1 /* clang's spelling of gcc's macro */
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
static char rcu_tsan_token;
#define rcu_tsan_release() __tsan_release(&rcu_tsan_token)
#define rcu_tsan_acquire() __tsan_acquire(&rcu_tsan_token)
#else
#define rcu_tsan_release() ((void)0)
#define rcu_tsan_acquire() ((void)0)
#endif

#define LD_RLX(p) atomic_load_explicit((p), memory_order_relaxed)
#define ST_RLX(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)

uint32_t
hl_w_key_shard(struct hl_worker *w, uint32_t key)
{
	const struct hl_shm_header *h = w->seg.h;
	return hl__shard_of_bucket(h, hl__bucket_of(h, hl__key(&w->seg, key)->hash));
}

void
hl_w_crash_step(struct hl_worker *w)
{
	/* Test hook (--crash-at-step): die at the k-th step so that tests can
	 * leave a half-done change at every step and check recovery. */
	if (atomic_fetch_add_explicit(&w->step, 1, memory_order_relaxed) + 1 ==
	    w->opt.crash_at_step)
		/* The raw system call, as close to a SIGKILL as an exit gets:
		 * no atexit handlers, and no sanitizer finalisation (TSan's
		 * _exit() reports a thread that ended unjoined, as one does
		 * while the worker stops, and exits 66 instead of 99). */
		syscall(SYS_exit_group, 99);
}

/*
 * The done record of the request being applied (struct hl_shm_epw_shard):
 * its outcome, stored right after its commit (or once it is known to have
 * none), before anything that could erase the commit's evidence (the
 * dispatch, which frees a deleted key; the RCU free of an unlinked
 * observer). Release: the commit is visible before it. Nothing for the
 * worker's own publishes (cur_ws NULL). Shard thread only.
 */
static void
req_done(struct hl_shard *sh, int64_t result)
{
	if (!sh->cur_ws || sh->cur_done)
		return;
	atomic_store_explicit(&sh->cur_ws->done_result, result, memory_order_relaxed);
	atomic_store_explicit(&sh->cur_ws->done_pos, sh->cur_pos + 1, memory_order_release);
	sh->cur_done = 1;
}

int
hl_w_shard_init(struct hl_shard *sh)
{
	struct hl_worker *w = sh->w;
	const struct hl_shm_header *h = w->seg.h;
	pthread_mutex_init(&sh->mu, NULL);
	sh->c = &w->seg.h->shard[sh->id].c;
	sh->ep_count = calloc(h->max_endpoints, sizeof(uint32_t));
	sh->ep_start = calloc(h->max_endpoints, sizeof(uint32_t));
	sh->touched = calloc(h->max_endpoints, sizeof(uint32_t));
	sh->ids = calloc(HL_EV_IDS_MAX, sizeof(uint64_t));
	sh->req_cap = h->req_ring_bytes;
	sh->req = malloc(sh->req_cap);
	sh->cleanup = calloc((h->max_endpoints + 63) / 64, sizeof(uint64_t));
	sh->deferred = calloc(hl__pending_words(h), sizeof(uint64_t));
	/* One array for the worker, made by the first shard's init: every
	 * shard is initialised before recovery or any thread runs. */
	if (sh->id == 0 && !w->ocache)
		w->ocache = calloc((size_t)h->max_keys + 1, sizeof(*w->ocache));
	if (!w->ocache)
		return -ENOMEM;
	if (!sh->ep_count || !sh->ep_start || !sh->touched || !sh->ids || !sh->req || !sh->cleanup ||
	    !sh->deferred)
		return -ENOMEM;
	return 0;
}

void
hl_w_shard_fini(struct hl_shard *sh)
{
	free(sh->fan);
	free(sh->ep_count);
	free(sh->ep_start);
	free(sh->touched);
	free(sh->ids);
	free(sh->req);
	free((void *)sh->cleanup);
	free(sh->deferred);
	if (sh->id == 0 && sh->w->ocache) {
		for (uint32_t i = 0; i <= sh->w->seg.h->max_keys; i++) {
			free(sh->w->ocache[i].slots);
			free(sh->w->ocache[i].groups);
		}
		free(sh->w->ocache);
		sh->w->ocache = NULL;
	}
	pthread_mutex_destroy(&sh->mu);
}

/* ---- key index (caller holds shard.mu) ---- */

static uint32_t
key_find(struct hl_worker *w, const uint8_t *key, uint32_t len, uint64_t hash)
{
	struct hl_shm_bucket *b = hl__bucket(&w->seg, hl__bucket_of(w->seg.h, hash));
	for (uint32_t i = LD_RLX(&b->head); i != HL_NIL;) {
		struct hl_shm_key *k = hl__key(&w->seg, i);
		if (k->hash == hash && k->key_len == len && memcmp(hl__key_bytes(k), key, len) == 0)
			return i;
		i = LD_RLX(&k->next);
	}
	return 0;
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
	/* COMMIT: linking the slot into its bucket. Before it, the slot is
	 * unreachable and recovery returns it to the pool. */
	atomic_fetch_add_explicit(&b->seq, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&b->head, idx, memory_order_release);
	atomic_fetch_add_explicit(&b->seq, 1, memory_order_release);
	atomic_fetch_add_explicit(&w->seg.h->keys_used, 1, memory_order_relaxed);
	return idx;
}

/* Unlink and free key slot IDX if it has no value and no observer. */
void
hl_w_maybe_free_key(struct hl_shard *sh, uint32_t idx)
{
	struct hl_worker *w = sh->w;
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
	atomic_fetch_add_explicit(&b->seq, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(link, LD_RLX(&k->next), memory_order_release);
	atomic_fetch_add_explicit(&b->seq, 1, memory_order_release);
	ST_RLX(&k->used, 0);
	hl__pool_free(&w->keys, idx);
	atomic_fetch_sub_explicit(&w->seg.h->keys_used, 1, memory_order_relaxed);
}

/* ---- dispatch ---- */

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
 * (obs_list_changed(), release, under the key's shard.mu): apply_observe
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
 * obs_list_changed() (the check of the head against the copy's first slot
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

static void
obs_list_changed(struct hl_worker *w, uint32_t idx)
{
	/* Release: the list change is visible to whoever reads the new gen
	 * (pairs with the acquire in dispatch()). */
	atomic_fetch_add_explicit(&w->ocache[idx].gen, 1, memory_order_release);
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

static void
wake_one(struct hl_worker *w, uint32_t ep)
{
	struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
	/* Dekker with hl_next(): our ring/ack stores are ordered before the
	 * read of `sleeping` (a client-written hint: garbage only costs a
	 * spurious wake-up). */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&hl__epc(&w->seg, ep)->sleeping, memory_order_relaxed)) {
		atomic_fetch_add_explicit(&pw->ev_signal, 1, memory_order_release);
		hl__futex_wake(&pw->ev_signal, INT_MAX);
	}
}

/*
 * Deferred wake-ups. Waking a sleeping client costs the worker a FUTEX_WAKE
 * and the reschedule it triggers, a few microseconds: in a burst of
 * publishes to 8 observer processes it was most of the worker's time (perf:
 * futex_wake ~30% of all samples, 27k msg/s; bench/README.md). So while the
 * shard thread applies a run of requests (hl_w_apply() sets wk.active), the
 * events' wake-ups are collected here, one per endpoint, and sent when the
 * oldest is WAKE_DEFER_NS old (checked after each dispatch) or when the
 * drain ends: drain() calls hl_w_wake_client() after every run that applied
 * anything, and that call flushes them. Other threads (recovery, cleanup)
 * and anything outside hl_w_apply() wake at once. Deferring only delays a
 * wake-up: each ring commit still precedes the read of `sleeping` (Dekker
 * with hl_next()), so none is lost.
 */
#define WAKE_DEFER_NS 10000u
#define WAKE_DEFER_MAX 64u
static _Thread_local struct {
	int active;    /* inside hl_w_apply() on a shard thread */
	uint32_t n;    /* endpoints in eps[] */
	uint64_t since; /* hl__now_ns() when eps[0] was deferred */
	uint32_t eps[WAKE_DEFER_MAX];
} wk;

static void
wake_flush(struct hl_worker *w)
{
	uint32_t n = wk.n;
	wk.n = 0;
	for (uint32_t i = 0; i < n; i++)
		wake_one(w, wk.eps[i]);
}

static void
wake_soon(struct hl_worker *w, uint32_t ep)
{
	if (!wk.active) {
		wake_one(w, ep);
		return;
	}
	for (uint32_t i = 0; i < wk.n; i++)
		if (wk.eps[i] == ep)
			return;
	if (wk.n == WAKE_DEFER_MAX)
		wake_flush(w);
	if (wk.n == 0)
		wk.since = hl__now_ns();
	wk.eps[wk.n++] = ep;
}

/* Wake EP if it sleeps, and every endpoint whose wake-up this thread
 * deferred (see wake_soon()). */
void
hl_w_wake_client(struct hl_worker *w, uint32_t ep)
{
	wake_flush(w);
	wake_one(w, ep);
}

struct dispatch_src {
	uint16_t type;         /* HL_EVR_PUT / HL_EVR_DELETE */
	uint64_t rev, ts;
	uint32_t pub_pid;
	const uint8_t *key;
	uint32_t key_len;
	const uint8_t *meta;
	uint32_t meta_len;
	const uint8_t *old;    /* NULL = none */
	uint32_t old_len;
	const uint8_t *nw;     /* NULL = none */
	uint32_t new_len;
	int sys;               /* a HL_SYS_PREFIX key: kept out of the counters */
};

/* Keys under HL_SYS_PREFIX are the worker's own (telemetry.c): only it
 * writes them, and their traffic is not counted, so that telemetry about
 * dispatches and lag never reports (and feeds on) itself. */
static int
is_sys_key(const uint8_t *key, uint32_t len)
{
	return len >= sizeof(HL_SYS_PREFIX) - 1 &&
	       memcmp(key, HL_SYS_PREFIX, sizeof(HL_SYS_PREFIX) - 1) == 0;
}

/* Write the events for endpoint EP's observers fan[0..n), whose ids are
 * ids[0..n), into its ring for this shard. Returns events delivered. */
static uint64_t
deliver_ep(struct hl_shard *sh, uint32_t ep, const struct hl_fan *fan, const uint64_t *ids,
           uint32_t n, const struct dispatch_src *d)
{
	struct hl_worker *w = sh->w;
	struct hl_shm_epw_shard *ws = hl__epw_shard(&w->seg, ep, sh->id);
	struct hl_ring ring = {.head = &ws->ev_head,
	                       .tail = &hl__epc_shard(&w->seg, ep, sh->id)->ev_tail,
	                       .data = hl__ev_ring(&w->seg, ep, sh->id),
	                       .size = w->seg.h->ev_ring_bytes};
	uint64_t head = LD_RLX(&ws->ev_head), delivered = 0;
	uint32_t payload = d->key_len + d->meta_len + d->old_len + d->new_len;
	uint32_t i = 0;
	int lagged = 0, bad = 0;
	/* Events were dropped since the last flagged record: the first record
	 * written now says so (HL_EVRF_LAG_BEFORE), so that the client resyncs
	 * before it hands out anything written after the drop. */
	uint64_t lseq = LD_RLX(&ws->lag_seq);
	uint16_t evflags = lseq != LD_RLX(&ws->lag_marked) ? HL_EVRF_LAG_BEFORE : 0;
	while (i < n) {
		uint32_t cnt = n - i < HL_EV_IDS_MAX ? n - i : HL_EV_IDS_MAX;
		uint32_t size = hl__rec_align((uint32_t)sizeof(struct hl_evrec) + 8u * cnt + payload);
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
			.old_len = d->old ? d->old_len : HL_NO_LEN,
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
		if (d->old && d->old_len)
			memcpy(q, d->old, d->old_len);
		q += d->old ? d->old_len : 0;
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
			__builtin_prefetch(hl__obs(&w->seg, fan[j + PREFETCH_DIST].slot), 1);
		ST_RLX(&hl__obs(&w->seg, fan[j].slot)->delivered_rev, d->rev);
	}
	if (lagged) {
		for (; i < n; i++)
			atomic_fetch_add_explicit(&hl__obs(&w->seg, fan[i].slot)->dropped, 1,
			                          memory_order_relaxed);
		if (!d->sys)
			atomic_fetch_add_explicit(&sh->c->lagged_drops, n - (uint32_t)delivered,
			                          memory_order_relaxed);
		/* Release: the dropped counts are visible before lag_seq moves
		 * (pairs with the acquire in hl_next()'s collect_lag()). */
		atomic_fetch_add_explicit(&ws->lag_seq, 1, memory_order_release);
	}
	if (bad)
		hl_w_ep_kill(w, ep, "impossible event ring tail");
	else
		wake_soon(w, ep);
	return delivered;
}

/* Add observer SLOT (O) to the dispatch if it is live and behind d->rev;
 * N is the count collected so far. Returns the new count. */
static uint32_t
collect(struct hl_shard *sh, struct hl_shm_observer *o, uint32_t slot, uint32_t n,
        const struct dispatch_src *d)
{
	struct hl_worker *w = sh->w;
	uint64_t id = atomic_load_explicit(&o->id, memory_order_acquire);
	if (id == 0 || LD_RLX(&o->delivered_rev) >= d->rev)
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
	sh->fan[n] = (struct hl_fan){ .ep = o->endpoint, .slot = slot };
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
	/* Right after a restart, the list may not be repaired yet. */
	hl_w_rec_key_ready(w, idx);
	urcu_memb_read_lock();
	/* The acquire on gen pairs with the release in obs_list_changed();
	 * see above for why a copy built at this gen names only slots we may
	 * read. The list's head is the copy's first slot (the first group is
	 * the head's endpoint). */
	uint64_t gen = atomic_load_explicit(&oc->gen, memory_order_acquire);
	uint32_t head = atomic_load_explicit(&k->obs_head, memory_order_acquire);
	if (oc->built == gen + 1 && oc->n && oc->slots[0] == head) {
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
fill_src(struct hl_worker *w, struct hl_shm_key *k, uint64_t old_off, uint64_t new_off, uint16_t type,
         uint64_t rev, struct dispatch_src *d)
{
	memset(d, 0, sizeof(*d));
	d->type = type;
	d->rev = rev;
	d->key = hl__key_bytes(k);
	d->key_len = k->key_len;
	d->sys = is_sys_key(d->key, d->key_len);
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

/* Finish the pending dispatch of key IDX (after a crash or right after a
 * commit): deliver to observers still behind, then drop the old value. */
void
hl_w_dispatch_pending(struct hl_shard *sh, uint32_t idx)
{
	struct hl_worker *w = sh->w;
	struct hl_shm_key *k = hl__key(&w->seg, idx);
	uint64_t val = LD_RLX(&k->val);
	uint64_t rev = LD_RLX(&k->rev);
	uint64_t t0 = hl__now_ns();
	struct dispatch_src d = {.sys = 0};
	if (val & HL_VAL_DELETED) {
		uint64_t old = val & ~(uint64_t)HL_VAL_DELETED;
		fill_src(w, k, old, 0, HL_EVR_DELETE, rev, &d);
		dispatch(sh, idx, k, &d);
		hl_w_crash_point(w);
		pthread_mutex_lock(&sh->mu);
		/* The delete is complete: the slot reads as absent either way;
		 * this store only lets the old block go. */
		hl__seq_write_begin(&k->seq);
		ST_RLX(&k->val, 0);
		hl__seq_write_end(&k->seq);
		hl__heap_free(&w->heap, old);
		atomic_store_explicit(&w->seg.h->heap_used, hl__heap_used(&w->heap),
		                      memory_order_relaxed);
		hl_w_maybe_free_key(sh, idx);
		pthread_mutex_unlock(&sh->mu);
	} else if (val) {
		struct hl_shm_value *nv = hl__val(&w->seg, val);
		uint64_t old = LD_RLX(&nv->prev);
		if (!old && !(nv->type & HL_VAL_PENDING_NEW))
			return;
		fill_src(w, k, old, val, HL_EVR_PUT, rev, &d);
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
	uint64_t dt = hl__now_ns() - t0;
	if (!d.sys)
		atomic_fetch_add_explicit(&sh->c->dispatch_hist[hist_bucket(dt)], 1,
		                          memory_order_relaxed);
}

/* ---- apply ---- */

static int
apply_publish(struct hl_shard *sh, uint32_t ep, uint64_t pos, const struct hl_req *r,
              const uint8_t *key, const uint8_t *meta, const uint8_t *val, uint32_t *dispatch_key)
{
	struct hl_worker *w = sh->w;
	uint64_t hash = hl__hash(key, r->h.key_len);
	int rc = 0;
	pthread_mutex_lock(&sh->mu);
	uint32_t idx = key_find(w, key, r->h.key_len, hash);
	int created = 0;
	if (!idx) {
		idx = key_create(w, key, r->h.key_len, hash);
		if (!idx) {
			/* Key pool full: counted for heirloomctl (issue 21). */
			atomic_fetch_add_explicit(&w->seg.h->keys_full, 1, memory_order_relaxed);
			rc = -ENOSPC;
			goto out;
		}
		created = 1;
	}
	struct hl_shm_key *k = hl__key(&w->seg, idx);
	uint64_t old = LD_RLX(&k->val);
	if (old) {
		struct hl_shm_value *ov = hl__val(&w->seg, old);
		if (ov->len == r->val_len && memcmp((uint8_t *)(ov + 1) + ov->meta_len, val, r->val_len) == 0) {
			if (ep != HL_W_EP_SELF)
				atomic_fetch_add_explicit(&sh->c->skipped, 1, memory_order_relaxed);
			goto out;
		}
	}
	uint32_t klass;
	uint64_t nb = hl__heap_alloc(&w->heap, sizeof(struct hl_shm_value) + r->meta_len + r->val_len,
	                             &klass, &rc);
	if (!nb) {
		if (rc == -ENOSPC)
			atomic_fetch_add_explicit(&w->seg.h->heap_full, 1, memory_order_relaxed);
		if (created)
			hl_w_maybe_free_key(sh, idx);
		goto out;
	}
	atomic_store_explicit(&w->seg.h->heap_used, hl__heap_used(&w->heap), memory_order_relaxed);
	uint64_t rev = atomic_fetch_add_explicit(&w->seg.h->revision, 1, memory_order_relaxed) + 1;
	struct hl_shm_value hdr = { .rev = rev,
		                    .len = r->val_len,
		                    .meta_len = r->meta_len,
		                    .type = old ? HL_VAL_PUT : HL_VAL_PUT | HL_VAL_PENDING_NEW,
		                    .pub_pid = ep == HL_W_EP_SELF
		                                       ? (uint32_t)getpid()
		                                       : LD_RLX(&hl__epw(&w->seg, ep)->pid),
		                    .klass = klass,
		                    .ts_ns = r->ts_ns,
		                    .org_ep = ep == HL_W_EP_SELF ? UINT32_MAX : ep,
		                    .org_gen = ep == HL_W_EP_SELF ? 0 : w->eps[ep].gen,
		                    .org_pos = pos };
	atomic_init(&hdr.prev, old);
	struct hl_shm_value *nv = hl__val(&w->seg, nb);
	/* The block may have been freed a moment ago while a client still
	 * reads it under a seqlock: word-atomic stores keep that race defined. */
	hl__racy_copy_in(nv, &hdr, sizeof(hdr));
	hl__racy_copy_in(nv + 1, meta, r->meta_len);
	hl__racy_copy_in((uint8_t *)(nv + 1) + r->meta_len, val, r->val_len);
	hl_w_crash_point(w);
	/* COMMIT: the new value becomes the key's value. Before this line the
	 * block is unreachable (recovery frees it, the request is applied
	 * anew); after it, prev (or PENDING_NEW) marks the dispatch as pending
	 * and recovery finishes it, and the block's origin (ep, gen, pos) is
	 * the evidence that this request was applied (hl_w_req_committed()). */
	hl__seq_write_begin(&k->seq);
	atomic_store_explicit(&k->val, nb, memory_order_release);
	ST_RLX(&k->rev, rev);
	hl__seq_write_end(&k->seq);
	hl_w_crash_point(w); /* committed, no done record yet */
	req_done(sh, 0);
	if (ep != HL_W_EP_SELF)
		atomic_fetch_add_explicit(&sh->c->publishes, 1, memory_order_relaxed);
	*dispatch_key = idx;
out:
	pthread_mutex_unlock(&sh->mu);
	return rc;
}

static int
apply_delete(struct hl_shard *sh, uint32_t ep, uint64_t pos, const struct hl_req *r,
             const uint8_t *key, uint32_t *dispatch_key)
{
	struct hl_worker *w = sh->w;
	uint64_t hash = hl__hash(key, r->h.key_len);
	pthread_mutex_lock(&sh->mu);
	uint32_t idx = key_find(w, key, r->h.key_len, hash);
	if (idx) {
		struct hl_shm_key *k = hl__key(&w->seg, idx);
		uint64_t old = LD_RLX(&k->val);
		if (old && !(old & HL_VAL_DELETED)) {
			uint64_t rev =
			        atomic_fetch_add_explicit(&w->seg.h->revision, 1, memory_order_relaxed) + 1;
			/* The old block names this delete as its origin from now
			 * on: with the DELETED bit below, the evidence that this
			 * request was applied. Before the commit it proves
			 * nothing (the bit is not set); clients never read it. */
			struct hl_shm_value *ov = hl__val(&w->seg, old);
			__atomic_store_n(&ov->org_ep, ep, __ATOMIC_RELAXED);
			__atomic_store_n(&ov->org_gen, w->eps[ep].gen, __ATOMIC_RELAXED);
			__atomic_store_n(&ov->org_pos, pos, __ATOMIC_RELAXED);
			hl_w_crash_point(w);
			/* COMMIT: the key reads as absent from here on; its old
			 * value stays, flagged, until the delete is dispatched.
			 * Who and when ride in the slot, for the delete event. */
			hl__seq_write_begin(&k->seq);
			__atomic_store_n(&k->del_pid, atomic_load_explicit(&hl__epw(&w->seg, ep)->pid,
			                                                   memory_order_relaxed),
			                 __ATOMIC_RELAXED);
			__atomic_store_n(&k->del_ts, r->ts_ns, __ATOMIC_RELAXED);
			atomic_store_explicit(&k->val, old | HL_VAL_DELETED, memory_order_release);
			ST_RLX(&k->rev, rev);
			hl__seq_write_end(&k->seq);
			hl_w_crash_point(w); /* committed, no done record yet */
			req_done(sh, 0);
			atomic_fetch_add_explicit(&sh->c->deletes, 1, memory_order_relaxed);
			*dispatch_key = idx;
		}
	}
	pthread_mutex_unlock(&sh->mu);
	return 0;
}

static int
apply_observe(struct hl_shard *sh, uint32_t ep, uint64_t pos, const struct hl_req *r,
              const uint8_t *key, int64_t *result)
{
	struct hl_worker *w = sh->w;
	uint64_t hash = hl__hash(key, r->h.key_len);
	int rc = 0;
	pthread_mutex_lock(&sh->mu);
	if (!hl_w_ep_active(w, ep)) {
		rc = HL_ESTALE;
		goto out;
	}
	uint32_t idx = key_find(w, key, r->h.key_len, hash);
	int created = 0;
	if (!idx) {
		idx = key_create(w, key, r->h.key_len, hash);
		if (!idx) {
			/* Key pool full: counted for heirloomctl (issue 21). */
			atomic_fetch_add_explicit(&w->seg.h->keys_full, 1, memory_order_relaxed);
			rc = -ENOSPC;
			goto out;
		}
		created = 1;
	}
	uint32_t slot = hl__pool_alloc(&w->obs);
	if (!slot) {
		atomic_fetch_add_explicit(&w->seg.h->observers_full, 1, memory_order_relaxed);
		if (created)
			hl_w_maybe_free_key(sh, idx);
		rc = -ENOSPC;
		goto out;
	}
	struct hl_shm_key *k = hl__key(&w->seg, idx);
	struct hl_shm_observer *o = hl__obs(&w->seg, slot);
	/* The sequence number is stored before the observer can be reached,
	 * so no id handed out is ever handed out again, even after a crash
	 * (recovery also raises it past every live id). */
	uint64_t seq = atomic_fetch_add_explicit(&w->seg.h->next_observer_seq, 1, memory_order_relaxed);
	if (seq == 0 || seq >= HL_OBS_SEQ_LIMIT) {
		/* Used up: keep the counter at the limit (recovery takes more
		 * than that for damage and restarts it lower). */
		if (seq >= HL_OBS_SEQ_LIMIT)
			atomic_store_explicit(&w->seg.h->next_observer_seq, HL_OBS_SEQ_LIMIT,
			                      memory_order_relaxed);
		hl__pool_free(&w->obs, slot);
		if (created)
			hl_w_maybe_free_key(sh, idx);
		rc = -EOVERFLOW;
		goto out;
	}
	uint64_t id = (seq << 24) | slot;
	uint32_t head = LD_RLX(&k->obs_head);
	ST_RLX(&o->next, head);
	ST_RLX(&o->prev, HL_NIL);
	o->key = idx;
	o->endpoint = ep;
	o->ep_gen = w->eps[ep].gen;
	o->flags = (uint32_t)r->arg;
	ST_RLX(&o->delivered_rev, LD_RLX(&k->rev));
	ST_RLX(&o->dropped, 0);
	o->created_ns = hl__wall_ns();
	o->req_pos = pos;
	atomic_store_explicit(&o->id, id, memory_order_release);
	if (head != HL_NIL)
		ST_RLX(&hl__obs(&w->seg, head)->prev, slot);
	hl_w_crash_point(w);
	/* COMMIT: the observer joins its key's list. Before it the slot is
	 * unreachable (recovery clears it; head->prev is rebuilt from next). */
	atomic_store_explicit(&k->obs_head, slot, memory_order_release);
	hl_w_crash_point(w); /* committed, no done record yet */
	req_done(sh, (int64_t)id);
	obs_list_changed(w, idx);
	atomic_fetch_add_explicit(&k->nobs, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->seg.h->observers_used, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&sh->c->observers_added, 1, memory_order_relaxed);
	hl_w_ep_add_obs(w, ep, slot);
	*result = (int64_t)id;
out:
	pthread_mutex_unlock(&sh->mu);
	return rc;
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
 *  OBSERVE    an observer of this endpoint incarnation with req_pos == POS
 *             is linked in the key's list;
 *  UNOBSERVE  the observer R names carries req_pos == POS (stored just
 *             before the unlink) and is no longer linked.
 * Valid only while that evidence cannot have been erased: recovery calls
 * it before anything else is applied or dispatched, and a worker erases it
 * only after the done record (req_done()). Caller: recovery's part 1, no
 * other thread running; the key's list is repaired first.
 */
int
hl_w_req_committed(struct hl_shard *sh, uint32_t ep, uint32_t gen, uint64_t pos,
                   const struct hl_req *r, int64_t *result)
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
		pthread_mutex_lock(&sh->mu);
		found = o->endpoint == ep && o->ep_gen == gen && o->req_pos == pos &&
		        !obs_linked(w, slot);
		pthread_mutex_unlock(&sh->mu);
		return found;
	}
	if (r->h.type != HL_REQ_PUBLISH && r->h.type != HL_REQ_DELETE &&
	    r->h.type != HL_REQ_OBSERVE)
		return 0;
	pthread_mutex_lock(&sh->mu);
	uint32_t idx = key_find(w, key, r->h.key_len, hl__hash(key, r->h.key_len));
	pthread_mutex_unlock(&sh->mu);
	if (!idx)
		return 0;
	struct hl_shm_key *k = hl__key(&w->seg, idx);
	if (r->h.type == HL_REQ_OBSERVE)
		hl_w_rec_key_ready(w, idx);
	pthread_mutex_lock(&sh->mu);
	uint64_t val = LD_RLX(&k->val);
	if (r->h.type == HL_REQ_PUBLISH || r->h.type == HL_REQ_DELETE) {
		int deleted = (val & HL_VAL_DELETED) != 0;
		uint64_t off = val & ~(uint64_t)HL_VAL_DELETED;
		if (off && deleted == (r->h.type == HL_REQ_DELETE)) {
			const struct hl_shm_value *v = hl__val(&w->seg, off);
			found = v->org_ep == ep && v->org_gen == gen && v->org_pos == pos;
		}
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
	pthread_mutex_unlock(&sh->mu);
	return found;
}

static void
free_obs_slot_cb(struct rcu_head *head);

struct deferred_slot {
	struct rcu_head rh;
	struct hl_worker *w;
	uint32_t slot;
};

static void
free_obs_slot_cb(struct rcu_head *head)
{
	struct deferred_slot *d = caa_container_of(head, struct deferred_slot, rh);
	rcu_tsan_acquire();
	hl__pool_free(&d->w->obs, d->slot);
	free(d);
}

/* Unlink observer SLOT. Caller holds the key's shard.mu. The slot goes back
 * to the pool after an RCU grace period, so that a dispatch walking the
 * list right now can still follow its `next`. DONE: the unlink is the
 * commit of the request being applied (apply_unobserve()): its done record
 * is stored right after the unlink and before the slot is handed to RCU,
 * whose callback may let another shard reuse it (and erase the evidence)
 * at once. */
static int
remove_observer(struct hl_shard *sh, uint32_t slot, int done)
{
	struct hl_worker *w = sh->w;
	struct hl_shm_observer *o = hl__obs(&w->seg, slot);
	/* Everything needed of the slot is read now: once call_rcu() below has
	 * it, a grace period may end at once (this thread is not in a read-side
	 * section) and another shard may reuse the slot for a key of its own.
	 * Reading o->key after that (as this code once did, found by TSan)
	 * could free a key another shard is just linking an observer to. */
	const uint32_t idx = o->key, ep = o->endpoint;
	struct hl_shm_key *k = hl__key(&w->seg, idx);
	uint32_t p = LD_RLX(&o->prev), n = LD_RLX(&o->next);
	hl_w_crash_point(w);
	/* COMMIT: unlink (readers follow next only). A crash right after it
	 * leaves the slot unreachable with its id set: recovery clears it and
	 * rebuilds n->prev from the next chain. */
	if (p != HL_NIL)
		atomic_store_explicit(&hl__obs(&w->seg, p)->next, n, memory_order_release);
	else
		atomic_store_explicit(&k->obs_head, n, memory_order_release);
	if (n != HL_NIL)
		ST_RLX(&hl__obs(&w->seg, n)->prev, p);
	atomic_store_explicit(&o->id, 0, memory_order_release);
	if (done) {
		hl_w_crash_point(w); /* committed, no done record yet */
		req_done(sh, 0);
	}
	/* Before call_rcu() below: a dispatch that reads the old gen began
	 * its read-side section before the slot can be reused. */
	obs_list_changed(w, idx);
	atomic_fetch_sub_explicit(&k->nobs, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&w->seg.h->observers_used, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&sh->c->observers_removed, 1, memory_order_relaxed);
	hl_w_ep_del_obs(w, ep, slot);
	struct deferred_slot *d = malloc(sizeof(*d));
	if (d) {
		d->w = w;
		d->slot = slot;
		rcu_tsan_release();
		urcu_memb_call_rcu(&d->rh, free_obs_slot_cb);
	} else {
		/* No memory for the deferral: wait for the grace period here. */
		urcu_memb_synchronize_rcu();
		rcu_tsan_acquire();
		hl__pool_free(&w->obs, slot);
	}
	hl_w_maybe_free_key(sh, idx);
	return 0;
}

int
hl_w_remove_observer(struct hl_shard *sh, uint32_t slot)
{
	return remove_observer(sh, slot, 0);
}

static int
apply_unobserve(struct hl_shard *sh, uint32_t ep, uint64_t pos, const struct hl_req *r)
{
	struct hl_worker *w = sh->w;
	uint64_t id = r->arg;
	uint32_t slot = (uint32_t)(id & 0xffffffu);
	if (slot < 1 || slot > w->seg.h->max_observers || id >> 24 == 0)
		return -ENOENT;
	struct hl_shm_observer *o = hl__obs(&w->seg, slot);
	int rc = 0;
	pthread_mutex_lock(&sh->mu);
	if (atomic_load_explicit(&o->id, memory_order_relaxed) != id)
		rc = -ENOENT;
	else if (hl_w_key_shard(w, o->key) != sh->id)
		rc = -EINVAL; /* sent to the wrong shard: the client is broken */
	else if (o->endpoint != ep || o->ep_gen != w->eps[ep].gen)
		rc = -EPERM;
	else {
		/* This request is the last to change the slot: with the unlink,
		 * the evidence of its commit (hl_w_req_committed()). */
		o->req_pos = pos; /* the unobserve's own position */
		rc = remove_observer(sh, slot, 1);
	}
	pthread_mutex_unlock(&sh->mu);
	return rc;
}

/*
 * Apply request R (a private, validated copy) from endpoint EP at ring
 * position POS. Returns 0 or -errno (the request's own failure, answered to
 * the client); *result gets an observer id for OBSERVE. EP is HL_W_EP_SELF
 * for the worker's own publishes (telemetry.c, on this shard's thread, POS
 * unused): they alone may write HL_SYS_PREFIX keys (-EPERM both ways) and
 * they are not counted as publishes.
 */
int
hl_w_apply(struct hl_shard *sh, uint32_t ep, uint64_t pos, const struct hl_req *r, uint32_t len,
           int64_t *result)
{
	(void)len;
	const uint8_t *key = (const uint8_t *)(r + 1);
	const uint8_t *meta = key + r->h.key_len;
	const uint8_t *val = meta + r->meta_len;
	uint32_t dk = 0;
	int rc;
	*result = 0;
	/* The worker's own keys: its publishes only (HL_W_EP_SELF). */
	if ((r->h.type == HL_REQ_PUBLISH || r->h.type == HL_REQ_DELETE) &&
	    is_sys_key(key, r->h.key_len) != (ep == HL_W_EP_SELF)) {
		req_done(sh, -EPERM);
		return -EPERM;
	}
	switch (r->h.type) {
	case HL_REQ_PUBLISH: rc = apply_publish(sh, ep, pos, r, key, meta, val, &dk); break;
	case HL_REQ_DELETE: rc = apply_delete(sh, ep, pos, r, key, &dk); break;
	case HL_REQ_OBSERVE:
		rc = apply_observe(sh, ep, pos, r, key, result);
		break;
	case HL_REQ_UNOBSERVE: rc = apply_unobserve(sh, ep, pos, r); break;
	default:
		rc = -EINVAL;
		break;
	}
	/* No commit (a failure, an unchanged value, a delete of nothing): the
	 * outcome is recorded now; a crash before this line applies the
	 * request again later, which is its first application. */
	req_done(sh, rc < 0 ? rc : *result);
	if (dk) {
		/* Wake-ups of this dispatch may wait for the end of the run
		 * (wake_soon()), but not longer than WAKE_DEFER_NS. Only a
		 * client's request defers: drain() applies those, and ends
		 * every run with hl_w_wake_client(), which sends them. */
		wk.active = ep < sh->w->seg.h->max_endpoints;
		hl_w_dispatch_pending(sh, dk);
		wk.active = 0;
		if (wk.n && hl__now_ns() - wk.since >= WAKE_DEFER_NS)
			wake_flush(sh->w);
	}
	return rc;
}
