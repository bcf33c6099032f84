/* SPDX-License-Identifier: MIT */
/*
 * test_corruption.c: random bytes written into each region of a stopped
 * segment are refused or repaired with a clear message; the worker never
 * crashes on them. Header identity damage is refused at attach (exit 2 with
 * the reason); damage in the table regions is cut out by recovery (which
 * counts repairs) and the worker then serves, and its stop-time invariant
 * check passes.
 */
#include "harness.h"

#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const caps[] = {
	"--max-keys", "64",     "--max-observers", "256", "--max-endpoints",
	"8",          "--heap", "65536",           NULL
};

/* A worker, a client with observers and values, then a clean stop. */
static void
populate(const char *name)
{
	pid_t w = hl_t_worker_startv(name, caps);
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	for (int i = 0; i < 32; i++) {
		char k[8], v[64];
		int kl = snprintf(k, sizeof(k), "k%d", i);
		int vl = snprintf(v, sizeof(v), "value-%d-%0*d", i, i, 0);
		hl_observer_id id;
		assert_int_equal(hl_observe(c, k, (size_t)kl, 0, &id), 0);
		assert_int_equal(hl_publish(c, k, (size_t)kl, v, (size_t)vl, "m", 1), 0);
	}
	assert_int_equal(hl_delete(c, "k3", 2), 0);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);
}

struct region {
	const char *what;
	uint64_t off, len;
};

static void
regions(const struct hl_shm_header *h, struct region *r, int *n)
{
	int i = 0;
	r[i++] = (struct region){ "buckets", h->buckets_off, h->keys_off - h->buckets_off };
	r[i++] = (struct region){ "keys", h->keys_off, h->observers_off - h->keys_off };
	r[i++] = (struct region){ "observers", h->observers_off, h->heap_off - h->observers_off };
	r[i++] = (struct region){ "heap", h->heap_off, h->heap_bytes };
	r[i++] = (struct region){ "ep_worker", h->ep_worker_off, h->claims_off - h->ep_worker_off };
	r[i++] = (struct region){ "claims", h->claims_off, h->ep_client_off - h->claims_off };
	r[i++] = (struct region){ "ep_client", h->ep_client_off, h->size - h->ep_client_off };
	r[i++] = (struct region){ "header state", offsetof(struct hl_shm_header, owner_seq),
		                  sizeof(*h) - offsetof(struct hl_shm_header, owner_seq) };
	*n = i;
}

/* Overwrite LEN bytes at random places of [off, off+len) (a few hundred
 * scattered spans), with a seeded generator. */
static void
scribble(uint8_t *base, uint64_t off, uint64_t len, unsigned seed)
{
	for (int i = 0; i < 300; i++) {
		uint64_t at = off + (uint64_t)rand_r(&seed) % len;
		uint64_t span = 1 + (uint64_t)rand_r(&seed) % 64;
		for (uint64_t j = 0; j < span && at + j < off + len; j++)
			base[at + j] = (uint8_t)rand_r(&seed);
	}
}

