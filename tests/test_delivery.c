/* SPDX-License-Identifier: MIT */
/*
 * test_delivery.c: the delivery guarantees, across real processes and a
 * real worker: every observer gets every revision exactly once and in
 * order; unchanged values notify nobody; deletes notify; a reader that
 * falls behind gets LAGGED + RESYNC and ends at the latest value while the
 * others lose nothing.
 */
#include "harness.h"

#include "client_internal.h"
#include "segment.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEY "counter"

static uint64_t
mono_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct shared_progress {
	_Atomic int ready;         /* observer processes done observing */
	_Atomic uint64_t seen[64]; /* per observer process: events taken */
	struct hl_t_fail fail;
};

struct obs_track {
	hl_observer_id id;
	uint64_t last_rev;
	uint32_t count;
};

static struct obs_track *
track_find(struct obs_track *t, int n, hl_observer_id id)
{
	for (int i = 0; i < n; i++)
		if (t[i].id == id)
			return &t[i];
	return NULL;
}

/* Observer process: hold N observers on KEY, expect exactly `expect`
 * events per observer, in increasing revision order, values "v<i>" with i
 * increasing by one. */
static void
observer_proc(const char *name, int idx, int n, int expect, struct shared_progress *sp)
{
	struct hl_client *c = NULL;
	struct hl_open_opts o = { .timeout_ms = hl_t_ms(20000) };
	int rc = hl_open(name, &o, &c);
	if (rc)
		hl_t_child_fail(&sp->fail, "observer %d: open: %s", idx, hl_strerror(rc));
	struct obs_track *t = calloc((size_t)n, sizeof(*t));
	for (int i = 0; i < n; i++) {
		rc = hl_observe(c, KEY, strlen(KEY), 0, &t[i].id);
		if (rc)
			hl_t_child_fail(&sp->fail, "observer %d: observe #%d: %s", idx, i,
			                hl_strerror(rc));
	}
	atomic_fetch_add(&sp->ready, 1);
	uint64_t total = 0, want = (uint64_t)n * (uint64_t)expect;
	while (total < want) {
		struct hl_event ev;
		rc = hl_next(c, &ev, hl_t_ms(30000));
		if (rc)
			hl_t_child_fail(&sp->fail, "observer %d: next after %lu events: %s", idx,
			                (unsigned long)total, hl_strerror(rc));
		if (ev.type != HL_EV_PUT)
			hl_t_child_fail(&sp->fail, "observer %d: unexpected event type %d", idx,
			                ev.type);
		struct obs_track *tr = track_find(t, n, ev.observer);
		if (!tr)
			hl_t_child_fail(&sp->fail, "observer %d: event for unknown observer", idx);
		if (ev.revision <= tr->last_rev)
			hl_t_child_fail(&sp->fail, "observer %d: revision %lu after %lu", idx,
			                (unsigned long)ev.revision, (unsigned long)tr->last_rev);
		char want_v[32];
		snprintf(want_v, sizeof(want_v), "v%u", tr->count + 1);
		if (ev.new_len != strlen(want_v) || memcmp(ev.new_value, want_v, ev.new_len) != 0)
			hl_t_child_fail(&sp->fail, "observer %d: got '%.*s', want %s", idx,
			                (int)ev.new_len, (const char *)ev.new_value, want_v);
		tr->last_rev = ev.revision;
		tr->count++;
		total++;
		atomic_store(&sp->seen[idx], total);
	}
	for (int i = 0; i < n; i++)
		if (t[i].count != (uint32_t)expect)
			hl_t_child_fail(&sp->fail, "observer %d: observer %d got %u events", idx, i,
			                t[i].count);
	/* Nothing more may arrive: no duplicates. */
	struct hl_event ev;
	rc = hl_next(c, &ev, 100);
	if (rc != -ETIMEDOUT)
		hl_t_child_fail(&sp->fail, "observer %d: extra event after all (rc %d)", idx, rc);
	hl_close(c);
	free(t);
	_exit(0);
}

