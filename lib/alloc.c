/* SPDX-License-Identifier: MIT */
/*
 * alloc.c: segment space allocators (see alloc.h for the contract). Owns
 * only process-local bookkeeping; it never writes into the segment.
 */
#include "alloc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define FREE_CHUNK 0xffu

static uint32_t
blocks_per_chunk(const struct hl_heap *hp, uint32_t k)
{
	return hp->chunk >> (6 + k);
}

static uint64_t *
chunk_bits(const struct hl_heap *hp, uint32_t c)
{
	return hp->bits + (uint64_t)c * hp->words;
}

static void
partial_push(struct hl_heap *hp, uint32_t k, uint32_t c)
{
	hp->pprev[c] = 0;
	hp->pnext[c] = hp->partial[k];
	if (hp->partial[k])
		hp->pprev[hp->partial[k] - 1] = c + 1;
	hp->partial[k] = c + 1;
}

static void
partial_remove(struct hl_heap *hp, uint32_t k, uint32_t c)
{
	uint32_t n = hp->pnext[c], p = hp->pprev[c];
	if (p)
		hp->pnext[p - 1] = n;
	else
		hp->partial[k] = n;
	if (n)
		hp->pprev[n - 1] = p;
	hp->pnext[c] = hp->pprev[c] = 0;
}

/* Classes 64 << k up to the chunk size (at most HL_HEAP_CLASSES). */
static uint32_t
nclasses_of(uint32_t chunk)
{
	uint32_t n = 0;
	while ((64u << n) <= chunk && n < HL_HEAP_CLASSES)
		n++;
	return n;
}

static int
class_in(uint32_t nclasses, uint64_t n)
{
	for (uint32_t k = 0; k < nclasses; k++)
		if ((64ull << k) >= n)
			return (int)k;
	return -EMSGSIZE;
}

int
hl__heap_class_in(uint32_t chunk, uint64_t n)
{
	return class_in(nclasses_of(chunk), n);
}

int
hl__heap_init(struct hl_heap *hp, uint64_t base, uint64_t bytes, uint32_t chunk)
{
	memset(hp, 0, sizeof(*hp));
	if (chunk < 64 || (chunk & (chunk - 1)) || bytes < chunk)
		return -EINVAL;
	hp->base = base;
	hp->chunk = chunk;
	hp->nchunks = (uint32_t)(bytes / chunk);
	hp->bytes = (uint64_t)hp->nchunks * chunk;
	hp->nclasses = nclasses_of(chunk);
	if ((64u << (hp->nclasses - 1)) != chunk)
		return -EINVAL;
	hp->words = (chunk / 64 + 63) / 64;
	hp->cls = malloc(hp->nchunks);
	hp->nused = calloc(hp->nchunks, sizeof(uint32_t));
	hp->bits = calloc((size_t)hp->nchunks * hp->words, sizeof(uint64_t));
	hp->pnext = calloc(hp->nchunks, sizeof(uint32_t));
	hp->pprev = calloc(hp->nchunks, sizeof(uint32_t));
	hp->free_stack = malloc((size_t)hp->nchunks * sizeof(uint32_t));
	pthread_mutex_init(&hp->lock, NULL);
	if (!hp->cls || !hp->nused || !hp->bits || !hp->pnext || !hp->pprev || !hp->free_stack) {
		hl__heap_fini(hp);
		return -ENOMEM;
	}
	hl__heap_reset(hp);
	hl__heap_finish(hp);
	return 0;
}

void
hl__heap_fini(struct hl_heap *hp)
{
	free(hp->cls);
	free(hp->nused);
	free(hp->bits);
	free(hp->pnext);
	free(hp->pprev);
	free(hp->free_stack);
	if (hp->nchunks)
		pthread_mutex_destroy(&hp->lock);
	memset(hp, 0, sizeof(*hp));
}

int
hl__heap_class_for(const struct hl_heap *hp, uint64_t n)
{
	return class_in(hp->nclasses, n);
}

