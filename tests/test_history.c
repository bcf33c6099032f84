/* SPDX-License-Identifier: MIT */
/*
 * test_history.c: the history of changes (issue 14, items 3 and 4) against
 * a real worker with 4 shards: resuming an exact or prefix observer from a
 * past revision gives exactly the changes after it, then the live ones,
 * with no gap or duplicate at the seam even while publishes run; a history
 * that no longer reaches gives HL_ECOMPACTED with the oldest revision; a
 * burst that overflows an observer's event ring loses nothing while the
 * history holds it, and gives LAGGED + RESYNC only past it; a resume
 * works across a worker SIGKILL and restart.
 */
#include "harness.h"

#include "util.h" /* hl__hash(): which shard a key is in */

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PFX "session/42/"
#define PL  (sizeof(PFX) - 1)

struct fx {
	const char *name;
	pid_t worker;
	struct hl_client *c; /* SYNC: a publish is applied when it returns */
};

/* max-value 64: the smallest history is then 2 KiB a shard. */
static const char *const caps[] = {
	"--max-keys", "1024",   "--max-observers", "256",         "--max-endpoints",
	"8",          "--heap", "1048576",         "--max-value", "64",
	"--ev-ring",  "4096",   "--shards",        "4",           "--telemetry-interval",
	"0",          NULL
};

static int
start(void **state, const char *history)
{
	struct fx *f = calloc(1, sizeof(*f));
	f->name = hl_t_name();
	const char *args[32];
	int n = 0;
	for (; caps[n]; n++)
		args[n] = caps[n];
	if (history) {
		args[n++] = "--history";
		args[n++] = history;
	}
	args[n] = NULL;
	f->worker = hl_t_worker_startv(f->name, args);
	f->c = hl_t_open(f->name, HL_OPEN_SYNC);
	*state = f;
	return 0;
}

static int
setup(void **state)
{
	return start(state, "1M");
}

/* The smallest history these capacities allow (2 KiB a shard). */
static int
setup_small(void **state)
{
	return start(state, "2048");
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	hl_close(f->c);
	assert_int_equal(hl_t_worker_stop(f->worker), 0);
	hl_t_unlink(f->name);
	free(f);
	return 0;
}

/* Publish V to K; returns the revision it made (read back: SYNC). */
static uint64_t
put(struct hl_client *c, const char *k, const char *v)
{
	assert_int_equal(hl_publish(c, k, strlen(k), v, strlen(v), NULL, 0), 0);
	char buf[128];
	size_t len;
	uint64_t rev = 0;
	assert_int_equal(hl_get(c, k, strlen(k), buf, sizeof(buf), &len, &rev), 0);
	return rev;
}

static uint64_t
del(struct hl_client *c, const char *k)
{
	assert_int_equal(hl_delete(c, k, strlen(k)), 0);
	return hl_t_stats(c).revision;
}

static hl_observer_id
resume(struct hl_client *c, const char *k, uint32_t flags, uint64_t from)
{
	struct hl_observe_opts o = { .flags = flags | HL_OBSERVE_FROM_REV, .start_rev = from };
	hl_observer_id id = 0;
	uint64_t oldest = 0;
	int rc = hl_observe_from(c, k, strlen(k), &o, &id, &oldest);
	if (rc)
		fail_msg("resume %s from %llu: %s (oldest %llu)", k, (unsigned long long)from,
		         hl_err_name(rc), (unsigned long long)oldest);
	return id;
}

/* A copy of an event whose key and value outlive the next hl_next(). */
struct ev {
	int type;
	hl_observer_id obs;
	uint64_t rev;
	char key[64];
	char val[72];
	int has_old, has_new;
};

static int
take_all(struct hl_client *c, struct ev *evs, int cap, int timeout_ms)
{
	int n = 0;
	struct hl_event e;
	while (hl_next(c, &e, timeout_ms) == 0) {
		assert_true(n < cap);
		assert_true(e.key_len < sizeof(evs[n].key));
		evs[n] = (struct ev){ .type = (int)e.type,
			              .obs = e.observer,
			              .rev = e.revision,
			              .has_old = e.has_old,
			              .has_new = e.has_new };
		memcpy(evs[n].key, e.key, e.key_len);
		if (e.has_new) {
			assert_true(e.new_len < sizeof(evs[n].val));
			memcpy(evs[n].val, e.new_value, e.new_len);
		}
		n++;
	}
	return n;
}

