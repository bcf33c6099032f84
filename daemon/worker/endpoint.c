/*
 * endpoint.c: the worker's side of client endpoints: adopting a claimed
 * endpoint (pid + start time, pidfd), noticing when its process exits
 * (pidfd readable, epoll) or misbehaves, removing its observers at once, and
 * freeing the endpoint once its queued requests are drained.
 *
 * Life of an endpoint (epw.state):
 *   FREE --client CAS claim, worker adopts--> ACTIVE
 *   ACTIVE --exit / close / garbage--> DEAD or BANNED: the monitor unlinks
 *       its observers (shard by shard under shard.mu), then every shard
 *       drains what is left in its ring (publishes are applied: they were
 *       acknowledged) and clears its bit in cleanup_pending; the last one
 *       frees the endpoint (state FREE, then the claim word {0, gen}).
 * A crash anywhere in this leaves state DEAD/ACTIVE with some observers:
 * recovery re-runs the same steps from the start (see recovery.c).
 */
#include "worker.h"

#include "heirloom/heirloom.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/pidfd.h>
#include <urcu/urcu-memb.h>

#define LD_RLX(p) atomic_load_explicit((p), memory_order_relaxed)

/* Endpoints the monitor must clean (bit per endpoint), set by kill(). */
static _Atomic uint64_t *to_clean;

int
hl_w_ep_active(struct hl_worker *w, uint32_t ep)
{
	return atomic_load_explicit(&hl__epw(&w->seg, ep)->state, memory_order_acquire) ==
	       HL_EP_ACTIVE;
}

void
hl_w_ep_add_obs(struct hl_worker *w, uint32_t ep, uint32_t slot)
{
	struct hl_ep *e = &w->eps[ep];
	pthread_mutex_lock(&e->mu);
	if (e->nobs == e->cap) {
		uint32_t ncap = e->cap ? e->cap * 2 : 16;
		uint32_t *n = realloc(e->obs, (size_t)ncap * sizeof(*n));
		if (!n)
			hl__die("out of memory for an endpoint's observer list");
		e->obs = n;
		e->cap = ncap;
	}
	w->obs_pos[slot] = e->nobs;
	e->obs[e->nobs++] = slot;
	atomic_store_explicit(&hl__epw(&w->seg, ep)->nobs, e->nobs, memory_order_relaxed);
	pthread_mutex_unlock(&e->mu);
}

void
hl_w_ep_del_obs(struct hl_worker *w, uint32_t ep, uint32_t slot)
{
	struct hl_ep *e = &w->eps[ep];
	pthread_mutex_lock(&e->mu);
	uint32_t i = w->obs_pos[slot];
	if (i >= e->nobs || e->obs[i] != slot)
		hl__die("observer missing from its endpoint's list");
	e->obs[i] = e->obs[--e->nobs];
	w->obs_pos[e->obs[i]] = i;
	atomic_store_explicit(&hl__epw(&w->seg, ep)->nobs, e->nobs, memory_order_relaxed);
	pthread_mutex_unlock(&e->mu);
}

static void
mark_clean(struct hl_worker *w, uint32_t ep)
{
	atomic_fetch_or_explicit(&to_clean[ep / 64], 1ull << (ep % 64), memory_order_release);
	hl_w_monitor_wake(w);
}

