/* SPDX-License-Identifier: MIT */
/*
 * test_prefix.c: prefix observers (HL_OBSERVE_PREFIX, issue 14 item 1)
 * against a real worker with 4 shards, so that a prefix's keys fall in
 * shards other than the prefix entry's: keys created after the observe are
 * delivered and named, keys outside the prefix are not, changes before the
 * observe are not, an exact and a prefix observer of one process both get
 * the event, filters apply, unobserve and a client's death remove the
 * observer, and a worker SIGKILL keeps it.
 */
#include "harness.h"

#include "util.h" /* hl__hash(): which shard a key is in */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PFX "session/42/"
#define PL  (sizeof(PFX) - 1)
#define NEV 512

struct fx {
	const char *name;
	pid_t worker;
	struct hl_client *c;
};

static const char *const caps[] = {
	"--max-keys", "256",    "--max-observers", "256",         "--max-endpoints",
	"8",          "--heap", "524288",          "--max-value", "512",
	"--ev-ring",  "65536",  "--shards",        "4",           NULL
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	f->name = hl_t_name();
	f->worker = hl_t_worker_startv(f->name, caps);
	f->c = hl_t_open(f->name, HL_OPEN_SYNC);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	hl_close(f->c);
	assert_int_equal(hl_t_worker_stop(f->worker), 0);
	hl_t_unlink(f->name);
	free(f);
	return 0;
}

/* A copy of an event whose key outlives the next hl_next(). */
struct ev {
	int type;
	hl_observer_id obs;
	uint64_t rev;
	char key[64];
	int has_old;
};

/* Take every event now queued (the client is SYNC: all are written). */
static int
take_all(struct hl_client *c, struct ev *evs, int cap)
{
	int n = 0;
	struct hl_event e;
	while (hl_next(c, &e, 0) == 0) {
		assert_true(n < cap);
		assert_true(e.key_len < sizeof(evs[n].key));
		evs[n] = (struct ev){ .type = (int)e.type,
			              .obs = e.observer,
			              .rev = e.revision,
			              .has_old = e.has_old };
		memcpy(evs[n].key, e.key, e.key_len);
		n++;
	}
	return n;
}

static hl_observer_id
observe_prefix(struct hl_client *c, const char *p, uint32_t more_flags)
{
	struct hl_observe_opts o = { .flags = HL_OBSERVE_PREFIX | more_flags };
	hl_observer_id id = 0;
	assert_int_equal(hl_observe_with(c, p, strlen(p), &o, &id), 0);
	assert_true(id != 0);
	return id;
}

static void
put(struct hl_client *c, const char *k, const char *v)
{
	assert_int_equal(hl_publish(c, k, strlen(k), v, strlen(v), NULL, 0), 0);
}

/* Events of observer OBS for key K (type 0: any). */
static int
count(const struct ev *evs, int n, hl_observer_id obs, const char *k, int type)
{
	int m = 0;
	for (int i = 0; i < n; i++)
		m += evs[i].obs == obs && strcmp(evs[i].key, k) == 0 &&
		     (type == 0 || evs[i].type == type);
	return m;
}

/* Per key, an observer's revisions strictly increase. */
static void
assert_increasing_per_key(const struct ev *evs, int n)
{
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			if (evs[i].obs == evs[j].obs && strcmp(evs[i].key, evs[j].key) == 0)
				assert_true(evs[i].rev < evs[j].rev);
}

