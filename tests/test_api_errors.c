/* SPDX-License-Identifier: MIT */
/*
 * test_api_errors.c: every public call answers bad input and exhausted
 * capacity with its documented error, and nothing crashes.
 */
#include "harness.h"

#include "client_internal.h"
#include "layout.h"
#include "ring.h"
#include "segment.h"
#include "util.h"

#include <errno.h>
#include <stdatomic.h>
#include <time.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct fx {
	const char *name;
	pid_t worker;
	struct hl_client *c;
};

static int
setup(void **state)
{
	static struct fx f;
	static char name[64];
	snprintf(name, sizeof(name), "%s", hl_t_name());
	f.name = name;
	/* Tiny capacities so that exhaustion is cheap to reach. */
	f.worker = hl_t_worker_start(name, "--max-keys", "8", "--max-observers", "16",
	                             "--max-endpoints", "4", "--heap", "65536", "--max-value",
	                             "1024", NULL);
	f.c = hl_t_open(name, HL_OPEN_SYNC);
	*state = &f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	hl_close(f->c);
	assert_int_equal(hl_t_worker_stop(f->worker), 0);
	hl_t_unlink(f->name);
	return 0;
}

static void
test_null_pointers_are_einval(void **state)
{
	struct fx *f = *state;
	hl_observer_id id;
	struct hl_event ev;
	struct hl_stats st;
	assert_int_equal(hl_open("x", NULL, NULL), -EINVAL);
	assert_int_equal(hl_observe(NULL, "k", 1, 0, &id), -EINVAL);
	assert_int_equal(hl_observe(f->c, NULL, 1, 0, &id), -EINVAL);
	assert_int_equal(hl_observe(f->c, "k", 1, 0, NULL), -EINVAL);
	assert_int_equal(hl_publish(NULL, "k", 1, "v", 1, NULL, 0), -EINVAL);
	assert_int_equal(hl_publish(f->c, NULL, 1, "v", 1, NULL, 0), -EINVAL);
	assert_int_equal(hl_publish(f->c, "k", 1, NULL, 1, NULL, 0), -EINVAL);
	assert_int_equal(hl_publish(f->c, "k", 1, "v", 1, NULL, 3), -EINVAL);
	assert_int_equal(hl_delete(NULL, "k", 1), -EINVAL);
	assert_int_equal(hl_get(NULL, "k", 1, NULL, 0, NULL, NULL), -EINVAL);
	assert_int_equal(hl_get(f->c, "k", 1, NULL, 4, NULL, NULL), -EINVAL);
	assert_int_equal(hl_next(NULL, &ev, 0), -EINVAL);
	assert_int_equal(hl_next(f->c, NULL, 0), -EINVAL);
	assert_int_equal(hl_next(f->c, &ev, -2), -EINVAL);
	assert_int_equal(hl_stats(NULL, &st), -EINVAL);
	assert_int_equal(hl_stats(f->c, NULL), -EINVAL);
	assert_int_equal(hl_unobserve(NULL, 1), -EINVAL);
	assert_int_equal(hl_flush(NULL, 0), -EINVAL);
	assert_int_equal(hl_inspect_key(f->c, "k", 1, NULL, 3), -EINVAL);
	assert_int_equal(hl_close(NULL), 0);
}

static void
test_empty_and_overlong_keys_are_einval(void **state)
{
	struct fx *f = *state;
	char big[HL_KEY_MAX + 2];
	memset(big, 'k', sizeof(big));
	hl_observer_id id;
	assert_int_equal(hl_publish(f->c, "", 0, "v", 1, NULL, 0), -EINVAL);
	assert_int_equal(hl_publish(f->c, big, HL_KEY_MAX + 1, "v", 1, NULL, 0), -EINVAL);
	assert_int_equal(hl_observe(f->c, "", 0, 0, &id), -EINVAL);
	assert_int_equal(hl_observe(f->c, big, HL_KEY_MAX + 1, 0, &id), -EINVAL);
	assert_int_equal(hl_get(f->c, big, HL_KEY_MAX + 1, NULL, 0, NULL, NULL), -EINVAL);
	assert_int_equal(hl_delete(f->c, "", 0), -EINVAL);
	/* The longest legal key works. */
	assert_int_equal(hl_publish(f->c, big, HL_KEY_MAX, "v", 1, NULL, 0), 0);
	size_t len;
	assert_int_equal(hl_get(f->c, big, HL_KEY_MAX, NULL, 0, &len, NULL), 0);
	assert_int_equal(len, 1);
}