uint64_t
hl__heap_alloc(struct hl_heap *hp, uint64_t n, uint32_t *klass, int *err)
{
	int k = hl__heap_class_for(hp, n);
	if (k < 0) {
		*err = k;
		return 0;
	}
	pthread_mutex_lock(&hp->lock);
	uint32_t c;
	if (hp->partial[k]) {
		c = hp->partial[k] - 1;
	} else if (hp->nfree) {
		c = hp->free_stack[--hp->nfree];
		hp->cls[c] = (uint8_t)k;
		partial_push(hp, (uint32_t)k, c);
	} else {
		pthread_mutex_unlock(&hp->lock);
		*err = -ENOSPC;
		return 0;
	}
	uint64_t *bits = chunk_bits(hp, c);
	uint32_t nb = blocks_per_chunk(hp, (uint32_t)k);
	uint32_t b = UINT32_MAX;
	for (uint32_t w = 0; w * 64 < nb; w++) {
		uint64_t free_mask = ~bits[w];
		if (nb - w * 64 < 64)
			free_mask &= (1ull << (nb - w * 64)) - 1;
		if (free_mask) {
			b = w * 64 + (uint32_t)__builtin_ctzll(free_mask);
			break;
		}
	}
	if (b == UINT32_MAX) {
		/* A chunk on the partial list always has a free block. */
		pthread_mutex_unlock(&hp->lock);
		*err = -EPROTO;
		return 0;
	}
	bits[b / 64] |= 1ull << (b % 64);
	if (++hp->nused[c] == nb)
		partial_remove(hp, (uint32_t)k, c);
	hp->used += 64ull << k;
	pthread_mutex_unlock(&hp->lock);
	*klass = (uint32_t)k;
	return hp->base + (uint64_t)c * hp->chunk + ((uint64_t)b << (6 + k));
}

/* Locate OFF: chunk, class, block. Caller holds the lock. */
static int
locate(const struct hl_heap *hp, uint64_t off, uint32_t *c, uint32_t *b)
{
	if (off < hp->base || off >= hp->base + hp->bytes)
		return -EINVAL;
	uint64_t rel = off - hp->base;
	*c = (uint32_t)(rel / hp->chunk);
	uint8_t k = hp->cls[*c];
	if (k == FREE_CHUNK)
		return -EINVAL;
	uint64_t in = rel % hp->chunk;
	if (in & ((64ull << k) - 1))
		return -EINVAL;
	*b = (uint32_t)(in >> (6 + k));
	return 0;
}

int
hl__heap_free(struct hl_heap *hp, uint64_t off)
{
	uint32_t c, b;
	pthread_mutex_lock(&hp->lock);
	int rc = locate(hp, off, &c, &b);
	if (rc)
		goto out;
	uint64_t *bits = chunk_bits(hp, c);
	if (!(bits[b / 64] & (1ull << (b % 64)))) {
		rc = -EINVAL;
		goto out;
	}
	uint32_t k = hp->cls[c];
	uint32_t nb = blocks_per_chunk(hp, k);
	bits[b / 64] &= ~(1ull << (b % 64));
	if (hp->nused[c]-- == nb)
		partial_push(hp, k, c);
	hp->used -= 64ull << k;
	if (hp->nused[c] == 0) {
		partial_remove(hp, k, c);
		hp->cls[c] = FREE_CHUNK;
		hp->free_stack[hp->nfree++] = c;
	}
out:
	pthread_mutex_unlock(&hp->lock);
	return rc;
}

int
hl__heap_is_block(struct hl_heap *hp, uint64_t off, uint32_t k)
{
	uint32_t c, b;
	pthread_mutex_lock(&hp->lock);
	int ok = locate(hp, off, &c, &b) == 0 && hp->cls[c] == k &&
	         (chunk_bits(hp, c)[b / 64] & (1ull << (b % 64)));
	pthread_mutex_unlock(&hp->lock);
	return ok;
}

uint64_t
hl__heap_used(struct hl_heap *hp)
{
	pthread_mutex_lock(&hp->lock);
	uint64_t u = hp->used;
	pthread_mutex_unlock(&hp->lock);
	return u;
}

uint64_t
hl__heap_free_bytes(struct hl_heap *hp)
{
	pthread_mutex_lock(&hp->lock);
	uint64_t f = (uint64_t)hp->nfree * hp->chunk;
	for (uint32_t k = 0; k < hp->nclasses; k++)
		for (uint32_t c = hp->partial[k]; c; c = hp->pnext[c - 1])
			f += (uint64_t)(blocks_per_chunk(hp, k) - hp->nused[c - 1]) << (6 + k);
	pthread_mutex_unlock(&hp->lock);
	return f;
}

