/* SPDX-License-Identifier: MIT */
/*
 * monitor.c: the monitor thread (monitor.h). First recovery's part 2
 * (hl_w_monitor_recover()), then a loop: exits seen on pidfds, the cleanup
 * of killed endpoints (to_clean: unlink their observers shard by shard,
 * then hand the drain to the shards), the prune pass, the polled
 * endpoints, the slow-reader report, telemetry's tick, the segment's
 * damage and fencing. It never applies a request or writes an event ring:
 * those are the shard threads'.
 */
#include "monitor.h"

#include "endpoint.h"
#include "heirloom/heirloom.h"
#include "keys.h"
#include "lock.h"
#include "observers.h"
#include "recovery.h"
#include "telemetry.h"
#include "util.h"
#include "wake.h"

#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <time.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

#define LD_RLX(p) atomic_load_explicit((p), memory_order_relaxed)

/* Monitor thread: unlink every observer of EP, shard by shard, then ask
 * every shard to drain and release. */
static void
clean_endpoint(struct hl_worker *w, uint32_t ep)
{
	struct hl_ep *e = &w->eps[ep];
	uint64_t removed = 0;
	assert(ep < w->seg.h->max_endpoints);
	/* Once per incarnation: two paths may ask for the same cleanup (a
	 * shard thread and the prune pass both adopting a dead claimer, an
	 * exit seen while a ban is under way). Running it twice would make
	 * every shard sign off twice and free the endpoint twice. */
	hl_w_lock(&e->mu, HL_W_RANK_EP);
	if (e->gen == 0 || e->cleaned_gen == e->gen) {
		hl_w_unlock(&e->mu, HL_W_RANK_EP);
		return;
	}
	e->cleaned_gen = e->gen;
	hl_w_unlock(&e->mu, HL_W_RANK_EP);
	for (uint32_t s = 0; s < w->nshards; s++) {
		struct hl_shard *sh = &w->shards[s];
		hl_w_lock(&sh->mu, HL_W_RANK_SHARD);
		/* One pass over the endpoint's list, from its end: removing
		 * obs[i] moves the last entry, already looked at (so of another
		 * shard), into i. No observer of this shard joins meanwhile: we
		 * hold shard.mu and the endpoint is not ACTIVE (apply_observe
		 * refuses). O(n) per shard; shard_signoff() checks none is left. */
		hl_w_lock(&e->mu, HL_W_RANK_EP);
		uint32_t i = e->nobs;
		hl_w_unlock(&e->mu, HL_W_RANK_EP);
		while (i-- > 0) {
			/* The slot's key is read under e->mu too: while the slot
			 * is in this list it is this endpoint's observer and its
			 * key is fixed. Once its own shard removed it (under
			 * e->mu), the slot may be reused at once for another
			 * endpoint's key (a TSan report: reading o->key after
			 * the unlock could take a stranger's observer for ours). */
			hl_w_lock(&e->mu, HL_W_RANK_EP);
			uint32_t slot = i < e->nobs ? e->obs[i] : 0;
			uint32_t key = slot ? hl__obs(&w->seg, slot)->key : 0;
			hl_w_unlock(&e->mu, HL_W_RANK_EP);
			/* Observers of shard s stay put while we hold its mu. */
			if (!slot || hl_w_key_shard(w, key) != s)
				continue;
			hl_w_remove_observer(sh, slot, 0);
			/* A heartbeat every 64Ki removals (issue 22): cleanup
			 * is this thread's one pass that grows with the table
			 * (about 0.3 s per million observers here). */
			if ((++removed & 0xffff) == 0)
				atomic_store_explicit(&w->seg.h->monitor_beat_ns, hl__coarse_ns(),
				                      memory_order_relaxed);
		}
		hl_w_unlock(&sh->mu, HL_W_RANK_SHARD);
	}
	atomic_fetch_add_explicit(&w->seg.h->cleanup_runs, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->seg.h->cleanup_removed, removed, memory_order_relaxed);
	/* Every shard must now drain the rest of its ring and sign off. */
	uint64_t all = w->nshards == 64 ? ~0ull : (1ull << w->nshards) - 1;
	atomic_store_explicit(&e->cleanup_pending, all, memory_order_release);
	for (uint32_t s = 0; s < w->nshards; s++) {
		atomic_fetch_or_explicit(&w->shards[s].cleanup[ep / 64], 1ull << (ep % 64),
		                         memory_order_release);
		hl_w_wake_shard(w, s);
	}
}

