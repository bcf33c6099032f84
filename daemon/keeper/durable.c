/* SPDX-License-Identifier: MIT */
/*
 * durable.c: --durability snapshot|log, the keeper's writer thread
 * (keeper.h; docs/architecture.md, "Durability"). Owns the state
 * directory's content while the keeper runs: snapshots (a lock-free scan
 * of the table, like hl_get()), the log (it follows the worker's per-shard
 * history rings, which already hold every applied change in revision
 * order), compaction, and the durability lines of the segment header
 * (dur_*, durable_pos). It must never write the table: the worker's apply
 * path does not know it exists.
 *
 * Threads: the writer thread does every file operation (fsync blocks, the
 * keeper's loop must not). The main thread only starts it, asks it for a
 * snapshot (snap_req, then a FUTEX_WAKE on dur_kick), reads the answers
 * through an eventfd in its epoll set, and stops it. They share only the
 * atomics of struct hl_k_dur and the segment.
 *
 * A failure (a short write, ENOSPC, EIO, a failed rename) is logged once,
 * stored in dur_state/dur_err (heirloomctl: "not durable"), and wakes the
 * SYNC clients, who get HL_ENOTDURABLE. The table is served in memory as
 * before. The writer retries every second: a new log and a full snapshot,
 * after which the state is durable again.
 */
#include "keeper.h"

#include "history.h"
#include "resources.h"
#include "seqlock.h"
#include "statefile.h"
#include "table_read.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LD_RLX(p)    atomic_load_explicit((p), memory_order_relaxed)
#define ST_RLX(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)

#define SCAN_CHUNK   4096u      /* key slots per snapshot step, between group commits */
#define FLUSH_BYTES  (1u << 20) /* a snapshot's buffer is written past this */
#define COMMIT_BYTES (4u << 20) /* at most this much log per group commit */
#define LOG_TICK_MS  10         /* log mode: the writer looks at the rings this often */
#define RETRY_MS     1000       /* after a failure, try again this long after */

/* The writer's private state (one thread). */
struct writer {
	struct hl_keeper *k;
	struct hl_shm_header *h;
	struct hl_k_dur *d;
	uint32_t shards;
	uint64_t pos[HL_SHARDS_MAX]; /* history position read up to */
	struct hl_sf_writer log;     /* fd -1 when none is open */
	uint64_t log_seq;            /* the open log's sequence */
	uint8_t *rec;                /* one history record */
	uint32_t rec_cap;
	uint8_t *val; /* one value: meta + value */
	/* the snapshot being written */
	int snapping;
	struct hl_sf_writer snap;
	uint32_t cursor;
	uint64_t snap_req; /* the request it answers (snap_req seen at start) */
	int covers_gap;    /* started after the last gap: its end lifts it */
	int gap;           /* a log lost records: durable_pos is held */
	int failed;
	uint64_t retry_ns, next_snap_ns;
	uint64_t served_req; /* requests answered */
	uint64_t intact_ns;  /* when the segment was last found whole */
	int truncated;       /* it was not: never touch the mapping again */
};

static const char *
mode_name(uint32_t m)
{
	return m == HL_DUR_LOG ? "log" : m == HL_DUR_SNAPSHOT ? "snapshot" : "none";
}

static void
publish_state(struct writer *wr, uint32_t st, int32_t err)
{
	struct hl_shm_header *h = wr->h;
	ST_RLX(&h->dur_err, err);
	atomic_store_explicit(&h->dur_state, st, memory_order_release);
	atomic_fetch_add_explicit(&h->dur_seq, 1, memory_order_release);
	hl__futex_wake(&h->dur_seq, INT32_MAX);
}

