/*
 * worker.h: the worker daemon's process-local state and the contracts
 * between its parts:
 *   shard.c     one thread per shard: drains request rings, applies, dispatches
 *   table.c     applying requests to the segment and dispatching events
 *   endpoint.c  adopting client endpoints, watching their processes, cleanup
 *   recovery.c  rebuilding allocators and repairing the segment at attach
 *   handoff.c   getting the segment from the keeper and giving it back
 *   main.c      options, start, stop
 *
 * Lock ranks (take a higher rank only while holding lower ones, never the
 * reverse): shard.mu (1) < ep.mu (2) < allocator locks (3, inside alloc.c).
 * Two shard.mu are never held at once.
 */
#ifndef HL_WORKER_H
#define HL_WORKER_H

#include "alloc.h"
#include "log.h"
#include "layout.h"
#include "segment.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct hl_worker;
struct hl_rec;

/* Dispatch's private copy of one key's observer list (table.c): the slots
 * grouped by endpoint (groups in order of first appearance in the list,
 * list order within a group: the order dispatch delivers in), so that
 * dispatch knows every address up front and can prefetch instead of
 * chasing `next` one cache miss at a time, and reads and then marks one
 * endpoint's slots while they are still in cache. `gen` counts the list's
 * changes (bumped under the key's shard.mu, after the change); the copy is
 * valid while built == gen + 1. Only the key's shard thread (or recovery,
 * before threads run) reads or builds the copy. */
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
	uint32_t slot;
};

struct hl_shard {
	struct hl_worker *w;
	uint32_t id;
	pthread_t thread;
	/* Held while this shard's keys, buckets and observer lists change.
	 * The shard thread takes it per request; the endpoint cleanup takes
	 * it to unlink a dead client's observers. Dispatch walks the lists
	 * without it, inside an RCU read-side critical section. */
	pthread_mutex_t mu;
	struct hl_shm_counters *c; /* this shard's counters in the header */
	/* dispatch scratch (shard thread only) */
	struct hl_fan *fan;
	uint32_t fan_cap;
	uint32_t *ep_count; /* per endpoint: observers in this dispatch */
	uint32_t *ep_start;
	uint32_t *touched;  /* endpoints touched by this dispatch */
	uint64_t *ids;
	uint8_t *req;       /* private copy of the request being applied */
	/* The client request hl_w_apply() is applying (shard thread only;
	 * NULL otherwise: the worker's own publishes, cleanup): where its
	 * done record goes (table.c, req_done()). */
	struct hl_shm_epw_shard *cur_ws;
	uint64_t cur_pos;
	int cur_done;
	uint32_t req_cap;
	uint8_t *rec;       /* event record being built */
	uint32_t rec_cap;
	/* Endpoints whose cleanup this shard must run (bit per endpoint). */
	_Atomic uint64_t *cleanup;
	/* Endpoints whose next request waits for the end of recovery (bit
	 * per endpoint; shard thread only): given back to the pending bits
	 * once it is over. */
	uint64_t *deferred;
	int deferred_any; /* some bit in deferred[] is set */
};

/* The worker's view of one endpoint. */
struct hl_ep {
	pthread_mutex_t mu;
	uint32_t gen;    /* adopted incarnation, 0 = none */
	uint32_t pid;
	uint64_t start;
	int pidfd;       /* -1 = none */
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
	/* Monitor thread only (endpoint.c): the slow-reader watch and the
	 * prune pass's memory of a claim seen unfinished. */
	uint64_t tail_sum;     /* sum of the client's ev_tail over shards, last tick */
	uint64_t read_ns;      /* CLOCK_MONOTONIC when the client last read or had nothing waiting */
	uint32_t watch_gen;    /* incarnation the two fields above describe */
	int slow;              /* reported as not reading */
};

struct hl_worker_opts {
	const char *name;
	uint32_t shards;          /* 0 = number of CPUs (used when creating) */
	struct hl_layout_params create; /* capacities when creating */
	mode_t mode;
	int standalone;           /* create/own the segment without a keeper */
	const char *socket_path;  /* keeper's control socket; NULL = $HEIRLOOM_SOCKET or
	                           * the runtime-dir rule (daemon/common/proto.h) */
	int64_t prune_interval_ms; /* 0 disables the periodic pass */
	int64_t slow_reader_ms;   /* report an endpoint not reading this long; 0 = never */
	int64_t telemetry_ms;     /* $sys/telemetry keys period; 0 = never (telemetry.c) */
	int64_t spin_us;          /* busy-poll before sleeping */
	int crash_at_step;        /* test hook: _exit(99) at that apply step */
	int64_t recovery_pause_ms; /* test hook: recovery's part 2 starts this late */
	int64_t park_shard;        /* test hook: this shard's thread hangs (-1 = off) */
};

struct hl_worker {
	struct hl_seg seg;
	struct hl_worker_opts opt;
	struct hl_heap heap;
	struct hl_pool keys;
	struct hl_pool obs;
	uint32_t *obs_pos;        /* per observer slot: index in its hl_ep.obs */
	struct hl_obs_cache *ocache; /* per key slot: dispatch's list copy (table.c) */
	struct hl_ep *eps;
	uint32_t nshards;
	struct hl_shard *shards;
	uint64_t epoch;           /* owner epoch this worker holds */
	_Atomic int stop;
	_Atomic int fenced;       /* another owner took the table */
	int epfd;                 /* epoll: pidfds + wake eventfd */
	int wakefd;               /* eventfd to wake the monitor */
	pthread_t monitor;
	_Atomic int step;         /* apply-step counter for the crash hook (all shards) */
	/* 1 from the start of recovery until its second part is done
	 * (recovery.c): meanwhile shard threads apply publishes and deletes
	 * only, and adopt no new client (release when cleared). */
	_Atomic int recovering;
	_Atomic int rec_failed;   /* part 2 failed: the worker stops (status 2) */
	_Atomic int damaged;      /* the segment was truncated or replaced: stop (status 6) */
	struct hl_rec *rec;       /* recovery's state (recovery.c), kept until exit */
};

