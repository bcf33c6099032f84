/* SPDX-License-Identifier: MIT */
/*
 * fuzz_request.c: the worker's request decoder on arbitrary ring contents.
 *
 * Everything here is client-writable in a real segment: the ring bytes, the
 * producer position (req_head) and, through the consumer's view of it, any
 * pairing of head and tail. The target runs what shard.c's drain() runs on
 * them: hl__ring_peek(), one copy out, hl_w_check_req() on the copy (the
 * code the worker links, daemon/worker/request.c), then the pointer
 * arithmetic of hl_w_apply() on an accepted copy; and, on the other side of
 * the ring, hl__ring_reserve() against a client-written tail (what
 * deliver_ep() does with an event ring).
 *
 * Input: 16 bytes of parameters, then the ring image.
 *   [0]      shards - 1 (mod 64)        [1]   max_value choice
 *   [2..9]   consumer tail (u64)        [10..13] head - tail (u32)
 *   [14]     shard being drained        [15]  bytes the producer asks for
 *   [16..]   ring bytes, written from the tail's offset on, wrapping
 * Oracles: ASan/UBSan on exactly-sized buffers, and asserts on what an
 * accepted record must satisfy.
 */
#include "heirloom/heirloom.h"
#include "layout.h"
#include "request.h"
#include "ring.h"
#include "segment.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Where the bytes read are summed, so that reading them is not optimised out. */
extern volatile unsigned hl_fz_sink;
volatile unsigned hl_fz_sink;

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		if (!(x))                                                                          \
			abort();                                                                   \
	} while (0)

static const uint32_t value_choices[] = { 0, 1, 64, 4096, HL_VALUE_MAX_LIMIT };

static uint64_t
rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static uint32_t
rd32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

/* What hl_w_apply() does with an accepted copy: carve key, meta and value
 * out of it and read them. Every byte must lie inside the copy. */
static unsigned
use_request(const struct hl_shm_header *h, uint32_t shard, const struct hl_req *r, uint32_t len)
{
	const uint8_t *key = (const uint8_t *)(r + 1);
	const uint8_t *meta = key + r->h.key_len;
	const uint8_t *val = meta + r->meta_len;
	CHECK((size_t)(val + r->val_len - (const uint8_t *)r) <= len);
	CHECK(r->h.key_len <= HL_KEY_MAX && r->meta_len <= HL_META_MAX &&
	      r->val_len <= h->max_value);
	unsigned sum = 0;
	for (uint32_t i = 0; i < r->h.key_len; i++)
		sum += key[i];
	for (uint32_t i = 0; i < r->meta_len; i++)
		sum += meta[i];
	for (uint32_t i = 0; i < r->val_len; i++)
		sum += val[i];
	switch (r->h.type) {
	case HL_REQ_PUBLISH:
	case HL_REQ_DELETE:
	case HL_REQ_PUBLISH_IF:
	case HL_REQ_DELETE_IF:
	case HL_REQ_OBSERVE:
		CHECK(r->h.key_len > 0);
		CHECK(hl__shard_of_bucket(h, hl__bucket_of(h, hl__hash(key, r->h.key_len))) ==
		      shard);
		break;
	case HL_REQ_UNOBSERVE: {
		/* apply_unobserve()'s decoding of the client-chosen id. */
		uint32_t slot = (uint32_t)(r->arg & 0xffffffu);
		if (slot >= 1 && slot <= h->max_observers)
			sum += slot;
		break;
	}
	case HL_REQ_CLOSE: break;
	case HL_REQ_WAKEFD:
		/* hl_fd()'s request: the header alone, on shard 0. */
		CHECK(shard == 0 && r->h.key_len == 0 && r->meta_len == 0 && r->val_len == 0);
		break;
	default: abort(); /* hl_w_check_req() accepted an unknown type */
	}
	return sum;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 16)
		return 0;
	struct hl_layout_params p = {
		.max_keys = 64,
		.max_observers = 64,
		.max_endpoints = 1,
		.max_value = value_choices[data[1] % HL_ARRAY_SIZE(value_choices)],
		.shards = 1u + data[0] % HL_SHARDS_MAX,
		.heap_bytes = 1u << 20,
	};
	if (p.max_value == 0)
		p.max_value = 1; /* 0 means "default" to hl__layout_defaults() */
	static struct hl_shm_header h;
	CHECK(hl__layout_defaults(&p) == 0 && hl__layout_compute(&p, &h) == 0);
	const uint32_t rsize = h.req_ring_bytes;
	uint64_t tail = rd64(data + 2);
	uint64_t head = tail + rd32(data + 10);
	uint32_t shard = data[14] % h.shards;
	uint32_t want = hl__rec_align(sizeof(struct hl_rec_hdr) + 8u * data[15]);

	/* Exactly-sized heap buffers: any access past them is an ASan report. */
	uint8_t *ring = calloc(1, rsize);
	uint8_t *copy = NULL;
	CHECK(ring);
	size_t n = size - 16;
	for (size_t i = 0; i < n && i < rsize; i++)
		ring[(tail + i) & (rsize - 1)] = data[16 + i];
	_Atomic uint64_t ahead = head, atail = tail;
	struct hl_ring r = { .head = &ahead, .tail = &atail, .data = ring, .size = rsize };

	/* Consumer: drain() on the ring. */
	uint64_t pos = tail;
	for (int k = 0; k < 4096; k++) {
		const uint8_t *rec;
		uint32_t len;
		uint64_t at = pos;
		int rc = hl__ring_peek(&r, &at, &rec, &len);
		if (rc <= 0)
			break;
		CHECK(len >= sizeof(struct hl_rec_hdr) && len <= rsize && !(len & 7u));
		CHECK(rec >= ring && rec + len <= ring + rsize);
		CHECK(at - pos < rsize && head - at >= len);
		free(copy);
		copy = malloc(len);
		CHECK(copy);
		memcpy(copy, rec, len);
		const struct hl_req *req = (const struct hl_req *)(void *)copy;
		if (hl_w_check_req(&h, shard, req, len) != 0)
			break; /* the worker bans the endpoint here */
		hl_fz_sink += use_request(&h, shard, req, len);
		pos = at + len;
	}

	/* Producer: reserve against the same client-written tail. */
	void *space;
	uint64_t next;
	if (want <= rsize / 2 && hl__ring_reserve(&r, head, want, &space, &next) == 0) {
		CHECK((uint8_t *)space >= ring && (uint8_t *)space + want <= ring + rsize);
		CHECK(next - head >= want && next - tail <= rsize);
		memset(space, 0xa5, want);
	}
	(void)hl__ring_free(&r, head);
	free(copy);
	free(ring);
	return 0;
}
