/* SPDX-License-Identifier: MIT */
/*
 * shard.c: one thread per shard. It finds endpoints with queued requests
 * (pending bits), copies each request out of the client's ring, validates
 * the copy, applies it (apply.c), answers it, and only then advances the
 * ring's tail: a request leaves its ring only after it has been applied.
 *
 * The life of a request (layout.h, struct hl_shm_epw_shard): a SYNC one is
 * first taken (take(): the compare-and-swap that decides the race with a
 * client withdrawing it); then intent_pos = P + 1, the commit (apply.c),
 * the done record, the answer, and last the consume. A worker killed
 * anywhere in between leaves the request at the ring's tail with
 * intent_pos == P + 1, and recovery decides from the done record or from
 * the commit's own evidence whether it was applied (recovery.c,
 * resolve_in_flight()), before any other request is applied. Requests
 * recovery leaves in the ring were never applied: they are applied here
 * for the first time, with no check.
 *
 * Everything read from a ring is client-written: it is copied once into
 * shard-private memory and only the copy is validated and used (no double
 * fetch). A client whose ring holds an impossible record is dropped.
 */
#include "shard.h"

#include "apply.h"
#include "endpoint.h"
#include "heirloom/heirloom.h"
#include "request.h"
#include "ring.h"
#include "spin.h"
#include "telemetry.h"
#include "util.h"
#include "wake.h"

#include <assert.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

#define LD_RLX(p) atomic_load_explicit((p), memory_order_relaxed)
#define BATCH     256

/* One round of a busy-wait: tell the core (and a hyperthread sibling) that
 * this thread only spins. */
static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	atomic_signal_fence(memory_order_seq_cst); /* a compiler barrier, nothing more */
#endif
}

/* Take SYNC request R (the private copy of the record at REC): swap
 * SYNC -> SYNC|TAKEN in the ring, the one atomic step that decides the
 * race with the client's withdraw() (lib/client.c). 1 = taken (or taken
 * already, by a previous worker), 0 = the client withdrew it first (skip
 * it), -EPROTO = the word changed to something no honest client writes. */