static void
fail(struct writer *wr, const char *what, int rc)
{
	if (!wr->failed)
		hl__log_err("durability: %s failed in %s: %s (%s); the table is served in memory, "
		            "NOT durable; SYNC publishes get HL_ENOTDURABLE; retrying every %d ms",
		            what, wr->d->dir, hl_strerror(rc), hl_err_name(rc), RETRY_MS);
	atomic_fetch_add_explicit(&wr->h->dur_failures, 1, memory_order_relaxed);
	wr->failed = 1;
	wr->retry_ns = hl__now_ns() + RETRY_MS * 1000000ull;
	if (wr->snapping) {
		hl__sf_snap_abort(&wr->snap, wr->d->dirfd);
		wr->snapping = 0;
	}
	if (wr->log.fd >= 0)
		hl__sf_close(&wr->log);
	/* Whatever a waiting heirloomctl snapshot asked, it failed. */
	uint64_t req = atomic_load_explicit(&wr->d->snap_req, memory_order_acquire);
	if (req > wr->served_req) {
		atomic_store_explicit(&wr->d->snap_rc, rc, memory_order_relaxed);
		wr->served_req = req;
		atomic_store_explicit(&wr->d->snap_done, req, memory_order_release);
		uint64_t one = 1;
		ssize_t n = write(wr->d->evfd, &one, sizeof(one));
		(void)n;
	}
	publish_state(wr, HL_DUR_ST_FAILED, rc);
}

/* ---- the log: following the history rings ---- */

static int
is_sys(const uint8_t *key, uint32_t len)
{
	return len >= sizeof(HL_SYS_PREFIX) - 1 &&
	       memcmp(key, HL_SYS_PREFIX, sizeof(HL_SYS_PREFIX) - 1) == 0;
}

/* Read every shard's new history records into the log's buffer (up to
 * COMMIT_BYTES). Returns 1 when anything was read or a position moved. */
static int
drain_rings(struct writer *wr)
{
	int moved = 0;
	for (uint32_t s = 0; s < wr->shards; s++) {
		for (;;) {
			if (wr->log.len >= COMMIT_BYTES)
				return 1;
			uint64_t p = wr->pos[s];
			int r = hl__hist_read(&wr->k->seg, s, &wr->pos[s], wr->rec, wr->rec_cap);
			if (r == HL_HIST_END)
				break;
			moved = 1;
			if (r != HL_HIST_OK) {
				/* Evicted before we read it (or a ring the worker
				 * will repair): those changes are not in the log.
				 * Go on from the tail; a snapshot started from now
				 * on covers them, and until it ends durable_pos
				 * stays where it is. */
				uint64_t tail, floor;
				hl__hist_tail(&wr->k->seg, s, &tail, &floor);
				uint64_t head = atomic_load_explicit(
				        &hl__hist(&wr->k->seg, s)->head, memory_order_acquire);
				wr->pos[s] = r == HL_HIST_BEHIND ? tail : head;
				if (wr->pos[s] == p)
					break;
				if (!wr->gap)
					hl__log_warn(
					        "durability: the log fell behind shard %u's "
					        "history "
					        "(%s); a snapshot covers the gap",
					        s, r == HL_HIST_BEHIND ? "evicted" : "unreadable");
				wr->gap = 1;
				wr->covers_gap = 0;
				continue;
			}
			struct hl_hist_rec hr;
			memcpy(&hr, wr->rec, sizeof(hr));
			const uint8_t *key = wr->rec + sizeof(hr);
			if (is_sys(key, hr.h.key_len))
				continue;
			struct hl_sf_rec rec = {
				.type = hr.h.type == HL_EVR_DELETE ? HL_SF_DEL : HL_SF_PUT,
				.rev = hr.rev,
				.key = key,
				.key_len = hr.h.key_len,
				.meta = key + hr.h.key_len,
				.meta_len = hr.meta_len,
				.val = key + hr.h.key_len + hr.meta_len,
				.val_len = hr.val_len,
			};
			if (hl__sf_put(&wr->log, &rec) < 0) {
				wr->pos[s] = p; /* -ENOMEM: read it again next time */
				return 1;
			}
		}
	}
	return moved;
}

/* The group commit: write what drain_rings() gathered, fdatasync, then
 * move durable_pos (release) and wake the SYNC clients. */
static void
commit_log(struct writer *wr)
{
	int rc = hl__sf_log_sync(&wr->log);
	if (rc) {
		fail(wr, "the log append (write + fdatasync)", rc);
		return;
	}
	/* Record bytes of the open log (compaction's trigger), all on disk. */
	ST_RLX(&wr->h->log_bytes, wr->log.bytes);
	ST_RLX(&wr->h->log_records, wr->log.count);
	if (wr->gap)
		return; /* held until a snapshot covers the gap */
	for (uint32_t s = 0; s < wr->shards; s++)
		atomic_store_explicit(&wr->h->durable_pos[s], wr->pos[s], memory_order_release);
	atomic_fetch_add_explicit(&wr->h->dur_seq, 1, memory_order_release);
	hl__futex_wake(&wr->h->dur_seq, INT32_MAX);
}

