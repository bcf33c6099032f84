/* SPDX-License-Identifier: MIT */
/*
 * test_stats.c: the statistics add up. A scripted workload (publishes that
 * change values, publishes that do not, deletes, observers added and
 * removed, endpoints attached and closed, one reader that falls behind) runs
 * against a real worker, and afterwards every hl_stats() counter equals what
 * the script did, computed by the script itself, not read back.
 */
#include "harness.h"

#include "segment.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef HL_HAVE_JEMALLOC
#define HL_HAVE_JEMALLOC 0
#endif

#define NKEYS         5
#define N_CHANGES     100 /* publishes over k0..k4 that change the value */
#define M_SAME        7   /* publishes of k0's current value */
#define HOT_PUBLISHES 2000
#define HOT_LEN       100

/* The heap bytes one value takes: its size class (alloc.c: blocks of
 * 64 << k bytes holding the 48-byte header, the meta and the value). */
static uint64_t
block_bytes(size_t meta_len, size_t len)
{
	uint64_t need = sizeof(struct hl_shm_value) + meta_len + len;
	uint32_t k = 0;
	while (hl__class_size(k) < need)
		k++;
	return hl__class_size(k);
}

static void
wait_endpoints_removed(struct hl_client *c, uint64_t want)
{
	for (int waited = 0; hl_t_stats(c).endpoints_removed != want; waited++) {
		if (waited > hl_t_ms(10000))
			fail_msg("endpoints_removed %lu, want %lu",
			         (unsigned long)hl_t_stats(c).endpoints_removed,
			         (unsigned long)want);
		hl_t_sleep_ms(1);
	}
}

static uint64_t
hist_sum(const struct hl_stats *s)
{
	uint64_t n = 0;
	for (int i = 0; i < 16; i++)
		n += s->dispatch_hist[i];
	return n;
}

