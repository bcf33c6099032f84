/* SPDX-License-Identifier: MIT */
/*
 * test_cas.c: compare-and-set (hl_publish_if, hl_delete_if) against a real
 * worker: a matching revision applies and answers the new one; a conflict
 * changes nothing, notifies nobody and answers the current revision; 0
 * means "absent", deleted keys included; and N processes incrementing one
 * counter with a retry loop end at exactly N * M.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define KEY "cas/key"
#define KL  (sizeof(KEY) - 1)

static const char *const caps[] = {
	"--max-keys", "256",    "--max-observers", "256", "--max-endpoints",
	"16",         "--heap", "1048576",         NULL
};

static int
setup(void **state)
{
	return hl_t_fx_setup(state, caps, 0);
}

static int
teardown(void **state)
{
	return hl_t_fx_teardown(state);
}

static uint64_t
rev_of(struct hl_client *c)
{
	uint64_t rev = 0;
	int rc = hl_get(c, KEY, KL, NULL, 0, NULL, &rev);
	assert_true(rc == 0 || rc == -ENOENT);
	return rc == 0 ? rev : 0;
}

static void
assert_value(struct hl_client *c, const char *want)
{
	char buf[64];
	size_t len = 0;
	assert_int_equal(hl_get(c, KEY, KL, buf, sizeof(buf), &len, NULL), 0);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(buf, want, len);
}

static void
test_publish_if_absent_creates_and_answers_new_revision(void **state)
{
	struct hl_t_fx *f = *state;
	uint64_t cur = 12345;
	assert_int_equal(hl_publish_if(f->c, KEY, KL, "a", 1, NULL, 0, 0, &cur), 0);
	assert_int_not_equal(cur, 0);
	assert_int_equal(cur, rev_of(f->c));
	assert_value(f->c, "a");
	/* Absent no more: "if absent" now conflicts, answering its revision. */
	uint64_t again = 0;
	assert_int_equal(hl_publish_if(f->c, KEY, KL, "b", 1, NULL, 0, 0, &again), HL_ECONFLICT);
	assert_int_equal(again, cur);
	assert_value(f->c, "a");
}

static void
test_publish_if_matching_revision_applies(void **state)
{
	struct hl_t_fx *f = *state;
	uint64_t r1, r2;
	assert_int_equal(hl_publish_if(f->c, KEY, KL, "a", 1, NULL, 0, 0, &r1), 0);
	assert_int_equal(hl_publish_if(f->c, KEY, KL, "b", 1, "m", 1, r1, &r2), 0);
	assert_true(r2 > r1);
	assert_int_equal(r2, rev_of(f->c));
	assert_value(f->c, "b");
	/* The same value with the right revision: success, nothing changes. */
	uint64_t r3 = 0;
	assert_int_equal(hl_publish_if(f->c, KEY, KL, "b", 1, NULL, 0, r2, &r3), 0);
	assert_int_equal(r3, r2);
	assert_int_equal(rev_of(f->c), r2);
}

static void
test_conflict_changes_nothing_notifies_nobody_and_returns_current_revision(void **state)
{
	struct hl_t_fx *f = *state;
	uint64_t r1;
	assert_int_equal(hl_publish_if(f->c, KEY, KL, "a", 1, NULL, 0, 0, &r1), 0);
	hl_observer_id id;
	assert_int_equal(hl_observe(f->c, KEY, KL, 0, &id), 0);
	struct hl_stats before = hl_t_stats(f->c);
	uint64_t cur = 0;
	/* "Absent", below, above and far above the current revision: all
	 * conflicts. */
	uint64_t tries[] = { 0, r1 > 1 ? r1 - 1 : r1 + 5, r1 + 1, UINT64_MAX / 4 };
	for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
		if (tries[i] == r1)
			continue;
		cur = 0;
		assert_int_equal(hl_publish_if(f->c, KEY, KL, "x", 1, NULL, 0, tries[i], &cur),
		                 HL_ECONFLICT);
		assert_int_equal(cur, r1);
		cur = 0;
		assert_int_equal(hl_delete_if(f->c, KEY, KL, tries[i], &cur), HL_ECONFLICT);
		assert_int_equal(cur, r1);
	}
	assert_value(f->c, "a");
	assert_int_equal(rev_of(f->c), r1);
	struct hl_stats after = hl_t_stats(f->c);
	assert_int_equal(after.publishes, before.publishes);
	assert_int_equal(after.deletes, before.deletes);
	assert_int_equal(after.revision, before.revision);
	struct hl_event ev;
	assert_int_equal(hl_next(f->c, &ev, 0), -EAGAIN);
	/* A NULL cur_rev is allowed. */
	assert_int_equal(hl_publish_if(f->c, KEY, KL, "x", 1, NULL, 0, r1 + 7, NULL), HL_ECONFLICT);
	assert_string_equal(hl_err_name(HL_ECONFLICT), "HL_ECONFLICT");
}

