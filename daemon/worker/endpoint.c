/* SPDX-License-Identifier: MIT */
/*
 * endpoint.c: the worker's side of client endpoints: adopting a claimed
 * endpoint (pid + start time, pidfd), noticing when its process exits
 * (pidfd readable, epoll) or misbehaves, removing its observers at once, and
 * freeing the endpoint once its queued requests are drained.
 *
 * Life of an endpoint (epw.state):
 *   FREE --client CAS claim, worker adopts--> ACTIVE
 *   ACTIVE --exit / close / garbage--> DEAD or BANNED: the monitor unlinks
 *       its observers (shard by shard under shard.mu), then every shard
 *       drains what is left in its ring (publishes are applied: they were
 *       acknowledged) and clears its bit in cleanup_pending; the last one
 *       frees the endpoint (state FREE, then the claim word {0, gen}).
 * A crash anywhere in this leaves state DEAD/ACTIVE with some observers:
 * recovery re-runs the same steps from the start (see recovery.c).
 */
#include "endpoint.h"

#include "heirloom/heirloom.h"
#include "lock.h"
#include "util.h"
#include "wake.h"

#include <assert.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>

#define LD_RLX(p) atomic_load_explicit((p), memory_order_relaxed)

int
hl_w_ep_active(struct hl_worker *w, uint32_t ep)
{
	return atomic_load_explicit(&hl__epw(&w->seg, ep)->state, memory_order_acquire) ==
	       HL_EP_ACTIVE;
}

void
hl_w_ep_add_obs(struct hl_worker *w, uint32_t ep, uint32_t slot)
{
	struct hl_ep *e = &w->eps[ep];
	/* Under the key's shard.mu (apply_observe()): the observer is linked. */
	assert(hl_w_rank_held(HL_W_RANK_SHARD));
	hl_w_lock(&e->mu, HL_W_RANK_EP);
	if (e->nobs == e->cap) {
		uint32_t ncap = e->cap ? e->cap * 2 : 16;
		uint32_t *n = realloc(e->obs, (size_t)ncap * sizeof(*n));
		if (!n)
			hl__die("out of memory for an endpoint's observer list");
		e->obs = n;
		e->cap = ncap;
	}
	w->obs_pos[slot] = e->nobs;
	e->obs[e->nobs++] = slot;
	atomic_store_explicit(&hl__epw(&w->seg, ep)->nobs, e->nobs, memory_order_relaxed);
	hl_w_unlock(&e->mu, HL_W_RANK_EP);
}

/*
 * Recovery only (recovery.c, part 2): give each endpoint exactly the
 * observer slots recovery reached, in one pass and one allocation per
 * endpoint (hl_w_ep_add_obs() per observer cost a lock and a possible
 * realloc each: 14 ms for a million observers). No lock is taken: shard
 * threads may run, but nothing touches an endpoint's list (obs, nobs, cap,
 * obs_pos[]) until recovery ends: observe, unobserve, adoption of a new
 * client and cleanup all wait for it.
 *
 * On entry: every endpoint's nobs is 0; ep1[s - 1] is 0 for a slot s
 * recovery did not reach, else the slot's endpoint + 1 (a valid index).
 * On return: each endpoint's obs[] lists its slots in ascending order,
 * obs_pos[] holds each slot's position there, the segment's per-endpoint
 * nobs (for heirloomctl) is stored, and *total is the number of slots.
 * Returns -ENOMEM, with no endpoint given any slot, when an array cannot
 * grow (the caller gives up).
 */