int
hl_w_ep_adopt(struct hl_worker *w, uint32_t ep)
{
	struct hl_shm_claim *cl = hl__claim(&w->seg, ep);
	struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
	struct hl_ep *e = &w->eps[ep];
	uint64_t word = atomic_load_explicit(&cl->word, memory_order_acquire);
	uint32_t pid = HL_CLAIM_PID(word), gen = HL_CLAIM_GEN(word);
	if (pid == 0)
		return -ENOENT;
	/* Acquire pairs with the client's release of `ready`: its block is
	 * initialised once ready == gen. */
	if (atomic_load_explicit(&cl->ready, memory_order_acquire) != gen)
		return -EAGAIN;
	int rc = 0;
	pthread_mutex_lock(&e->mu);
	if (e->gen == gen) {
		rc = LD_RLX(&pw->state) == HL_EP_ACTIVE ? 0 : HL_ESTALE;
		goto out;
	}
	if (e->gen != 0 || LD_RLX(&pw->state) != HL_EP_FREE) {
		/* The claim moved on while we still hold the old incarnation:
		 * only a client writing claim words it does not own does that. */
		rc = -EPROTO;
		goto out;
	}
	uint64_t start = atomic_load_explicit(&cl->start_time, memory_order_relaxed);
	int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
	int alive = pidfd >= 0 && hl__proc_alive((int)pid, start);
	e->gen = gen;
	e->pid = pid;
	e->start = start;
	e->pidfd = -1;
	e->nobs = 0;
	e->closing = 0;
	atomic_store_explicit(&pw->gen, gen, memory_order_relaxed);
	atomic_store_explicit(&pw->pid, pid, memory_order_relaxed);
	atomic_store_explicit(&pw->start_time, start, memory_order_relaxed);
	atomic_store_explicit(&pw->attached_ns, hl__wall_ns(), memory_order_relaxed);
	atomic_store_explicit(&pw->nobs, 0, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->seg.h->endpoints_used, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->seg.h->endpoints_attached, 1, memory_order_relaxed);
	if (!alive) {
		/* Claimed, queued requests, and died (or a pid reused by another
		 * process): adopt as dead so its queued publishes are applied
		 * and the endpoint is freed. */
		if (pidfd >= 0)
			close(pidfd);
		atomic_store_explicit(&pw->state, HL_EP_DEAD, memory_order_release);
		pthread_mutex_unlock(&e->mu);
		mark_clean(w, ep);
		return HL_ESTALE;
	}
	e->pidfd = pidfd;
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ep};
	epoll_ctl(w->epfd, EPOLL_CTL_ADD, pidfd, &ev);
	atomic_store_explicit(&pw->state, HL_EP_ACTIVE, memory_order_release);
out:
	pthread_mutex_unlock(&e->mu);
	return rc;
}

void
hl_w_ep_kill(struct hl_worker *w, uint32_t ep, const char *why)
{
	struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
	struct hl_ep *e = &w->eps[ep];
	int banned = why && strncmp(why, "closed", 6) != 0 && strncmp(why, "exited", 6) != 0 &&
	             strncmp(why, "gone", 4) != 0;
	pthread_mutex_lock(&e->mu);
	uint32_t st = LD_RLX(&pw->state);
	if (st != HL_EP_ACTIVE || e->gen == 0) {
		pthread_mutex_unlock(&e->mu);
		return;
	}
	atomic_store_explicit(&pw->state, banned ? HL_EP_BANNED : HL_EP_DEAD, memory_order_release);
	uint32_t pid = e->pid;
	pthread_mutex_unlock(&e->mu);
	if (banned) {
		hl_w_log("endpoint %u (pid %u) dropped: %s", ep, pid, why);
		hl_w_seglog(w, HL_LOG_BAD_CLIENT, -EPROTO, pid, why);
	}
	mark_clean(w, ep);
}

/* Monitor thread: unlink every observer of EP, shard by shard, then ask
 * every shard to drain and release. */