static int
take(const uint8_t *rec, struct hl_req *r)
{
	if (!(r->flags & HL_REQF_SYNC) || (r->flags & HL_REQF_TAKEN))
		return 1;
	if (r->flags & HL_REQF_WITHDRAWN)
		return 0;
	struct hl_req want = *r;
	want.flags |= HL_REQF_TAKEN;
	uint64_t expect, desired;
	memcpy(&expect, (const uint8_t *)r + 8, 8);
	memcpy(&desired, (const uint8_t *)&want + 8, 8);
	/* The word is 8-aligned (records are) and lives in the client's own
	 * ring: a hostile client can change it at any time, which only ever
	 * affects its own request. Acq_rel: nothing of the apply moves before
	 * the take. */
	if (__atomic_compare_exchange_n((uint64_t *)(uintptr_t)(rec + 8), &expect, desired, 0,
	                                __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		r->flags = want.flags;
		return 1;
	}
	struct hl_req now;
	memcpy((uint8_t *)&now + 8, &expect, 8);
	if (now.flags == (HL_REQF_SYNC | HL_REQF_WITHDRAWN) && now.val_len == r->val_len &&
	    now.meta_len == r->meta_len)
		return 0;
	return -EPROTO;
}

/*
 * Drain up to BATCH requests of endpoint EP's ring for this shard.
 * dead: the endpoint's process is gone: apply publishes and deletes (they
 * were acknowledged), refuse the rest. Returns 0 when the ring is empty,
 * -EAGAIN when more remain, -EPROTO when the ring held garbage,
 * -EINPROGRESS when the next request waits for the end of recovery.
 */
static int
drain(struct hl_shard *sh, uint32_t ep, int dead)
{
	struct hl_worker *w = sh->w;
	struct hl_shm_epw_shard *ws = hl__epw_shard(&w->seg, ep, sh->id);
	struct hl_ring ring = { .head = &hl__epc_shard(&w->seg, ep, sh->id)->req_head,
		                .tail = &ws->req_tail,
		                .data = hl__req_ring(&w->seg, ep, sh->id),
		                .size = w->seg.h->req_ring_bytes };
	uint64_t tail = LD_RLX(&ws->req_tail);
	int n = 0, rc = 0, wake = 0;
	while (n < BATCH) {
		const uint8_t *rec;
		uint32_t len;
		uint64_t at = tail;
		int p = hl__ring_peek(&ring, &at, &rec, &len);
		if (p < 0) {
			rc = -EPROTO;
			break;
		}
		if (p == 0) {
			if (at != tail) { /* skipped a pad */
				tail = at;
				hl__ring_consume(&ring, tail);
			}
			break;
		}
		/* One copy; the client may change the ring under us. */
		memcpy(sh->req, rec, len);
		const struct hl_req *r = (const struct hl_req *)sh->req;
		/* Validation lives in request.c (shared with the fuzz target). */
		if (hl_w_check_req(w->seg.h, sh->id, r, len)) {
			rc = -EPROTO;
			break;
		}
		uint64_t pos = at;
		if ((r->flags & HL_REQF_WITHDRAWN) && !(r->flags & HL_REQF_TAKEN)) {
			/* Withdrawn by its client: never applied, nobody waits. */
			tail = pos + len;
			hl__ring_consume(&ring, tail);
			n++;
			continue;
		}
		/* Right after a restart, while recovery still walks the
		 * observer lists (recovery.c), only publishes and deletes are
		 * applied: the rest waits, in order, behind the first one. */
		if (!dead && !hl__req_is_write(r->h.type) &&
		    atomic_load_explicit(&w->recovering, memory_order_acquire)) {
			rc = -EINPROGRESS;
			break;
		}
		int64_t result = 0;
		int err = 0;
		int t = take(rec, (struct hl_req *)sh->req);
		if (t < 0) {
			rc = -EPROTO;
			break;
		}
		if (t == 0) {
			/* Withdrawn as we looked: as above. */
			tail = pos + len;
			hl__ring_consume(&ring, tail);
			n++;
			continue;
		}
		hl_w_crash_point(w); /* taken, not yet applied */
		int sync = (r->flags & HL_REQF_SYNC) != 0;
		if (r->h.type == HL_REQ_CLOSE) {
			hl_w_ep_kill(w, ep, HL_W_KILL_CLOSED);
			dead = 1;
		} else if (r->h.type == HL_REQ_WAKEFD) {
			/* Not a table change: no intent, no done record; a
			 * replay after a crash just takes a fresh copy. */
			err = dead ? HL_ESTALE : hl_w_ep_take_wake(w, ep);
		} else if (dead && (r->h.type == HL_REQ_OBSERVE || r->h.type == HL_REQ_UNOBSERVE)) {
			err = HL_ESTALE;
		} else {
			/* Relaxed: the commit's release store orders it first. */
			atomic_store_explicit(&ws->intent_pos, pos + 1, memory_order_relaxed);
			sh->cur_ws = ws;
			sh->cur_pos = pos;
			sh->cur_done = 0;
			if (__builtin_expect(w->apply_delay_us > 0, 0))
				usleep((useconds_t)w->apply_delay_us); /* test hook */
			err = hl_w_apply(sh, ep, pos, r, len, &result);
			sh->cur_ws = NULL;
			hl_w_crash_point(w); /* done recorded, not yet answered */
		}
		if (err < 0)
			result = err;
		if (sync) {
			atomic_store_explicit(&ws->result_rev,
			                      hl_w_answer_rev(w, r->h.type, result),
			                      memory_order_relaxed);
			atomic_store_explicit(&ws->result, result, memory_order_relaxed);
			/* Release: result before result_pos (client acquires). */
			atomic_store_explicit(&ws->result_pos, pos + 1, memory_order_release);
		} else if (err < 0) {
			atomic_store_explicit(&ws->last_err, err, memory_order_relaxed);
			atomic_fetch_add_explicit(&ws->async_errs, 1, memory_order_release);
			/* After the count: recovery completes a report whose
			 * err_pos is missing (a second count is harmless: the
			 * client only looks for a change). */
			atomic_store_explicit(&ws->err_pos, pos + 1, memory_order_relaxed);
			atomic_fetch_add_explicit(&sh->c->async_errors, 1, memory_order_relaxed);
		}
		hl_w_crash_point(w); /* answered, still in the ring */
		tail = pos + len;
		/* The acknowledgement: the request leaves the ring. A crash
		 * before this store leaves it to recovery's resolve_in_flight(). */
		hl__ring_consume(&ring, tail);
		wake = 1;
		n++;
	}
	/* First the wake-ups of the events these requests made, which
	 * hl_w_apply() may have deferred to here (wake.c): every run that
	 * applied a request must end in this flush. */
	if (wake) {
		hl_w_wake_flush(sh);
		hl_w_wake_client(w, ep);
	}
	if (rc == -EPROTO && !dead)
		hl_w_ep_kill(w, ep, HL_W_KILL_GARBAGE);
	if (rc)
		return rc;
	return n == BATCH ? -EAGAIN : 0;
}

static int
drain_dead(struct hl_shard *sh, uint32_t ep)
{
	struct hl_shm_epw *pw = hl__epw(&sh->w->seg, ep);
	if (atomic_load_explicit(&pw->state, memory_order_acquire) == HL_EP_BANNED)
		return 0; /* its rings hold garbage: nothing there is trusted */
	int rc = drain(sh, ep, 1);
	return rc == -EAGAIN ? -EAGAIN : 0;
}

/* The endpoints the monitor handed to this shard after a kill (cleanup
 * bits, set by monitor.c's clean_endpoint()): drain what is left in each
 * ring, then sign off (endpoint.c); the last shard frees the endpoint. */
static void
cleanup_drain(struct hl_shard *sh)
{
	struct hl_worker *w = sh->w;
	uint32_t words = hl_w_ep_words(w);
	for (uint32_t i = 0; i < words; i++) {
		uint64_t bits = atomic_exchange_explicit(&sh->cleanup[i], 0, memory_order_acq_rel);
		while (bits) {
			uint32_t ep = i * 64 + (uint32_t)__builtin_ctzll(bits);
			bits &= bits - 1;
			assert(ep < w->seg.h->max_endpoints); /* set by clean_endpoint() only */
			if (drain_dead(sh, ep) == -EAGAIN) {
				/* More than one batch left: come back next round. */
				atomic_fetch_or_explicit(&sh->cleanup[i], 1ull << (ep % 64),
				                         memory_order_relaxed);
				continue;
			}
			hl_w_ep_signoff(sh, ep);
		}
	}
}

/* Endpoint EP waits for the end of recovery: remember it here rather
 * than in the pending bits, which would keep this thread from sleeping. */
static void
defer(struct hl_shard *sh, uint32_t ep)
{
	sh->deferred[ep / 64] |= 1ull << (ep % 64);
	sh->deferred_any = 1;
}

/* Recovery is over (acquire: pairs with the release in
 * hl_w_recover_serve(), which then rings every doorbell): the deferred
 * endpoints are pending again. */
static void
undefer(struct hl_shard *sh)
{
	struct hl_worker *w = sh->w;
	if (!sh->deferred_any || atomic_load_explicit(&w->recovering, memory_order_acquire))
		return;
	_Atomic uint64_t *pend = hl__pending(&w->seg, sh->id);
	for (uint32_t i = 0; i < hl__pending_words(w->seg.h); i++)
		if (sh->deferred[i]) {
			atomic_fetch_or_explicit(&pend[i], sh->deferred[i], memory_order_relaxed);
			sh->deferred[i] = 0;
		}
	sh->deferred_any = 0;
}

static int
any_pending(struct hl_shard *sh)
{
	struct hl_worker *w = sh->w;
	if (sh->deferred_any && !atomic_load_explicit(&w->recovering, memory_order_acquire))
		return 1;
	uint32_t words = hl__pending_words(w->seg.h);
	_Atomic uint64_t *pend = hl__pending(&w->seg, sh->id);
	for (uint32_t i = 0; i < words; i++)
		if (LD_RLX(&pend[i]))
			return 1;
	for (uint32_t i = 0; i < hl_w_ep_words(w); i++)
		if (LD_RLX(&sh->cleanup[i]))
			return 1;
	return 0;
}

/* One pass over the pending bits. Returns the number of endpoints served. */
static int
serve_once(struct hl_shard *sh)
{
	struct hl_worker *w = sh->w;
	uint32_t words = hl__pending_words(w->seg.h);
	_Atomic uint64_t *pend = hl__pending(&w->seg, sh->id);
	int served = 0;
	undefer(sh);
	for (uint32_t i = 0; i < words && i * 64 < w->seg.h->max_endpoints; i++) {
		if (!LD_RLX(&pend[i]))
			continue;
		uint64_t bits = atomic_exchange_explicit(&pend[i], 0, memory_order_acquire);
		while (bits) {
			uint32_t ep = i * 64 + (uint32_t)__builtin_ctzll(bits);
			bits &= bits - 1;
			if (ep >= w->seg.h->max_endpoints)
				continue; /* a client set a bit past the table */
			/* Fencing: apply nothing once the table is not ours. */
			if (atomic_load_explicit(&w->seg.h->owner_epoch, memory_order_acquire) !=
			    w->epoch) {
				atomic_store(&w->fenced, 1);
				atomic_store(&w->stop, 1);
				return served;
			}
			int rc = hl_w_ep_adopt(w, ep);
			if (rc == -EAGAIN) {
				/* Claimed but not ready: look again next round. */
				atomic_fetch_or_explicit(&pend[i], 1ull << (ep % 64),
				                         memory_order_relaxed);
				continue;
			}
			if (rc == -EINPROGRESS) {
				defer(sh, ep);
				continue;
			}
			if (rc == -EPROTO) {
				/* Its claim entry changed under the adopted endpoint:
				 * the client wrote garbage there. Drop it (logged). */
				hl_w_ep_kill(w, ep, HL_W_KILL_CLAIM_OVERWRITTEN);
				continue;
			}
			if (rc != 0)
				continue; /* free, dead (cleanup drains it), or not ready */
			rc = drain(sh, ep, 0);
			if (rc == -EAGAIN)
				atomic_fetch_or_explicit(&pend[i], 1ull << (ep % 64),
				                         memory_order_relaxed);
			else if (rc == -EINPROGRESS)
				defer(sh, ep);
			served++;
		}
	}
	cleanup_drain(sh);
	served += hl_w_telemetry_apply(sh); /* the worker's own publishes, if any */
	return served;
}

/* Test hook --park-shard (issue 22): this thread stops as if deadlocked,
 * serving and beating nothing, until the worker stops; the other shards go
 * on. The keeper's watchdog must see it as a hang. */
static void
park(struct hl_worker *w, uint32_t id)
{
	hl__log_warn("test hook: parking shard thread %u", id);
	urcu_memb_thread_offline();
	while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
		struct timespec ts = { .tv_sec = 0, .tv_nsec = 50 * 1000000L };
		nanosleep(&ts, NULL);
	}
	urcu_memb_thread_online();
}

