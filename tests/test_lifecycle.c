/* SPDX-License-Identifier: MIT */
/*
 * test_lifecycle.c: what happens to a client's observers and endpoint when
 * its process goes away, across real processes and a real worker:
 *  - 1,000 clients killed with SIGKILL (some in the middle of a request,
 *    some while still attaching) leave nothing behind: observer, endpoint and
 *    key counts, the heap's used bytes and the claim words are back to where
 *    they started, and the worker's own invariant check passes at stop;
 *  - the pidfd watch alone frees a dead client at once (no prune pass);
 *  - a pid reused by another process does not keep the old observers at
 *    adoption (faked: the claim's start time is rewritten, as if another
 *    process now ran under that pid); a live client that rewrites its
 *    claim's start time is banned by the prune pass and its endpoint held
 *    until it exits;
 *  - a claim left by a process that died before the worker adopted it is
 *    freed by the periodic prune pass, or with the pass disabled only by the
 *    next worker's pass at start;
 *  - a client that lives but does not read is reported as slow and keeps
 *    its observers, and is no longer reported once it reads.
 * Every wait is bounded (hl_t_ms); nothing asserts on how long a step took.
 */
#include "harness.h"

#include "client_internal.h"
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SHARED_KEYS 50
#define VALUE_LEN   7 /* every value of a shared key: same size class */

/* Shared with the child processes (MAP_SHARED anonymous). */
struct board {
	_Atomic int ready[256]; /* child i of the current wave observed its keys */
	struct hl_t_fail fail;
};

/* hl_t_small with the prune pass every MS milliseconds ("0": at start only). */
static const char *const *
small_with_prune(const char *ms)
{
	static const char *args[16];
	int n = 0;
	for (; hl_t_small[n]; n++)
		args[n] = hl_t_small[n];
	args[n++] = "--prune-interval";
	args[n++] = ms;
	args[n] = NULL;
	return args;
}

/* What the endpoint of C looks like from the client (for a failure message:
 * a stalled request is otherwise a bare "timed out"). */
static void
endpoint_state(struct hl_client *c, char *buf, size_t len)
{
	uint32_t ep;
	struct hl_seg *seg = hl__client_seg(c, &ep);
	struct hl_shm_claim *cl = hl__claim(seg, ep);
	struct hl_shm_epw *pw = hl__epw(seg, ep);
	uint64_t word = atomic_load(&cl->word);
	int n = snprintf(buf, len,
	                 " [ep %u: claim pid %u gen %u ready %u start %llu; worker state %u gen %u "
	                 "pid %u start %llu nobs %llu",
	                 ep, HL_CLAIM_PID(word), HL_CLAIM_GEN(word), atomic_load(&cl->ready),
	                 (unsigned long long)atomic_load(&cl->start_time), atomic_load(&pw->state),
	                 atomic_load(&pw->gen), atomic_load(&pw->pid),
	                 (unsigned long long)atomic_load(&pw->start_time),
	                 (unsigned long long)atomic_load(&pw->nobs));
	for (uint32_t s = 0; s < seg->h->shards && n > 0 && (size_t)n < len; s++) {
		struct hl_shm_epw_shard *ws = hl__epw_shard(seg, ep, s);
		struct hl_shm_epc_shard *cs = hl__epc_shard(seg, ep, s);
		uint64_t pend = atomic_load(hl__pending(seg, s) + ep / 64);
		n += snprintf(
		        buf + n, len - (size_t)n,
		        "; shard %u: pending %d sleeping %u req head %llu tail %llu result_pos "
		        "%llu intent %llu",
		        s, (int)((pend >> (ep % 64)) & 1), atomic_load(&seg->h->shard[s].sleeping),
		        (unsigned long long)atomic_load(&cs->req_head),
		        (unsigned long long)atomic_load(&ws->req_tail),
		        (unsigned long long)atomic_load(&ws->result_pos),
		        (unsigned long long)atomic_load(&ws->intent_pos));
	}
	if (n > 0 && (size_t)n < len)
		snprintf(buf + n, len - (size_t)n, "]");
}

