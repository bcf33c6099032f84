/* SPDX-License-Identifier: MIT */
/*
 * observers.h: unlinking an observer from its key's list and giving its
 * slot back after an RCU grace period; the list's change counter that
 * dispatch's list copy depends on. Calls keys.c and endpoint.c.
 */
#ifndef HL_W_OBSERVERS_H
#define HL_W_OBSERVERS_H

#include "worker.h"

/*
 * RCU orders a reader's last access to an observer slot, and the remover's,
 * before the slot's reuse: call_rcu() frees the slot only after every
 * read-side section that could see it has ended. liburcu does that with
 * code ThreadSanitizer does not instrument, so under TSan the two ends are
 * annotated: every read-side section (dispatch.c) and every remover
 * releases one token (observers.c) before it lets go, and the callback
 * acquires it before the slot goes back to the pool. Nothing in other
 * builds.
 */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer) && !defined(__SANITIZE_THREAD__)
#define __SANITIZE_THREAD__ 1 /* clang's spelling of gcc's macro */
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
extern char hl_w_rcu_tsan_token;
#define rcu_tsan_release() __tsan_release(&hl_w_rcu_tsan_token)
#define rcu_tsan_acquire() __tsan_acquire(&hl_w_rcu_tsan_token)
#else
#define rcu_tsan_release() ((void)0)
#define rcu_tsan_acquire() ((void)0)
#endif

/* Key IDX's observer list changed (linked or unlinked a slot): the copy
 * dispatch keeps of it is stale. Release: the change is visible to whoever
 * reads the new gen (pairs with the acquire in dispatch.c's dispatch()).
 * Call under the key's shard.mu, after the change. */
static inline void
hl_w_obs_list_changed(struct hl_worker *w, uint32_t idx)
{
	atomic_fetch_add_explicit(&w->ocache[idx].gen, 1, memory_order_release);
}

/* Unlink observer SLOT; its slot is reused after a grace period. DONE: the
 * unlink is the commit of the request being applied (an unobserve). Call
 * with the key's shard.mu held. */
int hl_w_remove_observer(struct hl_shard *sh, uint32_t slot, int done);

#endif /* HL_W_OBSERVERS_H */
