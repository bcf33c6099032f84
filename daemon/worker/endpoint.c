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
#include "worker.h"

#include "heirloom/heirloom.h"
#include "util.h"

#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/pidfd.h>
#include <time.h>
#include <urcu/urcu-memb.h>

#define LD_RLX(p) atomic_load_explicit((p), memory_order_relaxed)

/* Endpoints the monitor must clean (bit per endpoint), set by kill(). */
static _Atomic uint64_t *to_clean;

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
	pthread_mutex_lock(&e->mu);
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
	pthread_mutex_unlock(&e->mu);
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
	for (uint32_t ep = 0; ep < h->max_endpoints; ep++) {
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
	pthread_mutex_lock(&e->mu);
	uint32_t i = w->obs_pos[slot];
	if (i >= e->nobs || e->obs[i] != slot)
		hl__die("observer missing from its endpoint's list");
	e->obs[i] = e->obs[--e->nobs];
	w->obs_pos[e->obs[i]] = i;
	atomic_store_explicit(&hl__epw(&w->seg, ep)->nobs, e->nobs, memory_order_relaxed);
	pthread_mutex_unlock(&e->mu);
}

static void
mark_clean(struct hl_worker *w, uint32_t ep)
{
	atomic_fetch_or_explicit(&to_clean[ep / 64], 1ull << (ep % 64), memory_order_release);
	hl_w_monitor_wake(w);
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
	int rc = 0;
	pthread_mutex_lock(&e->mu);
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
		pthread_mutex_unlock(&e->mu);
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
out:
	pthread_mutex_unlock(&e->mu);
	return rc;
}

/* Kill EP if its state is still EXPECT (ACTIVE, or DEAD / BANNED for an
 * endpoint recovery found so). */
static void
kill_from(struct hl_worker *w, uint32_t ep, const char *why, uint32_t expect)
{
	struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
	struct hl_ep *e = &w->eps[ep];
	int banned = why && strncmp(why, "closed", 6) != 0 && strncmp(why, "exited", 6) != 0 &&
	             strncmp(why, "gone", 4) != 0;
	pthread_mutex_lock(&e->mu);
	uint32_t st = LD_RLX(&pw->state);
	if (st != expect || e->gen == 0) {
		pthread_mutex_unlock(&e->mu);
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
		why = "claim entry overwritten";
	}
	/* The record first: once the state or the claim moves, the offender
	 * can see it was dropped, and whoever watches it (an operator, a
	 * test) must then find the reason already in the log. */
	if (banned) {
		hl_w_seglog(w, HL_LOG_BAD_CLIENT, -EPROTO, pid, why);
		/* Quarantine: the claim now names the process with gen 0 (never
		 * a real incarnation). The banned library sees HL_ESTALE at once
		 * (its claim is not its own any more), and no client can claim
		 * the endpoint while the banned process lives: it still maps the
		 * old ep_client block read-write, and a stray write there must
		 * never land in another client's rings. shard_signoff() holds
		 * the endpoint until the process exits (release_quarantine()).
		 * Before the state: whoever sees the endpoint leave ACTIVE must
		 * already find the claim gone (the library then says HL_ESTALE). */
		atomic_store_explicit(&cl->word, HL_CLAIM(pid, 0), memory_order_release);
	}
	atomic_store_explicit(&pw->state, banned ? HL_EP_BANNED : HL_EP_DEAD, memory_order_release);
	pthread_mutex_unlock(&e->mu);
	if (banned)
		hl__log("endpoint %u (pid %u) dropped: %s", ep, pid, why);
	mark_clean(w, ep);
}

void
hl_w_ep_kill(struct hl_worker *w, uint32_t ep, const char *why)
{
	kill_from(w, ep, why, HL_EP_ACTIVE);
}

void
hl_w_ep_kill_recovered(struct hl_worker *w, uint32_t ep, uint32_t state)
{
	kill_from(w, ep, state == HL_EP_BANNED ? "banned (recovered)" : "gone (recovered)", state);
}

/* Monitor thread: unlink every observer of EP, shard by shard, then ask
 * every shard to drain and release. */
