/* SPDX-License-Identifier: MIT */
/*
 * apply.c: applying requests to the table in the segment (apply.h); the
 * dispatch of the resulting events is dispatch.c's.
 *
 * Every mutation follows one pattern: write everything the change needs
 * where nobody can see it yet, then make it visible with ONE release store
 * (the commit point, marked "COMMIT" below), then tidy up. A SIGKILL before
 * the commit leaves only unreachable bytes, which recovery frees because the
 * allocators are rebuilt from reachability; a SIGKILL after it leaves a
 * complete change whose tidy-up recovery finishes (see recovery.c for each
 * case). Pending dispatches are recorded in the table itself: a new value
 * block keeps `prev` until every observer has the event; a deleted key keeps
 * its old value with bit 0 of `val` set (HL_VAL_DELETED).
 *
 * Context: apply functions run on the shard thread that owns the key and
 * take shard.mu themselves. Dispatch runs on the same thread without
 * shard.mu, inside an RCU read-side critical section, because endpoint
 * cleanup may unlink observers concurrently; unlinked observer slots are
 * reused only after a grace period.
 */
#include "apply.h"

#include "dispatch.h"
#include "endpoint.h"
#include "heirloom/heirloom.h"
#include "keys.h"
#include "lock.h"
#include "observers.h"
#include "seqlock.h"
#include "util.h"
#include "wake.h"

#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <urcu/urcu-memb.h>

#define LD_RLX(p)    atomic_load_explicit((p), memory_order_relaxed)
#define ST_RLX(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)

/*
 * Compare-and-set (HL_REQ_PUBLISH_IF, HL_REQ_DELETE_IF): the revision a
 * conditional request is compared with. A key with no value, or whose
 * value was deleted (bit HL_VAL_DELETED, the delete's dispatch perhaps
 * pending), compares as 0, whatever its slot's rev says: "if 0" means
 * "only if absent". Call with shard.mu held (val and rev change only under
 * it, so the check and the commit that follows are one step).
 */
static uint64_t
cond_rev(const struct hl_shm_key *k)
{
	uint64_t val = LD_RLX(&k->val);
	return (val && !(val & HL_VAL_DELETED)) ? LD_RLX(&k->rev) : 0;
}

/* Publish (or, COND, publish only if the key's revision is r->arg). For a
 * conditional request *result gets the answer (layout.h, hl__cond_*): the
 * key's revision after it, or a conflict with the current one; a conflict
 * returns 0 (the request did not fail: it was answered) and commits
 * nothing, so recovery finds no evidence and the done record, written by
 * hl_w_apply(), is its only trace. */
