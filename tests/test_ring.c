/* SPDX-License-Identifier: MIT */
/*
 * test_ring.c: the SPSC byte ring (lib/ring.h) on a private buffer: framing,
 * wrap-around with pad records, full and empty, and the -EPROTO answers to
 * positions and record headers that the other side could have corrupted.
 * A seeded random walk checks FIFO content over many wraps, and two threads
 * check the release/acquire pairing (the test that matters under TSan).
 */
#include "harness.h"

#include "layout.h"
#include "ring.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#define RING 256u

struct fx {
	alignas(64) _Atomic uint64_t head;
	alignas(64) _Atomic uint64_t tail;
	alignas(64) uint8_t data[RING];
	struct hl_ring r;
	uint64_t ph; /* producer's own head */
	uint64_t ct; /* consumer's own tail */
};

static int
setup(void **state)
{
	struct fx *f = aligned_alloc(64, sizeof(struct fx));
	if (!f)
		return -1;
	memset(f, 0, sizeof(*f));
	f->r = (struct hl_ring){
		.head = &f->head, .tail = &f->tail, .data = f->data, .size = RING
	};
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	free(*state);
	return 0;
}

/* Start both sides at position POS (positions never reset in real rings). */
static void
start_at(struct fx *f, uint64_t pos)
{
	f->ph = f->ct = pos;
	atomic_store(&f->head, pos);
	atomic_store(&f->tail, pos);
}

/* Reserve, frame and commit one record of N bytes whose body is FILL. */
static int
produce(struct fx *f, uint32_t n, uint8_t fill)
{
	void *rec = NULL;
	uint64_t next = 0;
	int rc = hl__ring_reserve(&f->r, f->ph, n, &rec, &next);
	if (rc)
		return rc;
	struct hl_rec_hdr h = { .size = n, .type = 1, .key_len = fill };
	memcpy(rec, &h, sizeof(h));
	memset((uint8_t *)rec + sizeof(h), fill, n - sizeof(h));
	hl__ring_commit(&f->r, next);
	f->ph = next;
	return 0;
}

/* Peek, copy out and consume one record: 1 with *len and *fill, 0, -EPROTO. */
static int
consume(struct fx *f, uint32_t *len, uint8_t *fill)
{
	uint64_t t = f->ct;
	const uint8_t *rec;
	int rc = hl__ring_peek(&f->r, &t, &rec, len);
	if (rc != 1)
		return rc;
	struct hl_rec_hdr h;
	memcpy(&h, rec, sizeof(h));
	*fill = (uint8_t)h.key_len;
	for (uint32_t i = sizeof(h); i < *len; i++)
		if (rec[i] != *fill)
			return -EBADMSG;
	hl__ring_consume(&f->r, t + *len);
	f->ct = t + *len;
	return 1;
}

/* Write a record header by hand at ring offset OFF. */
static void
put_hdr(struct fx *f, uint32_t off, uint32_t size, uint16_t type)
{
	struct hl_rec_hdr h = { .size = size, .type = type };
	memcpy(f->data + off, &h, sizeof(h));
}

static int
peek_rc(struct fx *f)
{
	uint64_t t = f->ct;
	const uint8_t *rec;
	uint32_t len;
	return hl__ring_peek(&f->r, &t, &rec, &len);
}

static void
test_peek_on_empty_ring_returns_zero(void **state)
{
	struct fx *f = *state;
	assert_int_equal(peek_rc(f), 0);
	start_at(f, 1000 * RING + 64);
	assert_int_equal(peek_rc(f), 0);
	assert_int_equal(hl__ring_free(&f->r, f->ph), RING);
}

static void
test_records_round_trip_in_order(void **state)
{
	struct fx *f = *state;
	const uint32_t sizes[] = { 8, 16, 72, 40 };
	for (int i = 0; i < 4; i++)
		assert_int_equal(produce(f, sizes[i], (uint8_t)(0xa0 + i)), 0);
	assert_int_equal(hl__ring_free(&f->r, f->ph), RING - 136);
	for (int i = 0; i < 4; i++) {
		uint32_t len;
		uint8_t fill;
		assert_int_equal(consume(f, &len, &fill), 1);
		assert_int_equal(len, sizes[i]);
		assert_int_equal(fill, 0xa0 + i);
	}
	assert_int_equal(peek_rc(f), 0);
	assert_int_equal(atomic_load(&f->tail), 136);
}

