/* SPDX-License-Identifier: MIT */
/*
 * fuzz_seg.h: the small segment fuzz_attach.c builds in memory and
 * mkseed_attach.c dumps from a real worker's segment: its capacities, and
 * the "windows" (the parts of the segment a recovery pass reads) that the
 * fuzz input is poured into, in order. Shared so that seeds taken from real
 * segments land exactly where the target expects them.
 */
#ifndef HL_FUZZ_SEG_H
#define HL_FUZZ_SEG_H

#include "layout.h"
#include "segment.h"

#include <stddef.h>
#include <stdint.h>

/* The worker's command line for the same capacities (mkseed_attach). */
#define HL_FZ_WORKER_ARGS                                                                          \
	"--max-keys", "8", "--max-observers", "16", "--max-endpoints", "2", "--max-value", "64",   \
	        "--shards", "2", "--heap", "4096", "--req-ring", "2048", "--ev-ring", "2048",      \
	        "--history", "2048"

static inline struct hl_layout_params
hl_fz_params(void)
{
	struct hl_layout_params p = { .max_keys = 8,
		                      .max_observers = 16,
		                      .max_endpoints = 2,
		                      .max_value = 64,
		                      .shards = 2,
		                      .req_ring_bytes = 2048,
		                      .ev_ring_bytes = 2048,
		                      .heap_bytes = 4096,
		                      .hist_bytes = 2048 };
	return p;
}

struct hl_fz_win {
	uint64_t off;
	uint64_t len;
};

#define HL_FZ_MAX_WIN 16

/* The windows of a segment with header H, in input order; returns how many. */
static inline size_t
hl_fz_windows(const struct hl_shm_header *h, struct hl_fz_win *w)
{
	size_t n = 0;
	/* The worker-state counters recovery raises (revision, next id). */
	w[n++] = (struct hl_fz_win){ offsetof(struct hl_shm_header, revision), 16 };
	w[n++] = (struct hl_fz_win){ h->buckets_off,
		                     (uint64_t)h->nbuckets * sizeof(struct hl_shm_bucket) };
	w[n++] = (struct hl_fz_win){ h->keys_off, (uint64_t)h->max_keys * h->key_stride };
	w[n++] = (struct hl_fz_win){ h->observers_off,
		                     (uint64_t)h->max_observers * sizeof(struct hl_shm_observer) };
	w[n++] = (struct hl_fz_win){ h->heap_off, h->heap_bytes };
	/* The history rings: their control lines, then their records. */
	w[n++] =
	        (struct hl_fz_win){ h->hist_off, (uint64_t)h->shards * sizeof(struct hl_shm_hist) };
	w[n++] = (struct hl_fz_win){ h->hist_off + hl__hist_ctl_bytes(h->shards),
		                     (uint64_t)h->shards * h->hist_bytes };
	for (uint32_t ep = 0; ep < h->max_endpoints && n < HL_FZ_MAX_WIN - 1; ep++)
		w[n++] = (struct hl_fz_win){ h->ep_worker_off + (uint64_t)ep * h->ep_worker_stride,
			                     (uint64_t)HL_CACHELINE * (1 + h->shards) };
	w[n++] = (struct hl_fz_win){ h->claims_off,
		                     (uint64_t)h->max_endpoints * sizeof(struct hl_shm_claim) };
	return n;
}

/* Input mode bytes (the first byte of a fuzz_attach input). */
#define HL_FZ_MODE_HEADER  1u /* header bytes + file size -> hl__seg_validate() */
#define HL_FZ_MODE_SEGMENT 0u /* windows of a small segment -> hl_w_recover() */

#endif /* HL_FUZZ_SEG_H */