static uint32_t
shard_of(const char *key)
{
	/* 1024 keys: 1024 buckets; bucket b is shard b % 4 (lib/segment.h). */
	return (uint32_t)(hl__hash(key, strlen(key)) & 1023u) % 4u;
}

/* ---- resume ---- */

/* Ten changes of K (and of other keys); an observer resumed from the
 * fourth gets exactly the six after it, in order, without old values,
 * then a live one, and nothing of the other keys. */
static void
test_resume_from_r_gets_exactly_the_changes_after_r_then_live_ones(void **state)
{
	struct fx *f = *state;
	uint64_t rev[12] = { 0 };
	char v[16];
	for (int i = 1; i <= 10; i++) {
		snprintf(v, sizeof(v), "v%d", i);
		/* a delete in the middle */
		rev[i] = i == 7 ? del(f->c, "k") : put(f->c, "k", v);
		put(f->c, "other", v);
	}
	struct hl_client *o = hl_t_open(f->name, 0);
	hl_observer_id id = resume(o, "k", 0, rev[4]);
	struct ev evs[32];
	int n = take_all(o, evs, 32, 0);
	assert_int_equal(n, 6);
	for (int i = 0; i < n; i++) {
		assert_int_equal(evs[i].obs, id);
		assert_string_equal(evs[i].key, "k");
		assert_int_equal(evs[i].rev, rev[5 + i]);
		assert_false(evs[i].has_old); /* history keeps no old value */
		assert_int_equal(evs[i].type, 5 + i == 7 ? HL_EV_DELETE : HL_EV_PUT);
		if (5 + i != 7) {
			snprintf(v, sizeof(v), "v%d", 5 + i);
			assert_string_equal(evs[i].val, v);
		}
	}
	rev[11] = put(f->c, "k", "live");
	n = take_all(o, evs, 32, hl_t_ms(2000));
	assert_int_equal(n, 1);
	assert_int_equal(evs[0].rev, rev[11]);
	assert_string_equal(evs[0].val, "live");
	assert_true(evs[0].has_old); /* a live event has it */
	/* From the current revision: live changes only. */
	hl_observer_id id2 = resume(o, "k", 0, rev[11]);
	assert_int_equal(take_all(o, evs, 32, 0), 0);
	put(f->c, "k", "later");
	n = take_all(o, evs, 32, hl_t_ms(2000));
	assert_int_equal(n, 2);
	assert_true(evs[0].obs != evs[1].obs);
	assert_true(evs[0].obs == id2 || evs[1].obs == id2);
	hl_close(o);
}

/* A prefix observer resumed from R gets every change after R of every key
 * under the prefix, whatever shard the key is in, per key in order, then
 * live changes, including keys created after the resume. */
static void
test_prefix_resume_gets_every_key_after_r_across_shards(void **state)
{
	struct fx *f = *state;
	char keys[8][32];
	uint32_t shards_seen = 0;
	for (int i = 0; i < 8; i++) {
		snprintf(keys[i], sizeof(keys[i]), PFX "k%d", i);
		shards_seen |= 1u << shard_of(keys[i]);
	}
	assert_true(__builtin_popcount(shards_seen) >= 3);
	uint64_t r = 0;
	uint64_t revs[8][4];
	for (int round = 0; round < 4; round++)
		for (int i = 0; i < 8; i++) {
			char v[16];
			snprintf(v, sizeof(v), "r%d", round);
			revs[i][round] = put(f->c, keys[i], v);
			put(f->c, "elsewhere", v);
			if (round == 1 && i == 7)
				r = revs[i][round]; /* resume after round 1 */
		}
	struct hl_client *o = hl_t_open(f->name, 0);
	hl_observer_id id = resume(o, PFX, HL_OBSERVE_PREFIX, r);
	struct ev evs[64];
	int n = take_all(o, evs, 64, 0);
	assert_int_equal(n, 16); /* rounds 2 and 3 of 8 keys */
	for (int i = 0; i < 8; i++) {
		int seen = 0;
		uint64_t last = 0;
		for (int j = 0; j < n; j++) {
			assert_int_equal(evs[j].obs, id);
			if (strcmp(evs[j].key, keys[i]) != 0)
				continue;
			assert_true(evs[j].rev > last);
			last = evs[j].rev;
			assert_int_equal(evs[j].rev, revs[i][2 + seen]);
			seen++;
		}
		assert_int_equal(seen, 2);
	}
	put(f->c, PFX "new", "x");
	put(f->c, keys[0], "live");
	n = take_all(o, evs, 64, hl_t_ms(2000));
	assert_int_equal(n, 2);
	hl_close(o);
}