static int
apply_publish(struct hl_shard *sh, uint32_t ep, uint64_t pos, const struct hl_req *r,
              const uint8_t *key, const uint8_t *meta, const uint8_t *val, int cond,
              int64_t *result, uint32_t *dispatch_key)
{
	struct hl_worker *w = sh->w;
	uint64_t hash = hl__hash(key, r->h.key_len);
	int rc = 0;
	hl_w_lock(&sh->mu, HL_W_RANK_SHARD);
	if (cond) {
		/* The check, under shard.mu: nothing changes the key between
		 * it and the commit below. A missing key compares as 0 and is
		 * not created for a conflict. */
		uint32_t at = hl_w_key_find(w, key, r->h.key_len, hash);
		uint64_t cur = at ? cond_rev(hl__key(&w->seg, at)) : 0;
		if (cur != r->arg) {
			*result = hl__cond_conflict(cur);
			goto out;
		}
	}
	int created;
	uint32_t idx = hl_w_key_get(w, key, r->h.key_len, hash, &created);
	if (!idx) {
		rc = -ENOSPC;
		goto out;
	}
	struct hl_shm_key *k = hl__key(&w->seg, idx);
	uint64_t old = LD_RLX(&k->val);
	if (old) {
		struct hl_shm_value *ov = hl__val(&w->seg, old);
		if (ov->len == r->val_len &&
		    memcmp((uint8_t *)(ov + 1) + ov->meta_len, val, r->val_len) == 0) {
			if (ep != HL_W_EP_SELF)
				atomic_fetch_add_explicit(&sh->c->skipped, 1, memory_order_relaxed);
			/* Equal value: the revision matched (a delete's
			 * dispatch always ends before the next request, so
			 * `old` is a live value here), nothing changes. */
			if (cond)
				*result = (int64_t)LD_RLX(&k->rev);
			goto out;
		}
	}
	uint32_t klass;
	uint64_t nb = hl__heap_alloc(
	        &w->heap, sizeof(struct hl_shm_value) + r->meta_len + r->val_len, &klass, &rc);
	if (!nb) {
		if (rc == -ENOSPC)
			atomic_fetch_add_explicit(&w->seg.h->heap_full, 1, memory_order_relaxed);
		if (created)
			hl_w_maybe_free_key(sh, idx);
		goto out;
	}
	atomic_store_explicit(&w->seg.h->heap_used, hl__heap_used(&w->heap), memory_order_relaxed);
	uint64_t rev = atomic_fetch_add_explicit(&w->seg.h->revision, 1, memory_order_relaxed) + 1;
	struct hl_shm_value hdr = { .rev = rev,
		                    .len = r->val_len,
		                    .meta_len = r->meta_len,
		                    .type = old ? HL_VAL_PUT : HL_VAL_PUT | HL_VAL_PENDING_NEW,
		                    .pub_pid = ep == HL_W_EP_SELF
		                                       ? (uint32_t)getpid()
		                                       : LD_RLX(&hl__epw(&w->seg, ep)->pid),
		                    .klass = klass,
		                    .ts_ns = r->ts_ns,
		                    .org_ep = ep == HL_W_EP_SELF ? UINT32_MAX : ep,
		                    .org_gen = ep == HL_W_EP_SELF ? 0 : w->eps[ep].gen,
		                    .org_pos = pos };
	atomic_init(&hdr.prev, old);
	struct hl_shm_value *nv = hl__val(&w->seg, nb);
	/* The block may have been freed a moment ago while a client still
	 * reads it under a seqlock: word-atomic stores keep that race defined. */
	hl__racy_copy_in(nv, &hdr, sizeof(hdr));
	hl__racy_copy_in(nv + 1, meta, r->meta_len);
	hl__racy_copy_in((uint8_t *)(nv + 1) + r->meta_len, val, r->val_len);
	hl_w_crash_point(w);
	/* COMMIT: the new value becomes the key's value. Before this line the
	 * block is unreachable (recovery frees it, the request is applied
	 * anew); after it, prev (or PENDING_NEW) marks the dispatch as pending
	 * and recovery finishes it, and the block's origin (ep, gen, pos) is
	 * the evidence that this request was applied (hl_w_req_committed()). */
	hl__seq_write_begin(&k->seq);
	atomic_store_explicit(&k->val, nb, memory_order_release);
	ST_RLX(&k->rev, rev);
	hl__seq_write_end(&k->seq);
	hl_w_crash_point(w); /* committed, no done record yet */
	if (cond)
		*result = (int64_t)rev;
	hl_w_req_done(sh, *result);
	if (ep != HL_W_EP_SELF)
		atomic_fetch_add_explicit(&sh->c->publishes, 1, memory_order_relaxed);
	*dispatch_key = idx;
out:
	hl_w_unlock(&sh->mu, HL_W_RANK_SHARD);
	return rc;
}

/* Delete (or, COND, delete only if the key's revision is r->arg; the
 * answer in *result as for apply_publish()). */
