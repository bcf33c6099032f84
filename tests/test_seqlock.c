/* SPDX-License-Identifier: MIT */
/*
 * test_seqlock.c: sequence-locked reads (lib/seqlock.h) under a concurrent
 * writer: on a private record, through hl__value_read() over a segment
 * written by hand, and through hl_get() while a real worker applies
 * hl_publish() calls. Readers must never return a torn record. All shared
 * data moves through hl__racy_copy_*() so the race is defined behaviour and
 * the test is meaningful under TSan. Work is bounded by iteration counts,
 * never by time.
 */
#include "harness.h"

#include "layout.h"
#include "segment.h"
#include "seqlock.h"
#include "table_read.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WORDS   8
#define WRITES  200000u
#define READERS 2
#define KEY     "seqlock-key"
#define VMAX    4000u /* longest test value */

struct rec {
	alignas(64) _Atomic uint64_t seq;
	uint64_t w[WORDS];
};

struct fx {
	char name[64];
	int fd;
	struct hl_seg seg;
	pid_t worker;
	struct hl_client *c;
	struct rec rec;
	_Atomic int done;
};

struct reader {
	struct fx *f;
	uint64_t ok, retries, busy, torn, backwards, other, last;
};

static int
setup(void **state)
{
	struct fx *f = aligned_alloc(64, sizeof(struct fx));
	if (!f)
		return -1;
	memset(f, 0, sizeof(*f));
	snprintf(f->name, sizeof(f->name), "%s", hl_t_name());
	f->fd = -1;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	if (f->c)
		hl_close(f->c);
	if (f->worker > 0)
		hl_t_worker_stop(f->worker);
	hl__seg_unmap(&f->seg);
	if (f->fd >= 0)
		close(f->fd);
	hl_t_unlink(f->name);
	free(f);
	return 0;
}

/* Value number I: VMAX-bounded length and one repeated letter, so that any
 * mix of two values is detectable from the bytes and the revision. */
static uint32_t
val_len(uint64_t i)
{
	return 1u + (uint32_t)((i * 2654435761u) % VMAX);
}

static char
val_char(uint64_t i)
{
	return (char)('A' + i % 26u);
}

/* ---- a private record ---- */

static void *
rec_writer(void *arg)
{
	struct fx *f = arg;
	uint64_t tmp[WORDS];
	for (uint64_t i = 1; i <= WRITES; i++) {
		for (int k = 0; k < WORDS; k++)
			tmp[k] = i;
		hl__seq_write_begin(&f->rec.seq);
		hl__racy_copy_in(f->rec.w, tmp, sizeof(tmp));
		hl__seq_write_end(&f->rec.seq);
		if (i % 64 == 0)
			sched_yield();
	}
	atomic_store(&f->done, 1);
	return NULL;
}

static void *
rec_reader(void *arg)
{
	struct reader *r = arg;
	struct fx *f = r->f;
	uint64_t tmp[WORDS];
	for (;;) {
		int last_round = atomic_load(&f->done);
		uint64_t s = hl__seq_read_begin(&f->rec.seq);
		hl__racy_copy_out(tmp, f->rec.w, sizeof(tmp));
		if (hl__seq_read_retry(&f->rec.seq, s)) {
			r->retries++;
			continue;
		}
		for (int k = 1; k < WORDS; k++)
			r->torn += tmp[k] != tmp[0];
		r->backwards += tmp[0] < r->last;
		r->last = tmp[0];
		r->ok++;
		if (last_round)
			return NULL;
	}
}

static void
test_readers_never_see_a_torn_record_under_a_concurrent_writer(void **state)
{
	struct fx *f = *state;
	pthread_t w, rd[READERS];
	struct reader r[READERS];
	memset(r, 0, sizeof(r));
	for (int i = 0; i < READERS; i++) {
		r[i].f = f;
		assert_int_equal(pthread_create(&rd[i], NULL, rec_reader, &r[i]), 0);
	}
	assert_int_equal(pthread_create(&w, NULL, rec_writer, f), 0);
	pthread_join(w, NULL);
	for (int i = 0; i < READERS; i++) {
		pthread_join(rd[i], NULL);
		assert_int_equal(r[i].torn, 0);
		assert_int_equal(r[i].backwards, 0);
		assert_true(r[i].ok > 0);
		assert_int_equal(r[i].last, WRITES); /* the final read sees the last write */
	}
	assert_int_equal(atomic_load(&f->rec.seq), 2ull * WRITES);
}

