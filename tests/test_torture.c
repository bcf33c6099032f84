/* SPDX-License-Identifier: MIT */
/*
 * test_torture.c: 4 client processes, one per way of opening (HL_OPEN_SYNC
 * with a short timeout, plain + hl_flush(), SYNC|NOWAIT, NOWAIT), do a
 * random mix of observe, unobserve, publish and delete on shared keys, each
 * publish a unique value, while the worker is killed with SIGKILL at random
 * moments (HL_TORTURE_KILLS times, default 200) and restarted. Checked as
 * it runs and afterwards (the failure contract and exactly-once):
 *  - a call that returned a definite error (-EAGAIN) is never applied:
 *    its value never shows up in an event or in hl_get;
 *  - a value is seen at one revision only (a publish applied twice, or
 *    replayed over a newer write, would show it at a second one);
 *  - every LAGGED is followed at once by a RESYNC of the same observer;
 *  - no event comes for an id the client does not hold (unobserved,
 *    never acknowledged, or an observe that timed out in doubt);
 *  - every acknowledged observe is present unless an acknowledged unobserve
 *    removed it, and nothing else of that client is;
 *  - each observer's revisions strictly increased;
 *  - each observer's last value of its key equals hl_get (or the key is gone
 *    and the observer's last event was a delete);
 *  - the worker's stop-time invariant check passes (allocator accounting
 *    exact, every structure consistent): exit status 0.
 * One publish in eight is a compare-and-set (hl_publish_if "if the revision
 * hl_get just read"): one that returned success is seen at exactly the
 * revision it answered (applied once, and by that commit); one that
 * returned HL_ECONFLICT (or -EAGAIN) is never seen, and its answer names a
 * revision other than the one it expected.
 * HL_TORTURE_KILLS=10000 runs the long version outside CI.
 */
#include "harness.h"

#include "segment.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CLIENTS 4
#define KEYS    8
#define MAX_OBS 64
#define VMAX    (1 << 20) /* values tracked per client */

/* What the call that published value c<i>-<n> returned. */
enum { V_NONE, V_APPLIED, V_QUEUED, V_REFUSED, V_DOUBT };

static const uint32_t mode_flags[CLIENTS] = { HL_OPEN_SYNC, 0, HL_OPEN_SYNC | HL_OPEN_NOWAIT,
	                                      HL_OPEN_NOWAIT };
static const char *const mode_name[CLIENTS] = { "SYNC (20 ms)", "plain + flush", "SYNC|NOWAIT",
	                                        "NOWAIT" };

struct shared {
	_Atomic int stop;    /* 1: stop issuing operations */
	_Atomic int flushed; /* clients done with their last request */
	_Atomic int quiet;   /* 1: the worker lives and no more kills come */
	_Atomic long ops[CLIENTS];
	_Atomic int failed;
	char why[256];
	_Atomic long outcomes[CLIENTS][5];   /* calls by V_* */
	_Atomic long dropped_calls[CLIENTS]; /* observe/unobserve/delete refused or in doubt */
	_Atomic uint8_t outcome[CLIENTS][VMAX];
	_Atomic uint64_t seen_rev[CLIENTS][VMAX];
	/* A compare-and-set that returned success: the revision it answered. */
	_Atomic uint64_t cas_rev[CLIENTS][VMAX];
	_Atomic long cas[CLIENTS][3]; /* applied, conflict, other (refused/doubt) */
};

struct mine {
	hl_observer_id id;
	int key;
	uint64_t rev;
	int has_value;
	char last[32];
};

static struct shared *S;

/* Each client's prefix observer of "k" (every key of the test), made
 * before its first operation: per key, what it saw last. Its order holds
 * per key only (its keys are in every shard); a lag gives LAGGED alone,
 * after which the final comparison is skipped. */
static hl_observer_id prefix_id;
static struct mine pk[KEYS];
static long prefix_events, prefix_lags;

#define FAIL(...)                                                                                  \
	do {                                                                                       \
		if (atomic_exchange(&S->failed, 1) == 0)                                           \
			snprintf(S->why, sizeof(S->why), __VA_ARGS__);                             \
		_exit(1);                                                                          \
	} while (0)

