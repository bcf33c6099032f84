/* SPDX-License-Identifier: MIT */
/*
 * layout.h: the byte format of a heirloom segment. Owns the struct
 * definitions and the region arithmetic; holds no code that touches a live
 * segment. Everything here is shared by the keeper, the worker and every
 * client, across processes and across crashes, so:
 *  - fields are fixed width; references are offsets or 1-based slot indexes,
 *    never pointers; every sizeof/offsetof the format relies on is asserted;
 *  - each field says who writes it, who reads it and under which protocol;
 *  - fields written by different processes sit on different 64-byte lines.
 *
 * Regions, in order, each page aligned (see hl__layout_compute()):
 *
 *   header      keeper/worker write          clients map read-only
 *   buckets     worker                       read-only
 *   keys        worker                       read-only
 *   observers   worker                       read-only
 *   heap        worker (values)              read-only
 *   history     worker (per-shard rings)     read-only
 *   ep_worker   worker (event rings, acks)   read-only
 *   ---------------------------------------- client-writable from here on
 *   claims      any client (endpoint claim words, doorbells, pending bits)
 *   ep_client   one client per block (its request rings, read cursors)
 *
 * A client maps [0, claims_off) PROT_READ, the claims region read-write, and
 * only its own ep_client block read-write; so a stray write in a client can
 * damage at most its own rings and the claim words, both of which the worker
 * treats as untrusted input (docs/security.md).
 */
#ifndef HL_LAYOUT_H
#define HL_LAYOUT_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "heirloom/heirloom.h" /* HL_SHARDS_MAX, HL_KEY_MAX */

#define HL_MAGIC 0x4d4f4f4c52494548ull /* "HEIRLOOM" little-endian */
/* 2: request flags SYNC/TAKEN/WITHDRAWN, the done record, value origins,
 *    event LAG_BEFORE flag.
 * 3: one writer per header line: worker_ready into the owner line,
 *    reattaches into the worker's; progress_ns and shard[] sized by
 *    HL_SHARDS_MAX. */
/* 4: conditional requests (HL_REQ_PUBLISH_IF, HL_REQ_DELETE_IF) and their
 *    answer encoding; observer slot flags (HL_OBSERVE_*) read by dispatch.
 *    No struct changed size: the version says that a v3 worker would
 *    refuse a v4 client's requests as garbage, and a v3 client would not
 *    know an observer's filters. */
/* 5: prefix observers (docs/architecture.md, "Prefix observers"): bit 63
 *    of hl_shm_key.hash marks a prefix entry (HL_HASH_PREFIX, lib/util.h),
 *    so every key's hash changed; HL_OBSERVE_PREFIX in an observer's
 *    flags, whose delivered_rev then holds its start revision. */
/* 6: history (issue 14, items 3 and 4; docs/architecture.md, "History and
 *    resume"): a region of per-shard history rings (hist_off, hist_bytes
 *    in the geometry, struct hl_shm_hist, struct hl_hist_rec); the start
 *    revision of an observe's answer (hl_shm_epw_shard.result_rev); an
 *    observe request may carry a start revision (8 value bytes). */
/* 6 (also): progress notifications (docs/architecture.md, "Progress"): each
 *    shard's progress_rev (hl_shm_shard) and a client's progress_ms
 *    (hl_shm_epc), both in what was padding; a v5 worker would leave
 *    progress_rev at 0 and never nudge. Also header.prefixes_used. */
/* 7: hl_shm_counters.dispatch_ns_sum (the latency histogram's sum, for a
 *    Prometheus histogram). No struct changed size (it sits in the
 *    padding of hl_shm_shard's counter lines): the version says that a v6
 *    worker would leave the sum at 0 under counts that grow. */
/* 8: header.keys_hwm and header.obs_hwm (the slot pools' high-water
 *    marks: recovery reads no slot above them), in what was padding of
 *    the worker-state line; hl_shm_hist.last_pos, last_rev, prev_rev
 *    (where a ring ends, without a walk), in its padding. A v7 worker
 *    would leave them stale, and recovery would misjudge both. */
/* 8 (also): durability (issue 17): the header's durability lines (dur_*,
 *    durable_pos, state_dir) between the keeper's lines and the log
 *    ring. The header grows by 14 lines. */
/* 9: header.eps_hwm (the endpoints' high-water mark: recovery and the
 *    monitor read no endpoint's worker lines above it), on a new line of
 *    the worker state; the header grows by one line. A v8 worker would
 *    leave it at 0, and a v9 recovery would miss every endpoint. */
#define HL_LAYOUT_VERSION 9u
#define HL_CACHELINE      ((size_t)64)
#define HL_PAGE           4096u

#define HL_ROLE_NONE   0u
#define HL_ROLE_KEEPER 1u
#define HL_ROLE_WORKER 2u

#define HL_ERRLOG_LEN    32u
#define HL_STATE_DIR_MAX 256u /* bytes of hl_shm_header.state_dir, NUL included */
/* hl_shm_header.dur_mode and dur_state */
#define HL_DUR_NONE        0u
#define HL_DUR_SNAPSHOT    1u
#define HL_DUR_LOG         2u
#define HL_DUR_ST_OFF      0u
#define HL_DUR_ST_STARTING 1u
#define HL_DUR_ST_OK       2u
#define HL_DUR_ST_FAILED   3u
#define HL_DUR_ST_STOPPED  4u /* records in the header's error ring */

/* An index of a key or observer slot is stored 1-based: 0 means none. */
#define HL_NIL 0u

/* One record in the header's error/event log (keeper and worker append). */
struct hl_shm_logrec {
	uint64_t time_ns; /* CLOCK_REALTIME */
	uint32_t kind;    /* HL_LOG_* */
	int32_t code;     /* exit status, signal or -errno, per kind */
	uint32_t pid;
	uint32_t pad;
	uint64_t epoch;
	char text[32]; /* short NUL-terminated detail */
};
_Static_assert(sizeof(struct hl_shm_logrec) == 64, "logrec is one line");

#define HL_LOG_WORKER_EXIT  1u /* code: exit status (>=0) or -signal */
#define HL_LOG_HANDBACK     2u /* clean give-back on SIGTERM */
#define HL_LOG_HANDOFF      3u /* keeper gave the table to pid */
#define HL_LOG_RECOVERY     4u /* code: repairs made */
#define HL_LOG_BAD_CLIENT   5u /* endpoint dropped for garbage in its rings */
#define HL_LOG_KEEPER_START 6u

/* hl_shm_logrec.code of HL_LOG_WORKER_EXIT when the exit status is unknown
 * (the keeper is not the worker's parent). */
#define HL_EXIT_UNKNOWN    INT32_MIN
#define HL_LOG_SLOW_READER 7u /* endpoint not reading its event ring; code: ms idle */
/* The keeper's watchdog killed a hung worker; code: ms without progress,
 * text: which thread. */
#define HL_LOG_HUNG 8u
/* An upgrade of the worker ended (daemon/keeper/upgrade.c); pid: the new
 * worker; code: 0 done, else the error; text: what happened. */
#define HL_LOG_UPGRADE 9u

/* Counters live in the header so that heirloomctl reads them with no worker
 * running and they survive a crash. Written only by the worker, through
 * the shard they belong to (its thread; recovery before it runs), relaxed
 * fetch_add; read relaxed by hl_stats(), heirloomctl and the keeper's
 * watchdog (progress), summed over shards. Statistics: never used for
 * control, so a stale or torn-across-fields read is harmless. */
struct hl_shm_counters {
	_Atomic uint64_t publishes; /* publishes applied (value changed) */
	_Atomic uint64_t skipped;   /* publishes of the unchanged value */
	_Atomic uint64_t deletes;
	_Atomic uint64_t notifications; /* events written to rings */
	_Atomic uint64_t lagged_drops;  /* events dropped for a full ring */
	_Atomic uint64_t observers_added;
	_Atomic uint64_t observers_removed;
	_Atomic uint64_t async_errors;      /* failed requests nobody waited for */
	_Atomic uint64_t dispatch_hist[16]; /* dispatch latency, log2 buckets */
	/* The sum of the latencies counted in dispatch_hist, in ns (added
	 * with the same bucket's increment, not atomically with it: a reader
	 * may see one without the other, a statistic off by one dispatch). */
	_Atomic uint64_t dispatch_ns_sum;
};