static void
test_write_moves_the_sequence_by_two_and_invalidates_readers_in_between(void **state)
{
	struct fx *f = *state;
	uint64_t s = hl__seq_read_begin(&f->rec.seq);
	assert_false(hl__seq_read_retry(&f->rec.seq, s));
	hl__seq_write_begin(&f->rec.seq);
	uint64_t mid = hl__seq_read_begin(&f->rec.seq);
	assert_true(mid & 1);
	assert_true(hl__seq_read_retry(&f->rec.seq, s));
	assert_true(hl__seq_read_retry(&f->rec.seq, mid));
	hl__seq_write_end(&f->rec.seq);
	assert_true(hl__seq_read_retry(&f->rec.seq, s));
	uint64_t after = hl__seq_read_begin(&f->rec.seq);
	assert_int_equal(after, s + 2);
	assert_false(hl__seq_read_retry(&f->rec.seq, after));
}

static void
test_sequence_left_odd_by_a_crash_makes_readers_retry_until_repaired(void **state)
{
	struct fx *f = *state;
	atomic_store(&f->rec.seq, 41); /* writer died between begin and end */
	for (int i = 0; i < 3; i++) {
		uint64_t s = hl__seq_read_begin(&f->rec.seq);
		assert_true(hl__seq_read_retry(&f->rec.seq, s));
	}
	assert_int_equal(hl__seq_repair(&f->rec.seq), 1);
	assert_int_equal(atomic_load(&f->rec.seq), 42);
	uint64_t s = hl__seq_read_begin(&f->rec.seq);
	assert_false(hl__seq_read_retry(&f->rec.seq, s));
	assert_int_equal(hl__seq_repair(&f->rec.seq), 0); /* even: left alone */
	assert_int_equal(atomic_load(&f->rec.seq), 42);
}

/* ---- a segment written by hand ---- */

static void
make_segment(struct fx *f)
{
	struct hl_layout_params p = { .max_keys = 64,
		                      .max_observers = 64,
		                      .max_endpoints = 2,
		                      .max_value = 4096,
		                      .shards = 1,
		                      .heap_bytes = 64 * 1024 };
	assert_int_equal(hl__layout_defaults(&p), 0);
	assert_int_equal(hl__seg_create(f->name, &p, 0600, (gid_t)-1, &f->fd), 0);
	assert_int_equal(hl__seg_map_rw(f->fd, &f->seg), 0);
}

/* Link KEY into its bucket as slot 1, with no value yet. */
static struct hl_shm_key *
install_key(struct fx *f)
{
	const struct hl_shm_header *h = f->seg.h;
	uint64_t hash = hl__hash(KEY, strlen(KEY));
	struct hl_shm_key *k = hl__key(&f->seg, 1);
	k->hash = hash;
	k->key_len = (uint32_t)strlen(KEY);
	memcpy(hl__key_bytes(k), KEY, strlen(KEY));
	atomic_store(&k->used, 1);
	atomic_store(&hl__bucket(&f->seg, hl__bucket_of(h, hash))->head, 1);
	return k;
}

/* What the worker does to change a value, but in place in one block. */
static void
write_value(struct fx *f, struct hl_shm_key *k, uint64_t rev)
{
	static char bytes[VMAX];
	uint64_t off = f->seg.h->heap_off;
	struct hl_shm_value vh;
	memset(&vh, 0, sizeof(vh));
	vh.rev = rev;
	vh.len = val_len(rev);
	vh.type = HL_VAL_PUT;
	vh.klass = 7;
	memset(bytes, val_char(rev), vh.len);
	hl__seq_write_begin(&k->seq);
	hl__racy_copy_in(hl__val(&f->seg, off), &vh, sizeof(vh));
	hl__racy_copy_in((uint8_t *)hl__val(&f->seg, off) + sizeof(vh), bytes, vh.len);
	atomic_store_explicit(&k->val, off, memory_order_relaxed);
	atomic_store_explicit(&k->rev, rev, memory_order_relaxed);
	hl__seq_write_end(&k->seq);
}

