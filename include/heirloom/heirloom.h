/* SPDX-License-Identifier: MIT */
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
 *  - A failed call changes nothing and delivers nothing, now or later,
 *    through any crash or restart of the worker: see "Outcomes".
 *  - No function aborts the calling process on bad input: NULL pointers,
 *    bad lengths, unknown ids and corrupt segments are all answered with an
 *    error.
 *
 * Outcomes (the failure contract). Every call that needs the worker ends in
 * one of three states, and its return value says which:
 *  - applied: 0 (or a count, or an id). With HL_OPEN_SYNC, hl_publish() and
 *    hl_delete() return 0 once the worker applied the request; without it,
 *    0 means accepted: the request sits in this client's request ring in
 *    shared memory and will be applied exactly once, through any crash of
 *    the worker, and a failure is reported by hl_flush().
 *  - not applied, and never will be: any negative value except -ETIMEDOUT.
 *    When the request was already queued, the library withdrew it before a
 *    worker took it: one compare-and-swap each side decides, so no worker
 *    crash or restart can apply it later.
 *  - applied, not known to be on disk: HL_ENOTDURABLE (HL_OPEN_SYNC, with
 *    the keeper's --durability log only). The change is in the table and
 *    observers get it; its log record was not confirmed by an fdatasync
 *    (the writer failed, or stopped, or did not confirm within the
 *    timeout). A power loss may lose it. heirloomctl status says why.
 *  - in doubt: -ETIMEDOUT. A worker took the request but did not answer
 *    within the timeout (it is slow, or died in the middle). It will be
 *    applied exactly once, when a worker serves. hl_flush() waits for it
 *    and returns its error, if it had one. An observe in doubt never hands
 *    out its id: once applied, the library removes the observer (no event
 *    is delivered for it); call hl_observe() again.
 * Exactly once: a request is applied once, with the result its caller gets,
 * never twice and never over a newer write of another client, whatever
 * instruction the worker was killed at (docs/architecture.md, "The failure
 * contract"). Which calls return which code:
 *
 *   code        observe unobserve publish delete flush  what it means
 *   0 (or id)     x       x        x       x      x    applied (or accepted)
 *   -EINVAL       x       x        x       x      x    bad argument, nothing queued
 *   -EMSGSIZE                      x                   value or meta too large
 *   -EPERM                x(1)     x       x           not yours / a $sys/ key
 *   -ENOENT               x                            no such observer
 *   -ENOSPC       x                x(2)           x(3) a table is full
 *   -EOVERFLOW    x                                    observer ids used up
 *   HL_ECOMPACTED x(5)                                 the history no longer reaches
 *                                                      the start revision
 *   HL_ECONFLICT                   x(4)    x(4)        the key's revision is not the
 *                                                      expected one; nothing changed
 *   -EAGAIN       x       x        x       x           not applied, never will be
 *                                                      (no worker took it in time,
 *                                                      or the ring stayed full)
 *   -ETIMEDOUT    x       x        x       x      x    in doubt (above); for flush:
 *                                                      still queued, not failed
 *   HL_ESTALE     x       x        x       x      x    this endpoint was removed
 *   HL_ENOTDURABLE                 x(6)    x(6)        applied, not confirmed on disk
 *   -ENOMEM       x                                    nothing queued
 *   (1) an id another client holds. (2) with HL_OPEN_SYNC, else from
 *   hl_flush(). (3) hl_flush() returns the error of a request nobody
 *   waited for: an asynchronous publish, delete or unobserve, or a settled
 *   in-doubt one; each is reported once. (4) hl_publish_if() and
 *   hl_delete_if() only, which always wait for the answer (as with
 *   HL_OPEN_SYNC) and follow the same table. (5) hl_observe_with() /
 *   hl_observe_from() with HL_OBSERVE_FROM_REV only: no observer was
 *   added. (6) HL_OPEN_SYNC, keeper in --durability log (also
 *   hl_publish_if() / hl_delete_if()).
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

#define HL_EBADMAGIC  (-20001) /* the object is not a heirloom segment */
#define HL_EVERSION   (-20002) /* segment has another layout version */
#define HL_ECORRUPT   (-20003) /* a structure in the segment failed validation */
#define HL_ENOWORKER  (-20004) /* no worker is serving the table (and waiting was not asked) */
#define HL_ESTALE     (-20005) /* this client's endpoint was removed by the worker */
#define HL_ETRUNCATED (-20006) /* the segment is smaller than its header says */
#define HL_EUNTRUSTED (-20007) /* the segment's owner is not one this process trusts */
#define HL_ECONFLICT  (-20008) /* compare-and-set: the key's revision is not the one given */
#define HL_ECOMPACTED (-20009) /* resume: the history no longer reaches the start revision */
#define HL_ENOTDURABLE                                                                             \
	(-20010) /* HL_OPEN_SYNC in --durability log: applied in memory, but not                   \
	          * confirmed on disk (a write failed, or no confirmation in time) */

/* Hard limits compiled into the layout (the segment's own capacities, which
 * are set at creation, may be smaller). */
#define HL_KEY_MAX         255u   /* bytes in a key; keys are binary, 1..255 bytes */
#define HL_META_MAX        256u   /* bytes of publisher metadata per publish */
#define HL_VALUE_MAX_LIMIT 65536u /* largest value size a segment can be created with */
#define HL_SHARDS_MAX      64u

/* ---- Opening a segment. ---- */

struct hl_client;

/* hl_open() flags. */
#define HL_OPEN_SYNC                                                                               \
	0x1u /* hl_publish()/hl_delete() wait until the worker applied                             \
	      * the request and return its error (e.g. -ENOSPC);                                   \
	      * without it they return once the request is queued.                                 \
	      * When the keeper runs --durability log they (and                                    \
	      * hl_publish_if/hl_delete_if) also wait until the change                             \
	      * is on disk (fdatasync), or return HL_ENOTDURABLE */
#define HL_OPEN_NOWAIT                                                                             \
	0x2u /* when no worker runs or a ring is full, fail with                                   \
	      * -EAGAIN at once instead of waiting timeout_ms */

struct hl_open_opts {
	uint32_t flags;             /* HL_OPEN_* */
	int timeout_ms;             /* how long calls that need the worker may wait:
	                             * 0 = the default (5000), -1 = forever */
	const char *runtime_dir;    /* reserved; NULL */
	uint32_t spin_us;           /* hl_next() with a non-zero timeout polls this
	                             * client's event rings for up to spin_us
	                             * microseconds before it sleeps on its futex
	                             * (0 = sleep at once, the default; at most
	                             * 1000000). Spinning saves the wake-up (a futex
	                             * syscall in the worker and a reschedule here) when
	                             * events come faster than that, at the price of
	                             * one busy core while it polls: on a machine with
	                             * few cores it takes CPU from the worker and the
	                             * publishers (bench/README.md has the figures). */
	const char *expected_owner; /* whose segment to accept besides root's and
	                             * this process's own: a comma-separated list
	                             * of users ("heirloom", "1001") and groups
	                             * (":heirloom", ":1001"); NULL or "" = take
	                             * $HEIRLOOM_OWNER, else the default rule
	                             * (see hl_open()) */
};

/*
 * Attach to segment NAME ("default" when NULL; the shm object is
 * /heirloom.NAME) and claim an endpoint for this process.
 *
 * Whose segment it accepts. /dev/shm is writable by every local user, so
 * anyone can create /heirloom.NAME while the real service is not running
 * and read or forge every value its clients exchange. hl_open() maps a
 * segment only when its owner is one of:
 *   - root, or this process's effective uid;
 *   - when expected_owner (else $HEIRLOOM_OWNER) names owners: one of those
 *     users, or an object whose group is one of those groups;
 *   - when none is named: a system user (uid <= 999) whose object's group
 *     is one of this process's groups and whose mode gives others no
 *     write permission: a service running as its own user, used by the
 *     members of its group, needs no configuration.
 * Anyone else's segment fails with HL_EUNTRUSTED before anything is mapped,
 * and one line on stderr says which owner was found, which was expected and
 * how to trust it. docs/security.md gives the reasons.
 *
 * Errors: -ENOENT no such segment; -EACCES not permitted; HL_EUNTRUSTED the
 * owner is not trusted (above); HL_EBADMAGIC, HL_EVERSION, HL_ETRUNCATED,
 * HL_ECORRUPT the object is not a usable segment; -ENOSPC every endpoint is
 * taken; -EINVAL bad name or options (including an expected_owner or
 * $HEIRLOOM_OWNER that names no user or group); -ENOMEM.
 * If hl_open() fails there is nothing to close and *out is untouched.
 *
 * The client belongs to the calling process: after fork() the child must not
 * use it (it must hl_open() its own). The worker watches the process from
 * here on: when it exits for any reason, even SIGKILL in the middle of a
 * call, its observers and its endpoint are removed at once (publishes and
 * deletes it had queued are still applied).
 */
HL_API int hl_open(const char *name, const struct hl_open_opts *opts, struct hl_client **out);

/* Give back the endpoint (the worker removes this client's observers) and
 * unmap. NULL is accepted. Every pointer the client handed out (event keys
 * and values) is invalid afterwards. It first waits up to timeout_ms (5 s
 * when -1) for queued requests, as hl_flush(); those still queued then stay
 * queued and are applied exactly once when a worker serves. Returns 0, or
 * the first error queued requests met (as hl_flush()). The client is freed
 * whatever it returns. */
HL_API int hl_close(struct hl_client *c);

/* Wait until every request this client queued has been applied by the worker,
 * in-doubt ones included (see "Outcomes"). Returns 0, or the error of a
 * request nobody waited for since the last hl_flush(): a settled in-doubt
 * request's first, else the most recent asynchronous one (for example
 * -ENOSPC for a publish into a full table); -ETIMEDOUT when the worker did
 * not catch up within timeout_ms (-1 forever; at once with HL_OPEN_NOWAIT
 * and no worker): nothing failed, the requests stay queued and will be
 * applied exactly once. HL_ESTALE. Withdraws nothing. */
HL_API int hl_flush(struct hl_client *c, int timeout_ms);

/* ---- Observing. ---- */

typedef uint64_t hl_observer_id; /* never 0, never reused within a segment */

/* hl_observe() flags (and hl_observe_opts.flags): filters, kept by the
 * worker in the observer's slot, so they hold across worker restarts.
 * NOPUT and NODELETE are applied by the worker before an event is written:
 * a filtered event costs the observer no ring space and cannot make it lag.
 * NOOLD leaves the old value out of HL_EV_PUT and HL_EV_DELETE events
 * (old_value NULL, old_len 0, has_old 0): the worker writes the old value
 * once per event record for all of a process's observers of the key, so it
 * still copies it when another observer of this client wants it. LAGGED and
 * RESYNC are never filtered: a RESYNC reports the key's state (which may
 * be "absent" for a NODELETE observer), not a change. */
#define HL_OBSERVE_NOPUT    0x1u /* no HL_EV_PUT events: deletes only */
#define HL_OBSERVE_NODELETE 0x2u /* no HL_EV_DELETE events: puts only */
#define HL_OBSERVE_NOOLD    0x4u /* leave the old value out of events */
/* Observe every key that starts with the bytes given as the key (the
 * prefix, 1..HL_KEY_MAX bytes), including keys created later: one event per
 * change of any such key, naming the key (hl_event.key). Per key, the same
 * order as an exact observer: revisions increase, with no duplicates and no
 * gaps except LAGGED. Changes committed before the observe returned are not
 * delivered. Combines with the filters above. A process's exact and prefix
 * observers of one key each get the event (one record in its ring). A slow
 * prefix observer is caught up from the history as an exact one is (see
 * HL_OBSERVE_FROM_REV). Past the history it gets HL_EV_LAGGED (key = the
 * prefix, revision = the last one handed out, lagged = the events dropped)
 * but, unlike an exact observer, no HL_EV_RESYNC: the library cannot tell
 * which keys lost events. Read the keys again (hl_keys() or heirloomctl
 * get --prefix) and go on from the events that follow. Each distinct
 * prefix takes a slot of the key pool (hl_stats().prefixes; -ENOSPC when
 * the pool is full). */
#define HL_OBSERVE_PREFIX 0x8u
/*
 * Resume (hl_observe_opts.start_rev; hl_observe_with() and
 * hl_observe_from() only): start from a past revision instead of from now.
 * The observer first receives, from the segment's history, every change
 * with a revision above start_rev (0 = every change the history holds),
 * exact key or prefix, in order per key, then the live changes, with no
 * gap and no duplicate at the seam: a process that saw revision R before
 * it restarted passes R and misses nothing. Events replayed from the
 * history carry no old value (has_old 0): the history keeps each change's
 * new value only. The history is a bounded ring per shard (its size is set
 * when the segment is created: --history, printed by heirloomctl status).
 * When it no longer reaches start_rev (a change after it was overwritten),
 * the call fails with HL_ECOMPACTED and adds no observer; hl_observe_from()
 * then gives the smallest start_rev the history would accept now
 * (etcd's compact revision). The history is checked before the observer
 * is linked and again after (so nothing slips in between): a failure at
 * the second check removes the observer again, and leaves behind only
 * statistics (hl_stats() counters) and one observer id that is never
 * handed out (ids are never reused). A start_rev above the current revision is
 * accepted: the changes after it are delivered.
 *
 * Catch-up. Without any flag, an observer whose client reads too slowly
 * (its event ring filled and events were dropped) is caught up from the
 * history by hl_next(): it loses nothing while the history still holds
 * what it missed. Only when the history has moved past the last revision
 * it was given does it get HL_EV_LAGGED (+ HL_EV_RESYNC for an exact
 * observer), as described at hl_next(). A resumed observer that falls
 * behind the history while it replays it gets the same.
 */
#define HL_OBSERVE_FROM_REV 0x10u
/* Flags a later version may add are refused with -EINVAL, so a program
 * that sets one never silently gets less. */

/* Options of hl_observe_with(). Zero-initialise: every field not named
 * below is reserved, must be 0, and will carry later options without
 * changing the size of the struct.
 *
 * progress_ms: 0, or ask for HL_EV_PROGRESS events about this often
 * (at least HL_PROGRESS_MS_MIN ms; 1..9 give -EINVAL) while the observer
 * has nothing else to hand out. An HL_EV_PROGRESS event says "current as
 * of revision R" (hl_event.revision): every change of this observer's key
 * (or, for HL_OBSERVE_PREFIX, of every key under its prefix) with a
 * revision <= R has been handed out by hl_next() before it (or reported
 * lost by an HL_EV_LAGGED before it), so a process that restarts can
 * resume from R (issue 14: start_rev with HL_OBSERVE_FROM_REV). R never
 * decreases for one observer; it may repeat. It may be below revisions
 * already handed out (a prefix observer's R is the least over the
 * worker's shards; an idle shard moves its R up at least every 100 ms).
 * The events come from hl_next(): the worker wakes the client about every
 * progress_ms, futex or hl_fd() alike, so a loop asleep on hl_fd() gets
 * them too. Not filtered by NOPUT/NODELETE. None while the observer is
 * being caught up from the history. */
#define HL_PROGRESS_MS_MIN 10u
struct hl_observe_opts {
	uint32_t flags;       /* HL_OBSERVE_* */
	uint32_t progress_ms; /* 0 = none; else >= HL_PROGRESS_MS_MIN (above) */
	uint64_t start_rev;   /* with HL_OBSERVE_FROM_REV: deliver the changes
	                       * after this revision (see above); else 0 */
	uint64_t reserved[5]; /* 0 */
};

/*
 * Observe KEY: every later change (put or delete) of the key produces one
 * event for this observer, unless flags filter it out (HL_OBSERVE_*
 * above). The key need not exist. A process may hold many observers, on
 * one key or many, each with its own filters.
 *
 * Errors: -EINVAL (NULL, key_len 0 or > HL_KEY_MAX, unknown flags, or
 * both NOPUT and NODELETE: nothing would ever be delivered), -ENOSPC
 * (observer or key table full), -EOVERFLOW (ids used up), -EAGAIN (no
 * worker took it in time: no observer was added), -ETIMEDOUT (in doubt:
 * the observer will be added and then removed by the library; no id is
 * handed out), HL_ESTALE, -ENOMEM. On any error *out is untouched.
 */
HL_API int hl_observe(struct hl_client *c, const void *key, size_t key_len, uint32_t flags,
                      hl_observer_id *out);

/* hl_observe() with options; OPTS NULL is the same as all zero. A reserved
 * field that is not 0, or a start_rev without HL_OBSERVE_FROM_REV, gives
 * -EINVAL. HL_ECOMPACTED: see HL_OBSERVE_FROM_REV. Otherwise as
 * hl_observe() (which refuses HL_OBSERVE_FROM_REV: it has no start_rev). */
HL_API int hl_observe_with(struct hl_client *c, const void *key, size_t key_len,
                           const struct hl_observe_opts *opts, hl_observer_id *out);

/* hl_observe_with(), and on HL_ECOMPACTED *COMPACT_REV (may be NULL) gets
 * the smallest start_rev the history of the key's shard (of every shard,
 * for a prefix) would accept now; untouched otherwise. */
HL_API int hl_observe_from(struct hl_client *c, const void *key, size_t key_len,
                           const struct hl_observe_opts *opts, hl_observer_id *out,
                           uint64_t *compact_rev);

/* Stop observer ID. From the return on, hl_next() gives no event for it
 * (those already queued are dropped).
 *
 * For an id this client holds, it returns once the request is queued (no
 * round trip to the worker, unless the client was opened HL_OPEN_SYNC): the
 * worker unlinks the observer in request order, and hl_flush() waits for
 * that and reports a failure, as for a publish. Until then the observer
 * still counts in hl_inspect_key() and in the table's capacity.
 * An id this client does not hold is checked by the worker, and the call
 * waits for the answer. Errors: -ENOENT no such observer, -EPERM it belongs
 * to another client, -EAGAIN not done (the id is still held and still
 * delivers; for an id held without HL_OPEN_SYNC: only when the request
 * ring stays full), -ETIMEDOUT in doubt (it will be removed; from the return
 * on no event is delivered for it), HL_ESTALE. */
HL_API int hl_unobserve(struct hl_client *c, hl_observer_id id);

/* ---- Writing and reading values. ---- */

/*
 * Set KEY to VALUE (0..value_max bytes) with optional metadata (0..HL_META_MAX
 * bytes) handed to observers as is. A value equal to the current one changes
 * nothing and notifies nobody (counted as skipped).
 *
 * Returns once the request sits in this client's request ring, which survives
 * a crash of the worker: it will be applied exactly once (with HL_OPEN_SYNC:
 * once it was applied, with its error). Errors: -EINVAL, -EMSGSIZE (value or
 * meta too large), -EPERM (KEY starts with HL_SYS_PREFIX: the worker's own
 * keys), -EAGAIN (not applied, never will be: the ring stayed full, or with
 * HL_OPEN_SYNC no worker took it in time), -ETIMEDOUT (HL_OPEN_SYNC only: in
 * doubt, see "Outcomes"), -ENOSPC (HL_OPEN_SYNC: no room in the table),
 * HL_ESTALE.
 */
HL_API int hl_publish(struct hl_client *c, const void *key, size_t key_len, const void *value,
                      size_t value_len, const void *meta, size_t meta_len);

/* Remove KEY; its observers get a delete event. Deleting a missing key is not
 * an error and notifies nobody. Errors as hl_publish(). */
HL_API int hl_delete(struct hl_client *c, const void *key, size_t key_len);

/*
 * Compare-and-set. Set KEY to VALUE (as hl_publish()), or remove it (as
 * hl_delete()), only if the key's current revision equals IF_REV; IF_REV
 * 0 means "only if the key has no value" (never set, or deleted). The
 * check and the change are one step in the worker, under the key's shard
 * lock, so of two clients that read revision R and both write "if R", one
 * wins and the other gets HL_ECONFLICT.
 *
 * These calls always wait for the worker's answer (whatever the HL_OPEN_*
 * flags, except that HL_OPEN_NOWAIT still fails at once with -EAGAIN when
 * no worker serves). CUR_REV (may be NULL) receives:
 *  - on success (0): the key's revision after the call: the new value's,
 *    the delete's, or the unchanged revision when the value was equal
 *    (hl_publish_if() of the current value changes nothing, notifies
 *    nobody, and succeeds if the revision matched); hl_delete_if() with
 *    IF_REV 0 of a key with no value succeeds with 0 and changes nothing;
 *  - on HL_ECONFLICT: the key's current revision (0 when it has no value).
 *    Nothing changed, and nothing will: a conflict is final;
 *  - on any other error: untouched.
 * Outcomes as in "Outcomes" above: 0 = applied exactly once (through any
 * worker crash: a replay after a crash recognises its own commit, even
 * though the revision has moved past IF_REV since); HL_ECONFLICT and every
 * other error except -ETIMEDOUT = never applied; -ETIMEDOUT = in doubt:
 * the worker took it and will decide it exactly once, with the check
 * against the revision the key has when it is applied; hl_flush() reports
 * HL_ECONFLICT (without a revision) if that is how it ended, and hl_get()
 * tells whether the value is there. Errors: those of hl_publish() /
 * hl_delete() with HL_OPEN_SYNC, and HL_ECONFLICT.
 */
HL_API int hl_publish_if(struct hl_client *c, const void *key, size_t key_len, const void *value,
                         size_t value_len, const void *meta, size_t meta_len, uint64_t if_rev,
                         uint64_t *cur_rev);
HL_API int hl_delete_if(struct hl_client *c, const void *key, size_t key_len, uint64_t if_rev,
                        uint64_t *cur_rev);

/*
 * Read KEY's current value straight from the segment (sequence lock; no
 * worker needed). Copies at most CAP bytes into BUF; *len gets the value's
 * full length (so *len > cap means truncated) and *revision its revision
 * (on -ENOENT: the revision of the key's delete while an observer keeps the
 * key known, else 0).
 * len and revision may be NULL. Errors: -ENOENT no such key, -EINVAL,
 * -EBUSY the value kept changing under the reader (retried internally first).
 */
HL_API int hl_get(struct hl_client *c, const void *key, size_t key_len, void *buf, size_t cap,
                  size_t *len, uint64_t *revision);

/* ---- Events. ---- */

enum hl_event_type {
	HL_EV_PUT = 1,      /* key set: old (maybe none) and new value */
	HL_EV_DELETE = 2,   /* key removed: old value */
	HL_EV_LAGGED = 3,   /* this observer's ring was full: `lagged` events were
	                     * dropped; the next event is its HL_EV_RESYNC */
	HL_EV_RESYNC = 4,   /* the key's current state after a lag: new value (or
	                     * has_new = 0 when the key no longer exists) and its
	                     * revision */
	HL_EV_PROGRESS = 5, /* "current as of `revision`" for an observer that
	                     * asked (hl_observe_opts.progress_ms): key = its key
	                     * or prefix, no values */
};

/*
 * One event. All pointers are borrowed from the client and stay valid until
 * the next hl_next() or hl_close() on this client.
 */
struct hl_event {
	enum hl_event_type type;
	hl_observer_id observer;
	uint64_t revision;     /* the key's revision after the change;
	                        * HL_EV_PROGRESS: current as of it */
	pid_t publisher;       /* pid of the publishing process, 0 for RESYNC */
	uint64_t timestamp_ns; /* CLOCK_MONOTONIC when the publish was queued */
	const void *key;
	size_t key_len;
	const void *old_value; /* NULL when there was none (or for RESYNC, or
	                        * an HL_OBSERVE_NOOLD observer) */
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
 * timeout_ms (0 = do not block, -1 = forever). For each observer, revisions
 * strictly increase, with no duplicates and no gaps. Events dropped
 * because this client read too slowly are first replayed from the
 * segment's history (see HL_OBSERVE_FROM_REV: "Catch-up"; such events have
 * no old value), in their place, losing nothing. Only where the history no
 * longer holds them does this rule apply: the events lost are replaced, at
 * their place in the stream, by one HL_EV_LAGGED (the count dropped from
 * the observer's ring since the last report, which may include some the
 * history gave back; revision = the
 * last one handed out) and, as the very next event of that observer, one
 * HL_EV_RESYNC with the key's state when it was read and its revision,
 * greater than any handed out before. Everything the worker wrote before
 * the drop comes before the pair; anything written after it comes after
 * the pair, and only with a revision greater than the RESYNC's. So an
 * observer always ends at the latest value. (A drop of revisions already
 * handed out, as a redelivery after a worker restart can be, is no loss
 * and yields no pair.) An observer that asked for progress
 * (hl_observe_opts.progress_ms) also gets HL_EV_PROGRESS when nothing else
 * is waiting and its interval has passed; a blocking call wakes for it.
 * Errors: -ETIMEDOUT (nothing within the timeout;
 * -EAGAIN when timeout_ms is 0), -EINTR, HL_ESTALE, HL_ECORRUPT.
 */
HL_API int hl_next(struct hl_client *c, struct hl_event *ev, int timeout_ms);

/*
 * A descriptor for an event loop (poll, epoll, select, libuv's uv_poll,
 * libevent, asyncio's add_reader): it turns readable when hl_next() may have
 * an event without waiting. Level-triggered: it stays readable until
 * hl_next() returns -EAGAIN (timeout 0) or -ETIMEDOUT, which empties it and
 * re-arms it. So, when it polls readable, call hl_next(c, &ev, 0) until it
 * returns -EAGAIN (an edge-triggered EPOLLET registration works with that
 * same loop). It may poll readable with nothing to take (an event another
 * thread's hl_next() took, or an observer's events dropped after
 * hl_unobserve(), or a progress nudge with nothing due yet): hl_next() then
 * just returns -EAGAIN. Watch it for reading only.
 *
 * The first call makes it (an AF_UNIX datagram socket read end, non-blocking
 * and close-on-exec) and asks the worker to take a copy of its other end
 * with pidfd_getfd(2), waiting up to the client's timeout; later calls
 * return the same number. The library owns it: do not read, write or close
 * it; hl_close() closes it (a loop must drop it from its set before). It
 * survives worker restarts: the new worker takes the copy again, and sends
 * once, so a loop keeps its registration and loses no wake-up. No thread is
 * started. Clients that never call hl_fd() are not affected. Not inherited
 * usefully across fork(): a child gets -ECHILD.
 *
 * Errors (nothing is left open): -EPERM when the worker may not take the
 * copy: pidfd_getfd needs ptrace access over this process, i.e. the worker
 * runs as the same user and Yama's kernel.yama.ptrace_scope is 0 (or this
 * process called prctl(PR_SET_PTRACER, worker pid) under scope 1), or the
 * worker has CAP_SYS_PTRACE (systemd: AmbientCapabilities=CAP_SYS_PTRACE);
 * -EMFILE when the worker is out of descriptors (or this process's own
 * socketpair() failed for lack of them); -ENOSYS on a kernel before 5.6;
 * -EAGAIN / -ETIMEDOUT when no worker answered within the timeout (call
 * again later); -ECHILD in a forked child; HL_ESTALE. Use hl_next() with a
 * timeout on a thread of its own instead when hl_fd() cannot be had.
 */
HL_API int hl_fd(struct hl_client *c);

/* ---- Introspection. ---- */

/*
 * Counters are totals since the segment was created (they live in it and
 * survive worker restarts); "current counts" are what exists now. Traffic on
 * the worker's own HL_SYS_PREFIX keys (telemetry) is left out of publishes,
 * skipped_unchanged, deletes, notifications, lagged_drops and dispatch_hist.
 */
struct hl_stats {
	uint64_t publishes;         /* publishes applied that changed the value */
	uint64_t skipped_unchanged; /* publishes equal to the current value */
	uint64_t deletes;           /* deletes of a key that had a value */
	uint64_t notifications;     /* events written to observers (one per observer) */
	uint64_t lagged_drops;      /* events dropped for observers whose ring was full */
	uint64_t resyncs;           /* HL_EV_RESYNC events THIS client's hl_next() made:
	                             * resyncs are made by the library in each client,
	                             * so other processes' resyncs are not counted here */
	uint64_t observers_added, observers_removed; /* removed: unobserve and cleanup */
	uint64_t endpoints_attached; /* endpoints adopted by a worker (one per hl_open) */
	uint64_t endpoints_removed;  /* endpoints freed (close, exit, prune, bad client) */
	uint64_t cleanup_runs;       /* endpoint cleanups (closed or process gone) */
	uint64_t cleanup_removed;    /* observers those cleanups removed */
	uint64_t handoffs;           /* times the keeper gave the table to a worker */
	uint64_t reattaches;         /* worker attaches (each runs recovery) */
	uint64_t epoch;              /* owner epoch */
	uint64_t last_recovery_ns;
	uint64_t keys, observers, endpoints; /* current counts; keys: keys only,
	                                      * not the prefix entries below */
	uint64_t heap_used, heap_capacity;   /* value heap bytes */
	uint64_t revision;                   /* global revision */
	pid_t owner_pid;
	int owner_role;             /* 0 none, 1 keeper, 2 worker */
	uint64_t dispatch_hist[16]; /* publish applied -> last event written,
	                             * bucket i counts latencies < 2^(i+7) ns */
	uint64_t worker_mem_bytes;  /* the worker's process memory in use (jemalloc
	                             * stats.allocated, refreshed about once a
	                             * second); 0 when unknown (built without
	                             * jemalloc, or no worker has run) */
	uint64_t slow_endpoints;    /* current count of endpoints reported as not
	                             * reading: events wait in their rings and none
	                             * was taken for the worker's --slow-reader-ms.
	                             * They keep their observers. */
	uint64_t prefixes;          /* current count of prefix entries: one per
	                             * distinct prefix observed (HL_OBSERVE_PREFIX),
	                             * however many observers it has. They take
	                             * slots of the key pool: keys + prefixes <=
	                             * max_keys. */
};

/* Fill *st from the segment's counters (no worker needed). */
HL_API int hl_stats(struct hl_client *c, struct hl_stats *st);

struct hl_observer_info {
	hl_observer_id id;
	pid_t pid;
	int alive;            /* the owning process exists */
	uint64_t age_ns;      /* since the observer was added */
	uint64_t queue_depth; /* bytes waiting in its client's event ring */
	uint64_t dropped;     /* events dropped for this observer (lag) */
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
	uint32_t max_value; /* bytes */
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

/* ---- Telemetry. ----
 *
 * The worker reports what it does as ordinary values on reserved keys, so an
 * embedding application receives telemetry without polling: hl_observe() the
 * keys below, and hl_next() hands over each report as an HL_EV_PUT like any
 * other change (in order, never blocking the worker; a reader that falls
 * behind gets LAGGED + RESYNC with the latest report, as for any key).
 *
 *   HL_TELEMETRY_DISPATCH  notifications written to observers' event rings
 *                          (hl_stats.notifications)
 *   HL_TELEMETRY_CLEANUP   observers removed by endpoint cleanups: their
 *                          process exited, closed or was found gone by the
 *                          prune pass (hl_stats.cleanup_removed)
 *   HL_TELEMETRY_LAGGED    events dropped because an observer's event ring was
 *                          full (hl_stats.lagged_drops)
 *
 * Each value is the text "count=N total=M" (no NUL): M is the counter's total
 * since the segment was created, N how much it grew since the previous value
 * of that key was published, or since the worker started or someone began to
 * observe the key, whichever is latest. The worker publishes a key only while
 * it has at least one observer, only when M moved, and at most once per its
 * --telemetry-interval (default 100 ms; 0 turns telemetry off), so a burst
 * of activity becomes one report. Telemetry does not count itself: events of
 * HL_SYS_PREFIX keys are left out of every traffic counter.
 *
 * Keys starting with HL_SYS_PREFIX belong to the worker: clients may observe
 * and read them, but hl_publish() and hl_delete() on them fail with -EPERM.
 */
#define HL_SYS_PREFIX         "$sys/"
#define HL_TELEMETRY_DISPATCH "$sys/telemetry/dispatch"
#define HL_TELEMETRY_CLEANUP  "$sys/telemetry/cleanup"
#define HL_TELEMETRY_LAGGED   "$sys/telemetry/lagged"

/* ---- Errors. ---- */

/* A description of ERR (negative errno or HL_E*); never NULL. */
HL_API const char *hl_strerror(int err);
/* The symbolic name of ERR ("ENOSPC", "HL_EVERSION"); never NULL. */
HL_API const char *hl_err_name(int err);

#ifdef __cplusplus
}
#endif
#endif /* HEIRLOOM_HEIRLOOM_H */