/* One per shard, in the header; every line is written by the worker
 * process only. */
struct hl_shm_shard {
	/* Worker shard thread writes (relaxed, then a seq_cst fence);
	 * clients read (relaxed after a seq_cst fence) after setting their
	 * pending bit: non-zero means the thread is about to sleep on its
	 * doorbell and must be woken (Dekker pair with ring_doorbell() in
	 * lib/client.c and hl_shm_doorbell.word). */
	alignas(HL_CACHELINE) _Atomic uint32_t sleeping;
	uint32_t pad0;
	struct hl_shm_counters c;
	/* Heartbeat of this shard's thread (issue 22; docs/architecture.md,
	 * "Hang detection"). The shard thread writes it (relaxed) once per
	 * turn of its loop: after each pass over its endpoints and after
	 * each wake-up (its waits are bounded: 100 ms). The worker's main
	 * thread sets it once at attach, before the thread starts, so that
	 * a previous worker's value never counts against this one. Readers:
	 * the keeper's watchdog, the worker's systemd ping, heirloomctl.
	 * Unit: CLOCK_MONOTONIC_COARSE ns (one clock for every process of
	 * the machine); HL_BEAT_STOPPED once the worker's threads stopped.
	 * A stale read only moves a verdict by one check: nothing is
	 * published through it. Its own line: the shard thread stores here
	 * on every turn, and the keeper reads it. */
	alignas(HL_CACHELINE) _Atomic uint64_t beat_ns;
	/* Progress (issue 14 item 5; docs/architecture.md, "Progress"): the
	 * global revision this shard's thread read at the top of a turn of
	 * its loop, when everything it had applied was dispatched (a dispatch
	 * ends inside the apply). Every change of this shard with a revision
	 * <= progress_rev is in its endpoints' event rings (or counted as
	 * dropped), because a change it applies later takes a revision from
	 * the same counter after that read: a higher one. The shard thread
	 * stores it (release: after the ring commits of those events) when it
	 * changed; clients load it (acquire) and then check their rings for
	 * this shard. A SIGKILL leaves a value that was true when stored (a
	 * pending dispatch has a revision above it); a new worker's threads
	 * store again. 0 = never stored (nothing is claimed). */
	_Atomic uint64_t progress_rev;
};
_Static_assert(offsetof(struct hl_shm_shard, beat_ns) % HL_CACHELINE == 0,
               "a shard's heartbeat has its own line");
_Static_assert(sizeof(struct hl_shm_shard) == 5 * HL_CACHELINE, "shard: 4 lines + heartbeat");
/* hl_shm_shard.beat_ns and monitor_beat_ns after a clean stop: the thread
 * has exited and the worker is giving the table back; nobody judges it. */
#define HL_BEAT_STOPPED UINT64_MAX

/* Threads the keeper's watchdog follows: the monitor, then each shard. */
#define HL_THREADS_MAX (1u + HL_SHARDS_MAX)

struct hl_shm_header {
	/* ---- identity and geometry (line 0 on) ----
	 * Written once by the creator (hl__seg_create(): keeper or standalone
	 * worker) with plain stores before the object has a name anyone
	 * maps, magic last; read-only after, plain loads, by everyone, and
	 * checked by hl__seg_validate() before any other field is trusted.
	 * magic, version, header_size and format keep their offsets in every
	 * layout version, so that any build refuses any other version's
	 * segment with HL_EVERSION instead of misreading it. */
	uint64_t magic;       /* HL_MAGIC */
	uint32_t version;     /* HL_LAYOUT_VERSION */
	uint32_t header_size; /* sizeof(struct hl_shm_header) */
	uint64_t format;      /* hl__layout_format(): a hash of the struct sizes */
	uint64_t size;        /* total bytes of the segment */
	uint64_t created_ns;  /* CLOCK_REALTIME */

	/* capacities (creator; read-only after) */
	uint32_t max_keys, max_observers, max_endpoints, max_value;
	uint32_t shards, nbuckets, key_stride, ep_client_stride;
	uint32_t req_ring_bytes, ev_ring_bytes, heap_chunk, ep_worker_stride;
	uint64_t heap_bytes;

	/* region offsets from the segment's start (creator; read-only after) */
	uint64_t buckets_off, keys_off, observers_off, heap_off;
	uint64_t ep_worker_off, claims_off, ep_client_off;
	/* history (layout version 6): the region's offset (per shard one
	 * struct hl_shm_hist line, then the shards' rings) and the bytes of
	 * each shard's ring, a power of two (creator; read-only after) */
	uint64_t hist_off;
	uint32_t hist_bytes;
	uint32_t hist_pad;

	/* ---- ownership: one line, the keeper's (lib/owner.h) ----
	 * The owner record (owner_seq .. owner_start) has one writer at a
	 * time, hl__owner_write(): the keeper, or a worker while no keeper
	 * lives (standalone; at stop when no keeper answered). One exception
	 * to one-writer-per-line: the worker stores worker_ready, which
	 * belongs to the record (every change of owner clears it). Writes
	 * here happen at changes of owner or readiness, a few per worker
	 * life, never per request; the shard threads read owner_epoch before
	 * each batch, so the line stays shared in their caches. */
	/* Seqlock over owner_epoch/role/pid/start: odd while hl__owner_write()
	 * runs (opening increment relaxed + release fence, closing increment
	 * release). Read only through hl__owner_read(). Left odd by a writer
	 * killed mid-write; hl__owner_repair() by the next writer. */
	alignas(HL_CACHELINE) _Atomic uint64_t owner_seq;
	/* +1 at every change of owner (inside the seqlock). Also read alone,
	 * acquire, by the worker's shard and monitor threads before each batch
	 * (fencing: not their epoch = stop), which pairs with the closing
	 * release of owner_seq. */
	_Atomic uint64_t owner_epoch;
	_Atomic uint32_t owner_role;  /* HL_ROLE_*; in the seqlock */
	_Atomic uint32_t owner_pid;   /* in the seqlock; 0 when role is NONE */
	_Atomic uint64_t owner_start; /* owner's start time (proc stat field 22); in the seqlock */
	/* Keeper writes: its pid (release, after keeper_start) when it has
	 * locked the segment, 0 (relaxed) at its clean exit. Readers load
	 * keeper_pid, then keeper_start: a pair mixed by a keeper starting or
	 * exiting at that moment only makes it look dead for one read. The
	 * standalone worker refuses a segment whose keeper lives. */
	_Atomic uint32_t keeper_pid;
	/* 1 while a worker serves. The worker's monitor thread stores 1
	 * (release) once recovery is complete (part 2 done), its main thread
	 * 0 (release) at stop; hl__owner_write() stores 0 (release) before each change of
	 * owner. Readers (acquire, with owner_role/owner_pid): clients before
	 * waiting on a reply, heirloomctl, the systemd notifier. A SIGKILLed
	 * worker leaves it 1 until the keeper takes the table back: readers
	 * that care also check that owner_pid lives. */
	_Atomic uint32_t worker_ready;
	_Atomic uint64_t keeper_start; /* keeper's start time, see keeper_pid */
	/* Keeper writes (relaxed, after hl__owner_write() of a TAKE): times
	 * it gave the table to a worker. Readers: hl_stats(), heirloomctl. */
	_Atomic uint64_t handoffs;
	/* Keeper writes (release) 1 before it asks the serving worker to
	 * hand the table over for an upgrade (daemon/keeper/upgrade.c), 0
	 * once the new worker, or the old one after a rollback, set
	 * worker_ready; a starting keeper stores 0. While 1, clients treat
	 * the table as served (lib/client.c worker_serving(): acquire) and
	 * wait their timeout for an answer instead of failing at once with
	 * HL_OPEN_NOWAIT: the pause is planned and short. A keeper killed
	 * with it set leaves it set until the next keeper starts; clients
	 * then only wait, bounded by their timeout. Was pad1 (same size,
	 * same layout). */
	_Atomic uint64_t handover;