static void
test_random_bytes_in_each_region_are_repaired_and_served(void **state)
{
	(void)state;
	for (int round = 0; round < 3; round++) {
		struct region r[16];
		int nr = 0;
		{
			const char *probe = hl_t_name();
			populate(probe);
			int fd;
			struct hl_seg s;
			assert_int_equal(hl__seg_open_fd(probe, 1, &fd), 0);
			assert_int_equal(hl__seg_map_rw(fd, &s), 0);
			regions(s.h, r, &nr);
			hl__seg_unmap(&s);
			close(fd);
			hl_t_unlink(probe);
		}
		for (int i = 0; i < nr; i++) {
			const char *name = hl_t_name();
			populate(name);
			int fd;
			struct hl_seg s;
			assert_int_equal(hl__seg_open_fd(name, 1, &fd), 0);
			assert_int_equal(hl__seg_map_rw(fd, &s), 0);
			scribble(s.base, r[i].off, r[i].len, (unsigned)(i * 977 + round * 13 + 1));
			hl__seg_unmap(&s);
			close(fd);
			/* The worker must come up (repairing what it must) and serve. */
			pid_t w = hl_t_worker_startv(name, caps);
			struct hl_client *c = NULL;
			struct hl_open_opts o = { .flags = HL_OPEN_SYNC,
				                  .timeout_ms = hl_t_ms(5000) };
			int rc = hl_open(name, &o, &c);
			if (rc == 0) {
				/* New work goes through whatever the damage was. */
				hl_observer_id id;
				struct hl_event ev;
				if ((rc = hl_observe(c, "fresh", 5, 0, &id)) != 0 ||
				    (rc = hl_publish(c, "fresh", 5, "ok", 2, NULL, 0)) != 0 ||
				    (rc = hl_next(c, &ev, hl_t_ms(5000))) != 0)
					fail_msg("%s damaged (round %d): %s", r[i].what, round,
					         hl_err_name(rc));
				assert_int_equal(ev.new_len, 2);
				for (int k = 0; k < 32; k++) {
					char key[8], buf[128];
					int kl = snprintf(key, sizeof(key), "k%d", k);
					size_t len;
					rc = hl_get(c, key, (size_t)kl, buf, sizeof(buf), &len,
					            NULL);
					/* Each key is intact, or lost to the damage: never a crash.
					 * Value bytes carry no checksum, so heap damage may show
					 * in a value's content (docs/security.md); elsewhere a
					 * value read is one that was written. */
					assert_true(rc == 0 || rc == -ENOENT);
					if (rc == 0 && strcmp(r[i].what, "heap") != 0)
						assert_memory_equal(buf, "value-", 6);
				}
				hl_close(c);
			} else {
				/* Only damage to the claims region may leave no endpoint free:
				 * every claim word garbage looks taken by a live-or-not pid,
				 * until the worker's prune frees it. */
				assert_string_equal(r[i].what, "claims");
			}
			int st = hl_t_worker_stop(w);
			if (st != 0)
				fail_msg("%s damaged: worker stop status %d", r[i].what, st);
			hl_t_unlink(name);
		}
	}
}

static void
test_damaged_header_identity_is_refused_with_its_reason(void **state)
{
	(void)state;
	struct {
		size_t off;
		int want_exit;
	} cases[] = {
		{ offsetof(struct hl_shm_header, magic), 2 },
		{ offsetof(struct hl_shm_header, version), 2 },
		{ offsetof(struct hl_shm_header, size), 2 },
		{ offsetof(struct hl_shm_header, max_keys), 2 },
		{ offsetof(struct hl_shm_header, heap_off), 2 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *name = hl_t_name();
		populate(name);
		int fd;
		struct hl_seg s;
		assert_int_equal(hl__seg_open_fd(name, 1, &fd), 0);
		assert_int_equal(hl__seg_map_rw(fd, &s), 0);
		s.base[cases[i].off] ^= 0x5a;
		hl__seg_unmap(&s);
		close(fd);
		char errpath[] = "/tmp/hl-corrupt-XXXXXX";
		int efd = mkstemp(errpath);
		assert_true(efd >= 0);
		pid_t pid = hl_t_fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			dup2(efd, 2);
			execl(HL_WORKER_PATH, HL_WORKER_PATH, "--standalone", "--name", name,
			      (char *)NULL);
			_exit(127);
		}
		int st = hl_t_wait_exit(pid, hl_t_ms(10000));
		assert_int_equal(st, cases[i].want_exit);
		char buf[512] = "";
		ssize_t n = pread(efd, buf, sizeof(buf) - 1, 0);
		assert_true(n > 0);
		/* It names the segment and the reason, not just a code. */
		assert_non_null(strstr(buf, "cannot get segment"));
		assert_true(strstr(buf, "not a heirloom segment") ||
		            strstr(buf, "layout version") || strstr(buf, "corrupt") ||
		            strstr(buf, "truncated"));
		close(efd);
		unlink(errpath);
		/* And a client gets the same answer, without crashing. */
		struct hl_client *c = NULL;
		int rc = hl_open(name, NULL, &c);
		assert_true(rc == HL_EBADMAGIC || rc == HL_EVERSION || rc == HL_ECORRUPT ||
		            rc == HL_ETRUNCATED);
		hl_t_unlink(name);
	}
}

