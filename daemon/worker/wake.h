/* SPDX-License-Identifier: MIT */
/*
 * wake.h: every way the worker wakes someone: a client sleeping on its
 * event ring (at once, or deferred to the end of a shard thread's run of
 * requests), a shard thread sleeping on its doorbell, the monitor thread
 * sleeping in epoll. Calls nothing else of the worker.
 */
#ifndef HL_W_WAKE_H
#define HL_W_WAKE_H

#include "worker.h"

/* Wake endpoint EP's client now if it sleeps (any thread). */
void hl_w_wake_client(struct hl_worker *w, uint32_t ep);
/* Wake EP's client: deferred while SH's thread applies a client's request
 * (hl_w_wake_defer_begin()), else at once. Shard thread only. */
void hl_w_wake_soon(struct hl_shard *sh, uint32_t ep);
/* Around one dispatch in hl_w_apply(): defer its wake-ups if ON; the end
 * sends them if the oldest waited WAKE_DEFER_NS. Shard thread only. */
void hl_w_wake_defer_begin(struct hl_shard *sh, int on);
/* The dispatch in progress read the clock: NOW (hl__now_ns()). */
static inline void
hl_w_wake_clock(struct hl_shard *sh, uint64_t now)
{
	sh->wk.now = now;
}
void hl_w_wake_defer_end(struct hl_shard *sh);
/* Send every wake-up SH deferred. Every run of requests that applied
 * anything must end in this call (shard.c, drain()). */
void hl_w_wake_flush(struct hl_shard *sh);
/* Ring shard S's doorbell (any thread). */
void hl_w_wake_shard(struct hl_worker *w, uint32_t s);
/* hl_fd(): EP's copy of its client's wake socket. Set gives the worker FD
 * (owned from then on; the previous copy, if any, is closed) and sends one
 * datagram, so that a wake-up the last holder may have missed (a worker
 * killed between an event and its send) is not lost; drop closes the copy
 * once no thread is sending on it. Call with EP's mu held. */
void hl_w_wake_fd_set(struct hl_worker *w, uint32_t ep, int fd);
void hl_w_wake_fd_drop(struct hl_worker *w, uint32_t ep);
/* Wake the monitor thread (any thread). */
void hl_w_monitor_wake(struct hl_worker *w);

#endif /* HL_W_WAKE_H */
