/* SPDX-License-Identifier: MIT */
/*
 * test_contract.c: the failure contract and exactly-once (heirloom.h,
 * "Outcomes"; docs/architecture.md, "The failure contract").
 *
 *  - A call that returns a definite error changed nothing, through any
 *    worker restart: no worker (HL_OPEN_NOWAIT), a stopped worker (short
 *    timeout), a full ring.
 *  - A request a worker took but did not answer in time is -ETIMEDOUT and
 *    is applied exactly once; an observe in that state leaves no observer
 *    that nobody holds.
 *  - A request in flight when the worker dies (--crash-at-step at every
 *    step of its path, and of the next worker's recovery) is applied
 *    exactly once, never over a newer write of another client.
 *  - Withdrawing races taking without loss or double application.
 *  - LAGGED is always followed by RESYNC, and both come before any event
 *    written after the drop.
 */
#include "harness.h"

#include "client_internal.h"
#include "layout.h"
#include "segment.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct hl_client *
open_with(const char *name, uint32_t flags, int timeout_ms)
{
	struct hl_open_opts o = { .flags = flags, .timeout_ms = timeout_ms };
	struct hl_client *c = NULL;
	int rc = hl_open(name, &o, &c);
	if (rc)
		fail_msg("hl_open(%s): %s", name, hl_strerror(rc));
	return c;
}

static int
count_observers(struct hl_client *c, const char *key)
{
	struct hl_observer_info info[64];
	int n = hl_inspect_key(c, key, strlen(key), info, 64);
	return n == -ENOENT ? 0 : n;
}

static int
get_str(struct hl_client *c, const char *key, char *buf, size_t cap, uint64_t *rev)
{
	size_t len = 0;
	int rc = hl_get(c, key, strlen(key), buf, cap - 1, &len, rev);
	if (rc == 0)
		buf[len < cap - 1 ? len : cap - 1] = 0;
	return rc;
}

/* The table's state that a failed call must not change. */
struct snap {
	uint64_t publishes, deletes, observers_added, observers, revision;
};

static void
snap_take(struct hl_client *c, struct snap *s)
{
	struct hl_stats st;
	assert_int_equal(hl_stats(c, &st), 0);
	*s = (struct snap){ st.publishes, st.deletes, st.observers_added, st.observers,
		            st.revision };
}

static void
snap_same(const struct snap *a, const struct snap *b)
{
	assert_int_equal(a->publishes, b->publishes);
	assert_int_equal(a->deletes, b->deletes);
	assert_int_equal(a->observers_added, b->observers_added);
	assert_int_equal(a->observers, b->observers);
	assert_int_equal(a->revision, b->revision);
}

/* The four calls that need the worker fail with -EAGAIN from C, which holds
 * observer HELD on "held" and sees "d" = "x"; afterwards, with a worker
 * serving, none of them took effect. */
static void
four_calls_fail(struct hl_client *c, hl_observer_id held)
{
	hl_observer_id id = 0;
	assert_int_equal(hl_observe(c, "k", 1, 0, &id), -EAGAIN);
	assert_int_equal(id, 0);
	assert_int_equal(hl_publish(c, "k", 1, "v1", 2, NULL, 0), -EAGAIN);
	assert_int_equal(hl_delete(c, "d", 1), -EAGAIN);
	assert_int_equal(hl_unobserve(c, held), -EAGAIN);
}

static void
nothing_applied(const char *name, struct hl_client *c, hl_observer_id held, const struct snap *s0)
{
	/* A fresh client's SYNC round trip: the worker has served every ring
	 * up to its own request's shard; flush c too (its withdrawn requests
	 * are consumed, never applied). */
	assert_int_equal(hl_flush(c, hl_t_ms(10000)), 0);
	struct hl_client *q = hl_t_open(name, HL_OPEN_SYNC);
	assert_int_equal(hl_publish(q, "sync", 4, "s", 1, NULL, 0), 0);
	char buf[16];
	assert_int_equal(get_str(q, "k", buf, sizeof(buf), NULL), -ENOENT);
	assert_int_equal(get_str(q, "d", buf, sizeof(buf), NULL), 0);
	assert_string_equal(buf, "x");
	assert_int_equal(count_observers(q, "k"), 0);
	assert_int_equal(count_observers(q, "held"), 1);
	struct snap s1;
	snap_take(q, &s1);
	s1.publishes--; /* q's own */
	s1.revision--;
	snap_same(s0, &s1);
	/* The observer is still c's: it can remove it now. */
	assert_int_equal(hl_unobserve(c, held), 0);
	assert_int_equal(hl_flush(c, hl_t_ms(10000)), 0);
	assert_int_equal(count_observers(q, "held"), 0);
	hl_close(q);
}

