/* SPDX-License-Identifier: MIT */
/*
 * test_handoff.c: the heir protocol with real processes. The keeper gives
 * the table to one worker at a time and takes it back on a confirmed exit
 * (SIGKILL) or a clean hand-back (SIGTERM); a second worker is refused; a
 * keeper killed and restarted under a running worker adopts it without
 * disturbing it and without losing a publish or an event; a supervising
 * keeper restarts a killed worker and the data carries on, at once after a
 * stable run and with back-off after quick exits; nothing a peer sends on
 * the socket stops the keeper.
 *
 * Every wait is bounded (hl_t_ms); nothing asserts on how long a step took.
 * Each test has its own segment and its own socket in a fresh directory.
 */
#include "harness.h"

#include "layout.h"
#include "proto.h"
#include "segment.h"
/* The supervisor's restart policy is a pure header: tested here with a
 * made-up clock, next to the keeper that uses it. */
#include "../daemon/keeper/restart.h"

#include <dirent.h>
#include <grp.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int
setup(void **state)
{
	return hl_t_kfx_setup(state, "handoff");
}

static pid_t
keeper(struct hl_t_kfx *f, const char *const *extra)
{
	return hl_t_kfx_track(f, hl_t_keeper_startv(f->name, f->sock, extra, f->klog));
}

static pid_t
worker(struct hl_t_kfx *f)
{
	return hl_t_kfx_track(f, hl_t_kworker_start(f->name, f->sock, f->wlog));
}

/* SIGTERM, wait, and return the exit status (-1 on timeout). */
static int
stop(struct hl_t_kfx *f, pid_t pid)
{
	int st = hl_t_worker_stop(pid);
	hl_t_kfx_untrack(f, pid);
	return st;
}

static void
kill9(struct hl_t_kfx *f, pid_t pid)
{
	hl_t_kill9(pid);
	hl_t_kfx_untrack(f, pid);
}

static struct hl_t_owner
owner(struct hl_t_kfx *f)
{
	struct hl_t_owner o;
	assert_int_equal(hl_t_owner_read(f->name, &o), 0);
	return o;
}

static void
put(struct hl_client *c, const char *key, const char *val)
{
	int rc = hl_publish(c, key, strlen(key), val, strlen(val), NULL, 0);
	if (rc)
		fail_msg("publish %s=%s: %s", key, val, hl_strerror(rc));
}

static long
get_long(struct hl_client *c, const char *key)
{
	char buf[32];
	size_t len = 0;
	int rc = hl_get(c, key, strlen(key), buf, sizeof(buf) - 1, &len, NULL);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		fail_msg("get %s: %s", key, hl_strerror(rc));
	assert_true(len < sizeof(buf));
	buf[len] = '\0';
	return strtol(buf, NULL, 10);
}

/* ---- giving and taking back ---- */

static void
test_keeper_gives_the_table_and_the_worker_takes_it(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, NULL);
	struct hl_t_owner o = owner(f);
	assert_int_equal(o.role, HL_ROLE_KEEPER);
	assert_int_equal(o.pid, k);
	assert_int_equal(o.keeper_pid, k);
	uint64_t e0 = o.epoch;

	pid_t w = worker(f);
	o = owner(f);
	assert_int_equal(o.role, HL_ROLE_WORKER);
	assert_int_equal(o.pid, w);
	assert_int_equal(o.epoch, e0 + 1);
	assert_int_equal(o.handoffs, 1);
	assert_int_equal(o.worker_ready, 1);
	struct hl_t_logrec r;
	assert_int_equal(hl_t_log_find(f->name, HL_LOG_HANDOFF, (uint32_t)w, &r), 0);
	assert_int_equal(r.epoch, e0 + 1);

	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	put(c, "k", "41");
	assert_int_equal(get_long(c, "k"), 41);
	hl_close(c);
}

static void
test_worker_sigterm_hands_the_table_back_cleanly(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, NULL);
	pid_t w = worker(f);
	uint64_t e = owner(f).epoch;

	assert_int_equal(stop(f, w), 0);
	struct hl_t_owner o = owner(f);
	assert_int_equal(o.role, HL_ROLE_KEEPER);
	assert_int_equal(o.pid, k);
	assert_int_equal(o.epoch, e + 1);
	assert_int_equal(o.worker_ready, 0);
	struct hl_t_logrec r;
	assert_int_equal(hl_t_log_find(f->name, HL_LOG_HANDBACK, (uint32_t)w, &r), 0);
	assert_int_equal(r.epoch, e);
	/* A clean hand-back is not a crash: no exit record. */
	assert_int_equal(hl_t_log_find(f->name, HL_LOG_WORKER_EXIT, (uint32_t)w, &r), -1);
}

static void
test_worker_sigkill_is_reclaimed_by_the_keeper(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, NULL);
	pid_t w = worker(f);
	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	put(c, "k", "7");
	uint64_t e = owner(f).epoch;

	kill9(f, w);
	assert_int_equal(hl_t_wait_owner(f->name, HL_ROLE_KEEPER, (uint32_t)k, hl_t_ms(10000)), 0);
	struct hl_t_owner o = owner(f);
	assert_int_equal(o.epoch, e + 1);
	assert_int_equal(o.worker_ready, 0);
	struct hl_t_logrec r;
	assert_int_equal(hl_t_log_find(f->name, HL_LOG_WORKER_EXIT, (uint32_t)w, &r), 0);
	assert_int_equal(r.epoch, e);
	/* Not the worker's parent: the exit is known, its status is not. */
	assert_int_equal(r.code, HL_EXIT_UNKNOWN);
	assert_string_equal(r.text, "exited");

	/* get needs no worker; the next worker carries on from the same state. */
	assert_int_equal(get_long(c, "k"), 7);
	pid_t w2 = worker(f);
	assert_int_equal(owner(f).epoch, e + 2);
	assert_int_equal(owner(f).pid, w2);
	assert_int_equal(get_long(c, "k"), 7);
	put(c, "k", "8");
	assert_int_equal(get_long(c, "k"), 8);
	hl_close(c);
}

