/*
 * heirloom: a shared-memory observer table for processes on one machine.
 *
 * Processes publish small keyed values; other processes observe keys and are
 * told, in order, when a value changes. The table lives in a POSIX shared
 * memory segment owned by a keeper daemon and served by a worker daemon;
 * this header is the whole public API of libheirloom.
 *
 * Conventions
 *  - Every function returns 0 (or a count) on success and a negative value on
 *    failure: a negative errno (-EINVAL, -ENOSPC ...) or one of the HL_E*
 *    codes below, which sit below -4095, out of errno's range.
 *    hl_strerror() and hl_err_name() describe any of them.
 *  - A failed call changes nothing and delivers nothing, unless its
 *    documentation says otherwise.
 *  - No function aborts the calling process on bad input: NULL pointers,
 *    bad lengths, unknown ids and corrupt segments are all answered with an
 *    error.
 *
 * Threads: a struct hl_client may be used from several threads; calls are
 * serialised inside the library by one mutex per client. hl_next() may block
 * while another thread publishes. Events are delivered to whichever thread
 * calls hl_next(); one consumer thread per client is the intended use.
 */
#ifndef HEIRLOOM_HEIRLOOM_H
#define HEIRLOOM_HEIRLOOM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define HL_API __attribute__((visibility("default")))
#else
#define HL_API
#endif

#define HL_VERSION_MAJOR 0
#define HL_VERSION_MINOR 1
#define HL_VERSION_PATCH 0

/* ---- Error codes of our own (errno values are used as -errno). ---- */

#define HL_EBADMAGIC (-20001)  /* the object is not a heirloom segment */
#define HL_EVERSION (-20002)   /* segment has another layout version */
#define HL_ECORRUPT (-20003)   /* a structure in the segment failed validation */
#define HL_ENOWORKER (-20004)  /* no worker is serving the table (and waiting was not asked) */
#define HL_ESTALE (-20005)     /* this client's endpoint was removed by the worker */
#define HL_ETRUNCATED (-20006) /* the segment is smaller than its header says */

/* Hard limits compiled into the layout (the segment's own capacities, which
 * are set at creation, may be smaller). */
#define HL_KEY_MAX 255u         /* bytes in a key; keys are binary, 1..255 bytes */
#define HL_META_MAX 256u        /* bytes of publisher metadata per publish */
#define HL_VALUE_MAX_LIMIT 65536u /* largest value size a segment can be created with */
#define HL_SHARDS_MAX 64u

/* ---- Opening a segment. ---- */

struct hl_client;

/* hl_open() flags. */
#define HL_OPEN_SYNC 0x1u /* hl_publish()/hl_delete() wait until the worker applied
                           * the request and return its error (e.g. -ENOSPC);
                           * without it they return once the request is queued */
#define HL_OPEN_NOWAIT 0x2u /* when no worker runs or a ring is full, fail with
                             * -EAGAIN at once instead of waiting timeout_ms */

struct hl_open_opts {
	uint32_t flags;     /* HL_OPEN_* */
	int timeout_ms;     /* how long calls that need the worker may wait:
	                     * 0 = the default (5000), -1 = forever */
	const char *runtime_dir; /* reserved; NULL */
};

/*
 * Attach to segment NAME ("default" when NULL; the shm object is
 * /heirloom.NAME) and claim an endpoint for this process.
 *
 * Errors: -ENOENT no such segment; -EACCES not permitted; HL_EBADMAGIC,
 * HL_EVERSION, HL_ETRUNCATED, HL_ECORRUPT the object is not a usable segment;
 * -ENOSPC every endpoint is taken; -EINVAL bad name or options; -ENOMEM.
 * If hl_open() fails there is nothing to close and *out is untouched.
 *
 * The client belongs to the calling process: after fork() the child must not
 * use it (it must hl_open() its own).
 */
HL_API int hl_open(const char *name, const struct hl_open_opts *opts, struct hl_client **out);