static int
apply_delete(struct hl_shard *sh, uint32_t ep, uint64_t pos, const struct hl_req *r,
             const uint8_t *key, int cond, int64_t *result, uint32_t *dispatch_key)
{
	struct hl_worker *w = sh->w;
	uint64_t hash = hl__hash(key, r->h.key_len);
	hl_w_lock(&sh->mu, HL_W_RANK_SHARD);
	uint32_t idx = hl_w_key_find(w, key, r->h.key_len, hash);
	if (cond) {
		/* The check under shard.mu, as in apply_publish(). A match
		 * with 0 means "delete if absent": nothing to do, answered 0. */
		uint64_t cur = idx ? cond_rev(hl__key(&w->seg, idx)) : 0;
		if (cur != r->arg)
			*result = hl__cond_conflict(cur);
		if (cur != r->arg || cur == 0)
			idx = 0;
	}
	if (idx) {
		struct hl_shm_key *k = hl__key(&w->seg, idx);
		uint64_t old = LD_RLX(&k->val);
		if (old && !(old & HL_VAL_DELETED)) {
			uint64_t rev = atomic_fetch_add_explicit(&w->seg.h->revision, 1,
			                                         memory_order_relaxed) +
			               1;
			/* The old block names this delete as its origin from now
			 * on: with the DELETED bit below, the evidence that this
			 * request was applied. Before the commit it proves
			 * nothing (the bit is not set); clients never read it. */
			struct hl_shm_value *ov = hl__val(&w->seg, old);
			__atomic_store_n(&ov->org_ep, ep, __ATOMIC_RELAXED);
			__atomic_store_n(&ov->org_gen, w->eps[ep].gen, __ATOMIC_RELAXED);
			__atomic_store_n(&ov->org_pos, pos, __ATOMIC_RELAXED);
			hl_w_crash_point(w);
			/* COMMIT: the key reads as absent from here on; its old
			 * value stays, flagged, until the delete is dispatched.
			 * Who and when ride in the slot, for the delete event. */
			hl__seq_write_begin(&k->seq);
			__atomic_store_n(&k->del_pid,
			                 atomic_load_explicit(&hl__epw(&w->seg, ep)->pid,
			                                      memory_order_relaxed),
			                 __ATOMIC_RELAXED);
			__atomic_store_n(&k->del_ts, r->ts_ns, __ATOMIC_RELAXED);
			atomic_store_explicit(&k->val, old | HL_VAL_DELETED, memory_order_release);
			ST_RLX(&k->rev, rev);
			hl__seq_write_end(&k->seq);
			hl_w_crash_point(w); /* committed, no done record yet */
			if (cond)
				*result = (int64_t)rev;
			hl_w_req_done(sh, *result);
			atomic_fetch_add_explicit(&sh->c->deletes, 1, memory_order_relaxed);
			*dispatch_key = idx;
		}
	}
	hl_w_unlock(&sh->mu, HL_W_RANK_SHARD);
	return 0;
}