int
hl_w_ep_build_lists(struct hl_worker *w, const uint32_t *ep1, uint64_t *total)
{
	const struct hl_shm_header *h = w->seg.h;
	uint32_t *count = calloc(h->max_endpoints, sizeof(*count));
	if (!count)
		return -ENOMEM;
	uint64_t n = 0;
	for (uint32_t s = 0; s < h->max_observers; s++)
		if (ep1[s]) {
			if (ep1[s] > h->max_endpoints)
				hl__die("recovery reached an observer of no endpoint");
			count[ep1[s] - 1]++;
			n++;
		}
	for (uint32_t ep = 0; ep < h->max_endpoints; ep++) {
		struct hl_ep *e = &w->eps[ep];
		if (count[ep] <= e->cap)
			continue;
		/* At least hl_w_ep_add_obs()'s first size: later adds grow the
		 * array as they always did. */
		uint32_t ncap = count[ep] < 16 ? 16 : count[ep];
		uint32_t *a = realloc(e->obs, (size_t)ncap * sizeof(*a));
		if (!a) {
			free(count);
			return -ENOMEM;
		}
		e->obs = a;
		e->cap = ncap;
	}
	free(count);
	for (uint32_t s = 1; s <= h->max_observers; s++) {
		if (!ep1[s - 1])
			continue;
		struct hl_ep *e = &w->eps[ep1[s - 1] - 1];
		w->obs_pos[s] = e->nobs;
		e->obs[e->nobs++] = s;
	}
	const uint32_t ep_mark = hl_w_eps_hwm(w);
	for (uint32_t ep = 0; ep < h->max_endpoints; ep++) {
		/* Above the mark: 0 in the segment, and 0 here unless damage
		 * linked an observer to it: then the mark first. */
		if (ep >= ep_mark) {
			if (!w->eps[ep].nobs)
				continue;
			hl_w_ep_mark(w, ep);
		}
		_Atomic uint64_t *nobs = &hl__epw(&w->seg, ep)->nobs;
		if (atomic_load_explicit(nobs, memory_order_relaxed) != w->eps[ep].nobs)
			atomic_store_explicit(nobs, w->eps[ep].nobs, memory_order_relaxed);
	}
	*total = n;
	return 0;
}

void
hl_w_ep_del_obs(struct hl_worker *w, uint32_t ep, uint32_t slot)
{
	struct hl_ep *e = &w->eps[ep];
	assert(hl_w_rank_held(HL_W_RANK_SHARD)); /* hl_w_remove_observer() */
	hl_w_lock(&e->mu, HL_W_RANK_EP);
	uint32_t i = w->obs_pos[slot];
	if (i >= e->nobs || e->obs[i] != slot)
		hl__die("observer missing from its endpoint's list");
	e->obs[i] = e->obs[--e->nobs];
	w->obs_pos[e->obs[i]] = i;
	atomic_store_explicit(&hl__epw(&w->seg, ep)->nobs, e->nobs, memory_order_relaxed);
	hl_w_unlock(&e->mu, HL_W_RANK_EP);
}

static void
mark_clean(struct hl_worker *w, uint32_t ep)
{
	atomic_fetch_or_explicit(&w->to_clean[ep / 64], 1ull << (ep % 64), memory_order_release);
	hl_w_monitor_wake(w);
}

uint32_t
hl_w_eps_hwm(const struct hl_worker *w)
{
	/* Acquire pairs with the fence in hl_w_ep_mark(): an endpoint below
	 * the value read may be being adopted, which the caller sees as any
	 * reader of its state would. Clamped: the header is worker-written,
	 * but a damaged mark must not send a pass past the table. */
	uint32_t m = atomic_load_explicit(&w->seg.h->eps_hwm, memory_order_acquire);
	return m < w->seg.h->max_endpoints ? m : w->seg.h->max_endpoints;
}

void
hl_w_ep_mark(struct hl_worker *w, uint32_t ep)
{
	_Atomic uint32_t *m = &w->seg.h->eps_hwm;
	uint32_t cur = atomic_load_explicit(m, memory_order_relaxed);
	/* Shard threads adopt different endpoints at once: a CAS to the
	 * maximum, never lowered. */
	while (cur <= ep && !atomic_compare_exchange_weak_explicit(
	                            m, &cur, ep + 1, memory_order_relaxed, memory_order_relaxed))
		;
	/* Passed over endpoints nobody vetted (a client skipped a damaged
	 * one, an orphan recovery adopted): they are below the mark now, where
	 * recovery and the sweep no longer take their lines for fresh. The
	 * monitor vets them (hl_w_ep_vet_gap()). */
	if (cur < ep) /* the CAS took CUR to EP + 1 */
		hl_w_monitor_wake(w);
	/* The mark before any store to EP's lines: a crash in between leaves
	 * the mark above lines still zero, never written lines above it. */
	atomic_thread_fence(memory_order_release);
}

/* Rounds in which adopt() may find a claim with its pending bit set but
 * `ready` not yet matching before the bit is dropped until the next
 * doorbell. The legitimate window (the client's release of `ready` not yet
 * visible) is nanoseconds; a claim that stays unready with its bit set is
 * garbage and must not keep a shard thread spinning on it. */
#define NOTREADY_ROUNDS 1024u