/* Give back the endpoint (the worker removes this client's observers) and
 * unmap. NULL is accepted. Every pointer the client handed out (event keys
 * and values) is invalid afterwards. Returns 0, or the first error queued
 * requests met (as hl_flush()). The client is freed whatever it returns. */
HL_API int hl_close(struct hl_client *c);

/* Wait until every request this client queued has been applied by the worker.
 * Returns 0, or the most recent error an asynchronous request met since the
 * last hl_flush() (for example -ENOSPC for a publish into a full table);
 * -ETIMEDOUT when the worker did not catch up within timeout_ms (-1 forever). */
HL_API int hl_flush(struct hl_client *c, int timeout_ms);

/* ---- Observing. ---- */

typedef uint64_t hl_observer_id; /* never 0, never reused within a segment */

/*
 * Observe KEY: every later change (put or delete) of the key produces one
 * event for this observer. The key need not exist. A process may hold many
 * observers, on one key or many. flags: 0 (reserved for prefix and
 * event-type filters).
 *
 * Errors: -EINVAL (NULL, key_len 0 or > HL_KEY_MAX, unknown flags),
 * -ENOSPC (observer or key table full), -ETIMEDOUT / -EAGAIN (no worker
 * answered in time), HL_ESTALE.
 */
HL_API int hl_observe(struct hl_client *c, const void *key, size_t key_len, uint32_t flags,
                      hl_observer_id *out);

/* Stop observer ID. Events already queued for it are dropped by hl_next().
 * Errors: -ENOENT no such observer, -EPERM it belongs to another client,
 * -ETIMEDOUT / -EAGAIN as above. */
HL_API int hl_unobserve(struct hl_client *c, hl_observer_id id);

/* ---- Writing and reading values. ---- */

/*
 * Set KEY to VALUE (0..value_max bytes) with optional metadata (0..HL_META_MAX
 * bytes) handed to observers as is. A value equal to the current one changes
 * nothing and notifies nobody (counted as skipped).
 *
 * Returns once the request sits in this client's request ring, which survives
 * a crash of the worker: it will be applied exactly once (unless HL_OPEN_SYNC,
 * see hl_open()). Errors: -EINVAL, -EMSGSIZE (value or meta too large),
 * -EAGAIN / -ETIMEDOUT (ring full and no room within the timeout), HL_ESTALE.
 */
HL_API int hl_publish(struct hl_client *c, const void *key, size_t key_len, const void *value,
                      size_t value_len, const void *meta, size_t meta_len);

/* Remove KEY; its observers get a delete event. Deleting a missing key is not
 * an error and notifies nobody. Errors as hl_publish(). */
HL_API int hl_delete(struct hl_client *c, const void *key, size_t key_len);

/*
 * Read KEY's current value straight from the segment (sequence lock; no
 * worker needed). Copies at most CAP bytes into BUF; *len gets the value's
 * full length (so *len > cap means truncated) and *revision its revision.
 * len and revision may be NULL. Errors: -ENOENT no such key, -EINVAL,
 * -EBUSY the value kept changing under the reader (retried internally first).
 */
HL_API int hl_get(struct hl_client *c, const void *key, size_t key_len, void *buf, size_t cap,
                  size_t *len, uint64_t *revision);

/* ---- Events. ---- */

enum hl_event_type {
	HL_EV_PUT = 1,    /* key set: old (maybe none) and new value */
	HL_EV_DELETE = 2, /* key removed: old value */
	HL_EV_LAGGED = 3, /* this observer's ring was full: `lagged` events were
	                   * dropped; a HL_EV_RESYNC for the key follows */
	HL_EV_RESYNC = 4, /* the key's current state after a lag: new value (or
	                   * has_new = 0 when the key no longer exists) */
};

/*
 * One event. All pointers are borrowed from the client and stay valid until
 * the next hl_next() or hl_close() on this client.
 */