static void
clean_endpoint(struct hl_worker *w, uint32_t ep)
{
	struct hl_ep *e = &w->eps[ep];
	uint64_t removed = 0;
	/* Once per incarnation: two paths may ask for the same cleanup (a
	 * shard thread and the prune pass both adopting a dead claimer, an
	 * exit seen while a ban is under way). Running it twice would make
	 * every shard sign off twice and free the endpoint twice. */
	pthread_mutex_lock(&e->mu);
	if (e->gen == 0 || e->cleaned_gen == e->gen) {
		pthread_mutex_unlock(&e->mu);
		return;
	}
	e->cleaned_gen = e->gen;
	pthread_mutex_unlock(&e->mu);
	for (uint32_t s = 0; s < w->nshards; s++) {
		struct hl_shard *sh = &w->shards[s];
		pthread_mutex_lock(&sh->mu);
		/* One pass over the endpoint's list, from its end: removing
		 * obs[i] moves the last entry, already looked at (so of another
		 * shard), into i. No observer of this shard joins meanwhile: we
		 * hold shard.mu and the endpoint is not ACTIVE (apply_observe
		 * refuses). O(n) per shard; shard_signoff() checks none is left. */
		pthread_mutex_lock(&e->mu);
		uint32_t i = e->nobs;
		pthread_mutex_unlock(&e->mu);
		while (i-- > 0) {
			/* The slot's key is read under e->mu too: while the slot
			 * is in this list it is this endpoint's observer and its
			 * key is fixed. Once its own shard removed it (under
			 * e->mu), the slot may be reused at once for another
			 * endpoint's key (a TSan report: reading o->key after
			 * the unlock could take a stranger's observer for ours). */
			pthread_mutex_lock(&e->mu);
			uint32_t slot = i < e->nobs ? e->obs[i] : 0;
			uint32_t key = slot ? hl__obs(&w->seg, slot)->key : 0;
			pthread_mutex_unlock(&e->mu);
			/* Observers of shard s stay put while we hold its mu. */
			if (!slot || hl_w_key_shard(w, key) != s)
				continue;
			hl_w_remove_observer(sh, slot);
			/* A heartbeat every 64Ki removals (issue 22): cleanup
			 * is this thread's one pass that grows with the table
			 * (about 0.3 s per million observers here). */
			if ((++removed & 0xffff) == 0)
				atomic_store_explicit(&w->seg.h->monitor_beat_ns, hl__coarse_ns(),
				                      memory_order_relaxed);
		}
		pthread_mutex_unlock(&sh->mu);
	}
	atomic_fetch_add_explicit(&w->seg.h->cleanup_runs, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->seg.h->cleanup_removed, removed, memory_order_relaxed);
	/* Every shard must now drain the rest of its ring and sign off. */
	uint64_t all = w->nshards == 64 ? ~0ull : (1ull << w->nshards) - 1;
	atomic_store_explicit(&e->cleanup_pending, all, memory_order_release);
	for (uint32_t s = 0; s < w->nshards; s++) {
		atomic_fetch_or_explicit(&w->shards[s].cleanup[ep / 64], 1ull << (ep % 64),
		                         memory_order_release);
		hl_w_wake_shard(w, s);
	}
}

/* Whether pidfd FD says its process exited (or cannot tell: -1). */
static int
pidfd_exited(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
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
	e->pidfd = -1;
	e->gen = 0;
	e->quarantined = 0;
	if (e->polled) {
		e->polled = 0;
		atomic_fetch_sub_explicit(&w->seg.h->endpoints_polled, 1, memory_order_relaxed);
	}
	if (hl_w_ep_fix_positions(w, ep))
		hl__log("endpoint %u: impossible ring positions reset", ep);
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
	struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
	atomic_fetch_add_explicit(&pw->ev_signal, 1, memory_order_release);
	hl__futex_wake(&pw->ev_signal, 1 << 30);
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
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ep};
	epoll_ctl(w->epfd, EPOLL_CTL_ADD, e->pidfd, &ev);
	return 1;
}