int
hl_w_ep_adopt(struct hl_worker *w, uint32_t ep)
{
	struct hl_shm_claim *cl = hl__claim(&w->seg, ep);
	struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
	struct hl_ep *e = &w->eps[ep];
	int rc = 0, adopted = 0;
	hl_w_lock(&e->mu, HL_W_RANK_EP);
	/* The claim entry is client-writable: each word is read once and only
	 * the copies are used. Acquire on `ready` pairs with the client's
	 * release: its block is initialised once ready == gen. */
	uint64_t word = atomic_load_explicit(&cl->word, memory_order_acquire);
	uint32_t ready = atomic_load_explicit(&cl->ready, memory_order_acquire);
	uint32_t pid = HL_CLAIM_PID(word), gen = HL_CLAIM_GEN(word);
	if (e->gen != 0) {
		/* Adopted: its client never writes the claim entry again, so a
		 * change while ACTIVE is garbage (-EPROTO: the caller bans it).
		 * Not ACTIVE (dead, banned, quarantined): nothing to serve. */
		int same = pid == e->pid && gen == e->gen && ready == gen;
		if (LD_RLX(&pw->state) != HL_EP_ACTIVE)
			rc = HL_ESTALE;
		else
			rc = same ? 0 : -EPROTO;
		goto out;
	}
	if (pid == 0) {
		rc = -ENOENT;
		goto out;
	}
	if (atomic_load_explicit(&w->recovering, memory_order_acquire)) {
		/* Not adopted by recovery: a new client, or a free endpoint
		 * recovery may yet find holding observers (adopt_orphans()).
		 * Its requests wait for the end of recovery (shard.c). */
		rc = -EINPROGRESS;
		goto out;
	}
	if (ready != gen) {
		/* Claimed but not ready: look again next round, a bounded number
		 * of times (see NOTREADY_ROUNDS). */
		rc = ++e->notready < NOTREADY_ROUNDS ? -EAGAIN : -EBUSY;
		if (rc == -EBUSY)
			e->notready = 0;
		goto out;
	}
	e->notready = 0;
	if (LD_RLX(&pw->state) != HL_EP_FREE) {
		/* Not adopted but not free either: our own state is off; refuse. */
		rc = -EPROTO;
		goto out;
	}
	uint64_t start = atomic_load_explicit(&cl->start_time, memory_order_relaxed);
	int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
	int perr = pidfd < 0 ? errno : 0;
	/* ESRCH: no such process. Any other failure of pidfd_open (EMFILE,
	 * ENFILE, ENOMEM: we are short of descriptors or memory) says nothing
	 * about the client, and neither does a /proc read that fails for such
	 * a reason: a live client is never dropped on a guess. It is adopted
	 * and watched by polling (poll_unwatched()) instead. */
	int alive = perr == ESRCH ? 0 : hl__proc_check((int)pid, start) != 0;
	hl_w_ep_mark(w, ep); /* before the first store to EP's lines */
	e->gen = gen;
	e->pid = pid;
	e->start = start;
	e->pidfd = -1;
	e->nobs = 0;
	e->closing = 0;
	atomic_store_explicit(&pw->gen, gen, memory_order_relaxed);
	atomic_store_explicit(&pw->pid, pid, memory_order_relaxed);
	atomic_store_explicit(&pw->start_time, start, memory_order_relaxed);
	atomic_store_explicit(&pw->attached_ns, hl__wall_ns(), memory_order_relaxed);
	atomic_store_explicit(&pw->nobs, 0, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->seg.h->endpoints_used, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->seg.h->endpoints_attached, 1, memory_order_relaxed);
	if (!alive) {
		/* Claimed, queued requests, and died (or a pid reused by another
		 * process): adopt as dead so its queued publishes are applied
		 * and the endpoint is freed. */
		if (pidfd >= 0)
			close(pidfd);
		atomic_store_explicit(&pw->state, HL_EP_DEAD, memory_order_release);
		hl_w_unlock(&e->mu, HL_W_RANK_EP);
		mark_clean(w, ep);
		return HL_ESTALE;
	}
	if (pidfd >= 0) {
		e->pidfd = pidfd;
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = ep };
		epoll_ctl(w->epfd, EPOLL_CTL_ADD, pidfd, &ev);
	} else {
		hl_w_ep_poll_instead(w, ep, perr);
	}
	atomic_store_explicit(&pw->state, HL_EP_ACTIVE, memory_order_release);
	adopted = 1;
out:
	hl_w_unlock(&e->mu, HL_W_RANK_EP);
	if (adopted) /* outside the lock: a slow stderr must not hold it */
		hl__log_debug("endpoint %u: adopted client pid %u", ep, pid);
	return rc;
}

