/* SPDX-License-Identifier: MIT */
/*
 * worker.h: the worker daemon's process-local state: struct hl_worker (one
 * per process), struct hl_shard (one per shard thread), struct hl_ep (the
 * worker's view of one client endpoint), and the few one-line helpers every
 * module needs (the crash hook, the done record, the segment log). Nothing
 * else: each module declares its own functions in its own header, and the
 * modules call in one direction (docs/architecture.md, "The worker's
 * modules"), from worker.c down to wake.c and keys.c.
 *
 * Lock ranks (lock.h): take a higher rank only while holding lower ones,
 * never the reverse: shard.mu (1) < ep.mu (2) < allocator locks (3, inside
 * lib/alloc.c). Two shard.mu are never held at once. Debug builds check
 * this at every lock site (HL_DEBUG).
 */
#ifndef HL_WORKER_H
#define HL_WORKER_H

#include "alloc.h"
#include "layout.h"
#include "log.h"
#include "segment.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

struct hl_worker;
struct hl_rec;
struct hl_tel;
struct hl_w_link;

/* Dispatch's private copy of one key's observer list (dispatch.c): the
 * slots grouped by endpoint (groups in order of first appearance in the
 * list, list order within a group: the order dispatch delivers in), so that
 * dispatch knows every address up front and can prefetch instead of
 * chasing `next` one cache miss at a time, and reads and then marks one
 * endpoint's slots while they are still in cache. `gen` counts the list's
 * changes (bumped under the key's shard.mu, after the change:
 * hl_w_obs_list_changed()); the copy is valid while built == gen + 1. Only
 * the key's shard thread (or recovery, before threads run) reads or builds
 * the copy. */
struct hl_obs_group {
	uint32_t ep, n;
};
struct hl_obs_cache {
	_Atomic uint64_t gen;
	uint64_t built;
	uint32_t n, cap; /* slots */
	uint32_t ngroups, gcap;
	uint32_t *slots;
	struct hl_obs_group *groups;
};

/* Per observer id pair collected during a dispatch. */
struct hl_fan {
	uint32_t ep;
	uint32_t slot; /* observer slot, | HL_FAN_NOOLD (dispatch.c) */
};
/* In hl_fan.slot: the observer asked for no old value (HL_OBSERVE_NOOLD).
 * Slots are < 2^25, so the top bit is free; readers mask it (HL_FAN_SLOT). */
#define HL_FAN_NOOLD 0x80000000u
/* In hl_fan.slot: a prefix observer (HL_OBSERVE_PREFIX), whose
 * delivered_rev is its start revision and must not move (dispatch.c). */
#define HL_FAN_PREFIX  0x40000000u
#define HL_FAN_SLOT(f) ((f).slot & ~(HL_FAN_NOOLD | HL_FAN_PREFIX))

/* Deferred wake-ups of one shard thread (wake.c): endpoints whose events
 * were committed during the current run of requests and whose wake-up
 * waits for its end. Shard thread only. */
#define HL_W_WAKE_DEFER_MAX 64u
struct hl_wake_defer {
	int active;     /* inside hl_w_apply() for a client's request */
	uint32_t n;     /* endpoints in eps[] */
	uint64_t since; /* the clock when eps[0] was deferred (at the latest) */
	/* The clock as the dispatch in progress last read it (its start and
	 * its end, for its latency: hl_w_wake_clock()), 0 = not read since
	 * hl_w_wake_defer_begin(). The deferral reuses it rather than read
	 * the clock a third time per dispatch. */
	uint64_t now;
	uint32_t eps[HL_W_WAKE_DEFER_MAX];
};

struct hl_shard {
	struct hl_worker *w;
	uint32_t id;
	pthread_t thread;
	/* Held while this shard's keys, buckets and observer lists change
	 * (rank HL_W_RANK_SHARD). The shard thread takes it per request; the
	 * monitor's endpoint cleanup takes it to unlink a dead client's
	 * observers. Dispatch walks the lists without it, inside an RCU
	 * read-side critical section. */
	pthread_mutex_t mu;
	struct hl_shm_counters *c; /* this shard's counters in the header */
	/* dispatch scratch (shard thread only) */
	struct hl_fan *fan;
	uint32_t fan_cap;
	uint32_t *ep_count; /* per endpoint: observers in this dispatch */
	uint32_t *ep_start;
	uint32_t *touched; /* endpoints touched by this dispatch */
	uint64_t *ids;
	/* prefix entries matching the key being dispatched (dispatch.c) */
	uint32_t pmatch[HL_KEY_MAX];
	uint8_t *req; /* private copy of the request being applied */
	/* The client request hl_w_apply() is applying (shard thread only;
	 * NULL otherwise: the worker's own publishes, cleanup): where its
	 * done record goes (hl_w_req_done()). */
	struct hl_shm_epw_shard *cur_ws;
	uint64_t cur_pos;
	int cur_done;
	uint32_t req_cap;
	uint8_t *rec; /* event record being built */
	uint32_t rec_cap;
	/* Endpoints whose cleanup this shard must run (bit per endpoint). */
	_Atomic uint64_t *cleanup;
	/* Endpoints whose next request waits for the end of recovery (bit
	 * per endpoint; shard thread only): given back to the pending bits
	 * once it is over. */
	uint64_t *deferred;
	int deferred_any;        /* some bit in deferred[] is set */
	struct hl_wake_defer wk; /* wake.c */
	/* History (history.c; shard thread, or recovery before it runs):
	 * this ring's head and the revision of the last change appended
	 * (or its floor when empty), set by hl_w_hist_recover(); the
	 * record being written (hl__hist_rec_bytes() of the largest). */
	uint64_t hist_head, hist_last;
	uint8_t *hist_buf;
	/* Set by recovery's part 2 (hl_w_hist_scan()) when this ring holds
	 * damage; the shard thread empties it at its next append. */
	_Atomic int hist_bad;
};