static void
test_second_worker_is_refused_while_the_first_lives(void **state)
{
	struct hl_t_kfx *f = *state;
	keeper(f, NULL);
	pid_t w = worker(f);
	uint64_t e = owner(f).epoch;

	const char *argv[] = { HL_WORKER_PATH, "--name", f->name, "--socket", f->sock, NULL };
	pid_t w2 = hl_t_kfx_track(f, hl_t_spawn(argv, f->wlog));
	int st = hl_t_wait_exit(w2, hl_t_ms(10000));
	hl_t_kfx_untrack(f, w2);
	assert_true(st > 0 && st < 128); /* a refusal, not a crash or a hang */
	char want[96];
	snprintf(want, sizeof(want), "served by worker pid %d", (int)w);
	assert_true(hl_t_file_has(f->wlog, want, hl_t_ms(2000)));

	struct hl_t_owner o = owner(f);
	assert_int_equal(o.role, HL_ROLE_WORKER);
	assert_int_equal(o.pid, w);
	assert_int_equal(o.epoch, e);
}

static void
test_worker_waits_for_the_keeper_and_stops_while_waiting(void **state)
{
	struct hl_t_kfx *f = *state;
	const char *argv[] = { HL_WORKER_PATH, "--name", f->name, "--socket", f->sock, NULL };
	pid_t w = hl_t_kfx_track(f, hl_t_spawn(argv, f->wlog));
	char want[256];
	snprintf(want, sizeof(want), "waiting for keeper at %s", f->sock);
	assert_true(hl_t_file_has(f->wlog, want, hl_t_ms(10000)));
	keeper(f, NULL);
	assert_int_equal(hl_t_wait_serving(f->name, 0, hl_t_ms(10000)), w);

	/* A worker with no keeper in sight stops at once on SIGTERM. */
	char other[160];
	snprintf(other, sizeof(other), "%s/nobody.sock", f->dir);
	const char *argv2[] = { HL_WORKER_PATH, "--name", f->name, "--socket", other, NULL };
	pid_t w2 = hl_t_kfx_track(f, hl_t_spawn(argv2, f->wlog));
	snprintf(want, sizeof(want), "waiting for keeper at %s", other);
	assert_true(hl_t_file_has(f->wlog, want, hl_t_ms(10000)));
	assert_int_equal(stop(f, w2), 0);
}

/* ---- the keeper dies ---- */

static void
test_restarted_keeper_becomes_heir_and_later_reclaims(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k1 = keeper(f, NULL);
	pid_t w = worker(f);
	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	hl_observer_id id;
	assert_int_equal(hl_observe(c, "a", 1, 0, &id), 0);
	put(c, "a", "1");
	uint64_t e = owner(f).epoch;

	kill9(f, k1);
	pid_t k2 = keeper(f, NULL);
	/* The new keeper adopted the living worker: same owner, same epoch. */
	struct hl_t_owner o = owner(f);
	assert_int_equal(o.role, HL_ROLE_WORKER);
	assert_int_equal(o.pid, w);
	assert_int_equal(o.epoch, e);
	assert_int_equal(o.keeper_pid, k2);
	assert_int_equal(o.worker_ready, 1);
	struct hl_t_logrec r;
	assert_int_equal(hl_t_log_find(f->name, HL_LOG_KEEPER_START, (uint32_t)k2, &r), 0);

	/* Clients kept going: publish and observe through the same worker. */
	put(c, "a", "2");
	put(c, "a", "3");
	long expect = 1;
	while (expect <= 3) {
		struct hl_event ev;
		int rc = hl_next(c, &ev, hl_t_ms(10000));
		if (rc)
			fail_msg("hl_next: %s", hl_strerror(rc));
		assert_int_equal(ev.type, HL_EV_PUT);
		assert_int_equal(ev.new_len, 1);
		assert_int_equal(((const char *)ev.new_value)[0], '0' + expect);
		expect++;
	}
	hl_close(c);

	/* ... and the new heir takes the table back when the worker dies. */
	kill9(f, w);
	assert_int_equal(hl_t_wait_owner(f->name, HL_ROLE_KEEPER, (uint32_t)k2, hl_t_ms(10000)), 0);
	o = owner(f);
	assert_int_equal(o.epoch, e + 1);
	assert_int_equal(o.worker_ready, 0);
	assert_int_equal(hl_t_log_find(f->name, HL_LOG_WORKER_EXIT, (uint32_t)w, &r), 0);
	assert_int_equal(r.epoch, e);
}

