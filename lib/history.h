/* SPDX-License-Identifier: MIT */
/*
 * history.h: reading a shard's history ring (layout.h, "history") from a
 * read-only mapping, with no help from the worker: libheirloom's resume
 * and catch-up (client.c) and heirloomctl. Owns the reader's half of the
 * ring's protocol; the writer is daemon/worker/history.c. Never trusts a
 * byte of the ring: positions and record framing are bounds-checked, and a
 * record is used only after the tail check says no byte of it was
 * overwritten while it was copied.
 *
 * Synchronisation: any number of readers, in any process, never blocking
 * the writer. A reader that falls behind (the writer evicted the record it
 * was about to read) is told so and decides from floor_rev what it lost.
 */
#ifndef HL_HISTORY_H
#define HL_HISTORY_H

#include "heirloom/heirloom.h"
#include "segment.h"
#include "util.h"

#include <errno.h>
#include <stdatomic.h>

#define HL_HIST_OK     1    /* a record copied into the buffer; *pos is past it */
#define HL_HIST_END    0    /* *pos is the head: nothing more yet */
#define HL_HIST_BEHIND (-1) /* *pos was evicted: restart at the tail */

/* The oldest position still readable and the floor that goes with it
 * (every change of the shard above *floor is at or after *tail). */
static inline void
hl__hist_tail(const struct hl_seg *s, uint32_t shard, uint64_t *tail, uint64_t *floor)
{
	struct hl_shm_hist *hc = hl__hist(s, shard);
	/* Acquire: the floor stored before this tail (history.c). */
	*tail = atomic_load_explicit(&hc->tail, memory_order_acquire);
	*floor = atomic_load_explicit(&hc->floor_rev, memory_order_relaxed);
}

/*
 * Copy the record at *POS of SHARD's ring into BUF (CAP bytes, at least
 * hl__hist_rec_bytes() of the largest record), skipping pads. Returns
 * HL_HIST_OK with *pos past the record, HL_HIST_END, HL_HIST_BEHIND, or
 * HL_ECORRUPT when the ring holds what no writer writes.
 */
static inline int
hl__hist_read(const struct hl_seg *s, uint32_t shard, uint64_t *pos, uint8_t *buf, uint32_t cap)
{
	struct hl_shm_hist *hc = hl__hist(s, shard);
	const uint8_t *data = hl__hist_data(s, shard);
	const uint64_t size = s->h->hist_bytes;
	for (int pads = 0; pads < 2; pads++) {
		/* Acquire: the record's bytes before the head that covers them. */
		uint64_t head = atomic_load_explicit(&hc->head, memory_order_acquire);
		uint64_t tail = atomic_load_explicit(&hc->tail, memory_order_acquire);
		uint64_t p = *pos;
		if (p < tail)
			return HL_HIST_BEHIND;
		if (p >= head)
			return p == head ? HL_HIST_END : HL_ECORRUPT;
		if (head - tail > size || (p & 7u))
			return HL_ECORRUPT;
		uint64_t off = p & (size - 1);
		struct hl_hist_rec r;
		hl__racy_copy_out(&r.h, data + off, sizeof(r.h));
		uint32_t n = r.h.size;
		int bad = n < sizeof(r.h) || (n & 7u) || n > size - off || n > head - p;
		if (!bad && r.h.type == HL_REC_PAD)
			bad = n != size - off;
		else if (!bad)
			bad = n < sizeof(r) || n > cap;
		if (!bad && r.h.type != HL_REC_PAD)
			hl__racy_copy_out(buf, data + off, n);
		/* The seqlock check: no byte copied above was overwritten if
		 * the tail is still at or before P (pairs with the release
		 * fence after the writer's tail store). */
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&hc->tail, memory_order_relaxed) > p)
			return HL_HIST_BEHIND;
		if (bad)
			return HL_ECORRUPT;
		if (r.h.type == HL_REC_PAD) {
			*pos = p + n;
			continue;
		}
		memcpy(&r, buf, sizeof(r));
		if ((r.h.type != HL_EVR_PUT && r.h.type != HL_EVR_DELETE) || r.h.key_len == 0 ||
		    r.h.key_len > HL_KEY_MAX || r.meta_len > HL_META_MAX ||
		    r.val_len > s->h->max_value ||
		    (r.h.type == HL_EVR_DELETE && (r.val_len || r.meta_len)) ||
		    hl__hist_rec_bytes(r.h.key_len, r.meta_len, r.val_len) != n)
			return HL_ECORRUPT;
		*pos = p + n;
		return HL_HIST_OK;
	}
	return HL_ECORRUPT;
}

#endif /* HL_HISTORY_H */