static void
test_prefix_observer_gets_keys_created_after_the_observe(void **state)
{
	struct fx *f = *state;
	hl_observer_id id = observe_prefix(f->c, PFX, 0);
	/* 64 new keys: with 4 shards, most live in a shard other than the
	 * prefix entry's. */
	char k[64];
	for (int i = 0; i < 64; i++) {
		snprintf(k, sizeof(k), PFX "k%d", i);
		put(f->c, k, "a");
		put(f->c, k, "b");
	}
	assert_int_equal(hl_delete(f->c, PFX "k7", sizeof(PFX "k7") - 1), 0);
	static struct ev evs[NEV];
	int n = take_all(f->c, evs, NEV);
	assert_int_equal(n, 129);
	for (int i = 0; i < 64; i++) {
		snprintf(k, sizeof(k), PFX "k%d", i);
		assert_int_equal(count(evs, n, id, k, HL_EV_PUT), 2);
	}
	assert_int_equal(count(evs, n, id, PFX "k7", HL_EV_DELETE), 1);
	assert_increasing_per_key(evs, n);
	/* The event's revision is the key's. */
	uint64_t rev = 0;
	assert_int_equal(hl_get(f->c, PFX "k3", sizeof(PFX "k3") - 1, NULL, 0, NULL, &rev), 0);
	for (int i = 0; i < n; i++)
		if (strcmp(evs[i].key, PFX "k3") == 0 && evs[i].has_old)
			assert_int_equal(evs[i].rev, rev);
}

static void
test_prefix_observer_ignores_keys_outside_the_prefix(void **state)
{
	struct fx *f = *state;
	hl_observer_id id = observe_prefix(f->c, PFX, 0);
	/* Shorter than the prefix, a sibling, one byte off, another root. */
	put(f->c, "session/42", "x");
	put(f->c, "session/4", "x");
	put(f->c, "session/43/a", "x");
	put(f->c, "session/42-a", "x");
	put(f->c, "other/session/42/a", "x");
	/* The prefix's own bytes are a key that starts with it. */
	put(f->c, PFX, "x");
	static struct ev evs[NEV];
	int n = take_all(f->c, evs, NEV);
	assert_int_equal(n, 1);
	assert_int_equal(count(evs, n, id, PFX, HL_EV_PUT), 1);
}

static void
test_prefix_observer_gets_no_change_from_before_the_observe(void **state)
{
	struct fx *f = *state;
	put(f->c, PFX "early", "1");
	hl_observer_id id = observe_prefix(f->c, PFX, 0);
	static struct ev evs[NEV];
	assert_int_equal(take_all(f->c, evs, NEV), 0);
	put(f->c, PFX "early", "2");
	int n = take_all(f->c, evs, NEV);
	assert_int_equal(n, 1);
	assert_int_equal(count(evs, n, id, PFX "early", HL_EV_PUT), 1);
}

static void
test_exact_and_prefix_observers_of_one_process_both_get_the_event(void **state)
{
	struct fx *f = *state;
	hl_observer_id exact, pfx, outer;
	assert_int_equal(hl_observe(f->c, PFX "a", PL + 1, 0, &exact), 0);
	pfx = observe_prefix(f->c, PFX, 0);
	outer = observe_prefix(f->c, "session/", 0);
	put(f->c, PFX "a", "v");
	static struct ev evs[NEV];
	int n = take_all(f->c, evs, NEV);
	assert_int_equal(n, 3);
	assert_int_equal(count(evs, n, exact, PFX "a", HL_EV_PUT), 1);
	assert_int_equal(count(evs, n, pfx, PFX "a", HL_EV_PUT), 1);
	assert_int_equal(count(evs, n, outer, PFX "a", HL_EV_PUT), 1);
	assert_int_equal(evs[0].rev, evs[1].rev);
	assert_int_equal(evs[1].rev, evs[2].rev);
	/* Another process's prefix observer is served as well. */
	struct hl_client *c2 = hl_t_open(f->name, 0);
	hl_observer_id o2 = observe_prefix(c2, "sess", 0);
	put(f->c, PFX "a", "w");
	struct hl_event e;
	assert_int_equal(hl_next(c2, &e, hl_t_ms(5000)), 0);
	assert_int_equal(e.observer, o2);
	assert_int_equal(e.key_len, PL + 1);
	assert_memory_equal(e.key, PFX "a", PL + 1);
	hl_close(c2);
}