static void
sleep_us(long us)
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000L };
	nanosleep(&ts, NULL);
}

/* Claim words held (pid != 0) by anyone but the endpoint OWN of client C. */
static uint32_t
claims_held(struct hl_client *c)
{
	uint32_t own, n = 0;
	struct hl_seg *seg = hl__client_seg(c, &own);
	for (uint32_t ep = 0; ep < seg->h->max_endpoints; ep++) {
		uint64_t w = atomic_load(&hl__claim(seg, ep)->word);
		if (ep != own && HL_CLAIM_PID(w) != 0)
			n++;
	}
	return n;
}

/* Whether what the table holds is what it held in BASE: observers,
 * endpoints, keys and the heap's used bytes, and no claim but C's own. */
static int
back_to(struct hl_client *c, const struct hl_stats *base, struct hl_stats *now)
{
	*now = hl_t_stats(c);
	return now->observers == base->observers && now->endpoints == base->endpoints &&
	       now->keys == base->keys && now->heap_used == base->heap_used && claims_held(c) == 0;
}

/* Poll (bounded) until back_to() holds; fail with the figures if not. */
static void
wait_back_to(struct hl_client *c, const struct hl_stats *base, const char *when)
{
	struct hl_stats now;
	for (int waited = 0; waited <= hl_t_ms(30000); waited += 5) {
		if (back_to(c, base, &now))
			return;
		hl_t_sleep_ms(5);
	}
	fail_msg("%s: not back to the start: observers %lu (start %lu), endpoints %lu (%lu), "
	         "keys %lu (%lu), heap used %lu (%lu), claims held %u",
	         when, (unsigned long)now.observers, (unsigned long)base->observers,
	         (unsigned long)now.endpoints, (unsigned long)base->endpoints,
	         (unsigned long)now.keys, (unsigned long)base->keys, (unsigned long)now.heap_used,
	         (unsigned long)base->heap_used, claims_held(c));
}

static void
shared_key(char *buf, size_t len, int i)
{
	snprintf(buf, len, "s%d", i % SHARED_KEYS);
}

/* ---- the 1,000 clients ---- */

enum child_kind {
	K_IDLE,    /* observe, then wait to be killed */
	K_PUBLISH, /* observe, then publish in a loop: killed mid-publish */
	K_CHURN,   /* observe, then observe/unobserve in a loop: killed mid-observe */
	K_EARLY,   /* killed at a random moment while attaching and observing */
	K_READ,    /* observe, then read events in a loop */
	K_KINDS,
};

/* Client process IDX (global number I): 10 observers, 5 on shared keys (which
 * have values) and 5 on keys of its own (created by observing, so they must
 * go when the observers go). */
static void
client_proc(const char *name, struct board *b, int idx, int i)
{
	enum child_kind kind = (enum child_kind)(i % K_KINDS);
	struct hl_client *c = NULL;
	struct hl_open_opts o = { .timeout_ms = hl_t_ms(30000) };
	int rc = hl_open(name, &o, &c);
	if (rc)
		hl_t_child_fail(&b->fail, "client %d: open: %s", i, hl_strerror(rc));
	for (int j = 0; j < 10; j++) {
		char key[32];
		if (j < 5)
			shared_key(key, sizeof(key), i + j);
		else
			snprintf(key, sizeof(key), "c%d/%d", i, j);
		hl_observer_id id;
		rc = hl_observe(c, key, strlen(key), 0, &id);
		if (rc) {
			char st[700];
			endpoint_state(c, st, sizeof(st));
			hl_t_child_fail(&b->fail, "client %d: observe %s: %s%s", i, key,
			                hl_strerror(rc), st);
		}
	}
	atomic_store(&b->ready[idx], 1);
	char key[32], val[16];
	for (unsigned n = 0;; n++) {
		switch (kind) {
		case K_PUBLISH:
			shared_key(key, sizeof(key), (int)n);
			snprintf(val, sizeof(val), "p-%05u", n % 100000);
			rc = hl_publish(c, key, strlen(key), val, VALUE_LEN, NULL, 0);
			if (rc && rc != -ETIMEDOUT && rc != -EAGAIN)
				hl_t_child_fail(&b->fail, "client %d: publish: %s", i,
				                hl_strerror(rc));
			/* Paced: the point is to be killed mid-publish, not to
			 * flood the worker (40 flat-out publishers, each change
			 * fanned out to ~100 observers, starve the other
			 * clients' requests under a sanitizer). */
			usleep(2000);
			break;
		case K_CHURN: {
			hl_observer_id id;
			snprintf(key, sizeof(key), "c%d/x", i);
			rc = hl_observe(c, key, strlen(key), 0, &id);
			if (rc == 0)
				rc = hl_unobserve(c, id);
			if (rc && rc != -ETIMEDOUT && rc != -EAGAIN)
				hl_t_child_fail(&b->fail, "client %d: churn: %s", i,
				                hl_strerror(rc));
			break;
		}
		case K_READ: {
			struct hl_event ev;
			rc = hl_next(c, &ev, 100);
			if (rc && rc != -ETIMEDOUT)
				hl_t_child_fail(&b->fail, "client %d: next: %s", i,
				                hl_strerror(rc));
			break;
		}
		default: pause(); break;
		}
	}
}