static void
test_oversized_value_and_meta_are_emsgsize(void **state)
{
	struct fx *f = *state;
	struct hl_caps caps;
	assert_int_equal(hl_caps(f->c, &caps), 0);
	assert_int_equal(caps.max_value, 1024);
	char *v = calloc(1, caps.max_value + 1);
	assert_int_equal(hl_publish(f->c, "k", 1, v, caps.max_value + 1, NULL, 0), -EMSGSIZE);
	assert_int_equal(hl_publish(f->c, "k", 1, "v", 1, v, HL_META_MAX + 1), -EMSGSIZE);
	assert_int_equal(hl_publish(f->c, "k", 1, v, caps.max_value, v, HL_META_MAX), 0);
	free(v);
}

static void
test_unknown_observer_id_is_enoent(void **state)
{
	struct fx *f = *state;
	assert_int_equal(hl_unobserve(f->c, 0), -EINVAL);
	assert_int_equal(hl_unobserve(f->c, 12345), -ENOENT);
	assert_int_equal(hl_unobserve(f->c, (1ull << 24) | 3), -ENOENT);
	assert_int_equal(hl_unobserve(f->c, ~0ull >> 1), -ENOENT);
	hl_observer_id id;
	assert_int_equal(hl_observe(f->c, "k", 1, 0, &id), 0);
	assert_int_equal(hl_unobserve(f->c, id), 0);
	assert_int_equal(hl_unobserve(f->c, id), -ENOENT);
}

/* Write request Q into shard 0's request ring of C's endpoint behind the
 * library's back (as a client whose own bookkeeping went wrong would) and
 * ring the doorbell. C's cached ring head is stale afterwards: the caller
 * only waits, flushes and closes it. Returns the ring position after Q. */
static uint64_t
raw_request(struct hl_client *c, const struct hl_req *q)
{
	uint32_t ep;
	struct hl_seg *seg = hl__client_seg(c, &ep);
	struct hl_ring r = { .head = &hl__epc_shard(seg, ep, 0)->req_head,
		             .tail = &hl__epw_shard(seg, ep, 0)->req_tail,
		             .data = hl__req_ring(seg, ep, 0),
		             .size = seg->h->req_ring_bytes };
	void *rec = NULL;
	uint64_t next = 0;
	assert_int_equal(hl__ring_reserve(&r, atomic_load(r.head), q->h.size, &rec, &next), 0);
	assert_non_null(rec);
	/* The whole record: Q's header and what follows it in memory. */
	memcpy(rec, q, q->h.size);
	hl__ring_commit(&r, next);
	atomic_fetch_or(hl__pending(seg, 0) + ep / 64, 1ull << (ep % 64));
	atomic_fetch_add(&hl__doorbell(seg, 0)->word, 1);
	hl__futex_wake(&hl__doorbell(seg, 0)->word, 1);
	return next;
}

/* Wait (bounded) until the worker has taken C's shard-0 ring up to POS, or
 * has banned C when BANNED. */
static void
wait_worker(struct hl_client *c, uint64_t pos, int banned)
{
	uint32_t ep;
	struct hl_seg *seg = hl__client_seg(c, &ep);
	for (int i = 0;; i++) {
		if (banned ? atomic_load(&hl__epw(seg, ep)->state) == HL_EP_BANNED
		           : atomic_load(&hl__epw_shard(seg, ep, 0)->req_tail) >= pos)
			return;
		assert_true(i < hl_t_ms(5000));
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	}
}

/* hl_unobserve() sends no HL_REQF_SYNC only for ids the client holds, which
 * the worker has no reason to refuse; should it refuse one anyway, the
 * failure must reach hl_flush() like an asynchronous publish's, not vanish
 * because nobody waited for the answer. */
