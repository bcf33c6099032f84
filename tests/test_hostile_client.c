/* SPDX-License-Identifier: MIT */
/*
 * test_hostile_client.c: a client that writes garbage into everything it
 * may write (its ep_client block: request ring bytes, req_head, ev_tail,
 * sleeping; and its claim entry, with the pending bits and doorbells)
 * against a real standalone worker. What must hold (issue 6,
 * docs/security.md):
 *  - the worker keeps serving every other client correctly: another process
 *    observes a key and receives every revision of 1,000 publishes made
 *    while the garbage flows;
 *  - it logs each offender (HL_LOG_BAD_CLIENT in the header's log ring) and
 *    drops its endpoint: the offender's hl_* calls return HL_ESTALE;
 *  - a banned endpoint is not handed to anyone else while the banned
 *    process lives (it still maps its old block read-write);
 *  - the worker never crashes: SIGTERM gives exit status 0, which includes
 *    its invariant check of the table at stop.
 * The offender reaches its own block through hl__client_seg(): the library
 * maps exactly what a misbehaving client could scribble on.
 */
#include "harness.h"

#include "client_internal.h"
#include "layout.h"
#include "segment.h"
#include "util.h"

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

#define KEY              "watched"
#define PUBLISHES        1000
#define WRITES_TOTAL     100000
#define WRITES_PER_ROUND 10000
#define BATCH            100

/* Exit codes of the child processes, so that a failure names its cause. */
enum { K_OK = 0, K_OPEN = 10, K_OBSERVE, K_EVENT, K_LAG, K_TIMEOUT, K_PUBLISH, K_NOT_STALE };

static uint64_t
xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* ---- the honest observer and publisher ---- */

/* Observe KEY, report readiness on FD, then take events until PUBLISHES
 * puts "v0".."v999" arrived in order, each revision above the last. */
static int
observer_main(const char *name, int fd)
{
	struct hl_client *c = NULL;
	struct hl_open_opts o = { .timeout_ms = hl_t_ms(10000) };
	hl_observer_id id;
	if (hl_open(name, &o, &c) || hl_observe(c, KEY, strlen(KEY), 0, &id))
		return K_OPEN;
	char one = 'r';
	if (write(fd, &one, 1) != 1)
		return K_OPEN;
	uint64_t deadline = hl_t_now_ms() + (uint64_t)hl_t_ms(120000), last_rev = 0;
	for (int want = 0; want < PUBLISHES;) {
		struct hl_event ev;
		int rc = hl_next(c, &ev, 200);
		if (rc == -ETIMEDOUT) {
			if (hl_t_now_ms() > deadline)
				return K_TIMEOUT;
			continue;
		}
		if (rc != 0)
			return K_EVENT;
		if (ev.type == HL_EV_LAGGED || ev.type == HL_EV_RESYNC)
			return K_LAG;
		char exp[16];
		int n = snprintf(exp, sizeof(exp), "v%d", want);
		if (ev.type != HL_EV_PUT || ev.observer != id || !ev.has_new ||
		    ev.new_len != (size_t)n || memcmp(ev.new_value, exp, (size_t)n) != 0 ||
		    ev.revision <= last_rev)
			return K_EVENT;
		last_rev = ev.revision;
		want++;
	}
	hl_close(c);
	return K_OK;
}

/* Wait for a byte on FD, then publish "v0".."v999" to KEY, paced so that
 * they spread over the attack. */
static int
publisher_main(const char *name, int fd)
{
	struct hl_client *c = NULL;
	struct hl_open_opts o = { .timeout_ms = hl_t_ms(10000) };
	if (hl_open(name, &o, &c))
		return K_OPEN;
	char go;
	if (read(fd, &go, 1) != 1)
		return K_OPEN;
	for (int i = 0; i < PUBLISHES; i++) {
		char v[16];
		int n = snprintf(v, sizeof(v), "v%d", i);
		if (hl_publish(c, KEY, strlen(KEY), v, (size_t)n, NULL, 0))
			return K_PUBLISH;
		if (i % 4 == 0)
			hl_t_sleep_ms(1);
	}
	int rc = hl_flush(c, hl_t_ms(20000));
	hl_close(c);
	return rc ? K_PUBLISH : K_OK;
}

/* ---- the offender ---- */

struct block {
	struct hl_seg *seg;
	uint32_t ep, shards;
};