/* Periodic and at-attach pass: endpoints whose process is gone (checked by
 * pid AND start time, so a reused pid does not keep the old observers) and
 * claims abandoned before the client finished claiming.
 *
 * An active endpoint is gone when the process at its pid does not have the
 * start time recorded at adoption: whoever runs under that pid now is not the
 * claimer. One whose claim entry no longer says what was adopted (pid, gen,
 * start time) was rewritten by its client: hl_w_ep_kill() bans it. */
void
hl_w_prune(struct hl_worker *w)
{
	/* Read before the claims: an endpoint adopted after this load reads
	 * as FREE here, as if its state had been loaded first. */
	const uint32_t ep_mark = hl_w_eps_hwm(w);
	for (uint32_t ep = 0; ep < w->seg.h->max_endpoints; ep++) {
		struct hl_shm_claim *cl = hl__claim(&w->seg, ep);
		struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
		struct hl_ep *e = &w->eps[ep];
		uint64_t word = atomic_load_explicit(&cl->word, memory_order_acquire);
		uint32_t pid = HL_CLAIM_PID(word), gen = HL_CLAIM_GEN(word);
		if (pid == 0 && ep >= ep_mark)
			continue; /* never adopted, not claimed: nothing to do */
		uint32_t st = ep < ep_mark ? atomic_load_explicit(&pw->state, memory_order_acquire)
		                           : HL_EP_FREE;
		if (st == HL_EP_ACTIVE) {
			uint64_t cl_start =
			        atomic_load_explicit(&cl->start_time, memory_order_relaxed);
			hl_w_lock(&e->mu, HL_W_RANK_EP);
			uint32_t e_pid = e->pid, e_gen = e->gen;
			uint64_t e_start = e->start;
			hl_w_unlock(&e->mu, HL_W_RANK_EP);
			/* Only a certain "gone" counts: a /proc read that failed
			 * (out of descriptors) keeps the endpoint. */
			if (!pid || gen != e_gen || cl_start != e_start ||
			    hl__proc_check((int)e_pid, e_start) == 0)
				hl_w_ep_kill(w, ep, HL_W_KILL_GONE_PRUNE);
			continue;
		}
		if (st == HL_EP_BANNED) {
			/* Belt and braces for the monitor's pidfd watch. */
			hl_w_ep_release_quarantine(w, ep);
			continue;
		}
		if (pid == 0 || st != HL_EP_FREE)
			continue;
		if (atomic_load_explicit(&cl->ready, memory_order_acquire) == gen) {
			/* Claimed and ready but never adopted: adopt now, which
			 * handles a dead claimer too. */
			hl_w_ep_adopt(w, ep);
			continue;
		}
		/* Claimed, not ready: a client between its CAS and `ready`, or
		 * one that died there (nothing was queued). Freeing the claim of
		 * a live claimer would be a disaster: it goes on to initialise
		 * the block (ring positions, `ready`) under whoever claims next.
		 * So free only when the claimer is certainly gone:
		 *  - no process runs at its pid; or
		 *  - the claim holds a start time (the claimer stores its own
		 *    right after its CAS; a freed claim holds 0) and the process
		 *    at that pid has another: the claimer died, the pid was
		 *    reused.
		 * A claim still at 0 with a live process at its pid is kept: a
		 * claimer descheduled between its CAS and its store (seen under
		 * ThreadSanitizer with 200 processes on 2 cores), or one that
		 * died there whose pid was reused, which holds the endpoint
		 * until that process exits too (a bounded leak, not a loss). */
		uint64_t start = atomic_load_explicit(&cl->start_time, memory_order_relaxed);
		uint64_t now_start = 0;
		if (hl__proc_start_time_r((int)pid, &now_start) < 0)
			continue; /* cannot tell (out of descriptors): keep it */
		int gone = now_start == 0 || (start != 0 && now_start != start);
		if (gone) {
			/* Start time first, as in free_locked(); the claimer is
			 * gone, so nobody else writes it. */
			atomic_store_explicit(&cl->start_time, 0, memory_order_relaxed);
			atomic_compare_exchange_strong_explicit(&cl->word, &word, HL_CLAIM(0, gen),
			                                        memory_order_acq_rel,
			                                        memory_order_relaxed);
		}
	}
}

/* Monitor thread, every tick while some endpoint is polled: a polled
 * endpoint whose process is certainly gone is cleaned (ACTIVE) or released
 * (a banned one held in quarantine); one still there gets a pidfd if one
 * can be had now, and is then watched like any other. */