static void
test_record_that_would_cross_the_end_gets_a_pad_the_consumer_skips(void **state)
{
	struct fx *f = *state;
	uint32_t len;
	uint8_t fill;
	assert_int_equal(produce(f, 200, 1), 0);
	assert_int_equal(consume(f, &len, &fill), 1);
	/* 56 bytes to the end, 80 wanted: pad 56, record at offset 0. */
	void *rec = NULL;
	uint64_t next = 0;
	assert_int_equal(hl__ring_reserve(&f->r, f->ph, 80, &rec, &next), 0);
	assert_ptr_equal(rec, f->data);
	assert_int_equal(next, 200 + 56 + 80);
	struct hl_rec_hdr pad;
	memcpy(&pad, f->data + 200, sizeof(pad));
	assert_int_equal(pad.size, 56);
	assert_int_equal(pad.type, HL_REC_PAD);
	struct hl_rec_hdr h = { .size = 80, .type = 1, .key_len = 7 };
	memcpy(rec, &h, sizeof(h));
	memset((uint8_t *)rec + sizeof(h), 7, 80 - sizeof(h));
	hl__ring_commit(&f->r, next);
	f->ph = next;
	assert_int_equal(consume(f, &len, &fill), 1);
	assert_int_equal(len, 80);
	assert_int_equal(fill, 7);
	assert_int_equal(f->ct, 336);
	assert_int_equal(peek_rc(f), 0);
}

static void
test_record_that_exactly_reaches_the_end_needs_no_pad(void **state)
{
	struct fx *f = *state;
	start_at(f, RING - 64);
	memset(f->data, 0xee, RING);
	assert_int_equal(produce(f, 64, 3), 0);
	assert_int_equal(f->ph, RING);
	assert_int_equal(f->data[0], 0xee); /* nothing written at the start */
	uint32_t len;
	uint8_t fill;
	assert_int_equal(consume(f, &len, &fill), 1);
	assert_int_equal(len, 64);
}

static void
test_full_ring_returns_eagain_and_accepts_again_after_consume(void **state)
{
	struct fx *f = *state;
	for (int i = 0; i < 4; i++)
		assert_int_equal(produce(f, 64, (uint8_t)i), 0);
	assert_int_equal(hl__ring_free(&f->r, f->ph), 0);
	assert_int_equal(produce(f, 8, 9), -EAGAIN);
	assert_int_equal(f->ph, RING);
	assert_int_equal(atomic_load(&f->head), RING);
	uint32_t len;
	uint8_t fill;
	assert_int_equal(consume(f, &len, &fill), 1);
	assert_int_equal(fill, 0);
	assert_int_equal(produce(f, 72, 9), -EAGAIN); /* 64 free, 72 wanted */
	assert_int_equal(produce(f, 64, 9), 0);
	for (int i = 1; i < 5; i++) {
		assert_int_equal(consume(f, &len, &fill), 1);
		assert_int_equal(fill, i < 4 ? i : 9);
	}
}

/* A record that needs a pad also needs room for it; a refused reserve
 * writes no pad (a failed call changes nothing). */
static void
test_full_ring_refuses_wrapping_record_without_writing_a_pad(void **state)
{
	struct fx *f = *state;
	assert_int_equal(produce(f, 64, 1), 0);
	assert_int_equal(produce(f, 160, 2), 0); /* head at 224, 32 to the end */
	uint32_t len;
	uint8_t fill;
	assert_int_equal(consume(f, &len, &fill), 1); /* tail 64: 96 free */
	memset(f->data + 224, 0xee, 32);
	/* 72 > 32 to the end, and pad + record (104) > 96 free: refused. */
	assert_int_equal(produce(f, 72, 3), -EAGAIN);
	assert_int_equal(f->data[224], 0xee);
	/* 48: pad + record (80) fit. */
	assert_int_equal(produce(f, 48, 3), 0);
	assert_int_equal(f->ph, 224 + 32 + 48);
	assert_int_equal(consume(f, &len, &fill), 1);
	assert_int_equal(fill, 2);
	assert_int_equal(consume(f, &len, &fill), 1);
	assert_int_equal(fill, 3);
}