/* Monitor thread (pidfd readable) and prune: free a quarantined endpoint
 * whose process has exited. */
static void
release_quarantine(struct hl_worker *w, uint32_t ep)
{
	struct hl_ep *e = &w->eps[ep];
	pthread_mutex_lock(&e->mu);
	int freed = e->quarantined && pidfd_exited(e->pidfd);
	if (freed)
		free_locked(w, ep);
	pthread_mutex_unlock(&e->mu);
	if (freed)
		free_wake(w, ep);
}

/* Called by a shard thread once its ring of EP is drained after a kill.
 * The last shard frees the endpoint (or quarantines a banned one). */
static void
shard_signoff(struct hl_shard *sh, uint32_t ep)
{
	struct hl_worker *w = sh->w;
	struct hl_ep *e = &w->eps[ep];
	uint64_t bit = 1ull << sh->id;
	uint64_t before = atomic_fetch_and_explicit(&e->cleanup_pending, ~bit, memory_order_acq_rel);
	if (!(before & bit) || (before & ~bit))
		return;
	struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
	pthread_mutex_lock(&e->mu);
	if (e->nobs != 0)
		hl__die("freeing an endpoint that still holds observers");
	if (LD_RLX(&pw->state) == HL_EP_BANNED && hold_banned(w, ep)) {
		pthread_mutex_unlock(&e->mu);
		return;
	}
	free_locked(w, ep);
	pthread_mutex_unlock(&e->mu);
	free_wake(w, ep);
}

void
hl_w_shard_cleanup(struct hl_shard *sh)
{
	struct hl_worker *w = sh->w;
	uint32_t words = (w->seg.h->max_endpoints + 63) / 64;
	for (uint32_t i = 0; i < words; i++) {
		uint64_t bits = atomic_exchange_explicit(&sh->cleanup[i], 0, memory_order_acq_rel);
		while (bits) {
			uint32_t ep = i * 64 + (uint32_t)__builtin_ctzll(bits);
			bits &= bits - 1;
			if (hl_w_drain_dead(sh, ep) == -EAGAIN) {
				/* More than one batch left: come back next round. */
				atomic_fetch_or_explicit(&sh->cleanup[i], 1ull << (ep % 64),
				                         memory_order_relaxed);
				continue;
			}
			shard_signoff(sh, ep);
		}
	}
}

/* The next client of a free endpoint starts its rings at the worker's
 * positions (req_tail, ev_head). They are always multiples of 8; anything
 * else is damage that client would be banned for: start over at 0 then.
 * Call only while no client holds EP. Returns 1 when it repaired. */
int
hl_w_ep_fix_positions(struct hl_worker *w, uint32_t ep)
{
	int bad = 0;
	for (uint32_t sh = 0; sh < w->seg.h->shards; sh++) {
		struct hl_shm_epw_shard *ws = hl__epw_shard(&w->seg, ep, sh);
		if ((LD_RLX(&ws->req_tail) | LD_RLX(&ws->ev_head)) & 7u)
			bad = 1;
	}
	if (bad)
		for (uint32_t sh = 0; sh < w->seg.h->shards; sh++) {
			struct hl_shm_epw_shard *ws = hl__epw_shard(&w->seg, ep, sh);
			atomic_store_explicit(&ws->req_tail, 0, memory_order_relaxed);
			atomic_store_explicit(&ws->ev_head, 0, memory_order_relaxed);
			/* Positions start again: no record may name one. */
			atomic_store_explicit(&ws->intent_pos, 0, memory_order_relaxed);
			atomic_store_explicit(&ws->done_pos, 0, memory_order_relaxed);
			atomic_store_explicit(&ws->result_pos, 0, memory_order_relaxed);
			atomic_store_explicit(&ws->err_pos, 0, memory_order_relaxed);
		}
	return bad;
}

void
hl_w_monitor_watch(struct hl_worker *w, uint32_t ep)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ep};
	pthread_mutex_lock(&w->eps[ep].mu);
	if (w->eps[ep].pidfd >= 0)
		epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->eps[ep].pidfd, &ev);
	pthread_mutex_unlock(&w->eps[ep].mu);
}