static void
poll_unwatched(struct hl_worker *w)
{
	if (atomic_load_explicit(&w->seg.h->endpoints_polled, memory_order_relaxed) == 0)
		return;
	const uint32_t ep_mark = hl_w_eps_hwm(w); /* above: never polled */
	for (uint32_t ep = 0; ep < ep_mark; ep++) {
		struct hl_ep *e = &w->eps[ep];
		struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
		hl_w_lock(&e->mu, HL_W_RANK_EP);
		if (!e->polled) {
			hl_w_unlock(&e->mu, HL_W_RANK_EP);
			continue;
		}
		uint32_t st = LD_RLX(&pw->state);
		int alive = hl__proc_check((int)e->pid, e->start);
		if (alive != 0 && (st == HL_EP_ACTIVE || st == HL_EP_BANNED)) {
			int fd = (int)syscall(SYS_pidfd_open, (pid_t)e->pid, 0);
			if (fd >= 0 && hl__proc_check((int)e->pid, e->start) != 0) {
				e->pidfd = fd;
				e->polled = 0;
				atomic_fetch_sub_explicit(&w->seg.h->endpoints_polled, 1,
				                          memory_order_relaxed);
				struct epoll_event ev = { .events = EPOLLIN, .data.u64 = ep };
				epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev);
			} else if (fd >= 0) {
				close(fd);
				alive = 0;
			}
		}
		hl_w_unlock(&e->mu, HL_W_RANK_EP);
		if (alive != 0)
			continue;
		if (st == HL_EP_ACTIVE) {
			hl_w_ep_kill(w, ep, HL_W_KILL_EXITED_POLLED);
		} else if (st == HL_EP_BANNED) {
			hl_w_ep_release_polled(w, ep);
		}
	}
}

/*
 * Monitor thread, every tick: the slow-reader report (hl_shm_epw.last_read_ns).
 * An active endpoint with events waiting in its event rings whose read
 * cursors did not move for slow_reader_ms is reported once (log, segment
 * log, HL_EPW_SLOW), and again only after it read. It keeps its observers:
 * slow is not dead, and a full ring already costs only that client (its
 * events lag, it resyncs). The cursors are client-written: only compared.
 */
static void
watch_readers(struct hl_worker *w, uint64_t now)
{
	if (w->opt.slow_reader_ms <= 0)
		return;
	const uint64_t limit = (uint64_t)w->opt.slow_reader_ms * 1000000ull;
	const uint64_t wall = hl__wall_ns() & ~HL_EPW_SLOW;
	const uint32_t ep_mark = hl_w_eps_hwm(w); /* above: FREE */
	for (uint32_t ep = 0; ep < ep_mark; ep++) {
		struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
		/* Acquire pairs with the release of ACTIVE at adoption: gen
		 * and pid below are that incarnation's. */
		if (atomic_load_explicit(&pw->state, memory_order_acquire) != HL_EP_ACTIVE)
			continue;
		struct hl_ep *e = &w->eps[ep];
		uint64_t sum = 0;
		int waiting = 0;
		for (uint32_t s = 0; s < w->nshards; s++) {
			uint64_t head = LD_RLX(&hl__epw_shard(&w->seg, ep, s)->ev_head);
			uint64_t tail = LD_RLX(&hl__epc_shard(&w->seg, ep, s)->ev_tail);
			sum += tail;
			waiting |= head != tail;
		}
		uint32_t gen = LD_RLX(&pw->gen);
		if (gen != e->watch_gen || !waiting || sum != e->tail_sum) {
			if (e->slow && gen == e->watch_gen)
				hl__log("endpoint %u (pid %u) is reading again", ep,
				        LD_RLX(&pw->pid));
			e->watch_gen = gen;
			e->tail_sum = sum;
			e->read_ns = now;
			e->slow = 0;
			atomic_store_explicit(&pw->last_read_ns, wall, memory_order_relaxed);
			continue;
		}
		if (e->slow || now - e->read_ns < limit)
			continue;
		e->slow = 1;
		uint64_t idle_ms = (now - e->read_ns) / 1000000ull;
		uint32_t pid = LD_RLX(&pw->pid);
		/* The record first, as hl_w_ep_kill() does: whoever sees the
		 * flag (heirloomctl, a test) must find the record already in
		 * the segment's log (test_lifecycle failed once, under ASan,
		 * in the window between the two). */
		hl_w_seglog(w, HL_LOG_SLOW_READER,
		            idle_ms > INT32_MAX ? INT32_MAX : (int32_t)idle_ms, pid, "not reading");
		atomic_store_explicit(&pw->last_read_ns, LD_RLX(&pw->last_read_ns) | HL_EPW_SLOW,
		                      memory_order_release);
		hl__log_warn(
		        "endpoint %u (pid %u) is not reading: events wait in its ring and none "
		        "was taken for %lu ms (it keeps its observers)",
		        ep, pid, (unsigned long)idle_ms);
	}
}