static void
test_failed_unobserve_nobody_waited_for_reaches_flush(void **state)
{
	struct fx *f = *state;
	struct hl_client *c = hl_t_open(f->name, 0);
	/* A first request of its own, on shard 0: then hl_flush() has a
	 * position to wait for (the raw one is past its cached head). */
	uint32_t ep;
	struct hl_seg *seg = hl__client_seg(c, &ep);
	char key[16];
	for (int i = 0;; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		if (hl__shard_of_bucket(seg->h,
		                        hl__bucket_of(seg->h, hl__hash(key, strlen(key)))) == 0)
			break;
	}
	assert_int_equal(hl_publish(c, key, strlen(key), "v", 1, NULL, 0), 0);
	struct hl_req q = { .h = { .size = sizeof(q), .type = HL_REQ_UNOBSERVE },
		            .flags = 0,
		            .arg = (1ull << 24) | 3 };
	wait_worker(c, raw_request(c, &q), 0);
	assert_int_equal(hl_flush(c, hl_t_ms(2000)), -ENOENT);
	assert_int_equal(hl_flush(c, hl_t_ms(2000)), 0); /* reported once */
	hl_close(c);
}

/* A request flag the protocol does not define is garbage in the ring: the
 * worker drops that client (HL_ESTALE) and serves the others. */
static void
test_unknown_request_flag_drops_the_client(void **state)
{
	struct fx *f = *state;
	struct hl_client *c = hl_t_open(f->name, 0);
	struct hl_req q = { .h = { .size = sizeof(q), .type = HL_REQ_UNOBSERVE },
		            .flags = 8,
		            .arg = (1ull << 24) | 3 };
	wait_worker(c, raw_request(c, &q), 1);
	assert_int_equal(hl_publish(c, "k", 1, "v", 1, NULL, 0), HL_ESTALE);
	hl_close(c);
	hl_observer_id id;
	assert_int_equal(hl_observe(f->c, "k", 1, 0, &id), 0);
}

/* A request whose key belongs to another shard, in shard 0's ring: that
 * shard owns the key, so applying it here would race with it. The worker
 * drops the client and creates nothing. */
static void
test_request_for_another_shards_key_drops_the_client(void **state)
{
	struct fx *f = *state;
	struct hl_client *c = hl_t_open(f->name, 0);
	uint32_t ep;
	struct hl_seg *seg = hl__client_seg(c, &ep);
	if (seg->h->shards < 2) {
		hl_close(c);
		skip();
	}
	char key[16];
	for (int i = 0;; i++) {
		snprintf(key, sizeof(key), "x%d", i);
		if (hl__shard_of_bucket(seg->h,
		                        hl__bucket_of(seg->h, hl__hash(key, strlen(key)))) != 0)
			break;
	}
	union {
		struct hl_req q;
		uint8_t b[64];
	} u;
	memset(&u, 0, sizeof(u));
	u.q.h.size = hl__rec_align((uint32_t)(sizeof(u.q) + strlen(key)));
	u.q.h.type = HL_REQ_PUBLISH;
	u.q.h.key_len = (uint16_t)strlen(key);
	memcpy(u.b + sizeof(u.q), key, strlen(key));
	wait_worker(c, raw_request(c, &u.q), 1);
	assert_int_equal(hl_publish(c, "k", 1, "v", 1, NULL, 0), HL_ESTALE);
	hl_close(c);
	assert_int_equal(hl_get(f->c, key, strlen(key), NULL, 0, NULL, NULL), -ENOENT);
}

static void
test_missing_segment_is_enoent(void **state)
{
	(void)state;
	struct hl_client *c = NULL;
	assert_int_equal(hl_open("no-such-segment-here", NULL, &c), -ENOENT);
	assert_null(c);
	assert_int_equal(hl_open("bad/name", NULL, &c), -EINVAL);
	assert_int_equal(hl_open("", NULL, &c), -EINVAL);
}

static void
test_garbage_object_is_refused_not_crashed(void **state)
{
	(void)state;
	const char *name = "t-garbage-object";
	char path[128];
	snprintf(path, sizeof(path), "/heirloom.%s", name);
	shm_unlink(path);
	int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	char junk[8192];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)(i * 131 + 7);
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	struct hl_client *c = NULL;
	assert_int_equal(hl_open(name, NULL, &c), HL_EBADMAGIC);
	/* Empty object (a crash before ftruncate). */
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(hl_open(name, NULL, &c), HL_EBADMAGIC);
	close(fd);
	shm_unlink(path);
}