	/* ---- worker state: every line written by the worker process only ----
	 * Unless a field says otherwise: shard or main threads write with
	 * relaxed atomics, readers (hl_stats(), heirloomctl) load relaxed,
	 * and recovery rewrites it from the table before any thread serves. */
	/* Last revision given to a publish or delete: fetch_add (relaxed) by
	 * the shard thread that applies it, the result stored in the key and
	 * value under the key's seqlock; recovery raises it to the highest
	 * revision it finds. Global so revisions order changes across keys. */
	alignas(HL_CACHELINE) _Atomic uint64_t revision;
	/* Next observer sequence: fetch_add (relaxed) by the shard thread
	 * that links the observer, before the link (ids are never reused);
	 * recovery raises it past every id it finds. 1 at creation. */
	_Atomic uint64_t next_observer_seq;
	_Atomic uint64_t keys_used, observers_used, endpoints_used; /* gauges */
	_Atomic uint64_t heap_used; /* bytes in allocated blocks (class sizes) */
	/* Recovery (worker main and monitor threads): duration of the last
	 * pass in ns, repairs it made, and passes finished (both parts). */
	_Atomic uint64_t last_recovery_ns;
	_Atomic uint64_t last_recovery_repairs;
	_Atomic uint64_t recoveries;
	/* Worker's monitor thread writes (relaxed), about once a second;
	 * readers: hl_stats(). The worker process's allocated bytes from
	 * jemalloc (mallctl "stats.allocated" after "epoch"), 0 when the
	 * worker runs without jemalloc. Left as is when the worker stops: the
	 * figure of the last worker. Formerly the reserved resyncs_hint. */
	_Atomic uint64_t worker_mem_bytes;
	/* Monitor and shard threads (fetch_add): endpoints adopted, freed;
	 * cleanup passes and the observers they removed. The keeper's
	 * watchdog counts cleanup_* as progress. */
	_Atomic uint64_t endpoints_attached, endpoints_removed;
	_Atomic uint64_t cleanup_runs, cleanup_removed;
	/* Worker's main thread (fetch_add) at each attach, each of which runs
	 * recovery. Readers: hl_stats(). */
	_Atomic uint64_t reattaches;
	/* Descriptors (issue 21). Worker's main thread writes at start
	 * (relaxed), heirloomctl reads: its RLIMIT_NOFILE soft limit after
	 * raising it to the hard one, and how many clients that leaves it to
	 * watch with a pidfd each (the limit less what it needs itself). */
	_Atomic uint64_t nofile_limit, pidfd_capacity;
	/* Worker's monitor and shard threads write (relaxed): endpoints
	 * watched now by polling their pid + start time every monitor tick
	 * because pidfd_open() failed (out of descriptors), and how many
	 * times pidfd_open() failed for a live client. Never a reason to
	 * drop a client (daemon/worker/endpoint.c). */
	_Atomic uint64_t endpoints_polled, pidfd_failures;
	/* Pools that ran out (issue 21): requests refused with -ENOSPC for a
	 * full key pool, observer pool or value heap. Shard threads write
	 * (relaxed), heirloomctl reads; statistics only. A full endpoint
	 * table is seen only by the client that finds no free claim, which
	 * cannot write the header: not counted. */
	_Atomic uint64_t keys_full, observers_full, heap_full;
	/* Prefix entries in the key index (gauge, as keys_used, which counts
	 * the other key slots only): the shard thread that links or unlinks
	 * one (relaxed), recovery from the table. Readers: hl_stats(). In
	 * what was padding before the next line. */
	_Atomic uint64_t prefixes_used;
	/* High-water marks of the key and observer slot pools (layout 8):
	 * no slot above one has been written since the segment was created,
	 * so it reads as zero and recovery never reads it (reading the whole
	 * region cost tens of ms at a worker's start: SEEK_DATA cannot skip
	 * the pages the creator fallocate()d, lib/segment.c). Raised by the
	 * pool under its lock (lib/alloc.c hl__pool_alloc()) before the
	 * caller writes the slot: a release fence orders the two, so a crash
	 * between them leaves a mark above an untouched slot, never a
	 * written slot above the mark. Recovery raises each to the highest
	 * slot its walks reached (damage may link one above) and clamps it
	 * to the capacity. Pools only hand slots out while no recovery pass
	 * writes the mark: keys after part 1, observers after part 2.
	 * Readers: recovery; hl__keys_walk() (acquire: bounds its scan). */
	_Atomic uint32_t keys_hwm, obs_hwm;
	/* High-water mark of the endpoints (layout 9): no endpoint at or
	 * above it has had its worker lines (hl_shm_epw and its shards)
	 * written since the segment was created, so they read as zero (FREE,
	 * positions 0) and recovery and the monitor's passes never read them:
	 * each endpoint's lines sit ep_worker_stride apart, and touching 1,024
	 * of them cost a fresh worker a page fault each, most of the hot
	 * upgrade's pause. A count, not an index: endpoints 0..eps_hwm-1.
	 * Raised (CAS to the maximum, then a release fence) by the thread
	 * that adopts an endpoint before it writes the endpoint's lines
	 * (hl_w_ep_adopt(), and recovery's adoption of orphans), so a crash
	 * between the two leaves a mark above untouched lines, never written
	 * lines above the mark. Never lowered; when it jumps over endpoints,
	 * the worker's monitor vets those (their lines were never adopted).
	 * Readers: the worker (acquire, clamped to max_endpoints); clients do
	 * not use it (a claim above the mark is simply not adopted yet). */
	_Atomic uint32_t eps_hwm;
	uint32_t eps_hwm_pad;

	/* ---- liveness: heartbeats and the keeper's watchdog (issue 22) ----
	 * The shard threads' heartbeats are in shard[i].beat_ns. The
	 * protocol (docs/architecture.md, "Hang detection"): each worker
	 * thread that serves stores its coarse clock on every turn of its
	 * loop; the keeper reads them and SIGKILLs a worker one of whose
	 * threads made no progress for hang_timeout_ms. */
	/* Worker's monitor thread writes (relaxed) once per turn of its loop
	 * (at most 200 ms apart while it is idle); the worker's main thread
	 * sets it at attach, so recovery's part 1 and part 2 (which runs in
	 * the monitor before its loop) count as one pause. Same unit and
	 * readers as hl_shm_shard.beat_ns. Its own line. */
	alignas(HL_CACHELINE) _Atomic uint64_t monitor_beat_ns;
	/* ---- the keeper's lines ----
	 * Keeper writes (relaxed): its --hang-timeout in ms, at start (0 =
	 * watchdog off, or no keeper since the segment was created; a
	 * standalone worker leaves it as it is). Reader: heirloomctl, which
	 * says "hung" past it. */
	alignas(HL_CACHELINE) _Atomic uint64_t hang_timeout_ms;
	/* Keeper writes (relaxed), on each watchdog check: per thread (0 =
	 * monitor, 1 + i = shard i), the last CLOCK_MONOTONIC_COARSE ns at
	 * which the keeper saw it make progress: a new heartbeat, or work
	 * counted in its counters (requests applied, events written) while
	 * one long batch kept it from its loop. heirloomctl takes the later
	 * of this and the heartbeat, so it judges as the keeper does. */
	_Atomic uint64_t progress_ns[HL_THREADS_MAX];