/* The seam under load: a publisher changes K and prefix keys without a
 * pause (each value a counter); observers resumed at a revision read in
 * the middle of it get every value after that revision exactly once, in
 * order, across the history/live seam. */
struct seam_shared {
	_Atomic int stop;
	_Atomic long published;
	struct hl_t_fail fail;
};

static void
publisher(const char *name, struct seam_shared *sh)
{
	struct hl_client *c = NULL;
	if (hl_open(name, NULL, &c))
		hl_t_child_fail(&sh->fail, "publisher: open");
	for (long i = 1; !atomic_load(&sh->stop); i++) {
		char v[32];
		int len = snprintf(v, sizeof(v), "%ld", i);
		const char *k = (i & 1) ? "seam" : PFX "seam";
		if (hl_publish(c, k, strlen(k), v, (size_t)len, NULL, 0) != 0)
			hl_t_child_fail(&sh->fail, "publisher: publish %ld", i);
		atomic_store(&sh->published, i);
	}
	hl_flush(c, 5000);
	hl_close(c);
	_exit(0);
}

static long
value_of(const struct hl_event *e)
{
	char b[32];
	size_t n = e->new_len < sizeof(b) - 1 ? e->new_len : sizeof(b) - 1;
	memcpy(b, e->new_value, n);
	b[n] = 0;
	return atol(b);
}

static void
test_resume_seam_with_concurrent_publishes_has_no_gap_or_duplicate(void **state)
{
	struct fx *f = *state;
	struct seam_shared *sh = hl_t_shared(sizeof(*sh));
	pid_t p = hl_t_fork();
	assert_true(p >= 0);
	if (p == 0)
		publisher(f->name, sh);
	while (atomic_load(&sh->published) < 2000 && !atomic_load(&sh->fail.failed))
		usleep(1000);
	/* Where to resume: each key's value and revision now (the keys are
	 * in different shards, which apply in no common order: a revision
	 * orders values of one key only). */
	char b[32];
	size_t len;
	uint64_t r, rp;
	assert_int_equal(hl_get(f->c, "seam", 4, b, sizeof(b) - 1, &len, &r), 0);
	b[len] = 0;
	long from = atol(b);
	assert_int_equal(hl_get(f->c, PFX "seam", PL + 4, b, sizeof(b) - 1, &len, &rp), 0);
	b[len] = 0;
	long from_p = atol(b);
	struct hl_client *o = hl_t_open(f->name, 0);
	hl_observer_id exact = resume(o, "seam", 0, r);
	hl_observer_id pfx = resume(o, PFX, HL_OBSERVE_PREFIX, rp);
	long want_exact = from + 2, want_pfx = from_p + 2;
	long stop_at = (from > from_p ? from : from_p) + 6000;
	struct hl_event e;
	while (want_exact <= stop_at || want_pfx <= stop_at) {
		int rc = hl_next(o, &e, hl_t_ms(10000));
		if (rc)
			fail_msg("hl_next: %s (exact wants %ld, prefix %ld)", hl_err_name(rc),
			         want_exact, want_pfx);
		assert_int_equal(e.type, HL_EV_PUT); /* no LAGGED: the history holds it */
		long v = value_of(&e);
		if (e.observer == exact) {
			if (v != want_exact)
				fail_msg("exact: got %ld, want %ld", v, want_exact);
			want_exact += 2;
		} else {
			assert_int_equal(e.observer, pfx);
			if (v != want_pfx)
				fail_msg("prefix: got %ld, want %ld (from %ld)", v, want_pfx,
				         from_p);
			want_pfx += 2;
		}
	}
	atomic_store(&sh->stop, 1);
	assert_int_equal(hl_t_wait_exit(p, hl_t_ms(30000)), 0);
	assert_false(atomic_load(&sh->fail.failed));
	hl_close(o);
}