/* The worker's view of one endpoint. */
struct hl_ep {
	pthread_mutex_t mu; /* rank HL_W_RANK_EP */
	uint32_t gen;       /* adopted incarnation, 0 = none */
	uint32_t pid;
	uint64_t start;
	int pidfd; /* -1 = none */
	/* Observer slots this endpoint holds, with obs_pos[] giving each
	 * slot's position here: O(1) add and remove, O(n) cleanup. */
	uint32_t *obs;
	uint32_t nobs, cap;
	/* Cleanup in progress: shards that still have to run it. */
	_Atomic uint64_t cleanup_pending;
	int closing;
	uint32_t cleaned_gen; /* incarnation whose cleanup already ran (once each) */
	/* Under mu (endpoint.c): adopt() rounds that found the claim not yet
	 * ready, and whether a banned endpoint is held until its process
	 * exits (quarantine: see hl_w_ep_kill()). */
	uint32_t notready;
	int quarantined;
	/* Under mu: no pidfd could be had (out of descriptors): the monitor
	 * polls pid + start time instead (hl_w_ep_poll_instead()). */
	int polled;
	/* Monitor thread only (monitor.c): the slow-reader watch. */
	uint64_t tail_sum;  /* sum of the client's ev_tail over shards, last tick */
	uint64_t read_ns;   /* CLOCK_MONOTONIC when the client last read or had nothing waiting */
	uint32_t watch_gen; /* incarnation the two fields above describe */
	int slow;           /* reported as not reading */
	uint64_t nudge_ns;  /* monitor only: last progress nudge (monitor.c) */
	/* hl_fd() (wake.c, endpoint.c): the worker's copy of the client's wake
	 * socket, -1 = none. Set and dropped under mu; read by any thread's
	 * wake_one() without it, which announces itself in wake_users first so
	 * that hl_w_wake_fd_drop() never closes the number under a send. */
	_Atomic int wake_fd;
	_Atomic uint32_t wake_users;
	_Atomic uint32_t wake_fired; /* the client's epc.wake_arm last sent for */
};

struct hl_worker_opts {
	const char *name;
	uint32_t shards;                /* 0 = number of CPUs (used when creating) */
	struct hl_layout_params create; /* capacities when creating */
	mode_t mode;
	int standalone;            /* create/own the segment without a keeper */
	const char *socket_path;   /* keeper's control socket; NULL = $HEIRLOOM_SOCKET or
	                            * the runtime-dir rule (daemon/common/proto.h) */
	int64_t prune_interval_ms; /* 0 disables the periodic pass */
	int64_t slow_reader_ms;    /* report an endpoint not reading this long; 0 = never */
	int64_t telemetry_ms;      /* $sys/telemetry keys period; 0 = never (telemetry.c) */
	int64_t spin_us;           /* longest busy-poll before sleeping (spin.h) */
	int busy_poll;             /* shard threads never sleep */
	int crash_at_step;         /* test hook: _exit(99) at that apply step */
	int64_t recovery_pause_ms; /* test hook: recovery's part 2 starts this late */
	int64_t park_shard;        /* test hook: this shard's thread hangs (-1 = off) */
	int64_t hold_shard;        /* test hook: this shard holds commit..dispatch (-1 = off) */
	const char *hold_file;     /* ... while this file exists (apply.c, hold()) */
};