	/* ---- durability (layout version 8; docs/architecture.md,
	 * "Durability") ----
	 * Written by the keeper (its main thread at start, its writer thread
	 * daemon/keeper/durable.c after) unless a field says otherwise; read
	 * by clients (a SYNC publish in log mode waits on durable_pos) and
	 * heirloomctl. Nothing here is written per request by the worker. */
	/* Keeper at start (relaxed, before any worker takes the table):
	 * HL_DUR_NONE, HL_DUR_SNAPSHOT or HL_DUR_LOG. */
	alignas(HL_CACHELINE) _Atomic uint32_t dur_mode;
	/* Writer thread (release), readers acquire: HL_DUR_ST_*. STARTING
	 * until the state on disk covers the table (a first snapshot after a
	 * keeper restart), OK, FAILED after a write, fsync or rename failed
	 * (dur_err says which), STOPPED once the keeper stopped. */
	_Atomic uint32_t dur_state;
	_Atomic int32_t dur_err; /* the last failure (negative errno), 0 = none */
	/* 1: restore the table from state_dir before serving. The keeper
	 * stores it (relaxed, before the segment is given to anyone) when it
	 * created the segment and found state; the worker stores 0 (release)
	 * once the restore is complete, the one worker store in these lines,
	 * once per segment. A worker killed mid-restore leaves it 1: the next
	 * one restores again (idempotent: every record overwrites). */
	_Atomic uint32_t dur_restore;
	/* Futex words. dur_seq: +1 (release) by the writer after each change
	 * of durable_pos or dur_state, then FUTEX_WAKE; SYNC clients wait on
	 * it. dur_kick: never changes; clients FUTEX_WAKE it (a wake needs
	 * no write access) when they wait, so the writer commits at once. */
	_Atomic uint32_t dur_seq;
	_Atomic uint32_t dur_kick;
	/* Writer (relaxed), statistics for heirloomctl: the table revision a
	 * completed snapshot covers, its wall-clock time (ns), snapshots
	 * completed, failures counted, bytes in the log since the last
	 * snapshot, records appended to it, keys in the last snapshot. */
	_Atomic uint64_t snap_rev, snap_ns, snapshots, dur_failures, log_bytes, log_records;
	_Atomic uint64_t snap_keys;
	/* Writer (release) after the fdatasync that made them durable: per
	 * shard, the history position (hl_shm_hist.head) up to which every
	 * change of that shard is on disk. A SYNC client in log mode waits
	 * (acquire) until its shard's entry reaches the history head it read
	 * after the worker's answer. */
	alignas(HL_CACHELINE) _Atomic uint64_t durable_pos[HL_SHARDS_MAX];
	/* Keeper at start: the state directory, NUL-terminated ("" in mode
	 * none). The worker restores from it (dur_restore). */
	char state_dir[HL_STATE_DIR_MAX];

	/* ---- log ring: appended by keeper and worker, slot = (log_head % LEN).
	 * The second exception to one-writer-per-line: both daemons append,
	 * a few records per worker life (exits, hand-offs, recoveries, bad
	 * clients), never per request. Writers claim a slot (fetch_add,
	 * acq_rel), fill it with kind = 0, and store kind last (release);
	 * readers load log_head, then each kind (acquire) and skip records
	 * whose kind is 0 (hl__seglog() in lib/seglog.c is the one writer). */
	alignas(HL_CACHELINE) _Atomic uint64_t log_head;
	struct hl_shm_logrec log[HL_ERRLOG_LEN];

	struct hl_shm_shard shard[HL_SHARDS_MAX];
};

/* What the format relies on. Offsets that every layout version keeps (the
 * identity), each section's first line, the owner record's line, and the
 * separation of lines written by different processes. */
#define HL_LINE_OF(type, f) (offsetof(type, f) / HL_CACHELINE)
_Static_assert(offsetof(struct hl_shm_header, magic) == 0 &&
                       offsetof(struct hl_shm_header, version) == 8 &&
                       offsetof(struct hl_shm_header, header_size) == 12 &&
                       offsetof(struct hl_shm_header, format) == 16 &&
                       offsetof(struct hl_shm_header, size) == 24,
               "the identity keeps its offsets in every layout version");
_Static_assert(offsetof(struct hl_shm_header, owner_seq) == 3 * HL_CACHELINE,
               "the owner record follows the geometry");
_Static_assert(HL_LINE_OF(struct hl_shm_header, handoffs) ==
                               HL_LINE_OF(struct hl_shm_header, owner_seq) &&
                       HL_LINE_OF(struct hl_shm_header, worker_ready) ==
                               HL_LINE_OF(struct hl_shm_header, owner_seq),
               "the owner record, keeper record and worker_ready are one line");
_Static_assert(offsetof(struct hl_shm_header, revision) ==
                       offsetof(struct hl_shm_header, owner_seq) + HL_CACHELINE,
               "the worker's state starts on the line after the owner's");
_Static_assert(HL_LINE_OF(struct hl_shm_header, heap_full) <
                               HL_LINE_OF(struct hl_shm_header, monitor_beat_ns) &&
                       HL_LINE_OF(struct hl_shm_header, monitor_beat_ns) <
                               HL_LINE_OF(struct hl_shm_header, hang_timeout_ms),
               "worker state, monitor heartbeat and keeper lines are apart");
_Static_assert(offsetof(struct hl_shm_header, hang_timeout_ms) % HL_CACHELINE == 0 &&
                       offsetof(struct hl_shm_header, log_head) % HL_CACHELINE == 0 &&
                       offsetof(struct hl_shm_header, progress_ns) +
                                       sizeof(((struct hl_shm_header *)0)->progress_ns) <=
                               offsetof(struct hl_shm_header, log_head),
               "the keeper's lines hold only the keeper's fields");
_Static_assert(offsetof(struct hl_shm_header, shard) % HL_CACHELINE == 0, "shards start on a line");
/* A change of this size is a new HL_LAYOUT_VERSION (and format word). */
_Static_assert(sizeof(struct hl_shm_header) == 23680 + 15 * 64, "header size of layout version 9");
_Static_assert(offsetof(struct hl_shm_header, dur_mode) % HL_CACHELINE == 0 &&
                       offsetof(struct hl_shm_header, durable_pos) % HL_CACHELINE == 0 &&
                       offsetof(struct hl_shm_header, state_dir) + HL_STATE_DIR_MAX <=
                               offsetof(struct hl_shm_header, log_head),
               "the durability lines are the keeper's own");
_Static_assert(sizeof(((struct hl_shm_header *)0)->shard) / sizeof(struct hl_shm_shard) ==
                       HL_SHARDS_MAX,
               "one hl_shm_shard per possible shard");

/* A bucket of the key index: a chain of key slots linked by hl_shm_key.next.
 * Written only by the shard thread that owns the bucket (bucket % shards;
 * recovery before it runs); read lock-free by clients (lib/table_read.c)
 * and heirloomctl. Buckets of different shards share lines: a documented
 * cost, not a correctness matter (one process writes them all). */
struct hl_shm_bucket {
	/* Seqlock over the chain (lib/seqlock.h): odd while a slot is linked
	 * or unlinked; readers acquire it, walk, fence, recheck. */
	_Atomic uint32_t seq;
	/* First slot (1-based), HL_NIL = empty. Stored (release) inside the
	 * seqlock; readers load it acquire. */
	_Atomic uint32_t head;
};
_Static_assert(sizeof(struct hl_shm_bucket) == 8, "bucket is 8 bytes");

/*
 * A key slot (key_stride bytes: this header, then the key bytes).
 * Written only by the owning shard thread; read by clients under `seq`.
 * A slot is in use iff it is reachable from its bucket; `used` mirrors that
 * for cheap scans and is rebuilt by recovery.
 */
