/* SPDX-License-Identifier: MIT */
/*
 * ring.h: the single-producer single-consumer byte ring used for requests
 * (client -> worker) and events (worker -> client). Owns record framing,
 * wrap-around and the bounds checks on positions; knows nothing of what a
 * record means.
 *
 * Positions are 64-bit byte counters that only grow; offset = pos & (size-1).
 * head is written only by the producer, tail only by the consumer, and they
 * live in different processes' regions. The side that does not own a
 * position must treat it as untrusted: a producer that reads a tail more than
 * `size` behind its head, or a consumer that reads a head more than `size`
 * ahead of its tail, or a record whose size does not fit, gets -EPROTO and
 * must stop using the ring (never read or write out of bounds).
 *
 * Synchronisation (X = needs external sync, - = free):
 *                     reserve/commit   peek/consume
 *   reserve/commit         X                -
 *   peek/consume           -                X
 *
 * Memory order: commit stores head with release after the record's bytes;
 * peek loads head with acquire (pairs). consume stores tail with release
 * after the record was copied out; reserve loads tail with acquire (pairs),
 * so the producer never overwrites bytes the consumer may still read.
 */
#ifndef HL_RING_H
#define HL_RING_H

#include "layout.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

struct hl_ring {
	_Atomic uint64_t *head;
	_Atomic uint64_t *tail;
	uint8_t *data;
	uint32_t size; /* power of two */
};

/*
 * Reserve N bytes (8-aligned, >= sizeof(struct hl_rec_hdr), <= size/2) at
 * producer position HEAD. On success returns 0, *rec points at the space and
 * *next is the head to commit. A pad record may have been written. Returns
 * -EAGAIN when the ring has no room, -EPROTO when the consumer's tail is
 * impossible.
 */
static inline int
hl__ring_reserve(const struct hl_ring *r, uint64_t head, uint32_t n, void **rec, uint64_t *next)
{
	uint64_t tail = atomic_load_explicit(r->tail, memory_order_acquire);
	uint64_t used = head - tail;
	/* Positions are multiples of 8 (records are 8-aligned, pads run to the
	 * end): an unaligned one is corrupt, and an unaligned head would put
	 * the pad header below across the end of the data area. */
	if (used > r->size || ((head | tail) & 7u))
		return -EPROTO;
	uint32_t off = (uint32_t)(head & (r->size - 1));
	uint32_t to_end = r->size - off;
	if (n <= to_end) {
		if (used + n > r->size)
			return -EAGAIN;
		*rec = r->data + off;
		*next = head + n;
		return 0;
	}
	if (used + to_end + n > r->size)
		return -EAGAIN;
	/* The record would wrap: fill the tail end with a pad record. */
	struct hl_rec_hdr pad = { .size = to_end, .type = HL_REC_PAD, .key_len = 0 };
	memcpy(r->data + off, &pad, sizeof(pad));
	*rec = r->data;
	*next = head + to_end + n;
	return 0;
}

/* Free bytes for the producer at HEAD (0 when the tail is impossible). */
static inline uint64_t
hl__ring_free(const struct hl_ring *r, uint64_t head)
{
	uint64_t tail = atomic_load_explicit(r->tail, memory_order_acquire);
	uint64_t used = head - tail;
	return used > r->size ? 0 : r->size - used;
}

/* Publish everything reserved up to NEXT. */
static inline void
hl__ring_commit(const struct hl_ring *r, uint64_t next)
{
	atomic_store_explicit(r->head, next, memory_order_release);
}

/*
 * The record at consumer position *TAIL, skipping pad records (which
 * advances *tail locally; the caller stores it with hl__ring_consume()).
 * Returns 1 with *rec and *len (the record's bytes in the ring, still
 * shared: copy out before trusting), 0 when empty, -EPROTO when the head or
 * a record header is impossible.
 */
static inline int
hl__ring_peek(const struct hl_ring *r, uint64_t *tail, const uint8_t **rec, uint32_t *len)
{
	uint64_t head = atomic_load_explicit(r->head, memory_order_acquire);
	/* An unaligned tail (a corrupt position) would read the header across
	 * the end of the data area; fuzz_request found it. */
	if (*tail & 7u)
		return -EPROTO;
	for (int pads = 0; pads < 2; pads++) {
		uint64_t avail = head - *tail;
		if (avail == 0)
			return 0;
		if (avail > r->size || (avail & 7u))
			return -EPROTO;
		uint32_t off = (uint32_t)(*tail & (r->size - 1));
		struct hl_rec_hdr h;
		/* One fetch of the header: everything below uses the copy. */
		memcpy(&h, r->data + off, sizeof(h));
		if (h.size < sizeof(h) || (h.size & 7u) || h.size > avail || h.size > r->size - off)
			return -EPROTO;
		if (h.type == HL_REC_PAD) {
			/* A pad always runs to the end of the data area. */
			if (h.size != r->size - off)
				return -EPROTO;
			*tail += h.size;
			continue;
		}
		*rec = r->data + off;
		*len = h.size;
		return 1;
	}
	return -EPROTO;
}

static inline void
hl__ring_consume(const struct hl_ring *r, uint64_t tail)
{
	atomic_store_explicit(r->tail, tail, memory_order_release);
}

#endif /* HL_RING_H */