static void
test_worker_links_up_with_a_restarted_keeper_and_hands_back_to_it(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k1 = keeper(f, NULL);
	pid_t w = worker(f);
	kill9(f, k1);
	char want[256];
	snprintf(want, sizeof(want), "lost the keeper at %s", f->sock);
	assert_true(hl_t_file_has(f->wlog, want, hl_t_ms(10000)));
	pid_t k2 = keeper(f, NULL);
	/* In the background, before anyone asks it to stop. */
	snprintf(want, sizeof(want), "linked up with keeper pid %d", (int)k2);
	assert_true(hl_t_file_has(f->wlog, want, hl_t_ms(10000)));
	uint64_t e = owner(f).epoch;

	assert_int_equal(stop(f, w), 0);
	struct hl_t_owner o = owner(f);
	assert_int_equal(o.role, HL_ROLE_KEEPER);
	assert_int_equal(o.pid, k2);
	assert_int_equal(o.epoch, e + 1);
	struct hl_t_logrec r;
	assert_int_equal(hl_t_log_find(f->name, HL_LOG_HANDBACK, (uint32_t)w, &r), 0);
}

static void
test_worker_stopping_with_no_keeper_leaves_the_table_unowned(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, NULL);
	pid_t w = worker(f);
	uint64_t e = owner(f).epoch;
	kill9(f, k);

	assert_int_equal(stop(f, w), 0);
	struct hl_t_owner o = owner(f);
	assert_int_equal(o.role, HL_ROLE_NONE);
	assert_int_equal(o.epoch, e + 1);
	assert_true(hl_t_file_has(f->wlog, "left the table with no owner", hl_t_ms(2000)));
	/* A keeper that starts later simply takes it. */
	pid_t k2 = keeper(f, NULL);
	o = owner(f);
	assert_int_equal(o.role, HL_ROLE_KEEPER);
	assert_int_equal(o.pid, k2);
}

/* Shared by the processes of the next test. */
#define NPUB 2
#define NVAL 300
struct progress {
	_Atomic long acked[NPUB]; /* last value each publisher got acknowledged */
	_Atomic int obs_ready;
	struct hl_t_fail fail;
};

static void
publisher(const char *name, int i, struct progress *p)
{
	struct hl_client *c = NULL;
	struct hl_open_opts o = { .flags = HL_OPEN_SYNC, .timeout_ms = hl_t_ms(20000) };
	char key[8], val[24];
	int rc = hl_open(name, &o, &c);
	if (rc)
		hl_t_child_fail(&p->fail, "publisher %d: open: %s", i, hl_strerror(rc));
	snprintf(key, sizeof(key), "p%d", i);
	for (long v = 1; v <= NVAL; v++) {
		int n = snprintf(val, sizeof(val), "%ld", v);
		rc = hl_publish(c, key, strlen(key), val, (size_t)n, NULL, 0);
		if (rc)
			hl_t_child_fail(&p->fail, "publisher %d: publish %ld: %s", i, v,
			                hl_strerror(rc));
		atomic_store(&p->acked[i], v);
		hl_t_sleep_ms(1); /* spread the run over the keeper's restarts */
	}
	hl_close(c);
	_exit(0);
}

static void
observer(const char *name, struct progress *p)
{
	struct hl_client *c = NULL;
	struct hl_open_opts o = { .timeout_ms = hl_t_ms(20000) };
	hl_observer_id ids[NPUB];
	long last[NPUB] = { 0 };
	uint64_t last_rev[NPUB] = { 0 };
	int rc = hl_open(name, &o, &c);
	if (rc)
		hl_t_child_fail(&p->fail, "observer: open: %s", hl_strerror(rc));
	for (int i = 0; i < NPUB; i++) {
		char key[8];
		snprintf(key, sizeof(key), "p%d", i);
		rc = hl_observe(c, key, strlen(key), 0, &ids[i]);
		if (rc)
			hl_t_child_fail(&p->fail, "observer: observe %s: %s", key, hl_strerror(rc));
	}
	atomic_store(&p->obs_ready, 1);
	int done = 0;
	while (done < NPUB) {
		struct hl_event ev;
		rc = hl_next(c, &ev, hl_t_ms(20000));
		if (rc)
			hl_t_child_fail(&p->fail, "observer: hl_next: %s (had %ld, %ld)",
			                hl_strerror(rc), last[0], last[1]);
		int i = 0;
		while (i < NPUB && ids[i] != ev.observer)
			i++;
		if (i == NPUB || ev.type != HL_EV_PUT)
			hl_t_child_fail(&p->fail, "observer: event type %d for observer %lu",
			                ev.type, (unsigned long)ev.observer);
		char buf[16];
		size_t n = ev.new_len < sizeof(buf) - 1 ? ev.new_len : sizeof(buf) - 1;
		memcpy(buf, ev.new_value, n);
		buf[n] = '\0';
		long v = strtol(buf, NULL, 10);
		/* Every revision, once, in order. */
		if (v != last[i] + 1 || ev.revision <= last_rev[i])
			hl_t_child_fail(
			        &p->fail, "observer: p%d got %ld (rev %lu) after %ld (rev %lu)", i,
			        v, (unsigned long)ev.revision, last[i], (unsigned long)last_rev[i]);
		last[i] = v;
		last_rev[i] = ev.revision;
		if (v == NVAL)
			done++;
	}
	hl_close(c);
	_exit(0);
}