/* The log's words for each reason (enum hl_w_kill). */
static const char *const kill_text[] = {
	[HL_W_KILL_EXITED] = "exited",
	[HL_W_KILL_EXITED_POLLED] = "exited (polled)",
	[HL_W_KILL_CLOSED] = "closed",
	[HL_W_KILL_GONE_PRUNE] = "gone (prune)",
	[HL_W_KILL_GONE_RECOVERED] = "gone (recovered)",
	[HL_W_KILL_BANNED_RECOVERED] = "banned (recovered)",
	[HL_W_KILL_CLAIM_OVERWRITTEN] = "claim entry overwritten",
	[HL_W_KILL_GARBAGE] = "garbage in request ring",
	[HL_W_KILL_EV_TAIL] = "impossible event ring tail",
};

/* Kill EP if its state is still EXPECT (ACTIVE, or DEAD / BANNED for an
 * endpoint recovery found so). */
static void
kill_from(struct hl_worker *w, uint32_t ep, enum hl_w_kill why, uint32_t expect)
{
	struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
	struct hl_ep *e = &w->eps[ep];
	assert((unsigned)why < sizeof(kill_text) / sizeof(kill_text[0]));
	int banned = why >= HL_W_KILL_BANNED_RECOVERED;
	hl_w_lock(&e->mu, HL_W_RANK_EP);
	uint32_t st = LD_RLX(&pw->state);
	if (st != expect || e->gen == 0) {
		hl_w_unlock(&e->mu, HL_W_RANK_EP);
		return;
	}
	uint32_t pid = e->pid;
	/* However it ends (exit, close, prune), an endpoint whose claim entry
	 * (word or start time) is not the one adopted was rewritten by its
	 * client: that is misbehaviour, logged and handled as a ban, so the
	 * endpoint is quarantined while that process lives. Freed instead, the
	 * next client would get a block the rewriter still maps read-write.
	 * A real reused pid leaves the claim as adopted: "gone", freed. */
	struct hl_shm_claim *cl = hl__claim(&w->seg, ep);
	if (!banned &&
	    (atomic_load_explicit(&cl->word, memory_order_acquire) != HL_CLAIM(pid, e->gen) ||
	     atomic_load_explicit(&cl->start_time, memory_order_relaxed) != e->start)) {
		banned = 1;
		why = HL_W_KILL_CLAIM_OVERWRITTEN;
	}
	/* The record first: once the state or the claim moves, the offender
	 * can see it was dropped, and whoever watches it (an operator, a
	 * test) must then find the reason already in the log. */
	if (banned) {
		hl_w_seglog(w, HL_LOG_BAD_CLIENT, -EPROTO, pid, kill_text[why]);
		/* Quarantine: the claim now names the process with gen 0 (never
		 * a real incarnation). The banned library sees HL_ESTALE at once
		 * (its claim is not its own any more), and no client can claim
		 * the endpoint while the banned process lives: it still maps the
		 * old ep_client block read-write, and a stray write there must
		 * never land in another client's rings. hl_w_ep_signoff() holds
		 * the endpoint until the process exits (hl_w_ep_release_quarantine()).
		 * Before the state: whoever sees the endpoint leave ACTIVE must
		 * already find the claim gone (the library then says HL_ESTALE). */
		atomic_store_explicit(&cl->word, HL_CLAIM(pid, 0), memory_order_release);
	}
	atomic_store_explicit(&pw->state, banned ? HL_EP_BANNED : HL_EP_DEAD, memory_order_release);
	hl_w_unlock(&e->mu, HL_W_RANK_EP);
	if (banned)
		hl__log_warn("endpoint %u (pid %u) dropped: %s", ep, pid, kill_text[why]);
	mark_clean(w, ep);
}

void
hl_w_ep_kill(struct hl_worker *w, uint32_t ep, enum hl_w_kill why)
{
	kill_from(w, ep, why, HL_EP_ACTIVE);
}

void
hl_w_ep_kill_recovered(struct hl_worker *w, uint32_t ep, uint32_t state)
{
	kill_from(w, ep,
	          state == HL_EP_BANNED ? HL_W_KILL_BANNED_RECOVERED : HL_W_KILL_GONE_RECOVERED,
	          state);
}

/* Whether pidfd FD says its process exited (or cannot tell: -1). */
static int
pidfd_exited(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return fd < 0 || (poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLERR | POLLNVAL)));
}

/* Free endpoint EP: state FREE, then the claim word {0, gen}. Call with
 * e->mu held; the caller wakes ev_signal after unlocking (free_wake()). */