/* ---- compacted ---- */

/* Past the history: HL_ECOMPACTED, no observer, and the oldest revision it
 * still reaches; resuming from that one works and starts right after it. */
static void
test_compacted_answer_carries_the_oldest_revision(void **state)
{
	struct fx *f = *state;
	uint64_t first = put(f->c, "k", "first");
	for (int i = 0; i < 400; i++) {
		char v[16];
		snprintf(v, sizeof(v), "v%d", i);
		put(f->c, "k", v);
	}
	struct hl_client *o = hl_t_open(f->name, 0);
	uint64_t obs_before = hl_t_stats(f->c).observers;
	struct hl_observe_opts opts = { .flags = HL_OBSERVE_FROM_REV, .start_rev = first };
	hl_observer_id id = 7;
	uint64_t oldest = 0;
	assert_int_equal(hl_observe_from(o, "k", 1, &opts, &id, &oldest), HL_ECOMPACTED);
	assert_int_equal(id, 7); /* untouched */
	assert_true(oldest > first);
	assert_true(strstr(hl_strerror(HL_ECOMPACTED), "compacted") != NULL);
	assert_string_equal(hl_err_name(HL_ECOMPACTED), "HL_ECOMPACTED");
	/* The same through hl_observe_with(), and for a prefix. */
	assert_int_equal(hl_observe_with(o, "k", 1, &opts, &id), HL_ECOMPACTED);
	opts.flags |= HL_OBSERVE_PREFIX;
	uint64_t oldest_p = 0;
	assert_int_equal(hl_observe_from(o, "k", 1, &opts, &id, &oldest_p), HL_ECOMPACTED);
	assert_true(oldest_p >= oldest);
	hl_flush(o, hl_t_ms(5000));
	assert_int_equal(hl_t_stats(f->c).observers, obs_before);
	/* Resume from the oldest: accepted, and every change after it. */
	opts = (struct hl_observe_opts){ .flags = HL_OBSERVE_FROM_REV, .start_rev = oldest };
	assert_int_equal(hl_observe_from(o, "k", 1, &opts, &id, NULL), 0);
	struct hl_event e;
	uint64_t last = oldest;
	int n = 0;
	while (hl_next(o, &e, 0) == 0) {
		assert_int_equal(e.type, HL_EV_PUT);
		assert_true(e.revision > last);
		if (n == 0)
			assert_true(e.revision <= oldest + 1);
		last = e.revision;
		n++;
	}
	assert_true(n > 0);
	assert_int_equal(last, hl_t_stats(f->c).revision);
	hl_close(o);
}

static void
test_resume_arguments_are_checked(void **state)
{
	struct fx *f = *state;
	hl_observer_id id;
	assert_int_equal(hl_observe(f->c, "k", 1, HL_OBSERVE_FROM_REV, &id), -EINVAL);
	struct hl_observe_opts o = { .start_rev = 5 }; /* no FROM_REV */
	assert_int_equal(hl_observe_with(f->c, "k", 1, &o, &id), -EINVAL);
	o = (struct hl_observe_opts){ .flags = HL_OBSERVE_FROM_REV, .reserved = { 1 } };
	assert_int_equal(hl_observe_with(f->c, "k", 1, &o, &id), -EINVAL);
	/* A start in the future: the changes after it. */
	uint64_t now = put(f->c, "k", "a");
	o = (struct hl_observe_opts){ .flags = HL_OBSERVE_FROM_REV, .start_rev = now + 1 };
	assert_int_equal(hl_observe_with(f->c, "k", 1, &o, &id), 0);
	uint64_t r2 = put(f->c, "k", "b"); /* now + 1: not delivered */
	uint64_t r3 = put(f->c, "k", "c");
	struct hl_event e;
	assert_int_equal(hl_next(f->c, &e, hl_t_ms(2000)), 0);
	assert_int_equal(e.revision, r2 > now + 1 ? r2 : r3);
}