static void
test_killing_the_keeper_mid_run_loses_nothing(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, NULL);
	pid_t w = worker(f);
	uint64_t e = owner(f).epoch;
	struct progress *p = hl_t_shared(sizeof(*p));

	pid_t obs = hl_t_fork();
	assert_true(obs >= 0);
	if (obs == 0)
		observer(f->name, p);
	hl_t_kfx_track(f, obs);
	for (int waited = 0; !atomic_load(&p->obs_ready) && waited < hl_t_ms(10000); waited += 5)
		hl_t_sleep_ms(5);
	assert_true(atomic_load(&p->obs_ready));
	pid_t pubs[NPUB];
	for (int i = 0; i < NPUB; i++) {
		pubs[i] = hl_t_fork();
		assert_true(pubs[i] >= 0);
		if (pubs[i] == 0)
			publisher(f->name, i, p);
		hl_t_kfx_track(f, pubs[i]);
	}

	/* Kill the keeper at three points of the run, by progress, not time;
	 * after each, every acknowledged publish is readable. */
	struct hl_client *c = hl_t_open(f->name, 0);
	static const long at[] = { NVAL / 6, NVAL / 2, NVAL * 5 / 6 };
	for (size_t j = 0; j < sizeof(at) / sizeof(at[0]); j++) {
		for (int waited = 0; atomic_load(&p->acked[0]) < at[j] && waited < hl_t_ms(20000);
		     waited += 1)
			hl_t_sleep_ms(1);
		kill9(f, k);
		long acked[NPUB];
		for (int i = 0; i < NPUB; i++)
			acked[i] = atomic_load(&p->acked[i]);
		for (int i = 0; i < NPUB; i++) {
			char key[8];
			snprintf(key, sizeof(key), "p%d", i);
			assert_true(get_long(c, key) >= acked[i]);
		}
		k = keeper(f, NULL);
	}
	for (int i = 0; i < NPUB; i++) {
		int st = hl_t_wait_exit(pubs[i], hl_t_ms(30000));
		hl_t_kfx_untrack(f, pubs[i]);
		if (st != 0)
			fail_msg("publisher %d: status %d: %s", i, st, p->fail.why);
	}
	int st = hl_t_wait_exit(obs, hl_t_ms(30000));
	hl_t_kfx_untrack(f, obs);
	if (st != 0)
		fail_msg("observer: status %d: %s", st, p->fail.why);
	for (int i = 0; i < NPUB; i++) {
		char key[8];
		snprintf(key, sizeof(key), "p%d", i);
		assert_int_equal(get_long(c, key), NVAL);
	}
	hl_close(c);
	/* Three keepers came and went; the worker never noticed. */
	struct hl_t_owner o = owner(f);
	assert_int_equal(o.role, HL_ROLE_WORKER);
	assert_int_equal(o.pid, w);
	assert_int_equal(o.epoch, e);
	assert_int_equal(o.keeper_pid, k);
	munmap(p, sizeof(*p));
}

/* ---- supervisor mode ---- */

static const char *const spawn_args[] = { "--spawn-worker=" HL_WORKER_PATH, NULL };

static void
test_supervisor_restarts_a_killed_worker_and_the_counter_survives(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, spawn_args);
	pid_t w = hl_t_wait_serving(f->name, 0, hl_t_ms(10000));
	assert_true(w > 0);
	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	long v = 0;
	for (int cycle = 0; cycle < 3; cycle++) {
		for (int i = 0; i < 3; i++) {
			char val[24];
			v = get_long(c, "counter") + 1;
			snprintf(val, sizeof(val), "%ld", v);
			put(c, "counter", val);
			assert_int_equal(get_long(c, "counter"), v);
		}
		assert_int_equal(kill(w, SIGKILL), 0);
		pid_t next = hl_t_wait_serving(f->name, w, hl_t_ms(15000));
		assert_true(next > 0);
		/* The keeper is this worker's parent: the exit record has the
		 * signal. */
		struct hl_t_logrec r;
		assert_int_equal(hl_t_log_find(f->name, HL_LOG_WORKER_EXIT, (uint32_t)w, &r), 0);
		assert_int_equal(r.code, -SIGKILL);
		assert_string_equal(r.text, "killed by SIGKILL");
		w = next;
	}
	assert_int_equal(v, 9);
	assert_int_equal(get_long(c, "counter"), 9);
	hl_close(c);

	/* SIGTERM to the keeper: the worker hands back, both exit cleanly. */
	assert_int_equal(stop(f, k), 0);
	assert_true(kill(w, 0) < 0 && errno == ESRCH); /* gone and reaped */
	struct hl_t_logrec r;
	assert_int_equal(hl_t_log_find(f->name, HL_LOG_HANDBACK, (uint32_t)w, &r), 0);
	assert_int_equal(owner(f).role, HL_ROLE_NONE);
}

static void
test_supervisor_does_not_restart_a_worker_that_handed_back(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, spawn_args);
	pid_t w = hl_t_wait_serving(f->name, 0, hl_t_ms(10000));
	assert_true(w > 0);
	assert_int_equal(kill(w, SIGTERM), 0);
	assert_true(hl_t_file_has(f->klog, "not restarting the worker", hl_t_ms(10000)));
	struct hl_t_owner o = owner(f);
	assert_int_equal(o.role, HL_ROLE_KEEPER);
	assert_int_equal(o.pid, k);
}

/* How many times NEEDLE occurs in the file at PATH (0 if unreadable), and
 * the offset of the first occurrence at or after FROM in *at (-1: none). */
static int
file_count(const char *path, const char *needle, long from, long *at)
{
	static char buf[1 << 16];
	int n = 0, fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t len = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	if (fd >= 0)
		close(fd);
	if (at)
		*at = -1;
	if (len <= 0)
		return 0;
	buf[len] = '\0';
	for (const char *p = strstr(buf, needle); p; p = strstr(p + 1, needle)) {
		if (at && *at < 0 && p - buf >= from)
			*at = (long)(p - buf);
		n++;
	}
	return n;
}

