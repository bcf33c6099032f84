/* SPDX-License-Identifier: MIT */
/*
 * test_layout.c: the segment's specification (lib/layout.h) where a static
 * assert cannot reach, and the owner record's one reader and writer
 * (lib/owner.c): a reader racing the writer never returns a torn record, a
 * record whose writer died mid-write is reported and repaired without
 * moving the epoch, and a segment of the previous layout version is refused.
 * Work is bounded by iteration counts, never by time.
 */
#include "harness.h"

#include "layout.h"
#include "owner.h"
#include "segment.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

/* The race below is a stress test; the torn read itself is forced on
 * every run by test_a_write_between_the_field_loads_is_never_returned(). */
#define WRITES 200000u

/* What the writer stores at epoch E: every field derived from E, so a
 * reader can tell a record mixed from two writes. */
static uint32_t
role_of(uint64_t e)
{
	return (e & 1) ? HL_ROLE_WORKER : HL_ROLE_KEEPER;
}

static uint32_t
pid_of(uint64_t e)
{
	return (uint32_t)(e * 2654435761u) | 1u;
}

static uint64_t
start_of(uint64_t e)
{
	return e * 0x9e3779b97f4a7c15ull + 7;
}

static struct hl_shm_header *
header_new(void)
{
	struct hl_shm_header *h = aligned_alloc(HL_CACHELINE, sizeof(*h));
	assert_non_null(h);
	memset(h, 0, sizeof(*h));
	return h;
}

struct race {
	struct hl_shm_header *h;
	_Atomic int done;
};

static void *
writer(void *arg)
{
	struct race *r = arg;
	for (uint32_t i = 0; i < WRITES; i++) {
		uint64_t e = atomic_load_explicit(&r->h->owner_epoch, memory_order_relaxed) + 1;
		hl__owner_write(r->h, role_of(e), pid_of(e), start_of(e));
	}
	atomic_store(&r->done, 1);
	return NULL;
}

static void
test_owner_read_never_returns_a_torn_record(void **state)
{
	(void)state;
	struct race r = { .h = header_new() };
	/* Start from a record the writer's formula describes. */
	hl__owner_write(r.h, role_of(1), pid_of(1), start_of(1));
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, writer, &r), 0);
	uint64_t reads = 0, last = 0;
	while (!atomic_load(&r.done)) {
		struct hl_owner o;
		int rc = hl__owner_read(r.h, &o);
		if (rc == -EBUSY)
			continue; /* the writer was preempted mid-write: not torn */
		assert_int_equal(rc, 0);
		if (o.role != role_of(o.epoch) || o.pid != pid_of(o.epoch) ||
		    o.start != start_of(o.epoch))
			fail_msg("torn record after %llu reads: epoch %llu role %u pid %u start "
			         "%llu",
			         (unsigned long long)reads, (unsigned long long)o.epoch, o.role,
			         o.pid, (unsigned long long)o.start);
		assert_true(o.epoch >= last); /* never back in time */
		last = o.epoch;
		reads++;
	}
	pthread_join(t, NULL);
	struct hl_owner o;
	assert_int_equal(hl__owner_read(r.h, &o), 0);
	assert_int_equal(o.epoch, WRITES + 1);
	assert_int_equal(o.pid, pid_of(o.epoch));
	assert_int_equal(atomic_load(&r.h->owner_seq), 2ull * (WRITES + 1));
	free(r.h);
}

/* The strong definition of owner.c's seam: when armed, one whole write
 * lands after the reader loaded the epoch and before it loads the rest. */
static struct hl_shm_header *mid_h;
static int mid_writes;

void
hl__owner_read_mid(const struct hl_shm_header *h)
{
	if (h != mid_h || mid_writes == 0)
		return;
	mid_writes--;
	uint64_t e = atomic_load_explicit(&mid_h->owner_epoch, memory_order_relaxed) + 1;
	hl__owner_write(mid_h, role_of(e), pid_of(e), start_of(e));
}

static void
test_a_write_between_the_field_loads_is_never_returned(void **state)
{
	(void)state;
	struct hl_shm_header *h = header_new();
	hl__owner_write(h, role_of(1), pid_of(1), start_of(1));
	mid_h = h;
	mid_writes = 3; /* three reads in a row are torn: the reader retries */
	struct hl_owner o;
	assert_int_equal(hl__owner_read(h, &o), 0);
	assert_int_equal(mid_writes, 0);
	/* The record as the last write left it, never epoch 1 with the
	 * fields of a later write. */
	assert_int_equal(o.epoch, 4);
	assert_int_equal(o.role, role_of(4));
	assert_int_equal(o.pid, pid_of(4));
	assert_int_equal(o.start, start_of(4));
	mid_h = NULL;
	free(h);
}

