/* SPDX-License-Identifier: MIT */
/*
 * test_progress.c: progress notifications (hl_observe_opts.progress_ms,
 * HL_EV_PROGRESS; issue 14 item 5) against a real worker with 4 shards.
 * The point of HL_EV_PROGRESS R is that every change of the observer's
 * key(s) with a revision <= R was handed out before it: the tests hold a
 * committed change before its dispatch (the worker's --hold-dispatch-*
 * test hook) and check that no progress passes it, for an exact observer
 * and for a prefix observer whose keys are in every shard; progress goes
 * on after a worker SIGKILL and restart; and a loop asleep in poll() on
 * hl_fd() is woken for it.
 */
#include "harness.h"

#include "util.h" /* hl__hash(): which shard a key is in */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PFX "pg/"

struct fx {
	const char *name;
	pid_t worker;
	struct hl_client *c;     /* SYNC: publishes and the observers */
	struct hl_client *async; /* the change that is held */
	char file[96];
	uint32_t hold;
	const char *args[32];
};

static const char *const caps[] = {
	"--max-keys", "256",    "--max-observers", "256", "--max-endpoints", "8",
	"--heap",     "524288", "--max-value",     "512", "--shards",        "4",
	NULL
};

/* The shard of a key in the fixture's segment: 256 keys make 256 buckets,
 * and bucket b is shard b % 4 (lib/segment.h). */
static uint32_t
shard_of(const char *key)
{
	return (uint32_t)(hl__hash(key, strlen(key)) & 255u) % 4u;
}

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	f->name = hl_t_name();
	f->hold = (shard_of(PFX) + 1) % 4;
	snprintf(f->file, sizeof(f->file), "/tmp/hl-hold-%s", f->name);
	unlink(f->file);
	static char hs[16];
	snprintf(hs, sizeof(hs), "%u", f->hold);
	int n = 0;
	for (const char *const *a = caps; *a; a++)
		f->args[n++] = *a;
	f->args[n++] = "--hold-dispatch-shard";
	f->args[n++] = hs;
	f->args[n++] = "--hold-dispatch-file";
	f->args[n++] = f->file;
	f->args[n] = NULL;
	f->worker = hl_t_worker_startv(f->name, f->args);
	f->c = hl_t_open(f->name, HL_OPEN_SYNC);
	f->async = hl_t_open(f->name, 0);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	unlink(f->file);
	hl_close(f->async);
	hl_close(f->c);
	assert_int_equal(hl_t_worker_stop(f->worker), 0);
	hl_t_unlink(f->name);
	free(f);
	return 0;
}

static hl_observer_id
observe(struct hl_client *c, const char *k, uint32_t flags, uint32_t ms)
{
	struct hl_observe_opts o = { .flags = flags, .progress_ms = ms };
	hl_observer_id id = 0;
	assert_int_equal(hl_observe_with(c, k, strlen(k), &o, &id), 0);
	return id;
}

static uint64_t
put(struct hl_client *c, const char *k, const char *v)
{
	assert_int_equal(hl_publish(c, k, strlen(k), v, strlen(v), NULL, 0), 0);
	uint64_t rev = 0;
	assert_int_equal(hl_get(c, k, strlen(k), NULL, 0, NULL, &rev), 0);
	return rev;
}

/* A key under PFX in shard SHARD (want 1) or not in it (want 0). */
static void
key_in(char *k, size_t cap, uint32_t shard, int want, const char *tag)
{
	for (int i = 0;; i++) {
		snprintf(k, cap, PFX "%s%d", tag, i);
		if ((shard_of(k) == shard) == want)
			return;
	}
}

/* Publish K from the asynchronous client with the hold on; return once
 * the change is committed (then held before its dispatch). */