void
hl__heap_reset(struct hl_heap *hp)
{
	pthread_mutex_lock(&hp->lock);
	memset(hp->cls, FREE_CHUNK, hp->nchunks);
	memset(hp->nused, 0, (size_t)hp->nchunks * sizeof(uint32_t));
	memset(hp->bits, 0, (size_t)hp->nchunks * hp->words * sizeof(uint64_t));
	memset(hp->pnext, 0, (size_t)hp->nchunks * sizeof(uint32_t));
	memset(hp->pprev, 0, (size_t)hp->nchunks * sizeof(uint32_t));
	memset(hp->partial, 0, sizeof(hp->partial));
	hp->nfree = 0;
	hp->used = 0;
	pthread_mutex_unlock(&hp->lock);
}

int
hl__heap_mark(struct hl_heap *hp, uint64_t off, uint32_t k)
{
	if (k >= hp->nclasses)
		return -EINVAL;
	if (off < hp->base || off >= hp->base + hp->bytes)
		return -EINVAL;
	uint64_t rel = off - hp->base;
	uint32_t c = (uint32_t)(rel / hp->chunk);
	uint64_t in = rel % hp->chunk;
	if (in & ((64ull << k) - 1))
		return -EINVAL;
	uint32_t b = (uint32_t)(in >> (6 + k));
	pthread_mutex_lock(&hp->lock);
	int rc = 0;
	if (hp->cls[c] != FREE_CHUNK && hp->cls[c] != k) {
		rc = -EPROTO;
		goto out;
	}
	uint64_t *bits = chunk_bits(hp, c);
	if (bits[b / 64] & (1ull << (b % 64))) {
		rc = -EEXIST;
		goto out;
	}
	hp->cls[c] = (uint8_t)k;
	bits[b / 64] |= 1ull << (b % 64);
	hp->nused[c]++;
	hp->used += 64ull << k;
out:
	pthread_mutex_unlock(&hp->lock);
	return rc;
}

void
hl__heap_finish(struct hl_heap *hp)
{
	pthread_mutex_lock(&hp->lock);
	hp->nfree = 0;
	memset(hp->partial, 0, sizeof(hp->partial));
	/* Push free chunks in reverse so that allocation starts at chunk 0
	 * (keeps a young heap compact and its pages warm). */
	for (uint32_t i = hp->nchunks; i-- > 0;) {
		if (hp->cls[i] == FREE_CHUNK)
			hp->free_stack[hp->nfree++] = i;
		else if (hp->nused[i] < blocks_per_chunk(hp, hp->cls[i]))
			partial_push(hp, hp->cls[i], i);
	}
	pthread_mutex_unlock(&hp->lock);
}

int
hl__heap_check(struct hl_heap *hp)
{
	pthread_mutex_lock(&hp->lock);
	uint64_t used = 0, free_b = (uint64_t)hp->nfree * hp->chunk;
	int rc = 0;
	for (uint32_t c = 0; c < hp->nchunks; c++) {
		if (hp->cls[c] == FREE_CHUNK) {
			if (hp->nused[c])
				rc = -EPROTO;
			continue;
		}
		uint32_t k = hp->cls[c], nb = blocks_per_chunk(hp, k), n = 0;
		for (uint32_t w = 0; w < hp->words; w++)
			n += (uint32_t)__builtin_popcountll(chunk_bits(hp, c)[w]);
		if (n != hp->nused[c] || n == 0)
			rc = -EPROTO;
		used += (uint64_t)n << (6 + k);
		free_b += (uint64_t)(nb - n) << (6 + k);
	}
	if (used != hp->used || used + free_b != hp->bytes)
		rc = -EPROTO;
	pthread_mutex_unlock(&hp->lock);
	return rc;
}

int
hl__pool_init(struct hl_pool *p, uint32_t cap)
{
	int rc = hl__pool_init_unfilled(p, cap);
	if (rc == 0)
		hl__pool_finish(p); /* nothing is used yet: every slot is free */
	return rc;
}

