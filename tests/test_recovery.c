/* SPDX-License-Identifier: MIT */
/*
 * test_recovery.c: a crash at every step of every mutation is repaired.
 *
 * The worker's --crash-at-step K hook makes it _exit(99) at the K-th crash
 * point (before each commit, after each dispatch: see hl_w_crash_point()).
 * For K = 1, 2, ... a client runs the same script of observes, publishes,
 * unobserves and deletes while the test restarts the worker whenever it
 * dies. Afterwards: every observer saw every revision of its keys in order,
 * exactly once, ending at the latest value (a prefix observer: per key);
 * the table holds exactly what the script left; the worker's invariant
 * check passes (exit 0 on SIGTERM).
 *
 * Also what recovery rebuilds in bulk after a SIGKILL: many observer lists
 * walked side by side and every endpoint's list of its observers, and keys
 * whose only observers were damage.
 */
#include "harness.h"

#include "layout.h"
#include "segment.h"
#include "table_read.h"
#include "util.h"

#include <errno.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

struct result {
	int done;
	int failed;
	char why[256];
};

#define FAIL(...)                                                                                  \
	do {                                                                                       \
		snprintf(res->why, sizeof(res->why), __VA_ARGS__);                                 \
		res->failed = 1;                                                                   \
		_exit(1);                                                                          \
	} while (0)

struct seen {
	hl_observer_id id;
	char last[16];
	uint64_t rev;
	int n;
	int deleted;
	uint32_t flags; /* HL_OBSERVE_* it was made with */
	/* A prefix observer of "p/": per key "p/0".."p/2", the last revision
	 * and the events seen (its order holds per key, not across keys). */
	uint64_t krev[3];
	int kn[3];
};

/* Take events until WANT (per observer, -1 = any) are there or WAIT_MS of
 * silence; then, if WANT was reached, make sure nothing more comes. */
static void
take_events(struct hl_client *c, struct seen *s, int ns, struct result *res, int wait_ms,
            const int *want)
{
	struct hl_event ev;
	int rc;
	for (;;) {
		int reached = want != NULL;
		for (int i = 0; want && i < ns; i++)
			if (want[i] >= 0 && s[i].n < want[i])
				reached = 0;
		rc = hl_next(c, &ev, reached ? 100 : wait_ms);
		if (rc != 0)
			break;
		struct seen *o = NULL;
		for (int i = 0; i < ns; i++)
			if (s[i].id == ev.observer)
				o = &s[i];
		if (!o)
			FAIL("event for unknown observer");
		if (ev.type == HL_EV_LAGGED || ev.type == HL_EV_RESYNC)
			FAIL("unexpected lag");
		if (o->flags & HL_OBSERVE_PREFIX) {
			const char *k = ev.key;
			int j = ev.key_len == 3 && !memcmp(k, "p/", 2) ? k[2] - '0' : -1;
			if (j < 0 || j > 2)
				FAIL("prefix observer: a key outside p/0..p/2");
			if (ev.revision <= o->krev[j])
				FAIL("prefix observer, key p/%d: revision %lu after %lu", j,
				     (unsigned long)ev.revision, (unsigned long)o->krev[j]);
			o->krev[j] = ev.revision;
			o->kn[j]++;
			o->n++;
			continue;
		}
		if (ev.revision <= o->rev)
			FAIL("observer %d: revision %lu after %lu", (int)(o - s),
			     (unsigned long)ev.revision, (unsigned long)o->rev);
		if ((o->flags & HL_OBSERVE_NODELETE) && ev.type == HL_EV_DELETE)
			FAIL("observer %d: a delete through its NODELETE filter", (int)(o - s));
		if ((o->flags & HL_OBSERVE_NOOLD) && (ev.has_old || ev.old_value))
			FAIL("observer %d: an old value despite NOOLD", (int)(o - s));
		o->rev = ev.revision;
		o->n++;
		o->deleted = ev.type == HL_EV_DELETE;
		if (ev.type == HL_EV_PUT)
			snprintf(o->last, sizeof(o->last), "%.*s", (int)ev.new_len,
			         (const char *)ev.new_value);
	}
	if (rc != -ETIMEDOUT && rc != -EAGAIN)
		FAIL("hl_next: %s", hl_strerror(rc));
}

