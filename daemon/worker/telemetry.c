/* SPDX-License-Identifier: MIT */
/*
 * telemetry.c: the worker's reports about itself: the worker-memory figure
 * in the header (jemalloc's "stats.allocated") and the telemetry keys
 * HL_TELEMETRY_* (documented in include/heirloom/heirloom.h).
 *
 * The monitor thread aggregates the counters; when a telemetry key has an
 * observer and its total moved, it hands one publish to the key's shard
 * thread through a one-slot mailbox, and the shard thread applies it with
 * hl_w_apply(HL_W_EP_SELF): the very path of a client's publish (commit
 * under shard.mu, dispatch under RCU, the pending-dispatch marks that
 * recovery finishes). This file must never write the table from the monitor
 * thread: a key's slot and the event rings of its shard have one writer, the
 * shard thread.
 *
 * A crash loses at most the reports in the mailboxes (process memory); the
 * totals are the segment's own counters, so the next worker's reports carry
 * on from them. Nothing here is needed for the table's correctness.
 *
 * Synchronization (X = needs external sync, - = free):
 *   hl_w_telemetry_init   X (main thread, before the monitor and shards run)
 *   hl_w_telemetry_tick   X (monitor thread only)
 *   hl_w_telemetry_apply  - (each shard thread; touches its own boxes only)
 */
#include "telemetry.h"

#include "apply.h"
#include "heirloom/heirloom.h"
#include "table_read.h"
#include "util.h"
#include "wake.h"

#include <inttypes.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#if HL_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#define LD_RLX(p) atomic_load_explicit((p), memory_order_relaxed)

enum { TEL_DISPATCH, TEL_CLEANUP, TEL_LAGGED, TEL_N };

static const char *const tel_key[TEL_N] = { HL_TELEMETRY_DISPATCH, HL_TELEMETRY_CLEANUP,
	                                    HL_TELEMETRY_LAGGED };

#define TEL_KEY_MAX   32u
#define TEL_VALUE_MAX 64u /* "count=N total=M" with two 20-digit numbers: 53 */
_Static_assert(sizeof(HL_TELEMETRY_DISPATCH) <= TEL_KEY_MAX &&
                       sizeof(HL_TELEMETRY_CLEANUP) <= TEL_KEY_MAX &&
                       sizeof(HL_TELEMETRY_LAGGED) <= TEL_KEY_MAX,
               "telemetry keys fit the mailbox");

#define MEM_PERIOD_NS 1000000000ull

/*
 * One report on its way from the monitor thread to the shard thread that
 * owns the key. `full` hands the box over: the monitor fills req and len
 * and stores 1 (release, pairs with the shard thread's acquire); the shard
 * thread applies the request and stores 0 (release, pairs with the
 * monitor's acquire before it writes req again).
 */
struct tel_box {
	_Atomic uint32_t full;
	uint32_t shard; /* set by init, read-only after */
	uint32_t len;
	int failed;    /* shard thread: a failure was logged (log it once) */
	uint64_t base; /* monitor: the total when the last report was queued */
	alignas(8) uint8_t req[sizeof(struct hl_req) + TEL_KEY_MAX + TEL_VALUE_MAX];
};

/* Telemetry's state in the worker (w->tel), made by hl_w_telemetry_init(). */
struct hl_tel {
	struct tel_box boxes[TEL_N];
	uint64_t next_report_ns, next_mem_ns; /* monitor thread only */
};

/* The counters behind each key (see heirloom.h): sums over shards. */
static void
totals(struct hl_worker *w, uint64_t t[TEL_N])
{
	const struct hl_shm_header *h = w->seg.h;
	t[TEL_DISPATCH] = t[TEL_LAGGED] = 0;
	for (uint32_t s = 0; s < w->nshards; s++) {
		t[TEL_DISPATCH] += LD_RLX(&h->shard[s].c.notifications);
		t[TEL_LAGGED] += LD_RLX(&h->shard[s].c.lagged_drops);
	}
	t[TEL_CLEANUP] = LD_RLX(&h->cleanup_removed);
}

int
hl_w_telemetry_init(struct hl_worker *w)
{
	const struct hl_shm_header *h = w->seg.h;
	if (!w->tel)
		w->tel = calloc(1, sizeof(*w->tel));
	if (!w->tel)
		return -ENOMEM;
	struct tel_box *boxes = w->tel->boxes;
	uint64_t t[TEL_N];
	totals(w, t);
	for (int i = 0; i < TEL_N; i++) {
		size_t len = strlen(tel_key[i]);
		uint64_t hash = hl__hash(tel_key[i], len);
		boxes[i].shard = hl__shard_of_bucket(h, hl__bucket_of(h, hash));
		boxes[i].base = t[i];
		atomic_store_explicit(&boxes[i].full, 0, memory_order_relaxed);
	}
	w->tel->next_report_ns = w->tel->next_mem_ns = 0;
	return 0;
}