static void
free_locked(struct hl_worker *w, uint32_t ep)
{
	struct hl_ep *e = &w->eps[ep];
	struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
	struct hl_shm_claim *cl = hl__claim(&w->seg, ep);
	if (e->pidfd >= 0) {
		epoll_ctl(w->epfd, EPOLL_CTL_DEL, e->pidfd, NULL);
		close(e->pidfd);
	}
	uint32_t gen = e->gen;
	/* Every shard signed off: no event for this incarnation is left to
	 * signal. The client's own ends are its to close (hl_close()). */
	hl_w_wake_fd_drop(w, ep);
	e->pidfd = -1;
	e->gen = 0;
	e->quarantined = 0;
	if (e->polled) {
		e->polled = 0;
		atomic_fetch_sub_explicit(&w->seg.h->endpoints_polled, 1, memory_order_relaxed);
	}
	if (hl_w_ep_fix_positions(w, ep))
		hl__log_warn("endpoint %u: impossible ring positions reset", ep);
	atomic_store_explicit(&pw->state, HL_EP_FREE, memory_order_release);
	atomic_fetch_sub_explicit(&w->seg.h->endpoints_used, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->seg.h->endpoints_removed, 1, memory_order_relaxed);
	/* The claim's start time goes back to 0 before the word is freed
	 * (release): the next claimer stores its own after its CAS, so while it
	 * reads 0 the prune pass knows the claimer has not got that far and
	 * must not judge it by a start time (hl_w_prune()). */
	atomic_store_explicit(&cl->start_time, 0, memory_order_relaxed);
	/* Last: the claim word. A crash before it leaves a FREE endpoint with
	 * a claim naming a dead pid: the prune pass frees the claim. */
	atomic_store_explicit(&cl->word, HL_CLAIM(0, gen), memory_order_release);
}

static void
free_wake(struct hl_worker *w, uint32_t ep)
{
	/* Wake anything of the old client still waiting: it sees HL_ESTALE. */
	_Atomic uint32_t *word = hl__ep_signal(&w->seg, ep);
	atomic_fetch_add_explicit(word, 1, memory_order_release);
	hl__futex_wake_bits(word, 1 << 30, hl__ep_signal_bit(ep));
}

/* A banned endpoint whose process still runs is held (quarantined) rather
 * than freed; the monitor frees it when the pidfd says the process exited.
 * Call with e->mu held. Returns 1 when held. */
static int
hold_banned(struct hl_worker *w, uint32_t ep)
{
	struct hl_ep *e = &w->eps[ep];
	if (e->pidfd < 0) {
		/* Recovered from a previous worker: no pidfd yet. Open first,
		 * then check pid + start time, so the fd names that process. */
		int fd = (int)syscall(SYS_pidfd_open, (pid_t)e->pid, 0);
		int ferr = fd < 0 ? errno : 0;
		if (fd >= 0 && !hl__proc_alive((int)e->pid, e->start)) {
			close(fd);
			fd = -1;
		}
		e->pidfd = fd;
		if (fd < 0 && ferr && ferr != ESRCH && hl__proc_check((int)e->pid, e->start) != 0) {
			/* Out of descriptors: hold it, watched by polling. */
			hl_w_ep_poll_instead(w, ep, ferr);
			e->quarantined = 1;
			return 1;
		}
	}
	if (pidfd_exited(e->pidfd))
		return 0;
	e->quarantined = 1;
	/* Watched again if the monitor stopped watching it (EEXIST otherwise);
	 * level-triggered, so an exit in between is still seen. */
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = ep };
	epoll_ctl(w->epfd, EPOLL_CTL_ADD, e->pidfd, &ev);
	return 1;
}

/* Free quarantined endpoint EP if its process is gone: POLLED, polling
 * found it so and it has no pidfd; else its pidfd says so. */
static void
release(struct hl_worker *w, uint32_t ep, int polled)
{
	struct hl_ep *e = &w->eps[ep];
	hl_w_lock(&e->mu, HL_W_RANK_EP);
	int freed = e->quarantined && (polled ? e->pidfd < 0 : pidfd_exited(e->pidfd));
	if (freed)
		free_locked(w, ep);
	hl_w_unlock(&e->mu, HL_W_RANK_EP);
	if (freed)
		free_wake(w, ep);
}

/* Monitor thread (pidfd readable) and prune. */
void
hl_w_ep_release_quarantine(struct hl_worker *w, uint32_t ep)
{
	release(w, ep, 0);
}

/* Monitor thread, polling. */
void
hl_w_ep_release_polled(struct hl_worker *w, uint32_t ep)
{
	release(w, ep, 1);
}

/* Called by a shard thread once its ring of EP is drained after a kill.
 * The last shard frees the endpoint (or quarantines a banned one). */