void
hl_w_monitor_wake(struct hl_worker *w)
{
	uint64_t one = 1;
	ssize_t n = write(w->wakefd, &one, sizeof(one));
	(void)n;
}

/* Periodic and at-attach pass: endpoints whose process is gone (checked by
 * pid AND start time, so a reused pid does not keep the old observers) and
 * claims abandoned before the client finished claiming.
 *
 * An active endpoint is gone when the process at its pid does not have the
 * start time recorded at adoption: whoever runs under that pid now is not the
 * claimer. One whose claim entry no longer says what was adopted (pid, gen,
 * start time) was rewritten by its client: hl_w_ep_kill() bans it. */
void
hl_w_prune(struct hl_worker *w)
{
	for (uint32_t ep = 0; ep < w->seg.h->max_endpoints; ep++) {
		struct hl_shm_claim *cl = hl__claim(&w->seg, ep);
		struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
		struct hl_ep *e = &w->eps[ep];
		uint64_t word = atomic_load_explicit(&cl->word, memory_order_acquire);
		uint32_t pid = HL_CLAIM_PID(word), gen = HL_CLAIM_GEN(word);
		uint32_t st = atomic_load_explicit(&pw->state, memory_order_acquire);
		if (st == HL_EP_ACTIVE) {
			uint64_t cl_start =
			        atomic_load_explicit(&cl->start_time, memory_order_relaxed);
			pthread_mutex_lock(&e->mu);
			uint32_t e_pid = e->pid, e_gen = e->gen;
			uint64_t e_start = e->start;
			pthread_mutex_unlock(&e->mu);
			/* Only a certain "gone" counts: a /proc read that failed
			 * (out of descriptors) keeps the endpoint. */
			if (!pid || gen != e_gen || cl_start != e_start ||
			    hl__proc_check((int)e_pid, e_start) == 0)
				hl_w_ep_kill(w, ep, "gone (prune)");
			continue;
		}
		if (st == HL_EP_BANNED) {
			/* Belt and braces for the monitor's pidfd watch. */
			release_quarantine(w, ep);
			continue;
		}
		if (pid == 0 || st != HL_EP_FREE)
			continue;
		if (atomic_load_explicit(&cl->ready, memory_order_acquire) == gen) {
			/* Claimed and ready but never adopted: adopt now, which
			 * handles a dead claimer too. */
			hl_w_ep_adopt(w, ep);
			continue;
		}
		/* Claimed, not ready: a client between its CAS and `ready`, or
		 * one that died there (nothing was queued). Freeing the claim of
		 * a live claimer would be a disaster: it goes on to initialise
		 * the block (ring positions, `ready`) under whoever claims next.
		 * So free only when the claimer is certainly gone:
		 *  - no process runs at its pid; or
		 *  - the claim holds a start time (the claimer stores its own
		 *    right after its CAS; a freed claim holds 0) and the process
		 *    at that pid has another: the claimer died, the pid was
		 *    reused.
		 * A claim still at 0 with a live process at its pid is kept: a
		 * claimer descheduled between its CAS and its store (seen under
		 * ThreadSanitizer with 200 processes on 2 cores), or one that
		 * died there whose pid was reused, which holds the endpoint
		 * until that process exits too (a bounded leak, not a loss). */
		uint64_t start = atomic_load_explicit(&cl->start_time, memory_order_relaxed);
		uint64_t now_start = 0;
		if (hl__proc_start_time_r((int)pid, &now_start) < 0)
			continue; /* cannot tell (out of descriptors): keep it */
		int gone = now_start == 0 || (start != 0 && now_start != start);
		if (gone) {
			/* Start time first, as in free_locked(); the claimer is
			 * gone, so nobody else writes it. */
			atomic_store_explicit(&cl->start_time, 0, memory_order_relaxed);
			atomic_compare_exchange_strong_explicit(&cl->word, &word, HL_CLAIM(0, gen),
			                                        memory_order_acq_rel,
			                                        memory_order_relaxed);
		}
	}
}

