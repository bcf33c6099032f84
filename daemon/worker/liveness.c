/* SPDX-License-Identifier: MIT */
/*
 * liveness.c: the worker's side of hang detection (issue 22) that is not
 * a heartbeat store in a thread's loop (those are in shard_main() and
 * monitor_main()): the heartbeats' start value at attach, and the worker
 * process's own systemd notifications (READY=1 once it serves, WATCHDOG=1
 * only while every serving thread makes progress). Main thread only.
 *
 * It must never beat for another thread: the main thread's sigwait loop
 * runs whatever the shard threads do, so a ping from it proves nothing
 * unless it first checks their heartbeats.
 */
#include "liveness.h"

#include "heirloom/heirloom.h"
#include "notify.h"
#include "progress.h"
#include "util.h"

#include <stdio.h>

static uint64_t wd_usec;      /* $WATCHDOG_USEC for us, 0 = off */
static uint64_t next_ping_ns; /* CLOCK_MONOTONIC_COARSE */
static int ready_sent;
static int stale_logged;

/* At attach, before recovery and before any thread of ours runs: every
 * heartbeat starts at now. A previous worker's last beats (it died or
 * hung) never count against this one, and recovery's part 1 (this
 * thread) and part 2 (the monitor, before its loop) count as one pause of
 * each thread, bounded by the keeper's --hang-timeout like any other. */
void
hl_w_beats_reset(struct hl_worker *w)
{
	struct hl_shm_header *h = w->seg.h;
	uint64_t now = hl__coarse_ns();
	for (uint32_t s = 0; s < h->shards && s < HL_SHARDS_MAX; s++)
		atomic_store_explicit(&h->shard[s].beat_ns, now, memory_order_relaxed);
	atomic_store_explicit(&h->monitor_beat_ns, now, memory_order_relaxed);
}

/* After a stop, once every serving thread has been joined: no heartbeat
 * counts any more while the main thread checks the table and gives it
 * back (as long as that takes; a stop the keeper asked for is bounded by
 * its --stop-timeout instead). */
void
hl_w_beats_stop(struct hl_worker *w)
{
	struct hl_shm_header *h = w->seg.h;
	for (uint32_t s = 0; s < h->shards && s < HL_SHARDS_MAX; s++)
		atomic_store_explicit(&h->shard[s].beat_ns, HL_BEAT_STOPPED, memory_order_relaxed);
	atomic_store_explicit(&h->monitor_beat_ns, HL_BEAT_STOPPED, memory_order_relaxed);
	hl__sd_notify("STOPPING=1");
}

void
hl_w_notify_init(void)
{
	wd_usec = hl__sd_watchdog_usec();
	if (wd_usec)
		hl__log("systemd watchdog: pinging every %lu ms while every thread beats",
		        (unsigned long)(wd_usec / 2000));
}

int
hl_w_notify_tick_ms(int dflt)
{
	if (!wd_usec)
		return dflt;
	uint64_t q = wd_usec / 4000; /* a quarter of the period, in ms */
	return q < 1 ? 1 : q < (uint64_t)dflt ? (int)q : dflt;
}

/* Per shard, what the last tick saw of its work (the keeper's rule,
 * daemon/keeper/watchdog.c, and the same counters: progress.h). */
static uint64_t seen_work[HL_SHARDS_MAX], seen_at[HL_SHARDS_MAX];

/* The longest time without progress among the worker's serving threads,
 * in ns at NOW: since the later of its heartbeat and the last tick that
 * saw its work counters move. */
static uint64_t
oldest_beat_age(struct hl_worker *w, uint64_t now, int *which)
{
	struct hl_shm_header *h = w->seg.h;
	uint64_t b = atomic_load_explicit(&h->monitor_beat_ns, memory_order_relaxed);
	uint64_t worst = now > b ? now - b : 0;
	*which = -1;
	for (uint32_t s = 0; s < w->nshards && s < HL_SHARDS_MAX; s++) {
		uint64_t work = hl__shard_work(&h->shard[s].c);
		if (work != seen_work[s]) {
			seen_work[s] = work;
			seen_at[s] = now;
		}
		b = atomic_load_explicit(&h->shard[s].beat_ns, memory_order_relaxed);
		if (seen_at[s] > b)
			b = seen_at[s];
		if (now > b && now - b > worst) {
			worst = now - b;
			*which = (int)s;
		}
	}
	return worst;
}

/*
 * From the main thread's loop, at least every hl_w_notify_tick_ms(): tell
 * systemd READY=1 once the worker serves (worker_ready), and ping
 * WATCHDOG=1 every half period, but only while no serving thread has gone
 * the watchdog period itself without progress (a heartbeat, or for a
 * shard thread work in its counters). A hung thread therefore stops the pings, and
 * systemd kills and restarts the worker at most two periods after the
 * thread's last beat, with or without a keeper watching.
 */
void
hl_w_notify_tick(struct hl_worker *w)
{
	if (!ready_sent && atomic_load_explicit(&w->seg.h->worker_ready, memory_order_acquire)) {
		hl__sd_notify("READY=1");
		ready_sent = 1;
	}
	if (!wd_usec)
		return;
	uint64_t now = hl__coarse_ns();
	int which;
	/* Every tick, not only when a ping is due: work is seen as it
	 * happens, at most a tick late. */
	uint64_t age = oldest_beat_age(w, now, &which);
	if (now < next_ping_ns)
		return;
	if (age >= wd_usec * 1000u) {
		if (!stale_logged) {
			char who[32];
			if (which < 0)
				snprintf(who, sizeof(who), "the monitor thread");
			else
				snprintf(who, sizeof(who), "shard thread %d", which);
			hl__log_err("%s has not beaten for %lu ms: no systemd watchdog ping", who,
			            (unsigned long)(age / 1000000u));
		}
		stale_logged = 1;
		return;
	}
	stale_logged = 0;
	hl__sd_notify("WATCHDOG=1");
	next_ping_ns = now + wd_usec * 500u;
}