static void
keyname(int k, char *buf)
{
	snprintf(buf, 8, "k%d", k);
}

/* A value seen at revision REV: never one refused, never at two revisions. */
static void
saw_value(const void *v, size_t len, uint64_t rev, int me)
{
	char buf[32];
	int who;
	long n;
	snprintf(buf, sizeof(buf), "%.*s", (int)len, (const char *)v);
	if (sscanf(buf, "c%d-%ld", &who, &n) != 2 || who < 0 || who >= CLIENTS || n < 0 ||
	    n >= VMAX)
		return;
	if (atomic_load(&S->outcome[who][n]) == V_REFUSED)
		FAIL("client %d: value %s applied, but its publish was refused", me, buf);
	uint64_t cas = atomic_load(&S->cas_rev[who][n]);
	if (cas && cas != rev)
		FAIL("client %d: value %s at revision %lu, its compare-and-set answered %lu", me,
		     buf, (unsigned long)rev, (unsigned long)cas);
	uint64_t want = 0;
	if (!atomic_compare_exchange_strong(&S->seen_rev[who][n], &want, rev) && want != rev)
		FAIL("client %d: value %s at revision %lu and %lu (applied twice)", me, buf,
		     (unsigned long)want, (unsigned long)rev);
}

static struct mine *
find(struct mine *m, int n, hl_observer_id id)
{
	for (int i = 0; i < n; i++)
		if (m[i].id == id)
			return &m[i];
	return NULL;
}

static void
drain(struct hl_client *c, struct mine *m, int n, int timeout_ms, int me)
{
	struct hl_event ev;
	int rc;
	hl_observer_id want_resync = 0;
	while ((rc = hl_next(c, &ev, timeout_ms)) == 0) {
		if (prefix_id && ev.observer == prefix_id) {
			if (want_resync)
				FAIL("client %d: LAGGED not followed by its RESYNC", me);
			if (ev.type == HL_EV_LAGGED) {
				prefix_lags++;
				continue;
			}
			int k = -1;
			if (ev.key_len == 2 && ((const char *)ev.key)[0] == 'k')
				k = ((const char *)ev.key)[1] - '0';
			if (k < 0 || k >= KEYS)
				FAIL("client %d: prefix observer got a key outside k0..k%d", me,
				     KEYS - 1);
			if (ev.type == HL_EV_RESYNC)
				FAIL("client %d: RESYNC for a prefix observer", me);
			if (ev.has_new)
				saw_value(ev.new_value, ev.new_len, ev.revision, me);
			if (ev.revision <= pk[k].rev)
				FAIL("client %d: prefix observer, k%d: revision %lu after %lu", me,
				     k, (unsigned long)ev.revision, (unsigned long)pk[k].rev);
			pk[k].rev = ev.revision;
			pk[k].has_value = ev.has_new;
			snprintf(pk[k].last, sizeof(pk[k].last), "%.*s",
			         ev.has_new ? (int)ev.new_len : 0,
			         ev.has_new ? (const char *)ev.new_value : "");
			prefix_events++;
			continue;
		}
		struct mine *o = find(m, n, ev.observer);
		if (!o)
			FAIL("client %d: event for an observer it does not hold", me);
		if (want_resync && (ev.type != HL_EV_RESYNC || ev.observer != want_resync))
			FAIL("client %d: LAGGED not followed by its RESYNC", me);
		want_resync = 0;
		if (ev.type == HL_EV_LAGGED) {
			want_resync = ev.observer;
			continue;
		}
		if (ev.has_new)
			saw_value(ev.new_value, ev.new_len, ev.revision, me);
		if (ev.revision <= o->rev)
			FAIL("client %d: revision %lu after %lu", me, (unsigned long)ev.revision,
			     (unsigned long)o->rev);
		o->rev = ev.revision;
		o->has_value = ev.has_new;
		snprintf(o->last, sizeof(o->last), "%.*s", ev.has_new ? (int)ev.new_len : 0,
		         ev.has_new ? (const char *)ev.new_value : "");
	}
	if (want_resync && timeout_ms > 0)
		FAIL("client %d: LAGGED with no RESYNC", me);
	if (rc != -EAGAIN && rc != -ETIMEDOUT)
		FAIL("client %d: hl_next: %s", me, hl_strerror(rc));
}

