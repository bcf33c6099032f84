/* SPDX-License-Identifier: MIT */
/*
 * owner.c: the owner record's sequence lock (owner.h): its one writer, its
 * one reader and the repair of a record whose writer died mid-write. It
 * holds no state and must never decide who may own the table.
 */
#include "owner.h"

#include <errno.h>
#include <sched.h>

uint64_t
hl__owner_write(struct hl_shm_header *h, uint32_t role, uint32_t pid, uint64_t start)
{
	/* Whoever owns the table next is not serving until it says so
	 * (worker_ready = 1, after its recovery and threads: worker main.c).
	 * Cleared here, before the record, for every change of owner: a
	 * crashed worker leaves it set, and a standalone worker takes the
	 * table straight from it, with no keeper in between. A crash right
	 * after this store leaves the old record with "not ready": clients
	 * wait (or -EAGAIN), the keeper's pidfd or the next keeper repairs. */
	atomic_store_explicit(&h->worker_ready, 0, memory_order_release);
	/* Odd seq first: readers (hl__owner_read) retry until it is even
	 * again. The release fence orders the odd seq before the field
	 * stores; pairs with the acquire fence in hl__owner_read(). */
	atomic_fetch_add_explicit(&h->owner_seq, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	uint64_t epoch = atomic_fetch_add_explicit(&h->owner_epoch, 1, memory_order_relaxed) + 1;
	atomic_store_explicit(&h->owner_role, role, memory_order_relaxed);
	atomic_store_explicit(&h->owner_pid, pid, memory_order_relaxed);
	atomic_store_explicit(&h->owner_start, start, memory_order_relaxed);
	/* Even seq last (release: the fields are visible before it). A crash
	 * before this store leaves seq odd; see hl__owner_repair(). */
	atomic_fetch_add_explicit(&h->owner_seq, 1, memory_order_release);
	return epoch;
}

/* Test seam: called between the reader's first field load and the
 * others, exactly where a concurrent writer makes a record torn. Weak and
 * empty here (GCC never inlines a weak definition); tests/test_layout.c
 * links a strong one that writes the record at that moment, so the race
 * the sequence lock exists for happens on every run instead of by chance.
 * Owner reads are rare (handoffs, heirloomctl), so the call costs nothing
 * that matters. */
__attribute__((weak)) void
hl__owner_read_mid(const struct hl_shm_header *h)
{
	(void)h;
}

int
hl__owner_read(const struct hl_shm_header *h, struct hl_owner *o)
{
	/* The fields are atomics, so a load racing a write is a stale value,
	 * never undefined behaviour; the seq says whether they are one
	 * record. Casting away const: C11 atomic loads take a non-const
	 * pointer, and nothing here stores. */
	_Atomic uint64_t *seq = (_Atomic uint64_t *)&h->owner_seq;
	for (int tries = 0;; tries++) {
		/* Pairs with the closing release increment in hl__owner_write(). */
		uint64_t s1 = atomic_load_explicit(seq, memory_order_acquire);
		o->epoch = atomic_load_explicit(&h->owner_epoch, memory_order_relaxed);
		hl__owner_read_mid(h);
		o->role = atomic_load_explicit(&h->owner_role, memory_order_relaxed);
		o->pid = atomic_load_explicit(&h->owner_pid, memory_order_relaxed);
		o->start = atomic_load_explicit(&h->owner_start, memory_order_relaxed);
		/* Orders the field loads before the second seq load; pairs with
		 * the release fence after the opening increment of a writer. */
		atomic_thread_fence(memory_order_acquire);
		uint64_t s2 = atomic_load_explicit(seq, memory_order_relaxed);
		if (s1 == s2 && !(s1 & 1))
			return 0;
		/* A write takes a few stores: a record odd for this long has
		 * lost its writer. */
		if (tries >= 1000)
			return -EBUSY;
		sched_yield();
	}
}

int
hl__owner_repair(struct hl_shm_header *h)
{
	uint64_t s = atomic_load_explicit(&h->owner_seq, memory_order_acquire);
	if (!(s & 1))
		return 0;
	atomic_fetch_add_explicit(&h->owner_seq, 1, memory_order_release);
	return 1;
}