/*
 * Which prefix lengths have a prefix entry in the key index (keys.c,
 * docs/architecture.md "Prefix observers"): what a dispatch reads to know
 * which prefixes of its key to look up, so that a key no prefix matches
 * costs one load when no prefix entry exists and one probe per length in
 * use otherwise. Worker memory only, rebuilt by recovery from the key
 * index (the prefix entries themselves are in the segment).
 *
 * Writers: the shard thread that creates or frees a prefix entry (under
 * its shard.mu; several shards at once, hence atomics), recovery before
 * any shard thread runs. Readers: every shard thread's dispatch, relaxed,
 * inside its RCU read-side section.
 *  count[len]  prefix entries of that length (fetch_add / fetch_sub).
 *  bits        bit len set (fetch_or, relaxed) when count[len] leaves 0,
 *              before the entry is linked; never cleared while the worker
 *              runs: clearing it would race with another shard setting
 *              it, and a stale bit costs one probe that finds nothing.
 *              An observe's answer is released after its entry's bit and
 *              link, so a publish queued after the answer (acquire chain
 *              through the client's rings) finds both.
 *  total       prefix entries (fetch_add / fetch_sub): 0 = skip matching.
 *  filter      HL_PREFIX_FILTER_BITS bits of a running hash of each
 *              prefix entry: a word bit per whole 8-byte word and an end
 *              bit (keys.c, "The filter"); fetch_or, relaxed, before the
 *              link, as `bits`; never cleared while the worker runs, for
 *              the same reason. A probe of the key index (two cache
 *              misses: bucket and slot) is made only on a set end bit; a
 *              key stops at the first of its words with no word bit. So a
 *              key that no prefix matches costs one pass over (at most)
 *              its bytes and a load from 128 KiB, which stays in cache,
 *              per word and per length in use.
 */
#define HL_PREFIX_FILTER_BITS (1u << 20)
struct hl_prefix_lens {
	_Atomic uint32_t total;
	_Atomic uint64_t bits[(HL_KEY_MAX + 64) / 64];
	_Atomic uint32_t count[HL_KEY_MAX + 1];
	_Atomic uint64_t filter[HL_PREFIX_FILTER_BITS / 64];
};

struct hl_worker {
	struct hl_seg seg;
	struct hl_prefix_lens plens;
	struct hl_worker_opts opt;
	struct hl_heap heap;
	struct hl_pool keys;
	struct hl_pool obs;
	uint32_t *obs_pos;           /* per observer slot: index in its hl_ep.obs */
	struct hl_obs_cache *ocache; /* per key slot: dispatch's list copy (dispatch.c) */
	struct hl_ep *eps;
	uint32_t nshards;
	struct hl_shard *shards;
	uint64_t epoch; /* owner epoch this worker holds */
	_Atomic int stop;
	_Atomic int fenced; /* another owner took the table */
	int epfd;           /* epoll: pidfds + wake eventfd */
	int wakefd;         /* eventfd to wake the monitor */
	pthread_t monitor;
	/* Endpoints the monitor must clean (bit per endpoint), set by
	 * hl_w_ep_kill() (endpoint.c), taken by the monitor (monitor.c). */
	_Atomic uint64_t *to_clean;
	/* Endpoints below it had their lines read or written by a worker
	 * (recovery's part 1 up to its mark, adoption) or vetted since the
	 * mark passed them (hl_w_ep_vet_gap(), monitor only). */
	_Atomic uint32_t ep_vetted;
	_Atomic int pidfd_logged; /* hl_w_ep_poll_instead() logged once */
	_Atomic int step;         /* apply-step counter for the crash hook (all shards) */
	/* 1 from the start of recovery until its second part is done
	 * (recovery.c): meanwhile shard threads apply publishes and deletes
	 * only, and adopt no new client (release when cleared). */
	_Atomic int recovering;
	_Atomic int rec_failed; /* part 2 failed: the worker stops (status 2) */
	_Atomic int damaged;    /* the segment was truncated or replaced: stop (status 6) */
	struct hl_rec *rec;     /* recovery's state (recovery.c), kept until exit */
	struct hl_tel *tel;     /* telemetry's mailboxes (telemetry.c) */
	struct hl_w_link *link; /* the keeper link (handoff.c); NULL standalone */
	/* The keeper asked for the table for an upgrade (YIELD, handoff.c's
	 * link thread): the main thread stops the threads after their batch
	 * and hands the table over (hl_w_handover()) instead of giving it
	 * back. */
	_Atomic int yield;
	/* Test hook HEIRLOOM_TEST_APPLY_DELAY_US (read by hl_w_init()): a
	 * shard thread sleeps this long between a request's intent and its
	 * commit, so that a test can ask for the table mid-batch. 0 = off. */
	int64_t apply_delay_us;
};

/* hl_w_apply() takes HL_W_EP_SELF as the endpoint of the worker's own
 * publishes (telemetry.c): they may (only they may) write keys under
 * HL_SYS_PREFIX. */
#define HL_W_EP_SELF UINT32_MAX