struct hl_shm_key {
	/* Value seqlock (lib/seqlock.h): odd while val/rev change; clients
	 * read val, rev and the block under it (hl_get()). */
	_Atomic uint64_t seq;
	/* Heap offset of the current value block, 0 = none, bit 0 =
	 * HL_VAL_DELETED. Commit point of publish/delete (release, inside the
	 * seqlock): the block is complete before it. */
	_Atomic uint64_t val;
	_Atomic uint64_t rev; /* revision of val (or of the delete); in the seqlock */
	/* Next slot in the bucket chain, under the bucket's seqlock: a new
	 * slot's is stored (relaxed) before bucket.head publishes it
	 * (release); walkers load it acquire. */
	_Atomic uint32_t next;
	/* First observer (1-based), HL_NIL = none. Stored release when an
	 * observer is linked at the head or the head unlinked (the commit of
	 * that change); readers (dispatch under RCU, hl_inspect()) follow it
	 * with acquire loads. */
	_Atomic uint32_t obs_head;
	_Atomic uint32_t nobs; /* observers linked (relaxed; for inspect; rebuilt) */
	/* 1 while linked in a bucket: stored 1 (relaxed) before the link that
	 * publishes it, 0 at the unlink; scans (hl_keys()) load it acquire and
	 * still check the slot under the bucket seqlock. Rebuilt by recovery. */
	_Atomic uint32_t used;
	/* Set before the slot is linked (published by the bucket's release),
	 * then immutable while it is used: */
	/* hl__hash(key), or hl__hash_prefix(prefix) for a prefix entry:
	 * the slot of a prefix observed with HL_OBSERVE_PREFIX, which never
	 * has a value (val and rev stay 0) and holds the list of that
	 * prefix's observers in obs_head. Bit 63 (HL_HASH_PREFIX) tells
	 * which; lookups compare the whole hash, so a key never finds a
	 * prefix entry. */
	uint64_t hash;
	uint32_t key_len;
	/* Shard thread only, plain: who deleted it (pending or last delete)
	 * and its request's CLOCK_MONOTONIC time, for the delete's events. */
	uint32_t del_pid;
	uint64_t del_ts;
	/* key bytes follow (key_stride - 64) */
};
_Static_assert(sizeof(struct hl_shm_key) == 64, "key header is one line");
_Static_assert(offsetof(struct hl_shm_key, seq) == 0 && offsetof(struct hl_shm_key, val) == 8 &&
                       offsetof(struct hl_shm_key, rev) == 16,
               "the value seqlock and what it guards lead the slot");

/* Value block in the heap: this header, meta bytes, value bytes.
 * Written by the shard thread before `val` is published; immutable after,
 * except `prev`, which is cleared when dispatch of this revision is done. */
#define HL_VAL_PUT 1u
#define HL_VAL_PENDING_NEW                                                                         \
	0x100u /* type flag: first value of the key, dispatch                                      \
	        * pending (there is no prev to mark it) */
/* Bit 0 of hl_shm_key.val: the key was deleted and the delete's dispatch is
 * pending; the rest of the word is the old value block (kept until then).
 * Readers treat the key as absent. */
#define HL_VAL_DELETED 1ull
struct hl_shm_value {
	uint64_t rev;
	/* Old value block kept while dispatch of `rev` is unfinished; 0 once
	 * every observer has the event. Shard thread: stored before the
	 * commit (in the block), cleared (relaxed) after dispatch. Readers:
	 * that shard thread and recovery, which redelivers when non-zero. */
	_Atomic uint64_t prev;
	uint32_t len; /* value bytes */
	uint16_t meta_len;
	uint16_t type; /* HL_VAL_* */
	uint32_t pub_pid;
	uint32_t klass; /* allocator size class of this block */
	uint64_t ts_ns; /* CLOCK_MONOTONIC at publish (from the request) */
	/* Origin: the request whose commit made this block what the key
	 * holds: its endpoint, that endpoint's incarnation and the request's
	 * ring position. Written by the publish that fills the block, before
	 * the commit; rewritten (before its commit) by the delete that
	 * deletes it, so that a deleted key's pending old block names the
	 * delete. Read only by recovery's replay check (hl_w_req_committed()):
	 * the evidence, stored in the same commit step as the effect, that
	 * the request in flight at a crash was applied. Never read by
	 * clients. org_ep = UINT32_MAX: the worker's own publish. */
	uint32_t org_ep;
	uint32_t org_gen;
	uint64_t org_pos;
	/* meta then value bytes follow */
};
_Static_assert(sizeof(struct hl_shm_value) == 56, "value header");

/* Observer slot. Written only by the worker; read by clients (inspect).
 * Linked into its key's list by next/prev (1-based). Readers follow only
 * `next`: unlinking stores prev->next first (the commit), and the slot is
 * reused only after an RCU grace period in the worker. */
struct hl_shm_observer {
	/* 0 = free. Stored (release) after the slot's other fields, before
	 * obs_head or a prev's next links it; 0 (release) at its unlink, the
	 * slot reused only after an RCU grace period. Readers load it acquire
	 * and skip 0. */
	_Atomic uint64_t id;
	/* List links (1-based), stored by the key's shard thread: a new
	 * slot's next relaxed before the link's release; at unlink the prev's
	 * next (or obs_head) with release, the commit. Readers load next
	 * acquire. `prev` is read by the worker only (unlink, recovery). */
	_Atomic uint32_t next, prev;
	uint32_t key;      /* 1-based key slot */
	uint32_t endpoint; /* 0-based endpoint index */
	uint32_t ep_gen;   /* endpoint incarnation that owns it */
	/* HL_OBSERVE_* (heirloom.h): the observe request's filters, stored
	 * before `id` publishes the slot and immutable while it is linked.
	 * Read by dispatch (collect(), same line as `id`: no extra miss) to
	 * skip a filtered event type before it costs ring space, and to leave
	 * out the old value when no observer of an endpoint wants it. Kept
	 * as is by recovery (an observer's filters survive worker restarts).
	 * Validated on the request (request.c), never trusted from here by
	 * clients, which keep their own copy. */
	uint32_t flags;
	/* Shard thread (relaxed): last revision written to its ring, and
	 * events dropped for lag. For a prefix observer (HL_OBSERVE_PREFIX in
	 * flags) delivered_rev is instead its start revision: the global
	 * revision when it was linked, stored before `id` and never changed;
	 * dispatch gives it only changes after that one (several shards
	 * write to it, so no per-shard progress fits in one word); `dropped`
	 * is then added to by several shard threads (fetch_add). Both are
	 * read by hl_inspect(); the client learns of drops through its
	 * epw_shard.lag_seq, released after. */
	_Atomic uint64_t delivered_rev;
	_Atomic uint64_t dropped;
	uint64_t created_ns; /* CLOCK_REALTIME */
	uint64_t req_pos;    /* ring position (of endpoint/ep_gen, on its
	                      * key's shard) of the request that last
	                      * changed it: the observe that linked it,
	                      * then the unobserve that unlinks it
	                      * (stored before that unlink). Recovery's
	                      * replay check reads it. */
};
_Static_assert(sizeof(struct hl_shm_observer) == 64, "observer is one line");
/* Every HL_OBSERVE_* flag this layout knows (hl_shm_observer.flags). */
#define HL_OBSERVE_ALL                                                                             \
	(HL_OBSERVE_NOPUT | HL_OBSERVE_NODELETE | HL_OBSERVE_NOOLD | HL_OBSERVE_PREFIX)

/* ---- endpoints ---- */

/* Claim word of an endpoint: pid in the low 32 bits, incarnation (gen) in the
 * high 32. pid 0 = free. A client claims with CAS {0,g} -> {pid,g+1}; the
 * worker frees with a store of {0,g} once the endpoint is cleaned up. gen 0
 * is never an incarnation: {pid,0} is a banned endpoint held by the worker
 * until that process exits (quarantine, daemon/worker/endpoint.c). The
 * worker also holds a free claim {0,g} as {its own pid,g}, briefly, while
 * it repairs damaged ring positions of that endpoint (hl_w_ep_fix_free()):
 * a client copies them when it claims, so they must not change under it. */
#define HL_CLAIM_PID(w)    ((uint32_t)((w)&0xffffffffu))
#define HL_CLAIM_GEN(w)    ((uint32_t)((w) >> 32))
#define HL_CLAIM(pid, gen) (((uint64_t)(gen) << 32) | (uint64_t)(pid))

/* The claims region is client-writable: the worker checks every value it
 * reads here. A claim's line is the hand-over point between one client and
 * the worker, so both write it (the documented exception): the client at
 * claim, the worker when it frees; never both at once. */
