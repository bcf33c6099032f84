/* SPDX-License-Identifier: MIT */
/*
 * endpoint.h: the worker's side of client endpoints: adoption, the kill
 * (with its reason), the per-endpoint observer lists, quarantine and the
 * freeing of an endpoint once every shard signed off. Calls only wake.c
 * (and the log).
 */
#ifndef HL_W_ENDPOINT_H
#define HL_W_ENDPOINT_H

#include "worker.h"

/* Why an endpoint is dropped. The first ones end it (its process is gone or
 * it said goodbye): freed once cleaned. From HL_W_KILL_BANNED_RECOVERED on,
 * a ban: logged, and the endpoint is quarantined while its process lives.
 * The texts (endpoint.c) are the log's, unchanged. */
enum hl_w_kill {
	HL_W_KILL_EXITED,            /* "exited": its pidfd turned readable */
	HL_W_KILL_EXITED_POLLED,     /* "exited (polled)": polling found it gone */
	HL_W_KILL_CLOSED,            /* "closed": it sent HL_REQ_CLOSE */
	HL_W_KILL_GONE_PRUNE,        /* "gone (prune)": the prune pass found it gone */
	HL_W_KILL_GONE_RECOVERED,    /* "gone (recovered)": found dead by recovery */
	HL_W_KILL_BANNED_RECOVERED,  /* "banned (recovered)": found banned by recovery */
	HL_W_KILL_CLAIM_OVERWRITTEN, /* "claim entry overwritten" */
	HL_W_KILL_GARBAGE,           /* "garbage in request ring" */
	HL_W_KILL_EV_TAIL,           /* "impossible event ring tail" */
};

int hl_w_ep_adopt(struct hl_worker *w, uint32_t ep);
/* The endpoints' high-water mark (layout.h, eps_hwm): endpoints at or above
 * it were never written and read as FREE; callers skip them. Any thread. */
uint32_t hl_w_eps_hwm(const struct hl_worker *w);
/* Raise the mark past EP before writing EP's worker lines. Any thread. */
void hl_w_ep_mark(struct hl_worker *w, uint32_t ep);
int hl_w_ep_active(struct hl_worker *w, uint32_t ep);
/* Drop EP (ACTIVE) for WHY: state DEAD or BANNED, then the monitor cleans
 * it (to_clean). Any thread; takes ep.mu. */
void hl_w_ep_kill(struct hl_worker *w, uint32_t ep, enum hl_w_kill why);
/* The same for an endpoint recovery found DEAD or BANNED (STATE). */
void hl_w_ep_kill_recovered(struct hl_worker *w, uint32_t ep, uint32_t state);
/* EP (its mu held) lives but has no pidfd (ERR from pidfd_open): watch it
 * by polling from the monitor thread; counted, logged once. */
void hl_w_ep_poll_instead(struct hl_worker *w, uint32_t ep, int err);
/* Watch EP's pidfd, if it has one, from the monitor's epoll. */
void hl_w_ep_watch(struct hl_worker *w, uint32_t ep);
void hl_w_ep_add_obs(struct hl_worker *w, uint32_t ep, uint32_t slot);
void hl_w_ep_del_obs(struct hl_worker *w, uint32_t ep, uint32_t slot);
int hl_w_ep_build_lists(struct hl_worker *w, const uint32_t *ep1, uint64_t *total);
int hl_w_ep_fix_positions(struct hl_worker *w, uint32_t ep);
/* Repair a free endpoint's positions while holding its claim (clients may
 * claim at any moment); FRESH: EP is above the high-water mark. 1 = done. */
int hl_w_ep_fix_free(struct hl_worker *w, uint32_t ep, int fresh);
/* Recovery (e->mu held): orphan EP (not adopted, holding observers)
 * becomes a dead incarnation to be cleaned. A free claim {0, g} is taken
 * as {our pid, g + 1}, so that no client claims EP while it is cleaned
 * and the cleanup runs under a gen other than 0 (clean_endpoint() takes
 * gen 0 for "never adopted"); freeing it stores {0, g + 1}. A claim some
 * client holds already stays its own. Returns the incarnation's gen, its
 * claimer's pid and start time in *PID and *START. */
uint32_t hl_w_ep_take_orphan(struct hl_worker *w, uint32_t ep, uint32_t *pid, uint64_t *start);
/* Monitor: hl_w_ep_fix_free() on the endpoints the mark passed over since
 * they were last vetted ([ep_vetted, mark)); returns how many it repaired. */
uint32_t hl_w_ep_vet_gap(struct hl_worker *w);
/* hl_w_ep_fix_free() on every endpoint above the mark; returns how many. */
uint32_t hl_w_ep_sweep_fresh(struct hl_worker *w);
/* Shard SH drained EP's ring after a kill: the last shard frees it (or
 * quarantines a banned one). */
void hl_w_ep_signoff(struct hl_shard *sh, uint32_t ep);
/* Free a quarantined EP whose process exited (its pidfd says so). */
void hl_w_ep_release_quarantine(struct hl_worker *w, uint32_t ep);
/* Free a quarantined EP without a pidfd whose process polling found gone. */
void hl_w_ep_release_polled(struct hl_worker *w, uint32_t ep);
/* hl_fd(): take a copy of EP's wake socket (HL_REQ_WAKEFD; shard thread,
 * takes ep.mu). 0 or -errno (endpoint.c, take_wake_locked()). */
int hl_w_ep_take_wake(struct hl_worker *w, uint32_t ep);
/* After a restart (recovery, EP adopted ACTIVE with a pidfd): take the
 * copy again if the client has one, and send once; a failure is logged. */
void hl_w_ep_retake_wake(struct hl_worker *w, uint32_t ep);

#endif /* HL_W_ENDPOINT_H */