static void
script(const char *name, struct result *res)
{
	struct hl_client *c = NULL;
	struct hl_open_opts o = { .flags = HL_OPEN_SYNC, .timeout_ms = hl_t_ms(30000) };
	int rc = hl_open(name, &o, &c);
	if (rc)
		FAIL("open: %s", hl_strerror(rc));
	struct seen s[6] = { 0 };
	if ((rc = hl_observe(c, "a", 1, 0, &s[0].id)) ||
	    (rc = hl_observe(c, "a", 1, 0, &s[1].id)) || (rc = hl_observe(c, "b", 1, 0, &s[2].id)))
		FAIL("observe: %s", hl_strerror(rc));
	if (s[0].id == s[1].id || s[0].id == s[2].id)
		FAIL("observer ids reused");
	for (int i = 1; i <= 4; i++) {
		char v[8];
		int n = snprintf(v, sizeof(v), "a%d", i);
		if ((rc = hl_publish(c, "a", 1, v, (size_t)n, NULL, 0)))
			FAIL("publish a: %s", hl_strerror(rc));
		n = snprintf(v, sizeof(v), "b%d", i);
		if ((rc = hl_publish(c, "b", 1, v, (size_t)n, "m", 1)))
			FAIL("publish b: %s", hl_strerror(rc));
	}
	take_events(c, s, 3, res, 50, NULL);
	if ((rc = hl_unobserve(c, s[1].id)))
		FAIL("unobserve: %s", hl_strerror(rc));
	if ((rc = hl_delete(c, "b", 1)))
		FAIL("delete: %s", hl_strerror(rc));
	if ((rc = hl_publish(c, "b", 1, "b5", 2, NULL, 0)))
		FAIL("publish b5: %s", hl_strerror(rc));
	if ((rc = hl_observe(c, "c", 1, 0, &s[3].id)))
		FAIL("observe c: %s", hl_strerror(rc));
	if ((rc = hl_publish(c, "c", 1, "c1", 2, NULL, 0)) || (rc = hl_delete(c, "c", 1)))
		FAIL("c: %s", hl_strerror(rc));
	if ((rc = hl_publish(c, "a", 1, "a5", 2, NULL, 0)))
		FAIL("publish a5: %s", hl_strerror(rc));
	/* A prefix observer through crashes: its entry, its keys created
	 * after it (in any shard), a delete; per key in order, exactly once. */
	struct hl_observe_opts po = { .flags = HL_OBSERVE_PREFIX };
	s[5].flags = po.flags;
	if ((rc = hl_observe_with(c, "p/", 2, &po, &s[5].id)))
		FAIL("observe p/: %s", hl_strerror(rc));
	if ((rc = hl_publish(c, "p/0", 3, "1", 1, NULL, 0)) ||
	    (rc = hl_publish(c, "p/1", 3, "1", 1, NULL, 0)) ||
	    (rc = hl_publish(c, "p/0", 3, "2", 1, NULL, 0)) || (rc = hl_delete(c, "p/1", 3)) ||
	    (rc = hl_publish(c, "p/2", 3, "1", 1, NULL, 0)))
		FAIL("p/: %s", hl_strerror(rc));
	/* Compare-and-set through crashes: a CAS that succeeded must have
	 * been applied once (a replay that judged it anew would answer a
	 * conflict, since its own commit moved the revision), a conflict must
	 * never be applied (the next CAS "if x2's revision" would fail). The
	 * observer of x filters deletes and old values, through restarts. */
	s[4].flags = HL_OBSERVE_NODELETE | HL_OBSERVE_NOOLD;
	if ((rc = hl_observe(c, "x", 1, s[4].flags, &s[4].id)))
		FAIL("observe x: %s", hl_strerror(rc));
	uint64_t r1 = 0, r2 = 0, rd = 0, r3 = 0, cur = 0;
	if ((rc = hl_publish_if(c, "x", 1, "x1", 2, NULL, 0, 0, &r1)) || r1 == 0)
		FAIL("publish_if x1: %s, rev %lu", hl_strerror(rc), (unsigned long)r1);
	if ((rc = hl_publish_if(c, "x", 1, "x2", 2, NULL, 0, r1, &r2)) || r2 <= r1)
		FAIL("publish_if x2: %s, rev %lu", hl_strerror(rc), (unsigned long)r2);
	if ((rc = hl_publish_if(c, "x", 1, "no", 2, NULL, 0, r1, &cur)) != HL_ECONFLICT ||
	    cur != r2)
		FAIL("stale publish_if: %s, cur %lu", hl_strerror(rc), (unsigned long)cur);
	if ((rc = hl_delete_if(c, "x", 1, r1, &cur)) != HL_ECONFLICT || cur != r2)
		FAIL("stale delete_if: %s, cur %lu", hl_strerror(rc), (unsigned long)cur);
	if ((rc = hl_delete_if(c, "x", 1, r2, &rd)) || rd <= r2)
		FAIL("delete_if x: %s, rev %lu", hl_strerror(rc), (unsigned long)rd);
	if ((rc = hl_publish_if(c, "x", 1, "x3", 2, NULL, 0, 0, &r3)) || r3 <= rd)
		FAIL("publish_if x3: %s, rev %lu", hl_strerror(rc), (unsigned long)r3);
	static const int want[6] = { 5, -1, 6, 2, 3, 5 };
	take_events(c, s, 6, res, hl_t_ms(3000), want);
	if (s[5].kn[0] != 2 || s[5].kn[1] != 2 || s[5].kn[2] != 1)
		FAIL("p/: %d %d %d events", s[5].kn[0], s[5].kn[1], s[5].kn[2]);
	if (s[4].n != 3 || strcmp(s[4].last, "x3") != 0 || s[4].rev != r3)
		FAIL("x: %d events, last %s", s[4].n, s[4].last);
	/* What every observer must have seen. */
	if (s[0].n != 5 || strcmp(s[0].last, "a5") != 0)
		FAIL("a: %d events, last %s", s[0].n, s[0].last);
	if (s[2].n != 6 || strcmp(s[2].last, "b5") != 0 || s[2].deleted)
		FAIL("b: %d events, last %s", s[2].n, s[2].last);
	if (s[3].n != 2 || !s[3].deleted)
		FAIL("c: %d events, deleted %d", s[3].n, s[3].deleted);
	char buf[8];
	size_t len;
	if (hl_get(c, "a", 1, buf, sizeof(buf), &len, NULL) || len != 2 || memcmp(buf, "a5", 2))
		FAIL("get a");
	if (hl_get(c, "b", 1, buf, sizeof(buf), &len, NULL) || len != 2 || memcmp(buf, "b5", 2))
		FAIL("get b");
	if (hl_get(c, "c", 1, buf, sizeof(buf), &len, NULL) != -ENOENT)
		FAIL("get c");
	struct hl_stats st;
	hl_stats(c, &st);
	if (hl_get(c, "x", 1, buf, sizeof(buf), &len, NULL) || len != 2 || memcmp(buf, "x3", 2))
		FAIL("get x");
	/* a, b, x, p/0, p/2 with values; c kept by its observer; the prefix
	 * entry of p/ (a key slot, counted apart). Five 64-byte blocks. */
	if (st.keys != 6 || st.prefixes != 1 || st.observers != 5 || st.heap_used != 320)
		FAIL("table: %lu keys, %lu prefixes, %lu observers, %lu heap bytes",
		     (unsigned long)st.keys, (unsigned long)st.prefixes,
		     (unsigned long)st.observers, (unsigned long)st.heap_used);
	res->done = 1;
	_exit(0);
}