static void
clean_endpoint(struct hl_worker *w, uint32_t ep)
{
	struct hl_ep *e = &w->eps[ep];
	uint64_t removed = 0;
	for (uint32_t s = 0; s < w->nshards; s++) {
		struct hl_shard *sh = &w->shards[s];
		pthread_mutex_lock(&sh->mu);
		for (;;) {
			/* Find one of this endpoint's observers in this shard. */
			uint32_t slot = 0;
			pthread_mutex_lock(&e->mu);
			for (uint32_t i = 0; i < e->nobs; i++) {
				uint32_t cand = e->obs[i];
				if (hl_w_key_shard(w, hl__obs(&w->seg, cand)->key) == s) {
					slot = cand;
					break;
				}
			}
			pthread_mutex_unlock(&e->mu);
			if (!slot)
				break;
			hl_w_remove_observer(sh, slot);
			removed++;
		}
		pthread_mutex_unlock(&sh->mu);
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

/* Called by a shard thread once its ring of EP is drained after a kill.
 * The last shard frees the endpoint. */
static void
shard_signoff(struct hl_shard *sh, uint32_t ep)
{
	struct hl_worker *w = sh->w;
	struct hl_ep *e = &w->eps[ep];
	uint64_t bit = 1ull << sh->id;
	uint64_t before = atomic_fetch_and_explicit(&e->cleanup_pending, ~bit, memory_order_acq_rel);
	if (!(before & bit) || (before & ~bit))
		return;
	struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
	struct hl_shm_claim *cl = hl__claim(&w->seg, ep);
	pthread_mutex_lock(&e->mu);
	if (e->nobs != 0)
		hl__die("freeing an endpoint that still holds observers");
	if (e->pidfd >= 0) {
		epoll_ctl(w->epfd, EPOLL_CTL_DEL, e->pidfd, NULL);
		close(e->pidfd);
	}
	uint32_t gen = e->gen;
	e->pidfd = -1;
	e->gen = 0;
	atomic_store_explicit(&pw->state, HL_EP_FREE, memory_order_release);
	atomic_fetch_sub_explicit(&w->seg.h->endpoints_used, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->seg.h->endpoints_removed, 1, memory_order_relaxed);
	/* Last: the claim word. A crash before it leaves a FREE endpoint with
	 * a claim naming a dead pid: the prune pass frees the claim. */
	atomic_store_explicit(&cl->word, HL_CLAIM(0, gen), memory_order_release);
	pthread_mutex_unlock(&e->mu);
	/* Wake anything of the old client still waiting: it sees HL_ESTALE. */
	atomic_fetch_add_explicit(&pw->ev_signal, 1, memory_order_release);
	hl__futex_wake(&pw->ev_signal, 1 << 30);
}


void
hl_w_shard_cleanup(struct hl_shard *sh)
{
	struct hl_worker *w = sh->w;
	uint32_t words = (w->seg.h->max_endpoints + 63) / 64;
	for (uint32_t i = 0; i < words; i++) {
		uint64_t bits = atomic_exchange_explicit(&sh->cleanup[i], 0, memory_order_acq_rel);
		while (bits) {
			uint32_t ep = i * 64 + (uint32_t)__builtin_ctzll(bits);
			bits &= bits - 1;
			if (hl_w_drain_dead(sh, ep) == -EAGAIN) {
				/* More than one batch left: come back next round. */
				atomic_fetch_or_explicit(&sh->cleanup[i], 1ull << (ep % 64),
				                         memory_order_relaxed);
				continue;
			}
			shard_signoff(sh, ep);
		}
	}
}

void
hl_w_monitor_watch(struct hl_worker *w, uint32_t ep)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ep};
	pthread_mutex_lock(&w->eps[ep].mu);
	if (w->eps[ep].pidfd >= 0)
		epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->eps[ep].pidfd, &ev);
	pthread_mutex_unlock(&w->eps[ep].mu);
}

void
hl_w_monitor_wake(struct hl_worker *w)
{
	uint64_t one = 1;
	ssize_t n = write(w->wakefd, &one, sizeof(one));
	(void)n;
}

/* Periodic and at-attach pass: endpoints whose process is gone (checked by
 * pid AND start time, so a reused pid does not keep the old observers) and
 * claims abandoned before the client finished claiming. */
