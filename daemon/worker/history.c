/* SPDX-License-Identifier: MIT */
/*
 * history.c: the per-shard history rings (history.h): appending a change,
 * and their check after a crash. Owns nothing else; clients read the rings
 * on their own (lib/history.h) and never wait for this code.
 *
 * One writer per ring: the shard's thread (recovery's part 1 before it
 * runs). An append happens in hl_w_dispatch_pending(), after the change's
 * commit and before its events: so a change an observer sees in its event
 * ring is already in the history (lossless catch-up relies on it), and a
 * change whose append a SIGKILL interrupted is still a pending dispatch in
 * the table (apply.c), which recovery finishes, appending it then. A shard
 * has at most one pending dispatch at a crash, the newest change of the
 * shard, so appends stay in revision order.
 */
#include "history.h"

#include "log.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

#define LD_RLX(p)    atomic_load_explicit((p), memory_order_relaxed)
#define ST_RLX(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)

void
hl_w_hist_append(struct hl_shard *sh, const struct hl_w_hist_src *s)
{
	struct hl_worker *w = sh->w;
	if (s->rev <= sh->hist_last)
		return; /* appended before the crash that left it pending */
	struct hl_shm_hist *hc = hl__hist(&w->seg, sh->id);
	uint8_t *data = hl__hist_data(&w->seg, sh->id);
	const uint64_t size = w->seg.h->hist_bytes;
	uint32_t n = hl__hist_rec_bytes(s->key_len, s->meta_len, s->val_len);
	uint64_t head = sh->hist_head;
	uint64_t off = head & (size - 1), to_end = size - off;
	/* The record never wraps: past the end it starts at offset 0, after a
	 * pad that fills the rest. */
	uint64_t start = n <= to_end ? head : head + to_end;
	uint64_t end = start + n;
	uint64_t tail = LD_RLX(&hc->tail), floor = LD_RLX(&hc->floor_rev);
	int evicted = 0;
	while (end - tail > size) {
		struct hl_hist_rec r;
		memcpy(&r, data + (tail & (size - 1)), sizeof(r));
		if (r.h.type != HL_REC_PAD)
			floor = r.rev;
		tail += r.h.size;
		evicted = 1;
	}
	if (evicted) {
		/* Readers load tail (acquire), then floor_rev: a tail they see
		 * comes with a floor at least this one. */
		ST_RLX(&hc->floor_rev, floor);
		atomic_store_explicit(&hc->tail, tail, memory_order_release);
		/* The seqlock's opening fence: a reader that copies any byte
		 * written below also sees this tail when it checks (pairs with
		 * the acquire fence in hl__hist_read()). */
		atomic_thread_fence(memory_order_release);
		hl_w_crash_point(w); /* evicted, nothing written: only older records lost */
	}
	if (start != head) {
		struct hl_rec_hdr pad = { .size = (uint32_t)to_end, .type = HL_REC_PAD };
		hl__racy_copy_in(data + off, &pad, sizeof(pad));
	}
	/* The whole record is assembled in the shard's buffer and stored in
	 * words: the key, meta and value lengths are unaligned. */
	struct hl_hist_rec r = {
		.h = { .size = n, .type = s->type, .key_len = (uint16_t)s->key_len },
		.rev = s->rev,
		.val_len = s->val_len,
		.meta_len = (uint16_t)s->meta_len,
		.pub_pid = s->pub_pid,
		.ts_ns = s->ts,
	};
	uint8_t *b = sh->hist_buf;
	memcpy(b, &r, sizeof(r));
	uint32_t at = sizeof(r);
	memcpy(b + at, s->key, s->key_len);
	at += s->key_len;
	if (s->meta_len)
		memcpy(b + at, s->meta, s->meta_len);
	at += s->meta_len;
	if (s->val_len)
		memcpy(b + at, s->val, s->val_len);
	at += s->val_len;
	memset(b + at, 0, n - at);
	hl__racy_copy_in(data + (start & (size - 1)), b, n);
	hl_w_crash_point(w); /* written, not committed: recovery appends it again */
	/* COMMIT of the append (release: the record's bytes first; pairs
	 * with the acquire of head in hl__hist_read()). */
	atomic_store_explicit(&hc->head, end, memory_order_release);
	atomic_fetch_add_explicit(&hc->appends, 1, memory_order_relaxed);
	sh->hist_head = end;
	sh->hist_last = s->rev;
	hl_w_crash_point(w); /* appended, events not written yet */
}