/* An endpoint (e->mu held) whose process could not get a pidfd (ERR:
 * EMFILE, ENFILE, ENOMEM) is watched by polling instead: every monitor
 * tick checks its pid + start time and tries pidfd_open() again
 * (poll_unwatched()). Counted in the header; logged once per worker. */
void
hl_w_ep_poll_instead(struct hl_worker *w, uint32_t ep, int err)
{
	static atomic_int logged;
	struct hl_ep *e = &w->eps[ep];
	atomic_fetch_add_explicit(&w->seg.h->pidfd_failures, 1, memory_order_relaxed);
	if (!e->polled) {
		e->polled = 1;
		atomic_fetch_add_explicit(&w->seg.h->endpoints_polled, 1, memory_order_relaxed);
	}
	if (atomic_exchange(&logged, 1) == 0)
		hl__log("cannot watch client pid %u with a pidfd (%s): out of descriptors? "
		         "(RLIMIT_NOFILE %lu). Such clients are kept and watched by polling "
		         "their pid and start time every monitor tick; logged once, counted "
		         "in heirloomctl status (pidfd failures)",
		         e->pid, strerrorname_np(err) ? strerrorname_np(err) : "?",
		         (unsigned long)atomic_load_explicit(&w->seg.h->nofile_limit,
		                                             memory_order_relaxed));
	hl_w_monitor_wake(w);
}

/* Monitor thread, every tick while some endpoint is polled: a polled
 * endpoint whose process is certainly gone is cleaned (ACTIVE) or released
 * (a banned one held in quarantine); one still there gets a pidfd if one
 * can be had now, and is then watched like any other. */
static void
poll_unwatched(struct hl_worker *w)
{
	if (atomic_load_explicit(&w->seg.h->endpoints_polled, memory_order_relaxed) == 0)
		return;
	for (uint32_t ep = 0; ep < w->seg.h->max_endpoints; ep++) {
		struct hl_ep *e = &w->eps[ep];
		struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
		pthread_mutex_lock(&e->mu);
		if (!e->polled) {
			pthread_mutex_unlock(&e->mu);
			continue;
		}
		uint32_t st = LD_RLX(&pw->state);
		int alive = hl__proc_check((int)e->pid, e->start);
		if (alive != 0 && (st == HL_EP_ACTIVE || st == HL_EP_BANNED)) {
			int fd = (int)syscall(SYS_pidfd_open, (pid_t)e->pid, 0);
			if (fd >= 0 && hl__proc_check((int)e->pid, e->start) != 0) {
				e->pidfd = fd;
				e->polled = 0;
				atomic_fetch_sub_explicit(&w->seg.h->endpoints_polled, 1,
				                          memory_order_relaxed);
				struct epoll_event ev = { .events = EPOLLIN, .data.u64 = ep };
				epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev);
			} else if (fd >= 0) {
				close(fd);
				alive = 0;
			}
		}
		pthread_mutex_unlock(&e->mu);
		if (alive != 0)
			continue;
		if (st == HL_EP_ACTIVE) {
			hl_w_ep_kill(w, ep, "exited (polled)");
		} else if (st == HL_EP_BANNED) {
			pthread_mutex_lock(&e->mu);
			int freed = e->quarantined && e->pidfd < 0;
			if (freed)
				free_locked(w, ep);
			pthread_mutex_unlock(&e->mu);
			if (freed)
				free_wake(w, ep);
		}
	}
}

/*
 * Monitor thread, every tick: the slow-reader report (hl_shm_epw.last_read_ns).
 * An active endpoint with events waiting in its event rings whose read
 * cursors did not move for slow_reader_ms is reported once (log, segment
 * log, HL_EPW_SLOW), and again only after it read. It keeps its observers:
 * slow is not dead, and a full ring already costs only that client (its
 * events lag, it resyncs). The cursors are client-written: only compared.
 */