void
hl_w_prune(struct hl_worker *w)
{
	for (uint32_t ep = 0; ep < w->seg.h->max_endpoints; ep++) {
		struct hl_shm_claim *cl = hl__claim(&w->seg, ep);
		struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
		uint64_t word = atomic_load_explicit(&cl->word, memory_order_acquire);
		uint32_t pid = HL_CLAIM_PID(word), gen = HL_CLAIM_GEN(word);
		uint32_t st = atomic_load_explicit(&pw->state, memory_order_acquire);
		if (st == HL_EP_ACTIVE) {
			struct hl_ep *e = &w->eps[ep];
			if (!hl__proc_alive((int)e->pid, e->start) || (pid && gen != e->gen) || !pid)
				hl_w_ep_kill(w, ep, "gone (prune)");
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
		uint64_t start = atomic_load_explicit(&cl->start_time, memory_order_relaxed);
		if (hl__proc_start_time((int)pid) == 0 ||
		    (start && !hl__proc_alive((int)pid, start))) {
			/* Died between its CAS and `ready`: nothing was queued. */
			atomic_compare_exchange_strong_explicit(&cl->word, &word, HL_CLAIM(0, gen),
			                                        memory_order_acq_rel,
			                                        memory_order_relaxed);
		}
	}
}

static void *
monitor_main(void *arg)
{
	struct hl_worker *w = arg;
	urcu_memb_register_thread();
	uint64_t next_prune = w->opt.prune_interval_ms > 0
	                              ? hl__now_ns() + (uint64_t)w->opt.prune_interval_ms * 1000000ull
	                              : UINT64_MAX;
	uint32_t words = (w->seg.h->max_endpoints + 63) / 64;
	while (!atomic_load(&w->stop)) {
		struct epoll_event evs[64];
		int n = epoll_wait(w->epfd, evs, 64, 200);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 == UINT64_MAX) {
				uint64_t v;
				ssize_t r = read(w->wakefd, &v, sizeof(v));
				(void)r;
				continue;
			}
			uint32_t ep = (uint32_t)evs[i].data.u64;
			/* The pidfd stays readable: stop watching it now. */
			pthread_mutex_lock(&w->eps[ep].mu);
			if (w->eps[ep].pidfd >= 0)
				epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->eps[ep].pidfd, NULL);
			pthread_mutex_unlock(&w->eps[ep].mu);
			hl_w_ep_kill(w, ep, "exited");
		}
		for (uint32_t i = 0; i < words; i++) {
			uint64_t bits = atomic_exchange_explicit(&to_clean[i], 0, memory_order_acq_rel);
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
		/* Fencing: another owner took the table (keeper reclaimed it
		 * while we were paused, then gave it to another worker). */
		if (atomic_load_explicit(&w->seg.h->owner_epoch, memory_order_acquire) != w->epoch ||
		    atomic_load_explicit(&w->seg.h->owner_pid, memory_order_relaxed) != (uint32_t)getpid()) {
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
	to_clean = calloc((w->seg.h->max_endpoints + 63) / 64, sizeof(uint64_t));
	if (!to_clean)
		return -ENOMEM;
	int rc = pthread_create(&w->monitor, NULL, monitor_main, w);
	return -rc;
}

void
hl_w_log(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "heirloom-worker[%d]: %s\n", (int)getpid(), buf);
}

void
hl_w_seglog(struct hl_worker *w, uint32_t kind, int32_t code, uint32_t pid, const char *text)
{
	struct hl_shm_header *h = w->seg.h;
	uint64_t at = atomic_fetch_add_explicit(&h->log_head, 1, memory_order_acq_rel);
	struct hl_shm_logrec *r = &h->log[at % HL_ERRLOG_LEN];
	r->time_ns = hl__wall_ns();
	r->kind = kind;
	r->code = code;
	r->pid = pid;
	r->epoch = atomic_load_explicit(&h->owner_epoch, memory_order_relaxed);
	snprintf(r->text, sizeof(r->text), "%s", text ? text : "");
}