/*
 * Monitor thread, every tick: progress nudges (issue 14 item 5;
 * docs/architecture.md, "Progress"). A client whose observers asked for
 * HL_EV_PROGRESS events (epc.progress_ms, client-written: clamped, only
 * ever costs that client wake-ups) is woken about that often, as for an
 * event: its futex if it sleeps in hl_next(), a datagram if it armed
 * hl_fd(). Its hl_next() then hands out what is due. The progress itself
 * is the shard threads' (hl_shm_shard.progress_rev): a nudge carries
 * nothing. Returns the shortest interval asked (ms), 0 = none.
 */
static uint32_t
nudge_progress(struct hl_worker *w, uint64_t now)
{
	uint32_t shortest = 0;
	const uint32_t ep_mark = hl_w_eps_hwm(w); /* above: FREE */
	for (uint32_t ep = 0; ep < ep_mark; ep++) {
		struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
		if (atomic_load_explicit(&pw->state, memory_order_acquire) != HL_EP_ACTIVE)
			continue;
		uint32_t ms = LD_RLX(&hl__epc(&w->seg, ep)->progress_ms);
		if (!ms)
			continue;
		if (ms < HL_PROGRESS_MS_MIN)
			ms = HL_PROGRESS_MS_MIN;
		if (!shortest || ms < shortest)
			shortest = ms;
		struct hl_ep *e = &w->eps[ep];
		/* Every half interval: the client hands out an event due by
		 * then at the next nudge, so none is more than half late. */
		if (now - e->nudge_ns < (uint64_t)ms * 500000ull)
			continue;
		e->nudge_ns = now;
		hl_w_wake_client(w, ep);
	}
	return shortest;
}

static void
warn_reset(uint32_t n)
{
	if (n)
		hl__log_warn("%u free endpoints held a damaged state or damaged ring "
		             "positions: reset",
		             n);
}

/*
 * Recovery's part 2 and what follows it, in this order, wherever it runs:
 * on the monitor thread while shard threads serve publishes (production),
 * or in the caller's thread with no thread at all (worker.c's
 * hl_w_recover(), the fuzz target). Then the table is ready for clients.
 */
int
hl_w_monitor_recover(struct hl_worker *w)
{
	if (w->opt.recovery_pause_ms > 0) {
		struct timespec ts = { .tv_sec = w->opt.recovery_pause_ms / 1000,
			               .tv_nsec =
			                       (long)(w->opt.recovery_pause_ms % 1000) * 1000000L };
		nanosleep(&ts, NULL);
	}
	int rc = hl_w_recover_finish(w);
	if (rc)
		return rc;
	hl_w_recover_serve(w);
	/* The at-attach prune pass: every claimed endpoint looked at once. */
	hl_w_prune(w);
	hl_w_upgrade_step("new", 3); /* recovered, not yet ready */
	atomic_store_explicit(&w->seg.h->worker_ready, 1, memory_order_release);
	/* The mark may have passed endpoints part 1 did not read (an orphan
	 * adopted above it): vetted first, then those still above it. */
	warn_reset(hl_w_ep_vet_gap(w) + hl_w_ep_sweep_fresh(w));
	return 0;
}