/* ---- snapshots ---- */

/* Slot I's key and value, read under the key's seqlock like hl_get()
 * (lib/table_read.c): 1 and R filled, 0 when it holds no value to save. */
static int
read_slot(struct writer *wr, uint32_t i, uint8_t *key, struct hl_sf_rec *r)
{
	const struct hl_seg *s = &wr->k->seg;
	struct hl_shm_key *k = hl__key(s, i);
	for (int tries = 0; tries < 1000; tries++) {
		if (!atomic_load_explicit(&k->used, memory_order_acquire))
			return 0;
		uint64_t hash = __atomic_load_n(&k->hash, __ATOMIC_RELAXED);
		uint32_t kl = __atomic_load_n(&k->key_len, __ATOMIC_RELAXED);
		if ((hash & HL_HASH_PREFIX) || kl == 0 || kl > HL_KEY_MAX)
			return 0;
		hl__racy_copy_out(key, hl__key_bytes(k), kl);
		if (is_sys(key, kl))
			return 0;
		uint64_t seq = hl__seq_read_begin(&k->seq);
		if (seq & 1u) {
			sched_yield();
			continue;
		}
		uint64_t off = LD_RLX(&k->val);
		uint64_t rev = LD_RLX(&k->rev);
		if (off == 0 || (off & HL_VAL_DELETED)) {
			if (hl__seq_read_retry(&k->seq, seq))
				continue;
			return 0;
		}
		struct hl_shm_value vh;
		if (off < s->h->heap_off || off + sizeof(vh) > s->h->heap_off + s->h->heap_bytes) {
			if (hl__seq_read_retry(&k->seq, seq))
				continue;
			return 0;
		}
		hl__racy_copy_out(&vh, hl__val(s, off), sizeof(vh));
		int ok = (vh.type & 0xffu) == HL_VAL_PUT &&
		         hl__value_ok(s, off, vh.len, vh.meta_len);
		if (ok)
			hl__racy_copy_out(wr->val, (uint8_t *)hl__val(s, off) + sizeof(vh),
			                  (size_t)vh.meta_len + vh.len);
		if (hl__seq_read_retry(&k->seq, seq))
			continue;
		/* The slot may have been freed and reused for another key
		 * while we read: the same key bytes after as before. */
		uint8_t again[HL_KEY_MAX];
		hl__racy_copy_out(again, hl__key_bytes(k), kl);
		if (!atomic_load_explicit(&k->used, memory_order_acquire) ||
		    __atomic_load_n(&k->key_len, __ATOMIC_RELAXED) != kl ||
		    memcmp(again, key, kl) != 0)
			continue;
		if (!ok)
			return 0;
		*r = (struct hl_sf_rec){ .type = HL_SF_PUT,
			                 .rev = rev,
			                 .key = key,
			                 .key_len = kl,
			                 .meta = wr->val,
			                 .meta_len = vh.meta_len,
			                 .val = wr->val + vh.meta_len,
			                 .val_len = vh.len };
		return 1;
	}
	return 0;
}

/* Begin a snapshot. In log mode first rotate the log: the snapshot names
 * the new one, and every change before the rotation is in the table the
 * scan reads (a history record is appended after its commit). */
static void
snap_start(struct writer *wr)
{
	struct hl_k_dur *d = wr->d;
	uint64_t seq = d->next_log_seq;
	if (d->mode == HL_DUR_LOG) {
		if (wr->log.fd >= 0) {
			drain_rings(wr);
			commit_log(wr);
			if (wr->failed)
				return;
			hl__sf_close(&wr->log);
		}
		int rc = hl__sf_log_create(&wr->log, d->dirfd, seq);
		if (rc) {
			fail(wr, "creating a log file", rc);
			return;
		}
		wr->log_seq = seq;
		d->next_log_seq = seq + 1;
		ST_RLX(&wr->h->log_bytes, 0);
		ST_RLX(&wr->h->log_records, 0);
	} else {
		/* No log: the snapshot replaces every log a previous run in log
		 * mode left (the restore read them). */
		seq = d->next_log_seq;
	}
	int rc = hl__sf_snap_begin(&wr->snap, d->dirfd, seq);
	if (rc) {
		fail(wr, "creating snapshot.tmp", rc);
		return;
	}
	wr->snapping = 1;
	wr->cursor = 1;
	wr->covers_gap = 1;
	wr->snap_req = atomic_load_explicit(&d->snap_req, memory_order_acquire);
}