/* What ring_doorbell() does: pending bits on every shard, then a wake. */
static void
doorbell(const struct block *b)
{
	for (uint32_t s = 0; s < b->shards; s++) {
		atomic_fetch_or(hl__pending(b->seg, s) + b->ep / 64, 1ull << (b->ep % 64));
		struct hl_shm_doorbell *d = hl__doorbell(b->seg, s);
		atomic_fetch_add(&d->word, 1);
		hl__futex_wake(&d->word, 1);
	}
}

/* One random write into the offender's own writable memory. */
static void
scribble(const struct block *b, uint64_t *rng, int claim_too)
{
	const struct hl_shm_header *h = b->seg->h;
	uint64_t r = xorshift(rng), v = xorshift(rng);
	uint32_t s = (uint32_t)(r >> 8) % b->shards;
	struct hl_shm_epc_shard *cs = hl__epc_shard(b->seg, b->ep, s);
	struct hl_shm_epw_shard *ws = hl__epw_shard(b->seg, b->ep, s);
	uint8_t *ring = hl__req_ring(b->seg, b->ep, s);
	switch (r % (claim_too ? 10 : 8)) {
	case 0: { /* random bytes anywhere in a request ring */
		uint32_t len = 1 + (uint32_t)(v % 64);
		uint32_t off = (uint32_t)(v >> 16) % (h->req_ring_bytes - len);
		for (uint32_t i = 0; i < len; i++)
			ring[off + i] = (uint8_t)xorshift(rng);
		break;
	}
	case 1: { /* a plausible-looking record at the head, then commit it */
		uint64_t head = atomic_load(&cs->req_head);
		uint32_t off = (uint32_t)(head & (h->req_ring_bytes - 1));
		if (off + sizeof(struct hl_req) + 64 > h->req_ring_bytes)
			break;
		static const uint16_t types[] = { 0, 1, 2, 3, 4, 6, 7, 99 }; /* never CLOSE */
		struct hl_req q = { .h = { .size = 32u + 8u * (uint32_t)(v % 8),
			                   .type = types[(v >> 8) % 8],
			                   .key_len = (uint16_t)((v >> 16) % 40) },
			            .val_len = (uint32_t)((v >> 24) % 20),
			            .meta_len = (uint16_t)((v >> 32) % 4),
			            .arg = xorshift(rng) };
		memcpy(ring + off, &q, sizeof(q));
		for (uint32_t i = 0; i < 64; i++)
			ring[off + sizeof(q) + i] = (uint8_t)('a' + xorshift(rng) % 26);
		atomic_store(&cs->req_head, head + q.h.size);
		break;
	}
	case 2: /* req_head: anything */ atomic_store(&cs->req_head, v); break;
	case 3: /* req_head: near the worker's tail, maybe aligned */
		atomic_store(&cs->req_head, atomic_load(&ws->req_tail) + (v & 0xfff));
		break;
	case 4: /* ev_tail: anything */ atomic_store(&cs->ev_tail, v); break;
	case 5: /* ev_tail: ahead of the worker's head */
		atomic_store(&cs->ev_tail, atomic_load(&ws->ev_head) + (v & 0xfff) + 1);
		break;
	case 6: /* the sleeping hint */
		atomic_store(&hl__epc(b->seg, b->ep)->sleeping, (uint32_t)v);
		break;
	case 7: /* the block's gen word */
		atomic_store(&hl__epc(b->seg, b->ep)->gen, (uint32_t)v);
		break;
	case 8: { /* the claim entry: word, start time or ready */
		struct hl_shm_claim *cl = hl__claim(b->seg, b->ep);
		if (v % 3 == 0)
			atomic_store(&cl->word, xorshift(rng));
		else if (v % 3 == 1)
			atomic_store(&cl->start_time, xorshift(rng));
		else
			atomic_store(&cl->ready, (uint32_t)xorshift(rng));
		break;
	}
	case 9: /* the claim word: our pid, another gen */
		atomic_store(&hl__claim(b->seg, b->ep)->word,
		             HL_CLAIM((uint32_t)getpid(), (uint32_t)v | 1u));
		break;
	}
}

/* Open, observe KEY (so that the worker also writes into our event ring,
 * through our ev_tail), write WRITES random things, then certain garbage,
 * and check that the library reports the endpoint gone. */