/* Run the script against a worker that dies at step K. Returns 1 if the
 * worker crashed at least once (so K is within the script), 0 if not. */
static int
run_with_crash_at(int k)
{
	const char *name = hl_t_name();
	char ks[16];
	snprintf(ks, sizeof(ks), "%d", k);
	const char *const crash[] = { "--max-keys",
		                      "64",
		                      "--max-observers",
		                      "64",
		                      "--max-endpoints",
		                      "8",
		                      "--heap",
		                      "65536",
		                      "--crash-at-step",
		                      ks,
		                      NULL };
	const char *const plain[] = {
		"--max-keys", "64",     "--max-observers", "64", "--max-endpoints",
		"8",          "--heap", "65536",           NULL
	};
	pid_t w = hl_t_worker_startv(name, crash);
	struct result *res =
	        mmap(NULL, sizeof(*res), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(res != MAP_FAILED);
	memset(res, 0, sizeof(*res));
	pid_t cl = hl_t_fork();
	assert_true(cl >= 0);
	if (cl == 0)
		script(name, res);
	int crashed = 0;
	for (;;) {
		int st;
		if (waitpid(cl, &st, WNOHANG) == cl)
			break;
		int ws;
		if (waitpid(w, &ws, WNOHANG) == w) {
			/* The hook's exit code, nothing else: a real crash fails. */
			if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 99)
				fail_msg("step %d: worker died with status 0x%x", k, ws);
			crashed++;
			w = hl_t_worker_startv(name, plain);
		}
		usleep(2000);
	}
	if (!res->done)
		fail_msg("crash at step %d: %s", k, res->why);
	/* The client's exit makes the worker clean its endpoint, which has
	 * crash points too: a crash there is repaired by the next worker. */
	int st = hl_t_worker_stop(w);
	if (st == 99) {
		crashed++;
		w = hl_t_worker_startv(name, plain);
		st = hl_t_worker_stop(w);
	}
	if (st != 0)
		fail_msg("crash at step %d: worker stop status %d (3 = invariant check failed)", k,
		         st);
	hl_t_unlink(name);
	munmap(res, sizeof(*res));
	return crashed;
}

static void
test_script_passes_without_crash(void **state)
{
	(void)state;
	assert_int_equal(run_with_crash_at(0), 0);
}

static void
test_crash_at_every_step_of_every_mutation_is_repaired(void **state)
{
	(void)state;
	int k, steps = 0;
	for (k = 1; k < 600; k++) {
		if (!run_with_crash_at(k))
			break; /* the script has fewer steps: every one was covered */
		steps++;
	}
	/* Ended by running out of steps, not by the bound: otherwise the
	 * last steps of the script were never crashed at. */
	assert_true(k < 600);
	/* The script has a few dozen steps; a hook that never fires would
	 * make this test prove nothing. */
	assert_true(steps >= 20);
	print_message("covered %d crash points\n", steps);
}