/* One step of the snapshot: SCAN_CHUNK slots (all of them when ALL). */
static void
snap_step(struct writer *wr, int all)
{
	uint8_t key[HL_KEY_MAX];
	uint32_t max = wr->h->max_keys;
	uint32_t end = all ? max : wr->cursor + SCAN_CHUNK - 1;
	if (end > max)
		end = max;
	if (wr->d->test_delay_us)
		usleep((useconds_t)wr->d->test_delay_us); /* test hook: a slow disk */
	for (uint32_t i = wr->cursor; i <= end; i++) {
		struct hl_sf_rec r;
		if (!read_slot(wr, i, key, &r))
			continue;
		int rc = hl__sf_put(&wr->snap, &r);
		if (rc == 0 && wr->snap.len >= FLUSH_BYTES)
			rc = hl__sf_flush(&wr->snap);
		if (rc) {
			fail(wr, "writing snapshot.tmp", rc);
			return;
		}
	}
	wr->cursor = end + 1;
	if (wr->cursor <= max)
		return;
	/* Every slot read: the revision counter now is at least every
	 * revision the scan saw. */
	uint64_t rev = atomic_load_explicit(&wr->h->revision, memory_order_relaxed);
	uint64_t n = wr->snap.count;
	int rc = hl__sf_snap_commit(&wr->snap, wr->d->dirfd, rev);
	wr->snapping = 0;
	if (rc) {
		fail(wr, "committing the snapshot (fsync + rename)", rc);
		return;
	}
	/* Logs before the one the snapshot names are no longer needed. */
	uint64_t keep = wr->d->mode == HL_DUR_LOG ? wr->log_seq : wr->d->next_log_seq;
	hl__sf_prune(wr->d->dirfd, keep);
	ST_RLX(&wr->h->snap_rev, rev);
	ST_RLX(&wr->h->snap_keys, n);
	ST_RLX(&wr->h->snap_ns, hl__wall_ns());
	atomic_fetch_add_explicit(&wr->h->snapshots, 1, memory_order_relaxed);
	hl__log_debug("durability: snapshot of %" PRIu64 " keys up to revision %" PRIu64, n, rev);
	if (wr->covers_gap && wr->gap) {
		wr->gap = 0;
		if (wr->d->mode == HL_DUR_LOG)
			commit_log(wr); /* durable_pos may move now */
	}
	wr->next_snap_ns = wr->d->interval_ms
	                           ? hl__now_ns() + (uint64_t)wr->d->interval_ms * 1000000ull
	                           : UINT64_MAX;
	if (wr->snap_req > wr->served_req) {
		atomic_store_explicit(&wr->d->snap_rc, 0, memory_order_relaxed);
		wr->served_req = wr->snap_req;
		atomic_store_explicit(&wr->d->snap_done, wr->snap_req, memory_order_release);
		uint64_t one = 1;
		ssize_t nw = write(wr->d->evfd, &one, sizeof(one));
		(void)nw;
	}
	if (LD_RLX(&wr->h->dur_state) != HL_DUR_ST_OK && !wr->gap)
		publish_state(wr, HL_DUR_ST_OK, 0);
}

/* ---- the thread ---- */

/* Whether the mapping may be read: the object was not truncated under us
 * (issue 21; an access past its end is a SIGBUS in the keeper). Looked at
 * every 100 ms and before each snapshot step (FORCE): this narrows the
 * window, it cannot close it (main.c's checks stop the keeper then). */