void
hl_w_ep_signoff(struct hl_shard *sh, uint32_t ep)
{
	struct hl_worker *w = sh->w;
	struct hl_ep *e = &w->eps[ep];
	uint64_t bit = 1ull << sh->id;
	uint64_t before =
	        atomic_fetch_and_explicit(&e->cleanup_pending, ~bit, memory_order_acq_rel);
	if (!(before & bit) || (before & ~bit))
		return;
	struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
	hl_w_lock(&e->mu, HL_W_RANK_EP);
	if (e->nobs != 0)
		hl__die("freeing an endpoint that still holds observers");
	if (LD_RLX(&pw->state) == HL_EP_BANNED && hold_banned(w, ep)) {
		hl_w_unlock(&e->mu, HL_W_RANK_EP);
		return;
	}
	free_locked(w, ep);
	hl_w_unlock(&e->mu, HL_W_RANK_EP);
	free_wake(w, ep);
}

/* Every ring position of EP back to 0: no record may name an old one. */
static void
reset_positions(struct hl_worker *w, uint32_t ep)
{
	for (uint32_t sh = 0; sh < w->seg.h->shards; sh++) {
		struct hl_shm_epw_shard *ws = hl__epw_shard(&w->seg, ep, sh);
		atomic_store_explicit(&ws->req_tail, 0, memory_order_relaxed);
		atomic_store_explicit(&ws->ev_head, 0, memory_order_relaxed);
		atomic_store_explicit(&ws->intent_pos, 0, memory_order_relaxed);
		atomic_store_explicit(&ws->done_pos, 0, memory_order_relaxed);
		atomic_store_explicit(&ws->result_pos, 0, memory_order_relaxed);
		atomic_store_explicit(&ws->err_pos, 0, memory_order_relaxed);
	}
}

/* The next client of a free endpoint starts its rings at the worker's
 * positions (req_tail, ev_head). They are always multiples of 8; anything
 * else is damage that client would be banned for. FRESH: EP is above the
 * high-water mark, whose lines were never written, so any position but 0
 * is damage (an aligned one would serve, but a stale intent_pos or
 * result_pos could one day name a real request). */
static int
positions_bad(struct hl_worker *w, uint32_t ep, int fresh)
{
	for (uint32_t sh = 0; sh < w->seg.h->shards; sh++) {
		struct hl_shm_epw_shard *ws = hl__epw_shard(&w->seg, ep, sh);
		uint64_t t = LD_RLX(&ws->req_tail), hd = LD_RLX(&ws->ev_head);
		if ((t | hd) & 7u)
			return 1;
		if (fresh && (t | hd | LD_RLX(&ws->intent_pos) | LD_RLX(&ws->done_pos) |
		              LD_RLX(&ws->result_pos) | LD_RLX(&ws->err_pos)))
			return 1;
	}
	return 0;
}

/* Start impossible positions over at 0. Call only while no client can
 * claim EP: its old client still holds the claim (free_locked()). Returns
 * 1 when it repaired. */
int
hl_w_ep_fix_positions(struct hl_worker *w, uint32_t ep)
{
	if (!positions_bad(w, ep, 0))
		return 0;
	reset_positions(w, ep);
	return 1;
}

/* Hold free claim *WORD ({0, g}) of CL as {our pid, GEN}: clients claim
 * only a word with pid 0. Our start time goes in as a client's does right
 * after its CAS, so that if we die holding it the next worker's prune pass
 * (or recovery) can tell. 1 = held (*START: that time), 0 = the word
 * changed first (*WORD: what it holds now). */
static int
hold_claim(struct hl_shm_claim *cl, uint64_t *word, uint32_t gen, uint64_t *start)
{
	pid_t me = getpid();
	if (!atomic_compare_exchange_strong_explicit(&cl->word, word, HL_CLAIM((uint32_t)me, gen),
	                                             memory_order_acq_rel, memory_order_acquire))
		return 0;
	*start = hl__proc_start_time(me);
	atomic_store_explicit(&cl->start_time, *start, memory_order_relaxed);
	return 1;
}

/* The same for a free endpoint clients may claim at any moment (recovery,
 * the sweep after it): done while we hold its claim, so that no client
 * copies positions half-way through the repair. A CAS {0, g} -> {our pid,
 * g} keeps clients out (they claim only a word with pid 0); e->mu keeps
 * our own adopters out (a shard thread woken by a stray doorbell bit
 * would find {our pid, g} with `ready` == g). Our start time goes into
 * the claim while we hold it: if we die there, the next worker's prune
 * pass finds a claimer gone and frees it (hl_w_prune()). A client that
 * claimed first keeps the positions as they are: it checks them and
 * moves on to another endpoint when they are impossible (lib/client.c,
 * claim_endpoint()). Returns 1 when it repaired. */