/* ---- what recovery rebuilds in bulk ---- */

static const char *const bulk_caps[] = {
	"--max-keys", "256",    "--max-observers", "2048", "--max-endpoints",
	"8",          "--heap", "65536",           NULL
};

#define BULK_KEYS 100

/* Take events from C until none comes for a while; count them per key
 * index (keys are "k<i>"). */
static void
count_events(struct hl_client *c, int *per_key)
{
	struct hl_event ev;
	while (hl_next(c, &ev, hl_t_ms(300)) == 0) {
		assert_int_equal(ev.type, HL_EV_PUT);
		char key[16];
		assert_true(ev.key_len > 1 && ev.key_len < sizeof(key));
		memcpy(key, ev.key, ev.key_len);
		key[ev.key_len] = '\0';
		int i = atoi(key + 1);
		assert_true(i >= 0 && i < BULK_KEYS);
		per_key[i]++;
	}
}

static void
test_many_lists_and_endpoint_lists_are_rebuilt_after_a_kill(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, bulk_caps);
	/* Two endpoints; their observers interleaved over the slots and
	 * the keys (3 of A's and 2 of B's per key), half the keys with a
	 * value: many lists, more than recovery walks side by side. */
	struct hl_client *a = hl_t_open(name, HL_OPEN_SYNC), *b = hl_t_open(name, HL_OPEN_SYNC);
	static hl_observer_id ids_a[BULK_KEYS * 3], ids_b[BULK_KEYS * 2];
	int na = 0, nb = 0;
	for (int round = 0; round < 3; round++)
		for (int i = 0; i < BULK_KEYS; i++) {
			char k[8];
			int kl = snprintf(k, sizeof(k), "k%d", i);
			assert_int_equal(hl_observe(a, k, (size_t)kl, 0, &ids_a[na++]), 0);
			if (round < 2)
				assert_int_equal(hl_observe(b, k, (size_t)kl, 0, &ids_b[nb++]), 0);
			if (round == 0 && i % 2)
				assert_int_equal(hl_publish(a, k, (size_t)kl, "v0", 2, NULL, 0), 0);
		}
	int before[BULK_KEYS] = { 0 };
	count_events(a, before);
	count_events(b, before);

	hl_t_kill9(w);
	w = hl_t_worker_startv(name, bulk_caps);
	struct hl_stats st;
	assert_int_equal(hl_stats(a, &st), 0);
	assert_int_equal(st.observers, BULK_KEYS * 5);
	assert_int_equal(st.keys, BULK_KEYS);

	/* Every observer of every key gets the next change, once. */
	for (int i = 0; i < BULK_KEYS; i++) {
		char k[8];
		int kl = snprintf(k, sizeof(k), "k%d", i);
		assert_int_equal(hl_publish(b, k, (size_t)kl, "v1", 2, NULL, 0), 0);
	}
	int got_a[BULK_KEYS] = { 0 }, got_b[BULK_KEYS] = { 0 };
	count_events(a, got_a);
	count_events(b, got_b);
	for (int i = 0; i < BULK_KEYS; i++) {
		assert_int_equal(got_a[i], 3);
		assert_int_equal(got_b[i], 2);
	}
	/* Each endpoint's rebuilt list knows each of its observers (the
	 * worker dies on one missing from its endpoint's list). */
	for (int i = 0; i < nb; i++)
		assert_int_equal(hl_unobserve(b, ids_b[i]), 0);
	for (int i = 0; i < na; i += 2)
		assert_int_equal(hl_unobserve(a, ids_a[i]), 0);
	assert_int_equal(hl_stats(a, &st), 0);
	assert_int_equal(st.observers, (uint64_t)(na - (na + 1) / 2));
	hl_close(b);
	hl_close(a);
	assert_int_equal(hl_t_worker_stop(w), 0); /* the invariant check passes */
	hl_t_unlink(name);
}

/* A larger table than the others here (70,000 observers of one client over
 * 1,000 keys, the pool rebuilt from nothing: hl__pool_init_unfilled()):
 * after the kill each observer gets the next change once, and each can be
 * removed (the worker dies on one missing from its endpoint's list). */