struct hl_shm_claim {
	/* HL_CLAIM(pid, gen). Client: CAS {0,g} -> {pid,g+1} (acq_rel). Worker:
	 * store {0,g} (release) once the old incarnation is cleaned up, or
	 * {pid,0} to quarantine a banned one. Readers load acquire. */
	_Atomic uint64_t word;
	/* Claimer's start time: the client stores it (relaxed) right after its
	 * CAS; the worker stores 0 (relaxed) before it frees the word. The
	 * worker's prune pass reads it (relaxed) with the word to tell a dead
	 * claimer from a live one; 0 while free or not yet written. */
	_Atomic uint64_t start_time;
	/* = gen once the client's ep_client block is initialised: client
	 * stores it (release) last; the worker adopts on an acquire load equal
	 * to the word's gen. */
	_Atomic uint32_t ready;
	uint32_t pad[11];
};
_Static_assert(sizeof(struct hl_shm_claim) == 64, "claim is one line");

/* Per shard in the claims region: the doorbell the shard thread sleeps on
 * and one pending bit per endpoint (set by a client after it queued a
 * request for this shard: fetch_or, release, pairing with the shard
 * thread's acquire exchange to 0 that takes it). Written by every client
 * of the shard and read by its thread: many writers by design; a garbage
 * value costs a spurious wake-up or a 100 ms wait, never a request. */
struct hl_shm_doorbell {
	/* Futex word: a client that found hl_shm_shard.sleeping set adds 1
	 * (relaxed) and wakes; the shard thread loads it (acquire) before it
	 * publishes `sleeping` and waits on that value. */
	alignas(HL_CACHELINE) _Atomic uint32_t word;
	uint32_t pad[15];
};
_Static_assert(sizeof(struct hl_shm_doorbell) == HL_CACHELINE, "doorbell is one line");

/* Worker side of one endpoint-shard pair (in ep_worker, read-only for
 * clients). All fields are written by the shard thread that owns the pair
 * (or by recovery before any shard thread runs).
 *
 * The life of one request at ring position P (docs/architecture.md, "The
 * failure contract"):
 *   intent_pos = P + 1          the request is being applied (relaxed; the
 *                               commit's release orders it first)
 *   COMMIT                      its effect, one store (apply.c), naming P
 *                               in the record it publishes (value origin,
 *                               observer req_pos)
 *   done_pos = P + 1 (release)  with done_result: the outcome, recorded
 *                               right after the commit and before anything
 *                               (dispatch, frees) could erase the evidence
 *   result_pos = P + 1          SYNC requests only: the answer the client
 *                               reads (release, after `result`)
 *   req_tail past P (release)   the acknowledgement: P leaves the ring
 * A restarted worker finds at most one request per shard with intent_pos
 * == P + 1 and req_tail <= P: if done_pos == P + 1 it was applied with
 * done_result; else recovery looks for the commit's evidence
 * (hl_w_req_committed()). Either way it is answered and consumed before
 * any other request is applied, or left to be applied for the first time.
 */
struct hl_shm_epw_shard {
	/* Request ring consumer position: stored release after a request is
	 * applied and answered (hl__ring_consume()); the client loads it
	 * acquire (ring space, "was it taken"). Partner: epc_shard.req_head. */
	alignas(HL_CACHELINE) _Atomic uint64_t req_tail;
	/* Event ring producer position: stored release after the records
	 * (hl__ring_commit()); the client loads it acquire. Partner:
	 * epc_shard.ev_tail. */
	_Atomic uint64_t ev_head;
	/* SYNC answer: `result` (observer id or -errno) stored relaxed, then
	 * result_pos = P + 1 with release; the client acquires result_pos and
	 * reads `result` only when it names its request. */
	_Atomic uint64_t result_pos;
	_Atomic int64_t result;
	_Atomic uint64_t intent_pos; /* request being applied (+1): crash marker, relaxed */
	/* Outcome record: done_result relaxed, then done_pos = P + 1 release,
	 * right after the commit. Read by recovery only. */
	_Atomic uint64_t done_pos;
	_Atomic int64_t done_result; /* 0, observer id or -errno */
	/* +1 (release) whenever an event was dropped, after the observers'
	 * `dropped`; the client acquires it to hand out LAGGED. */
	_Atomic uint64_t lag_seq;
	/* second line: written rarely (errors, lag) */
	/* Failed requests nobody waited for: last_err (relaxed), then
	 * async_errs +1 (release), then err_pos = P + 1 (relaxed: recovery's
	 * "already counted" mark). The client acquires async_errs, then reads
	 * last_err (hl_flush()). */
	alignas(HL_CACHELINE) _Atomic uint64_t async_errs;
	_Atomic uint64_t err_pos;
	_Atomic int32_t last_err;
	uint32_t pad;
	/* lag_seq when the last event record flagged HL_EVRF_LAG_BEFORE was
	 * written: while it differs from lag_seq, the next record written to
	 * this ring carries the flag (dispatch.c, deliver_ep()). */
	_Atomic uint64_t lag_marked;
	/* The start revision of the observer a SYNC observe was answered
	 * with (its slot's delivered_rev right after the link: the key's
	 * revision, or a prefix observer's start), stored (relaxed) before
	 * result_pos's release, by drain() and by recovery's answer of a
	 * replayed observe. The client reads it after it acquired
	 * result_pos naming its request: events of that observer with a
	 * revision not above it are not its own (history catch-up, lib/
	 * history.h). */
	_Atomic uint64_t result_rev;
};
_Static_assert(sizeof(struct hl_shm_epw_shard) == 128, "epw shard is two lines");

/* Worker side of one endpoint: its header, then one hl_shm_epw_shard per
 * shard, then the shards' event rings (ev_ring_bytes each). Written only by
 * the worker (monitor thread at adoption and cleanup, shard threads for
 * ev_signal and nobs); read-only for clients. */
struct hl_shm_epw {
	/* Futex word of a group of 32 endpoints (layout 9): only that of
	 * endpoint 32k is used, by endpoints 32k..32k+31 (hl__ep_signal()).
	 * Each client waits with FUTEX_WAIT_BITSET and its own bit
	 * (hl__ep_signal_bit()); the worker, after ring or answer stores for
	 * endpoints whose epc.sleeping says someone waits, adds 1 (release)
	 * and wakes them all with one FUTEX_WAKE_BITSET of their bits, where
	 * it made one FUTEX_WAKE per endpoint (a fan-out to 64 processes: 2
	 * system calls, not 64). Clients load it (acquire) before re-checking
	 * and waiting on that value; another endpoint's wake-up moves the
	 * value too, which only makes a wait return at once to re-check. */
	alignas(HL_CACHELINE) _Atomic uint32_t ev_signal;
	/* HL_EP_*. Stored release after the fields below (adoption: ACTIVE
	 * last) and after cleanup (FREE last, before the claim is freed);
	 * clients and the worker's threads load it acquire. */
	_Atomic uint32_t state;
	/* Incarnation, pid and start time adopted from the claim; relaxed,
	 * published by the release of `state`. */
	_Atomic uint32_t gen;
	_Atomic uint32_t pid;
	_Atomic uint64_t start_time;
	_Atomic uint64_t attached_ns; /* CLOCK_REALTIME at adoption; same */
	_Atomic uint64_t nobs;        /* observers held (relaxed; hl_stats()) */
	/* Slow-reader report. Worker's monitor thread writes (relaxed), on its
	 * ticks, while the endpoint is ACTIVE; readers: hl_stats(), heirloomctl.
	 * Bits 0..62: CLOCK_REALTIME ns when the client was last seen reading
	 * its event rings (a tail moved) or having nothing waiting in them.
	 * HL_EPW_SLOW (bit 63): set while events wait and no tail moved for the
	 * worker's --slow-reader-ms; cleared when the client reads again. Reset
	 * at adoption. A stale value is harmless: it is a report only, the
	 * endpoint keeps its observers either way. */
	_Atomic uint64_t last_read_ns;
};
#define HL_EPW_SLOW (1ull << 63)
_Static_assert(sizeof(struct hl_shm_epw) == HL_CACHELINE,
               "epw header is one line (hl__epw_shard() adds one)");