static void
test_thousand_killed_clients_leave_nothing_behind(void **state)
{
	(void)state;
	enum { CLIENTS = 1000, WAVE = 200 };
	const char *name = hl_t_name();
	/* 256 endpoints: a wave of 200 plus this process. The prune pass runs
	 * too (200 ms): clients killed while attaching may die between their
	 * claim and `ready`, which only the pass can tell. */
	const char *const args[] = { "--max-endpoints",
		                     "256",
		                     "--max-keys",
		                     "8192",
		                     "--max-observers",
		                     "65536",
		                     "--heap",
		                     "8388608",
		                     "--ev-ring",
		                     "65536",
		                     "--prune-interval",
		                     "200",
		                     NULL };
	pid_t w = hl_t_worker_startv(name, args);
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	for (int i = 0; i < SHARED_KEYS; i++) {
		char key[32];
		shared_key(key, sizeof(key), i);
		assert_int_equal(hl_publish(c, key, strlen(key), "v-00000", VALUE_LEN, NULL, 0), 0);
	}
	struct hl_stats base = hl_t_stats(c);
	assert_int_equal(base.endpoints, 1);
	assert_int_equal(base.keys, SHARED_KEYS);
	assert_int_equal(base.observers, 0);

	struct board *b = hl_t_shared(sizeof(struct board));
	pid_t kids[WAVE];
	srand(4);
	for (int first = 0; first < CLIENTS; first += WAVE) {
		memset((void *)b->ready, 0, sizeof(b->ready));
		uint64_t early_kill_us[WAVE];
		struct timespec t0;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (int k = 0; k < WAVE; k++) {
			kids[k] = hl_t_fork();
			assert_true(kids[k] >= 0);
			if (kids[k] == 0) {
				prctl(PR_SET_PDEATHSIG, SIGKILL);
				client_proc(name, b, k, first + k);
			}
			/* K_EARLY: killed 0..20 ms after its fork, anywhere in
			 * hl_open() or its observes. */
			early_kill_us[k] = (uint64_t)(rand() % 20000);
		}
		/* Wait for the others to hold their observers, killing the early
		 * ones on their schedule meanwhile. */
		for (int waited = 0;; waited++) {
			if (atomic_load(&b->fail.failed))
				fail_msg("a client failed: %s", b->fail.why);
			/* A worker that died (a sanitizer halts it at its first
			 * report) leaves the clients waiting out their timeouts:
			 * say so at once. */
			int wst;
			if (waitpid(w, &wst, WNOHANG) == w)
				fail_msg("the worker died during wave at %d (status 0x%x)", first,
				         (unsigned)wst);
			struct timespec t;
			clock_gettime(CLOCK_MONOTONIC, &t);
			uint64_t us = (uint64_t)(t.tv_sec - t0.tv_sec) * 1000000u +
			              (uint64_t)((t.tv_nsec - t0.tv_nsec) / 1000);
			int pending = 0;
			for (int k = 0; k < WAVE; k++) {
				if ((first + k) % K_KINDS == K_EARLY) {
					if (kids[k] && us >= early_kill_us[k]) {
						kill(kids[k], SIGKILL);
						waitpid(kids[k], NULL, 0);
						kids[k] = 0;
					}
					pending += kids[k] != 0;
				} else {
					pending += !atomic_load(&b->ready[k]);
				}
			}
			if (!pending)
				break;
			if (waited > hl_t_ms(120000))
				fail_msg("wave at %d: %d clients not ready", first, pending);
			sleep_us(1000);
		}
		/* Let the publishers, churners and readers get into a request. */
		hl_t_sleep_ms(20);
		for (int k = 0; k < WAVE; k++)
			if (kids[k])
				kill(kids[k], SIGKILL);
		for (int k = 0; k < WAVE; k++)
			if (kids[k])
				waitpid(kids[k], NULL, 0);
		assert_int_equal(atomic_load(&b->fail.failed), 0);
		char when[64];
		snprintf(when, sizeof(when), "after clients %d..%d", first, first + WAVE - 1);
		wait_back_to(c, &base, when);
	}

	struct hl_stats s = hl_t_stats(c);
	/* Every client that finished attaching was adopted and then removed,
	 * each removal by one cleanup run; every observer added was removed. */
	uint64_t attached = s.endpoints_attached - base.endpoints_attached;
	uint64_t removed = s.endpoints_removed - base.endpoints_removed;
	assert_int_equal(attached, removed);
	assert_true(removed >= CLIENTS - CLIENTS / K_KINDS);
	assert_int_equal(s.cleanup_runs - base.cleanup_runs, removed);
	assert_int_equal(s.observers_added - base.observers_added,
	                 s.observers_removed - base.observers_removed);
	assert_true(s.observers_added - base.observers_added >=
	            10u * (CLIENTS - CLIENTS / K_KINDS));
	assert_true(s.cleanup_removed - base.cleanup_removed >=
	            10u * (CLIENTS - CLIENTS / K_KINDS));
	assert_int_equal(s.heap_used, base.heap_used);
	hl_close(c);
	/* Exit status 0: the worker's full invariant check (reachable blocks
	 * and slots == allocated, counters == reachable) passed at stop. */
	assert_int_equal(hl_t_worker_stop(w), 0);
	munmap(b, sizeof(*b));
	hl_t_unlink(name);
}