static void *
monitor_main(void *arg)
{
	struct hl_worker *w = arg;
	urcu_memb_register_thread();
	uint64_t next_prune =
	        w->opt.prune_interval_ms > 0
	                ? hl__now_ns() + (uint64_t)w->opt.prune_interval_ms * 1000000ull
	                : UINT64_MAX;
	uint32_t words = hl_w_ep_words(w);
	/* Recovery's part 2 first: shard threads serve publishes meanwhile.
	 * Everything below (cleanup, prune, adoption) needs it. */
	int rc = hl_w_monitor_recover(w);
	if (rc) {
		hl__log_err("recovery failed: %s", hl_strerror(rc));
		atomic_store(&w->rec_failed, 1);
		atomic_store(&w->stop, 1);
		for (uint32_t s = 0; s < w->nshards; s++)
			hl_w_wake_shard(w, s);
		urcu_memb_unregister_thread();
		return NULL;
	}
	/* Tick at least every 200 ms, or as often as telemetry may publish. */
	int tick_ms = 200;
	if (w->opt.telemetry_ms > 0 && w->opt.telemetry_ms < tick_ms)
		tick_ms = (int)w->opt.telemetry_ms;
	uint32_t progress_ms = 0; /* the shortest interval clients asked */
	while (!atomic_load(&w->stop)) {
		/* The monitor's heartbeat (issue 22), once per turn: its wait
		 * is bounded by tick_ms, so an idle monitor beats too. */
		atomic_store_explicit(&w->seg.h->monitor_beat_ns, hl__coarse_ns(),
		                      memory_order_relaxed);
		struct epoll_event evs[64];
		/* Nudges need a tick at least as often as they are asked for:
		 * half the interval, so that one is never a tick late. */
		int wait_ms = tick_ms;
		if (progress_ms && (int)(progress_ms / 2) < wait_ms)
			wait_ms = (int)(progress_ms / 2) ? (int)(progress_ms / 2) : 1;
		int n = epoll_wait(w->epfd, evs, 64, wait_ms);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 == UINT64_MAX) {
				uint64_t v;
				ssize_t r = read(w->wakefd, &v, sizeof(v));
				(void)r;
				continue;
			}
			uint32_t ep = (uint32_t)evs[i].data.u64;
			/* The pidfd stays readable: stop watching it now. */
			hl_w_lock(&w->eps[ep].mu, HL_W_RANK_EP);
			if (w->eps[ep].pidfd >= 0)
				epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->eps[ep].pidfd, NULL);
			hl_w_unlock(&w->eps[ep].mu, HL_W_RANK_EP);
			hl_w_ep_kill(w, ep, HL_W_KILL_EXITED);
			hl_w_ep_release_quarantine(w, ep);
		}
		for (uint32_t i = 0; i < words; i++) {
			uint64_t bits =
			        atomic_exchange_explicit(&w->to_clean[i], 0, memory_order_acq_rel);
			while (bits) {
				uint32_t ep = i * 64 + (uint32_t)__builtin_ctzll(bits);
				bits &= bits - 1;
				clean_endpoint(w, ep);
			}
		}
		if (hl__now_ns() >= next_prune) {
			hl_w_prune(w);
			next_prune = hl__now_ns() + (uint64_t)w->opt.prune_interval_ms * 1000000ull;
		}
		/* The mark passed endpoints nobody vetted (hl_w_ep_mark() woke
		 * us): before a client claims one, if we are quick. */
		if (atomic_load_explicit(&w->ep_vetted, memory_order_relaxed) < hl_w_eps_hwm(w))
			warn_reset(hl_w_ep_vet_gap(w));
		poll_unwatched(w);
		watch_readers(w, hl__now_ns());
		progress_ms = nudge_progress(w, hl__now_ns());
		hl_w_telemetry_tick(w);
		/* The segment truncated or replaced under us (issue 21):
		 * stop before a shard thread faults on a page that is gone
		 * (the SIGBUS handler in main.c covers one that gets there
		 * first). Checked every tick: one fstat and one stat. */
		uint64_t size_now = 0;
		int dmg = hl__seg_intact(&w->seg, w->opt.name, &size_now);
		if (dmg == HL_ETRUNCATED || dmg == -ESTALE) {
			if (dmg == HL_ETRUNCATED)
				hl__log_err(
				        "segment /heirloom.%s was truncated to %llu bytes (its "
				        "layout "
				        "needs %llu) while served: stopping (exit 6); it cannot be "
				        "served again",
				        w->opt.name, (unsigned long long)size_now,
				        (unsigned long long)w->seg.size);
			else
				hl__log_err(
				        "segment /heirloom.%s was replaced by another object while "
				        "served: stopping (exit 6)",
				        w->opt.name);
			atomic_store(&w->damaged, 1);
			atomic_store(&w->stop, 1);
			for (uint32_t s = 0; s < w->nshards; s++)
				hl_w_wake_shard(w, s);
			break;
		}
		/* Fencing: another owner took the table (keeper reclaimed it
		 * while we were paused, then gave it to another worker). */
		if (atomic_load_explicit(&w->seg.h->owner_epoch, memory_order_acquire) !=
		            w->epoch ||
		    atomic_load_explicit(&w->seg.h->owner_pid, memory_order_relaxed) !=
		            (uint32_t)getpid()) {
			atomic_store(&w->fenced, 1);
			atomic_store(&w->stop, 1);
			for (uint32_t s = 0; s < w->nshards; s++)
				hl_w_wake_shard(w, s);
		}
	}
	urcu_memb_unregister_thread();
	return NULL;
}

int
hl_w_monitor_start(struct hl_worker *w)
{
	int rc = pthread_create(&w->monitor, NULL, monitor_main, w);
	return -rc;
}