static void
test_nowait_calls_with_no_worker_change_nothing(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, hl_t_small);
	struct hl_client *c = open_with(name, HL_OPEN_SYNC | HL_OPEN_NOWAIT, hl_t_ms(5000));
	hl_observer_id held;
	assert_int_equal(hl_observe(c, "held", 4, 0, &held), 0);
	assert_int_equal(hl_publish(c, "d", 1, "x", 1, NULL, 0), 0);
	struct snap s0;
	snap_take(c, &s0);
	assert_int_equal(hl_t_worker_stop(w), 0);

	four_calls_fail(c, held);
	/* hl_flush() with nothing answered: not yet (-ETIMEDOUT), no error. */
	w = hl_t_worker_startv(name, hl_t_small);
	nothing_applied(name, c, held, &s0);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* The worker is there but stopped (SIGSTOP: it looks ready): a short
 * timeout expires, the library withdraws each request, and after SIGCONT
 * none of them is applied. */
static void
test_timed_out_calls_of_a_stopped_worker_change_nothing(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, hl_t_small);
	struct hl_client *c = open_with(name, HL_OPEN_SYNC, 30);
	hl_observer_id held;
	assert_int_equal(hl_observe(c, "held", 4, 0, &held), 0);
	assert_int_equal(hl_publish(c, "d", 1, "x", 1, NULL, 0), 0);
	struct snap s0;
	snap_take(c, &s0);
	hl_t_stop_all(w);
	four_calls_fail(c, held);
	assert_int_equal(kill(w, SIGCONT), 0);
	nothing_applied(name, c, held, &s0);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* Queued asynchronous requests stay queued while no worker runs:
 * hl_flush() says "not yet" (-ETIMEDOUT, as documented), and they are
 * applied, once, when a worker comes. */
static void
test_flush_with_no_worker_is_etimedout_and_requests_stay_queued(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, hl_t_small);
	struct hl_client *c = open_with(name, HL_OPEN_NOWAIT, hl_t_ms(5000));
	struct hl_client *t = open_with(name, 0, 50);
	assert_int_equal(hl_t_worker_stop(w), 0);
	assert_int_equal(hl_publish(c, "a", 1, "1", 1, NULL, 0), 0);
	assert_int_equal(hl_flush(c, 1000), -ETIMEDOUT); /* NOWAIT: at once */
	assert_int_equal(hl_publish(t, "b", 1, "2", 1, NULL, 0), 0);
	assert_int_equal(hl_flush(t, 50), -ETIMEDOUT);
	w = hl_t_worker_startv(name, hl_t_small);
	assert_int_equal(hl_flush(c, hl_t_ms(10000)), 0);
	assert_int_equal(hl_flush(t, hl_t_ms(10000)), 0);
	char buf[8];
	uint64_t rev;
	assert_int_equal(get_str(c, "a", buf, sizeof(buf), &rev), 0);
	assert_string_equal(buf, "1");
	assert_int_equal(get_str(c, "b", buf, sizeof(buf), &rev), 0);
	assert_string_equal(buf, "2");
	hl_close(t);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* A full request ring with no worker: the publish that does not fit is
 * refused with -EAGAIN (NOWAIT at once, else after the timeout) and is
 * never applied; every one accepted before it is. */