static void
test_prefix_observer_filters_apply(void **state)
{
	struct fx *f = *state;
	hl_observer_id puts = observe_prefix(f->c, PFX, HL_OBSERVE_NODELETE | HL_OBSERVE_NOOLD);
	hl_observer_id dels = observe_prefix(f->c, PFX, HL_OBSERVE_NOPUT);
	put(f->c, PFX "x", "1");
	put(f->c, PFX "x", "2");
	assert_int_equal(hl_delete(f->c, PFX "x", PL + 1), 0);
	static struct ev evs[NEV];
	int n = take_all(f->c, evs, NEV);
	assert_int_equal(count(evs, n, puts, PFX "x", HL_EV_PUT), 2);
	assert_int_equal(count(evs, n, puts, PFX "x", HL_EV_DELETE), 0);
	assert_int_equal(count(evs, n, dels, PFX "x", HL_EV_DELETE), 1);
	assert_int_equal(count(evs, n, dels, PFX "x", HL_EV_PUT), 0);
	assert_int_equal(n, 3);
	for (int i = 0; i < n; i++)
		if (evs[i].obs == puts)
			assert_int_equal(evs[i].has_old, 0);
}

static int
count_key(const void *key, size_t key_len, uint64_t revision, void *arg)
{
	(void)key;
	(void)key_len;
	(void)revision;
	++*(int *)arg;
	return 0;
}

static void
test_prefix_entry_is_not_a_key(void **state)
{
	struct fx *f = *state;
	(void)observe_prefix(f->c, PFX, 0);
	assert_int_equal(hl_get(f->c, PFX, PL, NULL, 0, NULL, NULL), -ENOENT);
	/* A key with the prefix's bytes and the prefix entry live side by
	 * side, each found by its own kind of lookup. */
	put(f->c, PFX, "v");
	size_t len = 0;
	char buf[8];
	assert_int_equal(hl_get(f->c, PFX, PL, buf, sizeof(buf), &len, NULL), 0);
	assert_int_equal(len, 1);
	/* hl_keys() lists keys with a value: the one key, not the entry. */
	int keys = 0;
	assert_int_equal(hl_keys(f->c, count_key, &keys), 0);
	assert_int_equal(keys, 1);
}

static void
test_unobserve_stops_prefix_events_and_frees_the_entry(void **state)
{
	struct fx *f = *state;
	struct hl_stats before = hl_t_stats(f->c);
	hl_observer_id id = observe_prefix(f->c, PFX, 0);
	/* A prefix entry is counted as a prefix, not as a key. */
	assert_int_equal(hl_t_stats(f->c).prefixes, before.prefixes + 1);
	assert_int_equal(hl_t_stats(f->c).keys, before.keys);
	assert_int_equal(hl_unobserve(f->c, id), 0);
	assert_int_equal(hl_flush(f->c, hl_t_ms(5000)), 0);
	/* The entry went with its last observer. */
	assert_int_equal(hl_t_stats(f->c).prefixes, before.prefixes);
	put(f->c, PFX "a", "v");
	static struct ev evs[NEV];
	assert_int_equal(take_all(f->c, evs, NEV), 0);
	/* The same prefix again: a new entry, and it delivers. */
	hl_observer_id again = observe_prefix(f->c, PFX, 0);
	put(f->c, PFX "a", "w");
	int n = take_all(f->c, evs, NEV);
	assert_int_equal(n, 1);
	assert_int_equal(count(evs, n, again, PFX "a", HL_EV_PUT), 1);
}

static void
test_prefix_observers_removed_when_their_client_dies(void **state)
{
	struct fx *f = *state;
	struct hl_stats before = hl_t_stats(f->c);
	pid_t child = hl_t_fork();
	if (child == 0) {
		struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
		struct hl_observe_opts o = { .flags = HL_OBSERVE_PREFIX };
		hl_observer_id id;
		if (hl_observe_with(c, PFX, PL, &o, &id) != 0 ||
		    hl_observe_with(c, "session/", 8, &o, &id) != 0)
			_exit(1);
		_exit(0); /* no hl_close(): the worker notices the death */
	}
	int st = 0;
	assert_int_equal(waitpid(child, &st, 0), child);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* Cleanup is asynchronous: wait for it (bounded), then check. */
	uint64_t until = hl_t_now_ms() + (uint64_t)hl_t_ms(10000);
	while (hl_t_stats(f->c).observers != before.observers && hl_t_now_ms() < until)
		hl_t_sleep_ms(10);
	struct hl_stats after = hl_t_stats(f->c);
	assert_int_equal(after.observers, before.observers);
	assert_int_equal(after.keys, before.keys);
	assert_int_equal(after.prefixes, before.prefixes);
	/* Publishing under the prefix still works and reaches nobody. */
	put(f->c, PFX "a", "v");
	assert_int_equal(hl_t_stats(f->c).notifications, before.notifications);
}

