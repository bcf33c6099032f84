/* SPDX-License-Identifier: MIT */
/*
 * test_hostile_worker.c: the client library trusts nothing the worker's
 * regions say. Here the test itself plays a broken worker (or anyone with
 * write access to the segment): event records whose lengths do not fit
 * their size, and an answer that names another request, are HL_ECORRUPT,
 * never an event or a result taken at face value. (fuzz_events explores
 * the same input space at random; these are the cases a test must pin.)
 */
#include "harness.h"

#include "client_internal.h"
#include "layout.h"
#include "ring.h"
#include "segment.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fx {
	char name[64];
	struct hl_seg S; /* the "worker's" read-write mapping */
	int fd;
};

/* A segment whose worker stopped: the test is the only one serving it. */
static int
setup(void **state)
{
	static struct fx f;
	snprintf(f.name, sizeof(f.name), "%s", hl_t_name());
	pid_t w = hl_t_worker_startv(f.name, hl_t_small);
	assert_int_equal(hl_t_worker_stop(w), 0);
	assert_int_equal(hl__seg_open_fd(f.name, 1, &f.fd), 0);
	assert_int_equal(hl__seg_map_rw(f.fd, &f.S), 0);
	*state = &f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	hl__seg_unmap(&f->S);
	close(f->fd);
	hl_t_unlink(f->name);
	return 0;
}

/* Write record R (SIZE bytes, header first) into C's event ring of shard 0
 * at its read position, as a worker would, and publish it. */
static void
inject(struct fx *f, struct hl_client *c, const void *r, uint32_t size)
{
	uint32_t ep;
	(void)hl__client_seg(c, &ep);
	struct hl_shm_epw_shard *ws = hl__epw_shard(&f->S, ep, 0);
	uint64_t tail = atomic_load(&hl__epc_shard(&f->S, ep, 0)->ev_tail);
	assert_int_equal(atomic_load(&ws->ev_head), tail);
	uint8_t *ring = hl__ev_ring(&f->S, ep, 0);
	uint32_t rsize = f->S.h->ev_ring_bytes;
	assert_true((tail & (rsize - 1)) + size <= rsize);
	memcpy(ring + (tail & (rsize - 1)), r, size);
	atomic_store_explicit(&ws->ev_head, tail + size, memory_order_release);
}

static void
test_event_records_that_do_not_fit_are_ecorrupt(void **state)
{
	struct fx *f = *state;
	uint32_t maxv = f->S.h->max_value;
	static uint8_t buf[65536];
	struct hl_evrec base = { .h = { .size = 64, .type = HL_EVR_PUT, .key_len = 1 },
		                 .nobs = 1,
		                 .old_len = HL_NO_LEN,
		                 .new_len = 1,
		                 .rev = 1 };
	struct {
		const char *what;
		struct hl_evrec r;
	} cases[] = {
		{ "lengths beyond the record's size", base },
		{ "no observer ids", base },
		{ "an empty key", base },
		{ "an old value larger than the segment allows", base },
		{ "a new value larger than the segment allows", base },
		{ "more ids than a record may hold", base },
		{ "an unknown type", base },
	};
	cases[0].r.new_len = 100; /* 48 + 8 + 1 + 100 > 64 */
	cases[1].r.nobs = 0;
	cases[2].r.h.key_len = 0;
	cases[3].r.old_len = maxv + 1;
	cases[3].r.h.size = hl__rec_align(48 + 8 + 1 + maxv + 1 + 1);
	cases[4].r.new_len = maxv + 1;
	cases[4].r.h.size = hl__rec_align(48 + 8 + 1 + maxv + 1);
	cases[5].r.nobs = HL_EV_IDS_MAX + 1;
	cases[5].r.h.size = hl__rec_align(48 + 8 * (HL_EV_IDS_MAX + 1) + 1 + 1);
	cases[6].r.h.type = 99;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct hl_client *c = hl_t_open(f->name, 0);
		memset(buf, 0, sizeof(buf));
		memcpy(buf, &cases[i].r, sizeof(cases[i].r));
		inject(f, c, buf, cases[i].r.h.size);
		struct hl_event ev;
		int rc = hl_next(c, &ev, 0);
		if (rc != HL_ECORRUPT)
			fail_msg("%s: hl_next returned %d (%s), not HL_ECORRUPT", cases[i].what, rc,
			         hl_err_name(rc));
		hl_close(c);
	}
}

struct pub {
	struct hl_client *c;
	int rc;
};

static void *
pub_main(void *arg)
{
	struct pub *p = arg;
	p->rc = hl_publish(p->c, "k", 1, "v", 1, NULL, 0);
	return NULL;
}

/* The worker consumes a SYNC request but leaves the answer of another
 * request in the result slot: the call says HL_ECORRUPT, it does not take
 * that answer for its own. */
static void
test_an_answer_for_another_request_is_ecorrupt(void **state)
{
	struct fx *f = *state;
	struct hl_client *c = hl_t_open(f->name, HL_OPEN_SYNC);
	uint32_t ep;
	(void)hl__client_seg(c, &ep);
	const struct hl_shm_header *h = f->S.h;
	uint32_t s = hl__shard_of_bucket(h, hl__bucket_of(h, hl__hash("k", 1)));
	struct hl_shm_epw_shard *ws = hl__epw_shard(&f->S, ep, s);
	struct hl_shm_epc_shard *cs = hl__epc_shard(&f->S, ep, s);
	uint64_t tail = atomic_load(&ws->req_tail);
	struct pub p = { .c = c };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, pub_main, &p), 0);
	uint64_t head;
	for (int i = 0; (head = atomic_load(&cs->req_head)) == tail; i++) {
		assert_true(i < hl_t_ms(5000));
		usleep(1000);
	}
	/* Another request's answer: 777 for the position before this one. */
	atomic_store(&ws->result, 777);
	atomic_store_explicit(&ws->result_pos, tail, memory_order_release);
	atomic_store_explicit(&ws->req_tail, head, memory_order_release);
	atomic_fetch_add(hl__ep_signal(&f->S, ep), 1);
	hl__futex_wake(hl__ep_signal(&f->S, ep), 16);
	pthread_join(t, NULL);
	assert_int_equal(p.rc, HL_ECORRUPT);
	hl_close(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_event_records_that_do_not_fit_are_ecorrupt,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(test_an_answer_for_another_request_is_ecorrupt,
		                                setup, teardown),
	};
	return cmocka_run_group_tests_name("hostile_worker", tests, NULL, NULL);
}