struct hl_event {
	enum hl_event_type type;
	hl_observer_id observer;
	uint64_t revision;  /* the key's revision after the change */
	pid_t publisher;    /* pid of the publishing process, 0 for RESYNC */
	uint64_t timestamp_ns; /* CLOCK_MONOTONIC when the publish was queued */
	const void *key;
	size_t key_len;
	const void *old_value; /* NULL when there was none (or for RESYNC) */
	size_t old_len;
	const void *new_value; /* NULL for DELETE */
	size_t new_len;
	const void *meta;
	size_t meta_len;
	uint64_t lagged; /* HL_EV_LAGGED: how many events were dropped */
	int has_old, has_new;
};

/*
 * The next event for any observer of this client. Blocks on a futex up to
 * timeout_ms (0 = do not block, -1 = forever). For each observer and key,
 * revisions come in increasing order, with no duplicates; events dropped
 * because this client read too slowly are replaced by HL_EV_LAGGED followed by
 * HL_EV_RESYNC with the current value, so an observer always ends at the
 * latest value. Errors: -ETIMEDOUT (nothing within the timeout; -EAGAIN when
 * timeout_ms is 0), -EINTR, HL_ESTALE, HL_ECORRUPT.
 */
HL_API int hl_next(struct hl_client *c, struct hl_event *ev, int timeout_ms);

/* ---- Introspection. ---- */

struct hl_stats {
	uint64_t publishes, skipped_unchanged, deletes;
	uint64_t notifications, lagged_drops, resyncs;
	uint64_t observers_added, observers_removed;
	uint64_t endpoints_attached, endpoints_removed;
	uint64_t cleanup_runs, cleanup_removed;
	uint64_t handoffs, reattaches, epoch;
	uint64_t last_recovery_ns;
	uint64_t keys, observers, endpoints;   /* current counts */
	uint64_t heap_used, heap_capacity;     /* value heap bytes */
	uint64_t revision;                     /* global revision */
	pid_t owner_pid;
	int owner_role;                        /* 0 none, 1 keeper, 2 worker */
	uint64_t dispatch_hist[16]; /* publish applied -> last event written,
	                             * bucket i counts latencies < 2^(i+7) ns */
};

/* Fill *st from the segment's counters (no worker needed). */
HL_API int hl_stats(struct hl_client *c, struct hl_stats *st);

struct hl_observer_info {
	hl_observer_id id;
	pid_t pid;
	int alive;              /* the owning process exists */
	uint64_t age_ns;        /* since the observer was added */
	uint64_t queue_depth;   /* bytes waiting in its client's event ring */
	uint64_t dropped;       /* events dropped for this observer (lag) */
	uint64_t delivered_revision;
};

/* Copy up to CAP observers of KEY into OUT; returns how many the key has
 * (which may exceed cap), or -ENOENT / -EINVAL / -EBUSY. */
HL_API int hl_inspect_key(struct hl_client *c, const void *key, size_t key_len,
                          struct hl_observer_info *out, size_t cap);

/* Capacities the segment was created with. */
struct hl_caps {
	uint32_t max_keys;
	uint32_t max_observers;
	uint32_t max_endpoints;
	uint32_t max_value;      /* bytes */
	uint32_t shards;
	uint32_t req_ring_bytes; /* per endpoint and shard */
	uint32_t ev_ring_bytes;  /* per endpoint and shard */
	uint64_t heap_bytes;     /* value heap */
};
HL_API int hl_caps(struct hl_client *c, struct hl_caps *caps);

/* Iterate over existing keys: calls cb for each; a non-zero return from cb
 * stops the walk and is returned. Lock-free and best effort under change. */
typedef int (*hl_key_cb)(const void *key, size_t key_len, uint64_t revision, void *arg);
HL_API int hl_keys(struct hl_client *c, hl_key_cb cb, void *arg);

/* ---- Errors. ---- */

/* A description of ERR (negative errno or HL_E*); never NULL. */
HL_API const char *hl_strerror(int err);
/* The symbolic name of ERR ("ENOSPC", "HL_EVERSION"); never NULL. */
HL_API const char *hl_err_name(int err);

#ifdef __cplusplus
}
#endif
#endif /* HEIRLOOM_HEIRLOOM_H */