static void
test_prefix_observer_survives_a_worker_restart(void **state)
{
	struct fx *f = *state;
	hl_observer_id id = observe_prefix(f->c, PFX, HL_OBSERVE_NODELETE);
	put(f->c, PFX "before", "1");
	hl_t_kill9(f->worker);
	f->worker = hl_t_worker_startv(f->name, caps);
	/* Recovery counts the entry again, as a prefix. */
	assert_int_equal(hl_t_stats(f->c).prefixes, 1);
	assert_int_equal(hl_t_stats(f->c).keys, 1);
	char k[64];
	for (int i = 0; i < 16; i++) {
		snprintf(k, sizeof(k), PFX "after%d", i);
		put(f->c, k, "2");
	}
	assert_int_equal(hl_delete(f->c, PFX "before", PL + 6), 0);
	put(f->c, "session/43/x", "3");
	static struct ev evs[NEV];
	int n = take_all(f->c, evs, NEV);
	assert_int_equal(count(evs, n, id, PFX "before", HL_EV_PUT), 1);
	for (int i = 0; i < 16; i++) {
		snprintf(k, sizeof(k), PFX "after%d", i);
		assert_int_equal(count(evs, n, id, k, HL_EV_PUT), 1);
	}
	assert_int_equal(n, 17); /* the filter held, nothing outside came */
	assert_increasing_per_key(evs, n);
	assert_int_equal(hl_unobserve(f->c, id), 0);
	assert_int_equal(hl_flush(f->c, hl_t_ms(5000)), 0);
}

/* The shard of a key in the fixture's segment: 256 keys make 256 buckets,
 * and bucket b is shard b % 4 (lib/segment.h). */
static uint32_t
shard_of(const char *key)
{
	return (uint32_t)(hl__hash(key, strlen(key)) & 255u) % 4u;
}

/* A prefix observer that reads too slowly loses events in any shard's
 * ring: each loss is reported, by LAGGED counts, so that the events it got
 * and the ones reported lost add up to every change under its prefix. The
 * keys are all in shards other than the prefix entry's, whose ring (and
 * lag counter) never moves. */
static void
test_lagging_prefix_observer_gets_lagged_counting_every_lost_event(void **state)
{
	struct fx *f = *state;
	struct hl_client *slow = hl_t_open(f->name, 0);
	hl_observer_id id = observe_prefix(slow, PFX, 0);
	char keys[32][64], v[200];
	int nk = 0;
	for (int i = 0; nk < 32; i++) {
		snprintf(keys[nk], sizeof(keys[nk]), PFX "k%d", i);
		if (shard_of(keys[nk]) != shard_of(PFX))
			nk++;
	}
	memset(v, 'v', sizeof(v));
	int changes = 0;
	for (int round = 0; round < 40; round++)
		for (int i = 0; i < nk; i++, changes++) {
			const char *k = keys[i];
			v[0] = (char)('a' + round % 26);
			v[1] = (char)('a' + round / 26);
			assert_int_equal(hl_publish(f->c, k, strlen(k), v, sizeof(v), NULL, 0), 0);
		}
	assert_true(hl_t_stats(f->c).lagged_drops > 0);
	long puts = 0, lost = 0, lags = 0;
	struct hl_event e;
	while (hl_next(slow, &e, 0) == 0) {
		assert_int_equal(e.observer, id);
		assert_true(e.type == HL_EV_PUT || e.type == HL_EV_LAGGED);
		if (e.type == HL_EV_LAGGED) {
			lags++;
			lost += (long)e.lagged;
			assert_int_equal(e.key_len, PL);
			assert_memory_equal(e.key, PFX, PL);
		} else {
			puts++;
		}
	}
	assert_true(lags > 0);
	assert_int_equal(puts + lost, changes);
	hl_close(slow);
}