static void
test_restart_policy_backs_off_only_quick_exits_in_a_row(void **state)
{
	(void)state;
	struct hl_k_backoff b;
	/* --restart-min 100ms --restart-max 1s --restart-stable 1s */
	hl_k_backoff_init(&b, 100, 1000, 1000);
	/* A worker that served for a while: at once, every time. */
	assert_int_equal(hl_k_backoff_next(&b, 5000), 0);
	assert_int_equal(hl_k_backoff_next(&b, 1000), 0);
	/* Quick exits in a row: min, doubling, capped at max. */
	assert_int_equal(hl_k_backoff_next(&b, 3), 100);
	assert_int_equal(hl_k_backoff_next(&b, 999), 200);
	assert_int_equal(hl_k_backoff_next(&b, 0), 400);
	assert_int_equal(hl_k_backoff_next(&b, 0), 800);
	assert_int_equal(hl_k_backoff_next(&b, 0), 1000);
	assert_int_equal(hl_k_backoff_next(&b, 0), 1000);
	/* A stable run ends the loop: at once, and the next quick exit
	 * starts over at min. */
	assert_int_equal(hl_k_backoff_next(&b, 60000), 0);
	assert_int_equal(hl_k_backoff_next(&b, 10), 100);
	assert_int_equal(hl_k_backoff_next(&b, 10), 200);
	/* --restart-stable 0: never a crash loop, always at once. */
	hl_k_backoff_init(&b, 100, 5000, 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(hl_k_backoff_next(&b, 0), 0);
	/* --restart-min 0 backs off by nothing (as before this policy). */
	hl_k_backoff_init(&b, 0, 5000, 1000);
	assert_int_equal(hl_k_backoff_next(&b, 0), 0);
	assert_int_equal(hl_k_backoff_next(&b, 0), 0);
}

static void
test_supervisor_restarts_a_worker_that_ran_stably_at_once(void **state)
{
	struct hl_t_kfx *f = *state;
	/* Every run counts as stable (a worker that serves has run far more
	 * than 1 ms since it was started): no kill may wait. */
	const char *extra[] = { "--spawn-worker=" HL_WORKER_PATH, "--restart-stable=1ms", NULL };
	keeper(f, extra);
	pid_t w = hl_t_wait_serving(f->name, 0, hl_t_ms(10000));
	assert_true(w > 0);
	for (int i = 1; i <= 3; i++) {
		assert_int_equal(kill(w, SIGKILL), 0);
		pid_t next = hl_t_wait_serving(f->name, w, hl_t_ms(15000));
		assert_true(next > 0);
		w = next;
		assert_int_equal(file_count(f->klog, "restarting the worker at once", 0, NULL), i);
	}
	assert_int_equal(file_count(f->klog, "restarting the worker in ", 0, NULL), 0);
}

static void
test_supervisor_backs_off_quick_exits_after_a_stable_run(void **state)
{
	struct hl_t_kfx *f = *state;
	/* The "worker" is a script: it runs the real worker the first time,
	 * and exits 1 at once every later time (a worker that cannot start
	 * any more). */
	char script[192], ran[160], stable[48], spawn[224];
	snprintf(script, sizeof(script), "%s/worker.sh", f->dir);
	snprintf(ran, sizeof(ran), "%s/ran", f->dir);
	FILE *sf = fopen(script, "w");
	assert_non_null(sf);
	fprintf(sf, "#!/bin/sh\n[ -e '%s' ] && exit 1\n: > '%s'\nexec '%s' \"$@\"\n", ran, ran,
	        HL_WORKER_PATH);
	assert_int_equal(fclose(sf), 0);
	assert_int_equal(chmod(script, 0700), 0);
	/* Stable after 300 ms (scaled like every wait): the real worker is
	 * killed well after that, the script's exits come well before. */
	int stable_ms = hl_t_ms(300);
	snprintf(stable, sizeof(stable), "--restart-stable=%dms", stable_ms);
	snprintf(spawn, sizeof(spawn), "--spawn-worker=%s", script);
	const char *extra[] = { spawn, stable, NULL };
	keeper(f, extra);
	pid_t w = hl_t_wait_serving(f->name, 0, hl_t_ms(10000));
	assert_true(w > 0);
	hl_t_sleep_ms(2 * stable_ms);
	assert_int_equal(kill(w, SIGKILL), 0);
	/* The kill after a stable run restarts at once; the quick exits that
	 * follow wait --restart-min (100 ms), then twice that. */
	assert_true(hl_t_file_has(f->klog, "restarting the worker in 200 ms", hl_t_ms(10000)));
	long once, first, second;
	assert_int_equal(file_count(f->klog, "restarting the worker at once", 0, &once), 1);
	assert_int_equal(file_count(f->klog, "restarting the worker in 100 ms", once, &first), 1);
	assert_int_equal(file_count(f->klog, "restarting the worker in 200 ms", first, &second), 1);
	assert_true(once >= 0 && first > once && second > first);
	assert_true(hl_t_file_has(f->klog, "exited with status 1 without taking the table",
	                          hl_t_ms(2000)));
}

/* ---- what the keeper refuses ---- */

static void
test_second_keeper_on_the_same_segment_is_refused(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, NULL);
	char sock2[160];
	snprintf(sock2, sizeof(sock2), "%s/k2.sock", f->dir);
	const char *argv[] = { HL_KEEPER_PATH, "--foreground", "--name", f->name,
		               "--socket",     sock2,          NULL };
	pid_t k2 = hl_t_kfx_track(f, hl_t_spawn(argv, f->klog));
	assert_int_equal(hl_t_wait_exit(k2, hl_t_ms(10000)), 3);
	hl_t_kfx_untrack(f, k2);
	char want[96];
	snprintf(want, sizeof(want), "another keeper (pid %d)", (int)k);
	assert_true(hl_t_file_has(f->klog, want, hl_t_ms(2000)));
	assert_int_equal(owner(f).keeper_pid, k);
}