static int
offender_main(const char *name, uint64_t seed, int writes, int claim_too)
{
	struct hl_client *c = NULL;
	struct hl_open_opts o = { .timeout_ms = hl_t_ms(5000) };
	hl_observer_id id;
	if (hl_open(name, &o, &c))
		return K_OPEN;
	if (hl_observe(c, KEY, strlen(KEY), 0, &id))
		return K_OBSERVE;
	struct block b;
	b.seg = hl__client_seg(c, &b.ep);
	b.shards = b.seg->h->shards;
	uint64_t rng = seed | 1;
	for (int i = 0; i < writes; i++) {
		scribble(&b, &rng, claim_too);
		if (i % BATCH == BATCH - 1)
			doorbell(&b);
	}
	/* Certain garbage: a head 7 bytes past the tail. */
	struct hl_shm_epc_shard *cs = hl__epc_shard(b.seg, b.ep, 0);
	atomic_store(&cs->req_head, atomic_load(&hl__epw_shard(b.seg, b.ep, 0)->req_tail) + 7);
	doorbell(&b);
	/* The worker's verdict, as the library sees it. */
	uint64_t deadline = hl_t_now_ms() + (uint64_t)hl_t_ms(10000);
	for (;;) {
		struct hl_event ev;
		int rc = hl_next(c, &ev, 50);
		if (rc == HL_ESTALE)
			break;
		if (hl_t_now_ms() > deadline)
			return K_NOT_STALE;
	}
	if (hl_publish(c, "other", 5, "x", 1, NULL, 0) != HL_ESTALE ||
	    hl_observe(c, "other", 5, 0, &id) != HL_ESTALE || hl_flush(c, 100) != HL_ESTALE)
		return K_NOT_STALE;
	hl_close(c);
	return K_OK;
}

/* ---- helpers for the parent ---- */

static pid_t
fork_child(int (*fn)(const char *, int), const char *name, int fd)
{
	pid_t pid = hl_t_fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(fn(name, fd));
	return pid;
}