static void
test_large_table_is_rebuilt_after_a_kill(void **state)
{
	(void)state;
	enum { NKEYS = 1000, NOBS = 70000 };
	/* The event rings of 256 KiB hold the 7,000 events of a round. */
	static const char *const caps[] = {
		"--max-keys", "2048",   "--max-observers", "131072",    "--max-endpoints",
		"8",          "--heap", "1048576",         "--ev-ring", "262144",
		NULL
	};
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, caps);
	struct hl_client *c = hl_t_open(name, 0);
	static hl_observer_id ids[NOBS];
	char k[16];
	for (int i = 0; i < NOBS; i++) {
		int kl = snprintf(k, sizeof(k), "k%d", i % NKEYS);
		assert_int_equal(hl_observe(c, k, (size_t)kl, 0, &ids[i]), 0);
	}
	hl_t_kill9(w);
	w = hl_t_worker_startv(name, caps);
	struct hl_stats st;
	assert_int_equal(hl_stats(c, &st), 0);
	assert_int_equal(st.observers, NOBS);
	/* An id names its slot in its low 24 bits: index the ids by slot. */
	static int32_t by_slot[131072 + 1];
	static uint8_t got[NOBS];
	for (int i = 0; i < NOBS; i++) {
		uint32_t slot = (uint32_t)(ids[i] & 0xffffffu);
		assert_true(slot >= 1 && slot <= 131072 && by_slot[slot] == 0);
		by_slot[slot] = i + 1;
	}
	struct hl_event ev;
	for (int n = 0; n < NOBS; n++) {
		/* 100 keys at a time (7,000 events): within the event rings,
		 * so that nothing lags. */
		if (n % (NOBS / NKEYS * 100) == 0)
			for (int i = n / (NOBS / NKEYS); i < n / (NOBS / NKEYS) + 100; i++) {
				int kl = snprintf(k, sizeof(k), "k%d", i);
				assert_int_equal(hl_publish(c, k, (size_t)kl, "v", 1, NULL, 0), 0);
			}
		assert_int_equal(hl_next(c, &ev, hl_t_ms(5000)), 0);
		assert_int_equal(ev.type, HL_EV_PUT);
		uint32_t slot = (uint32_t)(ev.observer & 0xffffffu);
		assert_true(slot >= 1 && slot <= 131072 && by_slot[slot] != 0);
		int j = by_slot[slot] - 1;
		assert_true(ids[j] == ev.observer);
		assert_int_equal(got[j]++, 0);
	}
	assert_int_equal(hl_next(c, &ev, 200), -ETIMEDOUT); /* and no more */
	for (int i = 0; i < NOBS; i++)
		assert_int_equal(hl_unobserve(c, ids[i]), 0);
	assert_int_equal(hl_flush(c, hl_t_ms(10000)), 0);
	assert_int_equal(hl_stats(c, &st), 0);
	assert_int_equal(st.observers, 0);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0); /* the invariant check passes */
	hl_t_unlink(name);
}

static void
test_keys_whose_only_observers_were_damage_are_unlinked(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, bulk_caps);
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	/* "lonely<i>": observed, never given a value; "kept": a value too.
	 * 60 lonely keys in 256 slots share bucket chains, so some chains
	 * hold several keys to unlink in a row. */
	for (int i = 0; i < 60; i++) {
		char k[16];
		int kl = snprintf(k, sizeof(k), "lonely%d", i);
		hl_observer_id id;
		assert_int_equal(hl_observe(c, k, (size_t)kl, 0, &id), 0);
	}
	hl_observer_id kept;
	assert_int_equal(hl_observe(c, "kept", 4, 0, &kept), 0);
	assert_int_equal(hl_publish(c, "kept", 4, "v", 1, NULL, 0), 0);
	struct hl_event ev;
	assert_int_equal(hl_next(c, &ev, hl_t_ms(5000)), 0);

	/* The worker dies; every observer slot's id is then damaged (0), so
	 * every list is cut at its head. */
	hl_t_kill9(w);
	int fd;
	struct hl_seg s;
	assert_int_equal(hl__seg_open_fd(name, 1, &fd), 0);
	assert_int_equal(hl__seg_map_rw(fd, &s), 0);
	for (uint32_t i = 1; i <= s.h->max_observers; i++)
		atomic_store_explicit(&hl__obs(&s, i)->id, 0, memory_order_relaxed);
	hl__seg_unmap(&s);
	close(fd);

	w = hl_t_worker_startv(name, bulk_caps);
	struct hl_stats st;
	assert_int_equal(hl_stats(c, &st), 0);
	assert_int_equal(st.keys, 1); /* only "kept": it has a value */
	assert_int_equal(st.observers, 0);
	char buf[8];
	size_t len;
	assert_int_equal(hl_get(c, "kept", 4, buf, sizeof(buf), &len, NULL), 0);
	assert_int_equal(hl_get(c, "lonely0", 7, buf, sizeof(buf), &len, NULL), -ENOENT);
	/* The slots are free again: all 60 keys and their observers fit. */
	for (int i = 0; i < 60; i++) {
		char k[16];
		int kl = snprintf(k, sizeof(k), "lonely%d", i);
		hl_observer_id id;
		assert_int_equal(hl_observe(c, k, (size_t)kl, 0, &id), 0);
	}
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* The repairs the last recovery counted, read without a client. */
static uint64_t
last_repairs(const char *name)
{
	int fd;
	struct hl_seg seg;
	assert_int_equal(hl__seg_open_fd(name, 0, &fd), 0);
	assert_int_equal(hl__seg_map_ro(fd, &seg), 0);
	uint64_t r = atomic_load(&seg.h->last_recovery_repairs);
	hl__seg_unmap(&seg);
	close(fd);
	return r;
}

