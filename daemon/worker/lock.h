/* SPDX-License-Identifier: MIT */
/*
 * lock.h: the worker's mutexes, taken through hl_w_lock()/hl_w_unlock()
 * with their rank, and a lock-order witness in debug builds (HL_DEBUG, the
 * CMake option HL_ASSERTS), after jemalloc's witness.h: each thread keeps
 * the set of ranks it holds, and taking a rank not above every rank held
 * aborts at once with the two ranks, where an inverted order would
 * otherwise deadlock only once in a while. Release builds take the mutex
 * and nothing else.
 *
 * The ranks, lowest first (take a higher one only while holding lower
 * ones; two locks of one rank are never held at once):
 *   HL_W_RANK_SHARD  struct hl_shard.mu: a shard's keys, buckets, lists
 *   HL_W_RANK_EP     struct hl_ep.mu: one endpoint's worker-side record
 *   (3)              the allocator locks inside lib/alloc.c, not witnessed
 *                    here: taken and released within one lib call.
 */
#ifndef HL_W_LOCK_H
#define HL_W_LOCK_H

#include <assert.h>
#include <pthread.h>

enum hl_w_rank {
	HL_W_RANK_SHARD = 1,
	HL_W_RANK_EP = 2,
};

/* The witness is on wherever assert() is (no NDEBUG), or with HL_DEBUG. */
#if defined(HL_DEBUG) || !defined(NDEBUG)
#define HL_W_WITNESS 1
#endif

#ifdef HL_W_WITNESS
/* The ranks this thread holds, bit 1 << rank (lock.c). */
extern _Thread_local unsigned hl_w_held;

/* Called before a thread takes RANK: no rank at or above it is held. */
void hl_w_rank_violation(enum hl_w_rank rank, unsigned held) __attribute__((noreturn));

static inline void
hl_w_rank_acquire(enum hl_w_rank rank)
{
	if (hl_w_held >> rank)
		hl_w_rank_violation(rank, hl_w_held);
	hl_w_held |= 1u << rank;
}

static inline void
hl_w_rank_release(enum hl_w_rank rank)
{
	assert(hl_w_held & (1u << rank));
	hl_w_held &= ~(1u << rank);
}

/* Whether this thread holds a lock of RANK (for asserts). */
static inline int
hl_w_rank_held(enum hl_w_rank rank)
{
	return (hl_w_held >> rank) & 1u;
}
#else
#define hl_w_rank_acquire(rank) ((void)(rank))
#define hl_w_rank_release(rank) ((void)(rank))
#define hl_w_rank_held(rank)    ((void)(rank), 1)
#endif

static inline void
hl_w_lock(pthread_mutex_t *mu, enum hl_w_rank rank)
{
	hl_w_rank_acquire(rank);
	pthread_mutex_lock(mu);
}

static inline void
hl_w_unlock(pthread_mutex_t *mu, enum hl_w_rank rank)
{
	pthread_mutex_unlock(mu);
	hl_w_rank_release(rank);
}

#endif /* HL_W_LOCK_H */