/* ---- the pidfd watch alone ---- */

static void
test_dead_client_removed_at_once_without_prune(void **state)
{
	(void)state;
	enum { KIDS = 24 };
	const char *name = hl_t_name();
	const char *const args[] = {
		"--max-keys", "4096",    "--max-observers", "65536", "--max-endpoints",  "64",
		"--heap",     "4194304", "--ev-ring",       "65536", "--prune-interval", "0",
		NULL
	};
	pid_t w = hl_t_worker_startv(name, args);
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	for (int i = 0; i < SHARED_KEYS; i++) {
		char key[32];
		shared_key(key, sizeof(key), i);
		assert_int_equal(hl_publish(c, key, strlen(key), "v-00000", VALUE_LEN, NULL, 0), 0);
	}
	struct hl_stats base = hl_t_stats(c);
	struct board *b = hl_t_shared(sizeof(struct board));
	pid_t kids[KIDS];
	for (int k = 0; k < KIDS; k++) {
		kids[k] = hl_t_fork();
		assert_true(kids[k] >= 0);
		if (kids[k] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (k % K_KINDS == K_EARLY) {
				/* Attached, never asked anything: the worker adopts
				 * it at hl_open() and watches it from then on. */
				struct hl_client *x = NULL;
				if (hl_open(name, NULL, &x))
					hl_t_child_fail(&b->fail, "open");
				atomic_store(&b->ready[k], 1);
				pause();
			}
			client_proc(name, b, k, k);
		}
	}
	for (int waited = 0;; waited++) {
		int pending = 0;
		for (int k = 0; k < KIDS; k++)
			pending += !atomic_load(&b->ready[k]);
		assert_int_equal(atomic_load(&b->fail.failed), 0);
		if (!pending)
			break;
		if (waited > hl_t_ms(60000))
			fail_msg("%d clients not ready", pending);
		hl_t_sleep_ms(1);
	}
	/* Every attached client is an endpoint now. */
	for (int waited = 0; hl_t_stats(c).endpoints != base.endpoints + KIDS; waited++) {
		if (waited > hl_t_ms(10000))
			fail_msg("endpoints: %lu, want %lu", (unsigned long)hl_t_stats(c).endpoints,
			         (unsigned long)(base.endpoints + KIDS));
		hl_t_sleep_ms(1);
	}
	assert_true(hl_t_stats(c).observers > base.observers);
	hl_t_sleep_ms(20);
	for (int k = 0; k < KIDS; k++)
		hl_t_kill9(kids[k]);
	wait_back_to(c, &base, "after the kills, with no prune pass");
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	munmap(b, sizeof(*b));
	hl_t_unlink(name);
}

