/* SPDX-License-Identifier: MIT */
/*
 * test_fanout.c: a key with a long observer list (long enough for the
 * worker's private copy of the list, dispatch.c) delivers to exactly the
 * observers the list holds after every kind of change: observers added,
 * unobserved (the list's head among them), and removed by the cleanup of a
 * killed process (on another worker thread). A stale copy would send events
 * to removed observers or miss added ones.
 */
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KEY    "fan"
#define MINE   200 /* this process's observers */
#define THEIRS 100 /* the child's, removed by cleanup when it is killed */
#define GONE   50  /* of MINE, unobserved behind the head */
#define MORE   10  /* added after the kill */

struct mine {
	hl_observer_id id;
	int live;
	int got; /* events in the current round */
};

/* Publish VALUE and take events until every live observer of M has one;
 * fail on an event for an observer not live or a second one in the round. */
static void
round_trip(struct hl_client *pub, struct hl_client *c, struct mine *m, int n, const char *value)
{
	int want = 0;
	for (int i = 0; i < n; i++) {
		m[i].got = 0;
		want += m[i].live;
	}
	assert_int_equal(hl_publish(pub, KEY, strlen(KEY), value, strlen(value), NULL, 0), 0);
	for (int seen = 0; seen < want;) {
		struct hl_event ev;
		int rc = hl_next(c, &ev, hl_t_ms(10000));
		if (rc)
			fail_msg("%s: %d of %d events, then %s", value, seen, want,
			         hl_strerror(rc));
		assert_int_equal(ev.type, HL_EV_PUT);
		assert_int_equal(ev.new_len, strlen(value));
		assert_memory_equal(ev.new_value, value, ev.new_len);
		int i = 0;
		while (i < n && m[i].id != ev.observer)
			i++;
		if (i == n)
			fail_msg("%s: event for an observer not of this key", value);
		if (!m[i].live)
			fail_msg("%s: event for observer %d, removed", value, i);
		if (m[i].got++)
			fail_msg("%s: second event for observer %d", value, i);
		seen++;
	}
	/* And nothing for anybody else. */
	struct hl_event ev;
	assert_int_equal(hl_next(c, &ev, 50), -ETIMEDOUT);
}

static void
test_long_list_delivers_to_exactly_its_observers_after_each_change(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, hl_t_small);
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t kid = hl_t_fork();
	assert_true(kid >= 0);
	if (kid == 0) {
		/* The other process: THEIRS observers, then wait to be killed
		 * (their events fill its ring unread; it never lags: small). */
		struct hl_client *c = NULL;
		if (hl_open(name, NULL, &c))
			_exit(1);
		for (int i = 0; i < THEIRS; i++) {
			hl_observer_id id;
			if (hl_observe(c, KEY, strlen(KEY), 0, &id))
				_exit(1);
		}
		char ok = 1;
		if (write(p[1], &ok, 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	char ok = 0;
	assert_int_equal(read(p[0], &ok, 1), 1);
	struct hl_client *pub = hl_t_open(name, 0);
	struct hl_client *c = hl_t_open(name, 0);
	struct mine m[MINE + MORE] = { { 0 } };
	for (int i = 0; i < MINE; i++) {
		assert_int_equal(hl_observe(c, KEY, strlen(KEY), 0, &m[i].id), 0);
		m[i].live = 1;
	}
	round_trip(pub, c, m, MINE, "v1");
	round_trip(pub, c, m, MINE, "v2"); /* from the copy built by v1 */

	/* Unobserve observers behind the list's head (the head stays, so the
	 * list's first slot does not change), give the worker time to return
	 * their slots to its pool (after an RCU grace period) and let
	 * observers of another key take them: an event on KEY for one of
	 * those would come from a stale copy of the list. */
	for (int i = 0, k = 0; k < GONE; k++, i += 3) {
		assert_int_equal(hl_unobserve(c, m[i].id), 0);
		m[i].live = 0;
	}
	usleep(200000);
	for (int i = 0; i < GONE; i++) {
		hl_observer_id id;
		assert_int_equal(hl_observe(c, "other", 5, 0, &id), 0);
	}
	round_trip(pub, c, m, MINE, "v3");

	/* Now from the head (the newest observer) down. */
	for (int i = MINE - 1; i >= MINE - 5; i--) {
		assert_int_equal(hl_unobserve(c, m[i].id), 0);
		m[i].live = 0;
	}
	round_trip(pub, c, m, MINE, "v3b");

	/* The child's observers go through endpoint cleanup. */
	struct hl_stats s0, s;
	hl_stats(pub, &s0);
	hl_t_kill9(kid);
	for (int t = 0;; t++) {
		hl_stats(pub, &s);
		if (s.cleanup_removed >= s0.cleanup_removed + THEIRS)
			break;
		if (t > hl_t_ms(10000) / 10)
			fail_msg("cleanup removed %lu of %d",
			         (unsigned long)(s.cleanup_removed - s0.cleanup_removed), THEIRS);
		usleep(10000);
	}
	round_trip(pub, c, m, MINE, "v4");

	for (int i = MINE; i < MINE + MORE; i++) {
		assert_int_equal(hl_observe(c, KEY, strlen(KEY), 0, &m[i].id), 0);
		m[i].live = 1;
	}
	round_trip(pub, c, m, MINE + MORE, "v5");
	round_trip(pub, c, m, MINE + MORE, "v6");

	hl_close(c);
	hl_close(pub);
	close(p[0]);
	close(p[1]);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
		        test_long_list_delivers_to_exactly_its_observers_after_each_change),
	};
	return cmocka_run_group_tests_name("fanout", tests, NULL, NULL);
}