static int
apply_observe(struct hl_shard *sh, uint32_t ep, uint64_t pos, const struct hl_req *r,
              const uint8_t *key, int64_t *result)
{
	struct hl_worker *w = sh->w;
	/* A prefix observer joins the list of the prefix entry: a key slot
	 * of the prefix's bytes whose hash has HL_HASH_PREFIX set (the same
	 * bucket and shard as the key of those bytes; docs/architecture.md,
	 * "Prefix observers"). Everything below (link, done record, replay
	 * evidence, cleanup, recovery) is the exact observer's. */
	const int prefix = (r->arg & HL_OBSERVE_PREFIX) != 0;
	uint64_t hash = prefix ? hl__hash_prefix(key, r->h.key_len) : hl__hash(key, r->h.key_len);
	int rc = 0;
	hl_w_lock(&sh->mu, HL_W_RANK_SHARD);
	if (!hl_w_ep_active(w, ep)) {
		rc = HL_ESTALE;
		goto out;
	}
	int created;
	uint32_t idx = hl_w_key_get(w, key, r->h.key_len, hash, &created);
	if (!idx) {
		rc = -ENOSPC;
		goto out;
	}
	uint32_t slot = hl__pool_alloc(&w->obs);
	if (!slot) {
		atomic_fetch_add_explicit(&w->seg.h->observers_full, 1, memory_order_relaxed);
		if (created)
			hl_w_maybe_free_key(sh, idx);
		rc = -ENOSPC;
		goto out;
	}
	struct hl_shm_key *k = hl__key(&w->seg, idx);
	struct hl_shm_observer *o = hl__obs(&w->seg, slot);
	/* The sequence number is stored before the observer can be reached,
	 * so no id handed out is ever handed out again, even after a crash
	 * (recovery also raises it past every live id). */
	uint64_t seq =
	        atomic_fetch_add_explicit(&w->seg.h->next_observer_seq, 1, memory_order_relaxed);
	if (seq == 0 || seq >= HL_OBS_SEQ_LIMIT) {
		/* Used up: keep the counter at the limit (recovery takes more
		 * than that for damage and restarts it lower). */
		if (seq >= HL_OBS_SEQ_LIMIT)
			atomic_store_explicit(&w->seg.h->next_observer_seq, HL_OBS_SEQ_LIMIT,
			                      memory_order_relaxed);
		hl__pool_free(&w->obs, slot);
		if (created)
			hl_w_maybe_free_key(sh, idx);
		rc = -EOVERFLOW;
		goto out;
	}
	uint64_t id = (seq << 24) | slot;
	uint32_t head = LD_RLX(&k->obs_head);
	ST_RLX(&o->next, head);
	ST_RLX(&o->prev, HL_NIL);
	o->key = idx;
	o->endpoint = ep;
	o->ep_gen = w->eps[ep].gen;
	o->flags = (uint32_t)r->arg;
	/* An exact observer is owed the changes after the key's revision (its
	 * shard applies them, in order, after this). A prefix observer's
	 * keys are in every shard, whose threads may have taken revisions
	 * they have not dispatched yet: its start revision is the global
	 * one, so a change that took its revision before this observe is not
	 * delivered (it happened before the observe), and one after is
	 * (this load precedes the answer, which precedes any publish queued
	 * after it). */
	uint64_t start = prefix ? atomic_load_explicit(&w->seg.h->revision, memory_order_relaxed)
	                        : LD_RLX(&k->rev);
	/* Resumed (8 value bytes: the start revision R the client gives,
	 * lib/client.c): a prefix observer is then owed every change after R
	 * dispatched from now on; those dispatched before are in the history,
	 * where the client reads them (docs/architecture.md, "History and
	 * resume"). An exact observer's key is this shard's: everything up to
	 * its revision is in the history already. */
	if (prefix && r->val_len == 8)
		memcpy(&start, key + r->h.key_len + r->meta_len, 8);
	ST_RLX(&o->delivered_rev, start);
	ST_RLX(&o->dropped, 0);
	o->created_ns = hl__wall_ns();
	o->req_pos = pos;
	atomic_store_explicit(&o->id, id, memory_order_release);
	if (head != HL_NIL)
		ST_RLX(&hl__obs(&w->seg, head)->prev, slot);
	hl_w_crash_point(w);
	/* COMMIT: the observer joins its key's list. Before it the slot is
	 * unreachable (recovery clears it; head->prev is rebuilt from next). */
	atomic_store_explicit(&k->obs_head, slot, memory_order_release);
	hl_w_crash_point(w); /* committed, no done record yet */
	hl_w_req_done(sh, (int64_t)id);
	hl_w_obs_list_changed(w, idx);
	atomic_fetch_add_explicit(&k->nobs, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->seg.h->observers_used, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&sh->c->observers_added, 1, memory_order_relaxed);
	hl_w_ep_add_obs(w, ep, slot);
	*result = (int64_t)id;
out:
	hl_w_unlock(&sh->mu, HL_W_RANK_SHARD);
	return rc;
}