/* ---- a reused pid ---- */

/* Rewrite client C's claim as if the process now running under its pid had
 * started later than the one that claimed the endpoint. */
static void
fake_reused_pid(struct hl_client *c)
{
	uint32_t ep;
	struct hl_seg *seg = hl__client_seg(c, &ep);
	struct hl_shm_claim *cl = hl__claim(seg, ep);
	atomic_fetch_add(&cl->start_time, 12345);
}

/* The child of the test below: observe three keys, rewrite its own claim's
 * start time, tell the parent its endpoint, then check it was dropped
 * (HL_ESTALE everywhere) and wait for the parent's word to exit. */
static void
rewriter_main(const char *name, int to_parent, int from_parent)
{
	struct hl_client *c;
	if (hl_open(name, NULL, &c) != 0)
		_exit(10);
	for (int i = 0; i < 3; i++) {
		char key[8];
		hl_observer_id id;
		snprintf(key, sizeof(key), "r%d", i);
		if (hl_observe(c, key, 2, 0, &id) != 0)
			_exit(11);
	}
	uint32_t ep;
	hl__client_seg(c, &ep);
	fake_reused_pid(c);
	if (write(to_parent, &ep, sizeof(ep)) != (ssize_t)sizeof(ep))
		_exit(12);
	struct hl_event ev;
	int rc;
	for (int waited = 0; (rc = hl_next(c, &ev, 10)) == -ETIMEDOUT; waited += 10)
		if (waited > hl_t_ms(30000))
			_exit(13);
	if (rc != HL_ESTALE)
		_exit(14);
	hl_observer_id id;
	if (hl_publish(c, "r1", 2, "b", 1, NULL, 0) != HL_ESTALE ||
	    hl_observe(c, "r1", 2, 0, &id) != HL_ESTALE)
		_exit(15);
	char go;
	if (read(from_parent, &go, 1) != 1)
		_exit(16);
	hl_close(c);
	_exit(0);
}

/* A live client that rewrites its claim's start time (what a reused pid
 * would look like, were the process not still there with the start time the
 * worker recorded) is misbehaving: the prune pass drops it as a ban, so its
 * observers, and the keys made by observing, go at once, it is logged, and
 * its endpoint is quarantined (claim {pid, 0}) while the process lives: no
 * other client may get a block it still maps read-write. When it exits,
 * everything is back to the start. */