static void
client(const char *name, int me)
{
	struct hl_client *c = NULL;
	uint32_t flags = mode_flags[me];
	struct hl_open_opts opts = { .flags = flags,
		                     .timeout_ms = flags == HL_OPEN_SYNC ? 20 : hl_t_ms(60000) };
	int rc = hl_open(name, &opts, &c);
	if (rc)
		FAIL("client %d: open: %s", me, hl_strerror(rc));
	unsigned seed = (unsigned)(me * 7919 + 1);
	struct mine m[MAX_OBS];
	int n = 0;
	long count = 0;
	/* Retried until acknowledged: kills come meanwhile (an observe in
	 * doubt is removed by the library, and not held). */
	struct hl_observe_opts po = { .flags = HL_OBSERVE_PREFIX };
	while ((rc = hl_observe_with(c, "k", 1, &po, &prefix_id)) == -EAGAIN || rc == -ETIMEDOUT) {
		prefix_id = 0;
		usleep(1000);
	}
	if (rc)
		FAIL("client %d: observe prefix: %s", me, hl_strerror(rc));
	while (!atomic_load(&S->stop)) {
		int r = rand_r(&seed) % 100, k = rand_r(&seed) % KEYS;
		char key[8];
		keyname(k, key);
		if (r < 20 && n < MAX_OBS) {
			hl_observer_id id;
			rc = hl_observe(c, key, strlen(key), 0, &id);
			if (rc == -EAGAIN || rc == -ETIMEDOUT) {
				/* Refused, or in doubt: either way not held. */
				atomic_fetch_add(&S->dropped_calls[me], 1);
				goto next;
			}
			if (rc)
				FAIL("client %d: observe: %s", me, hl_strerror(rc));
			if (find(m, n, id))
				FAIL("client %d: observer id handed out twice", me);
			/* Its start: the key's revision now (events can only be newer). */
			m[n] = (struct mine){ .id = id, .key = k };
			n++;
		} else if (r < 30 && n > 0) {
			int i = rand_r(&seed) % n;
			rc = hl_unobserve(c, m[i].id);
			if (rc == -EAGAIN) { /* refused: still held */
				atomic_fetch_add(&S->dropped_calls[me], 1);
				goto next;
			}
			if (rc && rc != -ETIMEDOUT) /* in doubt: no longer held */
				FAIL("client %d: unobserve: %s", me, hl_strerror(rc));
			m[i] = m[--n];
		} else if (r < 90 && rand_r(&seed) % 8 == 0) {
			/* Compare-and-set on the revision just read. */
			char v[32];
			int vl = snprintf(v, sizeof(v), "c%d-%ld", me, count);
			uint64_t rev = 0, cur = 0;
			rc = hl_get(c, key, strlen(key), NULL, 0, NULL, &rev);
			if (rc == -EBUSY) /* the key kept changing as we read: skip */
				goto next;
			if (rc == -ENOENT)
				rev = 0;
			else if (rc)
				FAIL("client %d: get: %s", me, hl_strerror(rc));
			/* Recorded before the call: a reader may see it at once. */
			rc = hl_publish_if(c, key, strlen(key), v, (size_t)vl, NULL, 0, rev, &cur);
			int o = rc == 0                               ? V_APPLIED
			        : rc == -EAGAIN || rc == HL_ECONFLICT ? V_REFUSED
			        : rc == -ETIMEDOUT                    ? V_DOUBT
			                                              : V_NONE;
			if (o == V_NONE)
				FAIL("client %d: publish_if: %s", me, hl_strerror(rc));
			if (rc == HL_ECONFLICT && cur == rev)
				FAIL("client %d: conflict on %s answering the expected revision "
				     "%lu",
				     me, key, (unsigned long)rev);
			if (rc == 0 && cur <= rev)
				FAIL("client %d: publish_if on %s answered %lu after %lu", me, key,
				     (unsigned long)cur, (unsigned long)rev);
			if (count < VMAX) {
				if (rc == 0) {
					/* Anyone who saw it before this store saw it
					 * at seen_rev: compare that now. */
					atomic_store(&S->cas_rev[me][count], cur);
					uint64_t seen = atomic_load(&S->seen_rev[me][count]);
					if (seen && seen != cur)
						FAIL("client %d: value %s seen at %lu, its "
						     "compare-and-set answered %lu",
						     me, v, (unsigned long)seen,
						     (unsigned long)cur);
				}
				atomic_store(&S->outcome[me][count], (uint8_t)o);
			}
			atomic_fetch_add(&S->outcomes[me][o], 1);
			atomic_fetch_add(&S->cas[me][rc == 0 ? 0 : rc == HL_ECONFLICT ? 1 : 2], 1);
		} else if (r < 90) {
			char v[32];
			int vl = snprintf(v, sizeof(v), "c%d-%ld", me, count);
			rc = hl_publish(c, key, strlen(key), v, (size_t)vl, NULL, 0);
			int o = rc == 0            ? ((flags & HL_OPEN_SYNC) ? V_APPLIED : V_QUEUED)
			        : rc == -EAGAIN    ? V_REFUSED
			        : rc == -ETIMEDOUT ? V_DOUBT
			                           : V_NONE;
			if (o == V_NONE)
				FAIL("client %d: publish: %s", me, hl_strerror(rc));
			if (count < VMAX)
				atomic_store(&S->outcome[me][count], (uint8_t)o);
			atomic_fetch_add(&S->outcomes[me][o], 1);
		} else {
			rc = hl_delete(c, key, strlen(key));
			if (rc == -EAGAIN || rc == -ETIMEDOUT)
				atomic_fetch_add(&S->dropped_calls[me], 1);
			else if (rc)
				FAIL("client %d: delete: %s", me, hl_strerror(rc));
		}
	next:
		/* A refused call (no worker) is retried later, as an
		 * application would: do not spin through the value space. */
		if (rc == -EAGAIN)
			usleep(200);
		count++;
		atomic_store(&S->ops[me], count);
		drain(c, m, n, 0, me);
	}
	/* Everything queued is applied (in-doubt requests settled: an
	 * in-doubt observe's observer removed). */
	rc = hl_flush(c, hl_t_ms(60000));
	/* A compare-and-set in doubt that was then decided as a conflict is
	 * reported once, here: a correct outcome, not a failure. */
	if (rc == HL_ECONFLICT)
		rc = hl_flush(c, hl_t_ms(60000));
	if (rc)
		FAIL("client %d: flush: %s", me, hl_strerror(rc));
	atomic_fetch_add(&S->flushed, 1);
	while (!atomic_load(&S->quiet))
		usleep(1000);
	/* Everything is applied and the worker stays up: take every event
	 * still on its way (including redeliveries after the last crash). */
	drain(c, m, n, hl_t_ms(1500), me);

	for (int i = 0; i < n; i++) {
		char key[8], buf[64];
		keyname(m[i].key, key);
		size_t len = 0;
		uint64_t rev = 0;
		rc = hl_get(c, key, strlen(key), buf, sizeof(buf), &len, &rev);
		if (rc == 0)
			saw_value(buf, len, rev, me);
		if (rc == -ENOENT) {
			if (m[i].has_value)
				FAIL("client %d: key %s gone, observer last saw '%s'", me, key,
				     m[i].last);
		} else if (rc == 0) {
			if (rev != m[i].rev && m[i].rev != 0)
				FAIL("client %d: key %s at rev %lu, observer at %lu", me, key,
				     (unsigned long)rev, (unsigned long)m[i].rev);
			if (m[i].rev != 0 &&
			    (len != strlen(m[i].last) || memcmp(buf, m[i].last, len)))
				FAIL("client %d: key %s is '%.*s', observer last saw '%s'", me, key,
				     (int)len, buf, m[i].last);
		} else {
			FAIL("client %d: get: %s", me, hl_strerror(rc));
		}
	}
	/* The prefix observer ends where each key is, as an exact one does,
	 * unless it lagged (no RESYNC then: the keys would be read again). */
	for (int k = 0; k < KEYS && prefix_lags == 0; k++) {
		char key[8], buf[64];
		keyname(k, key);
		size_t len = 0;
		uint64_t rev = 0;
		rc = hl_get(c, key, strlen(key), buf, sizeof(buf), &len, &rev);
		if (pk[k].rev == 0)
			continue;
		if (rc == -ENOENT && pk[k].has_value)
			FAIL("client %d: key %s gone, prefix observer last saw '%s'", me, key,
			     pk[k].last);
		if (rc == 0 &&
		    (rev != pk[k].rev || len != strlen(pk[k].last) || memcmp(buf, pk[k].last, len)))
			FAIL("client %d: key %s is '%.*s' at %lu, prefix observer saw '%s' at %lu",
			     me, key, (int)len, buf, (unsigned long)rev, pk[k].last,
			     (unsigned long)pk[k].rev);
	}
	if (prefix_events == 0)
		FAIL("client %d: the prefix observer saw nothing", me);
	/* Acknowledged observers exist; nothing else of ours does. */
	for (int k = 0; k < KEYS; k++) {
		char key[8];
		keyname(k, key);
		struct hl_observer_info info[CLIENTS * MAX_OBS];
		rc = hl_inspect_key(c, key, strlen(key), info, CLIENTS * MAX_OBS);
		int count_mine = 0;
		for (int j = 0; j < rc; j++)
			if (info[j].pid == getpid()) {
				count_mine++;
				struct mine *o = find(m, n, info[j].id);
				if (!o || o->key != k)
					FAIL("client %d: observer %lx on %s was never acknowledged",
					     me, (unsigned long)info[j].id, key);
			}
		int want = 0;
		for (int i = 0; i < n; i++)
			want += m[i].key == k;
		if (count_mine != want)
			FAIL("client %d: key %s holds %d of my observers, want %d", me, key,
			     count_mine, want);
	}
	hl_close(c);
	_exit(0);
}