static void
test_publish_if_on_missing_key_with_nonzero_revision_conflicts_with_zero(void **state)
{
	struct hl_t_fx *f = *state;
	uint64_t cur = 99;
	assert_int_equal(hl_publish_if(f->c, KEY, KL, "a", 1, NULL, 0, 5, &cur), HL_ECONFLICT);
	assert_int_equal(cur, 0);
	assert_int_equal(hl_get(f->c, KEY, KL, NULL, 0, NULL, NULL), -ENOENT);
	cur = 99;
	assert_int_equal(hl_delete_if(f->c, KEY, KL, 5, &cur), HL_ECONFLICT);
	assert_int_equal(cur, 0);
	/* Delete "if absent" of an absent key: nothing to do, success, 0. */
	cur = 99;
	assert_int_equal(hl_delete_if(f->c, KEY, KL, 0, &cur), 0);
	assert_int_equal(cur, 0);
}

static void
test_deleted_key_compares_as_absent(void **state)
{
	struct hl_t_fx *f = *state;
	uint64_t r1, rd, r2;
	/* An observer keeps the deleted key known, so hl_get reports the
	 * delete's revision: CAS still treats the key as absent (0). */
	hl_observer_id id;
	assert_int_equal(hl_observe(f->c, KEY, KL, 0, &id), 0);
	assert_int_equal(hl_publish_if(f->c, KEY, KL, "a", 1, NULL, 0, 0, &r1), 0);
	assert_int_equal(hl_delete_if(f->c, KEY, KL, r1 + 1, &rd), HL_ECONFLICT);
	assert_int_equal(rd, r1);
	assert_int_equal(hl_delete_if(f->c, KEY, KL, r1, &rd), 0);
	assert_true(rd > r1);
	assert_int_equal(hl_get(f->c, KEY, KL, NULL, 0, NULL, NULL), -ENOENT);
	uint64_t cur = 0;
	assert_int_equal(hl_publish_if(f->c, KEY, KL, "b", 1, NULL, 0, rd, &cur), HL_ECONFLICT);
	assert_int_equal(cur, 0);
	assert_int_equal(hl_publish_if(f->c, KEY, KL, "b", 1, NULL, 0, 0, &r2), 0);
	assert_true(r2 > rd);
	assert_value(f->c, "b");
	/* The observer saw put, delete, put: and nothing for the conflicts. */
	struct hl_event ev;
	int types[] = { HL_EV_PUT, HL_EV_DELETE, HL_EV_PUT };
	uint64_t revs[] = { r1, rd, r2 };
	for (int i = 0; i < 3; i++) {
		assert_int_equal(hl_next(f->c, &ev, hl_t_ms(5000)), 0);
		assert_int_equal(ev.type, types[i]);
		assert_int_equal(ev.revision, revs[i]);
	}
	assert_int_equal(hl_next(f->c, &ev, 0), -EAGAIN);
}

static void
test_conditional_requests_refuse_bad_arguments(void **state)
{
	struct hl_t_fx *f = *state;
	uint64_t cur = 7;
	assert_int_equal(hl_publish_if(NULL, KEY, KL, "a", 1, NULL, 0, 0, &cur), -EINVAL);
	assert_int_equal(hl_publish_if(f->c, NULL, 1, "a", 1, NULL, 0, 0, &cur), -EINVAL);
	assert_int_equal(hl_publish_if(f->c, KEY, KL, NULL, 1, NULL, 0, 0, &cur), -EINVAL);
	assert_int_equal(hl_delete_if(f->c, KEY, 0, 0, &cur), -EINVAL);
	assert_int_equal(hl_publish_if(f->c, "$sys/x", 6, "a", 1, NULL, 0, 0, &cur), -EPERM);
	assert_int_equal(hl_delete_if(f->c, "$sys/x", 6, 0, &cur), -EPERM);
	assert_int_equal(cur, 7); /* untouched on errors other than a conflict */
}

/* One incrementing process: M increments of the counter, each a read and
 * a publish "if the revision read", retried on conflict. */