static void *
shard_main(void *arg)
{
	struct hl_shard *sh = arg;
	struct hl_worker *w = sh->w;
	struct hl_shm_shard *ss = &w->seg.h->shard[sh->id];
	struct hl_shm_doorbell *db = hl__doorbell(&w->seg, sh->id);
	urcu_memb_register_thread();
	uint64_t idle_since = 0, progress = 0, budget = 0;
	const uint64_t spin_ns = (uint64_t)(w->opt.spin_us > 0 ? w->opt.spin_us : 0) * 1000u;
	struct hl_w_spin spin;
	hl_w_spin_init(&spin);
	if (w->opt.park_shard == (int64_t)sh->id)
		park(w, sh->id);
	while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
		/* The heartbeat (issue 22): one coarse clock read and one
		 * relaxed store per turn, i.e. per pass over the endpoints,
		 * not per request. Every way back here is bounded: a pass, a
		 * spin round, or the futex wait's 100 ms timeout. Relaxed:
		 * the word publishes nothing; its readers only compare times. */
		atomic_store_explicit(&ss->beat_ns, hl__coarse_ns(), memory_order_relaxed);
		/* Progress (layout.h, hl_shm_shard.progress_rev): here, between
		 * two passes, everything this thread applied is dispatched, and
		 * what it applies next takes a revision above this read (the same
		 * counter, later in this thread). Release: the ring commits of
		 * those events first (pairs with the client's acquire before it
		 * checks its rings). An idle thread gets here at least every
		 * 100 ms (its futex wait's bound). */
		uint64_t rev = atomic_load_explicit(&w->seg.h->revision, memory_order_relaxed);
		if (rev != progress) {
			progress = rev;
			atomic_store_explicit(&ss->progress_rev, rev, memory_order_release);
		}
		if (serve_once(sh) > 0) {
			/* The idle gap this request ended, sleep included
			 * (spin.h): what the next idle spin is sized from. */
			if (idle_since)
				hl_w_spin_record(&spin, hl__now_ns() - idle_since);
			idle_since = 0;
			continue;
		}
		/* Idle: spin while the recent gaps predict a request within
		 * --spin-us (spin.h; forever with --busy-poll), then sleep on
		 * the doorbell. Each round of the spin ends in sched_yield():
		 * a process woken onto this core (typically the observer we
		 * just woke: the kernel prefers the waker's core) runs at
		 * once instead of waiting for the spin to end, which cost up
		 * to --spin-us on every event when cores are few
		 * (bench/README.md, steady). With nothing else runnable the
		 * yield returns in well under a microsecond. */
		uint64_t now = hl__now_ns();
		if (!idle_since) {
			idle_since = now;
			budget = w->opt.busy_poll ? UINT64_MAX : hl_w_spin_budget(&spin, spin_ns);
		}
		if (now - idle_since < budget) {
			urcu_memb_thread_offline();
			for (int i = 0; i < 64 && !any_pending(sh); i++)
				cpu_relax();
			if (!any_pending(sh))
				sched_yield();
			urcu_memb_thread_online();
			continue;
		}
		/* Dekker with ring_doorbell() in the client: sleeping is set and
		 * fenced before the pending bits are read again. */
		uint32_t seen = atomic_load_explicit(&db->word, memory_order_acquire);
		atomic_store_explicit(&ss->sleeping, 1, memory_order_relaxed);
		atomic_thread_fence(memory_order_seq_cst);
		if (!any_pending(sh) && !atomic_load(&w->stop)) {
			struct timespec ts = { .tv_sec = 0, .tv_nsec = 100 * 1000000L };
			urcu_memb_thread_offline();
			hl__futex_wait(&db->word, seen, &ts);
			urcu_memb_thread_online();
		}
		atomic_store_explicit(&ss->sleeping, 0, memory_order_relaxed);
		/* idle_since stays: the gap runs until a request comes. With
		 * a budget of 0 the next turn sleeps again at once. */
		budget = 0;
	}
	urcu_memb_unregister_thread();
	return NULL;
}

int
hl_w_shards_start(struct hl_worker *w)
{
	for (uint32_t s = 0; s < w->nshards; s++) {
		int rc = pthread_create(&w->shards[s].thread, NULL, shard_main, &w->shards[s]);
		if (rc)
			return -rc;
	}
	return 0;
}

void
hl_w_shards_join(struct hl_worker *w)
{
	for (uint32_t s = 0; s < w->nshards; s++)
		pthread_join(w->shards[s].thread, NULL);
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
	sh->cleanup = calloc(hl_w_ep_words(w), sizeof(*sh->cleanup));
	sh->deferred = calloc(hl__pending_words(h), sizeof(uint64_t));
	sh->hist_buf = malloc(hl__hist_rec_bytes(HL_KEY_MAX, HL_META_MAX, h->max_value));
	if (!sh->ep_count || !sh->ep_start || !sh->touched || !sh->ids || !sh->req ||
	    !sh->cleanup || !sh->deferred || !sh->hist_buf)
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
	free(sh->hist_buf);
	pthread_mutex_destroy(&sh->mu);
}