static void
test_keeper_refuses_a_segment_that_does_not_validate(void **state)
{
	struct hl_t_kfx *f = *state;
	char path[96];
	static uint8_t junk[65536], back[65536];
	assert_int_equal(hl__seg_path(f->name, path, sizeof(path)), 0);
	int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 131u + 7u);
	assert_int_equal(pwrite(fd, junk, sizeof(junk), 0), (ssize_t)sizeof(junk));

	const char *argv[] = { HL_KEEPER_PATH, "--foreground", "--name", f->name,
		               "--socket",     f->sock,        NULL };
	pid_t k = hl_t_kfx_track(f, hl_t_spawn(argv, f->klog));
	assert_int_equal(hl_t_wait_exit(k, hl_t_ms(10000)), 2);
	hl_t_kfx_untrack(f, k);
	char want[128];
	snprintf(want, sizeof(want), "rm /dev/shm/heirloom.%s", f->name);
	assert_true(hl_t_file_has(f->klog, "is not usable", hl_t_ms(2000)));
	assert_true(hl_t_file_has(f->klog, want, hl_t_ms(2000)));
	/* It was left exactly as it was, for inspection. */
	assert_int_equal(pread(fd, back, sizeof(back), 0), (ssize_t)sizeof(back));
	assert_memory_equal(junk, back, sizeof(junk));
	close(fd);
}