int
hl__pool_init_unfilled(struct hl_pool *p, uint32_t cap)
{
	memset(p, 0, sizeof(*p));
	p->cap = cap;
	p->stack = malloc((size_t)cap * sizeof(uint32_t));
	p->used = calloc(((size_t)cap + 64) / 64, sizeof(uint64_t));
	if (!p->stack || !p->used) {
		free(p->stack);
		free(p->used);
		memset(p, 0, sizeof(*p));
		return -ENOMEM;
	}
	pthread_mutex_init(&p->lock, NULL);
	return 0;
}

void
hl__pool_fini(struct hl_pool *p)
{
	if (p->stack)
		pthread_mutex_destroy(&p->lock);
	free(p->stack);
	free(p->used);
	memset(p, 0, sizeof(*p));
}

static int
bit_get(const uint64_t *b, uint32_t i)
{
	return (b[i / 64] >> (i % 64)) & 1u;
}

uint32_t
hl__pool_alloc(struct hl_pool *p)
{
	pthread_mutex_lock(&p->lock);
	uint32_t idx = 0;
	if (p->nfree) {
		idx = p->stack[--p->nfree];
		p->used[idx / 64] |= 1ull << (idx % 64);
		if (p->hwm && idx > atomic_load_explicit(p->hwm, memory_order_relaxed)) {
			atomic_store_explicit(p->hwm, idx, memory_order_relaxed);
			/* The mark before any write of the slot, which the
			 * caller makes after we return (a crash in between
			 * must not leave a written slot above the mark). */
			atomic_thread_fence(memory_order_release);
		}
	}
	pthread_mutex_unlock(&p->lock);
	return idx;
}

int
hl__pool_free(struct hl_pool *p, uint32_t idx)
{
	int rc = -EINVAL;
	pthread_mutex_lock(&p->lock);
	if (idx >= 1 && idx <= p->cap && bit_get(p->used, idx)) {
		p->used[idx / 64] &= ~(1ull << (idx % 64));
		p->stack[p->nfree++] = idx;
		rc = 0;
	}
	pthread_mutex_unlock(&p->lock);
	return rc;
}

uint32_t
hl__pool_used(struct hl_pool *p)
{
	pthread_mutex_lock(&p->lock);
	uint32_t u = p->cap - p->nfree;
	pthread_mutex_unlock(&p->lock);
	return u;
}

int
hl__pool_is_used(struct hl_pool *p, uint32_t idx)
{
	pthread_mutex_lock(&p->lock);
	int u = idx >= 1 && idx <= p->cap && bit_get(p->used, idx);
	pthread_mutex_unlock(&p->lock);
	return u;
}

void
hl__pool_reset(struct hl_pool *p)
{
	pthread_mutex_lock(&p->lock);
	memset(p->used, 0, ((size_t)p->cap + 64) / 64 * sizeof(uint64_t));
	p->nfree = 0;
	pthread_mutex_unlock(&p->lock);
}

int
hl__pool_mark(struct hl_pool *p, uint32_t idx)
{
	int rc = 0;
	pthread_mutex_lock(&p->lock);
	if (idx < 1 || idx > p->cap)
		rc = -EINVAL;
	else if (bit_get(p->used, idx))
		rc = -EEXIST;
	else
		p->used[idx / 64] |= 1ull << (idx % 64);
	pthread_mutex_unlock(&p->lock);
	return rc;
}

void
hl__pool_rebuild(struct hl_pool *p, const uint32_t *reached)
{
	pthread_mutex_lock(&p->lock);
	memset(p->used, 0, ((size_t)p->cap + 64) / 64 * sizeof(uint64_t));
	p->nfree = 0;
	/* As hl__pool_finish(): lowest index on top of the stack. */
	for (uint32_t i = p->cap; i >= 1; i--) {
		if (reached[i - 1])
			p->used[i / 64] |= 1ull << (i % 64);
		else
			p->stack[p->nfree++] = i;
	}
	pthread_mutex_unlock(&p->lock);
}

void
hl__pool_finish(struct hl_pool *p)
{
	pthread_mutex_lock(&p->lock);
	p->nfree = 0;
	/* Lowest index on top: slots are handed out in ascending order, so
	 * observers added together sit together (cache-friendly fan-out). */
	for (uint32_t i = p->cap; i >= 1; i--)
		if (!bit_get(p->used, i))
			p->stack[p->nfree++] = i;
	pthread_mutex_unlock(&p->lock);
}