static void
test_rewritten_claim_start_time_is_banned_and_held_at_prune(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, small_with_prune("200"));
	struct hl_client *pub = hl_t_open(name, HL_OPEN_SYNC);
	assert_int_equal(hl_publish(pub, "r0", 2, "a", 1, NULL, 0), 0);
	struct hl_stats base = hl_t_stats(pub);

	int up[2], down[2];
	assert_int_equal(pipe(up), 0);
	assert_int_equal(pipe(down), 0);
	pid_t child = hl_t_fork();
	assert_true(child >= 0);
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		rewriter_main(name, up[1], down[0]);
	}
	uint32_t ep;
	assert_int_equal(read(up[0], &ep, sizeof(ep)), (ssize_t)sizeof(ep));

	/* Observers (and the keys r1, r2 they made) go; the endpoint stays. */
	struct hl_stats s;
	for (int waited = 0;; waited += 5) {
		s = hl_t_stats(pub);
		if (s.observers == base.observers && s.keys == base.keys)
			break;
		if (waited > hl_t_ms(30000))
			fail_msg("observers %lu (start %lu), keys %lu (%lu) after the pass",
			         (unsigned long)s.observers, (unsigned long)base.observers,
			         (unsigned long)s.keys, (unsigned long)base.keys);
		hl_t_sleep_ms(5);
	}
	assert_int_equal(s.cleanup_removed - base.cleanup_removed, 3);
	struct hl_t_logrec rec;
	assert_int_equal(hl_t_log_find(name, HL_LOG_BAD_CLIENT, (uint32_t)child, &rec), 0);
	struct hl_shm_claim *cl = hl__claim(hl__client_seg(pub, NULL), ep);
	/* Quarantined: several passes later, still held for that process. */
	hl_t_sleep_ms(600);
	assert_int_equal(atomic_load(&cl->word), HL_CLAIM((uint32_t)child, 0));
	assert_int_equal(hl_t_stats(pub).endpoints, base.endpoints + 1);
	/* Nobody is told about changes of its old keys any more. */
	assert_int_equal(hl_publish(pub, "r0", 2, "c", 1, NULL, 0), 0);
	assert_int_equal(hl_t_stats(pub).notifications, s.notifications);

	/* It exits: the endpoint is free again. */
	assert_int_equal(write(down[1], "x", 1), 1);
	int st;
	assert_int_equal(waitpid(child, &st, 0), child);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	wait_back_to(pub, &base, "after the rewriter exited");
	close(up[0]);
	close(up[1]);
	close(down[0]);
	close(down[1]);
	hl_close(pub);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* While no worker runs, a client attaches and "its pid is reused" before
 * any worker adopted it: the next worker adopts the endpoint as dead, so the
 * client's requests fail with HL_ESTALE and nothing is left behind. */
static void
test_reused_pid_is_refused_at_adoption(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, hl_t_small);
	struct hl_client *pub = hl_t_open(name, HL_OPEN_SYNC);
	assert_int_equal(hl_publish(pub, "a0", 2, "x", 1, NULL, 0), 0);
	struct hl_stats base = hl_t_stats(pub);
	assert_int_equal(hl_t_worker_stop(w), 0);

	struct hl_client *c = hl_t_open(name, 0);
	fake_reused_pid(c);
	w = hl_t_worker_startv(name, hl_t_small);
	hl_observer_id id;
	assert_int_equal(hl_observe(c, "a0", 2, 0, &id), HL_ESTALE);
	wait_back_to(pub, &base, "after adopting the endpoint as dead");
	assert_int_equal(hl_t_stats(pub).observers, 0);
	hl_close(c);
	hl_close(pub);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* ---- a claim abandoned before adoption ---- */

/* Claim a free endpoint for DEAD_PID the way a client does, then stop
 * before `ready`, as if it had been killed right after its CAS. Returns the
 * endpoint. */
static uint32_t
abandon_claim_at(struct hl_client *c, pid_t dead_pid, uint32_t only)
{
	uint32_t own;
	struct hl_seg *seg = hl__client_seg(c, &own);
	for (uint32_t ep = 0; ep < seg->h->max_endpoints; ep++) {
		struct hl_shm_claim *cl = hl__claim(seg, ep);
		uint64_t word = atomic_load(&cl->word);
		if (ep == own || (only != UINT32_MAX && ep != only) || HL_CLAIM_PID(word) != 0 ||
		    atomic_load(&hl__epw(seg, ep)->state) != HL_EP_FREE)
			continue;
		uint64_t mine = HL_CLAIM((uint32_t)dead_pid, HL_CLAIM_GEN(word) + 1);
		if (atomic_compare_exchange_strong(&cl->word, &word, mine))
			return ep;
	}
	fail_msg("no free endpoint to claim");
	return 0;
}

static uint32_t
abandon_claim(struct hl_client *c, pid_t dead_pid)
{
	return abandon_claim_at(c, dead_pid, UINT32_MAX);
}