static uint64_t
put_held(struct fx *f, const char *k, const char *v)
{
	int fd = open(f->file, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(hl_publish(f->async, k, strlen(k), v, strlen(v), NULL, 0), 0);
	uint64_t until = hl_t_now_ms() + (uint64_t)hl_t_ms(10000), rev = 0;
	char buf[16];
	size_t len = 0;
	for (;;) {
		if (hl_get(f->c, k, strlen(k), buf, sizeof(buf), &len, &rev) == 0 &&
		    len == strlen(v) && memcmp(buf, v, len) == 0)
			return rev;
		assert_true(hl_t_now_ms() < until);
		hl_t_sleep_ms(1);
	}
}

static void
release(struct fx *f)
{
	assert_int_equal(unlink(f->file), 0);
	assert_int_equal(hl_flush(f->async, hl_t_ms(10000)), 0);
}

/* The next event of observer ID (others are skipped), within 10 s. */
static struct hl_event
next_of(struct hl_client *c, hl_observer_id id)
{
	uint64_t until = hl_t_now_ms() + (uint64_t)hl_t_ms(10000);
	struct hl_event e;
	for (;;) {
		assert_true(hl_t_now_ms() < until);
		int rc = hl_next(c, &e, 100);
		if (rc == -ETIMEDOUT)
			continue;
		assert_int_equal(rc, 0);
		if (e.observer == id)
			return e;
	}
}

/* Wait for a progress event of ID at or past REV; every PUT on the way has
 * a revision above the progress before it. Returns its revision. */
static uint64_t
progress_reaches(struct hl_client *c, hl_observer_id id, uint64_t rev)
{
	uint64_t last = 0;
	for (;;) {
		struct hl_event e = next_of(c, id);
		if (e.type == HL_EV_PROGRESS) {
			assert_true(e.revision >= last);
			last = e.revision;
			if (e.revision >= rev)
				return e.revision;
		} else {
			assert_true(e.revision > last);
		}
	}
}

static void
test_progress_comes_when_idle_and_names_the_observer(void **state)
{
	struct fx *f = *state;
	hl_observer_id id = observe(f->c, "pk", 0, 20);
	uint64_t rev = put(f->c, "pk", "1");
	struct hl_event e = next_of(f->c, id);
	assert_int_equal(e.type, HL_EV_PUT);
	assert_int_equal(e.revision, rev);
	e = next_of(f->c, id);
	assert_int_equal(e.type, HL_EV_PROGRESS);
	assert_int_equal(e.key_len, 2);
	assert_memory_equal(e.key, "pk", 2);
	assert_int_equal(e.has_new, 0);
	assert_true(progress_reaches(f->c, id, rev) >= rev);
	/* 1..9 ms is refused; 0 means none. */
	struct hl_observe_opts o = { .progress_ms = 9 };
	hl_observer_id x = 0;
	assert_int_equal(hl_observe_with(f->c, "pk", 2, &o, &x), -EINVAL);
}

/* A change committed (its revision taken) but not yet dispatched: no
 * progress reaches its revision until it is handed out. */
static void
test_progress_is_never_ahead_of_an_undelivered_change(void **state)
{
	struct fx *f = *state;
	char ka[64], kb[64];
	key_in(ka, sizeof(ka), f->hold, 1, "a");
	key_in(kb, sizeof(kb), f->hold, 0, "b");
	hl_observer_id id = observe(f->c, ka, 0, 10);
	uint64_t held = put_held(f, ka, "1");
	/* The global revision moves on in another shard. */
	uint64_t later = put(f->c, kb, "2");
	assert_true(later > held);
	int seen = 0;
	while (seen < 5) {
		struct hl_event e = next_of(f->c, id);
		assert_int_equal(e.type, HL_EV_PROGRESS);
		assert_true(e.revision < held);
		seen++;
	}
	release(f);
	struct hl_event e = next_of(f->c, id);
	while (e.type == HL_EV_PROGRESS) {
		assert_true(e.revision < held);
		e = next_of(f->c, id);
	}
	assert_int_equal(e.type, HL_EV_PUT);
	assert_int_equal(e.revision, held);
	assert_true(progress_reaches(f->c, id, later) >= later);
}

/* A prefix observer's keys are in every shard: its progress is held back
 * by the one shard that holds a change, however far the others went. */
static void
test_prefix_progress_waits_for_every_shard(void **state)
{
	struct fx *f = *state;
	hl_observer_id id = observe(f->c, PFX, HL_OBSERVE_PREFIX, 10);
	char ka[64], kb[64];
	key_in(ka, sizeof(ka), f->hold, 1, "a");
	uint64_t held = put_held(f, ka, "1");
	uint64_t last = 0;
	for (int i = 0; i < 8; i++) {
		key_in(kb, sizeof(kb), f->hold, 0, i % 2 ? "c" : "b");
		char v[8];
		snprintf(v, sizeof(v), "%d", i);
		last = put(f->c, kb, v);
	}
	int seen = 0;
	while (seen < 5) {
		struct hl_event e = next_of(f->c, id);
		if (e.type == HL_EV_PROGRESS) {
			assert_true(e.revision < held);
			seen++;
		} else {
			assert_int_equal(e.type, HL_EV_PUT);
			assert_true(e.revision > held);
		}
	}
	release(f);
	int got_held = 0;
	uint64_t prog = 0;
	while (prog < last) {
		struct hl_event e = next_of(f->c, id);
		if (e.type == HL_EV_PROGRESS) {
			if (e.revision >= held)
				assert_true(got_held);
			prog = e.revision;
		} else if (e.revision == held) {
			got_held = 1;
		}
	}
	assert_true(got_held);
}

/* After a worker SIGKILL and restart the observer is kept, and progress
 * goes on past the changes made since. */
static void
test_progress_resumes_after_a_worker_restart(void **state)
{
	struct fx *f = *state;
	hl_observer_id ex = observe(f->c, "pk", 0, 20);
	hl_observer_id px = observe(f->c, PFX, HL_OBSERVE_PREFIX, 20);
	uint64_t r1 = put(f->c, "pk", "1");
	assert_true(progress_reaches(f->c, ex, r1) >= r1);
	hl_t_kill9(f->worker);
	f->worker = hl_t_worker_startv(f->name, f->args);
	uint64_t r2 = put(f->c, "pk", "2");
	uint64_t r3 = put(f->c, PFX "x", "3");
	assert_true(progress_reaches(f->c, ex, r2) >= r2);
	assert_true(progress_reaches(f->c, px, r3) >= r3);
}

/* A loop asleep in poll() on hl_fd(), with nothing published, is woken by
 * the worker for the progress event. */
static void
test_progress_wakes_a_loop_asleep_on_hl_fd(void **state)
{
	struct fx *f = *state;
	struct hl_client *c = hl_t_open(f->name, 0);
	hl_observer_id id = observe(c, "pk", 0, 50);
	int fd = hl_fd(c);
	assert_true(fd >= 0);
	struct hl_event e;
	int progress = 0;
	uint64_t until = hl_t_now_ms() + (uint64_t)hl_t_ms(10000);
	while (progress < 2) {
		assert_true(hl_t_now_ms() < until);
		int rc;
		while ((rc = hl_next(c, &e, 0)) == 0) {
			assert_int_equal(e.observer, id);
			assert_int_equal(e.type, HL_EV_PROGRESS);
			progress++;
		}
		assert_int_equal(rc, -EAGAIN);
		struct pollfd p = { .fd = fd, .events = POLLIN };
		assert_int_equal(poll(&p, 1, hl_t_ms(5000)), 1);
	}
	hl_close(c);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_progress_comes_when_idle_and_names_the_observer),
		T(test_progress_is_never_ahead_of_an_undelivered_change),
		T(test_prefix_progress_waits_for_every_shard),
		T(test_progress_resumes_after_a_worker_restart),
		T(test_progress_wakes_a_loop_asleep_on_hl_fd),
	};
	return cmocka_run_group_tests_name("progress", tests, NULL, NULL);
}
