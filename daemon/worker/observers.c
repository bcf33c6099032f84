/* SPDX-License-Identifier: MIT */
/*
 * observers.c: removing an observer (observers.h): the unlink from its
 * key's list (the commit), the bookkeeping, and the slot's return to the
 * pool after an RCU grace period, so that a dispatch walking the list
 * right now can still follow its `next`. Observers are linked by apply.c
 * (apply_observe()). Calls keys.c and endpoint.c.
 */
#include "observers.h"

#include "endpoint.h"
#include "keys.h"
#include "lock.h"

#include <assert.h>
#include <stdlib.h>
#include <urcu/urcu-memb.h>

#define LD_RLX(p)    atomic_load_explicit((p), memory_order_relaxed)
#define ST_RLX(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)

#if defined(__SANITIZE_THREAD__)
char hl_w_rcu_tsan_token;
#endif

struct deferred_slot {
	struct rcu_head rh;
	struct hl_worker *w;
	uint32_t slot;
};

static void
free_obs_slot_cb(struct rcu_head *head)
{
	struct deferred_slot *d = caa_container_of(head, struct deferred_slot, rh);
	rcu_tsan_acquire();
	hl__pool_free(&d->w->obs, d->slot);
	free(d);
}

/* Unlink observer SLOT. Caller holds the key's shard.mu. The slot goes back
 * to the pool after an RCU grace period, so that a dispatch walking the
 * list right now can still follow its `next`. DONE: the unlink is the
 * commit of the request being applied (apply_unobserve()): its done record
 * is stored right after the unlink and before the slot is handed to RCU,
 * whose callback may let another shard reuse it (and erase the evidence)
 * at once. */
int
hl_w_remove_observer(struct hl_shard *sh, uint32_t slot, int done)
{
	struct hl_worker *w = sh->w;
	assert(hl_w_rank_held(HL_W_RANK_SHARD));
	struct hl_shm_observer *o = hl__obs(&w->seg, slot);
	/* Everything needed of the slot is read now: once call_rcu() below has
	 * it, a grace period may end at once (this thread is not in a read-side
	 * section) and another shard may reuse the slot for a key of its own.
	 * Reading o->key after that (as this code once did, found by TSan)
	 * could free a key another shard is just linking an observer to. */
	const uint32_t idx = o->key, ep = o->endpoint;
	struct hl_shm_key *k = hl__key(&w->seg, idx);
	uint32_t p = LD_RLX(&o->prev), n = LD_RLX(&o->next);
	hl_w_crash_point(w);
	/* COMMIT: unlink (readers follow next only). A crash right after it
	 * leaves the slot unreachable with its id set: recovery clears it and
	 * rebuilds n->prev from the next chain. */
	if (p != HL_NIL)
		atomic_store_explicit(&hl__obs(&w->seg, p)->next, n, memory_order_release);
	else
		atomic_store_explicit(&k->obs_head, n, memory_order_release);
	if (n != HL_NIL)
		ST_RLX(&hl__obs(&w->seg, n)->prev, p);
	atomic_store_explicit(&o->id, 0, memory_order_release);
	if (done) {
		hl_w_crash_point(w); /* committed, no done record yet */
		hl_w_req_done(sh, 0);
	}
	/* Before call_rcu() below: a dispatch that reads the old gen began
	 * its read-side section before the slot can be reused. */
	hl_w_obs_list_changed(w, idx);
	atomic_fetch_sub_explicit(&k->nobs, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&w->seg.h->observers_used, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&sh->c->observers_removed, 1, memory_order_relaxed);
	hl_w_ep_del_obs(w, ep, slot);
	struct deferred_slot *d = malloc(sizeof(*d));
	if (d) {
		d->w = w;
		d->slot = slot;
		rcu_tsan_release();
		urcu_memb_call_rcu(&d->rh, free_obs_slot_cb);
	} else {
		/* No memory for the deferral: wait for the grace period here. */
		urcu_memb_synchronize_rcu();
		rcu_tsan_acquire();
		hl__pool_free(&w->obs, slot);
	}
	hl_w_maybe_free_key(sh, idx);
	return 0;
}