static void
test_every_counter_equals_what_the_script_did(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	const char *const args[] = {
		"--max-keys", "4096",   "--max-observers", "65536",     "--max-endpoints",
		"64",         "--heap", "4194304",         "--ev-ring", "65536",
		"--history",  "16384", /* overrun too: L cannot be caught up */
		NULL
	};
	pid_t w = hl_t_worker_startv(name, args);
	/* The publisher: synchronous, so each publish is applied (and
	 * dispatched) when the call returns. */
	struct hl_client *a = hl_t_open(name, HL_OPEN_SYNC);
	for (int waited = 0; hl_t_stats(a).endpoints != 1; waited++) {
		if (waited > hl_t_ms(10000))
			fail_msg("the publisher's endpoint was not adopted");
		hl_t_sleep_ms(1);
	}
	const struct hl_stats base = hl_t_stats(a);
	assert_int_equal(base.endpoints_attached, 1);
	assert_int_equal(base.reattaches, 1);
	assert_int_equal(base.observers, 0);

	/* What the script did, counted as it goes. */
	uint64_t publishes = 0, skipped = 0, deletes = 0, notifications = 0;
	uint64_t obs_added = 0, obs_removed = 0, attached = 0, removed = 0;
	uint64_t cleanup_runs = 0, cleanup_removed = 0;
	int observers_of[NKEYS] = { 0 };

	/* Endpoints and observers. B reads everything, L will lag, X comes
	 * and goes. */
	struct hl_client *b = hl_t_open(name, 0);
	struct hl_client *l = hl_t_open(name, 0);
	struct hl_client *x = hl_t_open(name, 0);
	attached += 3;
	char key[16];
	hl_observer_id id, xid[2];
	for (int k = 0; k < NKEYS; k++) {
		snprintf(key, sizeof(key), "k%d", k);
		assert_int_equal(hl_observe(b, key, strlen(key), 0, &id), 0);
		observers_of[k]++;
		obs_added++;
	}
	assert_int_equal(hl_observe(b, "k0", 2, 0, &id), 0); /* a second one on k0 */
	observers_of[0]++;
	obs_added++;
	assert_int_equal(hl_observe(l, "hot", 3, 0, &id), 0);
	obs_added++;
	assert_int_equal(hl_observe(x, "k1", 2, 0, &xid[0]), 0);
	assert_int_equal(hl_observe(x, "k2", 2, 0, &xid[1]), 0);
	obs_added += 2;
	assert_int_equal(hl_unobserve(x, xid[1]), 0);
	obs_removed++;
	assert_int_equal(hl_close(x), 0); /* its k1 observer goes with it */
	obs_removed++;
	cleanup_runs++;
	cleanup_removed++;
	removed++;
	wait_endpoints_removed(a, base.endpoints_removed + removed);

	/* N publishes that change a value; M that do not. */
	uint64_t b_events = 0;
	char val[32];
	for (int i = 0; i < N_CHANGES; i++) {
		int k = i % NKEYS;
		snprintf(key, sizeof(key), "k%d", k);
		snprintf(val, sizeof(val), "val-%d", i);
		assert_int_equal(hl_publish(a, key, strlen(key), val, strlen(val), "m", 1), 0);
		publishes++;
		notifications += (uint64_t)observers_of[k];
		b_events += (uint64_t)observers_of[k];
	}
	/* k0's value is the one of the last i with i % NKEYS == 0. */
	snprintf(val, sizeof(val), "val-%d", N_CHANGES - NKEYS);
	for (int i = 0; i < M_SAME; i++) {
		assert_int_equal(hl_publish(a, "k0", 2, val, strlen(val), NULL, 0), 0);
		skipped++;
	}
	/* D deletes of keys with a value; one of a key without (not counted). */
	for (int k = 3; k < NKEYS; k++) {
		snprintf(key, sizeof(key), "k%d", k);
		assert_int_equal(hl_delete(a, key, strlen(key)), 0);
		deletes++;
		notifications += (uint64_t)observers_of[k];
		b_events += (uint64_t)observers_of[k];
	}
	assert_int_equal(hl_delete(a, "nokey", 5), 0);

	/* The lagging reader: L reads nothing while the hot key changes far
	 * more often than its 64 KiB ring holds. */
	char hot[HOT_LEN];
	for (int i = 0; i < HOT_PUBLISHES; i++) {
		memset(hot, 'a' + i % 26, sizeof(hot));
		snprintf(hot, sizeof(hot), "%d", i); /* every value differs */
		assert_int_equal(hl_publish(a, "hot", 3, hot, sizeof(hot), NULL, 0), 0);
		publishes++;
	}

	/* B takes every event it was sent; L takes what fit, then LAGGED with
	 * the count of the rest, then RESYNC with the latest value. */
	struct hl_event ev;
	uint64_t b_got = 0;
	while (hl_next(b, &ev, 300) == 0) {
		assert_true(ev.type == HL_EV_PUT || ev.type == HL_EV_DELETE);
		b_got++;
	}
	assert_int_equal(b_got, b_events);
	uint64_t l_put = 0, l_lagged = 0, l_resync = 0, l_lag_events = 0;
	while (hl_next(l, &ev, 300) == 0) {
		if (ev.type == HL_EV_PUT) {
			l_put++;
		} else if (ev.type == HL_EV_LAGGED) {
			l_lag_events++;
			l_lagged += ev.lagged;
		} else if (ev.type == HL_EV_RESYNC) {
			l_resync++;
			assert_int_equal(ev.new_len, HOT_LEN);
			char want[16];
			snprintf(want, sizeof(want), "%d", HOT_PUBLISHES - 1);
			assert_memory_equal(ev.new_value, want, strlen(want) + 1);
		}
	}
	assert_true(l_lagged > 0); /* the script did make it lag */
	assert_int_equal(l_put + l_lagged, HOT_PUBLISHES);
	assert_int_equal(l_lag_events, 1);
	assert_int_equal(l_resync, 1);
	notifications += l_put;

	struct hl_stats mid = hl_t_stats(l);
	assert_int_equal(mid.resyncs, 1); /* counted by the client that made it */
	assert_int_equal(hl_t_stats(b).resyncs, 0);
	assert_int_equal(hl_t_stats(a).resyncs, 0);

	/* B and L close: their observers go by cleanup. */
	uint64_t b_obs = 0;
	for (int k = 0; k < NKEYS; k++)
		b_obs += (uint64_t)observers_of[k];
	assert_int_equal(hl_close(b), 0);
	assert_int_equal(hl_close(l), 0);
	removed += 2;
	cleanup_runs += 2;
	cleanup_removed += b_obs + 1;
	obs_removed += b_obs + 1;
	wait_endpoints_removed(a, base.endpoints_removed + removed);

	struct hl_stats s = hl_t_stats(a);
#define DELTA(f) (s.f - base.f)
	assert_int_equal(DELTA(publishes), publishes);
	assert_int_equal(DELTA(skipped_unchanged), skipped);
	assert_int_equal(DELTA(deletes), deletes);
	assert_int_equal(DELTA(notifications), notifications);
	assert_int_equal(DELTA(lagged_drops), l_lagged);
	assert_int_equal(DELTA(observers_added), obs_added);
	assert_int_equal(DELTA(observers_removed), obs_removed);
	assert_int_equal(DELTA(endpoints_attached), attached);
	assert_int_equal(DELTA(endpoints_removed), removed);
	assert_int_equal(DELTA(cleanup_runs), cleanup_runs);
	assert_int_equal(DELTA(cleanup_removed), cleanup_removed);
	assert_int_equal(DELTA(handoffs), 0); /* standalone: no keeper */
	assert_int_equal(DELTA(reattaches), 0);
	assert_int_equal(s.epoch, base.epoch);
	/* One revision and one dispatch-latency sample per applied change. */
	assert_int_equal(DELTA(revision), publishes + deletes);
	assert_int_equal(hist_sum(&s) - hist_sum(&base), publishes + deletes);
	/* What exists now: k0..k2 and hot with values (k3, k4 deleted and
	 * unobserved), no observer, the publisher's endpoint. */
	assert_int_equal(s.keys, 4);
	assert_int_equal(s.observers, 0);
	assert_int_equal(s.endpoints, 1);
	assert_int_equal(s.slow_endpoints, 0);
	uint64_t heap = 0;
	for (int k = 0; k < 3; k++) {
		int last = N_CHANGES - NKEYS + k;
		snprintf(val, sizeof(val), "val-%d", last);
		heap += block_bytes(1, strlen(val));
	}
	heap += block_bytes(0, HOT_LEN);
	assert_int_equal(s.heap_used, heap);
	assert_int_equal(s.owner_role, HL_ROLE_WORKER);
	assert_int_equal(s.owner_pid, w);
#if HL_HAVE_JEMALLOC
	for (int waited = 0; hl_t_stats(a).worker_mem_bytes == 0; waited++) {
		if (waited > hl_t_ms(5000))
			fail_msg("worker_mem_bytes stays 0 with jemalloc");
		hl_t_sleep_ms(1);
	}
#else
	assert_int_equal(s.worker_mem_bytes, 0);
#endif
	hl_close(a);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* Keys under $sys/ are the worker's: a client cannot write them. */
static void
test_sys_keys_are_refused_to_clients(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, hl_t_small);
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	struct hl_stats before = hl_t_stats(c);
	assert_int_equal(hl_publish(c, HL_TELEMETRY_DISPATCH, strlen(HL_TELEMETRY_DISPATCH), "x", 1,
	                            NULL, 0),
	                 -EPERM);
	assert_int_equal(hl_publish(c, "$sys/other", 10, "x", 1, NULL, 0), -EPERM);
	assert_int_equal(hl_delete(c, "$sys/other", 10), -EPERM);
	assert_int_equal(hl_get(c, "$sys/other", 10, NULL, 0, NULL, NULL), -ENOENT);
	/* Observing them is what they are for. */
	hl_observer_id id;
	assert_int_equal(hl_observe(c, HL_TELEMETRY_CLEANUP, strlen(HL_TELEMETRY_CLEANUP), 0, &id),
	                 0);
	/* "$sy" and "$sysx" are ordinary keys. */
	assert_int_equal(hl_publish(c, "$sysx", 5, "x", 1, NULL, 0), 0);
	struct hl_stats after = hl_t_stats(c);
	assert_int_equal(after.publishes - before.publishes, 1);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* ---- the telemetry hook ---- */

struct tel {
	uint64_t count_sum, total;
	int reports;
};

/* Parse "count=N total=M" from event EV into T (sum of N, last M). */
static void
tel_add(struct tel *t, const struct hl_event *ev)
{
	char buf[80];
	assert_int_equal(ev->type, HL_EV_PUT);
	assert_true(ev->new_len < sizeof(buf));
	memcpy(buf, ev->new_value, ev->new_len);
	buf[ev->new_len] = '\0';
	unsigned long long n, m;
	if (sscanf(buf, "count=%llu total=%llu", &n, &m) != 2)
		fail_msg("bad telemetry value '%s'", buf);
	assert_true(n > 0);
	assert_true(m >= t->total + n);
	t->count_sum += n;
	t->total = m;
	t->reports++;
}

/* Take telemetry events from C until the report of KEY reaches TOTAL (or
 * fail after a bounded wait). */
static void
tel_wait(struct hl_client *c, struct tel t[3], const char *key, uint64_t total)
{
	static const char *const keys[3] = { HL_TELEMETRY_DISPATCH, HL_TELEMETRY_CLEANUP,
		                             HL_TELEMETRY_LAGGED };
	int want = strcmp(key, keys[0]) == 0 ? 0 : strcmp(key, keys[1]) == 0 ? 1 : 2;
	for (int waited = 0; t[want].total < total; waited++) {
		if (waited > 100)
			fail_msg("%s: total %lu, want %lu", key, (unsigned long)t[want].total,
			         (unsigned long)total);
		struct hl_event ev;
		int rc = hl_next(c, &ev, hl_t_ms(100));
		if (rc == -ETIMEDOUT)
			continue;
		assert_int_equal(rc, 0);
		for (int i = 0; i < 3; i++)
			if (ev.key_len == strlen(keys[i]) &&
			    memcmp(ev.key, keys[i], ev.key_len) == 0)
				tel_add(&t[i], &ev);
	}
}

static void
test_telemetry_reports_dispatch_cleanup_and_lag(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	const char *const args[] = {
		"--max-keys", "4096",   "--max-observers", "65536",     "--max-endpoints",
		"64",         "--heap", "4194304",         "--ev-ring", "65536",
		NULL
	};
	pid_t w = hl_t_worker_startv(name, args);
	struct hl_client *app = hl_t_open(name, 0);
	hl_observer_id id;
	assert_int_equal(
	        hl_observe(app, HL_TELEMETRY_DISPATCH, strlen(HL_TELEMETRY_DISPATCH), 0, &id), 0);
	assert_int_equal(
	        hl_observe(app, HL_TELEMETRY_CLEANUP, strlen(HL_TELEMETRY_CLEANUP), 0, &id), 0);
	assert_int_equal(hl_observe(app, HL_TELEMETRY_LAGGED, strlen(HL_TELEMETRY_LAGGED), 0, &id),
	                 0);
	struct hl_client *pub = hl_t_open(name, HL_OPEN_SYNC);
	struct hl_stats base = hl_t_stats(pub);
	struct tel t[3] = { { 0 } };

	/* Dispatch: 3 observers x 10 changes. */
	struct hl_client *obs = hl_t_open(name, 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(hl_observe(obs, "d", 1, 0, &id), 0);
	for (int i = 0; i < 10; i++) {
		char v[8];
		snprintf(v, sizeof(v), "%d", i);
		assert_int_equal(hl_publish(pub, "d", 1, v, strlen(v), NULL, 0), 0);
	}
	uint64_t want = base.notifications + 30;
	assert_int_equal(hl_t_stats(pub).notifications, want);
	tel_wait(app, t, HL_TELEMETRY_DISPATCH, want);
	/* Counts cover what happened since the key was first observed. */
	assert_int_equal(t[0].count_sum, 30);

	/* Cleanup: a client holding 4 observers closes. */
	struct hl_client *gone = hl_t_open(name, 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(hl_observe(gone, "c", 1, 0, &id), 0);
	hl_close(gone);
	tel_wait(app, t, HL_TELEMETRY_CLEANUP, base.cleanup_removed + 4);
	assert_int_equal(t[1].count_sum, 4);

	/* Lag: a reader that does not read while a key changes 2000 times. */
	struct hl_client *lag = hl_t_open(name, 0);
	assert_int_equal(hl_observe(lag, "h", 1, 0, &id), 0);
	char big[100];
	for (int i = 0; i < 2000; i++) {
		memset(big, 'x', sizeof(big));
		snprintf(big, sizeof(big), "%d", i);
		assert_int_equal(hl_publish(pub, "h", 1, big, sizeof(big), NULL, 0), 0);
	}
	struct hl_stats s = hl_t_stats(pub);
	assert_true(s.lagged_drops > base.lagged_drops);
	tel_wait(app, t, HL_TELEMETRY_LAGGED, s.lagged_drops);
	assert_int_equal(t[2].count_sum, s.lagged_drops - base.lagged_drops);
	tel_wait(app, t, HL_TELEMETRY_DISPATCH, s.notifications);
	assert_int_equal(t[0].total, s.notifications);

	/* Telemetry does not count itself: once everything is reported,
	 * no more reports come (a feedback loop would send one per interval). */
	struct hl_event ev;
	int more = 0;
	while (hl_next(app, &ev, 500) == 0)
		more++;
	assert_int_equal(more, 0);
	assert_int_equal(hl_t_stats(pub).notifications, s.notifications);
	assert_int_equal(hl_t_stats(pub).publishes, s.publishes);

	hl_close(lag);
	hl_close(obs);
	hl_close(pub);
	hl_close(app);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* Nobody observes: nothing is published (no key, no heap). */
static void
test_telemetry_unobserved_writes_nothing(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, hl_t_small);
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	hl_observer_id id;
	assert_int_equal(hl_observe(c, "k", 1, 0, &id), 0);
	assert_int_equal(hl_publish(c, "k", 1, "v", 1, NULL, 0), 0);
	struct hl_event ev;
	assert_int_equal(hl_next(c, &ev, hl_t_ms(5000)), 0);
	hl_t_sleep_ms(300); /* three telemetry intervals */
	struct hl_stats s = hl_t_stats(c);
	assert_int_equal(s.keys, 1);
	assert_int_equal(hl_get(c, HL_TELEMETRY_DISPATCH, strlen(HL_TELEMETRY_DISPATCH), NULL, 0,
	                        NULL, NULL),
	                 -ENOENT);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_counter_equals_what_the_script_did),
		cmocka_unit_test(test_sys_keys_are_refused_to_clients),
		cmocka_unit_test(test_telemetry_reports_dispatch_cleanup_and_lag),
		cmocka_unit_test(test_telemetry_unobserved_writes_nothing),
	};
	return cmocka_run_group_tests_name("stats", tests, NULL, NULL);
}