static void
watch_readers(struct hl_worker *w, uint64_t now)
{
	if (w->opt.slow_reader_ms <= 0)
		return;
	const uint64_t limit = (uint64_t)w->opt.slow_reader_ms * 1000000ull;
	const uint64_t wall = hl__wall_ns() & ~HL_EPW_SLOW;
	for (uint32_t ep = 0; ep < w->seg.h->max_endpoints; ep++) {
		struct hl_shm_epw *pw = hl__epw(&w->seg, ep);
		/* Acquire pairs with the release of ACTIVE at adoption: gen
		 * and pid below are that incarnation's. */
		if (atomic_load_explicit(&pw->state, memory_order_acquire) != HL_EP_ACTIVE)
			continue;
		struct hl_ep *e = &w->eps[ep];
		uint64_t sum = 0;
		int waiting = 0;
		for (uint32_t s = 0; s < w->nshards; s++) {
			uint64_t head = LD_RLX(&hl__epw_shard(&w->seg, ep, s)->ev_head);
			uint64_t tail = LD_RLX(&hl__epc_shard(&w->seg, ep, s)->ev_tail);
			sum += tail;
			waiting |= head != tail;
		}
		uint32_t gen = LD_RLX(&pw->gen);
		if (gen != e->watch_gen || !waiting || sum != e->tail_sum) {
			if (e->slow && gen == e->watch_gen)
				hl__log("endpoint %u (pid %u) is reading again", ep,
				         LD_RLX(&pw->pid));
			e->watch_gen = gen;
			e->tail_sum = sum;
			e->read_ns = now;
			e->slow = 0;
			atomic_store_explicit(&pw->last_read_ns, wall, memory_order_relaxed);
			continue;
		}
		if (e->slow || now - e->read_ns < limit)
			continue;
		e->slow = 1;
		uint64_t idle_ms = (now - e->read_ns) / 1000000ull;
		uint32_t pid = LD_RLX(&pw->pid);
		/* The record first, as hl_w_ep_kill() does: whoever sees the
		 * flag (heirloomctl, a test) must find the record already in
		 * the segment's log (test_lifecycle failed once, under ASan,
		 * in the window between the two). */
		hl_w_seglog(w, HL_LOG_SLOW_READER,
		            idle_ms > INT32_MAX ? INT32_MAX : (int32_t)idle_ms, pid, "not reading");
		atomic_store_explicit(&pw->last_read_ns, LD_RLX(&pw->last_read_ns) | HL_EPW_SLOW,
		                      memory_order_release);
		hl__log("endpoint %u (pid %u) is not reading: events wait in its ring and none "
		         "was taken for %lu ms (it keeps its observers)",
		         ep, pid, (unsigned long)idle_ms);
	}
}