static int
apply_unobserve(struct hl_shard *sh, uint32_t ep, uint64_t pos, const struct hl_req *r)
{
	struct hl_worker *w = sh->w;
	uint64_t id = r->arg;
	uint32_t slot = (uint32_t)(id & 0xffffffu);
	if (slot < 1 || slot > w->seg.h->max_observers || id >> 24 == 0)
		return -ENOENT;
	struct hl_shm_observer *o = hl__obs(&w->seg, slot);
	int rc = 0;
	hl_w_lock(&sh->mu, HL_W_RANK_SHARD);
	if (atomic_load_explicit(&o->id, memory_order_relaxed) != id)
		rc = -ENOENT;
	else if (hl_w_key_shard(w, o->key) != sh->id)
		rc = -EINVAL; /* sent to the wrong shard: the client is broken */
	else if (o->endpoint != ep || o->ep_gen != w->eps[ep].gen)
		rc = -EPERM;
	else {
		/* This request is the last to change the slot: with the unlink,
		 * the evidence of its commit (hl_w_req_committed()). */
		o->req_pos = pos; /* the unobserve's own position */
		rc = hl_w_remove_observer(sh, slot, 1);
	}
	hl_w_unlock(&sh->mu, HL_W_RANK_SHARD);
	return rc;
}

/* Test hook --hold-dispatch-shard/--hold-dispatch-file: a client's change
 * on that shard is committed (readers see it, its revision is taken) but
 * not yet dispatched while the file exists, so that a test can order
 * another shard's work into that window deterministically (test_prefix.c).
 * Not in an RCU read-side section here: offline, as park() in shard.c. */
static __attribute__((cold)) void
hold(struct hl_shard *sh)
{
	struct hl_worker *w = sh->w;
	if (access(w->opt.hold_file, F_OK) != 0)
		return;
	hl__log("test hook: shard %u holds a dispatch", sh->id);
	urcu_memb_thread_offline();
	while (access(w->opt.hold_file, F_OK) == 0 &&
	       !atomic_load_explicit(&w->stop, memory_order_relaxed)) {
		struct timespec ts = { .tv_sec = 0, .tv_nsec = 1000000L };
		nanosleep(&ts, NULL);
	}
	urcu_memb_thread_online();
}

/*
 * Apply request R (a private, validated copy) from endpoint EP at ring
 * position POS. Returns 0 or -errno (the request's own failure, answered to
 * the client); *result gets an observer id for OBSERVE. EP is HL_W_EP_SELF
 * for the worker's own publishes (telemetry.c, on this shard's thread, POS
 * unused): they alone may write HL_SYS_PREFIX keys (-EPERM both ways) and
 * they are not counted as publishes.
 */
int
hl_w_apply(struct hl_shard *sh, uint32_t ep, uint64_t pos, const struct hl_req *r, uint32_t len,
           int64_t *result)
{
	(void)len;
	const uint8_t *key = (const uint8_t *)(r + 1);
	const uint8_t *meta = key + r->h.key_len;
	const uint8_t *val = meta + r->meta_len;
	uint32_t dk = 0;
	int rc;
	*result = 0;
	/* The worker's own keys: its publishes only (HL_W_EP_SELF). */
	if (hl__req_is_write(r->h.type) &&
	    hl_w_is_sys_key(key, r->h.key_len) != (ep == HL_W_EP_SELF)) {
		hl_w_req_done(sh, -EPERM);
		return -EPERM;
	}
	switch (r->h.type) {
	case HL_REQ_PUBLISH:
	case HL_REQ_PUBLISH_IF:
		rc = apply_publish(sh, ep, pos, r, key, meta, val, r->h.type == HL_REQ_PUBLISH_IF,
		                   result, &dk);
		break;
	case HL_REQ_DELETE:
	case HL_REQ_DELETE_IF:
		rc = apply_delete(sh, ep, pos, r, key, r->h.type == HL_REQ_DELETE_IF, result, &dk);
		break;
	case HL_REQ_OBSERVE: rc = apply_observe(sh, ep, pos, r, key, result); break;
	case HL_REQ_UNOBSERVE: rc = apply_unobserve(sh, ep, pos, r); break;
	default: rc = -EINVAL; break;
	}
	/* No commit (a failure, an unchanged value, a delete of nothing): the
	 * outcome is recorded now; a crash before this line applies the
	 * request again later, which is its first application. */
	hl_w_req_done(sh, rc < 0 ? rc : *result);
	if (dk && __builtin_expect(sh->w->opt.hold_shard == (int64_t)sh->id, 0) &&
	    ep != HL_W_EP_SELF)
		hold(sh);
	if (dk) {
		/* Wake-ups of this dispatch may wait for the end of the run
		 * (wake.c), but not for long. Only a client's request defers:
		 * drain() applies those, and ends every run with
		 * hl_w_wake_flush(), which sends them. */
		hl_w_wake_defer_begin(sh, ep < sh->w->seg.h->max_endpoints);
		hl_w_dispatch_pending(sh, dk);
		hl_w_wake_defer_end(sh);
	}
	return rc;
}

