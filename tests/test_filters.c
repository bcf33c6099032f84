/* SPDX-License-Identifier: MIT */
/*
 * test_filters.c: per-observer filters (HL_OBSERVE_NOPUT, NODELETE, NOOLD)
 * against a real worker: each observer gets only the event types it asked
 * for, a filtered event costs no ring space, the old value is left out only
 * for the observers that asked (also when another observer of the same
 * process wants it), and the filters survive a worker restart.
 */
#include "harness.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define KEY "f/key"
#define KL  (sizeof(KEY) - 1)

static const char *const caps[] = {
	"--max-keys", "64",     "--max-observers", "64",  "--max-endpoints", "8",
	"--heap",     "262144", "--max-value",     "512", "--ev-ring",       "4096",
	NULL
};

static int
setup(void **state)
{
	return hl_t_fx_setup(state, caps, HL_OPEN_SYNC);
}

static int
teardown(void **state)
{
	return hl_t_fx_teardown(state);
}

/* Take every event now queued (the client is SYNC: all are written). */
static int
take_all(struct hl_client *c, struct hl_event *evs, int cap)
{
	int n = 0;
	struct hl_event ev;
	while (hl_next(c, &ev, 0) == 0) {
		assert_true(n < cap);
		evs[n++] = ev; /* pointers are not used past the next call */
	}
	return n;
}

static int
count(const struct hl_event *evs, int n, hl_observer_id id, int type)
{
	int k = 0;
	for (int i = 0; i < n; i++)
		k += evs[i].observer == id && (int)evs[i].type == type;
	return k;
}

static void
put_del_put(struct hl_t_fx *f)
{
	assert_int_equal(hl_publish(f->c, KEY, KL, "v1", 2, NULL, 0), 0);
	assert_int_equal(hl_publish(f->c, KEY, KL, "v2", 2, NULL, 0), 0);
	assert_int_equal(hl_delete(f->c, KEY, KL), 0);
	assert_int_equal(hl_publish(f->c, KEY, KL, "v3", 2, NULL, 0), 0);
}

static void
test_filters_deliver_only_the_types_asked_for(void **state)
{
	struct hl_t_fx *f = *state;
	hl_observer_id all, puts, dels;
	assert_int_equal(hl_observe(f->c, KEY, KL, 0, &all), 0);
	assert_int_equal(hl_observe(f->c, KEY, KL, HL_OBSERVE_NODELETE, &puts), 0);
	assert_int_equal(hl_observe(f->c, KEY, KL, HL_OBSERVE_NOPUT, &dels), 0);
	put_del_put(f);
	struct hl_event evs[32];
	int n = take_all(f->c, evs, 32);
	assert_int_equal(count(evs, n, all, HL_EV_PUT), 3);
	assert_int_equal(count(evs, n, all, HL_EV_DELETE), 1);
	assert_int_equal(count(evs, n, puts, HL_EV_PUT), 3);
	assert_int_equal(count(evs, n, puts, HL_EV_DELETE), 0);
	assert_int_equal(count(evs, n, dels, HL_EV_PUT), 0);
	assert_int_equal(count(evs, n, dels, HL_EV_DELETE), 1);
	assert_int_equal(n, 8);
	/* The worker wrote only what was delivered. */
	struct hl_stats st = hl_t_stats(f->c);
	assert_int_equal(st.notifications, 8);
	assert_int_equal(st.lagged_drops, 0);
}

static void
test_filtered_observer_takes_no_ring_space_and_never_lags(void **state)
{
	struct hl_t_fx *f = *state;
	/* A second process's deletes-only observer, never read: 4 KiB of
	 * ring would lag after a few dozen puts if they were written. */
	struct hl_client *idle = hl_t_open(f->name, 0);
	hl_observer_id dels;
	assert_int_equal(hl_observe(idle, KEY, KL, HL_OBSERVE_NOPUT, &dels), 0);
	char v[200];
	memset(v, 'x', sizeof(v));
	for (int i = 0; i < 200; i++) {
		v[0] = (char)('a' + i % 26);
		v[1] = (char)('a' + i / 26);
		assert_int_equal(hl_publish(f->c, KEY, KL, v, sizeof(v), NULL, 0), 0);
	}
	assert_int_equal(hl_delete(f->c, KEY, KL), 0);
	struct hl_stats st = hl_t_stats(f->c);
	assert_int_equal(st.lagged_drops, 0);
	struct hl_event ev;
	assert_int_equal(hl_next(idle, &ev, hl_t_ms(5000)), 0);
	assert_int_equal(ev.type, HL_EV_DELETE);
	assert_int_equal(ev.observer, dels);
	assert_int_equal(ev.old_len, sizeof(v));
	assert_int_equal(hl_next(idle, &ev, 0), -EAGAIN);
	hl_close(idle);
}

