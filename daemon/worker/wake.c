/* SPDX-License-Identifier: MIT */
/*
 * wake.c: waking clients, shard threads and the monitor (wake.h). It owns
 * the deferral of client wake-ups during a run of requests, whose state
 * lives in struct hl_shard (wk). Calls nothing else of the worker.
 */
#include "wake.h"

#include "util.h"

#include <assert.h>
#include <limits.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

/* One datagram on EP's wake socket: the loop's descriptor (hl_fd()) turns
 * readable. MSG_DONTWAIT, not the descriptor's O_NONBLOCK: the client shares
 * that flag (one open file description) and could clear it, and a full
 * socket buffer must never block a shard thread; it is readable already. */
static void
send_wake(int fd)
{
	ssize_t n = send(fd, "w", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)n; /* EAGAIN: already readable; EPIPE etc.: the client is going */
}

/* EP armed its descriptor (epc.wake_arm) since we last sent: send, once
 * per arm however many threads get here (the exchange). */
static void
wake_fd(struct hl_worker *w, uint32_t ep)
{
	struct hl_ep *e = &w->eps[ep];
	uint32_t arm = atomic_load_explicit(&hl__epc(&w->seg, ep)->wake_arm, memory_order_relaxed);
	if (arm == atomic_load_explicit(&e->wake_fired, memory_order_relaxed) ||
	    atomic_exchange_explicit(&e->wake_fired, arm, memory_order_relaxed) == arm)
		return;
	/* Seq_cst pair with hl_w_wake_fd_drop(): it swaps wake_fd to -1 and
	 * then waits for wake_users to fall to 0; we count ourselves in and
	 * then load wake_fd. Either we see -1, or it sees us and waits. */
	atomic_fetch_add_explicit(&e->wake_users, 1, memory_order_seq_cst);
	int fd = atomic_load_explicit(&e->wake_fd, memory_order_seq_cst);
	if (fd >= 0)
		send_wake(fd);
	atomic_fetch_sub_explicit(&e->wake_users, 1, memory_order_release);
}

/* One group's futex word to move and the bits of the endpoints to wake on
 * it (segment.h, hl__ep_signal()). */
struct wake_group {
	uint32_t first; /* first endpoint of the group */
	uint32_t bits;
};

/* Wake the N endpoints EPS that wait. The caller issued a seq_cst fence
 * after its last ring or answer store for them: Dekker with hl_next(),
 * those stores are ordered before the reads of `sleeping` (a client-written
 * hint: garbage only costs a spurious wake-up) and of `wake_arm`
 * (wake_fd()). One FUTEX_WAKE_BITSET per group of 32 endpoints, with the
 * bits of those that sleep: the word moves (release) before it, so that a
 * waiter about to sleep on the old value returns at once. */
static void
wake_fenced(struct hl_worker *w, const uint32_t *eps, uint32_t n)
{
	struct wake_group g[HL_W_WAKE_DEFER_MAX];
	uint32_t ng = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t ep = eps[i];
		if (atomic_load_explicit(&hl__epc(&w->seg, ep)->sleeping, memory_order_relaxed)) {
			uint32_t first = ep & ~(HL_EP_SIGNAL_GROUP - 1), j = 0;
			while (j < ng && g[j].first != first)
				j++;
			if (j == ng)
				g[ng++] = (struct wake_group){ .first = first, .bits = 0 };
			g[j].bits |= hl__ep_signal_bit(ep);
		}
		/* Clients that never called hl_fd() pay this one branch, on
		 * the worker's own memory. */
		if (atomic_load_explicit(&w->eps[ep].wake_fd, memory_order_relaxed) >= 0)
			wake_fd(w, ep);
	}
	for (uint32_t j = 0; j < ng; j++) {
		_Atomic uint32_t *word = hl__ep_signal(&w->seg, g[j].first);
		atomic_fetch_add_explicit(word, 1, memory_order_release);
		hl__futex_wake_bits(word, INT_MAX, g[j].bits);
	}
}

static void
wake_one(struct hl_worker *w, uint32_t ep)
{
	atomic_thread_fence(memory_order_seq_cst);
	wake_fenced(w, &ep, 1);
}