/* 0 when BUF[0..LEN) is exactly value REV. */
static int
check_value(const char *buf, size_t len, uint64_t rev)
{
	if (len != val_len(rev))
		return -1;
	for (size_t i = 0; i < len; i++)
		if (buf[i] != val_char(rev))
			return -1;
	return 0;
}

static void
test_value_read_returns_the_value_written_by_hand(void **state)
{
	struct fx *f = *state;
	make_segment(f);
	struct hl_shm_key *k = install_key(f);
	uint32_t idx = 0;
	uint64_t hash = hl__hash(KEY, strlen(KEY));
	char buf[VMAX];
	size_t len = 0;
	uint64_t rev = 0;
	assert_int_equal(hl__key_lookup(&f->seg, KEY, strlen(KEY), hash, &idx), 0);
	assert_int_equal(idx, 1);
	assert_int_equal(hl__value_read(&f->seg, idx, buf, sizeof(buf), &len, &rev), -ENOENT);
	write_value(f, k, 7);
	assert_int_equal(hl__value_read(&f->seg, idx, buf, sizeof(buf), &len, &rev), 0);
	assert_int_equal(rev, 7);
	assert_int_equal(check_value(buf, len, 7), 0);
	/* A short buffer gets a prefix and the full length. */
	memset(buf, 0, sizeof(buf));
	assert_int_equal(hl__value_read(&f->seg, idx, buf, 3, &len, &rev), 0);
	assert_int_equal(len, val_len(7));
	assert_memory_equal(buf, "HHH\0", 4);
}

static void
test_value_read_under_a_crashed_writer_gives_ebusy_until_repaired(void **state)
{
	struct fx *f = *state;
	make_segment(f);
	struct hl_shm_key *k = install_key(f);
	write_value(f, k, 3);
	char buf[VMAX];
	size_t len;
	uint64_t rev;
	hl__seq_write_begin(&k->seq); /* and the writer dies here */
	assert_int_equal(hl__value_read(&f->seg, 1, buf, sizeof(buf), &len, &rev), -EBUSY);
	assert_int_equal(hl__seq_repair(&k->seq), 1);
	assert_int_equal(hl__value_read(&f->seg, 1, buf, sizeof(buf), &len, &rev), 0);
	assert_int_equal(rev, 3);
	assert_int_equal(check_value(buf, len, 3), 0);
}

struct seg_writer {
	struct fx *f;
	struct hl_shm_key *k;
};

static void *
seg_writer_main(void *arg)
{
	struct seg_writer *w = arg;
	for (uint64_t i = 2; i <= WRITES / 4; i++) {
		write_value(w->f, w->k, i);
		if (i % 16 == 0)
			sched_yield();
	}
	atomic_store(&w->f->done, 1);
	return NULL;
}

static void *
seg_reader_main(void *arg)
{
	struct reader *r = arg;
	static __thread char buf[VMAX];
	for (;;) {
		int last_round = atomic_load(&r->f->done);
		size_t len = 0;
		uint64_t rev = 0;
		int rc = hl__value_read(&r->f->seg, 1, buf, sizeof(buf), &len, &rev);
		if (rc == -EBUSY) {
			r->busy++;
		} else if (rc != 0) {
			r->other++;
		} else {
			r->torn += check_value(buf, len, rev) != 0;
			r->backwards += rev < r->last;
			r->last = rev;
			r->ok++;
		}
		if (last_round)
			return NULL;
	}
}

static void
test_value_read_never_returns_a_torn_value_under_a_concurrent_writer(void **state)
{
	struct fx *f = *state;
	make_segment(f);
	struct seg_writer w = { .f = f, .k = install_key(f) };
	write_value(f, w.k, 1);
	pthread_t wt, rd[READERS];
	struct reader r[READERS];
	memset(r, 0, sizeof(r));
	for (int i = 0; i < READERS; i++) {
		r[i].f = f;
		assert_int_equal(pthread_create(&rd[i], NULL, seg_reader_main, &r[i]), 0);
	}
	assert_int_equal(pthread_create(&wt, NULL, seg_writer_main, &w), 0);
	pthread_join(wt, NULL);
	for (int i = 0; i < READERS; i++) {
		pthread_join(rd[i], NULL);
		assert_int_equal(r[i].torn, 0);
		assert_int_equal(r[i].backwards, 0);
		assert_int_equal(r[i].other, 0);
		assert_true(r[i].ok > 0);
		assert_int_equal(r[i].last, WRITES / 4);
	}
}

