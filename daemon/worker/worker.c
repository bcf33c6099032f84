/* SPDX-License-Identifier: MIT */
/*
 * worker.c: the top of the worker (worker.h): its state once the segment
 * is mapped, THE recovery order, its threads and their stop. main.c (the
 * process: options, the keeper, signals) and the fuzz target
 * (tests/fuzz/fuzz_attach.c) both come through here, so that both run the
 * same setup and the same recovery, step for step:
 *
 *   part 1 (recovery.c)  keys, values, endpoints, in-flight requests,
 *                        pending dispatches: this thread, no other yet
 *   kick (recovery.c)    watch live clients, look at every claimed ring
 *   part 2 (monitor.c)   observer lists, pools, serve, the at-attach
 *                        prune, worker_ready: on the monitor thread while
 *                        shard threads already serve publishes, or here
 *                        when no thread runs (hl_w_recover())
 *
 * Calls shard.c, monitor.c, recovery.c, telemetry.c, dispatch.c and
 * wake.c; nothing calls it but main.c and the fuzz target.
 */
#include "worker.h"
#include "history.h"

#include "dispatch.h"
#include "heirloom/heirloom.h"
#include "monitor.h"
#include "recovery.h"
#include "restore.h"
#include "shard.h"
#include "telemetry.h"
#include "wake.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <urcu/urcu-memb.h>

int
hl_w_init(struct hl_worker *w)
{
	const struct hl_shm_header *h = w->seg.h;
	int rc = hl__heap_init(&w->heap, h->heap_off, h->heap_bytes, h->heap_chunk);
	if (rc == 0)
		rc = hl__pool_init(&w->keys, h->max_keys);
	if (rc == 0)
		rc = hl__pool_init_unfilled(&w->obs, h->max_observers); /* recovery fills it */
	if (rc == 0)
		rc = hl_w_dispatch_init(w);
	w->keys.hwm = &w->seg.h->keys_hwm;
	w->obs.hwm = &w->seg.h->obs_hwm;
	if (rc)
		return rc;
	const char *delay = getenv("HEIRLOOM_TEST_APPLY_DELAY_US");
	w->apply_delay_us = delay ? atoll(delay) : 0;
	w->obs_pos = calloc((size_t)h->max_observers + 1, sizeof(uint32_t));
	w->eps = calloc(h->max_endpoints, sizeof(struct hl_ep));
	w->nshards = h->shards;
	w->shards = calloc(w->nshards, sizeof(struct hl_shard));
	w->to_clean = calloc(hl_w_ep_words(w), sizeof(*w->to_clean));
	if (!w->obs_pos || !w->eps || !w->shards || !w->to_clean)
		return -ENOMEM;
	for (uint32_t e = 0; e < h->max_endpoints; e++) {
		pthread_mutex_init(&w->eps[e].mu, NULL);
		w->eps[e].pidfd = -1;
		atomic_init(&w->eps[e].wake_fd, -1);
	}
	for (uint32_t s = 0; s < w->nshards; s++) {
		w->shards[s].w = w;
		w->shards[s].id = s;
		rc = hl_w_shard_init(&w->shards[s]);
		if (rc)
			return rc;
	}
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	w->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->epfd < 0 || w->wakefd < 0)
		return -errno;
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = UINT64_MAX };
	epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wakefd, &ev);
	return 0;
}

/* The recovery order (see the top of this file). THREADS: start the
 * monitor (which runs part 2) and the shard threads; else run part 2 in
 * this thread. Logs what failed. */
static int
recover_and_serve(struct hl_worker *w, int threads)
{
	int rc = hl_w_recover_begin(w);
	if (rc) {
		hl__log_err("recovery failed: %s", hl_strerror(rc));
		return rc;
	}
	atomic_fetch_add_explicit(&w->seg.h->reattaches, 1, memory_order_relaxed);
	/* A new segment with state on disk (the keeper's --durability):
	 * the table comes back before anything serves. Not in the fuzz
	 * target (THREADS 0), whose header is its input. */
	if (threads && (rc = hl_w_restore(w)) != 0)
		return rc;
	rc = hl_w_telemetry_init(w);
	if (rc) {
		hl__log_err("setup failed: %s", hl_strerror(rc));
		return rc;
	}
	hl_w_recover_kick(w);
	if (!threads) {
		rc = hl_w_monitor_recover(w);
		if (rc)
			hl__log_err("recovery failed: %s", hl_strerror(rc));
		return rc;
	}
	rc = hl_w_monitor_start(w);
	if (rc == 0)
		rc = hl_w_shards_start(w);
	if (rc)
		hl__log_err("cannot start threads");
	return rc;
}

int
hl_w_start(struct hl_worker *w)
{
	return recover_and_serve(w, 1);
}

int
hl_w_recover(struct hl_worker *w)
{
	/* Kept until exit: hl_w_recover_begin() frees a previous pass's. */
	int rc = recover_and_serve(w, 0);
	hl_w_hist_fix(w); /* what the scan found, as no shard thread will */
	/* A prefix entry recovery freed (keys.c) returns to the pool after a
	 * grace period, like an observer slot: back before hl_w_check(). */
	urcu_memb_barrier();
	return rc;
}

void
hl_w_stop(struct hl_worker *w)
{
	atomic_store(&w->stop, 1);
	for (uint32_t s = 0; s < w->nshards; s++)
		hl_w_wake_shard(w, s);
	hl_w_monitor_wake(w);
	hl_w_shards_join(w);
	pthread_join(w->monitor, NULL);
}

void
hl_w_drain_deferred(struct hl_worker *w)
{
	(void)w;
	/* Every observer and prefix entry slot handed to call_rcu() is back
	 * in its pool. Up to ~10 ms: liburcu's call_rcu thread sleeps 10 ms
	 * after each wake-up to batch callbacks, and the barrier's own
	 * callback wakes it. */
	urcu_memb_barrier();
}