#define HL_EP_FREE   0u
#define HL_EP_ACTIVE 1u
#define HL_EP_DEAD   2u /* process gone, cleanup running */
#define HL_EP_BANNED 3u /* dropped for garbage in its rings */

/* Client side of one endpoint-shard pair: written by that client only
 * (its own ep_client block, mapped writable in it alone); the worker
 * treats both as untrusted and bounds them against its own positions. */
struct hl_shm_epc_shard {
	/* Request ring producer position: stored release after the record
	 * (hl__ring_commit()), then the pending bit; the shard thread loads it
	 * acquire. Partner: epw_shard.req_tail. */
	alignas(HL_CACHELINE) _Atomic uint64_t req_head;
	/* Event ring consumer position: stored release after the client read
	 * the records; the worker loads it acquire for space (and the monitor,
	 * relaxed, for the slow-reader report). Partner: epw_shard.ev_head. */
	_Atomic uint64_t ev_tail;
};
_Static_assert(sizeof(struct hl_shm_epc_shard) == HL_CACHELINE, "epc shard is one line");

/* Client side of one endpoint: header, per-shard cursors, then request rings. */
struct hl_shm_epc {
	/* Threads of the client waiting on epw.ev_signal: +1 (relaxed, then a
	 * seq_cst fence) before waiting, -1 after. The worker reads it (relaxed
	 * after its seq_cst fence) to decide to wake: Dekker pair with its ring
	 * stores. A client-written hint: garbage costs a spurious wake-up. */
	alignas(HL_CACHELINE) _Atomic uint32_t sleeping;
	/* The client's incarnation, stored at claim (relaxed). Read by nobody:
	 * the worker takes the incarnation from the claim word. For dumps. */
	_Atomic uint32_t gen;
	/*
	 * hl_fd() (lib/client.c, issue 15). The client's wake socket: an
	 * AF_UNIX SOCK_DGRAM socketpair whose read end hl_fd() returns and
	 * whose write end stays open in the client so that any worker can take
	 * a copy with pidfd_getfd(2): at HL_REQ_WAKEFD, and again in recovery
	 * after a restart (the number must outlive the worker, hence here).
	 *  wake_fd   write end's descriptor number + 1 in the client; 0 = none.
	 *            Zeroed at claim; stored (relaxed) before HL_REQ_WAKEFD is
	 *            queued (the ring commit's release publishes it); zeroed
	 *            when hl_fd() fails and at hl_close().
	 *  wake_ino  st_ino of that write end, stored with wake_fd. The worker
	 *            takes a copy only if it is an AF_UNIX datagram socket with
	 *            this inode whose peer is the client's own pid: a number
	 *            the client closed and reused, or a stale value, never makes
	 *            the worker write into another file.
	 *  wake_arm  +1 (relaxed, then a seq_cst fence, then the rings are
	 *            checked again) each time hl_next() finds nothing for the
	 *            caller's loop. The worker, after its seq_cst fence in
	 *            wake_one(), sends one datagram when it differs from the
	 *            value it last sent for (struct hl_ep wake_fired): the same
	 *            Dekker pair as `sleeping`, so an event committed before the
	 *            worker read wake_arm is found by the client's re-check, and
	 *            one committed after is signalled. Garbage only costs this
	 *            client spurious datagrams.
	 */
	_Atomic uint32_t wake_fd;
	_Atomic uint32_t wake_arm;
	_Atomic uint64_t wake_ino;
	/* Progress (issue 14 item 5): the smallest progress interval of this
	 * client's observers in ms, 0 = none asked. The client stores it
	 * (relaxed) at each observe or unobserve of such an observer; the
	 * worker's monitor reads it (relaxed) every tick and wakes the client
	 * (futex and hl_fd() datagram, as for an event) about that often, so
	 * that a loop asleep on hl_fd() calls hl_next(), which hands out the
	 * due HL_EV_PROGRESS events. Client-written: the monitor clamps it to
	 * HL_PROGRESS_MS_MIN; garbage costs this client spurious wake-ups. */
	_Atomic uint32_t progress_ms;
};
/* Request (shard 0, SYNC, no key, value or meta; arg 0): take a copy of
 * the wake socket epc.wake_fd names (pidfd_getfd), answered 0 or -errno.
 * Defined here rather than among the HL_REQ_* above: it is the wake
 * protocol's, and an unknown type is -EPROTO to an older worker. */
#define HL_REQ_WAKEFD 16u
_Static_assert(sizeof(struct hl_shm_epc) == HL_CACHELINE,
               "epc header is one line (hl__epc_shard() adds one)");

/* ---- ring records ---- */

/* Every record in a request or event ring starts with this, is 8-byte
 * aligned and never wraps: a record that would cross the end is preceded by
 * a HL_REC_PAD filling the rest. size includes the header. */
struct hl_rec_hdr {
	uint32_t size;
	uint16_t type;
	uint16_t key_len;
};

#define HL_REC_PAD 0u
/* requests */
#define HL_REQ_PUBLISH   1u
#define HL_REQ_DELETE    2u
#define HL_REQ_OBSERVE   3u
#define HL_REQ_UNOBSERVE 4u
#define HL_REQ_CLOSE     5u
/* Conditional publish and delete (compare-and-set): applied only if the
 * key's current revision equals hl_req.arg (0: the key has no value, or is
 * deleted). Always SYNC (request.c refuses them without it): the caller
 * needs the answer, encoded in result/done_result as hl__cond_ok() or
 * hl__cond_conflict() below. docs/architecture.md, "Compare-and-set". */
#define HL_REQ_PUBLISH_IF 6u
#define HL_REQ_DELETE_IF  7u
/* hl_req.flags. The word holding them (with val_len and meta_len) is the
 * record's second 8-byte word: the client and the worker change it with
 * one compare-and-swap each, and whoever swaps first decides whether the
 * request is applied (the withdraw-versus-take race, lib/client.c
 * withdraw() and shard.c take()).
 *  SYNC       set by the client: it waits for the answer in result /
 *             result_pos, and it may withdraw the request until a worker
 *             takes it. Without it a failure is reported like an
 *             asynchronous publish's (last_err, async_errs, hl_flush()).
 *  TAKEN      set by the worker (CAS from SYNC) before it applies a SYNC
 *             request; from then on the request will be applied, through
 *             any crash.
 *  WITHDRAWN  set by the client (CAS from SYNC) when it gives up on the
 *             request: the worker skips it, and it is never applied.
 * Any other bit, or TAKEN and WITHDRAWN together, or either without SYNC,
 * is a protocol error. */
#define HL_REQF_SYNC      1u
#define HL_REQF_TAKEN     2u
#define HL_REQF_WITHDRAWN 4u
/* events */
#define HL_EVR_PUT    16u
#define HL_EVR_DELETE 17u

/* Request: header, then key, meta, value (each unpadded), then padding. */
struct hl_req {
	struct hl_rec_hdr h;
	uint32_t val_len;
	uint16_t meta_len;
	uint16_t flags;
	uint64_t arg;   /* observer id for UNOBSERVE, HL_OBSERVE_* flags for
	                 * OBSERVE, the expected revision for *_IF */
	uint64_t ts_ns; /* CLOCK_MONOTONIC when queued */
};
_Static_assert(sizeof(struct hl_req) == 32, "request header");

/* Event: header, then nobs observer ids (u64), then key, meta, old, new. One
 * record carries the change for every observer of the key in this endpoint
 * (fan-out batching); a record never holds more than HL_EV_IDS_MAX ids. */
struct hl_evrec {
	struct hl_rec_hdr h;
	uint32_t nobs;
	uint32_t pub_pid;
	uint32_t old_len; /* UINT32_MAX = no old value */
	uint32_t new_len;
	uint16_t meta_len;
	uint16_t flags; /* HL_EVRF_* */
	uint32_t pad1;
	uint64_t rev;
	uint64_t ts_ns;
};
_Static_assert(sizeof(struct hl_evrec) == 48, "event header");
/* hl_evrec.flags. LAG_BEFORE: events for observers of this endpoint-shard
 * were dropped (ring full) after the previous record and before this one;
 * the client hands out LAGGED + RESYNC for them before this record's
 * events, so the resync takes the place of what was dropped. */