static void
incrementer(const char *name, int m, struct hl_t_fail *fail)
{
	struct hl_client *c = NULL;
	struct hl_open_opts o = { .timeout_ms = hl_t_ms(20000) };
	int rc = hl_open(name, &o, &c);
	if (rc)
		hl_t_child_fail(fail, "open: %s", hl_strerror(rc));
	for (int i = 0; i < m; i++) {
		/* Bounded: a compare that never matches (a bug) must fail this
		 * test, not hang it until CTest's timeout. */
		for (int tries = 0;; tries++) {
			if (tries == 100000)
				hl_t_child_fail(fail, "no increment after %d tries", tries);
			char buf[32];
			size_t len = 0;
			uint64_t rev = 0;
			long v = 0;
			rc = hl_get(c, KEY, KL, buf, sizeof(buf) - 1, &len, &rev);
			if (rc == -EBUSY) /* changing as we read (slow sanitizer builds) */
				continue;
			if (rc == -ENOENT)
				rev = 0;
			else if (rc)
				hl_t_child_fail(fail, "get: %s", hl_strerror(rc));
			else {
				buf[len] = '\0';
				v = strtol(buf, NULL, 10);
			}
			int n = snprintf(buf, sizeof(buf), "%ld", v + 1);
			rc = hl_publish_if(c, KEY, KL, buf, (size_t)n, NULL, 0, rev, NULL);
			if (rc == 0)
				break;
			if (rc != HL_ECONFLICT)
				hl_t_child_fail(fail, "publish_if: %s", hl_strerror(rc));
		}
	}
	hl_close(c);
	_exit(0);
}

static void
test_n_processes_times_m_increments_count_exactly(void **state)
{
	struct hl_t_fx *f = *state;
	enum { N = 4, M = 300 };
	struct hl_t_fail *fail = hl_t_shared(sizeof(*fail));
	hl_observer_id id;
	assert_int_equal(hl_observe(f->c, KEY, KL, 0, &id), 0);
	pid_t kids[N];
	for (int i = 0; i < N; i++) {
		kids[i] = hl_t_fork();
		assert_true(kids[i] >= 0);
		if (kids[i] == 0)
			incrementer(f->name, M, fail);
	}
	for (int i = 0; i < N; i++) {
		int st;
		assert_int_equal(waitpid(kids[i], &st, 0), kids[i]);
		if (atomic_load(&fail->failed))
			fail_msg("%s", fail->why);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	char want[32];
	snprintf(want, sizeof(want), "%d", N * M);
	assert_value(f->c, want);
	/* Every value 1..N*M was the key's value once, in order: no increment
	 * was lost or applied twice (the ring holds them all: 1200 small
	 * events in the default 32 KiB ring would not, so read as we go). */
	long expect = 1;
	struct hl_event ev;
	while (expect <= N * M) {
		int rc = hl_next(f->c, &ev, hl_t_ms(5000));
		assert_int_equal(rc, 0);
		if (ev.type == HL_EV_LAGGED || ev.type == HL_EV_RESYNC)
			break; /* the ring was too small to keep all: the count suffices */
		assert_int_equal(ev.type, HL_EV_PUT);
		char buf[32];
		memcpy(buf, ev.new_value, ev.new_len);
		buf[ev.new_len] = '\0';
		assert_int_equal(strtol(buf, NULL, 10), expect);
		expect++;
	}
}

/* The counter demo (heirloom-demo, CAS in a retry loop), twice at once on
 * one key: both succeed and the counter is the sum of their increments. */
static void
test_two_counter_demos_at_once_lose_no_increment(void **state)
{
	struct hl_t_fx *f = *state;
	enum { N = 2, CYCLES = 5, PER = 40 };
	pid_t kids[N];
	for (int i = 0; i < N; i++) {
		const char *const argv[] = { HL_DEMO_PATH,  "--name",    f->name,    "--key",
			                     KEY,           "--no-kill", "--cycles", "5",
			                     "--per-cycle", "40",        NULL };
		kids[i] = hl_t_fork();
		assert_true(kids[i] >= 0);
		if (kids[i] == 0) {
			/* Its step-by-step output is for people: keep it out
			 * of the test's unless asked for. */
			if (!getenv("HL_TEST_VERBOSE")) {
				int fd = open("/dev/null", O_WRONLY);
				dup2(fd, 1);
				dup2(fd, 2);
			}
			execv(argv[0], (char *const *)argv);
			_exit(127);
		}
	}
	for (int i = 0; i < N; i++)
		assert_int_equal(hl_t_wait_exit(kids[i], hl_t_ms(120000)), 0);
	char want[32];
	snprintf(want, sizeof(want), "%d", N * CYCLES * PER);
	assert_value(f->c, want);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_publish_if_absent_creates_and_answers_new_revision),
		T(test_publish_if_matching_revision_applies),
		T(test_conflict_changes_nothing_notifies_nobody_and_returns_current_revision),
		T(test_publish_if_on_missing_key_with_nonzero_revision_conflicts_with_zero),
		T(test_deleted_key_compares_as_absent),
		T(test_conditional_requests_refuse_bad_arguments),
		T(test_n_processes_times_m_increments_count_exactly),
		T(test_two_counter_demos_at_once_lose_no_increment),
	};
	return cmocka_run_group_tests_name("cas", tests, NULL, NULL);
}