static pid_t
dead_pid(void)
{
	pid_t p = hl_t_fork();
	assert_true(p >= 0);
	if (p == 0)
		_exit(0);
	waitpid(p, NULL, 0);
	return p;
}

static uint32_t
claim_pid(struct hl_client *c, uint32_t ep)
{
	return HL_CLAIM_PID(atomic_load(&hl__claim(hl__client_seg(c, NULL), ep)->word));
}

static void
test_abandoned_claim_freed_by_periodic_prune(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, small_with_prune("200"));
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	uint32_t ep = abandon_claim(c, dead_pid());
	int waited = 0;
	while (claim_pid(c, ep) != 0) {
		if (waited++ > hl_t_ms(10000))
			fail_msg("claim of endpoint %u still held", ep);
		hl_t_sleep_ms(1);
	}
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* A live claimer paused between its CAS and storing its start time (a
 * ThreadSanitizer run with 200 processes on 2 cores did pause one for longer
 * than two prune passes) keeps its claim, even on an endpoint whose previous
 * client left: freeing it would let the next client claim the endpoint while
 * the paused one goes on to initialise its block. Once the claim holds a
 * start time that is not its process's (the claimer died, the pid was
 * reused), the pass frees it. */
static void
test_claimer_paused_before_its_start_time_keeps_its_claim(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, small_with_prune("50"));
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	/* An endpoint with a past: a client that came and went. */
	struct hl_client *gone = hl_t_open(name, HL_OPEN_SYNC);
	uint32_t ep;
	hl__client_seg(gone, &ep);
	hl_close(gone);
	int waited = 0;
	while (claim_pid(c, ep) != 0 ||
	       atomic_load(&hl__epw(hl__client_seg(c, NULL), ep)->state) != HL_EP_FREE) {
		if (waited++ > hl_t_ms(10000))
			fail_msg("endpoint %u not freed after hl_close", ep);
		hl_t_sleep_ms(1);
	}
	/* This live process claims it and "pauses" there. */
	assert_int_equal(abandon_claim_at(c, getpid(), ep), ep);
	struct hl_shm_claim *cl = hl__claim(hl__client_seg(c, NULL), ep);
	assert_int_equal(atomic_load(&cl->start_time), 0);
	/* Twenty prune periods: still ours. */
	hl_t_sleep_ms(1000);
	assert_int_equal(claim_pid(c, ep), (uint32_t)getpid());
	/* Now the claim names a start time our pid does not have: the claimer
	 * it names is gone, so the pass frees the claim. */
	atomic_store(&cl->start_time, 12345);
	waited = 0;
	while (claim_pid(c, ep) != 0) {
		if (waited++ > hl_t_ms(10000))
			fail_msg("claim of endpoint %u with a foreign start time still held", ep);
		hl_t_sleep_ms(1);
	}
	assert_int_equal(atomic_load(&cl->start_time), 0);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* --prune-interval 0 turns the periodic pass off: then a claim whose
 * process died between its CAS and `ready` (never adopted, so never
 * watched) stays until the next worker's pass at start. */
static void
test_abandoned_claim_without_prune_waits_for_next_worker(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, small_with_prune("0"));
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	pid_t dead = dead_pid();
	uint32_t ep = abandon_claim(c, dead);
	/* Several prune periods of the other test: still held. */
	hl_t_sleep_ms(1000);
	assert_int_equal(claim_pid(c, ep), (uint32_t)dead);
	assert_int_equal(hl_t_worker_stop(w), 0);
	w = hl_t_worker_startv(name, small_with_prune("0"));
	int waited = 0;
	while (claim_pid(c, ep) != 0) {
		if (waited++ > hl_t_ms(10000))
			fail_msg("claim of endpoint %u survived a worker start", ep);
		hl_t_sleep_ms(1);
	}
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* ---- slow readers ---- */

static uint64_t
last_read(struct hl_client *c)
{
	uint32_t ep;
	struct hl_seg *seg = hl__client_seg(c, &ep);
	return atomic_load(&hl__epw(seg, ep)->last_read_ns);
}