static int
count_fds(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	int n = 0;
	struct dirent *e;
	while (d && (e = readdir(d)) != NULL)
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

/* Send LEN raw bytes (and FD_TO_PASS if >= 0) on a fresh connection and
 * return the keeper's answer: its ERR/OK code, or 1 when it just closed. */
static int
poke(const char *sock, const void *buf, size_t len, int fd_to_pass)
{
	int fd;
	assert_int_equal(hl__sock_connect(sock, &fd), 0);
	if (fd_to_pass >= 0 && len == sizeof(struct hl_msg)) {
		assert_int_equal(hl__msg_send(fd, buf, fd_to_pass), 0);
	} else {
		assert_int_equal(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
	}
	struct hl_msg r;
	int rc = hl__msg_recv(fd, &r, NULL, hl_t_ms(5000));
	close(fd);
	if (rc == -EPIPE)
		return 1;
	assert_int_equal(rc, 0);
	return r.type == HL_MSG_ERR ? r.code : 0;
}

static void
test_garbage_on_the_socket_never_stops_the_keeper(void **state)
{
	struct hl_t_kfx *f = *state;
	pid_t k = keeper(f, NULL);
	/* The harness's readiness probe may still be open in the keeper:
	 * count its descriptors once it has settled. */
	int base = count_fds(k);
	for (int waited = 0; waited <= hl_t_ms(2000); waited += 20) {
		hl_t_sleep_ms(20);
		int again = count_fds(k);
		if (again == base)
			break;
		base = again;
	}
	struct hl_msg m;
	uint8_t junk[300];
	memset(junk, 0x5a, sizeof(junk));

	assert_int_equal(poke(f->sock, junk, 5, -1), -EPROTO);            /* short */
	assert_int_equal(poke(f->sock, junk, sizeof(junk), -1), -EPROTO); /* long */
	assert_int_equal(poke(f->sock, junk, sizeof(m), -1), -EPROTO);    /* bad magic */
	assert_int_equal(poke(f->sock, junk, 0, -1), 1);                  /* empty: dropped */
	hl__msg_init(&m, HL_MSG_TAKE);
	m.type = 99;
	assert_int_equal(poke(f->sock, &m, sizeof(m), -1), -EPROTO); /* unknown type */
	hl__msg_init(&m, HL_MSG_TAKE);
	m.version = 77;
	assert_int_equal(poke(f->sock, &m, sizeof(m), -1), -EPROTO); /* other version */
	hl__msg_init(&m, HL_MSG_TAKE);
	snprintf(m.text, sizeof(m.text), "%s", f->name);
	m.pid = 1;
	assert_int_equal(poke(f->sock, &m, sizeof(m), -1), -EPERM); /* not its pid */
	hl__msg_init(&m, HL_MSG_TAKE);
	memset(m.text, 'x', sizeof(m.text));                         /* unterminated */
	assert_int_equal(poke(f->sock, &m, sizeof(m), -1), -EINVAL); /* other segment */
	hl__msg_init(&m, HL_MSG_GIVEBACK);
	m.epoch = 12345;
	assert_int_equal(poke(f->sock, &m, sizeof(m), -1), -ESTALE); /* not the owner */
	hl__msg_init(&m, HL_MSG_HELLO);
	snprintf(m.text, sizeof(m.text), "%s", f->name);
	assert_int_equal(poke(f->sock, &m, sizeof(m), -1), -ESTALE);
	int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	hl__msg_init(&m, HL_MSG_TAKE);
	snprintf(m.text, sizeof(m.text), "%s", f->name);
	assert_int_equal(poke(f->sock, &m, sizeof(m), devnull), -EPROTO); /* a descriptor */
	close(devnull);

	/* More connections than the keeper has slots: the extra ones are told
	 * so and closed; the others idle until we close them. */
	int fds[48], refused = 0;
	for (int i = 0; i < 48; i++)
		assert_int_equal(hl__sock_connect(f->sock, &fds[i]), 0);
	for (int i = 0; i < 48; i++) {
		/* The keeper has 32 slots (HL_K_MAX_CONNS) and accepts in order. */
		struct hl_msg r;
		if (hl__msg_recv(fds[i], &r, NULL, i < 32 ? 0 : hl_t_ms(5000)) == 0 &&
		    r.type == HL_MSG_ERR && r.code == -EMFILE)
			refused++;
	}
	assert_true(refused >= 16);
	for (int i = 0; i < 48; i++)
		close(fds[i]);

	/* Still alive, every descriptor it took was closed, and it still
	 * does its job. */
	assert_int_equal(kill(k, 0), 0);
	int now = -1;
	for (int waited = 0; waited <= hl_t_ms(5000); waited += 10) {
		if ((now = count_fds(k)) <= base)
			break;
		hl_t_sleep_ms(10);
	}
	assert_true(now <= base);
	pid_t w = worker(f);
	assert_int_equal(owner(f).pid, w);
}

static void
test_supervisor_backs_off_a_worker_that_keeps_failing(void **state)
{
	struct hl_t_kfx *f = *state;
	/* An unknown option makes the worker exit 1 at once, every time. */
	const char *extra[] = { "--spawn-worker=" HL_WORKER_PATH, "--worker-args=--no-such-option",
		                NULL };
	pid_t k = keeper(f, extra);
	assert_true(hl_t_file_has(f->klog, "restarting the worker in 100 ms", hl_t_ms(10000)));
	assert_true(hl_t_file_has(f->klog, "restarting the worker in 200 ms", hl_t_ms(10000)));
	assert_true(hl_t_file_has(f->klog, "restarting the worker in 400 ms", hl_t_ms(10000)));
	assert_true(hl_t_file_has(f->klog, "exited with status 1 without taking the table",
	                          hl_t_ms(2000)));
	struct hl_t_owner o = owner(f);
	assert_int_equal(o.role, HL_ROLE_KEEPER);
	assert_int_equal(o.pid, k);
	/* Stopping between two attempts is immediate and clean. */
	assert_int_equal(stop(f, k), 0);
}

/* ---- finding the socket ---- */

static void
test_socket_path_follows_the_runtime_directory_rule(void **state)
{
	struct hl_t_kfx *f = *state;
	char buf[HL_SOCK_PATH_MAX], want[HL_SOCK_PATH_MAX + 64];
	int ours = -1;
	char *saved_rd = getenv("RUNTIME_DIRECTORY") ? strdup(getenv("RUNTIME_DIRECTORY")) : NULL;
	char *saved_xdg = getenv("XDG_RUNTIME_DIR") ? strdup(getenv("XDG_RUNTIME_DIR")) : NULL;

	assert_int_equal(hl__sock_path("n", "/x/y.sock", buf, sizeof(buf), &ours), 0);
	assert_string_equal(buf, "/x/y.sock");
	assert_int_equal(ours, 0);

	setenv("RUNTIME_DIRECTORY", "/rt/a:/rt/b", 1);
	assert_int_equal(hl__sock_path("n", NULL, buf, sizeof(buf), &ours), 0);
	assert_string_equal(buf, "/rt/a/heirloom-n.sock");
	assert_int_equal(ours, 0);
	assert_int_equal(hl__sock_path("n", "", buf, sizeof(buf), NULL), 0); /* empty = none */
	assert_string_equal(buf, "/rt/a/heirloom-n.sock");

	unsetenv("RUNTIME_DIRECTORY");
	setenv("XDG_RUNTIME_DIR", "/xdg", 1);
	assert_int_equal(hl__sock_path("n", NULL, buf, sizeof(buf), &ours), 0);
	if (geteuid() == 0) {
		assert_string_equal(buf, "/run/heirloom/heirloom-n.sock");
		assert_int_equal(ours, 1);
	} else {
		assert_string_equal(buf, "/xdg/heirloom-n.sock");
		assert_int_equal(ours, 0);
		unsetenv("XDG_RUNTIME_DIR");
		assert_int_equal(hl__sock_path("n", NULL, buf, sizeof(buf), &ours), 0);
		snprintf(want, sizeof(want), "/tmp/heirloom-%u/heirloom-n.sock",
		         (unsigned)geteuid());
		assert_string_equal(buf, want);
		assert_int_equal(ours, 1);
	}

	assert_int_equal(hl__sock_path("a/b", NULL, buf, sizeof(buf), NULL), -EINVAL);
	assert_int_equal(hl__sock_path("", NULL, buf, sizeof(buf), NULL), -EINVAL);
	char longdir[200];
	memset(longdir, 'd', sizeof(longdir) - 1);
	longdir[0] = '/';
	longdir[sizeof(longdir) - 1] = '\0';
	setenv("RUNTIME_DIRECTORY", longdir, 1);
	assert_int_equal(hl__sock_path("n", NULL, buf, sizeof(buf), NULL), -ENAMETOOLONG);
	assert_int_equal(hl__sock_path("n", longdir, buf, sizeof(buf), NULL), -ENAMETOOLONG);

	/* The keeper listens only in a directory nobody else can write. */
	snprintf(want, sizeof(want), "%s/made/k.sock", f->dir);
	assert_int_equal(hl__sock_dir_prepare(want, (gid_t)-1), 0);
	struct stat st;
	snprintf(want, sizeof(want), "%s/made", f->dir);
	assert_int_equal(stat(want, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0750);
	assert_int_equal(chmod(want, 0777), 0);
	snprintf(want, sizeof(want), "%s/made/k.sock", f->dir);
	assert_int_equal(hl__sock_dir_prepare(want, (gid_t)-1), -EPERM);
	char target[128], link[128];
	snprintf(target, sizeof(target), "%s/made", f->dir);
	snprintf(link, sizeof(link), "%s/link", f->dir);
	assert_int_equal(symlink(target, link), 0);
	snprintf(want, sizeof(want), "%s/link/k.sock", f->dir);
	assert_int_equal(hl__sock_dir_prepare(want, (gid_t)-1), -EPERM);
	snprintf(want, sizeof(want), "%s/made", f->dir);
	rmdir(want);

	if (saved_rd)
		setenv("RUNTIME_DIRECTORY", saved_rd, 1);
	else
		unsetenv("RUNTIME_DIRECTORY");
	if (saved_xdg)
		setenv("XDG_RUNTIME_DIR", saved_xdg, 1);
	else
		unsetenv("XDG_RUNTIME_DIR");
	free(saved_rd);
	free(saved_xdg);
}

static void
test_keeper_and_worker_find_each_other_by_runtime_directory(void **state)
{
	struct hl_t_kfx *f = *state;
	char sock[160];
	snprintf(sock, sizeof(sock), "%s/heirloom-%s.sock", f->dir, f->name);
	setenv("RUNTIME_DIRECTORY", f->dir, 1);
	const char *kargv[] = { HL_KEEPER_PATH,
		                "--foreground",
		                "--name",
		                f->name,
		                "--max-keys",
		                "1024",
		                "--max-observers",
		                "4096",
		                "--max-endpoints",
		                "16",
		                "--heap",
		                "1M",
		                NULL };
	pid_t k = hl_t_kfx_track(f, hl_t_spawn(kargv, f->klog));
	const char *wargv[] = { HL_WORKER_PATH, "--name", f->name, NULL };
	pid_t w = hl_t_kfx_track(f, hl_t_spawn(wargv, f->wlog));
	unsetenv("RUNTIME_DIRECTORY");
	assert_int_equal(hl_t_wait_serving(f->name, 0, hl_t_ms(10000)), w);
	char want[256];
	snprintf(want, sizeof(want), "listening on %s", sock);
	assert_true(hl_t_file_has(f->klog, want, hl_t_ms(2000)));
	assert_int_equal(stop(f, w), 0);
	assert_int_equal(stop(f, k), 0);
}

/* In a child with uid/gid NOBODY: send GIVEBACK and exit with 0 if the
 * keeper refused us for who we are, 1 if it let us talk (ESTALE: we own
 * nothing), 2 for anything else. */
static int
as_other_user(const char *sock, uid_t uid, gid_t gid)
{
	pid_t pid = hl_t_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
			_exit(3);
		int fd;
		if (hl__sock_connect(sock, &fd))
			_exit(4);
		struct hl_msg m, r;
		hl__msg_init(&m, HL_MSG_GIVEBACK);
		hl__msg_send(fd, &m, -1);
		if (hl__msg_recv(fd, &r, NULL, 5000) != 0 || r.type != HL_MSG_ERR)
			_exit(2);
		_exit(r.code == -EACCES ? 0 : r.code == -ESTALE ? 1 : 2);
	}
	return hl_t_wait_exit(pid, hl_t_ms(10000));
}

static void
test_peers_of_other_users_are_refused_unless_in_the_group(void **state)
{
	struct hl_t_kfx *f = *state;
	if (geteuid() != 0)
		skip();                           /* needs to become another user */
	assert_int_equal(chmod(f->dir, 0711), 0); /* let other users reach the socket */
	const char *extra[] = { "--mode", "0666", "--group", "4242", NULL };
	keeper(f, extra);
	assert_int_equal(as_other_user(f->sock, 4241, 4241), 0); /* stranger: refused */
	assert_int_equal(as_other_user(f->sock, 4241, 4242), 1); /* in the group: heard */
	assert_true(hl_t_file_has(f->klog, "refused a connection from pid", hl_t_ms(2000)));
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, hl_t_kfx_teardown)
	const struct CMUnitTest tests[] = {
		T(test_keeper_gives_the_table_and_the_worker_takes_it),
		T(test_worker_sigterm_hands_the_table_back_cleanly),
		T(test_worker_sigkill_is_reclaimed_by_the_keeper),
		T(test_second_worker_is_refused_while_the_first_lives),
		T(test_worker_waits_for_the_keeper_and_stops_while_waiting),
		T(test_restarted_keeper_becomes_heir_and_later_reclaims),
		T(test_worker_links_up_with_a_restarted_keeper_and_hands_back_to_it),
		T(test_worker_stopping_with_no_keeper_leaves_the_table_unowned),
		T(test_killing_the_keeper_mid_run_loses_nothing),
		T(test_supervisor_restarts_a_killed_worker_and_the_counter_survives),
		T(test_supervisor_does_not_restart_a_worker_that_handed_back),
		T(test_restart_policy_backs_off_only_quick_exits_in_a_row),
		T(test_supervisor_restarts_a_worker_that_ran_stably_at_once),
		T(test_supervisor_backs_off_quick_exits_after_a_stable_run),
		T(test_second_keeper_on_the_same_segment_is_refused),
		T(test_keeper_refuses_a_segment_that_does_not_validate),
		T(test_garbage_on_the_socket_never_stops_the_keeper),
		T(test_supervisor_backs_off_a_worker_that_keeps_failing),
		T(test_socket_path_follows_the_runtime_directory_rule),
		T(test_keeper_and_worker_find_each_other_by_runtime_directory),
		T(test_peers_of_other_users_are_refused_unless_in_the_group),
	};
#undef T
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("handoff", tests, NULL, NULL);
}