/* Whether KEY has an observer now. A lock-free read racing with the shard
 * thread: a wrong answer costs one report too many or one tick of delay. */
static int
observed(struct hl_worker *w, const char *key)
{
	size_t len = strlen(key);
	uint32_t idx;
	if (hl__key_lookup(&w->seg, key, len, hl__hash(key, len), &idx) != 0)
		return 0;
	return LD_RLX(&hl__key(&w->seg, idx)->nobs) > 0;
}

/* Fill box B with a publish of KEY = "count=N total=M". 0, or -EMSGSIZE
 * when the segment's values are too small for it. */
static int
fill_box(struct hl_worker *w, struct tel_box *b, const char *key, uint64_t count, uint64_t total)
{
	char val[TEL_VALUE_MAX];
	int vlen = snprintf(val, sizeof(val), "count=%" PRIu64 " total=%" PRIu64, count, total);
	uint32_t klen = (uint32_t)strlen(key);
	if (vlen < 0 || (uint32_t)vlen >= sizeof(val) || (uint32_t)vlen > w->seg.h->max_value)
		return -EMSGSIZE;
	struct hl_req r = { .h = { .type = HL_REQ_PUBLISH, .key_len = (uint16_t)klen },
		            .val_len = (uint32_t)vlen,
		            .ts_ns = hl__now_ns() };
	r.h.size = hl__rec_align((uint32_t)sizeof(r) + klen + (uint32_t)vlen);
	memset(b->req, 0, sizeof(b->req));
	memcpy(b->req, &r, sizeof(r));
	memcpy(b->req + sizeof(r), key, klen);
	memcpy(b->req + sizeof(r) + klen, val, (size_t)vlen);
	b->len = r.h.size;
	return 0;
}

static void
refresh_memory(struct hl_worker *w)
{
	uint64_t bytes = 0;
#if HL_HAVE_JEMALLOC
	/* jemalloc's statistics are a snapshot taken at each "epoch" write. */
	uint64_t epoch = 1;
	size_t sz = sizeof(epoch);
	size_t allocated = 0, asz = sizeof(allocated);
	if (mallctl("epoch", &epoch, &sz, &epoch, sz) == 0 &&
	    mallctl("stats.allocated", &allocated, &asz, NULL, 0) == 0)
		bytes = allocated;
#endif
	atomic_store_explicit(&w->seg.h->worker_mem_bytes, bytes, memory_order_relaxed);
}

/* Monitor thread, every tick (rate-limited here). */
void
hl_w_telemetry_tick(struct hl_worker *w)
{
	struct hl_tel *tel = w->tel;
	uint64_t now = hl__now_ns();
	if (now >= tel->next_mem_ns) {
		refresh_memory(w);
		tel->next_mem_ns = now + MEM_PERIOD_NS;
	}
	if (w->opt.telemetry_ms <= 0 || now < tel->next_report_ns)
		return;
	tel->next_report_ns = now + (uint64_t)w->opt.telemetry_ms * 1000000ull;
	uint64_t t[TEL_N];
	totals(w, t);
	for (int i = 0; i < TEL_N; i++) {
		struct tel_box *b = &w->tel->boxes[i];
		if (!observed(w, tel_key[i])) {
			b->base = t[i]; /* counts start when someone observes */
			continue;
		}
		/* A report still queued: this one waits for the next tick and
		 * then covers both intervals. */
		if (t[i] == b->base || atomic_load_explicit(&b->full, memory_order_acquire))
			continue;
		if (fill_box(w, b, tel_key[i], t[i] - b->base, t[i]) != 0)
			continue;
		b->base = t[i];
		atomic_store_explicit(&b->full, 1, memory_order_release);
		hl_w_wake_shard(w, b->shard);
	}
}

/* Shard thread, once per round: apply the reports queued for this shard.
 * Returns how many were applied. */
int
hl_w_telemetry_apply(struct hl_shard *sh)
{
	struct hl_worker *w = sh->w;
	int n = 0;
	for (int i = 0; i < TEL_N; i++) {
		struct tel_box *b = &w->tel->boxes[i];
		if (b->shard != sh->id || !atomic_load_explicit(&b->full, memory_order_acquire))
			continue;
		/* Fencing, as for client requests: once the table is not ours
		 * apply nothing (the box stays full: the monitor stops too). */
		if (atomic_load_explicit(&w->seg.h->owner_epoch, memory_order_acquire) != w->epoch)
			return n;
		int64_t result;
		int rc = hl_w_apply(sh, HL_W_EP_SELF, 0, (const struct hl_req *)(void *)b->req,
		                    b->len, &result);
		if (rc && !b->failed)
			hl__log_warn("telemetry: publishing %s failed: %s (reported once)",
			             tel_key[i], hl_strerror(rc));
		b->failed |= rc != 0;
		atomic_store_explicit(&b->full, 0, memory_order_release);
		n++;
	}
	return n;
}