/* ---- lossless catch-up ---- */

/* An observer that does not read while 3,000 changes go by (its 4 KiB ring
 * holds a few dozen) gets every one of them, in order, and no LAGGED: the
 * history (1 MiB a shard) still holds them. An exact observer and a prefix
 * observer, on keys of several shards. */
static void
test_burst_overflowing_the_ring_loses_nothing_while_history_covers_it(void **state)
{
	struct fx *f = *state;
	struct hl_client *o = hl_t_open(f->name, 0);
	hl_observer_id ex, px;
	assert_int_equal(hl_observe(o, "burst", 5, 0, &ex), 0);
	struct hl_observe_opts po = { .flags = HL_OBSERVE_PREFIX };
	assert_int_equal(hl_observe_with(o, PFX, PL, &po, &px), 0);
	struct hl_client *p = hl_t_open(f->name, 0); /* asynchronous: a burst */
	enum { N = 3000 };
	for (int i = 1; i <= N; i++) {
		char v[16], k[32];
		int len = snprintf(v, sizeof(v), "%d", i);
		assert_int_equal(hl_publish(p, "burst", 5, v, (size_t)len, NULL, 0), 0);
		snprintf(k, sizeof(k), PFX "%d", i % 8);
		assert_int_equal(hl_publish(p, k, strlen(k), v, (size_t)len, NULL, 0), 0);
	}
	assert_int_equal(hl_flush(p, hl_t_ms(30000)), 0);
	assert_true(hl_t_stats(p).lagged_drops > 0); /* the rings did overflow */
	long want_ex = 1, want_px[8];
	for (int i = 0; i < 8; i++)
		want_px[i] = i ? i : 8;
	struct hl_event e;
	while (want_ex <= N) {
		int rc = hl_next(o, &e, hl_t_ms(5000));
		if (rc)
			fail_msg("hl_next: %s at %ld", hl_err_name(rc), want_ex);
		if (e.type != HL_EV_PUT)
			fail_msg("event type %d (lagged %llu) at %ld", (int)e.type,
			         (unsigned long long)e.lagged, want_ex);
		long v = value_of(&e);
		if (e.observer == ex) {
			assert_int_equal(v, want_ex);
			want_ex++;
		} else {
			assert_int_equal(e.observer, px);
			int k = (int)(v % 8);
			assert_int_equal(v, want_px[k]);
			want_px[k] += 8;
		}
	}
	while (hl_next(o, &e, 0) == 0) {
		assert_int_equal(e.type, HL_EV_PUT);
		assert_int_equal(e.observer, px);
		long v = value_of(&e);
		assert_int_equal(v, want_px[v % 8]);
		want_px[v % 8] += 8;
	}
	for (int i = 0; i < 8; i++)
		assert_true(want_px[i] > N);
	hl_close(p);
	hl_close(o);
}

/* Past the history (2 KiB a shard): the exact observer gets LAGGED, then
 * RESYNC with the latest value, never a duplicate; the prefix observer a
 * LAGGED. What it got and what LAGGED counted cover every change. */