int
hl_w_ep_fix_free(struct hl_worker *w, uint32_t ep, int fresh)
{
	struct hl_shm_claim *cl = hl__claim(&w->seg, ep);
	struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
	struct hl_ep *e = &w->eps[ep];
	int fixed = 0;
	hl_w_lock(&e->mu, HL_W_RANK_EP);
	/* Under e->mu the mark cannot pass EP: adoption raises it there. */
	if (fresh && ep < hl_w_eps_hwm(w))
		goto out;
	uint64_t word = atomic_load_explicit(&cl->word, memory_order_acquire);
	uint32_t st = LD_RLX(&pw->state);
	/* In use: claimed, adopted (dead or quarantined ones too), or holding
	 * observers (an orphan recovery adopted, whatever its gen). Free and
	 * not adopted, a state other than FREE was never ours: damage. */
	if (HL_CLAIM_PID(word) != 0 || e->gen != 0 || e->nobs != 0)
		goto out;
	if (!positions_bad(w, ep, fresh) && st == HL_EP_FREE)
		goto out;
	uint64_t free_word = word, start;
	if (!hold_claim(cl, &word, HL_CLAIM_GEN(word), &start))
		goto out;
	word = free_word;
	reset_positions(w, ep);
	/* Never adopted since it was last free: FREE. */
	atomic_store_explicit(&pw->state, HL_EP_FREE, memory_order_relaxed);
	atomic_store_explicit(&cl->start_time, 0, memory_order_relaxed);
	/* Release: a client whose CAS takes this word sees the repair. */
	atomic_store_explicit(&cl->word, word, memory_order_release);
	fixed = 1;
out:
	hl_w_unlock(&e->mu, HL_W_RANK_EP);
	return fixed;
}

uint32_t
hl_w_ep_take_orphan(struct hl_worker *w, uint32_t ep, uint32_t *pid, uint64_t *start)
{
	struct hl_shm_claim *cl = hl__claim(&w->seg, ep);
	uint64_t word = atomic_load_explicit(&cl->word, memory_order_acquire);
	if (HL_CLAIM_PID(word) == 0) {
		/* The next gen, as a client's claim takes it; 0 is never one. */
		uint32_t gen = HL_CLAIM_GEN(word) == UINT32_MAX ? 1 : HL_CLAIM_GEN(word) + 1;
		if (hold_claim(cl, &word, gen, start)) {
			*pid = (uint32_t)getpid();
			return gen;
		}
		/* A client claimed it first: word holds its claim. */
	}
	*pid = HL_CLAIM_PID(word);
	*start = atomic_load_explicit(&cl->start_time, memory_order_relaxed);
	return HL_CLAIM_GEN(word);
}

/* Endpoints the mark jumped over were never read as fresh nor adopted:
 * checked as any free endpoint below the mark is (monitor thread only). */
uint32_t
hl_w_ep_vet_gap(struct hl_worker *w)
{
	uint32_t from = atomic_load_explicit(&w->ep_vetted, memory_order_relaxed);
	uint32_t to = hl_w_eps_hwm(w), n = 0;
	for (uint32_t ep = from; ep < to; ep++)
		n += (uint32_t)hl_w_ep_fix_free(w, ep, 0);
	if (to > from)
		atomic_store_explicit(&w->ep_vetted, to, memory_order_relaxed);
	return n;
}

/* Endpoints above the high-water mark are FREE with every position 0 by
 * definition (layout.h, eps_hwm), so recovery does not read them. Damage
 * there (a stray write, a segment damaged at rest) would otherwise be
 * handed to the next client that claims the endpoint, which the worker
 * then bans. One pass after recovery, off the publish path. */
uint32_t
hl_w_ep_sweep_fresh(struct hl_worker *w)
{
	uint32_t n = 0;
	for (uint32_t ep = hl_w_eps_hwm(w); ep < w->seg.h->max_endpoints; ep++)
		n += (uint32_t)hl_w_ep_fix_free(w, ep, 1);
	return n;
}

void
hl_w_ep_watch(struct hl_worker *w, uint32_t ep)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = ep };
	hl_w_lock(&w->eps[ep].mu, HL_W_RANK_EP);
	if (w->eps[ep].pidfd >= 0)
		epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->eps[ep].pidfd, &ev);
	hl_w_unlock(&w->eps[ep].mu, HL_W_RANK_EP);
}