#define HL_EVRF_LAG_BEFORE 1u
#define HL_EV_IDS_MAX      512u

/* The answer of a conditional request (HL_REQ_*_IF) in the one 64-bit
 * result word (epw_shard.result, done_result), so that the SYNC answer,
 * the done record and recovery's replay stay single stores:
 *   >= 0                      applied (or nothing to do): the key's
 *                             revision after it (0: the key has no value)
 *   -HL_COND_BIAS - rev       conflict: nothing changed; rev is the key's
 *                             current revision (0: absent or deleted)
 *   anything else < 0         -errno or HL_E* (all above -2^31), as for
 *                             a plain request
 * Revisions stay below 2^62 (one per publish, for centuries). */
#define HL_COND_BIAS (1ll << 32)
static inline int64_t
hl__cond_conflict(uint64_t rev)
{
	return -HL_COND_BIAS - (int64_t)rev;
}
static inline int
hl__cond_is_conflict(int64_t res)
{
	return res <= -HL_COND_BIAS;
}
static inline uint64_t
hl__cond_rev(int64_t res)
{
	return (uint64_t)(-(res + HL_COND_BIAS));
}
static inline int
hl__req_is_write(uint16_t type)
{
	return type == HL_REQ_PUBLISH || type == HL_REQ_DELETE || type == HL_REQ_PUBLISH_IF ||
	       type == HL_REQ_DELETE_IF;
}

/* Observer ids are (seq << 24) | slot and travel as non-negative int64
 * results: seq stays below 2^39 (5.5e11 observes per segment). */
#define HL_OBS_SEQ_LIMIT (1ull << 39)
#define HL_NO_LEN        UINT32_MAX

/* Append to the header's log ring (lib/seglog.c). */
void hl__seglog(struct hl_shm_header *h, uint32_t kind, int32_t code, uint32_t pid, uint64_t epoch,
                const char *text);

/* ---- history (docs/architecture.md, "History and resume") ----
 *
 * One ring per shard of the changes that shard applied, in revision order:
 * written by the shard thread in hl_w_dispatch_pending() (daemon/worker/
 * history.c) after the change's commit and before its events, read by
 * clients straight from their read-only mapping (lib/history.h). Positions
 * are 64-bit byte counters that only grow; records never wrap (a
 * HL_REC_PAD fills the end, as in ring.h). [tail, head) holds complete
 * records. The writer makes room by moving tail past the oldest records
 * before it overwrites their bytes:
 *   floor_rev = the newest evicted record's revision (relaxed)
 *   tail      = past it (release), then a release fence
 *   record bytes (relaxed word stores, hl__racy_copy_in)
 *   head      = past the record (release): the append's COMMIT
 * A reader copies a record at position P < head (acquire) word by word,
 * fences (acquire) and loads tail again: P >= tail means no byte it
 * copied was overwritten (the seqlock of this ring); else it fell behind,
 * and floor_rev (loaded after tail) says whether a record it still needed
 * is gone. Every change of the shard with a revision above floor_rev is in
 * [tail, head) or not appended yet. */
struct hl_shm_hist {
	/* Worker (the shard's thread; recovery before it runs). Readers:
	 * clients (acquire on head and tail), heirloomctl. */
	alignas(HL_CACHELINE) _Atomic uint64_t head;
	_Atomic uint64_t tail;
	_Atomic uint64_t floor_rev;
	_Atomic uint64_t appends; /* records appended since creation (statistics) */
	/* Worker only (layout 8): where the ring ends, so that recovery need
	 * not walk it (a walk of 8 MiB rings cost 36 ms before the first
	 * publish was served). Before each append's commit (the head's
	 * release store), in this order: prev_rev = the revision of the
	 * last record committed (floor_rev when none); then last_pos and
	 * last_rev = the start and revision of the record being appended.
	 * So after a crash either the record at last_pos ends at head and
	 * has last_rev (it is the last one), or last_pos is at or past head
	 * (killed before the commit) and prev_rev is the last revision. */
	_Atomic uint64_t last_pos, last_rev, prev_rev;
	uint64_t pad;
};
_Static_assert(sizeof(struct hl_shm_hist) == HL_CACHELINE, "history control is one line");

/* A history record: this, then key, meta and value bytes (unpadded), then
 * padding to 8. h.type is HL_EVR_PUT or HL_EVR_DELETE (no meta, no value),
 * or HL_REC_PAD. It carries no old value: an event made from it has none
 * (has_old 0). */
struct hl_hist_rec {
	struct hl_rec_hdr h;
	uint64_t rev;
	uint32_t val_len;
	uint16_t meta_len;
	uint16_t flags; /* 0 */
	uint32_t pub_pid;
	uint32_t pad;
	uint64_t ts_ns;
};
_Static_assert(sizeof(struct hl_hist_rec) == 40, "history record header");

static inline uint32_t
hl__hist_rec_bytes(uint32_t key_len, uint32_t meta_len, uint32_t val_len)
{
	return (uint32_t)((sizeof(struct hl_hist_rec) + key_len + meta_len + val_len + 7u) & ~7u);
}

/* Bytes of the history region's control lines (one per shard), page
 * rounded: the shards' rings follow. */
static inline uint64_t
hl__hist_ctl_bytes(uint32_t shards)
{
	return ((uint64_t)shards * sizeof(struct hl_shm_hist) + HL_PAGE - 1) / HL_PAGE * HL_PAGE;
}

/* ---- computed layout ---- */

/* Default capacities (hl__layout_defaults(), the daemons' --help). Chosen
 * so that the default segment fits, with room to spare, in the 64 MiB
 * /dev/shm a Docker container gets unless told otherwise: about 24 MiB with
 * 2 shards, 30 MiB with 4 (README, "Sizing"). Plain numbers: the daemons
 * stringify them for their option tables. */
#define HL_DEF_KEYS         16384
#define HL_DEF_OBSERVERS    65536
#define HL_DEF_ENDPOINTS    64
#define HL_DEF_VALUE        4096
#define HL_DEF_SHARDS_MAX   4 /* default shards: CPUs, at most this */
#define HL_DEF_REQ_RING     16384
#define HL_DEF_EV_RING      32768
#define HL_DEF_HEAP_PER_KEY 512
#define HL_DEF_HISTORY      1048576 /* history ring per shard */

/* What each capacity costs in a segment (hl__layout_sizes()), in bytes,
 * page rounded as laid out. */
struct hl_layout_sizes {
	uint64_t header;       /* header, counters, log ring */
	uint64_t keys;         /* buckets + key slots: ~ 328 B a key */
	uint64_t observers;    /* 64 B an observer */
	uint64_t heap;         /* the value heap */
	uint64_t history;      /* the history rings of every shard */
	uint64_t endpoints;    /* rings, claims and control of every endpoint */
	uint64_t per_endpoint; /* endpoints / max_endpoints */
	uint64_t total;
};

struct hl_layout_params {
	uint32_t max_keys, max_observers, max_endpoints, max_value, shards;
	uint32_t req_ring_bytes, ev_ring_bytes;
	uint64_t heap_bytes;
	uint32_t hist_bytes; /* history ring per shard, a power of two */
};

/* Fill in defaults for zero fields and check ranges. Returns 0 or -EINVAL. */
int hl__layout_defaults(struct hl_layout_params *p);
/* Write the identity, capacity and offset fields of a header for P. */
int hl__layout_compute(const struct hl_layout_params *p, struct hl_shm_header *h);
/* Split a computed (or validated) header's size by what it holds. */
void hl__layout_sizes(const struct hl_shm_header *h, struct hl_layout_sizes *z);
/* A hash of the format's struct sizes and offsets (the "format word"). */
uint64_t hl__layout_format(void);

static inline uint32_t
hl__rec_align(uint32_t n)
{
	return (n + 7u) & ~7u;
}

#endif /* HL_LAYOUT_H */
