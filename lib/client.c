/* SPDX-License-Identifier: MIT */
/*
 * client.c: libheirloom's client side: attaching (hl_open), claiming an
 * endpoint, queuing requests into this endpoint's request rings, and turning
 * event records into hl_event values (expanding batched records, dropping
 * duplicates, turning lag into LAGGED + RESYNC).
 *
 * It must never write to the segment outside the claims region and its own
 * ep_client block (the rest is mapped read-only), and must never trust a
 * byte of the segment without a bounds check: a corrupt segment gives
 * HL_ECORRUPT, not a crash.
 */
#include "heirloom/heirloom.h"

#include "client_internal.h"
#include "history.h"
#include "layout.h"
#include "ring.h"
#include "segment.h"
#include "seqlock.h"
#include "table_read.h"
#include "trust.h"
#include "util.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

#define DEFAULT_TIMEOUT_MS 5000

/* What this client knows of each of its observers: enough to drop
 * duplicates and to resync after a lag without asking the worker. */
struct obs_ent {
	hl_observer_id id; /* 0 = empty, UINT64_MAX = tombstone */
	uint64_t last_rev; /* highest revision handed to the application */
	uint64_t dropped_seen;
	uint32_t shard;
	uint32_t key_len;
	uint8_t *key;
	int last_was_delete;
	uint32_t flags; /* HL_OBSERVE_* it was made with (NOOLD is applied here) */
	/* HL_OBSERVE_PREFIX observers: the highest revision handed out per
	 * shard (c->shards words, allocated with `key`; NULL for an exact
	 * observer). Its keys are in every shard, and the shards' rings are
	 * read in no common order, so one last_rev would drop a shard's
	 * events as duplicates of another's later ones; within a shard the
	 * worker dispatches in revision order, so per shard the rule
	 * "revision not above the last = duplicate" is exact. last_rev is
	 * then the highest over the shards (for LAGGED). */
	uint64_t *srev;
	/* An exact observer: the history floor it was last given LAGGED +
	 * RESYNC for (catch-up, hist_behind()), so that one loss is reported
	 * once while the RESYNC is still queued. */
	uint64_t hfloor;
	/* An exact observer: its `dropped` when its shard's catch-up began
	 * (lag_at()); those drops are accounted for (dropped_seen) once the
	 * replay ends without a loss (hist_end()). */
	uint64_t drop_snap;
	/* A resumed observer: the revision up to which its changes come only
	 * from the history (those dispatched before it was linked). */
	uint64_t hist_need;
	/* The change of an event record a catch-up replaced (take_record()):
	 * this one revision it must get from the history. */
	uint64_t rec_need;
	/* Progress (hl_observe_opts.progress_ms; 0 = not asked): interval and
	 * next due time in CLOCK_MONOTONIC ns, and the last revision handed
	 * out in an HL_EV_PROGRESS (they never go back). */
	uint64_t prog_ns, prog_due, prog_rev;
};

/* Catch-up from one shard's history ring (lib/history.h): replaying the
 * changes this client's observers missed there (a resume, or events
 * dropped from the shard's event ring) before that ring is read again. */
struct hist_cur {
	int active;     /* replaying: the shard's event ring waits */
	int positioned; /* pos is a record boundary no later than what any
	                 * observer still needs (else start at the tail) */
	uint64_t pos;
};

struct resync {
	hl_observer_id id;
	uint64_t lagged;
};

/* A SYNC request of this client that a worker took but did not answer in
 * time (the call returned -ETIMEDOUT); see settle(). */
struct doubt {
	uint64_t pos;
	uint16_t type; /* HL_REQ_* */
	int set;
	hl_observer_id orphan; /* a settled observe's id, whose removal is due */
};

struct hl_client {
	pthread_mutex_t lock;
	struct hl_seg seg;
	uint32_t ep, gen, shards;
	uint32_t flags;
	int timeout_ms;
	uint64_t spin_ns; /* hl_open_opts.spin_us */
	pid_t pid;

	struct hl_ring req[HL_SHARDS_MAX];
	uint64_t req_head[HL_SHARDS_MAX];
	struct hl_ring ev[HL_SHARDS_MAX];
	uint64_t ev_tail[HL_SHARDS_MAX];
	uint64_t lag_seen[HL_SHARDS_MAX];
	uint64_t errs_seen[HL_SHARDS_MAX];
	struct doubt doubt[HL_SHARDS_MAX];
	uint32_t ndoubt;
	int doubt_err; /* first error of a settled in-doubt request (hl_flush) */
	uint32_t rr;

	/* the event record being expanded into per-observer events */
	uint8_t *evbuf;
	uint32_t evbuf_cap;
	uint32_t ev_idx, ev_n;
	uint32_t ev_shard; /* the shard whose ring evbuf's record came from */

	/* +1 at every change of the observer map (hist_index()) */
	uint64_t obs_gen;
	/* The catch-up's index of the observer map, built at obs_gen:
	 * exact observers by key hash (open addressing: hx_hash/hx_at,
	 * hx_at holding the map's slot + 1), prefix observers in a list. */
	uint64_t hx_gen;
	uint32_t hx_cap, hx_npfx;
	uint64_t *hx_hash;
	uint32_t *hx_at, *hx_pfx;

	/* history catch-up, per shard; hbuf holds the record being read */
	struct hist_cur hc[HL_SHARDS_MAX];
	uint32_t hc_active; /* shards with hc[s].active */
	uint8_t *hbuf;
	uint32_t hbuf_cap;

	/* observers: open addressing, power-of-two capacity */
	struct obs_ent *obs;
	uint32_t obs_cap, obs_n, obs_tomb;

	/* pending LAGGED/RESYNC pairs */
	struct resync *rs;
	uint32_t rs_n, rs_cap, rs_pos;
	int rs_phase;    /* 0: emit LAGGED next, 1: emit RESYNC next */
	uint8_t *rs_buf; /* the RESYNC's value, read with its LAGGED */
	size_t rs_len;
	uint64_t rs_rev;
	int rs_rc;

	int stale;
	/* hl_fd(): this client's wake socketpair (-1 = none): wake_rfd is the
	 * descriptor the application polls, wake_wfd the end the worker takes
	 * a copy of (layout.h, struct hl_shm_epc). Under lock. */
	int wake_rfd, wake_wfd;
	/* Observers that asked for progress events, and the earliest time one
	 * may be due (UINT64_MAX: none), a cheap gate for try_next(). */
	uint32_t nprog;
	uint64_t prog_next;
	/* HL_EV_RESYNC events handed out: written under lock by hl_next(),
	 * read without it by hl_stats() (which must not wait for a call that
	 * blocks holding the lock). */
	_Atomic uint64_t resyncs;
};

/* ---- observer map ---- */

static uint32_t
obs_slot_hash(hl_observer_id id, uint32_t cap)
{
	return (uint32_t)(hl__mix(id, 0x9e3779b97f4a7c15ull) & (cap - 1));
}

static struct obs_ent *
obs_find(struct hl_client *c, hl_observer_id id)
{
	/* 0 marks an empty slot and UINT64_MAX a tombstone: neither is ever an
	 * id, and an event record naming one (a corrupt segment) must not
	 * match a free slot and come out as an event for observer 0. */
	if (!c->obs_cap || id == 0 || id == UINT64_MAX)
		return NULL;
	for (uint32_t i = obs_slot_hash(id, c->obs_cap), n = 0; n < c->obs_cap;
	     i = (i + 1) & (c->obs_cap - 1), n++) {
		/* obs_cap != 0 implies obs != NULL (obs_grow()) */
		if (c->obs[i].id == id) /* NOLINT(clang-analyzer-core.NullDereference) */
			return &c->obs[i];
		if (c->obs[i].id == 0)
			return NULL;
	}
	return NULL;
}

static int
obs_grow(struct hl_client *c)
{
	uint32_t ncap = c->obs_cap ? c->obs_cap * 2 : 64;
	struct obs_ent *n = calloc(ncap, sizeof(*n));
	if (!n)
		return -ENOMEM;
	for (uint32_t i = 0; i < c->obs_cap; i++) {
		struct obs_ent *e = &c->obs[i];
		if (e->id == 0 || e->id == UINT64_MAX)
			continue;
		uint32_t j = obs_slot_hash(e->id, ncap);
		while (n[j].id)
			j = (j + 1) & (ncap - 1);
		n[j] = *e;
	}
	free(c->obs);
	c->obs = n;
	c->obs_gen++;
	c->obs_cap = ncap;
	c->obs_tomb = 0;
	return 0;
}

/* Make room for one more observer and copy its key (*kcopy, freed by the
 * caller unless obs_insert() takes it): after this, obs_insert() cannot
 * fail. */
static size_t
obs_key_room(size_t len)
{
	return (len + 7u) & ~(size_t)7u;
}

static int
obs_prepare(struct hl_client *c, const void *key, size_t len, uint32_t flags, uint8_t **kcopy)
{
	if ((c->obs_n + c->obs_tomb + 1) * 2 > c->obs_cap) {
		int rc = obs_grow(c);
		if (rc)
			return rc;
	}
	/* A prefix observer's per-shard revisions follow the key, zeroed. */
	*kcopy = calloc(1, obs_key_room(len) +
	                           (flags & HL_OBSERVE_PREFIX ? 8u * (size_t)c->shards : 0));
	if (!*kcopy)
		return -ENOMEM;
	memcpy(*kcopy, key, len);
	return 0;
}

static void
obs_insert(struct hl_client *c, hl_observer_id id, uint32_t shard, uint8_t *kcopy, size_t len,
           uint32_t flags, uint64_t start)
{
	uint32_t i = obs_slot_hash(id, c->obs_cap);
	while (c->obs[i].id != 0 && c->obs[i].id != UINT64_MAX)
		i = (i + 1) & (c->obs_cap - 1);
	if (c->obs[i].id == UINT64_MAX)
		c->obs_tomb--;
	/* The observer starts at the key's revision when it was added: events
	 * can only carry later revisions, so nothing is filtered wrongly. */
	uint64_t *srev = NULL;
	if (flags & HL_OBSERVE_PREFIX)
		srev = (uint64_t *)(void *)(kcopy + obs_key_room(len)); /* obs_prepare() */
	c->obs[i] = (struct obs_ent){ .id = id,
		                      .shard = shard,
		                      .key = kcopy,
		                      .key_len = (uint32_t)len,
		                      .flags = flags,
		                      .last_rev = start };
	/* START: the worker's answer (the key's revision, or a prefix
	 * observer's start), or the resume's start revision. Nothing at or
	 * below it is this observer's, from its rings or from the history. */
	c->obs[i].srev = srev;
	for (uint32_t s = 0; srev && s < c->shards; s++)
		srev[s] = start;
	c->obs_n++;
	c->obs_gen++;
}

/* Publish the shortest progress interval of our observers in the endpoint
 * (hl_shm_epc.progress_ms): the worker's monitor wakes us about that often
 * (caller holds c->lock). */
static void
prog_publish(struct hl_client *c)
{
	uint64_t shortest = 0;
	for (uint32_t i = 0; c->nprog && i < c->obs_cap; i++) {
		const struct obs_ent *e = &c->obs[i];
		if (e->id && e->id != UINT64_MAX && e->prog_ns &&
		    (!shortest || e->prog_ns < shortest))
			shortest = e->prog_ns;
	}
	atomic_store_explicit(&hl__epc(&c->seg, c->ep)->progress_ms,
	                      (uint32_t)(shortest / 1000000ull), memory_order_relaxed);
}

static void
obs_del(struct hl_client *c, struct obs_ent *e)
{
	if (e->prog_ns) {
		c->nprog--;
		e->prog_ns = 0;
		prog_publish(c);
	}
	free(e->key);
	memset(e, 0, sizeof(*e));
	e->id = UINT64_MAX;
	c->obs_n--;
	c->obs_gen++;
	c->obs_tomb++;
}

/* ---- attach ---- */