/* Break the prev link of the middle one of key KEY's three observers (the
 * list is newest first: head -> middle -> last) in a stopped segment. */
static void
break_middle_prev(const char *name, const char *key)
{
	int fd;
	struct hl_seg s;
	assert_int_equal(hl__seg_open_fd(name, 1, &fd), 0);
	assert_int_equal(hl__seg_map_rw(fd, &s), 0);
	uint32_t idx = 0;
	assert_int_equal(hl__key_lookup(&s, key, strlen(key), hl__hash(key, strlen(key)), &idx), 0);
	uint32_t head = atomic_load(&hl__key(&s, idx)->obs_head);
	assert_true(head != HL_NIL);
	uint32_t mid = atomic_load(&hl__obs(&s, head)->next);
	assert_true(mid != HL_NIL);
	assert_int_equal(atomic_load(&hl__obs(&s, mid)->prev), head);
	atomic_store(&hl__obs(&s, mid)->prev, HL_NIL);
	hl__seg_unmap(&s);
	close(fd);
}

/* Recovery's repair of an observer's prev link, on its own: no replayed
 * request rewrites the link afterwards (the worker stopped cleanly, the
 * rings are empty). Exactly one repair, the list works (every observer
 * gets the next change, an unobserve of the repaired one unlinks it), and
 * the worker's stop-time invariant check passes. */
static void
test_a_broken_prev_link_is_one_repair_and_the_list_works(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, bulk_caps);
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	hl_observer_id id[3];
	for (int i = 0; i < 3; i++)
		assert_int_equal(hl_observe(c, "k", 1, 0, &id[i]), 0);
	assert_int_equal(hl_t_worker_stop(w), 0);
	break_middle_prev(name, "k");
	w = hl_t_worker_startv(name, bulk_caps);
	assert_int_equal(last_repairs(name), 1);
	assert_int_equal(hl_publish(c, "k", 1, "v", 1, NULL, 0), 0);
	struct hl_event ev;
	for (int i = 0; i < 3; i++)
		assert_int_equal(hl_next(c, &ev, hl_t_ms(5000)), 0);
	assert_int_equal(hl_next(c, &ev, 100), -ETIMEDOUT);
	assert_int_equal(hl_unobserve(c, id[1]), 0); /* the middle one */
	assert_int_equal(hl_publish(c, "k", 1, "w", 1, NULL, 0), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(hl_next(c, &ev, hl_t_ms(5000)), 0);
		assert_true(ev.observer != id[1]);
	}
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	/* A second recovery finds nothing more to repair. */
	w = hl_t_worker_startv(name, bulk_caps);
	assert_int_equal(last_repairs(name), 0);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* The same when the client that made the list is gone before the restart:
 * the repaired list is then removed by the dead client's cleanup, which
 * walks it through the repaired links. */