static void
test_prefix_flag_is_refused_with_an_empty_or_long_prefix(void **state)
{
	struct fx *f = *state;
	struct hl_observe_opts o = { .flags = HL_OBSERVE_PREFIX };
	hl_observer_id id = 42;
	char big[HL_KEY_MAX + 1];
	memset(big, 'p', sizeof(big));
	assert_int_equal(hl_observe_with(f->c, "", 0, &o, &id), -EINVAL);
	assert_int_equal(hl_observe_with(f->c, big, sizeof(big), &o, &id), -EINVAL);
	assert_int_equal(id, 42);
	/* The longest prefix is a whole key: it matches that key only. */
	assert_int_equal(hl_observe_with(f->c, big, HL_KEY_MAX, &o, &id), 0);
	assert_int_equal(hl_publish(f->c, big, HL_KEY_MAX, "v", 1, NULL, 0), 0);
	struct hl_event e;
	assert_int_equal(hl_next(f->c, &e, hl_t_ms(5000)), 0);
	assert_int_equal(e.observer, id);
	assert_int_equal(e.key_len, HL_KEY_MAX);
}

/* ---- the window between a commit and its dispatch ----
 *
 * A worker started with the --hold-dispatch-* test hook: shard HOLD, after
 * committing a client's change (readers see it, its revision is taken),
 * waits before dispatching it while the hold file exists. A second,
 * asynchronous client makes that change (its publish is answered only
 * after the dispatch); the test sees the commit through hl_get(), orders
 * other shards' work into the window, then removes the file. */
struct hold_fx {
	struct fx f;
	char file[96];
	uint32_t hold;
	struct hl_client *async;
};

static int
setup_hold(void **state)
{
	struct hold_fx *h = calloc(1, sizeof(*h));
	h->f.name = hl_t_name();
	/* The held shard is not the prefix entry's: an observe of PFX is
	 * applied while a change waits there. */
	h->hold = (shard_of(PFX) + 1) % 4;
	snprintf(h->file, sizeof(h->file), "/tmp/hl-hold-%s", h->f.name);
	unlink(h->file);
	char hs[16];
	snprintf(hs, sizeof(hs), "%u", h->hold);
	const char *args[32];
	int n = 0;
	for (const char *const *a = caps; *a; a++)
		args[n++] = *a;
	args[n++] = "--hold-dispatch-shard";
	args[n++] = hs;
	args[n++] = "--hold-dispatch-file";
	args[n++] = h->file;
	args[n] = NULL;
	h->f.worker = hl_t_worker_startv(h->f.name, args);
	h->f.c = hl_t_open(h->f.name, HL_OPEN_SYNC);
	h->async = hl_t_open(h->f.name, 0);
	*state = h;
	return 0;
}