static void
test_full_ring_refuses_with_eagain_and_queues_nothing(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	const char *const args[] = {
		"--max-keys", "4096",   "--max-observers", "1024",        "--max-endpoints",
		"16",         "--heap", "4194304",         "--max-value", "64",
		"--req-ring", "4096",   "--shards",        "1",           NULL
	};
	pid_t w = hl_t_worker_startv(name, args);
	struct hl_client *nw = open_with(name, HL_OPEN_NOWAIT, hl_t_ms(5000));
	struct hl_client *to = open_with(name, 0, 20);
	assert_int_equal(hl_t_worker_stop(w), 0);
	char key[16];
	int n_nw = 0, n_to = 0, rc;
	for (;; n_nw++) {
		snprintf(key, sizeof(key), "n%d", n_nw);
		if ((rc = hl_publish(nw, key, strlen(key), "v", 1, NULL, 0)) != 0)
			break;
	}
	assert_int_equal(rc, -EAGAIN);
	for (;; n_to++) {
		snprintf(key, sizeof(key), "t%d", n_to);
		if ((rc = hl_publish(to, key, strlen(key), "v", 1, NULL, 0)) != 0)
			break;
	}
	assert_int_equal(rc, -EAGAIN);
	assert_true(n_nw > 10 && n_to > 10);
	w = hl_t_worker_startv(name, args);
	assert_int_equal(hl_flush(nw, hl_t_ms(10000)), 0);
	assert_int_equal(hl_flush(to, hl_t_ms(10000)), 0);
	char buf[8];
	for (int i = 0; i < n_nw; i++) {
		snprintf(key, sizeof(key), "n%d", i);
		assert_int_equal(get_str(nw, key, buf, sizeof(buf), NULL), 0);
	}
	snprintf(key, sizeof(key), "n%d", n_nw);
	assert_int_equal(get_str(nw, key, buf, sizeof(buf), NULL), -ENOENT);
	snprintf(key, sizeof(key), "t%d", n_to);
	assert_int_equal(get_str(nw, key, buf, sizeof(buf), NULL), -ENOENT);
	struct hl_stats st;
	assert_int_equal(hl_stats(nw, &st), 0);
	assert_int_equal(st.publishes, (uint64_t)(n_nw + n_to));
	hl_close(to);
	hl_close(nw);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* A worker that _exit(99)s at its STEP-th crash point (0: never). With
 * WAIT, once it serves (it must not die in recovery then). */
static pid_t
crash_worker_w(const char *name, int step, int wait)
{
	char ks[16];
	snprintf(ks, sizeof(ks), "%d", step);
	const char *const args[] = { "--max-keys",
		                     "4096",
		                     "--max-observers",
		                     "65536",
		                     "--max-endpoints",
		                     "64",
		                     "--heap",
		                     "4194304",
		                     "--telemetry-interval",
		                     "0",
		                     "--crash-at-step",
		                     ks,
		                     "--req-ring",
		                     "65536",
		                     "--ev-ring",
		                     "262144",
		                     NULL };
	return wait ? hl_t_worker_startv(name, args) : hl_t_worker_spawnv(name, args);
}

static pid_t
crash_worker(const char *name, int step)
{
	return crash_worker_w(name, step, 1);
}

static void
expect_crash(pid_t w)
{
	assert_int_equal(hl_t_wait_exit(w, hl_t_ms(10000)), 99);
}

/* A worker that takes a request and dies before answering (crash at step
 * 1: right after the take): the call cannot withdraw it and returns
 * -ETIMEDOUT; the next worker applies it exactly once. An observe in that
 * state is applied too, and the library removes the observer it never
 * handed out: nobody is left holding nothing. */
static void
test_taken_request_times_out_and_is_applied_once(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = crash_worker(name, 0);
	struct hl_client *obs = hl_t_open(name, 0);
	hl_observer_id oid;
	assert_int_equal(hl_observe(obs, "k", 1, 0, &oid), 0);
	struct hl_client *c = open_with(name, HL_OPEN_SYNC, 200);
	assert_int_equal(hl_t_worker_stop(w), 0);

	w = crash_worker(name, 1);
	assert_int_equal(hl_publish(c, "k", 1, "v", 1, NULL, 0), -ETIMEDOUT);
	expect_crash(w);
	char buf[8];
	assert_int_equal(get_str(c, "k", buf, sizeof(buf), NULL), -ENOENT); /* not yet */
	w = crash_worker(name, 0);
	assert_int_equal(hl_flush(c, hl_t_ms(10000)), 0);
	uint64_t rev;
	assert_int_equal(get_str(c, "k", buf, sizeof(buf), &rev), 0);
	assert_string_equal(buf, "v");
	struct hl_event ev;
	assert_int_equal(hl_next(obs, &ev, hl_t_ms(5000)), 0);
	assert_int_equal(ev.type, HL_EV_PUT);
	assert_int_equal(ev.revision, rev);
	assert_int_equal(hl_next(obs, &ev, 300), -ETIMEDOUT); /* once */
	assert_int_equal(hl_t_worker_stop(w), 0);

	w = crash_worker(name, 1);
	hl_observer_id lost = 0;
	assert_int_equal(hl_observe(c, "k", 1, 0, &lost), -ETIMEDOUT);
	assert_int_equal(lost, 0);
	expect_crash(w);
	w = crash_worker(name, 0);
	/* Settling applies the observe's answer: the observer is removed. */
	assert_int_equal(hl_flush(c, hl_t_ms(10000)), 0);
	assert_int_equal(count_observers(obs, "k"), 1); /* obs's own only */
	struct hl_stats st;
	assert_int_equal(hl_stats(obs, &st), 0);
	assert_int_equal(st.observers, 1);
	/* A change reaches no orphan: c has no event. */
	assert_int_equal(hl_publish(c, "k", 1, "w", 1, NULL, 0), 0);
	assert_int_equal(hl_next(c, &ev, 300), -ETIMEDOUT);
	hl_close(c);
	hl_close(obs);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* ---- exactly once through a crash at every step ---- */

struct call {
	struct hl_client *c;
	const char *key; /* NULL: "k" */
	int del;
	const char *val;
	int rc;
	pthread_t t;
};

static void *
call_main(void *arg)
{
	struct call *a = arg;
	const char *k = a->key ? a->key : "k";
	a->rc = a->del ? hl_delete(a->c, k, strlen(k))
	               : hl_publish(a->c, k, strlen(k), a->val, strlen(a->val), NULL, 0);
	return NULL;
}

/* Wait until W exits (1, status in *st) or the call is done (0). */
static int
crash_or_done(pid_t w, struct call *a, int *st)
{
	for (int i = 0; i < hl_t_ms(10000); i++) {
		int r = hl_t_wait_exit(w, 1);
		if (r >= 0) {
			*st = r;
			return 1;
		}
		if (pthread_tryjoin_np(a->t, NULL) == 0) {
			a->t = 0;
			return 0;
		}
	}
	fail_msg("neither the call returned nor the worker exited");
	return 0;
}

struct seen {
	int puts_a, puts_b, puts_x, dels;
	uint64_t last_rev;
	int last_deleted;
	char last[16];
};

static void
collect(struct hl_client *o, struct seen *s)
{
	struct hl_event ev;
	while (hl_next(o, &ev, 400) == 0) {
		assert_true(ev.type == HL_EV_PUT || ev.type == HL_EV_DELETE);
		assert_true(ev.revision > s->last_rev);
		s->last_rev = ev.revision;
		s->last_deleted = ev.type == HL_EV_DELETE;
		if (ev.type == HL_EV_DELETE) {
			s->dels++;
			continue;
		}
		snprintf(s->last, sizeof(s->last), "%.*s", (int)ev.new_len,
		         (const char *)ev.new_value);
		s->puts_a += strcmp(s->last, "A1") == 0;
		s->puts_b += strcmp(s->last, "B1") == 0;
		s->puts_x += strcmp(s->last, "X0") == 0;
	}
}

/* A key other than KEY on KEY's shard (request positions count per
 * endpoint and shard). */
static void
same_shard_key(struct hl_client *c, const char *key, char *buf, size_t cap)
{
	struct hl_seg *seg = hl__client_seg(c, NULL);
	uint32_t want =
	        hl__shard_of_bucket(seg->h, hl__bucket_of(seg->h, hl__hash(key, strlen(key))));
	for (int i = 0;; i++) {
		snprintf(buf, cap, "warm%d", i);
		if (hl__shard_of_bucket(seg->h,
		                        hl__bucket_of(seg->h, hl__hash(buf, strlen(buf)))) == want)
			return;
	}
}

/* Wait until client C has a request for KEY's shard in its ring. */
static void
wait_queued(struct hl_client *c, const char *key)
{
	uint32_t ep;
	struct hl_seg *seg = hl__client_seg(c, &ep);
	uint32_t s = hl__shard_of_bucket(seg->h, hl__bucket_of(seg->h, hl__hash(key, strlen(key))));
	for (int i = 0; i < hl_t_ms(5000); i++) {
		if (atomic_load(&hl__epc_shard(seg, ep, s)->req_head) >
		    atomic_load(&hl__epw_shard(seg, ep, s)->req_tail))
			return;
		usleep(1000);
	}
	fail_msg("the request was not queued");
}

/* One run: writer A's publish (or delete, DEL) meets a worker that dies at
 * step K (0: none); while none serves, writer B publishes B1; the next
 * worker dies at step J of its own (0: none), and a third serves. Returns
 * 1 when the first worker did crash inside A's request. */
static int
run_two_writers(int del, int k, int j)
{
	const char *name = hl_t_name();
	pid_t w = crash_worker(name, 0);
	struct hl_client *o = hl_t_open(name, 0);
	hl_observer_id oid;
	assert_int_equal(hl_observe(o, "k", 1, 0, &oid), 0);
	struct hl_client *b = open_with(name, HL_OPEN_SYNC, hl_t_ms(20000));
	struct hl_client *a = open_with(name, HL_OPEN_SYNC, hl_t_ms(20000));
	/* A's request under test is not its first: its ring position is not
	 * 0, which a record that forgot the position would also say. */
	char warm[16];
	same_shard_key(a, "k", warm, sizeof(warm));
	assert_int_equal(hl_publish(a, warm, strlen(warm), "w", 1, NULL, 0), 0);
	struct seen s = { 0 };
	if (del) {
		assert_int_equal(hl_publish(b, "k", 1, "X0", 2, NULL, 0), 0);
		collect(o, &s);
		assert_int_equal(s.puts_x, 1);
	}
	assert_int_equal(hl_t_worker_stop(w), 0);

	w = crash_worker(name, k);
	struct call ca = { .c = a, .del = del, .val = "A1" };
	struct call cb = { .c = b, .del = 0, .val = "B1" };
	assert_int_equal(pthread_create(&ca.t, NULL, call_main, &ca), 0);
	int st = 0, crashed = crash_or_done(w, &ca, &st);
	if (crashed) {
		assert_int_equal(st, 99);
		/* No worker: B's publish waits in its ring. Queued before the
		 * next worker starts, so that it is there to be served first
		 * (B's endpoint comes before A's): a replay of A's request that
		 * the record failed to resolve would then land on B1. */
		assert_int_equal(pthread_create(&cb.t, NULL, call_main, &cb), 0);
		wait_queued(b, "k");
		w = crash_worker_w(name, j, 0);
		if (j) {
			int st2 = hl_t_wait_exit(w, hl_t_ms(3000));
			if (st2 >= 0) {
				assert_int_equal(st2, 99);
				w = crash_worker(name, 0);
			}
		}
	}
	if (ca.t)
		pthread_join(ca.t, NULL);
	if (crashed)
		pthread_join(cb.t, NULL);
	assert_int_equal(ca.rc, 0);
	assert_int_equal(cb.rc, 0);
	collect(o, &s);
	/* Each request applied once, at one revision; nothing reverted. (With
	 * no crash in A's request, B does not run: the worker would die in
	 * B's instead, a case the larger K of another run covers.) */
	assert_int_equal(s.puts_b, crashed ? 1 : 0);
	if (del) {
		assert_true(s.dels <= 1);
		assert_int_equal(s.puts_a, 0);
	} else {
		assert_int_equal(s.puts_a, 1);
	}
	char buf[16];
	uint64_t rev = 0;
	int rc = get_str(o, "k", buf, sizeof(buf), &rev);
	if (s.last_deleted) {
		assert_int_equal(rc, -ENOENT);
	} else {
		assert_int_equal(rc, 0);
		assert_string_equal(buf, s.last);
		assert_int_equal(rev, s.last_rev);
	}
	hl_close(a);
	hl_close(b);
	hl_close(o);
	/* A crash step not reached yet may be reached by the closes. */
	int stop = hl_t_worker_stop(w);
	assert_true(stop == 0 || stop == 99);
	hl_t_unlink(name);
	return crashed;
}

/* Every crash step K of writer A's request (until a K past its last step),
 * and for each the next worker's steps 1..3 too. A's request has 7 steps:
 * take, before commit, after commit, events written (delivered_rev not yet
 * moved: the client drops the redelivery), after dispatch, done, answered. */
static void
every_step_of_two_writers(int del)
{
	int k;
	for (k = 1; k < 40; k++)
		if (!run_two_writers(del, k, 0))
			break;
	assert_true(k > 7);
	for (int kk = 1; kk < k; kk++)
		for (int j = 1; j <= 3; j++)
			run_two_writers(del, kk, j);
}

static void
test_replayed_publish_never_applies_twice_nor_over_a_newer_write(void **state)
{
	(void)state;
	every_step_of_two_writers(0);
}

static void
test_replayed_delete_never_removes_a_newer_write(void **state)
{
	(void)state;
	every_step_of_two_writers(1);
}

/* The caller learns the first application's outcome. A publish into a
 * full key table fails with -ENOSPC; the worker records that and dies
 * before it answers (step 2: right after the done record). While no worker
 * serves, another client frees a key. The restarted worker must answer the
 * first outcome, -ENOSPC, from the record, and not apply the publish again
 * (which would now succeed). */
static void
test_caller_gets_the_first_outcome_of_a_crashed_application(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	const char *const args[] = {
		"--max-keys", "16",    "--max-observers",      "64", "--max-endpoints", "8",
		"--heap",     "65536", "--telemetry-interval", "0",  "--crash-at-step", "2",
		NULL
	};
	const char *const plain[] = { "--max-keys",
		                      "16",
		                      "--max-observers",
		                      "64",
		                      "--max-endpoints",
		                      "8",
		                      "--heap",
		                      "65536",
		                      "--telemetry-interval",
		                      "0",
		                      NULL };
	pid_t w = hl_t_worker_startv(name, plain);
	struct hl_client *b = open_with(name, HL_OPEN_SYNC, hl_t_ms(20000));
	struct hl_client *a = open_with(name, HL_OPEN_SYNC, hl_t_ms(20000));
	char key[8];
	int full = 0;
	for (int i = 0; i < 64 && !full; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		int rc = hl_publish(b, key, strlen(key), "v", 1, NULL, 0);
		full = rc == -ENOSPC;
		if (!full)
			assert_int_equal(rc, 0);
	}
	assert_true(full);
	assert_int_equal(hl_t_worker_stop(w), 0);

	w = hl_t_worker_startv(name, args);
	struct call ca = { .c = a, .del = 0, .val = "A1" };
	assert_int_equal(pthread_create(&ca.t, NULL, call_main, &ca), 0);
	expect_crash(w);
	/* No worker: B frees a key (its delete waits in its ring). */
	struct call cb = { .c = b, .key = "k0", .del = 1 };
	assert_int_equal(pthread_create(&cb.t, NULL, call_main, &cb), 0);
	w = hl_t_worker_startv(name, plain);
	pthread_join(ca.t, NULL);
	pthread_join(cb.t, NULL);
	assert_int_equal(ca.rc, -ENOSPC);
	assert_int_equal(cb.rc, 0);
	char buf[8];
	assert_int_equal(get_str(a, "k", buf, sizeof(buf), NULL), -ENOENT);
	assert_int_equal(get_str(a, "k0", buf, sizeof(buf), NULL), -ENOENT);
	hl_close(a);
	hl_close(b);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* ---- withdraw versus take ---- */

#define RACERS 6
#define CALLS  300

struct racer {
	const char *name;
	int me;
	int rc[CALLS];
	pthread_t t;
};

static void *
racer_main(void *arg)
{
	struct racer *r = arg;
	struct hl_client *c = open_with(r->name, HL_OPEN_SYNC, 1 + r->me % 3);
	for (int i = 0; i < CALLS; i++) {
		char key[8], val[16];
		snprintf(key, sizeof(key), "r%d", i % 4);
		int n = snprintf(val, sizeof(val), "%d-%d", r->me, i);
		r->rc[i] = hl_publish(c, key, strlen(key), val, (size_t)n, NULL, 0);
	}
	int rc;
	while ((rc = hl_flush(c, hl_t_ms(20000))) == -ETIMEDOUT)
		;
	assert_int_equal(rc, 0);
	hl_close(c);
	return NULL;
}

static _Atomic int toggling;

struct toggler {
	pid_t w;
	pthread_t t;
};

static void *
toggle_main(void *arg)
{
	struct toggler *tg = arg;
	unsigned seed = 7;
	while (atomic_load(&toggling)) {
		kill(tg->w, SIGSTOP);
		nanosleep(&(struct timespec){ .tv_nsec = (long)(rand_r(&seed) % 3000) * 1000 },
		          NULL);
		kill(tg->w, SIGCONT);
		nanosleep(&(struct timespec){ .tv_nsec = (long)(rand_r(&seed) % 3000) * 1000 },
		          NULL);
	}
	kill(tg->w, SIGCONT);
	return NULL;
}

/* Clients with 1-3 ms timeouts publish unique values while the worker is
 * stopped and continued every few milliseconds, so that many calls give
 * up exactly while the worker takes their request. Every value whose call
 * returned 0 or -ETIMEDOUT is applied exactly once; none whose call
 * returned -EAGAIN ever is. */
static void
test_withdraw_races_take_without_loss_or_double(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = crash_worker(name, 0);
	struct hl_client *o = hl_t_open(name, 0);
	hl_observer_id oid[4];
	for (int i = 0; i < 4; i++) {
		char key[8];
		snprintf(key, sizeof(key), "r%d", i);
		assert_int_equal(hl_observe(o, key, strlen(key), 0, &oid[i]), 0);
	}
	static struct racer rs[RACERS];
	int joined[RACERS] = { 0 };
	struct toggler tg = { .w = w };
	atomic_store(&toggling, 1);
	assert_int_equal(pthread_create(&tg.t, NULL, toggle_main, &tg), 0);
	for (int i = 0; i < RACERS; i++) {
		rs[i] = (struct racer){ .name = name, .me = i };
		assert_int_equal(pthread_create(&rs[i].t, NULL, racer_main, &rs[i]), 0);
	}
	/* The observer reads along, so that its ring never fills. */
	static unsigned char seen[RACERS][CALLS];
	int lagged = 0, done = 0;
	struct hl_event ev;
	for (;;) {
		int rc = hl_next(o, &ev, done ? 500 : 20);
		if (rc == 0) {
			if (ev.type == HL_EV_LAGGED || ev.type == HL_EV_RESYNC) {
				lagged = 1;
				continue;
			}
			int me, i;
			char v[32];
			snprintf(v, sizeof(v), "%.*s", (int)ev.new_len, (const char *)ev.new_value);
			assert_int_equal(sscanf(v, "%d-%d", &me, &i), 2);
			assert_true(me >= 0 && me < RACERS && i >= 0 && i < CALLS);
			seen[me][i]++;
			continue;
		}
		if (done)
			break;
		int all = 1;
		for (int i = 0; i < RACERS; i++) {
			if (!joined[i] && pthread_tryjoin_np(rs[i].t, NULL) == 0)
				joined[i] = 1;
			all &= joined[i];
		}
		if (all) {
			atomic_store(&toggling, 0);
			pthread_join(tg.t, NULL);
			done = 1;
		}
	}
	assert_false(lagged);
	int ok = 0, failed = 0, doubt = 0;
	for (int me = 0; me < RACERS; me++)
		for (int i = 0; i < CALLS; i++) {
			int rc = rs[me].rc[i];
			if (rc == 0 || rc == -ETIMEDOUT) {
				if (seen[me][i] != 1)
					fail_msg("%d-%d: returned %d, applied %d times", me, i, rc,
					         seen[me][i]);
				ok += rc == 0;
				doubt += rc == -ETIMEDOUT;
			} else {
				if (rc != -EAGAIN)
					fail_msg("%d-%d: unexpected %s", me, i, hl_strerror(rc));
				if (seen[me][i] != 0)
					fail_msg("%d-%d: refused (-EAGAIN) but applied", me, i);
				failed++;
			}
		}
	print_message("%d applied, %d refused, %d in doubt then applied\n", ok, failed, doubt);
	assert_true(failed > 0); /* the race was run */
	hl_close(o);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* ---- LAGGED and RESYNC ---- */

/* Observer O1 on k1 falls behind (its ring is full, events are dropped);
 * after it reads a little, a change of k2 (observer O2, same ring) is
 * written after the drop. O1's LAGGED comes before that event, is followed
 * at once by its RESYNC with k1's current value and revision, and nothing
 * older than the RESYNC comes after it. */
static void
test_lagged_is_followed_by_resync_before_later_events(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	const char *const args[] = { "--max-keys",
		                     "4096",
		                     "--max-observers",
		                     "1024",
		                     "--max-endpoints",
		                     "16",
		                     "--heap",
		                     "4194304",
		                     "--max-value",
		                     "64",
		                     "--ev-ring",
		                     "4096",
		                     "--shards",
		                     "1",
		                     "--telemetry-interval",
		                     "0",
		                     "--history",
		                     "2048", /* overrun too: no catch-up */
		                     NULL };
	pid_t w = hl_t_worker_startv(name, args);
	struct hl_client *o = hl_t_open(name, 0);
	struct hl_client *p = hl_t_open(name, HL_OPEN_SYNC);
	hl_observer_id o1, o2;
	assert_int_equal(hl_observe(o, "k1", 2, 0, &o1), 0);
	assert_int_equal(hl_observe(o, "k2", 2, 0, &o2), 0);
	char val[64];
	int n = 0;
	struct hl_stats st;
	do {
		int len = snprintf(val, sizeof(val), "value-%04d", n++);
		assert_int_equal(hl_publish(p, "k1", 2, val, (size_t)len, NULL, 0), 0);
		assert_int_equal(hl_stats(p, &st), 0);
	} while (st.lagged_drops == 0 && n < 10000);
	assert_true(st.lagged_drops > 0);
	/* A hundred more after the first drop: dropped too (the ring is
	 * full), and more than the history holds (2 KiB: about 36 of these),
	 * so the observer cannot be caught up from it. */
	for (int i = 0; i < 100; i++) {
		int len = snprintf(val, sizeof(val), "value-%04d", n++);
		assert_int_equal(hl_publish(p, "k1", 2, val, (size_t)len, NULL, 0), 0);
	}
	char last[64];
	snprintf(last, sizeof(last), "value-%04d", n - 1);
	struct hl_event ev;
	uint64_t rev1 = 0, rev2 = 0;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(hl_next(o, &ev, hl_t_ms(2000)), 0);
		assert_int_equal(ev.type, HL_EV_PUT);
		assert_true(ev.revision > rev1);
		rev1 = ev.revision;
	}
	assert_int_equal(hl_publish(p, "k2", 2, "after", 5, NULL, 0), 0);
	int state_ = 0; /* 0 before LAGGED, 1 right after it, 2 after RESYNC */
	int saw_after = 0;
	while (hl_next(o, &ev, 300) == 0) {
		if (ev.observer == o2) {
			assert_int_equal(ev.type, HL_EV_PUT);
			assert_int_equal(state_, 2); /* after the resync */
			assert_true(ev.revision > rev2);
			rev2 = ev.revision;
			saw_after = 1;
			continue;
		}
		assert_int_equal(ev.observer, o1);
		if (state_ == 1) {
			assert_int_equal(ev.type, HL_EV_RESYNC);
			assert_true(ev.has_new);
			assert_int_equal(ev.new_len, strlen(last));
			assert_memory_equal(ev.new_value, last, ev.new_len);
			uint64_t cur;
			char buf[64];
			assert_int_equal(get_str(o, "k1", buf, sizeof(buf), &cur), 0);
			assert_int_equal(ev.revision, cur);
			assert_true(ev.revision > rev1);
			rev1 = ev.revision;
			state_ = 2;
			continue;
		}
		if (ev.type == HL_EV_LAGGED) {
			assert_int_equal(state_, 0);
			assert_true(ev.lagged > 0);
			state_ = 1;
			continue;
		}
		assert_int_equal(ev.type, HL_EV_PUT);
		assert_int_equal(state_, 0); /* nothing of k1 after its resync */
		assert_true(ev.revision > rev1);
		rev1 = ev.revision;
	}
	assert_int_equal(state_, 2);
	assert_true(saw_after);
	hl_close(p);
	hl_close(o);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* Flood K1 from P until O's observer has events dropped; returns how
 * many publishes it took. */
static int
flood_until_drop(struct hl_client *p, struct hl_client *o, int from)
{
	struct hl_stats st0, st;
	assert_int_equal(hl_stats(o, &st0), 0);
	int n = from;
	do {
		char val[32];
		int len = snprintf(val, sizeof(val), "value-%04d", n++);
		assert_int_equal(hl_publish(p, "k1", 2, val, (size_t)len, NULL, 0), 0);
		assert_int_equal(hl_stats(p, &st), 0);
	} while (st.lagged_drops == st0.lagged_drops && n < from + 10000);
	assert_true(st.lagged_drops > st0.lagged_drops);
	return n;
}

/* A hundred more publishes to K1 from N: more than the 2 KiB history of
 * these tests holds. Returns the next N. */
static int
flood_past_history(struct hl_client *p, int n)
{
	for (int i = 0; i < 100; i++, n++) {
		char val[32];
		int len = snprintf(val, sizeof(val), "value-%04d", n);
		assert_int_equal(hl_publish(p, "k1", 2, val, (size_t)len, NULL, 0), 0);
	}
	return n;
}

/* Read everything; returns the sum of LAGGED counts, checks each is
 * followed by its RESYNC. */
static uint64_t
drain_lagged(struct hl_client *o)
{
	uint64_t sum = 0;
	int want_resync = 0;
	struct hl_event ev;
	while (hl_next(o, &ev, 300) == 0) {
		if (want_resync)
			assert_int_equal(ev.type, HL_EV_RESYNC);
		want_resync = ev.type == HL_EV_LAGGED;
		if (ev.type == HL_EV_LAGGED) {
			assert_true(ev.lagged > 0);
			sum += ev.lagged;
		}
	}
	assert_false(want_resync);
	return sum;
}

/* Two separate lag episodes: each LAGGED counts the drops since the last
 * report, so the counts add up to the observer's total, never more. */
static void
test_lagged_counts_each_drop_once(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	const char *const args[] = { "--max-keys",
		                     "4096",
		                     "--max-observers",
		                     "1024",
		                     "--max-endpoints",
		                     "16",
		                     "--heap",
		                     "4194304",
		                     "--max-value",
		                     "64",
		                     "--ev-ring",
		                     "4096",
		                     "--shards",
		                     "1",
		                     "--telemetry-interval",
		                     "0",
		                     "--history",
		                     "2048", /* overrun too: no catch-up */
		                     NULL };
	pid_t w = hl_t_worker_startv(name, args);
	struct hl_client *o = hl_t_open(name, 0);
	struct hl_client *p = hl_t_open(name, HL_OPEN_SYNC);
	hl_observer_id o1;
	assert_int_equal(hl_observe(o, "k1", 2, 0, &o1), 0);
	int n = flood_until_drop(p, o, 0);
	n = flood_past_history(p, n);
	uint64_t first = drain_lagged(o);
	assert_true(first > 0);
	n = flood_until_drop(p, o, n);
	flood_past_history(p, n);
	uint64_t second = drain_lagged(o);
	assert_true(second > 0);
	struct hl_observer_info info[4];
	assert_int_equal(hl_inspect_key(o, "k1", 2, info, 4), 1);
	assert_int_equal(info[0].id, o1);
	assert_int_equal(first + second, info[0].dropped);
	hl_close(p);
	hl_close(o);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nowait_calls_with_no_worker_change_nothing),
		cmocka_unit_test(test_timed_out_calls_of_a_stopped_worker_change_nothing),
		cmocka_unit_test(test_flush_with_no_worker_is_etimedout_and_requests_stay_queued),
		cmocka_unit_test(test_full_ring_refuses_with_eagain_and_queues_nothing),
		cmocka_unit_test(test_taken_request_times_out_and_is_applied_once),
		cmocka_unit_test(test_replayed_publish_never_applies_twice_nor_over_a_newer_write),
		cmocka_unit_test(test_replayed_delete_never_removes_a_newer_write),
		cmocka_unit_test(test_caller_gets_the_first_outcome_of_a_crashed_application),
		cmocka_unit_test(test_withdraw_races_take_without_loss_or_double),
		cmocka_unit_test(test_lagged_is_followed_by_resync_before_later_events),
		cmocka_unit_test(test_lagged_counts_each_drop_once),
	};
	return cmocka_run_group_tests_name("contract", tests, NULL, NULL);
}