static void
test_a_broken_prev_link_of_a_gone_client_is_repaired_then_cleaned(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, bulk_caps);
	int go[2];
	assert_int_equal(pipe(go), 0);
	pid_t kid = hl_t_fork();
	assert_true(kid >= 0);
	if (kid == 0) {
		struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
		hl_observer_id id;
		for (int i = 0; i < 3; i++)
			if (hl_observe(c, "k", 1, 0, &id))
				_exit(1);
		char b = 0;
		if (write(go[1], &b, 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	char b;
	assert_int_equal(read(go[0], &b, 1), 1);
	assert_int_equal(hl_t_worker_stop(w), 0);
	break_middle_prev(name, "k");
	hl_t_kill9(kid);
	w = hl_t_worker_startv(name, bulk_caps);
	assert_int_equal(last_repairs(name), 1);
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	struct hl_stats st;
	for (int i = 0; i < hl_t_ms(5000) / 10; i++) {
		assert_int_equal(hl_stats(c, &st), 0);
		if (st.observers == 0)
			break;
		usleep(10000);
	}
	assert_int_equal(st.observers, 0);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	close(go[0]);
	close(go[1]);
	hl_t_unlink(name);
}

/* A standalone worker with bulk_caps whose recovery's second part waits
 * MS (scaled) first: returns its pid once it owns the table. */
static pid_t
start_paused(const char *name, int ms)
{
	char pause[32];
	snprintf(pause, sizeof(pause), "%dms", hl_t_ms(ms));
	const char *extra[16];
	int n = 0;
	for (int i = 0; bulk_caps[i]; i++)
		extra[n++] = bulk_caps[i];
	extra[n++] = "--recovery-pause";
	extra[n++] = pause;
	extra[n] = NULL;
	pid_t w = hl_t_worker_spawnv(name, extra);
	assert_int_equal(hl_t_wait_owner(name, HL_ROLE_WORKER, (uint32_t)w, hl_t_ms(10000)), 0);
	return w;
}

/* A prefix entry whose only observer was damage is freed by recovery,
 * also when a dispatch reached its list first: a publish under the prefix
 * while the second part is held back makes the shard thread repair the
 * entry's list itself (hl_w_rec_key_ready()), which leaves it empty. The
 * worker's stop-time check fails on an entry left with nothing. */
static void
test_prefix_entry_emptied_by_damage_is_freed_after_a_dispatch_walked_it(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, bulk_caps);
	struct hl_client *a = hl_t_open(name, HL_OPEN_SYNC), *p = hl_t_open(name, 0);
	struct hl_observe_opts po = { .flags = HL_OBSERVE_PREFIX };
	hl_observer_id id;
	assert_int_equal(hl_observe_with(a, "d/", 2, &po, &id), 0);
	hl_t_kill9(w);
	int fd;
	struct hl_seg s;
	assert_int_equal(hl__seg_open_fd(name, 1, &fd), 0);
	assert_int_equal(hl__seg_map_rw(fd, &s), 0);
	atomic_store(&hl__obs(&s, (uint32_t)(id & 0xffffffu))->id, 0);
	hl__seg_unmap(&s);
	close(fd);

	w = start_paused(name, 2000);
	assert_int_equal(hl_publish(p, "d/x", 3, "v", 1, NULL, 0), 0);
	assert_int_equal(hl_flush(p, hl_t_ms(10000)), 0);
	/* An observe is answered after the second part: then the entry is
	 * gone and only "d/x" is a key. */
	hl_observer_id other;
	assert_int_equal(hl_observe(a, "e", 1, 0, &other), 0);
	struct hl_stats st;
	assert_int_equal(hl_stats(a, &st), 0);
	assert_int_equal(st.keys, 2); /* "d/x" and "e" */
	assert_int_equal(st.observers, 1);
	hl_close(a);
	hl_close(p);
	assert_int_equal(hl_t_worker_stop(w), 0); /* the invariant check passes */
	hl_t_unlink(name);
}

/* Recovery's second part (every observer list, the pools, the endpoints'
 * lists) runs while the shard threads serve (recovery.c): a publish after
 * a kill is dispatched before it ends, to every observer once, even to a
 * key whose list was damaged into a loop (the dispatch repairs that list
 * itself first: walking the loop would kill the worker); an observe and a
 * new client's first request wait for its end; nothing is lost. The
 * worker's --recovery-pause holds the second part back. */
static void
test_publishes_are_served_before_recovery_checks_every_list(void **state)
{
	(void)state;
	enum { NK = 10, PER = 3 };
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, bulk_caps);
	struct hl_client *a = hl_t_open(name, HL_OPEN_SYNC), *p = hl_t_open(name, 0);
	hl_observer_id ids[NK][PER];
	char k[16];
	for (int i = 0; i < NK; i++)
		for (int j = 0; j < PER; j++) {
			int kl = snprintf(k, sizeof(k), "k%d", i);
			assert_int_equal(hl_observe(a, k, (size_t)kl, 0, &ids[i][j]), 0);
		}
	hl_t_kill9(w);

	/* k5's list is ids[5][2] -> [1] -> [0] (observe prepends): the last
	 * one now links back to the head. */
	int fd;
	struct hl_seg s;
	assert_int_equal(hl__seg_open_fd(name, 1, &fd), 0);
	assert_int_equal(hl__seg_map_rw(fd, &s), 0);
	uint32_t head = (uint32_t)(ids[5][2] & 0xffffffu), last = (uint32_t)(ids[5][0] & 0xffffffu);
	assert_int_equal(atomic_load(&hl__obs(&s, last)->next), HL_NIL);
	atomic_store(&hl__obs(&s, last)->next, head);
	/* And the id counter went back: only the lists say how far it must
	 * go (here walked by the shard threads' dispatches, all of them). */
	atomic_store(&s.h->next_observer_seq, 1);
	hl__seg_unmap(&s);
	close(fd);

	struct hl_t_owner o;
	assert_int_equal(hl_t_owner_read(name, &o), 0);
	uint64_t recoveries = o.recoveries;
	w = start_paused(name, 4000);

	for (int i = 0; i < NK; i++) {
		int kl = snprintf(k, sizeof(k), "k%d", i);
		assert_int_equal(hl_publish(p, k, (size_t)kl, "v1", 2, NULL, 0), 0);
	}
	int got[NK][PER] = { { 0 } };
	struct hl_event ev;
	for (int n = 0; n < NK * PER; n++) {
		assert_int_equal(hl_next(a, &ev, hl_t_ms(3000)), 0);
		assert_int_equal(ev.type, HL_EV_PUT);
		int found = 0;
		for (int i = 0; i < NK; i++)
			for (int j = 0; j < PER; j++)
				if (ids[i][j] == ev.observer) {
					assert_int_equal(got[i][j]++, 0);
					found = 1;
				}
		assert_true(found);
	}
	/* All of it before the second part ended. */
	assert_int_equal(hl_t_owner_read(name, &o), 0);
	assert_int_equal(o.recoveries, recoveries);
	assert_int_equal(o.worker_ready, 0);

	/* A new client: its publish waits (not adopted yet), then arrives. */
	struct hl_client *c = hl_t_open(name, 0);
	assert_int_equal(hl_publish(c, "k1", 2, "v2", 2, NULL, 0), 0);
	/* An observe is answered only after the second part. */
	hl_observer_id late;
	assert_int_equal(hl_observe(p, "k1", 2, 0, &late), 0);
	assert_int_equal(hl_t_owner_read(name, &o), 0);
	assert_int_equal(o.recoveries, recoveries + 1);
	for (int i = 0; i < NK; i++)
		for (int j = 0; j < PER; j++)
			assert_true(late >> 24 > ids[i][j] >> 24); /* never an id again */
	for (int j = 0; j < PER; j++) {
		assert_int_equal(hl_next(a, &ev, hl_t_ms(5000)), 0);
		assert_true(ev.key_len == 2 && memcmp(ev.key, "k1", 2) == 0);
		assert_int_equal(ev.new_len, 2);
		assert_memory_equal(ev.new_value, "v2", 2);
	}
	assert_int_equal(hl_next(a, &ev, 200), -ETIMEDOUT); /* and no more */
	struct hl_stats st;
	assert_int_equal(hl_stats(a, &st), 0);
	assert_int_equal(st.observers, NK * PER + 1);
	assert_int_equal(hl__seg_open_fd(name, 0, &fd), 0);
	assert_int_equal(hl__seg_map_ro(fd, &s), 0);
	assert_int_equal(atomic_load(&s.h->last_recovery_repairs), 1); /* the loop, cut once */
	hl__seg_unmap(&s);
	close(fd);
	hl_close(c);
	hl_close(p);
	hl_close(a);
	assert_int_equal(hl_t_worker_stop(w), 0); /* the invariant check passes */
	hl_t_unlink(name);
}