void
hl_w_wake_fd_set(struct hl_worker *w, uint32_t ep, int fd)
{
	struct hl_ep *e = &w->eps[ep];
	hl_w_wake_fd_drop(w, ep);
	atomic_store_explicit(
	        &e->wake_fired,
	        atomic_load_explicit(&hl__epc(&w->seg, ep)->wake_arm, memory_order_relaxed),
	        memory_order_relaxed);
	atomic_store_explicit(&e->wake_fd, fd, memory_order_seq_cst);
	send_wake(fd);
}

void
hl_w_wake_fd_drop(struct hl_worker *w, uint32_t ep)
{
	struct hl_ep *e = &w->eps[ep];
	int fd = atomic_exchange_explicit(&e->wake_fd, -1, memory_order_seq_cst);
	if (fd < 0)
		return;
	/* A sender that loaded fd before our swap is counted in wake_users;
	 * one that counts itself in after it loads -1. A send lasts
	 * microseconds (MSG_DONTWAIT). */
	while (atomic_load_explicit(&e->wake_users, memory_order_seq_cst))
		sched_yield();
	close(fd);
}

/*
 * Deferred wake-ups. Waking a sleeping client costs the worker a FUTEX_WAKE
 * and the reschedule it triggers, a few microseconds: in a burst of
 * publishes to 8 observer processes it was most of the worker's time (perf:
 * futex_wake ~30% of all samples, 27k msg/s; bench/README.md). So while the
 * shard thread applies a run of requests (hl_w_apply() sets sh->wk.active),
 * the events' wake-ups are collected in sh->wk, one per endpoint, and sent
 * when the oldest is WAKE_DEFER_NS old (checked after each dispatch) or
 * when the drain ends: drain() calls hl_w_wake_flush() after every run that
 * applied anything. Other threads (recovery, cleanup) and anything outside
 * hl_w_apply() wake at once. Deferring only delays a wake-up: each ring
 * commit still precedes the read of `sleeping` (Dekker with hl_next()), so
 * none is lost.
 */
#define WAKE_DEFER_NS 10000u

void
hl_w_wake_flush(struct hl_shard *sh)
{
	uint32_t n = sh->wk.n;
	sh->wk.n = 0;
	if (!n)
		return;
	/* One fence for the run: every ring store of these endpoints came
	 * before it (a fan-out of 64 made 64 of them, one per wake). */
	atomic_thread_fence(memory_order_seq_cst);
	wake_fenced(sh->w, sh->wk.eps, n);
}

void
hl_w_wake_soon(struct hl_shard *sh, uint32_t ep)
{
	struct hl_wake_defer *wk = &sh->wk;
	if (!wk->active) {
		wake_one(sh->w, ep);
		return;
	}
	for (uint32_t i = 0; i < wk->n; i++)
		if (wk->eps[i] == ep)
			return;
	assert(wk->n <= HL_W_WAKE_DEFER_MAX);
	if (wk->n == HL_W_WAKE_DEFER_MAX)
		hl_w_wake_flush(sh);
	if (wk->n == 0)
		wk->since = wk->now ? wk->now : hl__now_ns(); /* no later than now */
	wk->eps[wk->n++] = ep;
}

void
hl_w_wake_defer_begin(struct hl_shard *sh, int on)
{
	sh->wk.active = on;
	sh->wk.now = 0;
}

void
hl_w_wake_defer_end(struct hl_shard *sh)
{
	sh->wk.active = 0;
	if (!sh->wk.n)
		return;
	/* The dispatch's end, a few hundred ns ago at most: a wake-up waits
	 * WAKE_DEFER_NS and that much more. */
	uint64_t now = sh->wk.now ? sh->wk.now : hl__now_ns();
	if (now - sh->wk.since >= WAKE_DEFER_NS)
		hl_w_wake_flush(sh);
}

void
hl_w_wake_client(struct hl_worker *w, uint32_t ep)
{
	wake_one(w, ep);
}

void
hl_w_wake_shard(struct hl_worker *w, uint32_t s)
{
	struct hl_shm_doorbell *d = hl__doorbell(&w->seg, s);
	atomic_fetch_add_explicit(&d->word, 1, memory_order_release);
	hl__futex_wake(&d->word, 1);
}

void
hl_w_monitor_wake(struct hl_worker *w)
{
	uint64_t one = 1;
	ssize_t n = write(w->wakefd, &one, sizeof(one));
	(void)n;
}
