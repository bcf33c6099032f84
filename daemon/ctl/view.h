/* SPDX-License-Identifier: MIT */
/*
 * view.h: heirloomctl's read-only view of a segment. Every command that
 * only reads goes through here: the object is opened O_RDONLY and mapped
 * PROT_READ (hl__seg_map_ro), no endpoint is claimed, nothing is written,
 * so it works with no worker running and with read permission alone.
 *
 * The segment is written concurrently by the worker (and its client-writable
 * regions by any client), so every snapshot here is "as of roughly now":
 * each index and offset is bounds-checked against the validated header
 * before use and every walk is bounded; a torn read gives a wrong number,
 * never a crash.
 */
#ifndef HL_CTL_VIEW_H
#define HL_CTL_VIEW_H

#include "heirloom/heirloom.h"
#include "layout.h"
#include "segment.h"

#include <stddef.h>
#include <stdint.h>

struct view {
	struct hl_seg seg; /* seg.h is the live header; its layout fields were
	                    * validated at open and cannot change under us
	                    * (map_common compared them after mapping) */
	uint64_t file_size;
};

/* Open and map segment NAME read-only. Errors as hl_open(): -ENOENT,
 * -EACCES, HL_EUNTRUSTED (its owner is not trusted: lib/trust.h, with
 * $HEIRLOOM_OWNER), HL_EBADMAGIC, HL_EVERSION, HL_ETRUNCATED, HL_ECORRUPT,
 * -EINVAL (bad name). On failure there is nothing to close. */
int view_open(struct view *v, const char *name);
void view_close(struct view *v);

/* For the message of a refusal: what the owner rule says of NAME now, in
 * WHY (LEN bytes), and its owner's user name in OWNER (OLEN bytes).
 * Returns 0 (trusted now), HL_EUNTRUSTED, or the error opening it. */
int view_untrusted(const char *name, char *why, size_t len, char *owner, size_t olen);

/* For the message of -EACCES: the object's path, mode, owner and group,
 * why the caller may not open it (read, or read and write: a command
 * that takes an endpoint needs both), and which keeper options (--group,
 * --mode) would let it, into BUF (always NUL-terminated). */
void view_denied(const char *name, char *buf, size_t len);

/* The owner record, read under owner_seq, and the keeper record. */
struct view_owner {
	uint32_t role, pid;
	uint64_t epoch, start;
	int alive; /* pid runs with that start time */
	int torn;  /* owner_seq never held still: fields may be mixed */
	uint32_t keeper_pid;
	uint64_t keeper_start;
	int keeper_alive;
};
void view_owner(const struct view *v, struct view_owner *o);

/* Every counter: hl_stats (summed over shards, as hl_stats() gives it)
 * plus the header counters hl_stats has no field for. */
struct view_stats {
	struct hl_stats st;
	uint64_t recoveries, last_recovery_repairs, async_errors;
	uint64_t dispatch_sum_ns; /* the sum of the latencies in st.dispatch_hist */
	int worker_ready;
};
void view_stats(const struct view *v, struct view_stats *s);

/* Hang detection (issue 22): each serving thread's heartbeat, judged as
 * the keeper's watchdog judges it (daemon/keeper/watchdog.c): its age is
 * the time since the later of its own heartbeat and the last progress the
 * keeper saw it make. Ages are CLOCK_MONOTONIC_COARSE ns at the call. */
struct view_thread {
	char name[16];   /* "monitor", "shard0" ... */
	uint64_t age_ns; /* 0 when stopped */
	int stopped;     /* HL_BEAT_STOPPED: the worker stopped cleanly */
	int hung;        /* age past the timeout (never when it is 0) */
};
struct view_live {
	uint64_t timeout_ms; /* the keeper's --hang-timeout; 0 = none set */
	unsigned n;          /* threads: the monitor, then one per shard */
	struct view_thread t[1 + HL_SHARDS_MAX];
	uint64_t max_age_ns;
	int hung; /* some thread is hung */
};
void view_liveness(const struct view *v, struct view_live *l);
/* "none" (no worker owns the table), "exited" (the owner is dead),
 * "starting" (recovering, not ready yet), "hung" or "ready". */
const char *view_worker_state(const struct view_owner *o, const struct view_stats *s,
                              const struct view_live *l);

/* Copy the log ring's records, oldest first, at most CAP; returns how many.
 * Text fields are NUL-terminated in the copies. */
unsigned view_log(const struct view *v, struct hl_shm_logrec *out, unsigned cap);

/* Whether PID still runs; START (proc start time as the library records
 * it) 0 means unknown, then any process with that pid counts. */
int view_pid_alive(uint32_t pid, uint64_t start);

const char *view_role_name(uint32_t role);
const char *view_log_kind(uint32_t kind);
const char *view_ep_state(uint32_t state);

/* Keys that have a value, as hl_keys(): CB's non-zero return stops the walk
 * and is returned. */
typedef int (*view_key_cb)(const uint8_t *key, uint32_t len, uint64_t rev, void *arg);
int view_keys(const struct view *v, view_key_cb cb, void *arg);

/* KEY's value, as hl_get(): copies up to CAP bytes, *len the full length.
 * -ENOENT (no key or no value), -EBUSY, HL_ECORRUPT. */
int view_get(const struct view *v, const void *key, size_t key_len, void *buf, size_t cap,
             size_t *len, uint64_t *rev);

/* KEY's observers, as hl_inspect_key(): fills up to CAP, returns how many
 * there are; -ENOENT when the key has no slot. */
int view_inspect(const struct view *v, const void *key, size_t key_len,
                 struct hl_observer_info *out, size_t cap);

/* One endpoint, from its claim word and worker record. */
struct view_ep {
	uint32_t idx;
	uint32_t claim_pid, claim_gen; /* client side: who claimed it */
	uint32_t state, gen, pid;      /* worker side: what it adopted */
	uint64_t start, attached_ns, nobs;
	int alive;
	uint64_t req_depth[HL_SHARDS_MAX]; /* bytes queued per shard; UINT64_MAX
	                                    * when the client's cursor is impossible */
	uint64_t ev_depth[HL_SHARDS_MAX];
};
/* Fill *e for endpoint EP; returns 1 when it is in use (claimed or not
 * free on the worker side), 0 when free. */
int view_endpoint(const struct view *v, uint32_t ep, struct view_ep *e);

/* One observer slot in use. */
struct view_obs {
	uint64_t id;
	uint32_t slot, endpoint, ep_gen, pid;
	uint32_t key_len; /* 0 when the key slot is out of range */
	uint8_t key[HL_KEY_MAX];
	uint64_t delivered_rev, dropped, created_ns;
	uint32_t flags; /* HL_OBSERVE_* it was made with (PREFIX: key is the prefix) */
	int alive;
};
/* Walk every observer slot in use; CB's non-zero return stops the walk. */
int view_observers(const struct view *v, int (*cb)(const struct view_obs *, void *), void *arg);

/* The keeper's durability (its --durability), from the header: MODE and
 * STATE words, and whether the table is durable now: a mode on, the
 * writer's state OK, and the keeper alive (a dead keeper writes nothing). */
const char *view_dur_mode_name(uint32_t mode);
const char *view_dur_state_name(uint32_t st);
int view_durable(const struct hl_shm_header *h, int keeper_alive);

#endif /* HL_CTL_VIEW_H */