/* Observe, publish and see the event through client C: it is served. */
static void
served(struct hl_client *c, const char *key)
{
	hl_observer_id id;
	struct hl_event ev;
	size_t kl = strlen(key);
	assert_int_equal(hl_observe(c, key, kl, 0, &id), 0);
	assert_int_equal(hl_publish(c, key, kl, "ok", 2, NULL, 0), 0);
	assert_int_equal(hl_next(c, &ev, hl_t_ms(5000)), 0);
	assert_int_equal(ev.new_len, 2);
}

static uint64_t
positions_or(const struct hl_seg *s, uint32_t ep)
{
	uint64_t v = 0;
	for (uint32_t sh = 0; sh < s->h->shards; sh++) {
		struct hl_shm_epw_shard *ws = hl__epw_shard(s, ep, sh);
		v |= atomic_load(&ws->req_tail) | atomic_load(&ws->ev_head) |
		     atomic_load(&ws->intent_pos) | atomic_load(&ws->result_pos);
	}
	return v;
}

/* A worker with the test's capacities, and the segment mapped writable
 * (for damage and for looking at the worker's lines). */
static pid_t
start_mapped(const char *name, int *fd, struct hl_seg *s)
{
	pid_t w = hl_t_worker_startv(name, caps);
	assert_int_equal(hl__seg_open_fd(name, 1, fd), 0);
	assert_int_equal(hl__seg_map_rw(*fd, s), 0);
	return w;
}

