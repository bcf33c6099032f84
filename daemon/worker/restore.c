/* SPDX-License-Identifier: MIT */
/*
 * restore.c: the table from the state directory (restore.h). Owns the
 * order of a restore and nothing else: the file format is statefile.c's,
 * each key's write is apply.c's. It runs once per segment, before the
 * worker serves, so it takes no care of clients or observers (there are
 * none to restore: their processes are gone).
 */
#include "restore.h"

#include "apply.h"
#include "statefile.h"
#include "util.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct restore {
	struct hl_worker *w;
	uint64_t applied;
	long delay_us; /* test hook: a slow restore, to be killed in the middle */
};

static int
one(const struct hl_sf_rec *r, void *arg)
{
	struct restore *x = arg;
	if (r->key_len >= sizeof(HL_SYS_PREFIX) - 1 &&
	    memcmp(r->key, HL_SYS_PREFIX, sizeof(HL_SYS_PREFIX) - 1) == 0)
		return 0; /* the worker's own keys: never saved, never restored */
	if (r->val_len > x->w->seg.h->max_value) {
		hl__log_err("restore: a value of %u bytes is larger than this segment's "
		            "max-value (%u): start the keeper with --max-value %u or more",
		            r->val_len, x->w->seg.h->max_value, r->val_len);
		return -EMSGSIZE;
	}
	int rc = hl_w_apply_restored(x->w, r->type == HL_SF_DEL, r->from_log, r->key, r->key_len,
	                             r->meta, r->meta_len, r->val, r->val_len, r->rev);
	if (rc == -ENOSPC)
		hl__log_err("restore: the segment is full (keys %u, heap %" PRIu64
		            " bytes): start the keeper with larger --max-keys / --heap",
		            x->w->seg.h->max_keys, (uint64_t)x->w->seg.h->heap_bytes);
	/* A long restore is progress, not a hang: the keeper's watchdog
	 * reads these beats (as liveness.c's hl_w_beats_reset() sets them
	 * at attach; no thread of ours beats yet). */
	if (__builtin_expect(x->delay_us > 0, 0) && (x->applied & 63) == 0)
		usleep((useconds_t)x->delay_us);
	if ((++x->applied & 16383) == 0) {
		struct hl_shm_header *h = x->w->seg.h;
		uint64_t now = hl__coarse_ns();
		for (uint32_t s = 0; s < h->shards && s < HL_SHARDS_MAX; s++)
			atomic_store_explicit(&h->shard[s].beat_ns, now, memory_order_relaxed);
		atomic_store_explicit(&h->monitor_beat_ns, now, memory_order_relaxed);
	}
	return rc;
}

int
hl_w_restore(struct hl_worker *w)
{
	struct hl_shm_header *h = w->seg.h;
	uint32_t flag = atomic_load_explicit(&h->dur_restore, memory_order_acquire);
	if (!flag)
		return 0;
	char dir[HL_STATE_DIR_MAX], err[512];
	memcpy(dir, h->state_dir, sizeof(dir));
	/* The keeper writes 1 and an absolute, terminated path; anything
	 * else is damage to the header, which recovery repairs like any
	 * other: no restore, said once. */
	if (flag != 1 || dir[0] != '/' || !memchr(dir, 0, sizeof(dir))) {
		hl__log_warn("the header asks for a restore but its durability fields are "
		             "damaged (flag %u): ignored, serving the table as it is",
		             flag);
		atomic_store_explicit(&h->dur_restore, 0, memory_order_release);
		return 0;
	}
	const char *delay = getenv("HEIRLOOM_TEST_RESTORE_DELAY_US");
	struct restore x = { .w = w, .delay_us = delay ? atol(delay) : 0 };
	struct hl_sf_info info;
	uint64_t t0 = hl__now_ns();
	int rc = hl__sf_load(dir, one, &x, &info, err, sizeof(err));
	if (rc) {
		hl__log_err("restore from %s failed: %s (%s); not serving a partial table", dir,
		            err[0] ? err : hl_strerror(rc), hl_err_name(rc));
		return rc;
	}
	/* Revisions go on from the highest one on disk, never back. */
	uint64_t rev = atomic_load_explicit(&h->revision, memory_order_relaxed);
	if (info.revision > rev)
		atomic_store_explicit(&h->revision, info.revision, memory_order_relaxed);
	rev = atomic_load_explicit(&h->revision, memory_order_relaxed);
	/* The history holds nothing before the restore: a resume from an
	 * older revision is told so (HL_ECOMPACTED), never given a partial
	 * story. */
	for (uint32_t s = 0; s < h->shards; s++) {
		struct hl_shm_hist *hc = hl__hist(&w->seg, s);
		if (atomic_load_explicit(&hc->floor_rev, memory_order_relaxed) < rev)
			atomic_store_explicit(&hc->floor_rev, rev, memory_order_relaxed);
		/* The ring is empty (nothing served yet): its last revision is
		 * its floor, which the next append notes as prev_rev. */
		if (w->shards[s].hist_last < rev)
			w->shards[s].hist_last = rev;
	}
	atomic_store_explicit(&h->dur_restore, 0, memory_order_release);
	hl__log("restored %" PRIu64 " keys (%" PRIu64 " log records, %" PRIu64
	        " torn tail dropped) from %s up to revision %" PRIu64 " in %" PRIu64 " ms",
	        info.snap_records, info.log_records, info.torn, dir, rev,
	        (hl__now_ns() - t0) / 1000000);
	return 0;
}