/* Shard SH's ring checked from tail to head; 0 if it holds, else -1. The
 * last record's revision goes to *last (0 when empty). */
static int
check_ring(struct hl_worker *w, uint32_t shard, uint64_t *last)
{
	struct hl_shm_hist *hc = hl__hist(&w->seg, shard);
	const uint8_t *data = hl__hist_data(&w->seg, shard);
	const uint64_t size = w->seg.h->hist_bytes;
	uint64_t head = LD_RLX(&hc->head), tail = LD_RLX(&hc->tail);
	*last = 0;
	if (head - tail > size || tail > head || ((head | tail) & 7u))
		return -1;
	uint64_t prev = LD_RLX(&hc->floor_rev);
	while (tail < head) {
		uint64_t off = tail & (size - 1);
		struct hl_hist_rec r;
		if (size - off < sizeof(struct hl_rec_hdr))
			return -1;
		memcpy(&r.h, data + off, sizeof(r.h));
		if (r.h.size < sizeof(r.h) || (r.h.size & 7u) || r.h.size > size - off ||
		    r.h.size > head - tail)
			return -1;
		if (r.h.type == HL_REC_PAD) {
			if (r.h.size != size - off)
				return -1;
			tail += r.h.size;
			continue;
		}
		if (r.h.size < sizeof(r))
			return -1;
		memcpy(&r, data + off, sizeof(r));
		if ((r.h.type != HL_EVR_PUT && r.h.type != HL_EVR_DELETE) || r.h.key_len == 0 ||
		    r.h.key_len > HL_KEY_MAX || r.meta_len > HL_META_MAX ||
		    r.val_len > w->seg.h->max_value ||
		    hl__hist_rec_bytes(r.h.key_len, r.meta_len, r.val_len) != r.h.size ||
		    r.rev <= prev)
			return -1;
		prev = r.rev;
		*last = r.rev;
		tail += r.h.size;
	}
	return 0;
}

int
hl_w_hist_check(struct hl_worker *w, char *msg, size_t len)
{
	for (uint32_t s = 0; s < w->seg.h->shards; s++) {
		const struct hl_shard *sh = &w->shards[s];
		uint64_t last;
		if (check_ring(w, s, &last)) {
			snprintf(msg, len, "history of shard %u: bad ring", s);
			return -EPROTO;
		}
		if (LD_RLX(&hl__hist(&w->seg, s)->head) != sh->hist_head ||
		    (last && last != sh->hist_last)) {
			snprintf(msg, len, "history of shard %u: ends at %llu, last appended %llu",
			         s, (unsigned long long)last, (unsigned long long)sh->hist_last);
			return -EPROTO;
		}
	}
	return 0;
}

uint64_t
hl_w_hist_recover(struct hl_worker *w)
{
	uint64_t repairs = 0;
	for (uint32_t s = 0; s < w->seg.h->shards; s++) {
		struct hl_shard *sh = &w->shards[s];
		struct hl_shm_hist *hc = hl__hist(&w->seg, s);
		uint64_t last;
		if (check_ring(w, s, &last) == 0) {
			sh->hist_head = LD_RLX(&hc->head);
			sh->hist_last = last ? last : LD_RLX(&hc->floor_rev);
			continue;
		}
		/* Damage (no crash leaves a ring like this): drop its records.
		 * Everything up to the table's revision counts as gone, so a
		 * reader that needed any of it is told, never misled. */
		uint64_t head = LD_RLX(&hc->head) & ~(uint64_t)7u;
		uint64_t rev = LD_RLX(&w->seg.h->revision);
		ST_RLX(&hc->floor_rev, rev);
		ST_RLX(&hc->head, head);
		atomic_store_explicit(&hc->tail, head, memory_order_release);
		sh->hist_head = head;
		sh->hist_last = rev;
		repairs++;
		hl__log("recovery: history of shard %u was damaged; emptied (compacted to "
		        "revision %llu)",
		        s, (unsigned long long)rev);
	}
	return repairs;
}
