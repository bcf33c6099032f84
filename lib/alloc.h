/* SPDX-License-Identifier: MIT */
/*
 * alloc.h: the worker's allocators for segment space: the value heap (size
 * classes carved from fixed chunks) and the slot pools (key slots, observer
 * slots). Their whole state lives in the worker's own memory, never in the
 * segment: after a crash, recovery rebuilds it by marking every block and
 * slot reachable from the table (hl__heap_mark, hl__pool_mark) and then
 * calling *_finish. Whatever was allocated but not yet reachable when the
 * worker died is therefore free again: leaks are impossible by construction.
 *
 * Accounting is exact: used + free == capacity at every moment, in bytes of
 * class-sized blocks for the heap and in slots for the pools.
 *
 * Synchronisation: every function takes the object's mutex; safe from any
 * thread (shard threads and the call_rcu thread free into them).
 */
#ifndef HL_ALLOC_H
#define HL_ALLOC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define HL_HEAP_CLASSES 12u /* 64 B .. 128 KiB */

struct hl_heap {
	pthread_mutex_t lock;
	uint64_t base;  /* segment offset of the heap */
	uint64_t bytes; /* capacity: nchunks * chunk */
	uint32_t chunk; /* bytes per chunk, power of two */
	uint32_t nchunks;
	uint32_t nclasses;                 /* classes 0..nclasses-1, the last one == chunk */
	uint32_t words;                    /* bitmap words per chunk */
	uint8_t *cls;                      /* per chunk: class, or 0xff = free chunk */
	uint32_t *nused;                   /* per chunk: blocks allocated */
	uint64_t *bits;                    /* per chunk: `words` words, bit = block allocated */
	uint32_t *pnext, *pprev;           /* partial-chunk list links (index+1) */
	uint32_t partial[HL_HEAP_CLASSES]; /* head of each class's partial list */
	uint32_t *free_stack;
	uint32_t nfree;
	uint64_t used; /* bytes in allocated blocks */
};

int hl__heap_init(struct hl_heap *hp, uint64_t base, uint64_t bytes, uint32_t chunk);
void hl__heap_fini(struct hl_heap *hp);
/* Offset of a block of at least N bytes, or 0 with *err = -ENOSPC / -EMSGSIZE. */
uint64_t hl__heap_alloc(struct hl_heap *hp, uint64_t n, uint32_t *klass, int *err);
/* Return a block. -EINVAL (and nothing changes) for an offset that is not an
 * allocated block: the caller has a bug or read a corrupt offset. */
int hl__heap_free(struct hl_heap *hp, uint64_t off);
/* Class whose blocks hold N bytes, or -EMSGSIZE. */
int hl__heap_class_for(const struct hl_heap *hp, uint64_t n);
/* The same without a heap, for a heap of CHUNK-byte chunks: what the
 * keeper uses to tell whether a state fits (daemon/keeper/statefit.c). */
int hl__heap_class_in(uint32_t chunk, uint64_t n);
uint64_t hl__heap_used(struct hl_heap *hp);
uint64_t hl__heap_free_bytes(struct hl_heap *hp);
/* Whether OFF is the start of an allocated block of class K. */
int hl__heap_is_block(struct hl_heap *hp, uint64_t off, uint32_t k);

/* Rebuild: reset to "everything free", mark each reachable block, finish.
 * mark returns -EINVAL for an offset outside the heap or misaligned for its
 * class, -EEXIST when the block is already marked (two references), -EPROTO
 * when its chunk already holds another class; nothing changes then. */
void hl__heap_reset(struct hl_heap *hp);
int hl__heap_mark(struct hl_heap *hp, uint64_t off, uint32_t k);
void hl__heap_finish(struct hl_heap *hp);
/* Walk every structure and check used + free == capacity: 0 or -EPROTO. */
int hl__heap_check(struct hl_heap *hp);

/* A pool of 1-based slot indexes 1..cap. */
struct hl_pool {
	pthread_mutex_t lock;
	uint32_t cap;
	uint32_t nfree;
	uint32_t *stack; /* free slots; top = stack[nfree-1] */
	uint64_t *used;  /* bitmap of allocated slots */
	/* The segment's high-water mark of this pool (layout.h, keys_hwm),
	 * or NULL: raised under the lock when a slot above it is handed out. */
	_Atomic uint32_t *hwm;
};

int hl__pool_init(struct hl_pool *p, uint32_t cap);
/* The same, but with no free slot until hl__pool_rebuild() or
 * hl__pool_reset() + hl__pool_finish(): the worker's observer pool, which
 * recovery rebuilds anyway (filling a million slots twice cost ~2 ms of
 * the worker's start, on the reattach path). */
int hl__pool_init_unfilled(struct hl_pool *p, uint32_t cap);
void hl__pool_fini(struct hl_pool *p);
uint32_t hl__pool_alloc(struct hl_pool *p);         /* 0 = none left */
int hl__pool_free(struct hl_pool *p, uint32_t idx); /* -EINVAL when not allocated */
uint32_t hl__pool_used(struct hl_pool *p);
/* Recovery's bulk rebuild, in one pass under one lock: slot i is allocated
 * iff REACHED[i - 1] != 0 (an array of cap entries). Equivalent to reset,
 * hl__pool_mark() of each reached slot and hl__pool_finish(), without a
 * locked instruction per slot: those also serialise the memory accesses of
 * the list walk they sat in (recovery.c walks 16 lists side by side so
 * that their cache misses overlap). */
void hl__pool_rebuild(struct hl_pool *p, const uint32_t *reached);
void hl__pool_reset(struct hl_pool *p);
int hl__pool_mark(struct hl_pool *p, uint32_t idx); /* -EINVAL / -EEXIST */
void hl__pool_finish(struct hl_pool *p);
int hl__pool_is_used(struct hl_pool *p, uint32_t idx);

#endif /* HL_ALLOC_H */
