/* SPDX-License-Identifier: MIT */
/*
 * seqlock.h: the sequence lock over a key slot's value (hl_shm_key.seq).
 * One writer (the key's shard thread), any number of lock-free readers in
 * any process. Readers never block the writer; a reader that sees the
 * sequence odd or changed retries.
 *
 * Writer: hl__seq_write_begin(); stores (relaxed atomics); hl__seq_write_end().
 * Reader: s = hl__seq_read_begin(); loads (relaxed atomics);
 *         if (hl__seq_read_retry(s)) retry.
 *
 * A crash between begin and end leaves seq odd; recovery makes it even
 * (hl__seq_repair). Readers meanwhile retry a bounded number of times and
 * report -EBUSY, never hang.
 */
#ifndef HL_SEQLOCK_H
#define HL_SEQLOCK_H

#include <stdatomic.h>
#include <stdint.h>

static inline void
hl__seq_write_begin(_Atomic uint64_t *seq)
{
	uint64_t s = atomic_load_explicit(seq, memory_order_relaxed);
	atomic_store_explicit(seq, s + 1, memory_order_relaxed);
	/* Orders the odd store before the data stores that follow (pairs with
	 * the acquire fence in hl__seq_read_retry()). */
	atomic_thread_fence(memory_order_release);
}

static inline void
hl__seq_write_end(_Atomic uint64_t *seq)
{
	uint64_t s = atomic_load_explicit(seq, memory_order_relaxed);
	/* Release: the data stores happen before the even value (pairs with the
	 * acquire in hl__seq_read_begin()). */
	atomic_store_explicit(seq, s + 1, memory_order_release);
}

/* Returns the sequence to check against, or an odd value if a write runs. */
static inline uint64_t
hl__seq_read_begin(_Atomic uint64_t *seq)
{
	return atomic_load_explicit(seq, memory_order_acquire);
}

static inline int
hl__seq_read_retry(_Atomic uint64_t *seq, uint64_t s)
{
	atomic_thread_fence(memory_order_acquire);
	return (s & 1u) || atomic_load_explicit(seq, memory_order_relaxed) != s;
}

static inline int
hl__seq_repair(_Atomic uint64_t *seq)
{
	uint64_t s = atomic_load_explicit(seq, memory_order_relaxed);
	if (!(s & 1u))
		return 0;
	atomic_store_explicit(seq, s + 1, memory_order_release);
	return 1;
}

#endif /* HL_SEQLOCK_H */