static void
test_full_key_table_is_enospc_to_the_publisher(void **state)
{
	struct fx *f = *state;
	int rc = 0, n = 0;
	for (; n < 64 && rc == 0; n++) {
		char k[16];
		int kl = snprintf(k, sizeof(k), "key%d", n);
		rc = hl_publish(f->c, k, (size_t)kl, "v", 1, NULL, 0);
	}
	assert_int_equal(rc, -ENOSPC);
	assert_int_equal(n - 1, 8); /* max-keys */
	/* A delete frees a slot; the next publish fits. */
	assert_int_equal(hl_delete(f->c, "key0", 4), 0);
	assert_int_equal(hl_publish(f->c, "fresh", 5, "v", 1, NULL, 0), 0);
}

static void
test_full_observer_table_is_enospc(void **state)
{
	struct fx *f = *state;
	hl_observer_id id;
	int rc = 0, n = 0;
	for (; n < 64 && rc == 0; n++)
		rc = hl_observe(f->c, "o", 1, 0, &id);
	assert_int_equal(rc, -ENOSPC);
	assert_int_equal(n - 1, 16); /* max-observers */
}

static void
test_full_heap_is_enospc_and_async_error_reaches_flush(void **state)
{
	(void)state;
	/* A heap of 4 chunks of 2 KiB: each 1 KiB value takes one chunk. */
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_start(name, "--max-keys", "16", "--max-observers", "16",
	                            "--max-endpoints", "4", "--heap", "8192", "--max-value", "1024",
	                            NULL);
	struct hl_client *a = hl_t_open(name, 0); /* asynchronous publishes */
	struct hl_client *s = hl_t_open(name, HL_OPEN_SYNC);
	char v[1024];
	memset(v, 'x', sizeof(v));
	for (int i = 0; i < 5; i++) {
		char k[8];
		int kl = snprintf(k, sizeof(k), "h%d", i);
		/* Queuing succeeds: the failure is the worker's to report. */
		assert_int_equal(hl_publish(a, k, (size_t)kl, v, sizeof(v), NULL, 0), 0);
	}
	assert_int_equal(hl_flush(a, hl_t_ms(5000)), -ENOSPC);
	assert_int_equal(hl_flush(a, hl_t_ms(5000)), 0); /* reported once */
	assert_int_equal(hl_publish(s, "h9", 2, v, sizeof(v), NULL, 0), -ENOSPC);
	/* Exactly four of the five landed (which four depends on how the two
	 * shards interleave); nothing of the failed one is visible. */
	int present = 0;
	char gone[8] = "";
	for (int i = 0; i < 5; i++) {
		char k[8];
		int kl = snprintf(k, sizeof(k), "h%d", i);
		if (hl_get(s, k, (size_t)kl, NULL, 0, NULL, NULL) == 0)
			present++;
		else
			snprintf(gone, sizeof(gone), "%s", k);
	}
	assert_int_equal(present, 4);
	assert_int_equal(hl_get(s, "h9", 2, NULL, 0, NULL, NULL), -ENOENT);
	/* Space comes back exactly: delete one, the next fits. */
	const char *victim = strcmp(gone, "h0") == 0 ? "h1" : "h0";
	assert_int_equal(hl_delete(s, victim, 2), 0);
	assert_int_equal(hl_publish(s, "h9", 2, v, sizeof(v), NULL, 0), 0);
	struct hl_stats st;
	hl_stats(s, &st);
	assert_int_equal(st.heap_used, 4 * 2048);
	assert_int_equal(st.heap_capacity, 8192);
	hl_close(a);
	hl_close(s);
	assert_int_equal(hl_t_worker_stop(w), 0);
	hl_t_unlink(name);
}

static void
test_endpoints_run_out_with_enospc(void **state)
{
	struct fx *f = *state;
	struct hl_client *c[8] = { 0 };
	int rc = 0, n = 0;
	for (; n < 8; n++) {
		struct hl_open_opts o = { .timeout_ms = 1000 };
		rc = hl_open(f->name, &o, &c[n]);
		if (rc)
			break;
	}
	assert_int_equal(rc, -ENOSPC);
	assert_int_equal(n, 3); /* 4 endpoints, the fixture holds one */
	for (int i = 0; i < n; i++)
		hl_close(c[i]);
}

