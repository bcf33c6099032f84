/* SPDX-License-Identifier: MIT */
/*
 * statefit.c: whether the state in a directory fits a new segment
 * (keeper.h, hl_k_state_fits()). The keeper asks before any worker
 * restores: a state larger than the capacities it was started with is
 * refused at start with the figures to start with, instead of a worker
 * that fails its restore and is restarted with back-off for ever.
 *
 * It replays the files as the worker would (hl__sf_load(): snapshot, then
 * the logs; the last record of a key wins) into a set of key hashes, each
 * with the heap block its value takes. The check is a lower bound: a
 * state it passes may still not fit (a heap fragmented by class), and the
 * worker's restore then fails as before; one it refuses cannot fit. Two
 * keys with one 64-bit hash would count once: a smaller figure, the same
 * direction.
 */
#include "keeper.h"

#include "alloc.h"
#include "statefile.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fit_slot {
	uint64_t hash;  /* 0 = empty */
	uint32_t klass; /* heap class of the value block + 1; 0 = deleted */
};

struct fit {
	struct fit_slot *t;
	uint64_t cap, used, live;
	uint32_t chunk;                        /* the heap's chunk size */
	int too_big;                           /* a value no block holds */
	uint64_t class_bytes[HL_HEAP_CLASSES]; /* bytes of blocks per class */
	uint32_t max_val;                      /* largest value seen */
	int nomem;
};

static uint64_t
fnv1a(const uint8_t *p, uint32_t n)
{
	uint64_t x = 0xcbf29ce484222325ull;
	for (uint32_t i = 0; i < n; i++)
		x = (x ^ p[i]) * 0x100000001b3ull;
	return x ? x : 1; /* 0 marks an empty slot */
}

static struct fit_slot *
slot_of(struct fit *f, uint64_t hash)
{
	uint64_t i = hash & (f->cap - 1);
	while (f->t[i].hash && f->t[i].hash != hash)
		i = (i + 1) & (f->cap - 1);
	return &f->t[i];
}

static int
grow(struct fit *f)
{
	uint64_t ncap = f->cap ? f->cap * 2 : 4096;
	struct fit_slot *old = f->t;
	uint64_t ocap = f->cap;
	f->t = calloc(ncap, sizeof(*f->t));
	if (!f->t) {
		f->t = old;
		return -ENOMEM;
	}
	f->cap = ncap;
	for (uint64_t i = 0; i < ocap; i++)
		if (old[i].hash)
			*slot_of(f, old[i].hash) = old[i];
	free(old);
	return 0;
}

static int
one(const struct hl_sf_rec *r, void *arg)
{
	struct fit *f = arg;
	if (r->key_len >= sizeof(HL_SYS_PREFIX) - 1 &&
	    memcmp(r->key, HL_SYS_PREFIX, sizeof(HL_SYS_PREFIX) - 1) == 0)
		return 0; /* never restored (restore.c) */
	if ((f->used + 1) * 2 > f->cap && grow(f) < 0) {
		f->nomem = 1;
		return -ENOMEM;
	}
	uint64_t hash = fnv1a(r->key, r->key_len);
	struct fit_slot *s = slot_of(f, hash);
	if (!s->hash) {
		s->hash = hash;
		f->used++;
	}
	if (s->klass) {
		f->class_bytes[s->klass - 1] -= 64ull << (s->klass - 1);
		f->live--;
		s->klass = 0;
	}
	if (r->type != HL_SF_DEL) {
		int k = hl__heap_class_in(f->chunk,
		                          sizeof(struct hl_shm_value) + r->meta_len + r->val_len);
		if (k < 0) {
			f->too_big = 1; /* reported by the caller; not counted */
			return 0;
		}
		s->klass = (uint32_t)k + 1;
		f->class_bytes[k] += 64ull << k;
		f->live++;
		if (r->val_len > f->max_val)
			f->max_val = r->val_len;
	}
	return 0;
}

int
hl_k_state_fits(const char *dir, const struct hl_shm_header *h, char *why, size_t len)
{
	struct fit f = { .chunk = h->heap_chunk };
	struct hl_sf_info info;
	char err[256];
	why[0] = 0;
	int rc = hl__sf_load(dir, one, &f, &info, err, sizeof(err));
	if (rc) {
		if (f.nomem)
			snprintf(why, len, "no memory to count the keys in %s", dir);
		free(f.t);
		return f.nomem ? -ENOMEM : 0; /* a file that does not check: said elsewhere */
	}
	/* Whole chunks per class in use: a lower bound of the heap it takes. */
	uint64_t heap = 0;
	for (uint32_t k = 0; k < HL_HEAP_CLASSES; k++)
		if (f.class_bytes[k])
			heap += (f.class_bytes[k] + h->heap_chunk - 1) / h->heap_chunk *
			        h->heap_chunk;
	free(f.t);
	if (f.too_big)
		snprintf(why, len,
		         "a value larger than the heap's largest block (%" PRIu32 " bytes)",
		         h->heap_chunk);
	else if (f.max_val > h->max_value)
		snprintf(why, len, "a value of %" PRIu32 " bytes, above --max-value %" PRIu32,
		         f.max_val, h->max_value);
	else if (f.live > h->max_keys)
		snprintf(why, len, "%" PRIu64 " keys, above --max-keys %" PRIu32, f.live,
		         h->max_keys);
	else if (heap > h->heap_bytes)
		snprintf(why, len,
		         "values taking at least %" PRIu64 " bytes of heap, above --heap %" PRIu64,
		         heap, (uint64_t)h->heap_bytes);
	return why[0] ? -ENOSPC : 0;
}