static int
seg_readable(struct writer *wr, int force)
{
	if (wr->truncated)
		return 0;
	uint64_t now = hl__now_ns();
	if (!force && now - wr->intact_ns < 100000000ull)
		return 1;
	uint64_t size_now = 0;
	if (hl__seg_intact(&wr->k->seg, wr->k->name, &size_now) == HL_ETRUNCATED) {
		hl__log_err("durability: the segment was truncated: the writer stops touching it "
		            "(the state directory keeps the last snapshot and log)");
		wr->truncated = 1;
		return 0;
	}
	wr->intact_ns = now;
	return 1;
}

static void
nap(struct writer *wr, uint64_t ms)
{
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000),
		               .tv_nsec = (long)(ms % 1000) * 1000000L };
	hl__futex_wait(&wr->h->dur_kick, LD_RLX(&wr->h->dur_kick), &ts);
}

static void *
writer_main(void *arg)
{
	struct hl_keeper *k = arg;
	struct hl_k_dur *d = &k->dur;
	/* One writer per keeper: its state needs no allocation. */
	static struct writer the_writer;
	struct writer *wr = &the_writer;
	*wr = (struct writer){ 0 };
	wr->k = k;
	wr->h = k->seg.h;
	wr->d = d;
	wr->log.fd = wr->snap.fd = -1;
	wr->shards = wr->h->shards;
	wr->rec_cap = (uint32_t)sizeof(struct hl_hist_rec) + HL_KEY_MAX + HL_META_MAX +
	              wr->h->max_value + 8;
	wr->rec = malloc(wr->rec_cap);
	wr->val = malloc((size_t)HL_META_MAX + wr->h->max_value);
	if (!wr->rec || !wr->val) {
		hl__log_err("durability: the writer cannot allocate its buffers");
		atomic_fetch_add_explicit(&wr->h->dur_failures, 1, memory_order_relaxed);
		publish_state(wr, HL_DUR_ST_FAILED, -ENOMEM);
		free(wr->rec);
		free(wr->val);
		return NULL;
	}
	/* A restore runs first (the worker's): nothing is applied before it
	 * ends, and the state on disk is what it restores. */
	while (atomic_load_explicit(&wr->h->dur_restore, memory_order_acquire) &&
	       !atomic_load_explicit(&d->stop, memory_order_acquire))
		nap(wr, 10);
	for (uint32_t s = 0; s < wr->shards; s++)
		wr->pos[s] = d->start_pos[s];
	wr->next_snap_ns =
	        d->interval_ms ? hl__now_ns() + (uint64_t)d->interval_ms * 1000000ull : UINT64_MAX;
	if (d->mode == HL_DUR_LOG) {
		int rc = hl__sf_log_create(&wr->log, d->dirfd, d->next_log_seq);
		if (rc) {
			fail(wr, "creating a log file", rc);
		} else {
			wr->log_seq = d->next_log_seq++;
			if (d->start_snapshot) {
				/* The table holds changes no log has (applied while
				 * no keeper followed the rings): a snapshot first. */
				wr->gap = 1;
				snap_start(wr);
			} else {
				commit_log(wr);
				publish_state(wr, HL_DUR_ST_OK, 0);
			}
		}
	} else if (d->start_snapshot) {
		snap_start(wr); /* a keeper restart: durable once it is written */
	} else {
		publish_state(wr, HL_DUR_ST_OK, 0);
	}
	while (!atomic_load_explicit(&d->stop, memory_order_acquire)) {
		uint64_t now = hl__now_ns();
		if (!seg_readable(wr, wr->snapping)) {
			struct timespec ts = { .tv_sec = 0, .tv_nsec = 100000000L };
			nanosleep(&ts, NULL);
			continue;
		}
		if (wr->failed) {
			if (now < wr->retry_ns &&
			    atomic_load_explicit(&d->snap_req, memory_order_acquire) <=
			            wr->served_req) {
				nap(wr, 50);
				continue;
			}
			/* Start again from a clean slate: a new log from the
			 * current heads and a snapshot that covers the rest. */
			wr->failed = 0;
			for (uint32_t s = 0; s < wr->shards; s++)
				wr->pos[s] = atomic_load_explicit(&hl__hist(&k->seg, s)->head,
				                                  memory_order_acquire);
			wr->gap = d->mode == HL_DUR_LOG;
			snap_start(wr);
			continue;
		}
		int busy = 0;
		if (d->mode == HL_DUR_LOG) {
			if (drain_rings(wr) || wr->log.len) {
				commit_log(wr);
				busy = 1;
			}
			if (!wr->failed && !wr->snapping &&
			    LD_RLX(&wr->h->log_bytes) >= (uint64_t)d->compact_bytes)
				snap_start(wr);
		}
		if (wr->failed)
			continue;
		if (!wr->snapping &&
		    (atomic_load_explicit(&d->snap_req, memory_order_acquire) > wr->served_req ||
		     now >= wr->next_snap_ns || (wr->gap && d->mode == HL_DUR_LOG)))
			snap_start(wr);
		if (wr->snapping && !wr->failed) {
			snap_step(wr, d->mode != HL_DUR_LOG);
			busy = 1;
		}
		if (!busy) {
			uint64_t ms = d->mode == HL_DUR_LOG ? LOG_TICK_MS : 100;
			nap(wr, ms);
		}
	}
	if (wr->truncated || !seg_readable(wr, 1)) {
		if (wr->snapping)
			hl__sf_snap_abort(&wr->snap, d->dirfd);
		if (wr->log.fd >= 0)
			hl__sf_close(&wr->log);
		free(wr->rec);
		free(wr->val);
		return NULL;
	}
	/* The stop: in log mode the last changes go to the log; a clean stop
	 * (the worker gave the table back) ends with a snapshot in both
	 * modes, so the next start reads one file. */
	if (!wr->failed && d->mode == HL_DUR_LOG && wr->log.fd >= 0) {
		drain_rings(wr);
		commit_log(wr);
	}
	if (!wr->failed && atomic_load_explicit(&d->final_snapshot, memory_order_acquire)) {
		if (wr->snapping)
			hl__sf_snap_abort(&wr->snap, d->dirfd);
		wr->snapping = 0;
		snap_start(wr);
		while (wr->snapping && !wr->failed)
			snap_step(wr, 1);
		if (!wr->failed)
			hl__log("durability: final snapshot written (revision %" PRIu64 ")",
			        LD_RLX(&wr->h->snap_rev));
	}
	if (wr->snapping)
		hl__sf_snap_abort(&wr->snap, d->dirfd);
	if (wr->log.fd >= 0) {
		hl__sf_log_sync(&wr->log);
		hl__sf_close(&wr->log);
	}
	publish_state(wr, HL_DUR_ST_STOPPED, LD_RLX(&wr->h->dur_err));
	free(wr->rec);
	free(wr->val);
	return NULL;
}