/* A SIGTERM while recovery's second part runs: the worker finishes it,
 * passes its invariant check (exit 0) and hands back a table in which
 * nothing is lost: the next worker finds every observer and value. */
static void
test_a_stop_during_recovery_finishes_it_first(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, bulk_caps);
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	hl_observer_id id;
	char k[16];
	for (int i = 0; i < BULK_KEYS; i++) {
		int kl = snprintf(k, sizeof(k), "k%d", i);
		assert_int_equal(hl_observe(c, k, (size_t)kl, 0, &id), 0);
		assert_int_equal(hl_publish(c, k, (size_t)kl, "v", 1, NULL, 0), 0);
	}
	hl_t_kill9(w);
	w = start_paused(name, 1000);
	struct hl_t_owner o;
	assert_int_equal(hl_t_owner_read(name, &o), 0);
	assert_int_equal(o.worker_ready, 0); /* still in the pause */
	assert_int_equal(hl_t_worker_stop(w), 0);
	w = hl_t_worker_startv(name, bulk_caps);
	struct hl_stats st;
	assert_int_equal(hl_stats(c, &st), 0);
	assert_int_equal(st.observers, BULK_KEYS);
	assert_int_equal(st.keys, BULK_KEYS);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_script_passes_without_crash),
		cmocka_unit_test(test_crash_at_every_step_of_every_mutation_is_repaired),
		cmocka_unit_test(
		        test_prefix_entry_emptied_by_damage_is_freed_after_a_dispatch_walked_it),
		cmocka_unit_test(test_many_lists_and_endpoint_lists_are_rebuilt_after_a_kill),
		cmocka_unit_test(test_keys_whose_only_observers_were_damage_are_unlinked),
		cmocka_unit_test(test_a_broken_prev_link_is_one_repair_and_the_list_works),
		cmocka_unit_test(test_a_broken_prev_link_of_a_gone_client_is_repaired_then_cleaned),
		cmocka_unit_test(test_large_table_is_rebuilt_after_a_kill),
		cmocka_unit_test(test_publishes_are_served_before_recovery_checks_every_list),
		cmocka_unit_test(test_a_stop_during_recovery_finishes_it_first),
	};
	return cmocka_run_group_tests_name("recovery", tests, NULL, NULL);
}