static void *
monitor_main(void *arg)
{
	struct hl_worker *w = arg;
	urcu_memb_register_thread();
	uint64_t next_prune = w->opt.prune_interval_ms > 0
	                              ? hl__now_ns() + (uint64_t)w->opt.prune_interval_ms * 1000000ull
	                              : UINT64_MAX;
	uint32_t words = (w->seg.h->max_endpoints + 63) / 64;
	/* Recovery's part 2 first (recovery.c): shard threads serve publishes
	 * meanwhile. Everything below (cleanup, prune, adoption) needs it. */
	if (w->opt.recovery_pause_ms > 0) {
		struct timespec ts = {.tv_sec = w->opt.recovery_pause_ms / 1000,
		                      .tv_nsec = (long)(w->opt.recovery_pause_ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}
	int rc = hl_w_recover_finish(w);
	if (rc) {
		hl__log("recovery failed: %s", hl_strerror(rc));
		atomic_store(&w->rec_failed, 1);
		atomic_store(&w->stop, 1);
		for (uint32_t s = 0; s < w->nshards; s++)
			hl_w_wake_shard(w, s);
		urcu_memb_unregister_thread();
		return NULL;
	}
	hl_w_recover_serve(w);
	atomic_store_explicit(&w->seg.h->worker_ready, 1, memory_order_release);
	/* Tick at least every 200 ms, or as often as telemetry may publish. */
	int tick_ms = 200;
	if (w->opt.telemetry_ms > 0 && w->opt.telemetry_ms < tick_ms)
		tick_ms = (int)w->opt.telemetry_ms;
	while (!atomic_load(&w->stop)) {
		/* The monitor's heartbeat (issue 22), once per turn: its wait
		 * is bounded by tick_ms, so an idle monitor beats too. */
		atomic_store_explicit(&w->seg.h->monitor_beat_ns, hl__coarse_ns(),
		                      memory_order_relaxed);
		struct epoll_event evs[64];
		int n = epoll_wait(w->epfd, evs, 64, tick_ms);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 == UINT64_MAX) {
				uint64_t v;
				ssize_t r = read(w->wakefd, &v, sizeof(v));
				(void)r;
				continue;
			}
			uint32_t ep = (uint32_t)evs[i].data.u64;
			/* The pidfd stays readable: stop watching it now. */
			pthread_mutex_lock(&w->eps[ep].mu);
			if (w->eps[ep].pidfd >= 0)
				epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->eps[ep].pidfd, NULL);
			pthread_mutex_unlock(&w->eps[ep].mu);
			hl_w_ep_kill(w, ep, "exited");
			release_quarantine(w, ep);
		}
		for (uint32_t i = 0; i < words; i++) {
			uint64_t bits = atomic_exchange_explicit(&to_clean[i], 0, memory_order_acq_rel);
			while (bits) {
				uint32_t ep = i * 64 + (uint32_t)__builtin_ctzll(bits);
				bits &= bits - 1;
				clean_endpoint(w, ep);
			}
		}
		if (hl__now_ns() >= next_prune) {
			hl_w_prune(w);
			next_prune = hl__now_ns() + (uint64_t)w->opt.prune_interval_ms * 1000000ull;
		}
		poll_unwatched(w);
		watch_readers(w, hl__now_ns());
		hl_w_telemetry_tick(w);
		/* The segment truncated or replaced under us (issue 21):
		 * stop before a shard thread faults on a page that is gone
		 * (the SIGBUS handler in main.c covers one that gets there
		 * first). Checked every tick: one fstat and one stat. */
		uint64_t size_now = 0;
		int dmg = hl__seg_intact(&w->seg, w->opt.name, &size_now);
		if (dmg == HL_ETRUNCATED || dmg == -ESTALE) {
			if (dmg == HL_ETRUNCATED)
				hl__log(
				        "segment /heirloom.%s was truncated to %llu bytes (its "
				        "layout "
				        "needs %llu) while served: stopping (exit 6); it cannot be "
				        "served again",
				        w->opt.name, (unsigned long long)size_now,
				        (unsigned long long)w->seg.size);
			else
				hl__log(
				        "segment /heirloom.%s was replaced by another object while "
				        "served: stopping (exit 6)",
				        w->opt.name);
			atomic_store(&w->damaged, 1);
			atomic_store(&w->stop, 1);
			for (uint32_t s = 0; s < w->nshards; s++)
				hl_w_wake_shard(w, s);
			break;
		}
		/* Fencing: another owner took the table (keeper reclaimed it
		 * while we were paused, then gave it to another worker). */
		if (atomic_load_explicit(&w->seg.h->owner_epoch, memory_order_acquire) != w->epoch ||
		    atomic_load_explicit(&w->seg.h->owner_pid, memory_order_relaxed) != (uint32_t)getpid()) {
			atomic_store(&w->fenced, 1);
			atomic_store(&w->stop, 1);
			for (uint32_t s = 0; s < w->nshards; s++)
				hl_w_wake_shard(w, s);
		}
	}
	urcu_memb_unregister_thread();
	return NULL;
}

int
hl_w_monitor_start(struct hl_worker *w)
{
	to_clean = calloc((w->seg.h->max_endpoints + 63) / 64, sizeof(uint64_t));
	if (!to_clean)
		return -ENOMEM;
	int rc = pthread_create(&w->monitor, NULL, monitor_main, w);
	return -rc;
}

void
hl_w_seglog(struct hl_worker *w, uint32_t kind, int32_t code, uint32_t pid, const char *text)
{
	hl__seglog(w->seg.h, kind, code, pid,
	           atomic_load_explicit(&w->seg.h->owner_epoch, memory_order_relaxed), text);
}
