/* SPDX-License-Identifier: MIT */
/*
 * progress.h: what counts as work of a worker's serving thread, for the
 * two judges of whether it still makes progress: the keeper's hang
 * watchdog (daemon/keeper/watchdog.c) and the worker's own systemd
 * watchdog pings (daemon/worker/liveness.c). A thread inside one long
 * batch of requests does not come back to its loop to beat, but it moves
 * these counters: slow, not hung. Reads only; relaxed loads, as for the
 * heartbeats (no word publishes data: a stale read moves a verdict by one
 * check).
 */
#ifndef HL_PROGRESS_H
#define HL_PROGRESS_H

#include "layout.h"

#include <stdatomic.h>
#include <stdint.h>

/* A shard thread's work: the sum of everything it counts while it serves
 * (its hl_shm_counters). Only changes of the sum mean anything. */
static inline uint64_t
hl__shard_work(const struct hl_shm_counters *c)
{
	return atomic_load_explicit(&c->publishes, memory_order_relaxed) +
	       atomic_load_explicit(&c->skipped, memory_order_relaxed) +
	       atomic_load_explicit(&c->deletes, memory_order_relaxed) +
	       atomic_load_explicit(&c->notifications, memory_order_relaxed) +
	       atomic_load_explicit(&c->lagged_drops, memory_order_relaxed) +
	       atomic_load_explicit(&c->observers_added, memory_order_relaxed) +
	       atomic_load_explicit(&c->observers_removed, memory_order_relaxed) +
	       atomic_load_explicit(&c->async_errors, memory_order_relaxed);
}

/* The monitor thread's work: its endpoint cleanups. */
static inline uint64_t
hl__monitor_work(const struct hl_shm_header *h)
{
	return atomic_load_explicit(&h->cleanup_runs, memory_order_relaxed) +
	       atomic_load_explicit(&h->cleanup_removed, memory_order_relaxed);
}

#endif /* HL_PROGRESS_H */