static int
child_status(pid_t pid, int ms)
{
	int st = hl_t_wait_exit(pid, ms);
	if (st < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	return st;
}

/* The worker's view of endpoint EP, read through a read-only mapping. */
struct ep_view {
	uint32_t state, claim_pid, claim_gen;
};

static struct ep_view
ep_view(const char *name, uint32_t ep)
{
	struct ep_view v = { 0 };
	int fd;
	struct hl_seg s;
	assert_int_equal(hl__seg_open_fd(name, 0, &fd), 0);
	assert_int_equal(hl__seg_map_ro(fd, &s), 0);
	v.state = atomic_load(&hl__epw(&s, ep)->state);
	uint64_t w = atomic_load(&hl__claim(&s, ep)->word);
	v.claim_pid = HL_CLAIM_PID(w);
	v.claim_gen = HL_CLAIM_GEN(w);
	hl__seg_unmap(&s);
	close(fd);
	return v;
}

static int
worker_alive(pid_t w)
{
	return waitpid(w, NULL, WNOHANG) == 0;
}

/* ---- tests ---- */

static void
test_random_garbage_drops_only_the_offender(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	char nm[64];
	snprintf(nm, sizeof(nm), "%s", name);
	/* Periodic prune off: each offender is caught by the shard threads
	 * and the pidfd watch, which is what this test is about (the pass
	 * bans a rewritten claim entry too: test_lifecycle). */
	/* The 256 KiB event ring (the default before issue 21) keeps the
	 * observer from lagging while a sanitizer slows it down. */
	pid_t w = hl_t_worker_start(nm, "--max-keys", "4096", "--max-observers", "65536",
	                            "--max-endpoints", "16", "--heap", "4194304", "--ev-ring",
	                            "262144", "--prune-interval", "0", NULL);
	uint64_t seed = hl__now_ns() ^ ((uint64_t)getpid() << 32);
	print_message("seed %#llx\n", (unsigned long long)seed);

	int ready[2], go[2];
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	pid_t obs = fork_child(observer_main, nm, ready[1]);
	char one;
	assert_int_equal(read(ready[0], &one, 1), 1);
	pid_t pub = fork_child(publisher_main, nm, go[0]);

	int writes = 0, rounds = 0, pub_status = -1;
	while (writes < WRITES_TOTAL || pub_status < 0) {
		assert_true(rounds < 400);
		pid_t d = hl_t_fork();
		assert_true(d >= 0);
		if (d == 0)
			_exit(offender_main(nm, seed + (uint64_t)rounds, WRITES_PER_ROUND,
			                    rounds % 2));
		if (rounds == 0)
			assert_int_equal(write(go[1], "g", 1), 1); /* publishes start now */
		int st = child_status(d, hl_t_ms(60000));
		if (st != K_OK)
			fail_msg("offender round %d (seed %#llx) exited %d", rounds,
			         (unsigned long long)(seed + (uint64_t)rounds), st);
		struct hl_t_logrec rec;
		if (hl_t_log_find(nm, HL_LOG_BAD_CLIENT, (uint32_t)d, &rec) != 0)
			fail_msg("round %d: no HL_LOG_BAD_CLIENT record for offender pid %d",
			         rounds, (int)d);
		assert_true(worker_alive(w));
		writes += WRITES_PER_ROUND;
		rounds++;
		if (pub_status < 0) {
			int ps = hl_t_wait_exit(pub, 0);
			if (ps >= 0)
				pub_status = ps;
		}
	}
	print_message("%d random writes in %d offender rounds\n", writes, rounds);
	assert_int_equal(pub_status, K_OK);
	assert_int_equal(child_status(obs, hl_t_ms(60000)), K_OK);

	/* The table still answers, with the last value. */
	struct hl_client *c = hl_t_open(nm, 0);
	char buf[16];
	size_t len = 0;
	assert_int_equal(hl_get(c, KEY, strlen(KEY), buf, sizeof(buf), &len, NULL), 0);
	assert_int_equal(len, 4);
	assert_memory_equal(buf, "v999", 4);
	hl_close(c);
	/* Exit 0 includes the worker's invariant check at stop. */
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(nm);
}

/* A banned endpoint stays out of circulation while its process lives: the
 * process still maps the old ep_client block read-write, and a stray write
 * there must not land in a new client's rings. */
static void
test_banned_endpoint_is_held_until_its_process_exits(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	char nm[64];
	snprintf(nm, sizeof(nm), "%s", name);
	pid_t w = hl_t_worker_start(nm, "--max-keys", "64", "--max-observers", "64",
	                            "--max-endpoints", "2", "--heap", "65536", "--prune-interval",
	                            "100", NULL);
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t d = hl_t_fork();
	assert_true(d >= 0);
	if (d == 0) {
		struct hl_client *c = NULL;
		struct hl_open_opts o = { .timeout_ms = hl_t_ms(5000) };
		if (hl_open(nm, &o, &c))
			_exit(K_OPEN);
		struct block b;
		b.seg = hl__client_seg(c, &b.ep);
		b.shards = b.seg->h->shards;
		struct hl_shm_epc_shard *cs = hl__epc_shard(b.seg, b.ep, 0);
		atomic_store(&cs->req_head,
		             atomic_load(&hl__epw_shard(b.seg, b.ep, 0)->req_tail) + 7);
		doorbell(&b);
		struct hl_event ev;
		int rc;
		while ((rc = hl_next(c, &ev, 100)) == -ETIMEDOUT)
			;
		uint32_t ep = b.ep;
		if (write(p[1], &ep, sizeof(ep)) != sizeof(ep) || rc != HL_ESTALE)
			_exit(K_NOT_STALE);
		/* Keep running, still mapping the old block. */
		pause();
		_exit(K_OK);
	}
	uint32_t ep;
	assert_int_equal(read(p[0], &ep, sizeof(ep)), sizeof(ep));
	struct hl_t_logrec rec;
	assert_int_equal(hl_t_log_find(nm, HL_LOG_BAD_CLIENT, (uint32_t)d, &rec), 0);
	/* Quarantined: banned, and the claim names the process with gen 0. */
	struct ep_view v = ep_view(nm, ep);
	assert_int_equal(v.state, HL_EP_BANNED);
	assert_int_equal(v.claim_pid, (uint32_t)d);
	assert_int_equal(v.claim_gen, 0);
	/* The other endpoint goes to a new client; no third one exists, and
	 * the banned one is not reused, however long we wait (prunes run). */
	struct hl_client *c1 = hl_t_open(nm, 0);
	hl_t_sleep_ms(300);
	struct hl_client *c2 = NULL;
	assert_int_equal(hl_open(nm, NULL, &c2), -ENOSPC);
	/* Once the process is gone the endpoint is free again. */
	hl_t_kill9(d);
	int rc = -ENOSPC;
	for (int waited = 0; waited < hl_t_ms(10000) && rc == -ENOSPC; waited += 20) {
		rc = hl_open(nm, NULL, &c2);
		if (rc == -ENOSPC)
			hl_t_sleep_ms(20);
	}
	assert_int_equal(rc, 0);
	assert_int_equal(hl_publish(c2, "k", 1, "v", 1, NULL, 0), 0);
	assert_int_equal(hl_flush(c2, hl_t_ms(5000)), 0);
	hl_close(c2);
	hl_close(c1);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(nm);
}

/* Garbage in the claim entry alone (not the rings) is seen when the
 * client rings, logged, and answered with a drop. */
static void
test_rewritten_claim_entry_is_banned(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	char nm[64];
	snprintf(nm, sizeof(nm), "%s", name);
	pid_t w = hl_t_worker_startv(nm, hl_t_small);
	pid_t d = hl_t_fork();
	assert_true(d >= 0);
	if (d == 0) {
		struct hl_client *c = NULL;
		struct hl_open_opts o = { .timeout_ms = hl_t_ms(5000) };
		if (hl_open(nm, &o, &c) || hl_publish(c, "k", 1, "v", 1, NULL, 0) ||
		    hl_flush(c, hl_t_ms(5000)))
			_exit(K_OPEN);
		struct block b;
		b.seg = hl__client_seg(c, &b.ep);
		b.shards = b.seg->h->shards;
		atomic_store(&hl__claim(b.seg, b.ep)->ready, 0xdeadbeefu);
		doorbell(&b);
		uint64_t deadline = hl_t_now_ms() + (uint64_t)hl_t_ms(10000);
		/* The worker's record of our endpoint (read-only for us). */
		while (atomic_load(&hl__epw(b.seg, b.ep)->state) == HL_EP_ACTIVE)
			if (hl_t_now_ms() > deadline)
				_exit(K_NOT_STALE);
			else
				hl_t_sleep_ms(5);
		struct hl_event ev;
		_exit(hl_publish(c, "k", 1, "w", 1, NULL, 0) == HL_ESTALE &&
		                      hl_next(c, &ev, 0) == HL_ESTALE
		              ? K_OK
		              : K_NOT_STALE);
	}
	assert_int_equal(child_status(d, hl_t_ms(20000)), K_OK);
	struct hl_t_logrec rec;
	assert_int_equal(hl_t_log_find(nm, HL_LOG_BAD_CLIENT, (uint32_t)d, &rec), 0);
	assert_string_equal(rec.text, "claim entry overwritten");
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(nm);
}

/* CPU time (user + system, clock ticks) of process PID. */
static unsigned long long
cpu_ticks(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "re");
	assert_non_null(f);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')');
	assert_non_null(p);
	unsigned long long ut = 0, st = 0;
	/* Fields 14 and 15 after the comm: skip 11 fields after the state. */
	assert_int_equal(
	        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st),
	        2);
	return ut + st;
}