static void
test_old_value_left_out_only_for_observers_that_asked(void **state)
{
	struct hl_t_fx *f = *state;
	hl_observer_id with, without;
	assert_int_equal(hl_publish(f->c, KEY, KL, "old", 3, NULL, 0), 0);
	assert_int_equal(hl_observe(f->c, KEY, KL, 0, &with), 0);
	assert_int_equal(hl_observe(f->c, KEY, KL, HL_OBSERVE_NOOLD, &without), 0);
	assert_int_equal(hl_publish(f->c, KEY, KL, "new", 3, NULL, 0), 0);
	struct hl_event ev;
	for (int i = 0; i < 2; i++) {
		assert_int_equal(hl_next(f->c, &ev, hl_t_ms(5000)), 0);
		assert_int_equal(ev.type, HL_EV_PUT);
		assert_int_equal(ev.new_len, 3);
		assert_memory_equal(ev.new_value, "new", 3);
		if (ev.observer == with) {
			assert_int_equal(ev.has_old, 1);
			assert_int_equal(ev.old_len, 3);
			assert_memory_equal(ev.old_value, "old", 3);
		} else {
			assert_int_equal(ev.observer, without);
			assert_int_equal(ev.has_old, 0);
			assert_null(ev.old_value);
			assert_int_equal(ev.old_len, 0);
		}
	}
	/* Another process whose only observer says NOOLD gets none either,
	 * and a delete event carries none for it. */
	struct hl_client *c2 = hl_t_open(f->name, 0);
	hl_observer_id o2;
	assert_int_equal(hl_observe(c2, KEY, KL, HL_OBSERVE_NOOLD, &o2), 0);
	assert_int_equal(hl_delete(f->c, KEY, KL), 0);
	assert_int_equal(hl_next(c2, &ev, hl_t_ms(5000)), 0);
	assert_int_equal(ev.type, HL_EV_DELETE);
	assert_int_equal(ev.has_old, 0);
	assert_null(ev.old_value);
	hl_close(c2);
}

static void
test_filters_survive_a_worker_restart(void **state)
{
	struct hl_t_fx *f = *state;
	hl_observer_id puts, dels;
	assert_int_equal(hl_observe(f->c, KEY, KL, HL_OBSERVE_NODELETE | HL_OBSERVE_NOOLD, &puts),
	                 0);
	assert_int_equal(hl_observe(f->c, KEY, KL, HL_OBSERVE_NOPUT, &dels), 0);
	hl_t_kill9(f->worker);
	f->worker = hl_t_worker_startv(f->name, caps);
	put_del_put(f);
	struct hl_event evs[32];
	int n = take_all(f->c, evs, 32);
	assert_int_equal(count(evs, n, puts, HL_EV_PUT), 3);
	assert_int_equal(count(evs, n, puts, HL_EV_DELETE), 0);
	assert_int_equal(count(evs, n, dels, HL_EV_DELETE), 1);
	assert_int_equal(count(evs, n, dels, HL_EV_PUT), 0);
	for (int i = 0; i < n; i++)
		if (evs[i].observer == puts)
			assert_int_equal(evs[i].has_old, 0);
	assert_int_equal(n, 4);
}

static void
test_observe_refuses_unknown_or_contradictory_filters(void **state)
{
	struct hl_t_fx *f = *state;
	hl_observer_id id = 42;
	assert_int_equal(hl_observe(f->c, KEY, KL, HL_OBSERVE_NOPUT | HL_OBSERVE_NODELETE, &id),
	                 -EINVAL);
	assert_int_equal(hl_observe(f->c, KEY, KL, 0x80u, &id), -EINVAL);
	struct hl_observe_opts o = { .flags = HL_OBSERVE_NOOLD };
	o.reserved[0] = 1;
	assert_int_equal(hl_observe_with(f->c, KEY, KL, &o, &id), -EINVAL);
	assert_int_equal(id, 42);
	o.reserved[0] = 0;
	assert_int_equal(hl_observe_with(f->c, KEY, KL, &o, &id), 0);
	assert_int_not_equal(id, 42);
	assert_int_equal(hl_observe_with(f->c, KEY, KL, NULL, &id), 0);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_filters_deliver_only_the_types_asked_for),
		T(test_filtered_observer_takes_no_ring_space_and_never_lags),
		T(test_old_value_left_out_only_for_observers_that_asked),
		T(test_filters_survive_a_worker_restart),
		T(test_observe_refuses_unknown_or_contradictory_filters),
	};
	return cmocka_run_group_tests_name("filters", tests, NULL, NULL);
}