/* ---- the main thread's side ---- */

int
hl_k_dur_parse(struct hl_keeper *k)
{
	const char *m = k->o.durability ? k->o.durability : "none";
	k->dur.mode = strcmp(m, "log") == 0        ? HL_DUR_LOG
	              : strcmp(m, "snapshot") == 0 ? HL_DUR_SNAPSHOT
	                                           : HL_DUR_NONE;
	k->dur.dirfd = k->dur.lockfd = k->dur.evfd = -1;
	k->dur.interval_ms = k->o.snapshot_interval_ms;
	k->dur.compact_bytes = k->o.compact_size;
	const char *delay = getenv("HEIRLOOM_TEST_SNAPSHOT_DELAY_US");
	k->dur.test_delay_us = delay ? atoll(delay) : 0;
	if (k->dur.mode == HL_DUR_NONE)
		return 0;
	const char *dir = k->o.state_dir;
	char def[HL_STATE_DIR_MAX];
	if (!dir || !*dir) {
		/* The FHS place; the keeper's unit makes it
		 * (StateDirectory=heirloom/%i). */
		snprintf(def, sizeof(def), "/var/lib/heirloom/%s", k->name);
		dir = def;
	}
	if (strlen(dir) >= sizeof(k->dur.dir)) {
		hl__log_err("--state-dir: the path must be under %u bytes", HL_STATE_DIR_MAX);
		return HL_EXIT_STATE;
	}
	snprintf(k->dur.dir, sizeof(k->dur.dir), "%s", dir);
	return 0;
}