static void
stop_unmapped(const char *name, pid_t w, int fd, struct hl_seg *s)
{
	hl__seg_unmap(s);
	close(fd);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

/* A new client starts its rings at the worker's positions of the endpoint
 * it claims. Damaged ones (a segment damaged at rest) are repaired by the
 * worker under the claim, below the endpoints' high-water mark by recovery
 * and above it by a sweep after recovery; a client that claims before the
 * repair passes over an endpoint whose positions are impossible rather than
 * be banned for requests written there. */
static void
test_damaged_positions_of_a_free_endpoint_are_never_handed_to_a_client(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	int fd;
	struct hl_seg s;
	pid_t w = start_mapped(name, &fd, &s);
	/* Endpoints 0 and 1 used and freed: the mark is 2. */
	struct hl_client *a = hl_t_open(name, HL_OPEN_SYNC);
	struct hl_client *b = hl_t_open(name, HL_OPEN_SYNC);
	served(a, "a1");
	hl_close(a);
	hl_close(b);
	for (int waited = 0; HL_CLAIM_PID(atomic_load(&hl__claim(&s, 0)->word)) ||
	                     HL_CLAIM_PID(atomic_load(&hl__claim(&s, 1)->word));
	     waited += 10) {
		assert_true(waited < hl_t_ms(5000));
		hl_t_sleep_ms(10);
	}
	assert_int_equal(hl_t_worker_stop(w), 0);
	assert_int_equal(s.h->eps_hwm, 2);
	atomic_store(&hl__epw_shard(&s, 0, 0)->req_tail, 0x1003); /* impossible */
	atomic_store(&hl__epw_shard(&s, 2, 1)->ev_head, 0x2000);  /* never written */
	atomic_store(&hl__epw_shard(&s, 3, 0)->req_tail, 0x77);   /* both */
	atomic_store(&hl__epw_shard(&s, 3, 1)->result_pos, 0x41);
	/* No worker runs: this client claims before any repair. */
	a = hl_t_open(name, HL_OPEN_SYNC);
	assert_int_equal(HL_CLAIM_PID(atomic_load(&hl__claim(&s, 0)->word)), 0);
	assert_int_equal(HL_CLAIM_PID(atomic_load(&hl__claim(&s, 1)->word)), (uint32_t)getpid());
	w = hl_t_worker_startv(name, caps);
	served(a, "a2");
	/* Recovery repaired endpoint 0, the sweep 2 and 3 (above the mark). */
	int waited = 0;
	while ((positions_or(&s, 0) & 7u) || positions_or(&s, 2) || positions_or(&s, 3)) {
		assert_true(waited < hl_t_ms(5000));
		hl_t_sleep_ms(10);
		waited += 10;
	}
	b = hl_t_open(name, HL_OPEN_SYNC);
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	struct hl_client *d = hl_t_open(name, HL_OPEN_SYNC);
	served(b, "b");
	served(c, "c");
	served(d, "d");
	for (uint32_t ep = 0; ep < 4; ep++)
		assert_int_equal(HL_CLAIM_PID(atomic_load(&hl__claim(&s, ep)->word)),
		                 (uint32_t)getpid());
	hl_close(a);
	hl_close(b);
	hl_close(c);
	hl_close(d);
	stop_unmapped(name, w, fd, &s);
}

/* A client that skips a damaged free endpoint claims the next one, and
 * its adoption raises the endpoints' high-water mark over the damaged one:
 * below the mark, neither the sweep nor a client takes its lines for
 * fresh any more. The monitor vets what the mark passed over, so the next
 * client gets that endpoint clean (without the vetting it is skipped
 * forever, and with a damaged state but possible positions, its client is
 * refused as if it had misbehaved). */
static void
test_an_endpoint_the_mark_passes_over_is_vetted_before_a_client_gets_it(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	int fd;
	struct hl_seg s;
	pid_t w = start_mapped(name, &fd, &s);
	assert_int_equal(atomic_load(&s.h->eps_hwm), 0);
	/* After the worker's one sweep: endpoint 0 damaged above the mark. */
	atomic_store(&hl__epw(&s, 0)->state, 0x5a5a5a5au);
	atomic_store(&hl__epw_shard(&s, 0, 0)->req_tail, 0x1003);
	struct hl_client *a = hl_t_open(name, HL_OPEN_SYNC);
	assert_int_equal(HL_CLAIM_PID(atomic_load(&hl__claim(&s, 0)->word)), 0);
	assert_int_equal(HL_CLAIM_PID(atomic_load(&hl__claim(&s, 1)->word)), (uint32_t)getpid());
	served(a, "a"); /* adopted: the mark is 2 */
	assert_int_equal(atomic_load(&s.h->eps_hwm), 2);
	int waited = 0;
	while (atomic_load(&hl__epw(&s, 0)->state) != HL_EP_FREE || positions_or(&s, 0)) {
		assert_true(waited < hl_t_ms(5000));
		hl_t_sleep_ms(10);
		waited += 10;
	}
	struct hl_client *b = hl_t_open(name, HL_OPEN_SYNC);
	assert_int_equal(HL_CLAIM_PID(atomic_load(&hl__claim(&s, 0)->word)), (uint32_t)getpid());
	served(b, "b");
	hl_close(a);
	hl_close(b);
	stop_unmapped(name, w, fd, &s);
}

/* An observer whose slot names an endpoint nobody ever claimed (damage,
 * claim {0, 0}) is found by recovery as an orphan: the worker holds the
 * endpoint's claim while it cleans it, then frees it, and the next
 * clients get every endpoint. DEAD_BELOW_MARK: the endpoint is below the
 * mark and DEAD under gen 0 (a worker killed in the middle of adopting
 * it, or damage), else above the mark and free. */
static void
orphan_is_cleaned_and_freed(int dead_below_mark)
{
	const char *name = hl_t_name();
	int fd;
	struct hl_seg s;
	pid_t w = start_mapped(name, &fd, &s);
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t kid = hl_t_fork();
	assert_true(kid >= 0);
	if (kid == 0) {
		struct hl_client *c = NULL;
		hl_observer_id id;
		if (hl_open(name, NULL, &c) || hl_observe(c, "orph", 4, 0, &id))
			_exit(1);
		if (write(p[1], "o", 1) != 1)
			_exit(2);
		pause();
		_exit(0);
	}
	char b;
	assert_int_equal(read(p[0], &b, 1), 1);
	/* A clean stop keeps the endpoint and its observer; then its process
	 * goes too. */
	assert_int_equal(hl_t_worker_stop(w), 0);
	kill(kid, SIGKILL);
	hl_t_wait_exit(kid, hl_t_ms(5000));
	assert_int_equal(s.h->eps_hwm, 1);
	const uint32_t orphan_ep = 5;
	assert_int_equal(atomic_load(&hl__claim(&s, orphan_ep)->word), 0);
	uint32_t found = 0;
	for (uint32_t slot = 1; slot <= s.h->max_observers; slot++) {
		struct hl_shm_observer *o = hl__obs(&s, slot);
		if (atomic_load(&o->id) && o->endpoint == 0) {
			o->endpoint = orphan_ep;
			found++;
		}
	}
	assert_int_equal(found, 1);
	if (dead_below_mark) {
		atomic_store(&hl__epw(&s, orphan_ep)->state, HL_EP_DEAD);
		atomic_store(&s.h->eps_hwm, orphan_ep + 1);
	}
	w = hl_t_worker_startv(name, caps);
	int waited = 0;
	while (atomic_load(&hl__epw(&s, orphan_ep)->state) != HL_EP_FREE ||
	       HL_CLAIM_PID(atomic_load(&hl__claim(&s, orphan_ep)->word)) != 0 ||
	       atomic_load(&hl__epw(&s, 0)->state) != HL_EP_FREE) {
		if (waited > hl_t_ms(5000))
			fail_msg("endpoint %u: state %u, claim %#llx", orphan_ep,
			         atomic_load(&hl__epw(&s, orphan_ep)->state),
			         (unsigned long long)atomic_load(&hl__claim(&s, orphan_ep)->word));
		hl_t_sleep_ms(10);
		waited += 10;
	}
	/* Freed under the gen the worker held it with: the next claim of
	 * it is a new incarnation. */
	assert_int_equal(HL_CLAIM_GEN(atomic_load(&hl__claim(&s, orphan_ep)->word)), 1);
	struct hl_client *c[8];
	for (int i = 0; i < 8; i++) {
		char k[8];
		snprintf(k, sizeof(k), "c%d", i);
		c[i] = hl_t_open(name, HL_OPEN_SYNC);
		served(c[i], k);
	}
	assert_int_equal(HL_CLAIM_PID(atomic_load(&hl__claim(&s, orphan_ep)->word)),
	                 (uint32_t)getpid());
	for (int i = 0; i < 8; i++)
		hl_close(c[i]);
	close(p[0]);
	close(p[1]);
	stop_unmapped(name, w, fd, &s);
}

static void
test_an_orphan_on_a_never_claimed_endpoint_is_cleaned_and_freed(void **state)
{
	(void)state;
	orphan_is_cleaned_and_freed(0);
}

static void
test_a_dead_endpoint_without_a_gen_holding_observers_is_cleaned_and_freed(void **state)
{
	(void)state;
	orphan_is_cleaned_and_freed(1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_damaged_header_identity_is_refused_with_its_reason),
		cmocka_unit_test(test_random_bytes_in_each_region_are_repaired_and_served),
		cmocka_unit_test(
		        test_damaged_positions_of_a_free_endpoint_are_never_handed_to_a_client),
		cmocka_unit_test(
		        test_an_endpoint_the_mark_passes_over_is_vetted_before_a_client_gets_it),
		cmocka_unit_test(test_an_orphan_on_a_never_claimed_endpoint_is_cleaned_and_freed),
		cmocka_unit_test(
		        test_a_dead_endpoint_without_a_gen_holding_observers_is_cleaned_and_freed),
	};
	return cmocka_run_group_tests_name("corruption", tests, NULL, NULL);
}