/* table.c */
int hl_w_apply(struct hl_shard *sh, uint32_t ep, uint64_t pos, const struct hl_req *r,
               uint32_t len, int64_t *result);
void hl_w_dispatch_pending(struct hl_shard *sh, uint32_t key);
int hl_w_remove_observer(struct hl_shard *sh, uint32_t slot);
int hl_w_req_committed(struct hl_shard *sh, uint32_t ep, uint32_t gen, uint64_t pos,
                       const struct hl_req *r, int64_t *result);
int hl_w_shard_init(struct hl_shard *sh);
void hl_w_shard_fini(struct hl_shard *sh);
void hl_w_maybe_free_key(struct hl_shard *sh, uint32_t key);
uint32_t hl_w_key_shard(struct hl_worker *w, uint32_t key);
void hl_w_crash_step(struct hl_worker *w);
/* Test hook (--crash-at-step): a point where the worker may die. Inline
 * and predicted off: it sits on every request's path several times. */
static inline void
hl_w_crash_point(struct hl_worker *w)
{
	if (__builtin_expect(w->opt.crash_at_step > 0, 0))
		hl_w_crash_step(w);
}

/* endpoint.c */
int hl_w_ep_adopt(struct hl_worker *w, uint32_t ep);
int hl_w_ep_active(struct hl_worker *w, uint32_t ep);
void hl_w_ep_kill(struct hl_worker *w, uint32_t ep, const char *why);
/* EP (its mu held) lives but has no pidfd (ERR from pidfd_open): watch it
 * by polling from the monitor thread; counted, logged once. */
void hl_w_ep_poll_instead(struct hl_worker *w, uint32_t ep, int err);
void hl_w_ep_kill_recovered(struct hl_worker *w, uint32_t ep, uint32_t state);
void hl_w_ep_add_obs(struct hl_worker *w, uint32_t ep, uint32_t slot);
int hl_w_ep_build_lists(struct hl_worker *w, const uint32_t *ep1, uint64_t *total);
void hl_w_ep_del_obs(struct hl_worker *w, uint32_t ep, uint32_t slot);
void hl_w_shard_cleanup(struct hl_shard *sh);
int hl_w_monitor_start(struct hl_worker *w);
void hl_w_monitor_wake(struct hl_worker *w);
void hl_w_prune(struct hl_worker *w);
void hl_w_wake_client(struct hl_worker *w, uint32_t ep);
void hl_w_monitor_watch(struct hl_worker *w, uint32_t ep);
int hl_w_ep_fix_positions(struct hl_worker *w, uint32_t ep);
int hl_w_drain_dead(struct hl_shard *sh, uint32_t ep);

/* telemetry.c: the worker's own statistics and the $sys/telemetry keys.
 * hl_w_apply() takes HL_W_EP_SELF as the endpoint of the worker's own
 * publishes: they may (only they may) write keys under HL_SYS_PREFIX. */
#define HL_W_EP_SELF UINT32_MAX
int hl_w_telemetry_init(struct hl_worker *w);
void hl_w_telemetry_tick(struct hl_worker *w);
int hl_w_telemetry_apply(struct hl_shard *sh);

/* shard.c */
int hl_w_shards_start(struct hl_worker *w);
void hl_w_shards_join(struct hl_worker *w);
void hl_w_wake_shard(struct hl_worker *w, uint32_t s);

/* recovery.c: in two parts (see there). The worker runs part 1 in its
 * main thread, then hl_w_recover_kick(), and starts the shard threads;
 * the monitor thread runs part 2 and then hl_w_recover_serve() before its
 * loop. hl_w_recover() runs both parts in the calling thread. */
int hl_w_recover_begin(struct hl_worker *w);
void hl_w_recover_kick(struct hl_worker *w);
int hl_w_recover_finish(struct hl_worker *w);
void hl_w_recover_serve(struct hl_worker *w);
int hl_w_recover(struct hl_worker *w);
/* Before a shard thread reads key IDX's observer list: returns once that
 * list is repaired (at once when recovery is over). */
void hl_w_rec_key_ready(struct hl_worker *w, uint32_t idx);
int hl_w_check(struct hl_worker *w, char *msg, size_t len);

/* liveness.c: heartbeats at attach, and the systemd watchdog ping and
 * readiness of the worker process (issue 22). Main thread only. */
void hl_w_beats_reset(struct hl_worker *w);
void hl_w_beats_stop(struct hl_worker *w);
void hl_w_notify_init(void);
/* The main loop's wait in ms: DFLT, or shorter for a short watchdog. */
int hl_w_notify_tick_ms(int dflt);
void hl_w_notify_tick(struct hl_worker *w);

/* handoff.c */
int hl_w_acquire(struct hl_worker *w);
void hl_w_release(struct hl_worker *w, int clean);
int hl_w_acquire_standalone(struct hl_worker *w);

/* log */
void hl_w_seglog(struct hl_worker *w, uint32_t kind, int32_t code, uint32_t pid,
                 const char *text);

#endif /* HL_WORKER_H */