/* A claim on a free endpoint that never becomes ready, with its pending
 * bits set, must not keep a shard thread spinning (it used to re-queue
 * itself forever). */
static void
test_unready_claim_does_not_spin_the_worker(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	char nm[64];
	snprintf(nm, sizeof(nm), "%s", name);
	pid_t w = hl_t_worker_start(nm, "--max-keys", "64", "--max-observers", "64",
	                            "--max-endpoints", "4", "--heap", "65536", "--prune-interval",
	                            "0", NULL);
	struct hl_client *c = hl_t_open(nm, 0);
	struct block b;
	b.seg = hl__client_seg(c, &b.ep);
	b.shards = b.seg->h->shards;
	/* A stray write into another (free) endpoint's claim, then its bits. */
	uint32_t victim = (b.ep + 1) % 4;
	struct hl_shm_claim *cl = hl__claim(b.seg, victim);
	atomic_store(&cl->word, HL_CLAIM((uint32_t)getpid(), 77));
	atomic_store(&cl->ready, 0);
	struct block vb = b;
	vb.ep = victim;
	doorbell(&vb);
	hl_t_sleep_ms(200); /* let the bounded retries run out */
	unsigned long long t0 = cpu_ticks(w);
	hl_t_sleep_ms(1000);
	unsigned long long used = cpu_ticks(w) - t0;
	long hz = sysconf(_SC_CLK_TCK);
	print_message("worker used %llu ticks of %ld in 1 s\n", used, hz);
	assert_true(used < (unsigned long long)hz / 2);
	/* Clean up our stray claim so that the stop is clean. */
	atomic_store(&cl->word, HL_CLAIM(0, 77));
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(nm);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_garbage_drops_only_the_offender),
		cmocka_unit_test(test_banned_endpoint_is_held_until_its_process_exits),
		cmocka_unit_test(test_rewritten_claim_entry_is_banned),
		cmocka_unit_test(test_unready_claim_does_not_spin_the_worker),
	};
	return cmocka_run_group_tests_name("hostile_client", tests, NULL, NULL);
}