/* ---- through hl_get() while a real worker applies hl_publish() ---- */

#define PUBLISHES 3000u

struct e2e {
	struct fx *f;
	_Atomic int pub_done;
	int pub_err;
	struct reader r;
	uint64_t enoent_after_value;
};

static void *
publisher_main(void *arg)
{
	struct e2e *e = arg;
	static char v[VMAX];
	for (uint64_t i = 0; i < PUBLISHES && !e->pub_err; i++) {
		memset(v, val_char(i), val_len(i));
		e->pub_err = hl_publish(e->f->c, KEY, strlen(KEY), v, val_len(i), NULL, 0);
	}
	atomic_store(&e->pub_done, 1);
	return NULL;
}

/* The worker assigns revisions, so a read is checked by its bytes alone:
 * one letter throughout, and the length that letter's values have. */
static int
letter_consistent(const char *buf, size_t len)
{
	if (len == 0 || buf[0] < 'A' || buf[0] > 'Z')
		return -1;
	uint64_t i = (uint64_t)(buf[0] - 'A');
	int any = 0;
	for (; i < PUBLISHES && !any; i += 26)
		any = len == val_len(i);
	for (size_t j = 0; any && j < len; j++)
		if (buf[j] != buf[0])
			return -1;
	return any ? 0 : -1;
}

static void
test_hl_get_never_returns_a_torn_value_while_the_worker_publishes(void **state)
{
	struct fx *f = *state;
	static char buf[VMAX];
	f->worker = hl_t_worker_startv(f->name, hl_t_small);
	f->c = hl_t_open(f->name, 0);
	struct e2e e = { .f = f };
	pthread_t pt;
	assert_int_equal(pthread_create(&pt, NULL, publisher_main, &e), 0);
	for (;;) {
		int last_round = atomic_load(&e.pub_done);
		size_t len = 0;
		uint64_t rev = 0;
		int rc = hl_get(f->c, KEY, strlen(KEY), buf, sizeof(buf), &len, &rev);
		if (rc == 0) {
			e.r.torn += letter_consistent(buf, len) != 0;
			e.r.backwards += rev < e.r.last;
			e.r.last = rev;
			e.r.ok++;
		} else if (rc == -ENOENT) {
			e.enoent_after_value += e.r.ok > 0; /* no deletes: a value stays */
		} else if (rc == -EBUSY) {
			e.r.busy++;
		} else {
			e.r.other++;
		}
		if (last_round)
			break;
	}
	pthread_join(pt, NULL);
	assert_int_equal(e.pub_err, 0);
	assert_int_equal(hl_flush(f->c, hl_t_ms(10000)), 0);
	assert_int_equal(e.r.torn, 0);
	assert_int_equal(e.r.backwards, 0);
	assert_int_equal(e.r.other, 0);
	assert_int_equal(e.enoent_after_value, 0);
	/* After the flush the reader sees the last value published. */
	size_t len = 0;
	uint64_t rev = 0;
	assert_int_equal(hl_get(f->c, KEY, strlen(KEY), buf, sizeof(buf), &len, &rev), 0);
	assert_int_equal(check_value(buf, len, PUBLISHES - 1), 0);
	assert_true(rev >= e.r.last);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
		T(test_readers_never_see_a_torn_record_under_a_concurrent_writer),
		T(test_write_moves_the_sequence_by_two_and_invalidates_readers_in_between),
		T(test_sequence_left_odd_by_a_crash_makes_readers_retry_until_repaired),
		T(test_value_read_returns_the_value_written_by_hand),
		T(test_value_read_under_a_crashed_writer_gives_ebusy_until_repaired),
		T(test_value_read_never_returns_a_torn_value_under_a_concurrent_writer),
		T(test_hl_get_never_returns_a_torn_value_while_the_worker_publishes),
#undef T
	};
	return cmocka_run_group_tests_name("seqlock", tests, NULL, NULL);
}