/* The worker's ring positions of endpoint E, where a new client starts,
 * are multiples of 8 (records are 8-aligned); anything else is damage. */
static int
positions_usable(const struct hl_seg *seg, uint32_t e)
{
	for (uint32_t s = 0; s < seg->h->shards; s++) {
		const struct hl_shm_epw_shard *ws = hl__epw_shard(seg, e, s);
		if ((atomic_load_explicit(&ws->req_tail, memory_order_relaxed) |
		     atomic_load_explicit(&ws->ev_head, memory_order_relaxed)) &
		    7u)
			return 0;
	}
	return 1;
}

static int
claim_endpoint(struct hl_client *c)
{
	const struct hl_shm_header *h = c->seg.h;
	uint32_t n = h->max_endpoints;
	uint64_t me = hl__proc_start_time(c->pid);
	/* Lowest free first: the endpoints in use stay dense, under the
	 * worker's high-water mark (layout.h, eps_hwm), which bounds every
	 * pass the worker makes over endpoints (a fresh worker paid a page
	 * fault per endpoint it read). Starting at pid % n spread concurrent
	 * claimers, but put the mark near the top with a handful of clients;
	 * losing a CAS to a concurrent claimer only moves us one further. */
	for (uint32_t e = 0; e < n; e++) {
		struct hl_shm_claim *cl = hl__claim(&c->seg, e);
		uint64_t w = atomic_load_explicit(&cl->word, memory_order_acquire);
		if (HL_CLAIM_PID(w) != 0)
			continue;
		/* The worker frees a claim ({0,g}) only after it finished with
		 * the old incarnation; the epw state tells us it is done. */
		if (atomic_load_explicit(&hl__epw(&c->seg, e)->state, memory_order_acquire) !=
		    HL_EP_FREE)
			continue;
		uint32_t gen = HL_CLAIM_GEN(w) + 1;
		if (gen == 0)
			gen = 1;
		if (!atomic_compare_exchange_strong_explicit(
		            &cl->word, &w, HL_CLAIM((uint32_t)c->pid, gen), memory_order_acq_rel,
		            memory_order_relaxed))
			continue;
		/* Right after the CAS: from now on the prune pass can tell a
		 * dead claimer (pid reused) from a live one (hl_w_prune()). */
		atomic_store_explicit(&cl->start_time, me, memory_order_relaxed);
		int rc = positions_usable(&c->seg, e) ? hl__seg_map_own_block(&c->seg, e) : 1;
		if (rc == 1) {
			/* Damage the worker has not repaired yet (it does so
			 * holding the claim, so not while we hold it): the worker
			 * would ban us for requests at such a position. Give it
			 * back and try the next one. */
			atomic_store_explicit(&cl->start_time, 0, memory_order_relaxed);
			atomic_store_explicit(&cl->word, w, memory_order_release);
			continue;
		}
		if (rc) {
			/* Give it back as we found it: start time 0, then the
			 * word (the worker's prune pass relies on a free claim
			 * holding start time 0). */
			atomic_store_explicit(&cl->start_time, 0, memory_order_relaxed);
			atomic_store_explicit(&cl->word, w, memory_order_release);
			return rc;
		}
		c->ep = e;
		c->gen = gen;
		struct hl_shm_epc *epc = hl__epc(&c->seg, e);
		atomic_store_explicit(&epc->sleeping, 0, memory_order_relaxed);
		atomic_store_explicit(&epc->gen, gen, memory_order_relaxed);
		atomic_store_explicit(&epc->wake_fd, 0, memory_order_relaxed);
		atomic_store_explicit(&epc->wake_ino, 0, memory_order_relaxed);
		atomic_store_explicit(&epc->progress_ms, 0, memory_order_relaxed);
		for (uint32_t s = 0; s < c->shards; s++) {
			struct hl_shm_epw_shard *ws = hl__epw_shard(&c->seg, e, s);
			struct hl_shm_epc_shard *cs = hl__epc_shard(&c->seg, e, s);
			/* Start where the worker's positions stand: whatever
			 * the previous incarnation left is finished. */
			uint64_t t = atomic_load_explicit(&ws->req_tail, memory_order_acquire);
			uint64_t eh = atomic_load_explicit(&ws->ev_head, memory_order_acquire);
			atomic_store_explicit(&cs->req_head, t, memory_order_relaxed);
			atomic_store_explicit(&cs->ev_tail, eh, memory_order_relaxed);
			c->req_head[s] = t;
			c->ev_tail[s] = eh;
			c->lag_seen[s] = atomic_load_explicit(&ws->lag_seq, memory_order_relaxed);
			c->errs_seen[s] =
			        atomic_load_explicit(&ws->async_errs, memory_order_relaxed);
			c->req[s] = (struct hl_ring){ .head = &cs->req_head,
				                      .tail = &ws->req_tail,
				                      .data = hl__req_ring(&c->seg, e, s),
				                      .size = h->req_ring_bytes };
			c->ev[s] = (struct hl_ring){ .head = &ws->ev_head,
				                     .tail = &cs->ev_tail,
				                     .data = hl__ev_ring(&c->seg, e, s),
				                     .size = h->ev_ring_bytes };
		}
		/* Release: the block above is initialised before the worker may
		 * adopt this incarnation (pairs with its acquire of `ready`). */
		atomic_store_explicit(&cl->ready, gen, memory_order_release);
		return 0;
	}
	return -ENOSPC;
}

static void ring_doorbell(struct hl_client *c, uint32_t s);
static void wake_close(struct hl_client *c);

/* Open segment NAME read-write, but hand out its descriptor only when its
 * owner is trusted (trust.h): a squatted segment is refused before any byte
 * of it is mapped. A refusal is the one thing the library says on stderr:
 * the application sees only HL_EUNTRUSTED, the person running it needs the
 * owner and the fix. */
static int
open_trusted(const char *name, const char *expected_owner, int *fd_out)
{
	struct hl_trust t;
	struct stat st;
	char why[512];
	int fd, rc = hl__trust_init(&t, expected_owner, why, sizeof(why));
	if (rc) {
		fprintf(stderr, "heirloom: hl_open: %s\n", why);
		return rc;
	}
	rc = hl__seg_open_fd(name, 1, &fd);
	if (rc)
		return rc;
	rc = hl__trust_fd(&t, fd, &st);
	if (rc == 0 && !S_ISREG(st.st_mode))
		rc = HL_EBADMAGIC;
	if (rc == HL_EUNTRUSTED) {
		char owner[64];
		hl__trust_explain(&t, &st, why, sizeof(why));
		hl__trust_user_name(st.st_uid, owner, sizeof(owner));
		fprintf(stderr,
		        "heirloom: hl_open: refusing segment /heirloom.%s: %s. If you trust "
		        "this owner, set HEIRLOOM_OWNER=%s (or hl_open_opts.expected_owner); "
		        "if not, its owner or root can remove it with 'heirloomctl --name %s "
		        "segment remove --force'\n",
		        name ? name : "default", why, owner, name ? name : "default");
	}
	if (rc) {
		close(fd);
		return rc;
	}
	*fd_out = fd;
	return 0;
}

int
hl_open(const char *name, const struct hl_open_opts *opts, struct hl_client **out)
{
	if (!out)
		return -EINVAL;
	if (opts && (opts->flags & ~(HL_OPEN_SYNC | HL_OPEN_NOWAIT)))
		return -EINVAL;
	if (opts && (opts->timeout_ms < -1 || opts->spin_us > 1000000u))
		return -EINVAL;
	int fd, rc = open_trusted(name, opts ? opts->expected_owner : NULL, &fd);
	if (rc)
		return rc;
	struct hl_client *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	c->pid = getpid();
	c->wake_rfd = c->wake_wfd = -1;
	c->flags = opts ? opts->flags : 0;
	c->timeout_ms = (opts && opts->timeout_ms) ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
	c->spin_ns = opts ? (uint64_t)opts->spin_us * 1000u : 0;
	rc = hl__seg_map_client(fd, &c->seg);
	if (rc)
		goto out_close;
	c->shards = c->seg.h->shards;
	c->evbuf_cap = c->seg.h->ev_ring_bytes;
	c->evbuf = malloc(c->evbuf_cap);
	c->rs_buf = malloc(c->seg.h->max_value ? c->seg.h->max_value : 1);
	c->hbuf_cap = hl__hist_rec_bytes(HL_KEY_MAX, HL_META_MAX, c->seg.h->max_value);
	c->hbuf = malloc(c->hbuf_cap);
	if (!c->evbuf || !c->rs_buf || !c->hbuf) {
		rc = -ENOMEM;
		goto out_unmap;
	}
	rc = claim_endpoint(c);
	if (rc)
		goto out_unmap;
	/* Have the worker adopt the endpoint now rather than at the first
	 * request: from here on it watches this process (pidfd), so the
	 * endpoint is freed at once if the process dies before any request. */
	ring_doorbell(c, 0);
	pthread_mutex_init(&c->lock, NULL);
	*out = c;
	return 0;

out_unmap:
	hl__seg_unmap(&c->seg);
out_close:
	close(fd);
	free(c->evbuf);
	free(c->rs_buf);
	free(c->hbuf);
	free(c);
	return rc;
}

/* ---- requests ---- */

static uint32_t
shard_of(const struct hl_client *c, uint64_t hash)
{
	return hl__shard_of_bucket(c->seg.h, hl__bucket_of(c->seg.h, hash));
}

static int
endpoint_gone(struct hl_client *c)
{
	uint64_t w = atomic_load_explicit(&hl__claim(&c->seg, c->ep)->word, memory_order_acquire);
	if (w != HL_CLAIM((uint32_t)c->pid, c->gen))
		c->stale = 1;
	return c->stale;
}

/* A worker serves, or the keeper hands the table from one worker to the
 * next for an upgrade (`handover`): a planned pause, so a HL_OPEN_NOWAIT
 * call waits for it (bounded by its timeout) instead of failing. */
static int
worker_serving(const struct hl_client *c)
{
	return (atomic_load_explicit(&c->seg.h->owner_role, memory_order_acquire) ==
	                HL_ROLE_WORKER &&
	        atomic_load_explicit(&c->seg.h->worker_ready, memory_order_acquire)) ||
	       atomic_load_explicit(&c->seg.h->handover, memory_order_acquire);
}

static void
ring_doorbell(struct hl_client *c, uint32_t s)
{
	_Atomic uint64_t *pend = hl__pending(&c->seg, s) + c->ep / 64;
	uint64_t bit = 1ull << (c->ep % 64);
	/* Always the RMW, with release: the shard thread's acquire exchange
	 * that takes this bit then also sees the ring head stored before it.
	 * Skipping the RMW when the bit looks set would lose the request if
	 * that load ran before our head store became visible and the thread
	 * cleared the bit in between (store-load reordering, even on x86). */
	atomic_fetch_or_explicit(pend, bit, memory_order_release);
	/* Dekker with the shard thread: our pending bit (and the ring head
	 * before it) must be visible before we read `sleeping`; it sets
	 * `sleeping` before it re-reads the pending bits. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&c->seg.h->shard[s].sleeping, memory_order_relaxed)) {
		struct hl_shm_doorbell *d = hl__doorbell(&c->seg, s);
		atomic_fetch_add_explicit(&d->word, 1, memory_order_relaxed);
		hl__futex_wake(&d->word, 1);
	}
}

/* Deadline helpers: timeout_ms -1 = forever. */
static uint64_t
deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? UINT64_MAX : hl__now_ns() + (uint64_t)timeout_ms * 1000000ull;
}

/* `sleeping` counts this client's threads about to block on ev_signal
 * (hl_next, a full request ring, a synchronous request); the worker wakes
 * every waiter while it is non-zero (hl_w_wake_client). A count, not a flag:
 * one thread's wake-up must not clear the mark of another still asleep.
 * Dekker with the worker: it writes a ring or an ack, then reads `sleeping`;
 * we raise `sleeping`, then re-read the ring, each side with a full fence in
 * between. */