static void
test_slow_reader_is_reported_and_keeps_its_observers(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	char log[128];
	snprintf(log, sizeof(log), "/tmp/hl_lifecycle_%d.log", (int)getpid());
	unlink(log);
	const char *argv[] = { HL_WORKER_PATH,
		               "--standalone",
		               "--name",
		               name,
		               "--max-keys",
		               "4096",
		               "--max-observers",
		               "65536",
		               "--max-endpoints",
		               "64",
		               "--heap",
		               "4194304",
		               "--slow-reader-ms",
		               "300",
		               NULL };
	pid_t w = hl_t_spawn(argv, log);
	assert_int_equal(hl_t_wait_ready(name, hl_t_ms(10000)), 0);

	struct hl_client *slow = hl_t_open(name, 0);
	struct hl_client *fast = hl_t_open(name, 0);
	struct hl_client *pub = hl_t_open(name, HL_OPEN_SYNC);
	hl_observer_id a, b;
	assert_int_equal(hl_observe(slow, "k", 1, 0, &a), 0);
	assert_int_equal(hl_observe(fast, "k", 1, 0, &b), 0);
	for (int i = 0; i < 3; i++) {
		char v[8];
		snprintf(v, sizeof(v), "v%d", i);
		assert_int_equal(hl_publish(pub, "k", 1, v, strlen(v), NULL, 0), 0);
	}
	struct hl_event ev;
	for (int i = 0; i < 3; i++)
		assert_int_equal(hl_next(fast, &ev, hl_t_ms(5000)), 0);

	int waited = 0;
	while (!(last_read(slow) & HL_EPW_SLOW)) {
		if (waited++ > hl_t_ms(20000))
			fail_msg("the slow reader was not reported");
		hl_t_sleep_ms(1);
	}
	assert_false(last_read(fast) & HL_EPW_SLOW);
	assert_false(last_read(pub) & HL_EPW_SLOW); /* nothing waits for it */
	struct hl_stats s = hl_t_stats(pub);
	assert_int_equal(s.slow_endpoints, 1);
	assert_int_equal(s.observers, 2); /* slow, not dead: it keeps its observer */
	assert_int_equal(s.endpoints, 3);
	assert_true(hl_t_file_has(log, "is not reading", hl_t_ms(5000)));
	struct hl_t_logrec rec;
	assert_int_equal(hl_t_log_find(name, HL_LOG_SLOW_READER, (uint32_t)getpid(), &rec), 0);
	/* The time it last read is kept beside the flag. */
	assert_true((last_read(slow) & ~HL_EPW_SLOW) > 0);

	/* It reads: everything is still there, and the report goes away. */
	for (int i = 0; i < 3; i++) {
		assert_int_equal(hl_next(slow, &ev, hl_t_ms(5000)), 0);
		assert_int_equal(ev.type, HL_EV_PUT);
	}
	waited = 0;
	while (last_read(slow) & HL_EPW_SLOW) {
		if (waited++ > hl_t_ms(20000))
			fail_msg("the slow reader is still reported after reading");
		hl_t_sleep_ms(1);
	}
	assert_int_equal(hl_t_stats(pub).slow_endpoints, 0);

	hl_close(slow);
	hl_close(fast);
	hl_close(pub);
	assert_int_equal(hl_t_worker_stop(w), 0);
	unlink(log);
	hl_t_unlink(name);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dead_client_removed_at_once_without_prune),
		cmocka_unit_test(test_rewritten_claim_start_time_is_banned_and_held_at_prune),
		cmocka_unit_test(test_reused_pid_is_refused_at_adoption),
		cmocka_unit_test(test_abandoned_claim_freed_by_periodic_prune),
		cmocka_unit_test(test_claimer_paused_before_its_start_time_keeps_its_claim),
		cmocka_unit_test(test_abandoned_claim_without_prune_waits_for_next_worker),
		cmocka_unit_test(test_slow_reader_is_reported_and_keeps_its_observers),
		cmocka_unit_test(test_thousand_killed_clients_leave_nothing_behind),
	};
	return cmocka_run_group_tests_name("lifecycle", tests, NULL, NULL);
}
