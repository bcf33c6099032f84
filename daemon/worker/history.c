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

#include "../../lib/history.h" /* the reader, for hl_w_hist_scan() */

#include "log.h"
#include "util.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LD_RLX(p)    atomic_load_explicit((p), memory_order_relaxed)
#define ST_RLX(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)

void
hl_w_hist_append(struct hl_shard *sh, const struct hl_w_hist_src *s)
{
	struct hl_worker *w = sh->w;
	if (s->rev <= sh->hist_last)
		return; /* appended before the crash that left it pending */
	if (__builtin_expect(atomic_load_explicit(&sh->hist_bad, memory_order_relaxed), 0))
		hl_w_hist_empty(sh, "recovery's scan found damage");
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
		/* The oldest record, checked as recovery no longer does (a
		 * bad size would take the tail anywhere): damage empties the
		 * ring (no crash leaves a ring like that). */
		uint64_t toff = tail & (size - 1);
		struct hl_hist_rec r;
		int bad = size - toff < sizeof(r.h);
		if (!bad) {
			memcpy(&r.h, data + toff, sizeof(r.h));
			bad = r.h.size < sizeof(r.h) || (r.h.size & 7u) || r.h.size > size - toff ||
			      r.h.size > head - tail ||
			      (r.h.type == HL_REC_PAD ? r.h.size != size - toff
			                              : r.h.size < sizeof(r));
		}
		if (!bad && r.h.type != HL_REC_PAD) {
			memcpy(&r, data + toff, sizeof(r));
			bad = r.rev <= floor || r.rev > sh->hist_last;
		}
		if (bad) {
			hl_w_hist_empty(sh, "damaged record at its tail");
			hl_w_hist_append(sh, s);
			return;
		}
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
	/* Where the ring will end, for recovery (layout.h, last_pos): the
	 * last committed revision first, then this record. Signal fences:
	 * only the compiler could reorder them, and a crash sees program
	 * order (a killed thread's stores all land). */
	ST_RLX(&hc->prev_rev, sh->hist_last);
	atomic_signal_fence(memory_order_seq_cst);
	ST_RLX(&hc->last_pos, start);
	ST_RLX(&hc->last_rev, s->rev);
	hl_w_crash_point(w); /* end noted, not committed: prev_rev is the last */
	/* COMMIT of the append (release: the record's bytes and the notes
	 * above first; pairs with the acquire of head in hl__hist_read()). */
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

void
hl_w_hist_empty(struct hl_shard *sh, const char *why)
{
	struct hl_worker *w = sh->w;
	struct hl_shm_hist *hc = hl__hist(&w->seg, sh->id);
	/* Everything up to the last revision appended counts as gone, so a
	 * reader that needed any of it is told "compacted", never misled. */
	uint64_t head = sh->hist_head;
	ST_RLX(&hc->floor_rev, sh->hist_last);
	ST_RLX(&hc->head, head);
	atomic_store_explicit(&hc->tail, head, memory_order_release);
	atomic_thread_fence(memory_order_release); /* as an eviction's (append) */
	atomic_store_explicit(&sh->hist_bad, 0, memory_order_relaxed);
	hl__log("history of shard %u: %s; emptied (compacted to revision %llu)", sh->id, why,
	        (unsigned long long)sh->hist_last);
}

/* Shard S's ring: where it ends and its last revision, from the notes of
 * the last append (layout.h, last_pos) and one record: O(1), whatever the
 * ring holds. 0, or -1 when the positions or that record are not what any
 * crash leaves (damage). */
static int
find_end(struct hl_worker *w, uint32_t shard, uint64_t *head_out, uint64_t *last)
{
	struct hl_shm_hist *hc = hl__hist(&w->seg, shard);
	const uint8_t *data = hl__hist_data(&w->seg, shard);
	const uint64_t size = w->seg.h->hist_bytes;
	uint64_t head = LD_RLX(&hc->head), tail = LD_RLX(&hc->tail);
	uint64_t floor = LD_RLX(&hc->floor_rev);
	*head_out = head;
	if (head - tail > size || tail > head || ((head | tail) & 7u))
		return -1;
	if (head == tail) {
		*last = floor; /* empty, or every record evicted */
		return 0;
	}
	uint64_t pos = LD_RLX(&hc->last_pos), rev = LD_RLX(&hc->last_rev);
	if (pos >= head) {
		/* Killed between the notes and the commit: the record before
		 * is the last (its revision was noted first). */
		uint64_t prev = LD_RLX(&hc->prev_rev);
		if (prev < floor || pos - head >= size)
			return -1;
		*last = prev;
		return 0;
	}
	uint64_t off = pos & (size - 1);
	struct hl_hist_rec r;
	if (pos < tail || (pos & 7u) || head - pos > size || size - off < sizeof(r))
		return -1;
	memcpy(&r, data + off, sizeof(r));
	if (r.h.type == HL_REC_PAD || r.h.size != head - pos || r.rev != rev || rev <= floor)
		return -1;
	*last = rev;
	return 0;
}

uint64_t
hl_w_hist_recover(struct hl_worker *w)
{
	uint64_t repairs = 0;
	for (uint32_t s = 0; s < w->seg.h->shards; s++) {
		struct hl_shard *sh = &w->shards[s];
		uint64_t head, last;
		atomic_store_explicit(&sh->hist_bad, 0, memory_order_relaxed);
		if (find_end(w, s, &head, &last) == 0) {
			sh->hist_head = head;
			sh->hist_last = last;
			continue;
		}
		/* Damage: drop its records, up to the table's revision. */
		sh->hist_head = head & ~(uint64_t)7u;
		sh->hist_last = LD_RLX(&w->seg.h->revision);
		hl_w_hist_empty(sh, "damaged ends");
		repairs++;
	}
	return repairs;
}

uint64_t
hl_w_hist_scan(struct hl_worker *w)
{
	uint64_t bad = 0;
	const uint32_t cap = hl__hist_rec_bytes(HL_KEY_MAX, HL_META_MAX, w->seg.h->max_value);
	uint8_t *buf = malloc(cap);
	if (!buf)
		return 0; /* unchecked: the shard threads' eviction still checks */
	for (uint32_t s = 0; s < w->seg.h->shards; s++) {
		struct hl_shard *sh = &w->shards[s];
		uint64_t pos, floor;
		hl__hist_tail(&w->seg, s, &pos, &floor);
		uint64_t prev = floor;
		int restarts = 0;
		/* As a client reads it: the shard thread may append (and
		 * evict) meanwhile; a record overwritten while read is not
		 * judged (BEHIND: start again at the new tail). */
		for (;;) {
			int rc = hl__hist_read(&w->seg, s, &pos, buf, cap);
			if (rc == HL_HIST_END)
				break;
			if (rc == HL_HIST_BEHIND) {
				if (++restarts > 8)
					break; /* evicted faster than read: the append checks */
				hl__hist_tail(&w->seg, s, &pos, &floor);
				prev = floor;
				continue;
			}
			uint64_t rev = 0;
			if (rc == HL_HIST_OK)
				memcpy(&rev, buf + offsetof(struct hl_hist_rec, rev), sizeof(rev));
			if (rc != HL_HIST_OK || rev <= prev) {
				atomic_store_explicit(&sh->hist_bad, 1, memory_order_relaxed);
				bad++;
				break;
			}
			prev = rev;
		}
	}
	free(buf);
	return bad;
}

void
hl_w_hist_fix(struct hl_worker *w)
{
	for (uint32_t s = 0; s < w->seg.h->shards; s++)
		if (atomic_load_explicit(&w->shards[s].hist_bad, memory_order_relaxed))
			hl_w_hist_empty(&w->shards[s], "recovery's scan found damage");
}