static void
sleep_begin(struct hl_client *c)
{
	atomic_fetch_add_explicit(&hl__epc(&c->seg, c->ep)->sleeping, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
}

static void
sleep_end(struct hl_client *c)
{
	atomic_fetch_sub_explicit(&hl__epc(&c->seg, c->ep)->sleeping, 1, memory_order_relaxed);
}

/* Wait for the worker to signal this endpoint (ev_signal) or until
 * DEADLINE, whichever first, at most `cap_ms`. */
static void
wait_signal(struct hl_client *c, uint32_t seen, uint64_t deadline, int cap_ms)
{
	uint64_t now = hl__now_ns();
	if (now >= deadline)
		return;
	uint64_t cap = now + (uint64_t)cap_ms * 1000000ull;
	hl__futex_wait_bits(hl__ep_signal(&c->seg, c->ep), seen, deadline < cap ? deadline : cap,
	                    hl__ep_signal_bit(c->ep));
}

/*
 * The failure contract (heirloom.h, "Outcomes"). Every request a call waits
 * for is queued with HL_REQF_SYNC. Until a worker takes it (one
 * compare-and-swap of the record's flags word, shard.c take()), the
 * library may withdraw it with the same kind of swap (withdraw()); the
 * swap that lands first decides, so a call that gives up either withdrew
 * its request (it is never applied: a definite error) or finds it taken
 * (it will be applied exactly once: -ETIMEDOUT, the request "in doubt").
 * An in-doubt request is settled (settle()) before the next SYNC request
 * on its shard, by hl_flush() and, without waiting, by hl_next(): its
 * answer then sits in result/result_pos, which only SYNC requests write
 * and which no later SYNC request of this shard can overwrite first. A
 * settled observe's observer is removed (nobody holds its id); a settled
 * publish's or delete's error is reported by hl_flush().
 */

/* The record at position POS of shard S's request ring. */
static uint8_t *
req_at(struct hl_client *c, uint32_t s, uint64_t pos)
{
	return c->req[s].data + (pos & (c->req[s].size - 1));
}

/* Queue one request. Caller holds c->lock. *pos_out = its ring position.
 * When the ring is full it waits for room until DEADLINE (0: the client's
 * timeout from the first time the ring is found full; not at all with
 * HL_OPEN_NOWAIT) and then returns -EAGAIN: nothing was queued. An
 * asynchronous publish passes 0: no clock read on its path (it showed as
 * 16% of publish-skip's rate in scripts/bench). */
static int
queue_req(struct hl_client *c, uint32_t s, uint16_t type, const void *key, size_t key_len,
          const void *meta, size_t meta_len, const void *val, size_t val_len, uint64_t arg,
          uint16_t rflags, uint64_t deadline, uint64_t *pos_out)
{
	uint32_t n =
	        hl__rec_align((uint32_t)(sizeof(struct hl_req) + key_len + meta_len + val_len));
	for (;;) {
		void *rec;
		uint64_t next;
		int rc = hl__ring_reserve(&c->req[s], c->req_head[s], n, &rec, &next);
		if (rc == 0) {
			struct hl_req r = {
				.h = { .size = n, .type = type, .key_len = (uint16_t)key_len },
				.val_len = (uint32_t)val_len,
				.meta_len = (uint16_t)meta_len,
				.flags = rflags,
				.arg = arg,
				.ts_ns = hl__now_ns()
			};
			uint8_t *p = rec;
			memcpy(p, &r, sizeof(r));
			p += sizeof(r);
			if (key_len)
				memcpy(p, key, key_len);
			p += key_len;
			if (meta_len)
				memcpy(p, meta, meta_len);
			p += meta_len;
			if (val_len)
				memcpy(p, val, val_len);
			/* A pad record may precede: the record starts n bytes
			 * before `next`. */
			*pos_out = next - n;
			c->req_head[s] = next;
			hl__ring_commit(&c->req[s], next);
			ring_doorbell(c, s);
			return 0;
		}
		if (rc != -EAGAIN)
			return HL_ECORRUPT;
		/* Full: the worker is behind or absent. */
		if (endpoint_gone(c))
			return HL_ESTALE;
		if (!deadline)
			deadline = deadline_of(c->timeout_ms);
		if ((c->flags & HL_OPEN_NOWAIT) || hl__now_ns() >= deadline)
			return -EAGAIN;
		ring_doorbell(c, s);
		/* Asleep until the worker drained some of the ring: it wakes us
		 * after each drain (hl_w_wake_client) once we say we sleep. */
		sleep_begin(c);
		uint32_t seen =
		        atomic_load_explicit(hl__ep_signal(&c->seg, c->ep), memory_order_acquire);
		if (hl__ring_free(&c->req[s], c->req_head[s]) < (uint64_t)n * 2)
			wait_signal(c, seen, deadline, 10);
		sleep_end(c);
	}
}

/* Give up SYNC request POS on shard S: swap its flags SYNC -> SYNC |
 * WITHDRAWN, unless the worker swapped SYNC -> SYNC | TAKEN first. 1 =
 * withdrawn (the worker will skip it: never applied), 0 = taken (it will
 * be applied exactly once). The flags word is the record's second 8-byte
 * word (layout.h); the record stays in place until the worker consumes it,
 * since only this client writes the ring and it writes past the head. */
static int
withdraw(struct hl_client *c, uint32_t s, uint64_t pos)
{
	uint64_t *word = (uint64_t *)(void *)(req_at(c, s, pos) + 8);
	uint64_t expect = __atomic_load_n(word, __ATOMIC_ACQUIRE);
	struct hl_req r;
	memcpy((uint8_t *)&r + 8, &expect, 8);
	if (r.flags != HL_REQF_SYNC)
		return 0;
	r.flags = HL_REQF_SYNC | HL_REQF_WITHDRAWN;
	uint64_t desired;
	memcpy(&desired, (uint8_t *)&r + 8, 8);
	return __atomic_compare_exchange_n(word, &expect, desired, 0, __ATOMIC_ACQ_REL,
	                                   __ATOMIC_ACQUIRE);
}

/* The answer of SYNC request POS on shard S, which the worker consumed. */
static int64_t
answer_of(struct hl_client *c, uint32_t s, uint64_t pos)
{
	struct hl_shm_epw_shard *ws = hl__epw_shard(&c->seg, c->ep, s);
	if (atomic_load_explicit(&ws->result_pos, memory_order_acquire) != pos + 1)
		return HL_ECORRUPT; /* every SYNC request is answered there */
	return atomic_load_explicit(&ws->result, memory_order_relaxed);
}

/* Wait until the worker consumed request POS of shard S (1), or until
 * DEADLINE, or at once when HL_OPEN_NOWAIT and no worker serves (0), or
 * the endpoint is gone (HL_ESTALE). */
static int
wait_consumed(struct hl_client *c, uint32_t s, uint64_t pos, uint64_t deadline)
{
	struct hl_shm_epw_shard *ws = hl__epw_shard(&c->seg, c->ep, s);
	int spins = 0;
	for (;;) {
		if (atomic_load_explicit(&ws->req_tail, memory_order_acquire) > pos)
			return 1;
		if (endpoint_gone(c))
			return HL_ESTALE;
		if ((c->flags & HL_OPEN_NOWAIT) && !worker_serving(c))
			return 0;
		if (hl__now_ns() >= deadline)
			return 0;
		if (++spins < 200) {
			sched_yield();
			continue;
		}
		sleep_begin(c);
		uint32_t seen =
		        atomic_load_explicit(hl__ep_signal(&c->seg, c->ep), memory_order_acquire);
		if (atomic_load_explicit(&ws->req_tail, memory_order_acquire) <= pos)
			wait_signal(c, seen, deadline, 50);
		sleep_end(c);
	}
}

/* Wait for the answer of SYNC request POS on shard S until DEADLINE, then
 * withdraw it. Returns its answer (an observer id, 0, or the worker's
 * -errno), -EAGAIN (withdrawn: never applied), HL_ESTALE (the endpoint is
 * gone and the request was withdrawn), or -ETIMEDOUT: a worker took it and
 * did not answer in time; it will be applied exactly once (the caller
 * records it in c->doubt[s]). */
static int64_t
await_answer(struct hl_client *c, uint32_t s, uint64_t pos, uint64_t deadline)
{
	int rc = wait_consumed(c, s, pos, deadline);
	if (rc == 1)
		return answer_of(c, s, pos);
	if (withdraw(c, s, pos))
		return rc == HL_ESTALE ? HL_ESTALE : -EAGAIN;
	/* Taken: it may have been answered as we looked. */
	if (atomic_load_explicit(&hl__epw_shard(&c->seg, c->ep, s)->req_tail,
	                         memory_order_acquire) > pos)
		return answer_of(c, s, pos);
	return -ETIMEDOUT;
}

/*
 * --durability log (the keeper's writer, daemon/keeper/durable.c): after
 * the worker answered an applied change on shard S, wait until the change
 * is on disk. The answer comes after the change's history record was
 * appended, so the shard's history head now is at or past it; the writer
 * moves durable_pos[S] (release) past a position only after the fdatasync
 * that covers it. Returns 0, or HL_ENOTDURABLE when the writer failed or
 * stopped, or did not confirm by DEADLINE. A wake on dur_kick (a wake
 * needs no write access to the header) makes the writer commit at once.
 */
static int
wait_durable(struct hl_client *c, uint32_t s, uint64_t deadline)
{
	struct hl_shm_header *h = c->seg.h;
	if (atomic_load_explicit(&h->dur_mode, memory_order_relaxed) != HL_DUR_LOG)
		return 0;
	uint64_t target = atomic_load_explicit(&hl__hist(&c->seg, s)->head, memory_order_acquire);
	int kicked = 0;
	for (;;) {
		uint32_t seq = atomic_load_explicit(&h->dur_seq, memory_order_acquire);
		uint32_t st = atomic_load_explicit(&h->dur_state, memory_order_acquire);
		if (atomic_load_explicit(&h->durable_pos[s], memory_order_acquire) >= target &&
		    st == HL_DUR_ST_OK)
			return 0;
		if (st == HL_DUR_ST_FAILED || st == HL_DUR_ST_STOPPED)
			return HL_ENOTDURABLE;
		if (!kicked) {
			hl__futex_wake(&h->dur_kick, 1);
			kicked = 1;
		}
		uint64_t now = hl__now_ns();
		if (now >= deadline)
			return HL_ENOTDURABLE;
		/* A keeper killed with its writer leaves dur_state OK: no
		 * confirmation can come. Checked each round after the first. */
		if (kicked++ > 1) {
			uint32_t kp = atomic_load_explicit(&h->keeper_pid, memory_order_acquire);
			uint64_t ks = atomic_load_explicit(&h->keeper_start, memory_order_relaxed);
			if (!kp || hl__proc_check((int)kp, ks) == 0)
				return HL_ENOTDURABLE;
		}
		uint64_t rel = deadline - now;
		if (rel > 100000000ull)
			rel = 100000000ull; /* look again: a keeper may have died */
		struct timespec ts = { .tv_sec = (time_t)(rel / 1000000000ull),
			               .tv_nsec = (long)(rel % 1000000000ull) };
		hl__futex_wait(&h->dur_seq, seq, &ts);
	}
}

static void
doubt_set(struct hl_client *c, uint32_t s, uint64_t pos, uint16_t type)
{
	c->doubt[s] = (struct doubt){ .pos = pos, .type = type, .set = 1 };
	c->ndoubt++;
}

/*
 * Settle shard S's in-doubt request (see above), waiting for it until
 * DEADLINE. Returns 0 when there is none (any more), -EAGAIN when it is
 * still unanswered (the caller queues nothing behind it), HL_ESTALE.
 */
static int
settle(struct hl_client *c, uint32_t s, uint64_t deadline)
{
	struct doubt *d = &c->doubt[s];
	if (!d->set)
		return 0;
	if (d->type == HL_REQ_OBSERVE && d->orphan) {
		/* Its observer's removal could not be queued yet. */
	} else {
		int rc = wait_consumed(c, s, d->pos, deadline);
		if (rc == HL_ESTALE) {
			d->set = 0;
			c->ndoubt--;
			return HL_ESTALE;
		}
		if (rc == 0)
			return -EAGAIN;
		int64_t r = answer_of(c, s, d->pos);
		if (d->type == HL_REQ_OBSERVE && r > 0) {
			d->orphan = (hl_observer_id)r;
		} else if (r < 0 && d->type != HL_REQ_OBSERVE && d->type != HL_REQ_UNOBSERVE &&
		           !c->doubt_err) {
			/* hl_flush() reports it; a conditional request's
			 * conflict carries a revision nobody asks for now. */
			c->doubt_err = hl__cond_is_conflict(r) ? HL_ECONFLICT : (int)r;
		}
	}
	if (d->orphan) {
		/* Nobody holds this id: remove the observer (its events are
		 * dropped meanwhile: hl_next() knows no such id). */
		uint64_t pos;
		/* deadline 0 (settle_ready()): do not wait for room either. */
		int rc = queue_req(c, s, HL_REQ_UNOBSERVE, NULL, 0, NULL, 0, NULL, 0, d->orphan, 0,
		                   deadline ? deadline : 1, &pos);
		if (rc)
			return rc == HL_ESTALE ? rc : -EAGAIN;
	}
	*d = (struct doubt){ 0 };
	c->ndoubt--;
	return 0;
}

/* hl_next(): settle what can be settled without waiting. */
static void
settle_ready(struct hl_client *c)
{
	for (uint32_t s = 0; s < c->shards && c->ndoubt; s++)
		if (c->doubt[s].set)
			(void)settle(c, s, 0);
}

static int
check_key(const void *key, size_t key_len)
{
	if (!key || key_len == 0 || key_len > HL_KEY_MAX)
		return -EINVAL;
	return 0;
}

/* The history floor that matters to an observer of KEY (FLAGS): its
 * shard's, or for a prefix the highest of every shard's. Every change
 * after it is in the history (or not appended yet). */
static uint64_t
hist_floor(const struct hl_client *c, uint32_t s, uint32_t flags)
{
	uint64_t f = 0, tail, fl;
	for (uint32_t i = 0; i < c->shards; i++) {
		if (!(flags & HL_OBSERVE_PREFIX) && i != s)
			continue;
		hl__hist_tail(&c->seg, i, &tail, &fl);
		if (fl > f)
			f = fl;
	}
	return f;
}

static void hist_begin(struct hl_client *c, uint32_t s, int reposition);

/* hl_observe(), hl_observe_with() and hl_observe_from(): FLAGS may hold
 * HL_OBSERVE_FROM_REV (then START is the resume's start revision), which
 * the worker never sees: a resumed prefix observer's request carries START
 * as its 8 value bytes instead (apply.c). */
static int
observe(struct hl_client *c, const void *key, size_t key_len, uint32_t flags, uint64_t start,
        uint32_t progress_ms, hl_observer_id *out, uint64_t *compact_rev)
{
	const int resume = (flags & HL_OBSERVE_FROM_REV) != 0;
	flags &= ~(uint32_t)HL_OBSERVE_FROM_REV;
	if (!c || !out || (flags & ~(uint32_t)HL_OBSERVE_ALL) ||
	    (flags & (HL_OBSERVE_NOPUT | HL_OBSERVE_NODELETE)) ==
	            (HL_OBSERVE_NOPUT | HL_OBSERVE_NODELETE))
		return -EINVAL;
	int rc = check_key(key, key_len);
	if (rc)
		return rc;
	pthread_mutex_lock(&c->lock);
	uint64_t deadline = deadline_of(c->timeout_ms);
	uint32_t s = shard_of(c, hl__hash(key, key_len));
	uint64_t pos;
	/* Room for the id before the request: once the worker answers, the
	 * observer exists, and failing to record it would leave it held by
	 * nobody. */
	uint8_t *kcopy = NULL;
	rc = c->stale ? HL_ESTALE : obs_prepare(c, key, key_len, flags, &kcopy);
	/* Compacted already: say so before an observer is made for nothing. */
	uint64_t floor = resume ? hist_floor(c, s, flags) : 0;
	if (rc == 0 && floor > start)
		rc = HL_ECOMPACTED;
	if (rc == 0)
		rc = settle(c, s, deadline);
	if (rc == 0)
		rc = queue_req(c, s, HL_REQ_OBSERVE, key, key_len, NULL, 0, &start,
		               resume && (flags & HL_OBSERVE_PREFIX) ? 8 : 0, flags, HL_REQF_SYNC,
		               deadline, &pos);
	if (rc == 0) {
		int64_t r = await_answer(c, s, pos, deadline);
		/* The observer's own start (after result_pos's acquire in
		 * answer_of(); nothing else of ours answers on this shard
		 * while we hold the lock). */
		uint64_t answer_rev = atomic_load_explicit(
		        &hl__epw_shard(&c->seg, c->ep, s)->result_rev, memory_order_relaxed);
		/* Linked: every change after START that was dispatched before
		 * the link is in the history now, those after come through the
		 * rings. The history must still reach START: checked again now
		 * that nothing more can slip between the check and the link. */
		if (r > 0 && resume && (floor = hist_floor(c, s, flags)) > start) {
			/* Not handed out: removed as an unobserve of an id we
			 * hold would be (no answer awaited; events dropped), or,
			 * when it cannot be queued now (no worker, a full
			 * ring), as an in-doubt observe's orphan (settle()). */
			if (queue_req(c, s, HL_REQ_UNOBSERVE, NULL, 0, NULL, 0, NULL, 0,
			              (uint64_t)r, 0, 1, &pos)) {
				c->doubt[s] = (struct doubt){ .type = HL_REQ_OBSERVE,
					                      .set = 1,
					                      .orphan = (hl_observer_id)r };
				c->ndoubt++;
			}
			rc = HL_ECOMPACTED;
		} else if (r > 0) {
			obs_insert(c, (hl_observer_id)r, s, kcopy, key_len, flags,
			           resume ? start : answer_rev);
			kcopy = NULL;
			*out = (hl_observer_id)r;
			if (resume) {
				/* Dispatched before the link: at most the global
				 * revision now (the answer came after the link). */
				obs_find(c, (hl_observer_id)r)->hist_need = atomic_load_explicit(
				        &c->seg.h->revision, memory_order_relaxed);
				/* Replayed by hl_next() from the history: the
				 * key's shard, or every shard for a prefix. */
				for (uint32_t i = 0; i < c->shards; i++)
					if ((flags & HL_OBSERVE_PREFIX) || i == s)
						hist_begin(c, i, 1);
				if (c->wake_wfd >= 0) {
					ssize_t n = send(c->wake_wfd, "w", 1,
					                 MSG_DONTWAIT | MSG_NOSIGNAL);
					(void)n;
				}
			}
			if (progress_ms) {
				struct obs_ent *e = obs_find(c, (hl_observer_id)r);
				e->prog_ns = (uint64_t)progress_ms * 1000000ull;
				e->prog_due = hl__now_ns() + e->prog_ns;
				if (e->prog_due < c->prog_next)
					c->prog_next = e->prog_due;
				c->nprog++;
				prog_publish(c);
			}
		} else if (r == -ETIMEDOUT) {
			doubt_set(c, s, pos, HL_REQ_OBSERVE);
			rc = -ETIMEDOUT;
		} else {
			rc = r < 0 ? (int)r : HL_ECORRUPT; /* 0 is never an id */
		}
	}
	free(kcopy);
	if (rc == HL_ECOMPACTED && compact_rev)
		*compact_rev = floor;
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int
hl_observe(struct hl_client *c, const void *key, size_t key_len, uint32_t flags,
           hl_observer_id *out)
{
	if (flags & HL_OBSERVE_FROM_REV)
		return -EINVAL; /* no start revision here */
	return observe(c, key, key_len, flags, 0, 0, out, NULL);
}

int
hl_unobserve(struct hl_client *c, hl_observer_id id)
{
	if (!c || id == 0 || id == UINT64_MAX)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	struct obs_ent *e = obs_find(c, id);
	/* One of ours: nothing the worker could answer is unknown here (only
	 * this client's requests, or its death, remove its observers), so do
	 * not wait for it (unless HL_OPEN_SYNC). Forgetting the id is what the
	 * caller sees: hl_next() drops every event of an id it does not hold,
	 * those queued and those the worker writes until it reaches this
	 * request. The worker unlinks the observer in request order;
	 * hl_flush() waits for that, and reports a failure there. This halves
	 * the round trips of an observe + unobserve pair (issue 5, scenario 5). */
	int nowait = e && !(c->flags & HL_OPEN_SYNC);
	uint64_t deadline = nowait ? 0 : deadline_of(c->timeout_ms);
	/* An id we do not hold is either unknown or another client's: the
	 * worker tells which. Route by the slot's key when we do not know it. */
	uint32_t s = e ? e->shard : 0;
	if (!e) {
		uint32_t slot = (uint32_t)(id & 0xffffffu);
		if (slot >= 1 && slot <= c->seg.h->max_observers) {
			struct hl_shm_observer *o = hl__obs(&c->seg, slot);
			uint32_t k = __atomic_load_n(&o->key, __ATOMIC_RELAXED);
			if (k >= 1 && k <= c->seg.h->max_keys)
				s = shard_of(c, __atomic_load_n(&hl__key(&c->seg, k)->hash,
				                                __ATOMIC_RELAXED));
		}
	}
	uint64_t pos;
	int rc = c->stale ? HL_ESTALE : nowait ? 0 : settle(c, s, deadline);
	if (rc == 0)
		rc = queue_req(c, s, HL_REQ_UNOBSERVE, NULL, 0, NULL, 0, NULL, 0, id,
		               nowait ? 0 : HL_REQF_SYNC, deadline, &pos);
	if (rc == 0 && !nowait) {
		int64_t r = await_answer(c, s, pos, deadline);
		if (r == -ETIMEDOUT)
			doubt_set(c, s, pos, HL_REQ_UNOBSERVE); /* taken: it will be removed */
		rc = (int)r;
	}
	if ((rc == 0 || rc == -ETIMEDOUT) && e)
		obs_del(c, e);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* The arguments of a publish or delete, plain or conditional: 0 or the
 * error, before anything is queued. */
static int
check_write(const struct hl_client *c, const void *key, size_t key_len, const void *value,
            size_t value_len, const void *meta, size_t meta_len)
{
	if (!c)
		return -EINVAL;
	int rc = check_key(key, key_len);
	if (rc)
		return rc;
	if ((value_len && !value) || (meta_len && !meta))
		return -EINVAL;
	if (value_len > c->seg.h->max_value || meta_len > HL_META_MAX)
		return -EMSGSIZE;
	/* The worker's own keys (telemetry); it refuses them too. */
	if (key_len >= sizeof(HL_SYS_PREFIX) - 1 &&
	    memcmp(key, HL_SYS_PREFIX, sizeof(HL_SYS_PREFIX) - 1) == 0)
		return -EPERM;
	return 0;
}

static int
write_req(struct hl_client *c, uint16_t type, const void *key, size_t key_len, const void *value,
          size_t value_len, const void *meta, size_t meta_len)
{
	int rc = check_write(c, key, key_len, value, value_len, meta, meta_len);
	if (rc)
		return rc;
	pthread_mutex_lock(&c->lock);
	int sync = (c->flags & HL_OPEN_SYNC) != 0;
	uint64_t deadline = sync ? deadline_of(c->timeout_ms) : 0;
	uint32_t s = shard_of(c, hl__hash(key, key_len));
	uint64_t pos;
	/* A dropped endpoint answers HL_ESTALE here, not 0: a request queued
	 * into a ring nobody drains would be lost silently. The claim word's
	 * line is written only at claim, ban and free, so this load is cheap. */
	rc = endpoint_gone(c) ? HL_ESTALE : sync ? settle(c, s, deadline) : 0;
	if (rc == 0)
		rc = queue_req(c, s, type, key, key_len, meta, meta_len, value, value_len, 0,
		               sync ? HL_REQF_SYNC : 0, deadline, &pos);
	if (rc == 0 && sync) {
		int64_t r = await_answer(c, s, pos, deadline);
		if (r == -ETIMEDOUT)
			doubt_set(c, s, pos, type);
		rc = r < 0 ? (int)r : 0;
		if (rc == 0)
			rc = wait_durable(c, s, deadline);
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int
hl_publish(struct hl_client *c, const void *key, size_t key_len, const void *value,
           size_t value_len, const void *meta, size_t meta_len)
{
	return write_req(c, HL_REQ_PUBLISH, key, key_len, value, value_len, meta, meta_len);
}

int
hl_delete(struct hl_client *c, const void *key, size_t key_len)
{
	return write_req(c, HL_REQ_DELETE, key, key_len, NULL, 0, NULL, 0);
}

int
hl_observe_from(struct hl_client *c, const void *key, size_t key_len,
                const struct hl_observe_opts *opts, hl_observer_id *out, uint64_t *compact_rev)
{
	struct hl_observe_opts none = { 0 };
	if (!opts)
		opts = &none;
	if (opts->start_rev && !(opts->flags & HL_OBSERVE_FROM_REV))
		return -EINVAL;
	if (opts->progress_ms && opts->progress_ms < HL_PROGRESS_MS_MIN)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(opts->reserved) / sizeof(opts->reserved[0]); i++)
		if (opts->reserved[i])
			return -EINVAL;
	return observe(c, key, key_len, opts->flags, opts->start_rev, opts->progress_ms, out,
	               compact_rev);
}

int
hl_observe_with(struct hl_client *c, const void *key, size_t key_len,
                const struct hl_observe_opts *opts, hl_observer_id *out)
{
	return hl_observe_from(c, key, key_len, opts, out, NULL);
}

/*
 * A conditional publish or delete (HL_REQ_PUBLISH_IF / HL_REQ_DELETE_IF,
 * arg = IF_REV): always SYNC, whatever the client's flags, because the
 * answer is the point. The failure contract is write_req()'s with
 * HL_OPEN_SYNC: settle this shard first, withdraw on timeout (-EAGAIN,
 * never applied), or -ETIMEDOUT in doubt (the worker decides it later,
 * once; settle() turns a conflict then into HL_ECONFLICT for hl_flush()).
 * *cur_rev gets the revision the worker answered, on success and on
 * HL_ECONFLICT only.
 */
static int
cond_req(struct hl_client *c, uint16_t type, const void *key, size_t key_len, const void *value,
         size_t value_len, const void *meta, size_t meta_len, uint64_t if_rev, uint64_t *cur_rev)
{
	int rc = check_write(c, key, key_len, value, value_len, meta, meta_len);
	if (rc)
		return rc;
	pthread_mutex_lock(&c->lock);
	uint64_t deadline = deadline_of(c->timeout_ms);
	uint32_t s = shard_of(c, hl__hash(key, key_len));
	uint64_t pos;
	rc = endpoint_gone(c) ? HL_ESTALE : settle(c, s, deadline);
	if (rc == 0)
		rc = queue_req(c, s, type, key, key_len, meta, meta_len, value, value_len, if_rev,
		               HL_REQF_SYNC, deadline, &pos);
	if (rc == 0) {
		int64_t r = await_answer(c, s, pos, deadline);
		if (r == -ETIMEDOUT)
			doubt_set(c, s, pos, type);
		if (r >= 0) {
			if (cur_rev)
				*cur_rev = (uint64_t)r;
			rc = (c->flags & HL_OPEN_SYNC) ? wait_durable(c, s, deadline) : 0;
		} else if (hl__cond_is_conflict(r)) {
			if (cur_rev)
				*cur_rev = hl__cond_rev(r);
			rc = HL_ECONFLICT;
		} else {
			rc = (int)r;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int
hl_publish_if(struct hl_client *c, const void *key, size_t key_len, const void *value,
              size_t value_len, const void *meta, size_t meta_len, uint64_t if_rev,
              uint64_t *cur_rev)
{
	return cond_req(c, HL_REQ_PUBLISH_IF, key, key_len, value, value_len, meta, meta_len,
	                if_rev, cur_rev);
}

int
hl_delete_if(struct hl_client *c, const void *key, size_t key_len, uint64_t if_rev,
             uint64_t *cur_rev)
{
	return cond_req(c, HL_REQ_DELETE_IF, key, key_len, NULL, 0, NULL, 0, if_rev, cur_rev);
}

/* Collect (and forget) the errors of requests nobody waited for: a settled
 * in-doubt request's first, else the most recent asynchronous one. Caller
 * holds the lock. */
static int
take_async_errors(struct hl_client *c)
{
	int rc = c->doubt_err;
	c->doubt_err = 0;
	for (uint32_t s = 0; s < c->shards; s++) {
		struct hl_shm_epw_shard *ws = hl__epw_shard(&c->seg, c->ep, s);
		uint64_t n = atomic_load_explicit(&ws->async_errs, memory_order_acquire);
		if (n != c->errs_seen[s]) {
			c->errs_seen[s] = n;
			if (!rc) {
				rc = atomic_load_explicit(&ws->last_err, memory_order_relaxed);
				if (rc >= 0)
					rc = HL_ECORRUPT;
			}
		}
	}
	return rc;
}

/* -ETIMEDOUT: something is still queued (it stays queued and will be
 * applied exactly once); nothing is withdrawn here. */
static int
flush_locked(struct hl_client *c, int timeout_ms)
{
	if (c->stale)
		return HL_ESTALE;
	uint64_t deadline = deadline_of(timeout_ms);
	for (uint32_t s = 0; s < c->shards; s++) {
		int rc = settle(c, s, deadline);
		if (rc)
			return rc == HL_ESTALE ? rc : -ETIMEDOUT;
		if (c->req_head[s] ==
		    atomic_load_explicit(&hl__epw_shard(&c->seg, c->ep, s)->req_tail,
		                         memory_order_acquire))
			continue;
		/* Waiting for the last byte means waiting for the last record. */
		rc = wait_consumed(c, s, c->req_head[s] - 1, deadline);
		if (rc != 1)
			return rc == HL_ESTALE ? rc : -ETIMEDOUT;
	}
	return take_async_errors(c);
}

int
hl_flush(struct hl_client *c, int timeout_ms)
{
	if (!c || timeout_ms < -1)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	int rc = flush_locked(c, timeout_ms);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int
hl_close(struct hl_client *c)
{
	if (!c)
		return 0;
	pthread_mutex_lock(&c->lock);
	int rc = 0;
	if (!c->stale && c->pid == getpid()) {
		int t = c->timeout_ms < 0 ? 5000 : c->timeout_ms;
		rc = flush_locked(c, t);
		/* Ask the worker to drop our observers and free the endpoint
		 * (in-doubt observes included). If none runs, the endpoint is
		 * reclaimed when a worker finds this process gone (or this
		 * request, whichever first). Queued requests stay queued. */
		uint64_t pos;
		if (!c->stale)
			(void)queue_req(c, 0, HL_REQ_CLOSE, NULL, 0, NULL, 0, NULL, 0, 0, 0,
			                deadline_of(t), &pos);
	}
	wake_close(c);
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_destroy(&c->lock);
	hl__seg_unmap(&c->seg);
	close(c->seg.fd);
	for (uint32_t i = 0; i < c->obs_cap; i++)
		if (c->obs[i].id && c->obs[i].id != UINT64_MAX)
			free(c->obs[i].key);
	free(c->obs);
	free(c->rs);
	free(c->evbuf);
	free(c->hbuf);
	free(c->hx_hash);
	free(c->hx_at);
	free(c->hx_pfx);
	free(c->rs_buf);
	free(c);
	return rc == -ETIMEDOUT ? 0 : rc;
}

/* ---- reads ---- */

int
hl_get(struct hl_client *c, const void *key, size_t key_len, void *buf, size_t cap, size_t *len,
       uint64_t *revision)
{
	if (!c || (cap && !buf))
		return -EINVAL;
	int rc = check_key(key, key_len);
	if (rc)
		return rc;
	if (revision)
		*revision = 0;
	uint32_t idx;
	rc = hl__key_lookup(&c->seg, key, key_len, hl__hash(key, key_len), &idx);
	if (rc)
		return rc;
	return hl__value_read(&c->seg, idx, buf, cap, len, revision);
}

/* ---- events ---- */

/* Validate the record copied into evbuf; returns 0 or HL_ECORRUPT. */
static int
check_evrec(const struct hl_client *c, const struct hl_evrec *r)
{
	if (r->h.type != HL_EVR_PUT && r->h.type != HL_EVR_DELETE)
		return HL_ECORRUPT;
	if (r->nobs == 0 || r->nobs > HL_EV_IDS_MAX || r->h.key_len == 0 ||
	    r->h.key_len > HL_KEY_MAX || r->meta_len > HL_META_MAX)
		return HL_ECORRUPT;
	uint64_t old = r->old_len == HL_NO_LEN ? 0 : r->old_len;
	uint64_t nw = r->new_len == HL_NO_LEN ? 0 : r->new_len;
	if (old > c->seg.h->max_value || nw > c->seg.h->max_value)
		return HL_ECORRUPT;
	uint64_t need = sizeof(*r) + 8ull * r->nobs + r->h.key_len + r->meta_len + old + nw;
	return need <= r->h.size ? 0 : HL_ECORRUPT;
}

/* Fill EV from observer number i of the record in evbuf. 1 = delivered,
 * 0 = skipped (unknown observer or duplicate revision). */
#define PREFETCH_AHEAD 8u

/* The observer map's home slot of id number I of the record in evbuf
 * (NULL past the record's end): where its lookup will start. The lookups
 * of a batched record miss the cache (its ids are spread over the map:
 * most of an observer's time per event with 12,500 observers), so
 * expand_one() fetches a few events ahead and the misses overlap.
 *
 * The prefetch itself stays in expand_one(), never in a helper: GCC 12
 * finds a void function whose only effect is __builtin_prefetch "looping
 * pure" (-fdump-tree-local-pure-const1) and deletes every call to it, which
 * left the client with no prefetch at all. */
static const struct obs_ent *
obs_home(const struct hl_client *c, uint32_t i)
{
	const struct hl_evrec *r = (const struct hl_evrec *)c->evbuf;
	hl_observer_id id;
	if (i >= r->nobs || !c->obs_cap)
		return NULL;
	memcpy(&id, c->evbuf + sizeof(*r) + 8ull * i, 8);
	return &c->obs[obs_slot_hash(id, c->obs_cap)];
}

static int
expand_one(struct hl_client *c, uint32_t i, struct hl_event *ev)
{
	const struct hl_evrec *r = (const struct hl_evrec *)c->evbuf;
	const struct obs_ent *pf;
	hl_observer_id id;
	if (i == 0)
		for (uint32_t k = 1; k < PREFETCH_AHEAD; k++)
			if ((pf = obs_home(c, k)) != NULL)
				__builtin_prefetch(pf);
	if ((pf = obs_home(c, i + PREFETCH_AHEAD)) != NULL)
		__builtin_prefetch(pf);
	memcpy(&id, c->evbuf + sizeof(*r) + 8ull * i, 8);
	struct obs_ent *e = obs_find(c, id);
	if (!e)
		return 0;
	uint64_t *last = e->srev ? &e->srev[c->ev_shard] : &e->last_rev;
	if (r->rev <= *last)
		return 0;
	*last = r->rev;
	if (r->rev > e->last_rev)
		e->last_rev = r->rev;
	e->last_was_delete = r->h.type == HL_EVR_DELETE;
	const uint8_t *p = c->evbuf + sizeof(*r) + 8ull * r->nobs;
	memset(ev, 0, sizeof(*ev));
	ev->type = r->h.type == HL_EVR_PUT ? HL_EV_PUT : HL_EV_DELETE;
	ev->observer = id;
	ev->revision = r->rev;
	ev->publisher = (pid_t)r->pub_pid;
	ev->timestamp_ns = r->ts_ns;
	ev->key = p;
	ev->key_len = r->h.key_len;
	p += r->h.key_len;
	ev->meta = r->meta_len ? p : NULL;
	ev->meta_len = r->meta_len;
	p += r->meta_len;
	if (r->old_len != HL_NO_LEN) {
		/* The record is shared by this client's observers of the key
		 * (the worker copies the old value if any of them wants it):
		 * one that asked for no old value gets none. */
		if (!(e->flags & HL_OBSERVE_NOOLD)) {
			ev->has_old = 1;
			ev->old_value = p;
			ev->old_len = r->old_len;
		}
		p += r->old_len;
	}
	if (r->new_len != HL_NO_LEN) {
		ev->has_new = 1;
		ev->new_value = p;
		ev->new_len = r->new_len;
	}
	return 1;
}

static void lag_at(struct hl_client *c, uint32_t s);

/* Take the next record from any shard's event ring into evbuf.
 * 1 = got one, 0 = all empty, <0 error. */
static int
take_record(struct hl_client *c)
{
	for (uint32_t k = 0; k < c->shards; k++) {
		uint32_t s = (c->rr + k) % c->shards;
		const uint8_t *rec;
		uint32_t len;
		uint64_t tail = c->ev_tail[s];
		if (c->hc[s].active)
			continue; /* its history first */
		int rc = hl__ring_peek(&c->ev[s], &tail, &rec, &len);
		if (rc < 0)
			return HL_ECORRUPT;
		if (rc == 0) {
			if (tail != c->ev_tail[s]) { /* skipped a pad */
				c->ev_tail[s] = tail;
				hl__ring_consume(&c->ev[s], tail);
			}
			continue;
		}
		if (len > c->evbuf_cap || len < sizeof(struct hl_evrec))
			return HL_ECORRUPT;
		memcpy(c->evbuf, rec, len);
		c->ev_tail[s] = tail + len;
		hl__ring_consume(&c->ev[s], c->ev_tail[s]);
		int bad = check_evrec(c, (const struct hl_evrec *)c->evbuf);
		if (bad)
			return bad;
		c->ev_idx = 0;
		c->ev_n = ((const struct hl_evrec *)c->evbuf)->nobs;
		c->ev_shard = s;
		c->rr = (s + 1) % c->shards;
		/* Events were dropped just before this record: they, and this
		 * record, come from the history first (it holds the record's
		 * change too: appended before it was dispatched), or as LAGGED
		 * + RESYNC where the history no longer reaches. */
		if (((const struct hl_evrec *)c->evbuf)->flags & HL_EVRF_LAG_BEFORE) {
			lag_at(c, s);
			/* Its observers now need the history up to it: if
			 * the replay falls behind past it, they are told. */
			const struct hl_evrec *lr = (const struct hl_evrec *)c->evbuf;
			for (uint32_t i = 0; i < lr->nobs; i++) {
				hl_observer_id id;
				memcpy(&id, c->evbuf + sizeof(*lr) + 8ull * i, 8);
				struct obs_ent *e = obs_find(c, id);
				if (e && e->rec_need < lr->rev)
					e->rec_need = lr->rev;
			}
			c->ev_n = 0;
		}
		return 1;
	}
	return 0;
}

static int
rs_push(struct hl_client *c, hl_observer_id id, uint64_t lagged)
{
	if (c->rs_n == c->rs_cap) {
		uint32_t ncap = c->rs_cap ? c->rs_cap * 2 : 16;
		struct resync *n = realloc(c->rs, ncap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		c->rs = n;
		c->rs_cap = ncap;
	}
	c->rs[c->rs_n++] = (struct resync){ .id = id, .lagged = lagged };
	return 0;
}

/* With every ring drained: drops that no later record reported (nothing
 * was written after them). */
static int
collect_lag(struct hl_client *c)
{
	int found = 0;
	for (uint32_t s = 0; s < c->shards; s++)
		if (atomic_load_explicit(&hl__epw_shard(&c->seg, c->ep, s)->lag_seq,
		                         memory_order_acquire) != c->lag_seen[s]) {
			lag_at(c, s);
			found = 1;
		}
	return found;
}

/* Produce the next LAGGED or RESYNC event from the queue. 1 = produced. */
static int
next_resync(struct hl_client *c, struct hl_event *ev)
{
	while (c->rs_pos < c->rs_n) {
		struct resync *r = &c->rs[c->rs_pos];
		struct obs_ent *e = obs_find(c, r->id);
		if (!e) {
			c->rs_pos++;
			c->rs_phase = 0;
			continue;
		}
		memset(ev, 0, sizeof(*ev));
		ev->observer = r->id;
		ev->key = e->key;
		ev->key_len = e->key_len;
		if (e->srev) {
			/* A prefix observer: LAGGED alone. Which of its keys
			 * lost events is not known here, and a RESYNC per key
			 * (every key under the prefix, read from the table)
			 * is left to the lossless catch-up of issue 14. */
			c->rs_pos++;
			ev->type = HL_EV_LAGGED;
			ev->lagged = r->lagged;
			ev->revision = e->last_rev;
			return 1;
		}
		if (c->rs_phase == 0) {
			/* The key's state now, read before the LAGGED: hl_get()
			 * retries a seqlock read internally; -EBUSY (the value
			 * kept changing) is retried here, a bounded number of
			 * times. */
			int rc = -EBUSY;
			for (int tries = 0; tries < 1000 && rc == -EBUSY; tries++) {
				if (tries)
					sched_yield();
				c->rs_len = 0;
				c->rs_rev = 0;
				rc = hl_get(c, e->key, e->key_len, c->rs_buf, c->seg.h->max_value,
				            &c->rs_len, &c->rs_rev);
			}
			c->rs_rc = rc;
			/* Nothing missed after all: the events dropped were
			 * copies of revisions already handed out (redelivered
			 * after a worker restart). No LAGGED, no RESYNC. */
			if (c->rs_rev <= e->last_rev && (rc == 0 || e->last_was_delete)) {
				c->rs_pos++;
				continue;
			}
			c->rs_phase = 1;
			ev->type = HL_EV_LAGGED;
			ev->lagged = r->lagged;
			ev->revision = e->last_rev;
			return 1;
		}
		/* Every LAGGED is followed by its RESYNC: the state read above. */
		c->rs_phase = 0;
		c->rs_pos++;
		atomic_fetch_add_explicit(&c->resyncs, 1, memory_order_relaxed);
		ev->type = HL_EV_RESYNC;
		/* Never behind what was handed out (a key gone from the table
		 * reads as revision 0). */
		uint64_t rev = c->rs_rev > e->last_rev ? c->rs_rev : e->last_rev;
		e->last_rev = rev;
		ev->revision = rev;
		if (c->rs_rc == 0) {
			e->last_was_delete = 0;
			ev->has_new = 1;
			ev->new_value = c->rs_buf;
			ev->new_len =
			        c->rs_len < c->seg.h->max_value ? c->rs_len : c->seg.h->max_value;
		} else {
			e->last_was_delete = 1; /* gone (or unreadable: reported as gone) */
		}
		return 1;
	}
	c->rs_n = c->rs_pos = 0;
	return 0;
}

/* ---- catch-up from the history (lib/history.h) ----
 *
 * A shard's history ring holds its changes in revision order, and every
 * change reaches the history before any event of it is written (the
 * worker appends, then dispatches). So what an observer missed in a
 * shard's event ring (a resume's past, or events dropped for a full ring)
 * is in that shard's history while the ring still reaches back that far.
 * hist_step() replays it: each record goes to this client's observers it
 * matches, as one synthesised event record through expand_one(), whose
 * per-(observer, shard) revision check drops what an observer already had
 * or that predates it. While a shard replays, its event ring waits
 * (take_record() skips it), so per shard the events stay in revision
 * order; the replay ends at the ring's head, and what the event ring holds
 * up to there is dropped as duplicates. No worker is involved: a slow
 * replay never slows it. */

/* The revision up to which observer E has shard S's changes, or
 * UINT64_MAX when no change of S can be E's. */
static uint64_t
shard_rev(const struct obs_ent *e, uint32_t s)
{
	if (e->srev)
		return e->srev[s];
	return e->shard == s ? e->last_rev : UINT64_MAX;
}

/* Start (or restart) the replay of shard S. REPOSITION: an observer may
 * need records before the current position (a resume): start again from
 * the tail. */
static void
hist_begin(struct hl_client *c, uint32_t s, int reposition)
{
	struct hist_cur *h = &c->hc[s];
	if (reposition)
		h->positioned = 0;
	if (!h->active) {
		h->active = 1;
		c->hc_active++;
	}
}

static void
hist_end(struct hl_client *c, uint32_t s)
{
	/* Every drop known when the replay began was replayed (a loss would
	 * have given LAGGED, and moved dropped_seen past the snapshot). */
	for (uint32_t i = 0; i < c->obs_cap; i++) {
		struct obs_ent *e = &c->obs[i];
		if (e->id && e->id != UINT64_MAX && !e->srev && e->shard == s &&
		    e->drop_snap > e->dropped_seen)
			e->dropped_seen = e->drop_snap;
	}
	c->hc[s].active = 0;
	c->hc[s].positioned = 1; /* the head: everything before it was seen */
	c->hc_active--;
}

static int rs_push(struct hl_client *c, hl_observer_id id, uint64_t lagged);

/* Shard S's ring was overwritten past the replay's position: every change
 * above FLOOR is still there. An observer that had S's changes only up to
 * a revision below FLOOR may have lost some: it gets LAGGED (+ RESYNC for
 * an exact observer), as for a lag the history cannot cover; the others
 * lost nothing. Returns 1 when something was queued. */
static int
hist_behind(struct hl_client *c, uint32_t s, uint64_t floor)
{
	int found = 0;
	for (uint32_t i = 0; i < c->obs_cap; i++) {
		struct obs_ent *e = &c->obs[i];
		if (!e->id || e->id == UINT64_MAX)
			continue;
		uint64_t have = shard_rev(e, s);
		if (have == UINT64_MAX || have >= floor || (!e->srev && e->hfloor >= floor))
			continue;
		uint64_t d = e->dropped_seen;
		uint32_t slot = (uint32_t)(e->id & 0xffffffu);
		if (slot >= 1 && slot <= c->seg.h->max_observers)
			d = atomic_load_explicit(&hl__obs(&c->seg, slot)->dropped,
			                         memory_order_relaxed);
		/* Only the history had it: the resume's past, what its ring
		 * dropped (not yet replayed), or the one change of a record
		 * the catch-up replaced, if that is gone too. Else every
		 * change it is owed is in its event ring: nothing was lost. (A prefix
		 * observer's `dropped` counts every shard's drops: it may be
		 * told of a loss of another shard's here, never less.) */
		if (d == e->dropped_seen && have >= e->hist_need &&
		    (e->rec_need <= have || e->rec_need > floor))
			continue;
		uint64_t n = d > e->dropped_seen ? d - e->dropped_seen : 1;
		e->dropped_seen = d;
		if (e->srev)
			e->srev[s] = floor; /* LAGGED alone: on from the floor */
		else
			e->hfloor = floor; /* its RESYNC will say where it is */
		if (rs_push(c, e->id, n) == 0)
			found = 1;
	}
	return found;
}

/* The index of the observer map hist_match() looks records up in: rebuilt
 * when the map changed since (obs_gen). 0 or -ENOMEM. */
static int
hist_index(struct hl_client *c)
{
	if (c->hx_hash && c->hx_gen == c->obs_gen)
		return 0;
	uint32_t cap = 16;
	while (cap < 2 * c->obs_n)
		cap *= 2;
	if (cap != c->hx_cap || !c->hx_hash) {
		uint64_t *h = realloc(c->hx_hash, (size_t)cap * sizeof(*h));
		if (!h)
			return -ENOMEM;
		c->hx_hash = h;
		uint32_t *at = realloc(c->hx_at, (size_t)cap * sizeof(*at));
		if (!at)
			return -ENOMEM;
		c->hx_at = at;
		uint32_t *p = realloc(c->hx_pfx, (size_t)cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		c->hx_pfx = p;
		c->hx_cap = cap;
	}
	memset(c->hx_at, 0, (size_t)cap * sizeof(*c->hx_at));
	c->hx_npfx = 0;
	for (uint32_t i = 0; i < c->obs_cap; i++) {
		const struct obs_ent *e = &c->obs[i];
		if (!e->id || e->id == UINT64_MAX)
			continue;
		if (e->srev) {
			c->hx_pfx[c->hx_npfx++] = i;
			continue;
		}
		uint64_t h = hl__hash(e->key, e->key_len);
		uint32_t j = (uint32_t)h & (cap - 1);
		while (c->hx_at[j])
			j = (j + 1) & (cap - 1);
		c->hx_hash[j] = h;
		c->hx_at[j] = i + 1;
	}
	c->hx_gen = c->obs_gen;
	return 0;
}

/* Observer E for the history record HR (key KEY) of shard S in evbuf's
 * N-th id. Returns 1 if added, 0 if it is not E's, -ENOMEM. */
static int
hist_add(struct hl_client *c, const struct obs_ent *e, const struct hl_hist_rec *hr,
         const uint8_t *key, uint32_t s, uint32_t n, uint32_t payload)
{
	if (shard_rev(e, s) >= hr->rev)
		return 0;
	if (e->flags & (hr->h.type == HL_EVR_PUT ? HL_OBSERVE_NOPUT : HL_OBSERVE_NODELETE))
		return 0;
	if (e->srev ? (e->key_len > hr->h.key_len || memcmp(e->key, key, e->key_len) != 0)
	            : (e->key_len != hr->h.key_len || memcmp(e->key, key, e->key_len) != 0))
		return 0;
	uint64_t need = sizeof(struct hl_evrec) + 8ull * (n + 1) + payload;
	if (need > c->evbuf_cap) {
		uint8_t *nb = realloc(c->evbuf, (size_t)need * 2);
		if (!nb)
			return -ENOMEM;
		c->evbuf = nb;
		c->evbuf_cap = (uint32_t)need * 2;
	}
	memcpy(c->evbuf + sizeof(struct hl_evrec) + 8ull * n, &e->id, 8);
	return 1;
}

/* Turn the history record in hbuf (of shard S) into an event record in
 * evbuf for the observers it matches (found through hist_index(): a hash
 * of the key and a probe, and the prefix observers). Returns their count
 * (0: none) or -ENOMEM. */
static int
hist_match(struct hl_client *c, uint32_t s)
{
	struct hl_hist_rec hr;
	memcpy(&hr, c->hbuf, sizeof(hr));
	const uint8_t *key = c->hbuf + sizeof(hr);
	uint32_t n = 0, payload = hr.h.key_len + hr.meta_len + hr.val_len;
	int rc = hist_index(c);
	if (rc)
		return rc;
	uint64_t h = hl__hash(key, hr.h.key_len);
	for (uint32_t j = (uint32_t)h & (c->hx_cap - 1); c->hx_at[j];
	     j = (j + 1) & (c->hx_cap - 1)) {
		if (c->hx_hash[j] != h)
			continue;
		rc = hist_add(c, &c->obs[c->hx_at[j] - 1], &hr, key, s, n, payload);
		if (rc < 0)
			return rc;
		n += (uint32_t)rc;
	}
	for (uint32_t k = 0; k < c->hx_npfx; k++) {
		rc = hist_add(c, &c->obs[c->hx_pfx[k]], &hr, key, s, n, payload);
		if (rc < 0)
			return rc;
		n += (uint32_t)rc;
	}
	if (!n)
		return 0;
	struct hl_evrec r = { .h = { .size = (uint32_t)(sizeof(r) + 8ull * n + payload),
		                     .type = hr.h.type,
		                     .key_len = hr.h.key_len },
		              .nobs = n,
		              .pub_pid = hr.pub_pid,
		              .old_len = HL_NO_LEN,
		              .new_len = hr.h.type == HL_EVR_PUT ? hr.val_len : HL_NO_LEN,
		              .meta_len = hr.meta_len,
		              .rev = hr.rev,
		              .ts_ns = hr.ts_ns };
	memcpy(c->evbuf, &r, sizeof(r));
	memcpy(c->evbuf + sizeof(r) + 8ull * n, key, payload);
	c->ev_idx = 0;
	c->ev_n = n;
	c->ev_shard = s;
	return (int)n;
}

/* One step of the replays in progress: 1 = an event record is in evbuf or
 * LAGGED/RESYNC pairs were queued, 0 = no replay is left, <0 error. Reads
 * until it has something for an observer or a shard's replay reaches the
 * ring's head: bounded by the history's size. */
static int
hist_step(struct hl_client *c)
{
	for (uint32_t s = 0; s < c->shards && c->hc_active; s++) {
		struct hist_cur *h = &c->hc[s];
		if (!h->active)
			continue;
		for (;;) {
			if (!h->positioned) {
				uint64_t floor;
				hl__hist_tail(&c->seg, s, &h->pos, &floor);
				h->positioned = 1;
				if (hist_behind(c, s, floor))
					return 1;
			}
			int rc = hl__hist_read(&c->seg, s, &h->pos, c->hbuf, c->hbuf_cap);
			if (rc == HL_HIST_END) {
				hist_end(c, s);
				break;
			}
			if (rc == HL_HIST_BEHIND) {
				h->positioned = 0;
				continue;
			}
			if (rc < 0)
				return rc;
			rc = hist_match(c, s);
			if (rc != 0)
				return rc < 0 ? rc : 1;
		}
	}
	return 0;
}

/* Events of shard S's event ring were dropped (a record flagged
 * HL_EVRF_LAG_BEFORE, or lag_seq moved): catch up from the history, which
 * holds every one of them while it reaches back far enough (hist_step()
 * reports what it no longer holds). An exact observer's drops known now
 * are accounted for when the replay ends (hist_end()); a prefix
 * observer's, which several shards add to, only by a LAGGED. */
static void
lag_at(struct hl_client *c, uint32_t s)
{
	struct hl_shm_epw_shard *ws = hl__epw_shard(&c->seg, c->ep, s);
	/* Acquire: the dropped counts the worker raised before lag_seq. */
	c->lag_seen[s] = atomic_load_explicit(&ws->lag_seq, memory_order_acquire);
	for (uint32_t i = 0; i < c->obs_cap; i++) {
		struct obs_ent *e = &c->obs[i];
		if (!e->id || e->id == UINT64_MAX || e->srev || e->shard != s)
			continue;
		uint32_t slot = (uint32_t)(e->id & 0xffffffu);
		if (slot >= 1 && slot <= c->seg.h->max_observers)
			e->drop_snap = atomic_load_explicit(&hl__obs(&c->seg, slot)->dropped,
			                                    memory_order_relaxed);
	}
	hist_begin(c, s, 0);
}

/*
 * Progress (hl_observe_opts.progress_ms; docs/architecture.md, "Progress").
 * Called with every ring found empty and nothing queued, at or after
 * c->prog_next. Reads each shard's progress_rev (acquire: pairs with the
 * shard thread's release store, made after the ring commits of every
 * change of that shard up to it), then checks the rings again: if one is
 * not empty, an event may be at or below what was read, and it must go
 * first (2). Else every change up to P[s] of shard s is already handed
 * out, and a due observer gets HL_EV_PROGRESS with R = P of its key's
 * shard (exact) or the least P over the shards (prefix: its keys are in
 * every shard). One event per call; 1 = *ev filled, 0 = none due.
 */
static int
next_progress(struct hl_client *c, struct hl_event *ev)
{
	uint64_t p[HL_SHARDS_MAX], least = UINT64_MAX;
	for (uint32_t s = 0; s < c->shards; s++) {
		p[s] = atomic_load_explicit(&c->seg.h->shard[s].progress_rev, memory_order_acquire);
		if (p[s] < least)
			least = p[s];
	}
	for (uint32_t s = 0; s < c->shards; s++) {
		struct hl_shm_epw_shard *ws = hl__epw_shard(&c->seg, c->ep, s);
		if (atomic_load_explicit(&ws->ev_head, memory_order_acquire) != c->ev_tail[s] ||
		    atomic_load_explicit(&ws->lag_seq, memory_order_acquire) != c->lag_seen[s])
			return 2;
	}
	uint64_t now = hl__now_ns(), next = UINT64_MAX;
	for (uint32_t i = 0; i < c->obs_cap; i++) {
		struct obs_ent *e = &c->obs[i];
		if (!e->id || e->id == UINT64_MAX || !e->prog_ns)
			continue;
		if (e->prog_due > now) {
			if (e->prog_due < next)
				next = e->prog_due;
			continue;
		}
		uint64_t r = e->srev ? least : p[e->shard];
		if (r < e->prog_rev)
			r = e->prog_rev; /* a stale read: what was true stays true */
		e->prog_rev = r;
		e->prog_due = now + e->prog_ns;
		c->prog_next = now; /* others may be due too: look again next call */
		memset(ev, 0, sizeof(*ev));
		ev->type = HL_EV_PROGRESS;
		ev->observer = e->id;
		ev->revision = r;
		ev->key = e->key;
		ev->key_len = e->key_len;
		return 1;
	}
	c->prog_next = next;
	return 0;
}

/* One non-blocking attempt. 1 = *ev filled, 0 = nothing, <0 error. */
static int
try_next(struct hl_client *c, struct hl_event *ev)
{
	for (;;) {
		/* Resyncs first: queued only when no record is half expanded
		 * (collect_lag()) or right before the record they precede. */
		if (c->rs_n && next_resync(c, ev))
			return 1;
		while (c->ev_idx < c->ev_n)
			if (expand_one(c, c->ev_idx++, ev))
				return 1;
		/* A replay from the history before its shard's ring. */
		if (c->hc_active) {
			int hr = hist_step(c);
			if (hr < 0)
				return hr;
			if (hr > 0)
				continue;
		}
		int rc = take_record(c);
		if (rc < 0)
			return rc;
		if (rc > 0)
			continue;
		if (collect_lag(c))
			continue;
		if (c->nprog && hl__now_ns() >= c->prog_next) {
			rc = next_progress(c, ev);
			if (rc == 2)
				continue; /* an event came meanwhile: it goes first */
			return rc;
		}
		return 0;
	}
}

/* hl_open_opts.spin_us: poll the rings until an event comes, spin_ns has
 * passed or DEADLINE, whichever first. Caller holds c->lock, which another
 * thread's hl_publish() then waits for: at most spin_ns. 1 = *ev filled,
 * 0 = nothing, <0 error. Every 64 polls it reads the clock and yields the
 * core: on a machine with few cores the worker (or the publisher) may be
 * waiting for this one, and a spinner that never yields keeps it for a
 * whole time slice (milliseconds; seen with 2 cores). */
static int
spin_next(struct hl_client *c, struct hl_event *ev, uint64_t deadline)
{
	uint64_t end = hl__now_ns() + c->spin_ns;
	if (end > deadline)
		end = deadline;
	for (unsigned i = 1;; i++) {
		int rc = try_next(c, ev);
		if (rc != 0)
			return rc;
		if (i % 64 == 0) {
			if (hl__now_ns() >= end)
				return 0;
			sched_yield();
		}
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	}
}

/* ---- hl_fd(): a descriptor for event loops ----
 *
 * No thread of ours: the worker itself signals the loop. The client makes
 * an AF_UNIX datagram socketpair, keeps both ends, publishes the write
 * end's number and inode in its endpoint (layout.h, struct hl_shm_epc) and
 * asks the worker (HL_REQ_WAKEFD) to take a copy with pidfd_getfd(2). The
 * worker then sends one datagram each time an event or answer is written
 * for this endpoint after the client armed it (epc.wake_arm changed): the
 * same Dekker handshake as the futex's `sleeping`, on a second word, so the
 * futex path of clients without hl_fd() is unchanged. Why a socket and not
 * an eventfd: the copy shares its open file description with the client,
 * so a client could clear O_NONBLOCK on an eventfd and fill its counter,
 * and the worker's write() would block a shard thread; send(MSG_DONTWAIT)
 * on a socket cannot block whatever the client does (docs/architecture.md,
 * "hl_fd").
 */

/* Read every datagram waiting on the read end (the loop saw it readable). */
static void
wake_drain(struct hl_client *c)
{
	char buf[64];
	while (recv(c->wake_rfd, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
	}
}

/* Whether anything may be waiting for hl_next(): a record half expanded,
 * resyncs due, an event ring not empty, or a lag not yet collected. A
 * cheap over-approximation (an answer record or a record for an observer
 * already gone counts too): it only decides a spurious wake-up. */
static int
maybe_pending(struct hl_client *c)
{
	if (c->ev_idx < c->ev_n || c->rs_n || c->hc_active)
		return 1;
	for (uint32_t s = 0; s < c->shards; s++) {
		struct hl_shm_epw_shard *ws = hl__epw_shard(&c->seg, c->ep, s);
		if (atomic_load_explicit(&ws->ev_head, memory_order_acquire) != c->ev_tail[s] ||
		    atomic_load_explicit(&ws->lag_seq, memory_order_relaxed) != c->lag_seen[s])
			return 1;
	}
	return 0;
}

/* hl_next() found nothing for a client with a descriptor: empty the socket,
 * arm (epc.wake_arm), then look once more. Dekker with the worker's
 * wake_one(): it commits a record, fences, reads wake_arm; we store
 * wake_arm, fence, read the rings. So an event the look below misses was
 * committed after the worker's fence, and the worker, reading our new
 * wake_arm, sends a datagram: no wake-up is lost, and one sent before the
 * drain (for an event this look finds) is at worst one spurious wake-up.
 * Caller holds c->lock. 1 = *ev filled, 0 = nothing (armed), <0 error. */
static int
wake_rearm(struct hl_client *c, struct hl_event *ev)
{
	struct hl_shm_epc *pc = hl__epc(&c->seg, c->ep);
	wake_drain(c);
	atomic_fetch_add_explicit(&pc->wake_arm, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
	return try_next(c, ev);
}

/* Close both ends and clear the endpoint's words (caller holds c->lock). */
static void
wake_close(struct hl_client *c)
{
	if (c->wake_rfd < 0)
		return;
	if (!c->stale && c->pid == getpid()) {
		struct hl_shm_epc *pc = hl__epc(&c->seg, c->ep);
		atomic_store_explicit(&pc->wake_fd, 0, memory_order_relaxed);
		atomic_store_explicit(&pc->wake_ino, 0, memory_order_relaxed);
	}
	close(c->wake_rfd);
	close(c->wake_wfd);
	c->wake_rfd = c->wake_wfd = -1;
}

/* Make the socketpair, publish it, and have the worker take its copy
 * (caller holds c->lock). Returns 0 with c->wake_rfd armed, or an error
 * with nothing left open. */
static int
wake_open(struct hl_client *c)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
		return -errno;
	struct stat st;
	if (fstat(sv[1], &st)) {
		int rc = -errno;
		close(sv[0]);
		close(sv[1]);
		return rc;
	}
	c->wake_rfd = sv[0];
	c->wake_wfd = sv[1];
	/* The write end only ever carries datagrams the other way. */
	shutdown(sv[1], SHUT_RD);
	struct hl_shm_epc *pc = hl__epc(&c->seg, c->ep);
	atomic_store_explicit(&pc->wake_ino, (uint64_t)st.st_ino, memory_order_relaxed);
	/* Relaxed: the request's ring commit (release) publishes both. */
	atomic_store_explicit(&pc->wake_fd, (uint32_t)sv[1] + 1u, memory_order_relaxed);
	uint64_t deadline = deadline_of(c->timeout_ms);
	uint64_t pos;
	int rc = settle(c, 0, deadline);
	if (rc == 0)
		rc = queue_req(c, 0, HL_REQ_WAKEFD, NULL, 0, NULL, 0, NULL, 0, 0, HL_REQF_SYNC,
		               deadline, &pos);
	if (rc == 0) {
		/* Not recorded as in doubt when it times out: its late answer
		 * matters to nobody, and a copy taken after we closed our ends
		 * only ever sends into a socket with no reader. */
		int64_t r = await_answer(c, 0, pos, deadline);
		rc = r > 0 ? HL_ECORRUPT : (int)r;
	}
	if (rc) {
		wake_close(c);
		return rc;
	}
	/* Armed from the start: readable at the first event, and at once if
	 * one is already waiting (we signal ourselves). */
	wake_drain(c);
	atomic_fetch_add_explicit(&pc->wake_arm, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
	if (maybe_pending(c)) {
		ssize_t n = send(c->wake_wfd, "w", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
		(void)n;
	}
	return 0;
}

int
hl_fd(struct hl_client *c)
{
	if (!c)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	int rc = c->wake_rfd;
	if (rc < 0)
		rc = c->stale || endpoint_gone(c) ? HL_ESTALE
		     : c->pid != getpid()         ? -ECHILD
		                                  : wake_open(c);
	if (rc == 0)
		rc = c->wake_rfd;
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int
hl_next(struct hl_client *c, struct hl_event *ev, int timeout_ms)
{
	if (!c || !ev || timeout_ms < -1)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	/* The deadline is taken when the rings are first found empty: an
	 * event at hand costs no clock read (it was a third of an observer's
	 * time per event in a large fan-out; bench/README.md). */
	uint64_t deadline = 0;
	int rc;
	if (c->ndoubt)
		settle_ready(c);
	for (;;) {
		rc = try_next(c, ev);
		if (rc != 0)
			break;
		if (endpoint_gone(c)) {
			rc = HL_ESTALE;
			break;
		}
		if (timeout_ms == 0) {
			rc = c->wake_rfd >= 0 ? wake_rearm(c, ev) : 0;
			if (rc == 0)
				rc = -EAGAIN;
			break;
		}
		if (!deadline)
			deadline = timeout_ms < 0 ? UINT64_MAX : deadline_of(timeout_ms);
		if (hl__now_ns() >= deadline) {
			rc = c->wake_rfd >= 0 ? wake_rearm(c, ev) : 0;
			if (rc == 0)
				rc = -ETIMEDOUT;
			break;
		}
		if (c->spin_ns) {
			rc = spin_next(c, ev, deadline);
			if (rc != 0)
				break;
		}
		/* Sleep on ev_signal (Dekker: see sleep_begin()). */
		sleep_begin(c);
		uint32_t seen =
		        atomic_load_explicit(hl__ep_signal(&c->seg, c->ep), memory_order_acquire);
		rc = try_next(c, ev);
		if (rc != 0) {
			sleep_end(c);
			break;
		}
		/* Unlock while blocked so that other threads can publish. */
		pthread_mutex_unlock(&c->lock);
		/* A progress event due before the deadline ends the wait too
		 * (the worker's nudge would, but not if it is gone). */
		wait_signal(c, seen, c->nprog && c->prog_next < deadline ? c->prog_next : deadline,
		            1000);
		pthread_mutex_lock(&c->lock);
		sleep_end(c);
	}
	pthread_mutex_unlock(&c->lock);
	return rc == 1 ? 0 : rc;
}

/* ---- introspection ---- */

int
hl_caps(struct hl_client *c, struct hl_caps *caps)
{
	if (!c || !caps)
		return -EINVAL;
	const struct hl_shm_header *h = c->seg.h;
	*caps = (struct hl_caps){ .max_keys = h->max_keys,
		                  .max_observers = h->max_observers,
		                  .max_endpoints = h->max_endpoints,
		                  .max_value = h->max_value,
		                  .shards = h->shards,
		                  .req_ring_bytes = h->req_ring_bytes,
		                  .ev_ring_bytes = h->ev_ring_bytes,
		                  .heap_bytes = h->heap_bytes };
	return 0;
}

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

void
hl__stats_from_header(const struct hl_shm_header *h, struct hl_stats *st)
{
	memset(st, 0, sizeof(*st));
	for (uint32_t s = 0; s < h->shards && s < HL_SHARDS_MAX; s++) {
		const struct hl_shm_counters *k = &h->shard[s].c;
		st->publishes += LD(k->publishes);
		st->skipped_unchanged += LD(k->skipped);
		st->deletes += LD(k->deletes);
		st->notifications += LD(k->notifications);
		st->lagged_drops += LD(k->lagged_drops);
		st->observers_added += LD(k->observers_added);
		st->observers_removed += LD(k->observers_removed);
		for (int i = 0; i < 16; i++)
			st->dispatch_hist[i] += LD(k->dispatch_hist[i]);
	}
	st->endpoints_attached = LD(h->endpoints_attached);
	st->endpoints_removed = LD(h->endpoints_removed);
	st->cleanup_runs = LD(h->cleanup_runs);
	st->cleanup_removed = LD(h->cleanup_removed);
	st->handoffs = LD(h->handoffs);
	st->reattaches = LD(h->reattaches);
	st->epoch = LD(h->owner_epoch);
	st->last_recovery_ns = LD(h->last_recovery_ns);
	st->keys = LD(h->keys_used);
	st->prefixes = LD(h->prefixes_used);
	st->observers = LD(h->observers_used);
	st->endpoints = LD(h->endpoints_used);
	st->heap_used = LD(h->heap_used);
	st->heap_capacity = h->heap_bytes;
	st->revision = LD(h->revision);
	st->owner_pid = (pid_t)LD(h->owner_pid);
	st->owner_role = (int)LD(h->owner_role);
	st->worker_mem_bytes = LD(h->worker_mem_bytes);
	/* The header starts the mapping, so the endpoint blocks are found from
	 * it (every offset was validated at attach). */
	const uint8_t *base = (const uint8_t *)h;
	for (uint32_t ep = 0; ep < h->max_endpoints; ep++) {
		const struct hl_shm_epw *w =
		        (const struct hl_shm_epw *)(const void *)(base + h->ep_worker_off +
		                                                  (uint64_t)ep *
		                                                          h->ep_worker_stride);
		if (atomic_load_explicit(&w->state, memory_order_relaxed) == HL_EP_ACTIVE &&
		    (atomic_load_explicit(&w->last_read_ns, memory_order_relaxed) & HL_EPW_SLOW))
			st->slow_endpoints++;
	}
}

int
hl_stats(struct hl_client *c, struct hl_stats *st)
{
	if (!c || !st)
		return -EINVAL;
	hl__stats_from_header(c->seg.h, st);
	st->resyncs = atomic_load_explicit(&c->resyncs, memory_order_relaxed);
	return 0;
}

/* An endpoint's process as hl_inspect_key() judges it: the pid with the
 * start time recorded at adoption. */
static int
proc_alive(uint32_t pid, uint64_t start)
{
	return hl__proc_alive((int)pid, start);
}

int
hl_inspect_key(struct hl_client *c, const void *key, size_t key_len, struct hl_observer_info *out,
               size_t cap)
{
	if (!c || (cap && !out))
		return -EINVAL;
	int rc = check_key(key, key_len);
	if (rc)
		return rc;
	uint32_t idx;
	rc = hl__key_lookup(&c->seg, key, key_len, hl__hash(key, key_len), &idx);
	if (rc)
		return rc;
	return hl__observers_read(&c->seg, idx, out, cap, proc_alive);
}

int
hl_keys(struct hl_client *c, hl_key_cb cb, void *arg)
{
	if (!c || !cb)
		return -EINVAL;
	return hl__keys_walk(&c->seg, cb, arg);
}

struct hl_seg *
hl__client_seg(struct hl_client *c, uint32_t *ep)
{
	if (ep)
		*ep = c->ep;
	return &c->seg;
}