static void
test_reserve_rejects_impossible_tail_with_eproto(void **state)
{
	struct fx *f = *state;
	void *rec = NULL;
	uint64_t next = 0;
	start_at(f, 10 * RING);
	atomic_store(&f->tail, 10 * RING + 8); /* tail ahead of head */
	assert_int_equal(hl__ring_reserve(&f->r, f->ph, 8, &rec, &next), -EPROTO);
	assert_int_equal(hl__ring_free(&f->r, f->ph), 0);
	atomic_store(&f->tail, 9 * RING - 8); /* more than size behind */
	assert_int_equal(hl__ring_reserve(&f->r, f->ph, 8, &rec, &next), -EPROTO);
	assert_int_equal(hl__ring_free(&f->r, f->ph), 0);
	atomic_store(&f->tail, 9 * RING); /* exactly full is legal */
	assert_int_equal(hl__ring_reserve(&f->r, f->ph, 8, &rec, &next), -EAGAIN);
}

static void
test_peek_rejects_impossible_head_with_eproto(void **state)
{
	struct fx *f = *state;
	start_at(f, 4 * RING);
	put_hdr(f, 0, 8, 1);
	atomic_store(&f->head, 5 * RING + 8); /* more than size ahead */
	assert_int_equal(peek_rc(f), -EPROTO);
	atomic_store(&f->head, 4 * RING - 8); /* behind the tail */
	assert_int_equal(peek_rc(f), -EPROTO);
	atomic_store(&f->head, 4 * RING + 12); /* not 8-aligned */
	assert_int_equal(peek_rc(f), -EPROTO);
}

static void
test_peek_rejects_impossible_record_sizes_with_eproto(void **state)
{
	struct fx *f = *state;
	start_at(f, 0);
	atomic_store(&f->head, 64);
	const uint32_t bad[] = { 0, 4, 12, 72, 1u << 31 };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put_hdr(f, 0, bad[i], 1);
		assert_int_equal(peek_rc(f), -EPROTO);
	}
	/* A record crossing the end of the data area. */
	start_at(f, RING - 32);
	atomic_store(&f->head, RING + 32);
	put_hdr(f, RING - 32, 64, 1);
	assert_int_equal(peek_rc(f), -EPROTO);
	/* A pad that stops short of the end. */
	put_hdr(f, RING - 32, 16, HL_REC_PAD);
	assert_int_equal(peek_rc(f), -EPROTO);
	/* A pad, then a whole-ring pad at offset 0 (never written by a
	 * producer: it is larger than what is left after the first pad). */
	start_at(f, RING - 32);
	atomic_store(&f->head, 2 * RING - 32);
	put_hdr(f, RING - 32, 32, HL_REC_PAD);
	put_hdr(f, 0, RING, HL_REC_PAD);
	assert_int_equal(peek_rc(f), -EPROTO);
	/* The pad followed by a sane record is accepted. */
	put_hdr(f, 0, 16, 1);
	atomic_store(&f->head, RING + 16);
	assert_int_equal(peek_rc(f), 1);
}

/* xorshift64*: deterministic, so a failure replays with the same seed. */
static uint64_t
rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

#define QCAP 64u