/* An endpoint (e->mu held) whose process could not get a pidfd (ERR:
 * EMFILE, ENFILE, ENOMEM) is watched by polling instead: every monitor
 * tick checks its pid + start time and tries pidfd_open() again
 * (poll_unwatched()). Counted in the header; logged once per worker. */
void
hl_w_ep_poll_instead(struct hl_worker *w, uint32_t ep, int err)
{
	struct hl_ep *e = &w->eps[ep];
	atomic_fetch_add_explicit(&w->seg.h->pidfd_failures, 1, memory_order_relaxed);
	if (!e->polled) {
		e->polled = 1;
		atomic_fetch_add_explicit(&w->seg.h->endpoints_polled, 1, memory_order_relaxed);
	}
	if (atomic_exchange(&w->pidfd_logged, 1) == 0)
		hl__log_warn("cannot watch client pid %u with a pidfd (%s): out of descriptors? "
		             "(RLIMIT_NOFILE %lu). Such clients are kept and watched by polling "
		             "their pid and start time every monitor tick; logged once, counted "
		             "in heirloomctl status (pidfd failures)",
		             e->pid, strerrorname_np(err) ? strerrorname_np(err) : "?",
		             (unsigned long)atomic_load_explicit(&w->seg.h->nofile_limit,
		                                                 memory_order_relaxed));
	hl_w_monitor_wake(w);
}

/*
 * hl_fd(): take a copy of endpoint EP's wake socket (epc.wake_fd) with
 * pidfd_getfd(2) and signal on it from now on (wake.c). Call with e->mu
 * held, EP ACTIVE. The number and the inode are the client's words, read
 * once; the copy is kept only if it is an AF_UNIX datagram socket with that
 * inode whose peer is the client process itself (a socketpair it made), so
 * that a wrong number never makes the worker send into another file.
 * Returns 0, or -errno: -EPERM when this worker may not ptrace the client
 * (pidfd_getfd's rule: same user and no Yama restriction, or
 * CAP_SYS_PTRACE), -EMFILE when it has no pidfd for the client or no
 * descriptor to spare, -EBADF when the number is not such a socket, -ENOSYS
 * on a kernel before 5.6. On failure the previous copy, if any, is kept.
 */
static int
take_wake_locked(struct hl_worker *w, uint32_t ep)
{
	struct hl_ep *e = &w->eps[ep];
	struct hl_shm_epc *pc = hl__epc(&w->seg, ep);
	uint32_t num = LD_RLX(&pc->wake_fd);
	uint64_t ino = LD_RLX(&pc->wake_ino);
	if (num == 0 || num > INT32_MAX)
		return -EBADF;
	if (e->pidfd < 0)
		return -EMFILE;
	int fd = (int)syscall(SYS_pidfd_getfd, e->pidfd, (int)(num - 1), 0);
	if (fd < 0)
		return errno == ESRCH ? HL_ESTALE : -errno;
	struct stat st;
	int type = 0, dom = 0;
	struct ucred cr = { 0 };
	socklen_t tl = sizeof(type), dl = sizeof(dom), cl = sizeof(cr);
	if (fstat(fd, &st) || !S_ISSOCK(st.st_mode) || st.st_ino != ino ||
	    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) || type != SOCK_DGRAM ||
	    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &dl) || dom != AF_UNIX ||
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) || cr.pid != (pid_t)e->pid) {
		close(fd);
		return -EBADF;
	}
	hl_w_wake_fd_set(w, ep, fd); /* closes the previous copy; pidfd_getfd set CLOEXEC */
	return 0;
}

int
hl_w_ep_take_wake(struct hl_worker *w, uint32_t ep)
{
	struct hl_ep *e = &w->eps[ep];
	hl_w_lock(&e->mu, HL_W_RANK_EP);
	int rc = LD_RLX(&hl__epw(&w->seg, ep)->state) == HL_EP_ACTIVE && e->gen
	                 ? take_wake_locked(w, ep)
	                 : HL_ESTALE;
	hl_w_unlock(&e->mu, HL_W_RANK_EP);
	return rc;
}

void
hl_w_ep_retake_wake(struct hl_worker *w, uint32_t ep)
{
	if (LD_RLX(&hl__epc(&w->seg, ep)->wake_fd) == 0)
		return;
	int rc = hl_w_ep_take_wake(w, ep);
	if (rc)
		hl__log_warn("endpoint %u (pid %u): cannot take its hl_fd() socket again (%s): "
		             "its descriptor will not turn readable; hl_next() still works",
		             ep, w->eps[ep].pid, hl_err_name(rc));
}