static void
test_strerror_covers_every_code(void **state)
{
	(void)state;
	const int codes[] = { HL_EBADMAGIC,  HL_EVERSION, HL_ECORRUPT, HL_ENOWORKER, HL_ESTALE,
		              HL_ETRUNCATED, -ENOSPC,     -EMSGSIZE,   -EAGAIN,      -ETIMEDOUT };
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		assert_non_null(hl_strerror(codes[i]));
		assert_string_not_equal(hl_strerror(codes[i]), "unknown error");
		assert_string_not_equal(hl_err_name(codes[i]), "EUNKNOWN");
	}
	assert_string_equal(hl_err_name(-ENOSPC), "ENOSPC");
	assert_string_equal(hl_err_name(HL_EVERSION), "HL_EVERSION");
	assert_string_equal(hl_strerror(-99999), "unknown error");
}

/* Read or set the header's next observer sequence of segment NAME (no
 * worker running). Returns the old value. */
static uint64_t
next_seq(const char *name, int set, uint64_t v)
{
	int fd;
	struct hl_seg s;
	assert_int_equal(hl__seg_open_fd(name, 1, &fd), 0);
	assert_int_equal(hl__seg_map_rw(fd, &s), 0);
	uint64_t old = atomic_load(&s.h->next_observer_seq);
	if (set)
		atomic_store(&s.h->next_observer_seq, v);
	hl__seg_unmap(&s);
	close(fd);
	return old;
}

/* Observer ids are sequence << 24 | slot and are never handed out twice.
 * When the sequence space is used up, observing says -EOVERFLOW, and keeps
 * saying it across worker restarts: recovery neither takes the used-up
 * counter for damage nor restarts it lower (the fuzz_attach finding
 * regress_seq_limit_idempotent). */
static void
test_used_up_observer_ids_give_eoverflow_and_are_never_reused(void **state)
{
	(void)state;
	const char *name = hl_t_name();
	pid_t w = hl_t_worker_startv(name, hl_t_small);
	struct hl_client *c = hl_t_open(name, HL_OPEN_SYNC);
	hl_observer_id id;
	assert_int_equal(hl_observe(c, "a", 1, 0, &id), 0);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0);

	next_seq(name, 1, HL_OBS_SEQ_LIMIT - 1);
	w = hl_t_worker_startv(name, hl_t_small);
	c = hl_t_open(name, HL_OPEN_SYNC);
	assert_int_equal(hl_observe(c, "b", 1, 0, &id), 0);
	assert_int_equal(id >> 24, HL_OBS_SEQ_LIMIT - 1); /* the last one */
	assert_int_equal(hl_observe(c, "c", 1, 0, &id), -EOVERFLOW);
	assert_int_equal(hl_observe(c, "c", 1, 0, &id), -EOVERFLOW);
	hl_close(c);
	assert_int_equal(hl_t_worker_stop(w), 0); /* its invariant check passed */
	assert_int_equal(next_seq(name, 0, 0), HL_OBS_SEQ_LIMIT);

	for (int round = 0; round < 2; round++) {
		w = hl_t_worker_startv(name, hl_t_small);
		c = hl_t_open(name, HL_OPEN_SYNC);
		assert_int_equal(hl_observe(c, "d", 1, 0, &id), -EOVERFLOW);
		hl_close(c);
		assert_int_equal(hl_t_worker_stop(w), 0);
		assert_int_equal(next_seq(name, 0, 0), HL_OBS_SEQ_LIMIT);
	}
	hl_t_unlink(name);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_null_pointers_are_einval, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_and_overlong_keys_are_einval, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_oversized_value_and_meta_are_emsgsize, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_unknown_observer_id_is_enoent, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(
		        test_failed_unobserve_nobody_waited_for_reaches_flush, setup, teardown),
		cmocka_unit_test_setup_teardown(
		        test_request_for_another_shards_key_drops_the_client, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_request_flag_drops_the_client, setup,
		                                teardown),
		cmocka_unit_test(test_missing_segment_is_enoent),
		cmocka_unit_test(test_garbage_object_is_refused_not_crashed),
		cmocka_unit_test_setup_teardown(test_full_key_table_is_enospc_to_the_publisher,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_observer_table_is_enospc, setup,
		                                teardown),
		cmocka_unit_test(test_full_heap_is_enospc_and_async_error_reaches_flush),
		cmocka_unit_test_setup_teardown(test_endpoints_run_out_with_enospc, setup,
		                                teardown),
		cmocka_unit_test(test_strerror_covers_every_code),
		cmocka_unit_test(test_used_up_observer_ids_give_eoverflow_and_are_never_reused),
	};
	return cmocka_run_group_tests_name("api_errors", tests, NULL, NULL);
}