static void
test_burst_past_the_history_gives_lagged_and_resync(void **state)
{
	struct fx *f = *state;
	struct hl_client *o = hl_t_open(f->name, 0);
	hl_observer_id ex, px;
	assert_int_equal(hl_observe(o, "burst", 5, 0, &ex), 0);
	struct hl_observe_opts po = { .flags = HL_OBSERVE_PREFIX };
	assert_int_equal(hl_observe_with(o, PFX, PL, &po, &px), 0);
	enum { N = 1000 };
	for (int i = 1; i <= N; i++) {
		char v[16], k[32];
		int len = snprintf(v, sizeof(v), "%d", i);
		assert_int_equal(hl_publish(f->c, "burst", 5, v, (size_t)len, NULL, 0), 0);
		snprintf(k, sizeof(k), PFX "%d", i % 8);
		assert_int_equal(hl_publish(f->c, k, strlen(k), v, (size_t)len, NULL, 0), 0);
	}
	struct hl_event e;
	long got_ex = 0, lost_ex = 0, got_px = 0, lost_px = 0, resyncs = 0;
	uint64_t last_ex = 0;
	int want_resync = 0;
	long final = 0;
	while (hl_next(o, &e, 0) == 0) {
		if (want_resync) {
			assert_int_equal(e.type, HL_EV_RESYNC);
			assert_int_equal(e.observer, ex);
		}
		want_resync = e.type == HL_EV_LAGGED && e.observer == ex;
		if (e.observer == ex) {
			if (e.type == HL_EV_LAGGED) {
				lost_ex += (long)e.lagged;
				continue;
			}
			assert_true(e.revision > last_ex);
			last_ex = e.revision;
			final = value_of(&e);
			got_ex++;
			resyncs += e.type == HL_EV_RESYNC;
		} else {
			assert_int_equal(e.observer, px);
			if (e.type == HL_EV_LAGGED)
				lost_px += (long)e.lagged;
			else
				got_px++;
		}
	}
	assert_false(want_resync);
	assert_true(lost_ex > 0 && resyncs > 0);
	assert_int_equal(final, N);
	assert_true(got_ex - resyncs + lost_ex >= N);
	assert_true(lost_px > 0);
	assert_true(got_px + lost_px >= N);
	hl_close(o);
}

/* ---- restarts ---- */

/* Changes before and after a worker SIGKILL and restart are all in the
 * history: an observer resumed after it from a revision before the kill
 * gets every one of them. */
static void
test_resume_across_a_worker_sigkill_restart(void **state)
{
	struct fx *f = *state;
	uint64_t r0 = put(f->c, "k", "before0");
	put(f->c, "k", "before1");
	put(f->c, PFX "a", "before2");
	hl_close(f->c);
	hl_t_kill9(f->worker);
	const char *args[32];
	int n = 0;
	for (; caps[n]; n++)
		args[n] = caps[n];
	args[n] = NULL;
	f->worker = hl_t_worker_startv(f->name, args);
	f->c = hl_t_open(f->name, HL_OPEN_SYNC);
	put(f->c, "k", "after0");
	put(f->c, PFX "b", "after1");
	struct hl_client *o = hl_t_open(f->name, 0);
	hl_observer_id ex = resume(o, "k", 0, r0);
	hl_observer_id px = resume(o, PFX, HL_OBSERVE_PREFIX, r0);
	struct ev evs[16];
	int m = take_all(o, evs, 16, 0);
	assert_int_equal(m, 4);
	/* In order per observer and key (a prefix's two keys may be in
	 * shards that the library reads in either order). */
	const char *want_ex[] = { "before1", "after0" };
	int ie = 0, ip = 0;
	for (int i = 0; i < m; i++) {
		if (evs[i].obs == ex) {
			assert_string_equal(evs[i].val, want_ex[ie++]);
		} else if (evs[i].obs == px) {
			assert_string_equal(evs[i].val, strcmp(evs[i].key, PFX "a") == 0
			                                        ? "before2"
			                                        : "after1");
			ip++;
		} else {
			fail_msg("event of an unknown observer");
		}
	}
	assert_int_equal(ie, 2);
	assert_int_equal(ip, 2);
	hl_close(o);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn)       cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define T_SMALL(fn) cmocka_unit_test_setup_teardown(fn, setup_small, teardown)
		T(test_resume_from_r_gets_exactly_the_changes_after_r_then_live_ones),
		T(test_prefix_resume_gets_every_key_after_r_across_shards),
		T(test_resume_seam_with_concurrent_publishes_has_no_gap_or_duplicate),
		T_SMALL(test_compacted_answer_carries_the_oldest_revision),
		T(test_resume_arguments_are_checked),
		T(test_burst_overflowing_the_ring_loses_nothing_while_history_covers_it),
		T_SMALL(test_burst_past_the_history_gives_lagged_and_resync),
		T(test_resume_across_a_worker_sigkill_restart),
#undef T
#undef T_SMALL
	};
	return cmocka_run_group_tests_name("history", tests, NULL, NULL);
}