static void
test_random_record_sizes_over_many_wraps_stay_fifo(void **state)
{
	struct fx *f = *state;
	uint64_t seed = 0x5eed1234abcdull;
	uint32_t qsize[QCAP];
	uint8_t qfill[QCAP];
	uint32_t qh = 0, qt = 0; /* model queue */
	uint32_t produced = 0, consumed = 0, full = 0;
	start_at(f, UINT64_MAX - 40 * RING + 1 - 7); /* cross 2^64 on the way */
	f->ph = f->ct = (f->ph + 7) & ~7ull;
	atomic_store(&f->head, f->ph);
	atomic_store(&f->tail, f->ct);
	const uint64_t start = f->ph;
	for (int step = 0; step < 400000 && consumed < 40000; step++) {
		if ((rnd(&seed) & 3) != 0 && qh - qt < QCAP) {
			uint32_t n = 8u * (1u + (uint32_t)(rnd(&seed) % (RING / 16)));
			uint8_t fill = (uint8_t)produced;
			int rc = produce(f, n, fill);
			if (rc == -EAGAIN) {
				full++;
				continue;
			}
			assert_int_equal(rc, 0);
			qsize[qh % QCAP] = n;
			qfill[qh % QCAP] = fill;
			qh++;
			produced++;
		} else {
			uint32_t len;
			uint8_t fill;
			int rc = consume(f, &len, &fill);
			if (qh == qt) {
				assert_int_equal(rc, 0);
				continue;
			}
			assert_int_equal(rc, 1);
			assert_int_equal(len, qsize[qt % QCAP]);
			assert_int_equal(fill, qfill[qt % QCAP]);
			qt++;
			consumed++;
		}
		assert_true(f->ph - f->ct <= RING);
	}
	assert_int_equal(consumed, 40000);
	assert_true(full > 0);
	assert_true(f->ct - start > 1000 * RING); /* many wraps */
	assert_true(f->ct < start);               /* and across 2^64 */
}

/* ---- two threads ---- */

#define SPSC_RECORDS 200000u

static void *
producer_main(void *arg)
{
	struct fx *f = arg;
	for (uint32_t i = 0; i < SPSC_RECORDS;) {
		uint32_t n = 8u * (2u + i % 13u);
		void *rec = NULL;
		uint64_t next = 0;
		int rc = hl__ring_reserve(&f->r, f->ph, n, &rec, &next);
		if (rc == -EAGAIN) {
			sched_yield();
			continue;
		}
		if (rc)
			return (void *)(intptr_t)rc;
		struct hl_rec_hdr h = { .size = n, .type = 1 };
		memcpy(rec, &h, sizeof(h));
		memcpy((uint8_t *)rec + sizeof(h), &i, sizeof(i));
		memset((uint8_t *)rec + sizeof(h) + sizeof(i), (int)(i & 0xff),
		       n - sizeof(h) - sizeof(i));
		hl__ring_commit(&f->r, next);
		f->ph = next;
		i++;
	}
	return NULL;
}

static void
test_two_threads_see_every_record_once_in_order(void **state)
{
	struct fx *f = *state;
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, producer_main, f), 0);
	uint32_t want = 0, bad = 0;
	while (want < SPSC_RECORDS && !bad) {
		uint64_t t = f->ct;
		const uint8_t *rec;
		uint32_t len, seq;
		int rc = hl__ring_peek(&f->r, &t, &rec, &len);
		if (rc == 0) {
			sched_yield();
			continue;
		}
		if (rc != 1 || len != 8u * (2u + want % 13u)) {
			bad = 1;
			break;
		}
		memcpy(&seq, rec + sizeof(struct hl_rec_hdr), sizeof(seq));
		for (uint32_t k = sizeof(struct hl_rec_hdr) + sizeof(seq); k < len; k++)
			bad |= rec[k] != (uint8_t)(want & 0xff);
		bad |= seq != want;
		hl__ring_consume(&f->r, t + len);
		f->ct = t + len;
		want++;
	}
	void *ret;
	if (bad) /* unblock the producer before joining */
		atomic_store(&f->tail, atomic_load(&f->head) - RING - 8);
	assert_int_equal(pthread_join(th, &ret), 0);
	assert_int_equal(bad, 0);
	assert_null(ret);
	assert_int_equal(want, SPSC_RECORDS);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
		T(test_peek_on_empty_ring_returns_zero),
		T(test_records_round_trip_in_order),
		T(test_record_that_would_cross_the_end_gets_a_pad_the_consumer_skips),
		T(test_record_that_exactly_reaches_the_end_needs_no_pad),
		T(test_full_ring_returns_eagain_and_accepts_again_after_consume),
		T(test_full_ring_refuses_wrapping_record_without_writing_a_pad),
		T(test_reserve_rejects_impossible_tail_with_eproto),
		T(test_peek_rejects_impossible_head_with_eproto),
		T(test_peek_rejects_impossible_record_sizes_with_eproto),
		T(test_random_record_sizes_over_many_wraps_stay_fifo),
		T(test_two_threads_see_every_record_once_in_order),
#undef T
	};
	return cmocka_run_group_tests_name("ring", tests, NULL, NULL);
}