static int
teardown_hold(void **state)
{
	struct hold_fx *h = *state;
	unlink(h->file);
	hl_close(h->async);
	hl_close(h->f.c);
	assert_int_equal(hl_t_worker_stop(h->f.worker), 0);
	hl_t_unlink(h->f.name);
	free(h);
	return 0;
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

/* Publish K = V from the asynchronous client with the hold on, and wait
 * (bounded) until the change is committed: it is then held before its
 * dispatch until release(). Returns its revision. */
static uint64_t
put_held(struct hold_fx *h, const char *k, const char *v)
{
	int fd = open(h->file, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(hl_publish(h->async, k, strlen(k), v, strlen(v), NULL, 0), 0);
	uint64_t until = hl_t_now_ms() + (uint64_t)hl_t_ms(10000), rev = 0;
	char buf[16];
	size_t len = 0;
	for (;;) {
		if (hl_get(h->f.c, k, strlen(k), buf, sizeof(buf), &len, &rev) == 0 &&
		    len == strlen(v) && memcmp(buf, v, len) == 0)
			return rev;
		assert_true(hl_t_now_ms() < until);
		hl_t_sleep_ms(1);
	}
}

/* End the hold and wait until the held change is dispatched (its publish
 * is answered after its dispatch). */
static void
release(struct hold_fx *h)
{
	assert_int_equal(unlink(h->file), 0);
	assert_int_equal(hl_flush(h->async, hl_t_ms(10000)), 0);
}

/* A change that took its revision before a prefix observe but is
 * dispatched after it happened before the observe: not delivered. (The
 * observer's start revision is the global revision, not its entry's.) */
static void
test_change_committed_before_prefix_observe_is_not_delivered(void **state)
{
	struct hold_fx *h = *state;
	struct fx *f = &h->f;
	char ka[64];
	key_in(ka, sizeof(ka), h->hold, 1, "a");
	uint64_t r1 = put_held(h, ka, "1");
	hl_observer_id id = observe_prefix(f->c, PFX, 0);
	release(h);
	static struct ev evs[NEV];
	assert_int_equal(take_all(f->c, evs, NEV), 0);
	/* The observer works: the next change of that key arrives. */
	put(f->c, ka, "2");
	int n = take_all(f->c, evs, NEV);
	assert_int_equal(n, 1);
	assert_int_equal(count(evs, n, id, ka, HL_EV_PUT), 1);
	assert_true(evs[0].rev > r1);
}

/* Shards dispatch in no common order: one dispatches a lower revision
 * after another dispatched a higher one. A prefix observer gets both
 * (deliver_ep() never moves its delivered_rev). */
static void
test_prefix_observer_gets_a_lower_revision_dispatched_later(void **state)
{
	struct hold_fx *h = *state;
	struct fx *f = &h->f;
	char ka[64], kb[64];
	key_in(ka, sizeof(ka), h->hold, 1, "a");
	key_in(kb, sizeof(kb), h->hold, 0, "b");
	hl_observer_id id = observe_prefix(f->c, PFX, 0);
	uint64_t r1 = put_held(h, ka, "1");
	put(f->c, kb, "2"); /* dispatched at once, by another shard */
	uint64_t r2 = 0;
	assert_int_equal(hl_get(f->c, kb, strlen(kb), NULL, 0, NULL, &r2), 0);
	assert_true(r2 > r1);
	static struct ev evs[NEV];
	int n = take_all(f->c, evs, NEV);
	assert_int_equal(n, 1);
	assert_int_equal(count(evs, n, id, kb, HL_EV_PUT), 1);
	release(h);
	n = take_all(f->c, evs, NEV);
	assert_int_equal(n, 1);
	assert_int_equal(count(evs, n, id, ka, HL_EV_PUT), 1);
	assert_int_equal(evs[0].rev, r1);
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_prefix_observer_gets_keys_created_after_the_observe),
		T(test_prefix_observer_ignores_keys_outside_the_prefix),
		T(test_prefix_observer_gets_no_change_from_before_the_observe),
		T(test_exact_and_prefix_observers_of_one_process_both_get_the_event),
		T(test_prefix_observer_filters_apply),
		T(test_prefix_entry_is_not_a_key),
		T(test_unobserve_stops_prefix_events_and_frees_the_entry),
		T(test_prefix_observers_removed_when_their_client_dies),
		T(test_prefix_observer_survives_a_worker_restart),
		T(test_lagging_prefix_observer_gets_lagged_counting_every_lost_event),
		T(test_prefix_flag_is_refused_with_an_empty_or_long_prefix),
		cmocka_unit_test_setup_teardown(
		        test_change_committed_before_prefix_observe_is_not_delivered, setup_hold,
		        teardown_hold),
		cmocka_unit_test_setup_teardown(
		        test_prefix_observer_gets_a_lower_revision_dispatched_later, setup_hold,
		        teardown_hold),
	};
	return cmocka_run_group_tests_name("prefix", tests, NULL, NULL);
}