static void
test_every_observer_gets_every_revision_in_order(void **state)
{
	(void)state;
	enum { PROCS = 8, OBSERVERS = 10000, PUBLISHES = 1000 };
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_start(name, "--max-keys", "1024", "--max-observers", "16384",
	                            "--max-endpoints", "16", "--heap", "1048576", "--ev-ring",
	                            "4194304", NULL);
	struct shared_progress *sp = hl_t_shared(sizeof(struct shared_progress));
	pid_t kids[PROCS];
	for (int i = 0; i < PROCS; i++) {
		kids[i] = hl_t_fork();
		assert_true(kids[i] >= 0);
		if (kids[i] == 0)
			observer_proc(name, i, OBSERVERS / PROCS, PUBLISHES, sp);
	}
	for (int waited = 0; atomic_load(&sp->ready) < PROCS && !atomic_load(&sp->fail.failed);
	     waited++) {
		assert_true(waited < hl_t_ms(60000) / 10);
		usleep(10000);
	}
	assert_int_equal(atomic_load(&sp->fail.failed), 0);

	struct hl_client *pub = hl_t_open(name, 0);
	for (int i = 1; i <= PUBLISHES && !atomic_load(&sp->fail.failed); i++) {
		char v[32];
		int n = snprintf(v, sizeof(v), "v%d", i);
		assert_int_equal(hl_publish(pub, KEY, strlen(KEY), v, (size_t)n, "meta", 4), 0);
		/* Flow control so that the test proves delivery, not ring size:
		 * stay within 200 publishes of the slowest observer process. */
		for (int k = 0; k < PROCS; k++) {
			uint64_t need = (uint64_t)(i > 200 ? i - 200 : 0) * (OBSERVERS / PROCS);
			while (atomic_load(&sp->seen[k]) < need && !atomic_load(&sp->fail.failed))
				usleep(200);
		}
	}
	assert_int_equal(hl_flush(pub, hl_t_ms(30000)), 0);
	for (int i = 0; i < PROCS; i++) {
		int st = hl_t_wait_exit(kids[i], hl_t_ms(120000));
		if (st != 0)
			fail_msg("observer process %d: status %d: %s", i, st, sp->fail.why);
	}
	char buf[32];
	size_t len;
	uint64_t rev;
	assert_int_equal(hl_get(pub, KEY, strlen(KEY), buf, sizeof(buf), &len, &rev), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(buf, "v1000", 5);
	struct hl_stats st;
	assert_int_equal(hl_stats(pub, &st), 0);
	assert_int_equal(st.publishes, PUBLISHES);
	assert_int_equal(st.notifications, (uint64_t)PUBLISHES * OBSERVERS);
	assert_int_equal(st.lagged_drops, 0);
	hl_close(pub);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

static void
test_publish_same_value_notifies_nobody(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, hl_t_small);
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	hl_observer_id id;
	assert_int_equal(hl_observe(c, "k", 1, 0, &id), 0);
	assert_int_equal(hl_publish(c, "k", 1, "same", 4, NULL, 0), 0);
	assert_int_equal(hl_publish(c, "k", 1, "same", 4, NULL, 0), 0);
	assert_int_equal(hl_publish(c, "k", 1, "same", 4, "other meta", 10), 0);
	struct hl_event ev;
	assert_int_equal(hl_next(c, &ev, hl_t_ms(5000)), 0);
	assert_int_equal(ev.type, HL_EV_PUT);
	assert_false(ev.has_old);
	assert_int_equal(hl_next(c, &ev, 200), -ETIMEDOUT);
	struct hl_stats st;
	hl_stats(c, &st);
	assert_int_equal(st.publishes, 1);
	assert_int_equal(st.skipped_unchanged, 2);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* "Unchanged" means the same bytes, not a shared beginning: a value that
 * is a prefix of the current one, an empty value, and a longer value that
 * starts with the current one are changes, each applied and notified with
 * the right old and new value; only the exact same bytes are skipped (the
 * second empty value). */
static void
test_publish_of_prefix_empty_or_extension_notifies(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, hl_t_small);
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	hl_observer_id id;
	assert_int_equal(hl_observe(c, "k", 1, 0, &id), 0);
	static const char *const vals[] = { "abc", "ab", "abc", "", "", "abcd", "x" };
	static const int notified[] = { 1, 1, 1, 1, 0, 1, 1 };
	const char *prev = NULL;
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		assert_int_equal(hl_publish(c, "k", 1, vals[i], strlen(vals[i]), NULL, 0), 0);
		struct hl_event ev;
		if (!notified[i]) {
			assert_int_equal(hl_next(c, &ev, 200), -ETIMEDOUT);
			continue;
		}
		assert_int_equal(hl_next(c, &ev, hl_t_ms(5000)), 0);
		fprintf(stderr, "DBG type %d rev %llu lagged %llu\n", (int)ev.type,
		        (unsigned long long)ev.revision, (unsigned long long)ev.lagged);
		assert_int_equal(ev.type, HL_EV_PUT);
		assert_true(ev.has_new);
		assert_int_equal(ev.new_len, strlen(vals[i]));
		assert_memory_equal(ev.new_value, vals[i], ev.new_len);
		assert_int_equal(ev.has_old, prev != NULL);
		if (prev) {
			assert_int_equal(ev.old_len, strlen(prev));
			assert_memory_equal(ev.old_value, prev, ev.old_len);
		}
		prev = vals[i];
		char buf[8];
		size_t len;
		assert_int_equal(hl_get(c, "k", 1, buf, sizeof(buf), &len, NULL), 0);
		assert_int_equal(len, strlen(vals[i]));
		assert_memory_equal(buf, vals[i], len);
	}
	struct hl_stats st;
	hl_stats(c, &st);
	assert_int_equal(st.publishes, 6);
	assert_int_equal(st.skipped_unchanged, 1);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

static void
test_delete_notifies_with_old_value(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, hl_t_small);
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	hl_observer_id id;
	assert_int_equal(hl_observe(c, "gone", 4, 0, &id), 0);
	assert_int_equal(hl_publish(c, "gone", 4, "x1", 2, NULL, 0), 0);
	assert_int_equal(hl_delete(c, "gone", 4), 0);
	assert_int_equal(hl_delete(c, "gone", 4), 0); /* absent: nobody told */
	struct hl_event ev;
	assert_int_equal(hl_next(c, &ev, hl_t_ms(5000)), 0);
	assert_int_equal(ev.type, HL_EV_PUT);
	uint64_t put_rev = ev.revision;
	assert_int_equal(hl_next(c, &ev, hl_t_ms(5000)), 0);
	assert_int_equal(ev.type, HL_EV_DELETE);
	assert_true(ev.revision > put_rev);
	assert_true(ev.has_old);
	assert_int_equal(ev.old_len, 2);
	assert_memory_equal(ev.old_value, "x1", 2);
	assert_false(ev.has_new);
	/* The deleter and the time it asked, like a put's publisher. */
	assert_int_equal(ev.publisher, getpid());
	assert_true(ev.timestamp_ns > 0 && ev.timestamp_ns <= (uint64_t)mono_now_ns());
	assert_int_equal(hl_next(c, &ev, 200), -ETIMEDOUT);
	assert_int_equal(hl_get(c, "gone", 4, NULL, 0, NULL, NULL), -ENOENT);
	/* Observing keeps the key slot; a new publish notifies again. */
	assert_int_equal(hl_publish(c, "gone", 4, "back", 4, NULL, 0), 0);
	assert_int_equal(hl_next(c, &ev, hl_t_ms(5000)), 0);
	assert_int_equal(ev.type, HL_EV_PUT);
	assert_false(ev.has_old);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* hl_open_opts.spin_us: a reader that polls its rings before it sleeps gets
 * what a sleeping one gets: every revision another process publishes, in
 * order, ending at the value hl_get() returns; and a timeout shorter than
 * the spin still ends the call with -ETIMEDOUT. (The spin only changes how
 * fast; bench/ measures that.) */
static void
test_spinning_reader_gets_every_revision_in_order(void **state)
{
	(void)state;
	enum { N = 300 };
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, hl_t_small);
	struct hl_open_opts o = { .flags = HL_OPEN_SYNC, .spin_us = 200000 };
	struct hl_client *c;
	assert_int_equal(hl_open(name, &o, &c), 0);
	hl_observer_id id;
	assert_int_equal(hl_observe(c, "spun", 4, 0, &id), 0);
	struct hl_event ev;
	assert_int_equal(hl_next(c, &ev, 20), -ETIMEDOUT);
	pid_t pub = hl_t_fork();
	assert_true(pub >= 0);
	if (pub == 0) {
		hl_t_child_setup();
		struct hl_client *p = hl_t_open(name, HL_OPEN_SYNC);
		for (int i = 1; i <= N; i++) {
			char v[16];
			snprintf(v, sizeof(v), "s%d", i);
			if (hl_publish(p, "spun", 4, v, strlen(v), NULL, 0) != 0)
				_exit(1);
			usleep(200); /* a pace the reader's ring absorbs */
		}
		hl_close(p);
		_exit(0);
	}
	uint64_t last_rev = 0;
	int got = 0, lagged = 0;
	char last[16] = "";
	while (strcmp(last, "s300") != 0) {
		assert_int_equal(hl_next(c, &ev, hl_t_ms(10000)), 0);
		assert_true(ev.revision > last_rev);
		last_rev = ev.revision;
		if (ev.type == HL_EV_LAGGED) {
			lagged = 1; /* a starved sanitizer run: the resync follows */
			continue;
		}
		assert_true(ev.type == HL_EV_PUT || ev.type == HL_EV_RESYNC);
		assert_true(ev.has_new && ev.new_len < sizeof(last));
		memcpy(last, ev.new_value, ev.new_len);
		last[ev.new_len] = '\0';
		got++;
		if (!lagged) {
			char want[16];
			snprintf(want, sizeof(want), "s%d", got);
			assert_string_equal(last, want);
		}
	}
	int st;
	assert_int_equal(waitpid(pub, &st, 0), pub);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	if (!lagged)
		assert_int_equal(got, N);
	assert_int_equal(hl_next(c, &ev, 50), -ETIMEDOUT);
	char buf[16];
	size_t len;
	assert_int_equal(hl_get(c, "spun", 4, buf, sizeof(buf), &len, NULL), 0);
	assert_int_equal(len, 4);
	assert_memory_equal(buf, "s300", 4);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* A worker whose event rings (64 KiB) hold a few hundred events of KEY
 * and whose history (16 KiB, the smallest) fewer: a burst of 2,000
 * publishes overruns both, so an observer that does not read meanwhile
 * cannot be caught up from the history (that case is
 * tests/test_history.c's). */
static const char *const overrun_args[] = {
	"--max-keys", "1024",    "--max-observers", "1024",  "--max-endpoints", "16",
	"--heap",     "1048576", "--ev-ring",       "65536", "--history",       "16384",
	NULL
};

/* A process that observes and then does not read while 2,000 publishes go
 * by (its ring holds far fewer), while another process reads everything. */
static void
test_slow_observer_lags_then_resyncs_to_latest(void **state)
{
	(void)state;
	enum { PUBLISHES = 2000 };
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, overrun_args);
	struct shared_progress *sp = hl_t_shared(sizeof(struct shared_progress));
	int go[2];
	assert_int_equal(pipe(go), 0);
	pid_t slow = hl_t_fork();
	assert_true(slow >= 0);
	if (slow == 0) {
		struct hl_client *c = NULL;
		if (hl_open(name, NULL, &c))
			hl_t_child_fail(&sp->fail, "slow: open");
		hl_observer_id id;
		if (hl_observe(c, KEY, strlen(KEY), 0, &id))
			hl_t_child_fail(&sp->fail, "slow: observe");
		atomic_fetch_add(&sp->ready, 1);
		char b;
		if (read(go[0], &b, 1) != 1) /* wait until every publish is applied */
			hl_t_child_fail(&sp->fail, "slow: pipe");
		struct hl_event ev;
		uint64_t last = 0;
		int lagged = 0, resynced = 0, rc;
		char final[32] = "";
		while ((rc = hl_next(c, &ev, 500)) == 0) {
			if (ev.revision < last)
				hl_t_child_fail(&sp->fail, "slow: revision went back");
			if (ev.type == HL_EV_LAGGED) {
				lagged = 1;
				if (ev.lagged == 0)
					hl_t_child_fail(&sp->fail, "slow: lagged with count 0");
				continue;
			}
			if (ev.type == HL_EV_RESYNC)
				resynced = 1;
			if (ev.revision <= last)
				hl_t_child_fail(&sp->fail, "slow: duplicate revision %lu",
				                (unsigned long)ev.revision);
			last = ev.revision;
			snprintf(final, sizeof(final), "%.*s", (int)ev.new_len,
			         (const char *)ev.new_value);
		}
		if (!lagged || !resynced)
			hl_t_child_fail(&sp->fail, "slow: lagged %d resynced %d", lagged, resynced);
		char want[32];
		snprintf(want, sizeof(want), "v%d", PUBLISHES);
		if (strcmp(final, want) != 0)
			hl_t_child_fail(&sp->fail, "slow: ended at '%s', want %s", final, want);
		hl_close(c);
		_exit(0);
	}
	pid_t fast = hl_t_fork();
	assert_true(fast >= 0);
	if (fast == 0)
		observer_proc(name, 1, 1, PUBLISHES, sp);
	while (atomic_load(&sp->ready) < 2 && !atomic_load(&sp->fail.failed))
		usleep(1000);
	struct hl_client *pub = hl_t_open(name, 0);
	for (int i = 1; i <= PUBLISHES; i++) {
		char v[32];
		int n = snprintf(v, sizeof(v), "v%d", i);
		assert_int_equal(hl_publish(pub, KEY, strlen(KEY), v, (size_t)n, NULL, 0), 0);
		while (atomic_load(&sp->seen[1]) + 100 < (uint64_t)i &&
		       !atomic_load(&sp->fail.failed))
			usleep(100);
	}
	assert_int_equal(hl_flush(pub, hl_t_ms(30000)), 0);
	assert_int_equal(write(go[1], "g", 1), 1);
	int st = hl_t_wait_exit(fast, hl_t_ms(60000));
	if (st != 0)
		fail_msg("fast observer: %d: %s", st, sp->fail.why);
	st = hl_t_wait_exit(slow, hl_t_ms(60000));
	if (st != 0)
		fail_msg("slow observer: %d: %s", st, sp->fail.why);
	struct hl_stats s;
	hl_stats(pub, &s);
	assert_true(s.lagged_drops > 0);
	hl_close(pub);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* Publish N values "r<round>-<i>" to KEY and wait until all are applied. */
static void
publish_round(struct hl_client *pub, int round, int n)
{
	for (int i = 1; i <= n; i++) {
		char v[32];
		int len = snprintf(v, sizeof(v), "r%d-%d", round, i);
		int rc;
		while ((rc = hl_publish(pub, KEY, strlen(KEY), v, (size_t)len, NULL, 0)) == -EAGAIN)
			usleep(100);
		assert_int_equal(rc, 0);
	}
	assert_int_equal(hl_flush(pub, hl_t_ms(30000)), 0);
}

/* Three losses the history cannot cover, one after the other, for one
 * prefix observer (which has no RESYNC: after a LAGGED it goes on from
 * the history's oldest record): each LAGGED counts only the events dropped
 * since the one before, never an earlier loss again (the client remembers
 * which of its observer's drops it reported). */
static void
test_each_loss_past_the_history_counts_only_its_own_drops(void **state)
{
	(void)state;
	enum { PER_ROUND = 2000 };
	const char *name = hl_t_name();
	/* Most of each round is lost (overrun_args). */
	pid_t w = hl_t_worker_startv(name, overrun_args);
	struct hl_client *c = hl_t_open(name, 0), *pub = hl_t_open(name, 0);
	struct hl_observe_opts po = { .flags = HL_OBSERVE_PREFIX };
	hl_observer_id id;
	assert_int_equal(hl_observe_with(c, "count", 5, &po, &id), 0);
	uint64_t rev = 0, dropped = 0;
	for (int round = 1; round <= 3; round++) {
		publish_round(pub, round, PER_ROUND);
		struct hl_stats st;
		assert_int_equal(hl_stats(pub, &st), 0);
		uint64_t drops = st.lagged_drops - dropped, lagged = 0, nlagged = 0;
		dropped = st.lagged_drops;
		struct hl_event ev;
		char final[32] = "";
		int rc;
		while ((rc = hl_next(c, &ev, hl_t_ms(300))) == 0) {
			assert_true(ev.revision >= rev);
			rev = ev.revision;
			if (ev.type == HL_EV_LAGGED) {
				lagged += ev.lagged;
				nlagged++;
			} else {
				assert_int_equal(ev.type, HL_EV_PUT);
				snprintf(final, sizeof(final), "%.*s", (int)ev.new_len,
				         (const char *)ev.new_value);
			}
		}
		assert_int_equal(rc, -ETIMEDOUT);
		char want[32];
		snprintf(want, sizeof(want), "r%d-%d", round, PER_ROUND);
		assert_string_equal(final, want);
		/* Lost, and said so; a loss with no new drop (one only the
		 * history had) counts 1. */
		if (drops == 0 || nlagged == 0 || lagged < drops || lagged > drops + nlagged)
			fail_msg("round %d: %llu LAGGED events counted %llu lost, the worker "
			         "dropped %llu",
			         round, (unsigned long long)nlagged, (unsigned long long)lagged,
			         (unsigned long long)drops);
	}
	hl_close(pub);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

static void
test_unobserve_of_another_process_is_eperm(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, hl_t_small);
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t kid = hl_t_fork();
	assert_true(kid >= 0);
	if (kid == 0) {
		struct hl_client *c = NULL;
		hl_observer_id id = 0;
		if (hl_open(name, NULL, &c) || hl_observe(c, "mine", 4, 0, &id))
			_exit(1);
		if (write(p[1], &id, sizeof(id)) != sizeof(id))
			_exit(1);
		pause();
		_exit(0);
	}
	hl_observer_id theirs = 0;
	assert_int_equal(read(p[0], &theirs, sizeof(theirs)), sizeof(theirs));
	struct hl_client *c = hl_t_open(name, 0);
	assert_int_equal(hl_unobserve(c, theirs), -EPERM);
	assert_int_equal(hl_unobserve(c, theirs ^ (1ull << 40)), -ENOENT);
	hl_t_kill9(kid);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* hl_unobserve() of an id the client holds returns without the worker
 * (issue 5, scenario 5): with the worker stopped it still returns 0 at
 * once, where a round trip would time out; from then on hl_next() gives
 * nothing for that observer, even for a change the worker dispatches to it
 * before it reaches the request; and once the worker runs, hl_flush() says
 * the observer is gone from the table. A client opened HL_OPEN_SYNC keeps
 * the round trip. */
static void
test_unobserve_of_own_observer_takes_effect_without_the_worker(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, hl_t_small);
	struct hl_client *c = NULL, *sync = NULL, *pub = hl_t_open(name, 0);
	struct hl_open_opts o = { .timeout_ms = 300 };
	assert_int_equal(hl_open(name, &o, &c), 0);
	o.flags = HL_OPEN_SYNC;
	assert_int_equal(hl_open(name, &o, &sync), 0);
	hl_observer_id gone, kept, sync_id;
	assert_int_equal(hl_observe(c, "k", 1, 0, &gone), 0);
	assert_int_equal(hl_observe(c, "k", 1, 0, &kept), 0);
	assert_int_equal(hl_observe(sync, "k", 1, 0, &sync_id), 0);

	hl_t_stop_all(w);
	/* Queued before the unobserve, in another endpoint's ring: the worker
	 * is free to dispatch it to both of c's observers first. */
	assert_int_equal(hl_publish(pub, "k", 1, "v1", 2, NULL, 0), 0);
	assert_int_equal(hl_unobserve(c, gone), 0);
	/* A round trip the stopped worker cannot answer: withdrawn, a
	 * definite failure; the observer stays (the failure contract). */
	assert_int_equal(hl_unobserve(sync, sync_id), -EAGAIN);
	assert_int_equal(hl_unobserve(c, gone), -EAGAIN); /* no longer ours: asks */
	assert_int_equal(kill(w, SIGCONT), 0);

	assert_int_equal(hl_flush(c, hl_t_ms(5000)), 0);
	struct hl_event ev;
	assert_int_equal(hl_next(c, &ev, hl_t_ms(5000)), 0);
	assert_int_equal(ev.observer, kept);
	assert_int_equal(hl_next(c, &ev, 200), -ETIMEDOUT);
	struct hl_observer_info info[4];
	int n = hl_inspect_key(c, "k", 1, info, 4);
	assert_true(n >= 1);
	int saw_kept = 0, saw_sync = 0;
	for (int i = 0; i < n && i < 4; i++) {
		assert_true(info[i].id != gone);
		saw_kept |= info[i].id == kept;
		saw_sync |= info[i].id == sync_id;
	}
	assert_true(saw_kept);
	assert_true(saw_sync); /* its withdrawn unobserve was never applied */
	assert_int_equal(hl_unobserve(sync, sync_id), 0);
	/* The unknown id is answered by the worker, after its queued twin. */
	assert_int_equal(hl_unobserve(c, gone), -ENOENT);

	hl_close(sync);
	hl_close(c);
	hl_close(pub);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* Observers asleep in hl_next() are woken by the worker when their event
 * is written, not by the cap of their wait (1 s): each of three endpoints
 * (in one group of 32, so one futex word and a bit each) takes every event
 * within a timeout shorter than that cap. */
#define WAKE_OBS    3
#define WAKE_ROUNDS 10
#define WAKE_MS     700 /* below hl_next()'s 1,000 ms cap: only a wake-up is in time */

struct wake_obs {
	struct hl_client *c;
	_Atomic int got, err;
};

static void *
wake_obs_main(void *arg)
{
	struct wake_obs *o = arg;
	for (int i = 0; i < WAKE_ROUNDS; i++) {
		struct hl_event ev;
		int rc = hl_next(o->c, &ev, WAKE_MS);
		if (rc != 0) {
			o->err = rc;
			break;
		}
		o->got++;
	}
	return NULL;
}

static void
test_observers_asleep_are_woken_by_the_worker_not_by_their_wait_cap(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, hl_t_small);
	struct hl_client *pub = hl_t_open(name, HL_OPEN_SYNC);
	struct wake_obs o[WAKE_OBS] = { 0 };
	pthread_t t[WAKE_OBS];
	for (int i = 0; i < WAKE_OBS; i++) {
		hl_observer_id id;
		o[i].c = hl_t_open(name, HL_OPEN_SYNC);
		assert_int_equal(hl_observe(o[i].c, "wake", 4, 0, &id), 0);
	}
	for (int i = 0; i < WAKE_OBS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, wake_obs_main, &o[i]), 0);
	for (int r = 0; r < WAKE_ROUNDS; r++) {
		/* Publish only once every observer sleeps (epc.sleeping): the
		 * event can then reach it only through a wake-up. */
		for (int i = 0; i < WAKE_OBS; i++) {
			uint32_t ep;
			struct hl_seg *s = hl__client_seg(o[i].c, &ep);
			for (int n = 0; !atomic_load(&hl__epc(s, ep)->sleeping) && o[i].err == 0;
			     n++) {
				assert_true(n < hl_t_ms(10000));
				usleep(1000);
			}
		}
		char v[16];
		snprintf(v, sizeof(v), "%d", r);
		assert_int_equal(hl_publish(pub, "wake", 4, v, strlen(v), NULL, 0), 0);
		for (int i = 0; i < WAKE_OBS; i++)
			for (int n = 0; o[i].got <= r && o[i].err == 0; n++) {
				assert_true(n < hl_t_ms(10000));
				usleep(1000);
			}
	}
	for (int i = 0; i < WAKE_OBS; i++) {
		pthread_join(t[i], NULL);
		if (o[i].err)
			fail_msg("observer %d: %s after %d events", i, hl_strerror(o[i].err),
			         o[i].got);
		assert_int_equal(o[i].got, WAKE_ROUNDS);
		hl_close(o[i].c);
	}
	hl_close(pub);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_publish_same_value_notifies_nobody),
		cmocka_unit_test(test_publish_of_prefix_empty_or_extension_notifies),
		cmocka_unit_test(test_spinning_reader_gets_every_revision_in_order),
		cmocka_unit_test(test_delete_notifies_with_old_value),
		cmocka_unit_test(test_unobserve_of_another_process_is_eperm),
		cmocka_unit_test(test_unobserve_of_own_observer_takes_effect_without_the_worker),
		cmocka_unit_test(test_slow_observer_lags_then_resyncs_to_latest),
		cmocka_unit_test(test_each_loss_past_the_history_counts_only_its_own_drops),
		cmocka_unit_test(test_every_observer_gets_every_revision_in_order),
		cmocka_unit_test(
		        test_observers_asleep_are_woken_by_the_worker_not_by_their_wait_cap),
	};
	return cmocka_run_group_tests_name("delivery", tests, NULL, NULL);
}