static void
test_owner_write_moves_the_epoch_and_clears_worker_ready(void **state)
{
	(void)state;
	struct hl_shm_header *h = header_new();
	atomic_store(&h->worker_ready, 1);
	assert_int_equal(hl__owner_write(h, HL_ROLE_WORKER, 42, 4242), 1);
	assert_int_equal(atomic_load(&h->worker_ready), 0);
	atomic_store(&h->worker_ready, 1);
	assert_int_equal(hl__owner_write(h, HL_ROLE_KEEPER, 7, 77), 2);
	assert_int_equal(atomic_load(&h->worker_ready), 0);
	struct hl_owner o;
	assert_int_equal(hl__owner_read(h, &o), 0);
	assert_int_equal(o.epoch, 2);
	assert_int_equal(o.role, HL_ROLE_KEEPER);
	assert_int_equal(o.pid, 7);
	assert_int_equal(o.start, 77);
	free(h);
}

/* A writer killed between its two increments of owner_seq. */
static void
test_torn_record_is_reported_then_repaired_without_moving_the_epoch(void **state)
{
	(void)state;
	struct hl_shm_header *h = header_new();
	hl__owner_write(h, HL_ROLE_WORKER, 42, 4242);
	atomic_fetch_add(&h->owner_seq, 1); /* the opening increment, and death */
	atomic_store(&h->owner_pid, 43);    /* half of the new record */
	struct hl_owner o;
	assert_int_equal(hl__owner_read(h, &o), -EBUSY);
	assert_int_equal(o.pid, 43); /* the fields as they are */
	assert_int_equal(o.epoch, 1);
	assert_int_equal(hl__owner_repair(h), 1);
	assert_int_equal(hl__owner_repair(h), 0);
	assert_int_equal(hl__owner_read(h, &o), 0);
	assert_int_equal(o.epoch, 1);
	/* The next write is whole again: seq even after it. */
	assert_int_equal(hl__owner_write(h, HL_ROLE_KEEPER, 1, 1), 2);
	assert_int_equal(atomic_load(&h->owner_seq) & 1, 0);
	assert_int_equal(hl__owner_read(h, &o), 0);
	free(h);
}

/* A segment left behind by layout version 2 (or any other): refused with
 * HL_EVERSION whatever else it holds, because the identity keeps its
 * offsets across versions. */
static void
test_previous_layout_version_is_refused_with_eversion(void **state)
{
	(void)state;
	struct hl_layout_params p = { 0 };
	assert_int_equal(hl__layout_defaults(&p), 0);
	struct hl_shm_header *h = header_new();
	assert_int_equal(hl__layout_compute(&p, h), 0);
	h->magic = HL_MAGIC;
	assert_int_equal(hl__seg_validate(h, h->size), 0);
	h->version = HL_LAYOUT_VERSION - 1;
	assert_int_equal(hl__seg_validate(h, h->size), HL_EVERSION);
	/* A v2 build's format word (sizes and offsets folded) differs too. */
	h->version = HL_LAYOUT_VERSION;
	h->format ^= 1;
	assert_int_equal(hl__seg_validate(h, h->size), HL_EVERSION);
	free(h);
}

/* Lines with one writer each: what the static asserts say, seen from the
 * shards a segment can really have. */
static void
test_each_shard_has_its_own_lines(void **state)
{
	(void)state;
	struct hl_shm_header *h = header_new();
	for (uint32_t s = 0; s + 1 < HL_SHARDS_MAX; s++) {
		uintptr_t a = (uintptr_t)&h->shard[s].c.dispatch_hist[15];
		uintptr_t b = (uintptr_t)&h->shard[s + 1].sleeping;
		assert_true(a / HL_CACHELINE < b / HL_CACHELINE);
		assert_int_equal((uintptr_t)&h->shard[s].beat_ns % HL_CACHELINE, 0);
	}
	assert_true((uintptr_t)&h->progress_ns[HL_THREADS_MAX - 1] / HL_CACHELINE <
	            (uintptr_t)&h->log_head / HL_CACHELINE);
	free(h);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_owner_read_never_returns_a_torn_record),
		cmocka_unit_test(test_a_write_between_the_field_loads_is_never_returned),
		cmocka_unit_test(test_owner_write_moves_the_epoch_and_clears_worker_ready),
		cmocka_unit_test(
		        test_torn_record_is_reported_then_repaired_without_moving_the_epoch),
		cmocka_unit_test(test_previous_layout_version_is_refused_with_eversion),
		cmocka_unit_test(test_each_shard_has_its_own_lines),
	};
	return cmocka_run_group_tests_name("layout", tests, NULL, NULL);
}