static int
kills_wanted(void)
{
	const char *e = getenv("HL_TORTURE_KILLS");
	int n = e ? atoi(e) : 200;
	return n > 0 ? n : 200;
}

static void
test_random_ops_survive_repeated_worker_kills(void **state)
{
	(void)state;
	S = mmap(NULL, sizeof(*S), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(S != MAP_FAILED);
	memset(S, 0, sizeof(*S));
	const char *name = hl_t_name();
	char sock[108];
	snprintf(sock, sizeof(sock), "/tmp/hl-torture-%d.sock", (int)getpid());
	unlink(sock);
	/* The keeper supervises the worker, as in production; restarts are
	 * quick so that hundreds of kills fit in a test run. */
	const char *const extra[] = { "--spawn-worker", "--restart-min", "1ms",
		                      "--restart-max",  "20ms",          NULL };
	pid_t keeper = hl_t_keeper_startv(name, sock, extra, NULL);
	pid_t w = hl_t_wait_serving(name, 0, hl_t_ms(20000));
	assert_true(w > 0);
	pid_t kids[CLIENTS];
	for (int i = 0; i < CLIENTS; i++) {
		kids[i] = hl_t_fork();
		assert_true(kids[i] >= 0);
		if (kids[i] == 0)
			client(name, i);
	}
	unsigned seed = 12345;
	int kills = kills_wanted();
	for (int i = 0; i < kills && !atomic_load(&S->failed); i++) {
		/* Let some operations through between kills (bounded wait). */
		long before = 0;
		for (int j = 0; j < CLIENTS; j++)
			before += atomic_load(&S->ops[j]);
		for (int waited = 0; waited < 2000; waited++) {
			long now = 0;
			for (int j = 0; j < CLIENTS; j++)
				now += atomic_load(&S->ops[j]);
			if (now >= before + 1 + rand_r(&seed) % 8)
				break;
			usleep(500);
		}
		usleep((useconds_t)(rand_r(&seed) % 3000));
		kill(w, SIGKILL);
		pid_t next = hl_t_wait_serving(name, w, hl_t_ms(20000));
		if (next <= 0)
			fail_msg("kill %d: the supervisor did not bring a worker back", i);
		w = next;
	}
	atomic_store(&S->stop, 1);
	for (int waited = 0; atomic_load(&S->flushed) < CLIENTS && !atomic_load(&S->failed);
	     waited++) {
		assert_true(waited < hl_t_ms(120000) / 10);
		usleep(10000);
	}
	atomic_store(&S->quiet, 1);
	for (int i = 0; i < CLIENTS; i++) {
		int st = hl_t_wait_exit(kids[i], hl_t_ms(120000));
		if (st != 0)
			fail_msg("client %d: status %d: %s", i, st, S->why);
	}
	long total = 0;
	for (int j = 0; j < CLIENTS; j++)
		total += atomic_load(&S->ops[j]);
	{
		struct hl_client *sc = hl_t_open(name, 0);
		struct hl_stats ss;
		hl_stats(sc, &ss);
		print_message("%d kills, %ld operations, %lu publishes, %lu notifications, "
		              "%lu lagged drops\n",
		              kills, total, (unsigned long)ss.publishes,
		              (unsigned long)ss.notifications, (unsigned long)ss.lagged_drops);
		hl_close(sc);
	}
	assert_true(total >= kills);
	/* The same checks as the clients make, over everything: a refused
	 * publish whose value anyone saw (seen_rev set) was applied. */
	long refused_applied = 0;
	for (int i = 0; i < CLIENTS; i++)
		for (int n = 0; n < VMAX; n++)
			refused_applied += atomic_load(&S->outcome[i][n]) == V_REFUSED &&
			                   atomic_load(&S->seen_rev[i][n]) != 0;
	for (int i = 0; i < CLIENTS; i++)
		print_message(
		        "%-14s publishes: %ld applied, %ld queued, %ld refused, %ld in doubt; "
		        "other calls refused or in doubt: %ld\n",
		        mode_name[i], atomic_load(&S->outcomes[i][V_APPLIED]),
		        atomic_load(&S->outcomes[i][V_QUEUED]),
		        atomic_load(&S->outcomes[i][V_REFUSED]),
		        atomic_load(&S->outcomes[i][V_DOUBT]), atomic_load(&S->dropped_calls[i]));
	for (int i = 0; i < CLIENTS; i++)
		print_message("%-14s compare-and-set: %ld applied, %ld conflicts, %ld refused or "
		              "in doubt\n",
		              mode_name[i], atomic_load(&S->cas[i][0]), atomic_load(&S->cas[i][1]),
		              atomic_load(&S->cas[i][2]));
	print_message("checker: refused calls applied %ld, values at two revisions 0, LAGGED "
	              "without RESYNC 0, events for ids not held 0, observers nobody holds 0\n",
	              refused_applied);
	assert_int_equal(refused_applied, 0);
	/* Stop: the keeper stops its worker, which hands the table back. */
	kill(keeper, SIGTERM);
	assert_int_equal(hl_t_wait_exit(keeper, hl_t_ms(60000)), 0);
	/* A fresh worker re-attaches: recovery must find nothing to repair,
	 * and its stop-time invariant check (allocator accounting exact,
	 * every structure consistent) must pass. */
	pid_t check = hl_t_worker_start(name, NULL);
	struct hl_client *c = hl_t_open(name, 0);
	struct hl_stats st;
	assert_int_equal(hl_stats(c, &st), 0);
	hl_close(c);
	int fd;
	struct hl_seg seg;
	assert_int_equal(hl__seg_open_fd(name, 0, &fd), 0);
	assert_int_equal(hl__seg_map_ro(fd, &seg), 0);
	uint64_t repairs = atomic_load(&seg.h->last_recovery_repairs);
	hl__seg_unmap(&seg);
	close(fd);
	assert_int_equal(repairs, 0);
	assert_int_equal(hl_t_worker_stop(check), 0);
	unlink(sock);
	hl_t_unlink(name);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_ops_survive_repeated_worker_kills),
	};
	return cmocka_run_group_tests_name("torture", tests, NULL, NULL);
}