int
hl_w_apply_restored(struct hl_worker *w, int del, int only_newer, const uint8_t *key,
                    uint32_t key_len, const uint8_t *meta, uint32_t meta_len, const uint8_t *val,
                    uint32_t val_len, uint64_t rev)
{
	const struct hl_shm_header *h = w->seg.h;
	uint64_t hash = hl__hash(key, key_len);
	struct hl_shard *sh = &w->shards[hl__shard_of_bucket(h, hl__bucket_of(h, hash))];
	int rc = 0;
	hl_w_lock(&sh->mu, HL_W_RANK_SHARD);
	uint32_t idx = hl_w_key_find(w, key, key_len, hash);
	struct hl_shm_key *k = idx ? hl__key(&w->seg, idx) : NULL;
	if (k && only_newer && LD_RLX(&k->rev) >= rev)
		goto out;
	if (del) {
		if (!k)
			goto out;
		uint64_t old = LD_RLX(&k->val) & ~(uint64_t)HL_VAL_DELETED;
		hl__seq_write_begin(&k->seq);
		ST_RLX(&k->val, 0);
		ST_RLX(&k->rev, rev);
		hl__seq_write_end(&k->seq);
		if (old)
			hl__heap_free(&w->heap, old);
		hl_w_maybe_free_key(sh, idx);
		goto out;
	}
	int created;
	idx = hl_w_key_get(w, key, key_len, hash, &created);
	if (!idx) {
		rc = -ENOSPC;
		goto out;
	}
	k = hl__key(&w->seg, idx);
	uint32_t klass;
	uint64_t nb = hl__heap_alloc(&w->heap, sizeof(struct hl_shm_value) + meta_len + val_len,
	                             &klass, &rc);
	if (!nb) {
		if (created)
			hl_w_maybe_free_key(sh, idx);
		goto out;
	}
	struct hl_shm_value hdr = { .rev = rev,
		                    .len = val_len,
		                    .meta_len = (uint16_t)meta_len,
		                    .type = HL_VAL_PUT,
		                    .klass = klass,
		                    .org_ep = UINT32_MAX };
	atomic_init(&hdr.prev, 0);
	struct hl_shm_value *nv = hl__val(&w->seg, nb);
	hl__racy_copy_in(nv, &hdr, sizeof(hdr));
	hl__racy_copy_in(nv + 1, meta, meta_len);
	hl__racy_copy_in((uint8_t *)(nv + 1) + meta_len, val, val_len);
	uint64_t old = LD_RLX(&k->val) & ~(uint64_t)HL_VAL_DELETED;
	hl__seq_write_begin(&k->seq);
	atomic_store_explicit(&k->val, nb, memory_order_release);
	ST_RLX(&k->rev, rev);
	hl__seq_write_end(&k->seq);
	if (old)
		hl__heap_free(&w->heap, old);
out:
	atomic_store_explicit(&w->seg.h->heap_used, hl__heap_used(&w->heap), memory_order_relaxed);
	hl_w_unlock(&sh->mu, HL_W_RANK_SHARD);
	return rc;
}