int
hl_k_dur_open_dir(struct hl_keeper *k)
{
	struct hl_k_dur *d = &k->dur;
	if (d->mode == HL_DUR_NONE)
		return 0;
	/* The directory: created if missing (one level), with the
	 * segment's access rules: its mode with x where r is, its group. */
	mode_t m = (mode_t)k->o.mode & 0770;
	m |= (m & 0440) >> 2;
	m |= 0700;
	if (mkdir(d->dir, m) == 0) {
		if (k->gid != (gid_t)-1 && chown(d->dir, (uid_t)-1, k->gid) < 0)
			hl__log_warn("cannot set the group of %s: %s", d->dir, strerror(errno));
	} else if (errno != EEXIST) {
		hl__log_err("cannot create the state directory %s: %s (create it, or choose "
		            "--state-dir)",
		            d->dir, strerror(errno));
		return HL_EXIT_STATE;
	}
	d->dirfd = open(d->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct stat st;
	if (d->dirfd < 0 || fstat(d->dirfd, &st) < 0) {
		hl__log_err("cannot open the state directory %s: %s", d->dir, strerror(errno));
		return HL_EXIT_STATE;
	}
	if ((st.st_uid != geteuid() && st.st_uid != 0) || (st.st_mode & 0002)) {
		hl__log_err("state directory %s must belong to this user or root and not be "
		            "writable by others",
		            d->dir);
		return HL_EXIT_STATE;
	}
	d->lockfd = openat(d->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (d->lockfd < 0 || flock(d->lockfd, LOCK_EX | LOCK_NB) < 0) {
		hl__log_err("state directory %s is in use by another keeper (%s)", d->dir,
		            strerror(errno));
		return HL_EXIT_STATE;
	}
	d->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->evfd < 0) {
		hl__log_err("eventfd: %s", strerror(errno));
		return HL_EXIT_STATE;
	}
	return 0;
}

int
hl_k_dur_check_state(struct hl_keeper *k, bool created)
{
	struct hl_k_dur *d = &k->dur;
	struct hl_shm_header *h = k->seg.h;
	ST_RLX(&h->dur_mode, d->mode);
	if (d->mode == HL_DUR_NONE) {
		ST_RLX(&h->dur_state, HL_DUR_ST_OFF);
		/* A restore a crash interrupted is finished by the next worker
		 * from the directory it began with, whatever this keeper's
		 * mode: the table is never served half restored. */
		if (!atomic_load_explicit(&h->dur_restore, memory_order_relaxed))
			memset(h->state_dir, 0, sizeof(h->state_dir));
		return 0;
	}
	memcpy(h->state_dir, d->dir, sizeof(h->state_dir));
	ST_RLX(&h->dur_state, HL_DUR_ST_STARTING);
	ST_RLX(&h->dur_err, 0);
	char err[512];
	struct hl_sf_info info;
	int rc = hl__sf_load(d->dir, NULL, NULL, &info, err, sizeof(err));
	d->next_log_seq = info.next_log_seq;
	if (rc && created) {
		hl__log_err("durability: refusing the state in %s: %s (%s). Nothing was loaded. "
		            "Move the directory aside to start with an empty table, or restore "
		            "it from a backup.",
		            d->dir, err[0] ? err : hl_strerror(rc), hl_err_name(rc));
		return HL_EXIT_STATE;
	}
	if (rc == 0 && created && (info.have_snapshot || info.nlogs)) {
		char why[256];
		int fit = hl_k_state_fits(d->dir, h, why, sizeof(why));
		if (fit == -ENOSPC) {
			hl__log_err(
			        "durability: the state in %s does not fit this segment: %s. "
			        "Nothing was loaded. Start the keeper with capacities that hold "
			        "it (heirloomctl size helps), or move the directory aside.",
			        d->dir, why);
			return HL_EXIT_STATE;
		}
		if (fit)
			hl__log_warn("durability: %s; the worker's restore will tell", why);
	}
	if (rc)
		hl__log_warn("durability: the state in %s does not check (%s); the table in the "
		             "segment is kept and a new snapshot replaces it",
		             d->dir, err[0] ? err : hl_strerror(rc));
	for (uint32_t s = 0; s < h->shards; s++) {
		/* A new segment: follow from the start. An existing one: from
		 * the heads now, with a snapshot first for what came before. */
		d->start_pos[s] = created ? 0
		                          : atomic_load_explicit(&hl__hist(&k->seg, s)->head,
		                                                 memory_order_acquire);
		ST_RLX(&h->durable_pos[s], 0);
	}
	d->start_snapshot = !created;
	if (created && (info.have_snapshot || info.nlogs)) {
		hl__log("durability: %s mode; will restore from %s: snapshot of %" PRIu64
		        " keys, %" PRIu64 " log records in %" PRIu64 " files (%" PRIu64
		        " torn tail dropped), revision %" PRIu64,
		        mode_name(d->mode), d->dir, info.snap_records, info.log_records, info.nlogs,
		        info.torn, info.revision);
		atomic_store_explicit(&h->dur_restore, 1, memory_order_relaxed);
	} else {
		hl__log("durability: %s mode, state directory %s%s", mode_name(d->mode), d->dir,
		        created ? " (nothing to restore)" : "");
	}
	return 0;
}

int
hl_k_dur_start(struct hl_keeper *k)
{
	struct hl_k_dur *d = &k->dur;
	for (int i = 0; i < HL_K_MAX_CONNS; i++)
		d->waiting[i] = 0;
	if (d->mode == HL_DUR_NONE)
		return 0;
	int rc = pthread_create(&d->thread, NULL, writer_main, k);
	if (rc) {
		hl__log_err("durability: cannot start the writer thread: %s", strerror(rc));
		return HL_EXIT_STATE;
	}
	d->running = true;
	hl_k_watch(k, d->evfd, HL_K_TAG_DUR);
	return 0;
}

int
hl_k_dur_request(struct hl_keeper *k, struct hl_kconn *c)
{
	struct hl_k_dur *d = &k->dur;
	if (!d->running) {
		hl_k_reply_err(c, -ENOTSUP,
		               "durability is off (start the keeper with --durability snapshot "
		               "or log)");
		return 0;
	}
	uint64_t want = atomic_fetch_add_explicit(&d->snap_req, 1, memory_order_acq_rel) + 1;
	d->waiting[c - k->conns] = want;
	c->held = true;
	hl__futex_wake(&k->seg.h->dur_kick, 1);
	return 1;
}

void
hl_k_dur_event(struct hl_keeper *k)
{
	struct hl_k_dur *d = &k->dur;
	uint64_t v;
	while (read(d->evfd, &v, sizeof(v)) == (ssize_t)sizeof(v))
		;
	uint64_t done = atomic_load_explicit(&d->snap_done, memory_order_acquire);
	int32_t rc = atomic_load_explicit(&d->snap_rc, memory_order_relaxed);
	for (int i = 0; i < HL_K_MAX_CONNS; i++) {
		if (!d->waiting[i] || d->waiting[i] > done)
			continue;
		struct hl_kconn *c = &k->conns[i];
		d->waiting[i] = 0;
		c->held = false;
		if (c->fd < 0)
			continue;
		if (rc) {
			hl_k_reply_err(c, rc, "snapshot failed: %s", hl_strerror(rc));
		} else {
			struct hl_msg m;
			hl__msg_init(&m, HL_MSG_OK);
			m.epoch = LD_RLX(&k->seg.h->snap_rev);
			snprintf(m.text, sizeof(m.text), "%" PRIu64 " keys",
			         LD_RLX(&k->seg.h->snap_keys));
			hl__msg_send(c->fd, &m, -1);
		}
	}
}

void
hl_k_dur_conn_closed(struct hl_keeper *k, int slot)
{
	k->dur.waiting[slot] = 0;
}

void
hl_k_dur_stop(struct hl_keeper *k, bool clean)
{
	struct hl_k_dur *d = &k->dur;
	if (d->running) {
		atomic_store_explicit(&d->final_snapshot, clean, memory_order_release);
		atomic_store_explicit(&d->stop, 1, memory_order_release);
		hl__futex_wake(&k->seg.h->dur_kick, 1);
		pthread_join(d->thread, NULL);
		d->running = false;
	}
	if (d->evfd >= 0)
		close(d->evfd);
	if (d->dirfd >= 0)
		close(d->dirfd);
	if (d->lockfd >= 0)
		close(d->lockfd);
	d->evfd = d->dirfd = d->lockfd = -1;
}
