/* SPDX-License-Identifier: MIT */
/*
 * restart.h: the supervisor's restart policy (--spawn-worker). A pure
 * function of how long the worker ran, so that tests can drive it with a
 * made-up clock; supervise.c feeds it the real one.
 *
 * Policy:
 *  - A worker that ran at least `stable_ms` (--restart-stable) before it
 *    exited is restarted at once. One crash of a worker that served is not
 *    a loop, and every millisecond of delay is a millisecond in which no
 *    publish is dispatched (issue 5, scenario 6).
 *  - A worker that exited sooner (a "quick" exit: bad options, a crash in
 *    recovery, a request that kills every worker that replays it) waits
 *    `min_ms` (--restart-min) the first time, then twice as long on each
 *    further quick exit in a row, up to `max_ms` (--restart-max). This is
 *    the crash-loop protection: a worker that never gets far is started at
 *    most once per delay, never in a tight loop.
 *  - A stable run starts the sequence over: the next quick exit waits
 *    `min_ms` again.
 *
 * Not thread-safe (the keeper is single-threaded). No allocation.
 */
#ifndef HL_KEEPER_RESTART_H
#define HL_KEEPER_RESTART_H

#include <stdint.h>

struct hl_k_backoff {
	int64_t min_ms, max_ms, stable_ms; /* the options, >= 0 */
	int64_t next_ms;                   /* the delay of the next quick exit */
};

static inline void
hl_k_backoff_init(struct hl_k_backoff *b, int64_t min_ms, int64_t max_ms, int64_t stable_ms)
{
	b->min_ms = min_ms;
	b->max_ms = max_ms;
	b->stable_ms = stable_ms;
	b->next_ms = min_ms;
}

/* The delay before restarting a worker that exited after running RAN_MS,
 * in ms (0 = at once), and the state for the next exit. */
static inline int64_t
hl_k_backoff_next(struct hl_k_backoff *b, uint64_t ran_ms)
{
	if (ran_ms >= (uint64_t)b->stable_ms) {
		b->next_ms = b->min_ms;
		return 0;
	}
	int64_t d = b->next_ms;
	/* Options are bounded to an hour: d * 2 cannot overflow. */
	b->next_ms = d * 2 > b->max_ms ? b->max_ms : d * 2;
	return d;
}

#endif /* HL_KEEPER_RESTART_H */