/* Words of a bitmap with one bit per endpoint (to_clean, shard cleanup). */
static inline uint32_t
hl_w_ep_words(const struct hl_worker *w)
{
	return (w->seg.h->max_endpoints + 63) / 64;
}

/* Test hook (--crash-at-step): die at the k-th step so that tests can leave
 * a half-done change at every step and check recovery. */
static inline __attribute__((cold)) void
hl_w_crash_step(struct hl_worker *w)
{
	if (atomic_fetch_add_explicit(&w->step, 1, memory_order_relaxed) + 1 ==
	    w->opt.crash_at_step)
		/* The raw system call, as close to a SIGKILL as an exit gets:
		 * no atexit handlers, and no sanitizer finalisation (TSan's
		 * _exit() reports a thread that ended unjoined, as one does
		 * while the worker stops, and exits 66 instead of 99). */
		syscall(SYS_exit_group, 99);
}

/* Test hook HEIRLOOM_TEST_UPGRADE_KILL=old:N or new:N: SIGKILL this
 * process at step N of an upgrade's hand-over (docs/architecture.md,
 * "Upgrade"); ROLE is "old" or "new". Off the request path: a few calls
 * per worker life. */
static inline __attribute__((cold)) void
hl_w_upgrade_step(const char *role, int step)
{
	const char *e = getenv("HEIRLOOM_TEST_UPGRADE_KILL");
	size_t n = strlen(role);
	if (e && strncmp(e, role, n) == 0 && e[n] == ':' && atoi(e + n + 1) == step) {
		hl__log("test hook: SIGKILL at %s step %d of the hand-over", role, step);
		raise(SIGKILL);
	}
}

/* A point where the worker may die under --crash-at-step. Inline and
 * predicted off: it sits on every request's path several times. */
static inline void
hl_w_crash_point(struct hl_worker *w)
{
	if (__builtin_expect(w->opt.crash_at_step > 0, 0))
		hl_w_crash_step(w);
}

/* The start revision that goes with an observe's SYNC answer
 * (hl_shm_epw_shard.result_rev): the observer's delivered_rev, which no
 * dispatch has moved yet when the answer is written (its key's shard
 * answers before it dispatches anything else, and recovery answers before
 * the pending dispatches). 0 for any other answer. */
static inline uint64_t
hl_w_answer_rev(const struct hl_worker *w, uint16_t type, int64_t result)
{
	if (type != HL_REQ_OBSERVE || result <= 0)
		return 0;
	uint32_t slot = (uint32_t)(result & 0xffffff);
	if (slot < 1 || slot > w->seg.h->max_observers)
		return 0;
	return atomic_load_explicit(&hl__obs(&w->seg, slot)->delivered_rev, memory_order_relaxed);
}

/*
 * The done record of the request being applied (struct hl_shm_epw_shard):
 * its outcome, stored right after its commit (or once it is known to have
 * none), before anything that could erase the commit's evidence (the
 * dispatch, which frees a deleted key; the RCU free of an unlinked
 * observer). Release: the commit is visible before it. Nothing for the
 * worker's own publishes (cur_ws NULL). Shard thread only.
 */
static inline void
hl_w_req_done(struct hl_shard *sh, int64_t result)
{
	if (!sh->cur_ws || sh->cur_done)
		return;
	atomic_store_explicit(&sh->cur_ws->done_result, result, memory_order_relaxed);
	atomic_store_explicit(&sh->cur_ws->done_pos, sh->cur_pos + 1, memory_order_release);
	sh->cur_done = 1;
}

/* A record in the segment's log (lib/seglog.c), stamped with the epoch. */
static inline void
hl_w_seglog(struct hl_worker *w, uint32_t kind, int32_t code, uint32_t pid, const char *text)
{
	hl__seglog(w->seg.h, kind, code, pid,
	           atomic_load_explicit(&w->seg.h->owner_epoch, memory_order_relaxed), text);
}

/* worker.c, the top (main.c and the fuzz target only): the worker's state
 * once the segment is mapped, the one recovery order, the threads. */
int hl_w_init(struct hl_worker *w);
/* Recovery and service: part 1 here, then the threads (the monitor runs
 * part 2 while shards serve publishes). Logs its failure. */
int hl_w_start(struct hl_worker *w);
/* The same order with no thread at all: part 2 in the calling thread. */
int hl_w_recover(struct hl_worker *w);
/* Stop and join every thread (after hl_w_start()). */
void hl_w_stop(struct hl_worker *w);
/* After hl_w_stop(): wait until the slots deferred to call_rcu() are back
 * in their pools (process memory only: the callbacks never write the
 * segment), as hl_w_check() needs. A hand-over skips it (main.c). */
void hl_w_drain_deferred(struct hl_worker *w);

#endif /* HL_WORKER_H */
